"""Reading a past sweep back from MLflow, as plain data, for the report command (`python -m orchestrator.report`).

Writing lives in `tracker`; this side only searches runs, by the tags the tracker sets.
"""

from __future__ import annotations

from typing import Any

from orchestrator.tracking.tracker import PARENT, RECIPE


def fetch_sweep(uri: str, ref: str) -> dict[str, Any]:
    """A past sweep, read back: `ref` is a parent run id, or an experiment name (its latest sweep).

    Returns plain data: parent `run_id`, `experiment`, `params`, `tags`, and `children`, each a dict with
    `run_id`, `name`, `tags` and `metrics`. Raises LookupError when nothing matches.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        parent = client.get_run(ref)
    except MlflowException:
        parent = _latest_sweep(client, uri, ref)
    if PARENT in parent.data.tags:  # a node run's id: report its sweep
        parent = client.get_run(parent.data.tags[PARENT])
    experiment = client.get_experiment(parent.info.experiment_id).name
    children = _search_all(client, parent.info.experiment_id, f"tags.`{PARENT}` = '{parent.info.run_id}'")
    return {"run_id": parent.info.run_id, "experiment": experiment, "params": dict(parent.data.params),
            "tags": dict(parent.data.tags),
            "children": [{"run_id": r.info.run_id, "name": r.info.run_name, "tags": dict(r.data.tags),
                          "metrics": dict(r.data.metrics)} for r in children]}


def _latest_sweep(client: Any, uri: str, experiment: str) -> Any:
    """The most recently started parent run (it carries the recipe tag; node runs do not) of `experiment`."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"{experiment!r} is neither a run id nor an experiment name in {uri}")
    runs = client.search_runs([found.experiment_id], f"tags.`{RECIPE}` LIKE '%'", order_by=["start_time DESC"],
                              max_results=1)
    if not runs:
        raise LookupError(f"experiment {experiment!r} has no sweep (parent) run")
    return runs[0]


def _search_all(client: Any, experiment_id: str, query: str) -> list[Any]:
    """Every run of the experiment matching `query` (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs
