"""Engines that run the one-step generator; today PyTorch (CPU/CUDA), ONNX/TensorRT with export."""
