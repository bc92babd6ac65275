"""Data engine: phantom and real-anatomy cohorts, CT volumes, X-ray image formation, simulation."""
