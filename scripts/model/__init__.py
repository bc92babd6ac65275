"""Model: network, losses, metrics, transforms, training helpers, checkpoints, export and release."""
