"""The package layout: imports point down (DESIGN.md), no import circles, and every module imports alone.

The import graph is read with `ast` from the source (imports inside functions included: they run,
and a circle through one is still a circle; imports under `if TYPE_CHECKING:` excluded: they never
run).  Then every module is imported in a fresh interpreter state of the project's packages, so an
order-dependent import (one that only works because another module happened to load first) fails.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gtasr_stream", "training", "export", "benchmarks")
BACKENDS = (
    "gtasr_stream.engines.torch_engine",
    "gtasr_stream.engines.onnx_engine",
    "gtasr_stream.engines.trt_engine",
    "gtasr_stream.engines.trt_profile",
    "gtasr_stream.engines.aoti_engine",
)


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the project's packages (a package is its __init__)."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if ".venv" in path.parts or "results" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports (anywhere but under `if TYPE_CHECKING:`)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()

    def target(dotted: str) -> None:
        # the longest project module that `dotted` names (x.y.z -> x.y when z is a class)
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in MODULES:
                out.add(candidate)
                return

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                target(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                target(f"{module}.{alias.name}")  # a submodule, else falls back to `module`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    out.discard(name)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_sees_the_imports_it_should() -> None:
    """The parser itself can fail: it must find imports we know are there, relative and absolute."""
    assert "gtasr_stream.engines.upscaler" in GRAPH["gtasr_stream.pipeline"]
    assert "gtasr_stream.engines.onnx_engine" in GRAPH["gtasr_stream.engines.trt_engine"]
    assert "gtasr_stream.engines.device" in GRAPH["training.train"]
    assert "gtasr_stream.engines.upscaler" not in GRAPH["gtasr_stream"]  # only under TYPE_CHECKING


def _wrong(importer: str, imported: str) -> list[str]:
    return [
        f"{name} -> {dep}"
        for name, deps in sorted(GRAPH.items())
        for dep in sorted(deps)
        if _in(name, importer) and _in(dep, imported)
    ]


@pytest.mark.parametrize("tool", ["training", "export", "benchmarks"])
def test_the_runtime_imports_no_tool_built_on_it(tool: str) -> None:
    assert not _wrong("gtasr_stream", tool)


def test_training_never_imports_the_benchmarks() -> None:
    """benchmarks are built on training (and the runtime), never the other way round."""
    assert not _wrong("training", "benchmarks")


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_backend_imports_the_upscaler(backend: str) -> None:
    """The Upscaler is built on the backends; a backend that needs it makes a circle."""
    assert not _wrong(backend, "gtasr_stream.engines.upscaler")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    assert _cycles(GRAPH) == []


def test_every_module_imports_alone() -> None:
    """Each module imported with none of the project's other modules loaded before it (torch and
    other third-party modules stay loaded: they are not what is under test, and reloading them is slow).
    A missing optional third-party package (onnx, matplotlib, ...) is not a failure."""
    names = [n for n in MODULES if not n.endswith("__main__")]  # __main__ would run the program
    script = f"""
import importlib, json, sys, traceback
names, roots = {names!r}, {PACKAGES!r}
failed = {{}}
for name in names:
    for loaded in [m for m in sys.modules if m.split(".")[0] in roots]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in roots:
            failed[name] = traceback.format_exc(limit=3)
    except Exception:
        failed[name] = traceback.format_exc(limit=3)
print(json.dumps(failed))
"""
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    failed = json.loads(r.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{k}:\n{v}" for k, v in failed.items())


MAX_LINES = 550  # "~500" (STYLE.md, issue 14): a little over is a judgement call, well over is two concepts


def test_no_runtime_module_far_over_500_lines() -> None:
    """STYLE.md: one concept per file; a runtime module well past ~500 lines holds more than one."""
    long = {
        name: n
        for name, path in MODULES.items()
        if _in(name, "gtasr_stream") and (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long
