"""LightningModules: losses, metrics, optimizers and schedules around the models of ``lightning_gpv.models``."""
