"""orchestrator: expand YAML recipes of model-compression stages into a cached DAG, run it, track it in MLflow."""

__version__ = "0.1.0"
