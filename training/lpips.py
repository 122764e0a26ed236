"""LPIPS-VGG (v0.1) as a frozen loss network, and loading its weights from safetensors.

Owns the LPIPS-VGG16 module used by the training losses (METHOD.md's d and the Stage II terms) and the
validated loading of `lpips_vgg16.safetensors` (layout: ../shared/data/weights/README.md, "LPIPS").
Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018, Eq. 1:

    d(x, y) = sum_l  mean_{h,w}  || w_l * (f_l(x) - f_l(y)) ||^2,   f_l = unit-normalised VGG16 features

Inputs are in our model space [-1, 1], which is what the `lpips` package feeds its network after its own
`x*2-1`, so the scaling layer is applied directly. torch and safetensors only; no torchvision.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn

from gtasr_stream.errors import UserError

DEFAULT_LPIPS = Path(__file__).resolve().parents[2] / "shared/data/weights/lpips_vgg16.safetensors"


def how_to_make(path: Path) -> str:
    """How to get the file, in a fresh clone too (which has no ../shared and none of its READMEs)."""
    return (
        f"make it with `pip install lpips torchvision && python -m training.convert_lpips --out {path}`"
        " (the LPIPS-VGG16 loss network: lpips' linear layers + torchvision's ImageNet VGG16, downloaded"
        " once), or pass --lpips FILE"
    )


# The 5 slices of torchvision's vgg16().features[:30], tapped after each slice's last ReLU (the LPIPS
# layers relu1_2, relu2_2, relu3_3, relu4_3, relu5_3): (first `features` index, channels, number of convs).
# Every slice after the first starts with the 2x2 max-pool that ends the previous VGG block.
VGG_SLICES: tuple[tuple[int, int, int], ...] = (
    (0, 64, 2),
    (4, 128, 2),
    (9, 256, 3),
    (16, 512, 3),
    (23, 512, 3),
)
NORM_EPS = 1e-10  # lpips.normalize_tensor: f / (||f||_2 over channels + eps)


class LPIPSWeightsError(UserError):
    """The LPIPS weights file is missing, unreadable or not in the expected layout; one line naming it."""


def _vgg_slice(first: int, c_in: int, c_out: int, n_convs: int) -> nn.Sequential:
    """One slice, its modules named by their torchvision `features` index (so keys read net.sliceS.I.*)."""
    s = nn.Sequential()
    i = first
    if first > 0:
        s.add_module(str(i), nn.MaxPool2d(2, 2))
        i += 1
    for k in range(n_convs):
        s.add_module(str(i), nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, padding=1))
        s.add_module(str(i + 1), nn.ReLU())  # not in-place: the taps are returned
        i += 2
    return s


class _Lin(nn.Module):
    """lpips.NetLinLayer: a 1x1 conv C->1 without bias; `model.0` is its Dropout, a no-op for v0.1 eval."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS-VGG16 v0.1 distance for images in [-1, 1]; frozen, but differentiable w.r.t. its inputs.

    The state-dict keys are those of `lpips.LPIPS(net='vgg', version='0.1')` without its `lins.*`
    aliases. A new instance has random weights; use `load_lpips` for the real ones. There are no
    dropout or normalisation layers, so train/eval mode does not change the result.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer("shift", torch.zeros(1, 3, 1, 1))  # from the file
        self.scaling_layer.register_buffer("scale", torch.ones(1, 3, 1, 1))
        self.net = nn.Module()
        c_in = 3
        for s, (first, c, n) in enumerate(VGG_SLICES, start=1):
            self.net.add_module(f"slice{s}", _vgg_slice(first, c_in, c, n))
            c_in = c
        for k, (_, c, _) in enumerate(VGG_SLICES):
            self.add_module(f"lin{k}", _Lin(c))
        self.requires_grad_(False)
        self.eval()

    def vgg_taps(self, x: Tensor, n: int = len(VGG_SLICES)) -> list[Tensor]:
        """The ReLU taps of the first n VGG slices as they are: x (N,3,H,W) in [-1,1] -> n x (N,C_l,H/2^l,W/2^l)."""
        shift, scale = self.scaling_layer.get_buffer("shift"), self.scaling_layer.get_buffer("scale")
        h = (x - shift) / scale
        taps = []
        for s in range(1, n + 1):
            h = self.net.get_submodule(f"slice{s}")(h)
            taps.append(h)
        return taps

    def _features(self, x: Tensor) -> list[Tensor]:
        # x (N,3,H,W) in [-1,1] -> 5 unit-normalised ReLU taps. vector_norm, not pow().sum().sqrt(): same
        # value, but a zero gradient (not NaN) where a pixel's features are all zero.
        return [h / (torch.linalg.vector_norm(h, dim=1, keepdim=True) + NORM_EPS) for h in self.vgg_taps(x)]

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """LPIPS(x, y) per sample: x, y (B,3,H,W) in [-1,1] -> (B,)."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(
                f"LPIPS takes two (B,3,H,W) images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        b = x.shape[0]
        d = x.new_zeros(b)
        for k, f in enumerate(self._features(torch.cat([x, y]))):  # one pass for both: (2B,C,h,w)
            diff = (f[:b] - f[b:]) ** 2
            d = d + self.get_submodule(f"lin{k}")(diff).mean(dim=(1, 2, 3))  # lin: (B,1,h,w)
        return d


def load_lpips(path: Path) -> LPIPS:
    """LPIPS with the weights of `path` (safetensors only), float32, eval mode, frozen.

    Raises LPIPSWeightsError for a missing or unreadable file and for any missing, unexpected or
    wrongly shaped tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise LPIPSWeightsError(
            f"LPIPS weights not found: the trainer needs {path.name} at {path}; {how_to_make(path)}"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises several types for a bad header
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LPIPSWeightsError(
            f"{path}: not a readable safetensors file ({reason}); {how_to_make(path)}"
        ) from e

    model = LPIPS()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise LPIPSWeightsError(
            f"{path}: not LPIPS-VGG16 v0.1 weights (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            f"{how_to_make(path)}"
        )
    for k, t in expected.items():
        if tensors[k].shape != t.shape:
            raise LPIPSWeightsError(
                f"{path}: tensor {k!r} has shape {tuple(tensors[k].shape)}, expected {tuple(t.shape)}; "
                f"{how_to_make(path)}"
            )
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return model
