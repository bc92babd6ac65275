"""MONAI Deploy application packaging of the bundle (see docs/deployment.md)."""
