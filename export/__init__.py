"""`gtasr-export`: the model as an ONNX graph checked against PyTorch (TensorRT engines come later)."""
