"""The node's model in MLflow: logged once per store as an MLflow logged model, and registered by name.

Split from the tracker (orchestrator.tracking.tracker), which logs runs and calls these with its client. ONNX
goes in MLflow's ONNX flavor (`mlflow.pyfunc.load_model` runs it); a GGUF or a GenAI folder, which no flavor
runs, is logged as its files (a GGUF with its Ollama `Modelfile`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.measure import targets

NODE_KEY = "orchestrator.node_key"
MODEL_LOGGED, MODEL_RUN = "orchestrator.model_logged", "orchestrator.model_run_id"  # where a node's ONNX lies
MODEL_ID = "orchestrator.model_id"  # the MLflow logged model of the node's ONNX


def log_once(client: Any, experiment_id: str, experiment_ids: Callable[[], list[str]], run_id: str, key: str,
             result: Any) -> str:
    """The logged model of node `key` for run `run_id`; returns its id. A cache hit points at the copy already
    logged in any experiment of the store (re-uploading every cached model on every rerun would copy the whole
    sweep, hundreds of MB for a transformer, to say nothing new); else the model is logged now."""
    holder = None
    if not result.executed:
        found = client.search_runs(experiment_ids(), f"tags.`{NODE_KEY}` = '{key}' and tags.`{MODEL_LOGGED}` = 'true'",
                                   max_results=1)
        holder = found[0] if found else None
    if holder is None or MODEL_ID not in holder.data.tags:
        model_id = logged_model(client, experiment_id, run_id, key, Path(result.onnx_path))
        client.set_tag(run_id, MODEL_LOGGED, "true")
    else:
        model_id = holder.data.tags[MODEL_ID]
        client.set_tag(run_id, MODEL_RUN, holder.info.run_id)
    client.set_tag(run_id, MODEL_ID, model_id)
    return model_id


def logged_model(client: Any, experiment_id: str, run_id: str, key: str, path: Path) -> str:
    """Save `path` as a logged model of `run_id` (ONNX flavor, or the files of a GGUF / GenAI folder); its id."""
    fmt = targets.format_of(path)
    model = client.create_logged_model(experiment_id, name="model", source_run_id=run_id, tags={NODE_KEY: key},
                                       model_type=fmt if fmt in ("gguf", "genai") else "onnx")
    if fmt in ("gguf", "genai"):  # no MLflow flavor runs these: their files as they are (+ Ollama's Modelfile)
        files = [path, path.with_name("Modelfile")] if fmt == "gguf" else sorted(path.parent.iterdir())
        for file in files:
            if file.is_file() and file.name != "meta.json":
                client.log_model_artifact(model.model_id, str(file))
    else:
        import mlflow.onnx
        import onnx

        from orchestrator.artifacts.onnx_utils import model_files

        with tempfile.TemporaryDirectory() as tmp:  # external data (a split or > 2 GB model) stays external
            mlflow.onnx.save_model(onnx.load(str(path)), f"{tmp}/model", pip_requirements=["onnxruntime"],
                                   save_as_external_data=len(model_files(path)) > 1)
            client.log_model_artifacts(model.model_id, f"{tmp}/model")
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])
    return model.model_id


def register(client: Any, uri: str, name: str, model_id: str, run_id: str, tags: dict[str, str]) -> str:
    """Register logged model `model_id` (of run `run_id`) as a new version of `name`; returns the version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(uri)  # the registry resolves models:/ URIs through the global store
    if not client.search_registered_models(f"name = '{name}'"):
        try:
            client.create_registered_model(name)
        except MlflowException as err:  # another sweep registering the same name created it just now
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    # (concurrent versions are numbered by the store itself, which retries a taken number)
    version = client.create_model_version(name, f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id)
    return str(version.version)
