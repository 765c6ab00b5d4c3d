"""Trained weights: safetensors files and their cards (files), the Hugging Face Hub (hub),
ONNX export (onnx), user exports (exports) and the model-card tables (table)."""
