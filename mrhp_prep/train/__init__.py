"""Training over the cached features: dataset, models, losses, metrics, trainer."""
