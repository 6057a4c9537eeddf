"""A past sweep's report rebuilt from MLflow alone: `python -m orchestrator.report <parent run id | experiment>`.

The rows come from the sweep's node runs, the constraints from the params logged with it (each overridable
on the command line), the quality from the task's class where it is installed, else from the contract
logged on the parent run; the same code as at the end of a sweep then builds, prints and plots it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from orchestrator.engine.plan import BASELINE
from orchestrator.measure import targets
from orchestrator.report.pareto import LOSS, Constraints, Row
from orchestrator.report.tradeoff import baseline_label, build, limit_keys, markdown, render, task_notes
from orchestrator.tasks.quality import Columns, Quality


def rows_from_runs(children: list[dict[str, Any]]) -> list[Row]:
    """The same rows rebuilt from a sweep's node runs in MLflow (see tracking.fetch_sweep)."""
    from orchestrator.tracking.tracker import LEAF, NODE_KEY, STATUS, VARIANT

    roots = [c for c in children if c["tags"].get("orchestrator.stage") == BASELINE]
    rows = []
    for c in roots:
        own = {k: v for k, v in c["metrics"].items() if "/" not in k}
        rows.append(Row(baseline_label(c["tags"][NODE_KEY], len(roots)), c["tags"][NODE_KEY], c["tags"][STATUS],
                        own, own, True))
    for c in children:
        if c["tags"].get(LEAF) == "true" and c["tags"].get("orchestrator.stage") != BASELINE:
            own = {k: v for k, v in c["metrics"].items() if "/" not in k}
            base = {k.split("/", 1)[1]: v for k, v in c["metrics"].items() if k.startswith(BASELINE + "/")}
            rows.append(Row(c["tags"].get(VARIANT, c["name"]), c["tags"][NODE_KEY], c["tags"][STATUS], own, base))
    return rows


def _limits(params: dict[str, str], args: argparse.Namespace, quality: Quality) -> Constraints:
    """Constraints logged with the sweep, each overridable on the command line (`--max-accuracy-drop` and the
    other task-named forms of `--max-loss` too, where they name this task's loss)."""
    legacy = quality.legacy_key
    values = {k: (None if params.get(f"report.{k}") in (None, "", "None") else float(params[f"report.{k}"]))
              for k in (*limit_keys(), legacy)}
    values.update({k: getattr(args, k) for k in limit_keys() if getattr(args, k) is not None})
    for key in LEGACY_ARGS:
        if getattr(args, key) is not None:
            if key != legacy:
                raise LookupError(f"--{key.replace('_', '-')} does not apply: this sweep's quality is "
                                  f"{quality.limit_words()}; use --max-loss")
            values[LOSS] = getattr(args, key)
    values["target"] = args.target or params.get("report.target") or "ort"
    return Constraints.from_dict(values, quality)


LEGACY_ARGS = ("max_accuracy_drop", "max_perplexity_ratio")  # what --max-loss was called before tasks declared it


def logged_task(tags: dict[str, str]) -> tuple[Quality, Columns, list[str]]:
    """The quality, columns and notes of a logged sweep's task: from its class where installed, else the
    contract logged on the parent run (sweeps logged before it: the classifiers' accuracy). Plugins are
    installed by `main` first."""
    from orchestrator.tasks import TASKS
    from orchestrator.tasks.quality import ACCURACY

    cls = TASKS.get(tags.get("orchestrator.task", ""))
    if cls is not None:
        return cls.quality, cls.columns, list(cls.report_notes)
    return Quality.from_tags(tags) or ACCURACY, Columns(), []


def main(argv: list[str] | None = None) -> int:
    """`python -m orchestrator.report REF`: print the report of a past sweep, write its plots and Markdown."""
    from orchestrator.config.plugins import install
    from orchestrator.config.schema import TrackingConfig
    from orchestrator.report.plots import write_plots
    from orchestrator.tracking.readback import fetch_sweep

    install()  # the user's own targets and tasks: their columns, axes, limits and quality

    ap = argparse.ArgumentParser(prog="python -m orchestrator.report", description=__doc__.splitlines()[0])
    ap.add_argument("ref", help="a sweep's parent run id, or an experiment name (its latest sweep)")
    ap.add_argument("--tracking-uri", default=TrackingConfig().uri, help="MLflow store (default: %(default)s)")
    ap.add_argument("--out", help="folder for report.md and the PNGs (default: .cache/orchestrator/reports/RUN)")
    for k in (*limit_keys(), *LEGACY_ARGS):
        ap.add_argument("--" + k.replace("_", "-"), dest=k, type=float, help=f"override report.{k}")
    ap.add_argument("--target", choices=targets.selectable(), help="override report.target")
    args = ap.parse_args(argv)
    try:
        sweep = fetch_sweep(args.tracking_uri, args.ref)
    except LookupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    quality, own_columns, notes = logged_task(sweep["tags"])
    try:
        limits = _limits(sweep["params"], args, quality)
    except LookupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = build(rows_from_runs(sweep["children"]), limits, own_columns)
    from orchestrator.tasks import TASKS

    cls = TASKS.get(sweep["tags"].get("orchestrator.task", ""))
    report.notes = task_notes(cls, report.rows) if cls is not None else notes
    title = sweep["tags"].get("orchestrator.recipe", sweep["experiment"])
    out = Path(args.out or Path(".cache/orchestrator/reports") / sweep["run_id"])
    env = {k: v for k, v in sweep["tags"].items() if k.startswith("orchestrator.env.")}
    images = write_plots(report.rows, report.rec.row.key if report.rec.row else None, report.limits, out, title)
    (out / "report.md").write_text(markdown(report, title, env))
    print(render(report))
    print(f"\nSweep {sweep['run_id']} (experiment {sweep['experiment']}); wrote {out / 'report.md'}"
          + "".join(f", {p.name}" for p in images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
