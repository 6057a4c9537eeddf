"""Measurement: quality, size, latency and memory of an artifact, on every target (ONNX Runtime, a browser, Node.js)."""
