"""Reconstruction: inference pipeline, statistical shape models, surface metrics, evaluation."""
