"""Running the one-step generator: `upscaler.Upscaler` (noise, batching, tiling, out-of-memory ladder,
backend choice) over one step per backend (`torch_engine`, `onnx_engine`, `trt_engine` with
`trt_profile`, `aoti_engine`), plus `device` (device and dtype choice) and `tiling` (the step type,
blended tiles).  Backends import `device`/`tiling`/`onnx_engine` at most, never `upscaler`."""
