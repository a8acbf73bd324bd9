"""Pure-PyTorch models, one sub-package per family; the LightningModules are in ``lightning_gpv.systems``."""
