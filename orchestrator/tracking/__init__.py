"""Tracking: the one module that writes MLflow, the run view it names runs with, and its failure log."""
