"""Where a search's study lives and what it is called, and its account on the parent run (Optuna lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.config.search import SearchConfig
from orchestrator.engine.cache import is_url, mirror_dir
from orchestrator.hashing import digest

STUDY_KEYS = ("pipeline", "orderings", "stages", "sweep", "task", "seed", "eval", "gate")  # what names a study


def study_name(title: str, cfg: dict[str, Any], search: SearchConfig, pinned: frozenset[str]) -> str:
    """The recipe and a hash of what defines the study (not its budget nor where it runs)."""
    data = {k: cfg.get(k) for k in STUDY_KEYS}
    data["search"] = {"sampler": search.sampler, "seed": search.seed, "objectives": search.objectives}
    data["pinned"] = sorted(pinned & set(cfg.get("sweep") or {}))
    return f"{title}-{digest(data)[:12]}"


def storage_url(tracking_uri: str, tracking_on: bool, cache_dir: str, storage: str | None = None) -> str:
    """Where the study lives: `search.storage` when given (the team's PostgreSQL), else beside a SQLite
    tracking store, else in the cache folder (this machine's mirror of a remote one)."""
    if storage:
        return storage
    if tracking_on and tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri.removeprefix('sqlite:///')).resolve().parent / 'search.db'}"
    folder = mirror_dir(cache_dir) if is_url(cache_dir) else Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve() / 'search.db'}"


def importances(study: Any) -> dict[str, float]:
    """Optuna's fANOVA importance of each sampled parameter for the first objective ({} while too few
    completed trials, or a single distinct point, let it tell)."""
    import optuna

    try:
        return dict(optuna.importance.get_param_importances(study, target=lambda t: t.values[0]))
    except (RuntimeError, ValueError):
        return {}


def trials(study: Any) -> list[tuple[int, str, list[float] | None]]:
    """(number, state, objective values or None) of every trial, in order."""
    return [(t.number, t.state.name.lower(), list(t.values) if t.values else None)
            for t in study.get_trials(deepcopy=False)]


def summary(study: Any, objectives: list[tuple[str, str]]) -> str:
    """The study as Markdown: every trial (state, sampled values, objective values) and, where Optuna can tell
    from the completed trials, which parameters mattered for the first objective (its fANOVA importance)."""
    names = [m for m, _ in objectives]
    lines = [f"# Search: study {study.study_name}", "",
             "| trial | state | " + " | ".join(names) + " | sampled |", "|---|---|" + "---|" * len(names) + "---|"]
    for t in study.get_trials(deepcopy=False):
        values = [f"{v:.4g}" for v in t.values] if t.values else [""] * len(names)
        sampled = ", ".join(f"{k}={v}" for k, v in t.params.items())
        lines.append(f"| {t.number} | {t.state.name.lower()} | " + " | ".join(values) + f" | {sampled} |")
    importance = importances(study)
    if importance:
        lines += ["", f"Parameter importance for {names[0]} (fANOVA):", ""]
        lines += [f"- {k}: {v:.3f}" for k, v in importance.items()]
    return "\n".join(lines) + "\n"
