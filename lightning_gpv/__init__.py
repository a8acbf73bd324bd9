"""lightning-gpv: general-purpose vision-language models (GPV-1, VistaLLM) in PyTorch Lightning."""

__version__ = "0.1.0"
