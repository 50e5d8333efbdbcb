"""Quantisation: calibration (once), per-op precision recipes, kernel truth, plans."""
