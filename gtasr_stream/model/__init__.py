"""The model layer: network presets and the consistency math (pure torch, no I/O)."""

from .consistency import (
    C_NOISE_EPS,
    ETA_SCALE,
    SIGMA_DATA,
    ConsistencyModel,
    c_noise,
    c_out,
    c_skip,
    forward_process,
    pad_bottom_right,
    sample_one_step,
    sample_padded,
    time_grid,
    upsample_lq,
)
from .network import PRESETS, SCALE, GTASRNet, NetConfig, build_network

__all__ = [
    "C_NOISE_EPS",
    "ETA_SCALE",
    "PRESETS",
    "SCALE",
    "SIGMA_DATA",
    "ConsistencyModel",
    "GTASRNet",
    "NetConfig",
    "build_network",
    "c_noise",
    "c_out",
    "c_skip",
    "forward_process",
    "pad_bottom_right",
    "sample_one_step",
    "sample_padded",
    "time_grid",
    "upsample_lq",
]
