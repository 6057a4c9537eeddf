"""Model artifacts: torch and ONNX files, their export, quantization rewrites and training loops."""
