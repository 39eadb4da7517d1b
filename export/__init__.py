"""torch -> ONNX export, quantized variants, parity gates, BentoML model store registration."""
