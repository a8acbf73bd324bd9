"""LightningModules: losses, metrics, optimizers and schedules around ``lightning_gpv.models``."""
