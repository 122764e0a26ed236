"""`gtasr-export`: the model as an ONNX graph checked against PyTorch, a TensorRT engine where TensorRT
and a GPU are, and an AOTInductor package (`--pt2`); the backends themselves live in gtasr_stream.engines."""
