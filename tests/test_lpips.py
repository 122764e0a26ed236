"""training.lpips against the oracle in ../shared/data/weights/reference_models.py, and its loading errors."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from safetensors.torch import load_file, save_file

from training.convert_lpips import convert
from training.lpips import DEFAULT_LPIPS, LPIPS, LPIPSWeightsError, load_lpips

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = SHARED / "weights" / "lpips_vgg16.safetensors"
ORACLE = SHARED / "weights" / "reference_models.py"
needs_weights = pytest.mark.skipif(
    not WEIGHTS.is_file(), reason=f"{WEIGHTS} is absent (a fresh clone has no ../shared; CI has it)"
)


def _oracle_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reference_models", ORACLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ours() -> LPIPS:
    return load_lpips(WEIGHTS)


@pytest.fixture(scope="module")
def oracle() -> torch.nn.Module:
    m = _oracle_module().LPIPS(net="vgg")
    m.load_state_dict(load_file(str(WEIGHTS)), strict=True)
    return m.eval().requires_grad_(False)


def _to01(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def _pairs() -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """128x128 crops of shared photos and degraded versions: (names, x, y), (P,3,128,128) in [0,1]."""
    train = sorted((SHARED / "photos" / "train").glob("*.jpg"))
    val = sorted((SHARED / "photos" / "val").glob("*.jpg"))
    crops = []
    for path in (train[0], val[0]):
        with Image.open(path) as im:
            w, h = im.size
            crops.append(im.convert("RGB").crop((w // 2, h // 2, w // 2 + 128, h // 2 + 128)))
    jpeg = io.BytesIO()
    crops[0].save(jpeg, "JPEG", quality=30)
    jpeg.seek(0)
    with Image.open(jpeg) as im:
        jpeg_q30 = im.convert("RGB")
    pairs = [
        ("jpeg-q30", crops[0], jpeg_q30),
        ("blur-2", crops[1], crops[1].filter(ImageFilter.GaussianBlur(2))),
        ("other-photo", crops[0], crops[1]),
    ]
    x = torch.stack([_to01(a) for _, a, _ in pairs])
    y = torch.stack([_to01(b) for _, _, b in pairs])
    return [n for n, _, _ in pairs], x, y


@needs_weights
def test_matches_oracle_on_shared_photos(ours: LPIPS, oracle: torch.nn.Module) -> None:
    names, x, y = _pairs()
    with torch.no_grad():
        got = ours(x * 2 - 1, y * 2 - 1)  # ours: [-1,1]; the oracle takes [0,1]
        want = oracle(x, y)
    diff = (got - want).abs()
    for n, g, w in zip(names, got.tolist(), want.tolist(), strict=True):
        print(f"LPIPS-vgg {n:12s} ours {g:.6f} oracle {w:.6f} diff {abs(g - w):.2e}")
    print(f"max diff {diff.max():.2e}, mean diff {diff.mean():.2e}")
    assert got.shape == (3,)
    assert diff.max() < 1e-5
    assert 0.02 < got[0] < got[2]  # a JPEG'd crop is closer than a different photo
    # batched and one-at-a-time give the same per-sample values
    with torch.no_grad():
        single = torch.cat([ours(x[i : i + 1] * 2 - 1, y[i : i + 1] * 2 - 1) for i in range(3)])
    assert torch.allclose(single, got, atol=1e-6)


@needs_weights
def test_identity_is_zero(ours: LPIPS) -> None:
    _, x, _ = _pairs()
    x = x[..., :64, :64] * 2 - 1
    with torch.no_grad():
        d = ours(x, x)
    print(f"LPIPS(x, x) = {d.tolist()}")
    assert d.abs().max() < 1e-7


@needs_weights
def test_gradient_reaches_inputs_not_parameters(ours: LPIPS, oracle: torch.nn.Module) -> None:
    _, x, y = _pairs()
    x = (x[:2, :, :64, :64] * 2 - 1).requires_grad_(True)
    flat = torch.zeros(2, 3, 64, 64, requires_grad=True)  # a flat grey image: all-zero deep features
    (ours(x, y[:2, :, :64, :64] * 2 - 1).sum() + ours(flat, x.detach()).sum()).backward()
    assert x.grad is not None and flat.grad is not None
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
    assert torch.isfinite(flat.grad).all()
    assert all(not p.requires_grad and p.grad is None for p in ours.parameters())
    assert not ours.training
    # the oracle's gradient w.r.t. a [-1,1] input is the same
    x01 = ((x.detach()[:1] + 1) / 2).requires_grad_(True)
    oracle(x01, (y[:1, :, :64, :64])).sum().backward()
    assert x01.grad is not None
    diff = (x01.grad / 2 - x.grad[:1]).abs().max()  # d/dx of f((x+1)/2) = f'/2
    print(f"input-gradient max diff vs oracle {diff:.2e} (max |grad| {x.grad[:1].abs().max():.2e})")
    assert diff < 1e-4 * x.grad[:1].abs().max()  # relative 1e-4


@needs_weights
def test_default_path_is_the_shared_file() -> None:
    assert WEIGHTS.resolve() == DEFAULT_LPIPS.resolve()


def test_missing_file_says_which_file_and_how_to_make_it(tmp_path: Path) -> None:
    """A fresh clone has no ../shared (nor its README): the line itself says how to make the file."""
    path = tmp_path / "nope.safetensors"
    with pytest.raises(LPIPSWeightsError, match="LPIPS weights not found") as err:
        load_lpips(path)
    msg = str(err.value)
    print(msg)
    assert str(path) in msg and "\n" not in msg and "README" not in msg
    assert f"pip install lpips torchvision && python -m training.convert_lpips --out {path}" in msg
    assert "--lpips FILE" in msg


def test_wrong_files_are_refused(tmp_path: Path) -> None:
    good = {k: v.clone() for k, v in LPIPS().state_dict().items()}
    bad_shape = dict(good, **{"lin0.model.1.weight": torch.zeros(1, 32, 1, 1)})
    missing = {k: v for k, v in good.items() if k != "net.slice5.28.bias"}
    for name, tensors, expect in [
        ("shape", bad_shape, "'lin0.model.1.weight' has shape"),
        ("missing", missing, "net.slice5.28.bias"),
    ]:
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path))
        with pytest.raises(LPIPSWeightsError, match=expect) as err:
            load_lpips(path)
        assert "\n" not in str(err.value)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(LPIPSWeightsError, match="not a readable safetensors file"):
        load_lpips(garbage)
    path = tmp_path / "good.safetensors"
    save_file(good, str(path))
    assert all(torch.equal(v, good[k]) for k, v in load_lpips(path).state_dict().items())


def test_convert_maps_upstream_layouts(tmp_path: Path) -> None:
    """convert_lpips on synthetic upstream dicts (the real lpips/torchvision packages are not needed)."""
    torch.manual_seed(0)
    ref = LPIPS().state_dict()
    vgg = {"features." + k.split(".", 2)[2]: v for k, v in ref.items() if k.startswith("net.")}
    vgg["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision's head, to be dropped
    lins = {k: v.abs() for k, v in ref.items() if k.startswith("lin")}
    lin_path, vgg_path, out = tmp_path / "vgg.pth", tmp_path / "vgg16.pth", tmp_path / "lpips.safetensors"
    torch.save(lins, lin_path)
    torch.save(vgg, vgg_path)
    from training.convert_lpips import main

    main(["--out", str(out), "--lin", str(lin_path), "--vgg", str(vgg_path)], standalone_mode=False)
    loaded = load_lpips(out).state_dict()
    for k, v in ref.items():
        want = lins[k] if k.startswith("lin") else v
        if k == "scaling_layer.shift":
            want = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
        elif k == "scaling_layer.scale":
            want = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        assert torch.equal(loaded[k], want), k
    with pytest.raises(ValueError, match=r"features\.0\.weight"):
        convert(lins, {k: v for k, v in vgg.items() if k != "features.0.weight"})


@needs_weights
def test_convert_reproduces_the_shared_file() -> None:
    """The scaling constants and key mapping reproduce the shared file bit for bit."""
    shared = load_file(str(WEIGHTS))
    vgg = {"features." + k.split(".", 2)[2]: v for k, v in shared.items() if k.startswith("net.")}
    lins = {k: v for k, v in shared.items() if k.startswith("lin")}
    got = convert(lins, vgg)
    assert got.keys() == shared.keys()
    assert all(torch.equal(got[k], shared[k]) for k in shared)


def test_convert_real_packages(tmp_path: Path) -> None:
    """Only where `lpips` and `torchvision` import and torchvision's VGG16 file is cached."""
    pytest.importorskip("lpips", reason="the lpips package is not installed")
    pytest.importorskip("torchvision", reason="torchvision is not installed (or does not import)")
    vgg = Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth"
    if not vgg.is_file():
        pytest.skip(f"{vgg} is not cached (tests never download)")
    from training.convert_lpips import main

    out = tmp_path / "lpips.safetensors"
    main(["--out", str(out)], standalone_mode=False)
    if WEIGHTS.is_file():
        shared = load_file(str(WEIGHTS))
        ours = load_file(str(out))
        assert max(float((ours[k] - shared[k]).abs().max()) for k in shared) < 1e-6
