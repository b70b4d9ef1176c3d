"""collapse_guard: keep training on synthetic data honest, in PyTorch Lightning."""
__version__ = "0.1.0"
