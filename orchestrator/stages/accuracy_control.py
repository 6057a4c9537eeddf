"""Sensitivity analysis and accuracy control of a quantized model, on the task's validation split only.

Both compare models on the same fixed subsample of the validation split (`Task.validation_split`, never the
test split, which the engine measures the node on afterwards) and say every loss in the task's own terms
(`task.quality`: points of accuracy drop, a perplexity ratio), against the float parent on that subsample.

Sensitivity restores one quantizer group at a time to float in an otherwise quantized model, rather than
quantizing one group at a time in a float model: a group's gain is then its contribution in the company of
all the others' errors, which is what deciding the next group to raise needs (errors add up, and a layer
that is harmless alone can tip a model already near its bound). Rows come worst first:
(group, loss with everything quantized, loss with this group float, gain = the first minus the second).

Accuracy control (`max_loss`) quantizes everything at the mode's lowest precision and, while the loss is
over the bound, raises the most sensitive group one step up its ladder (int4 -> int8 -> float for
weight-only int4), re-measuring each time, until the bound holds or nothing is left to raise; a level that
does not lower the loss is taken back. It measures
sensitivity only when the fully quantized model misses the bound (or `sensitivity` asks for it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.artifacts.mixed_precision import FLOAT, Mixed
from orchestrator.stages.base import REPORT_DIR


@dataclass(frozen=True)
class Row:
    """One group's line of the sensitivity table (losses in the task's terms, on the validation subsample)."""

    group: str
    loss_all_quantized: float
    loss_group_float: float
    gain: float
    params: int


class Validation:
    """The task's quality metric on the first `samples` examples of its validation split, for any ONNX file."""

    def __init__(self, task: Any, samples: int, batch_size: int = 32) -> None:
        self.task, self.split = task, validation_split(task)
        self.batches, count = [], 0
        for feeds, labels in task.onnx_batches(self.split, batch_size):
            take = min(len(next(iter(feeds.values()))), samples - count)
            # labels of an LM batch are per token: keep whole rows of feeds, and the labels that go with them
            per_row = len(labels) // len(next(iter(feeds.values())))
            self.batches.append(({k: v[:take] for k, v in feeds.items()}, labels[:take * per_row]))
            count += take
            if count >= samples:
                break
        self.count = count

    def metric(self, path: Path) -> float:
        """The quality metric (`task.quality.metric`) of the model at `path` on the subsample."""
        import numpy as np

        from orchestrator.artifacts.onnx_utils import session

        sess = session(path, 1)
        logits = np.concatenate([self.task.onnx_logits(sess, feeds) for feeds, _ in self.batches])
        labels = np.concatenate([labels for _, labels in self.batches])
        return float(self.task.score(logits, labels)[self.task.quality.metric])


def validation_split(task: Any) -> str:
    """The split stages may tune on: the task's `validation_split` (default `val`); never `test`."""
    split = getattr(task, "validation_split", "val")
    if split == "test":
        raise ValueError(f"task {task.name!r} names its test split as its validation split")
    return split


class Control:
    """Sensitivity and accuracy control of one quantization (see the module docstring)."""

    def __init__(self, task: Any, src: Path, mixed: Mixed, samples: int, log: Any = print) -> None:
        self.quality, self.mixed, self.log = task.quality, mixed, log
        self.val = Validation(task, samples)
        self.base = self.val.metric(src)
        self.scratch = mixed.work / "candidate.onnx.tmp"
        self.builds = 0

    def loss(self, levels: dict[str, str]) -> float:
        """The validation loss of a build at `levels` against the float parent."""
        self.builds += 1
        value = self.val.metric(self.mixed.build(levels, self.scratch))
        loss = self.quality.loss_of({self.quality.metric: value}, {self.quality.metric: self.base})
        return float("inf") if loss is None else loss

    def sensitivity(self, loss_all: float) -> list[Row]:
        """One row per group, worst (largest gain from restoring it to float) first."""
        rows = []
        for group in self.mixed.groups:
            restored = self.loss({group.name: FLOAT})
            rows.append(Row(group.name, loss_all, restored, loss_all - restored, group.params))
        return sorted(rows, key=lambda r: -r.gain)

    def raise_until(self, rows: list[Row], limit: float, loss: float) -> tuple[dict[str, str], float]:
        """Raise the most sensitive groups one step at a time while `loss` is over `limit`. A level that does not
        lower the loss is taken back (its bytes would buy nothing: an LM head at float costs 4x its int8 size for
        the same perplexity); the group's next level is still tried from where it stood (int8 may not help a
        layer that float rescues)."""
        levels: dict[str, str] = {}
        groups = {g.name: g for g in self.mixed.groups}
        for row in rows:
            for level in self.mixed.ladder_of(groups[row.group])[1:]:
                if not self.quality.exceeds(loss, limit):
                    return levels, loss
                trial = {**levels, row.group: level}
                new = self.loss(trial)
                kept = new < loss
                self.log(f"accuracy control: {row.group} -> {level}: validation loss "
                         f"{self.quality.short_loss(new)}{'' if kept else ', no gain: taken back'}")
                if kept:  # else the group stays where it was; its next step up is still tried
                    levels, loss = trial, new
        return levels, loss


def run(task: Any, src: Path, out: Path, mixed: Mixed, *, samples: int, sensitivity: bool,
        max_loss: float | None, log: Any = print) -> dict[str, float]:
    """Quantize `src` into `out` through `mixed`, with the sensitivity table and / or accuracy control the
    stage asked for; returns the stage metrics. Files for the run go to `out`'s folder / REPORT_DIR."""
    ctl = Control(task, src, mixed, samples, log)
    loss_all = ctl.loss({})
    metrics: dict[str, float] = {"lowbit_val_samples": float(ctl.val.count), "lowbit_loss_all": loss_all}
    missed = bool(max_loss) and ctl.quality.exceeds(loss_all, max_loss)
    rows = ctl.sensitivity(loss_all) if sensitivity or missed else []
    if rows:
        metrics.update(sensitivity_groups=float(len(rows)), sensitivity_top_gain=rows[0].gain)
        write_report(out.parent / REPORT_DIR, rows, ctl.quality, ctl.val.split)
        worst = [r.group for r in rows[:3] if r.gain > 0]
        log(f"quality is lost in {', '.join(worst)}" if worst else "no single group explains the quality lost")
    levels, loss = ctl.raise_until(rows, max_loss, loss_all) if missed else ({}, loss_all)
    mixed.build(levels, out)
    ctl.scratch.unlink(missing_ok=True)
    metrics.update(lowbit_bits_per_weight=mixed.bits_per_weight(levels), lowbit_val_loss=loss,
                   lowbit_builds=float(ctl.builds + 1))
    if max_loss:
        metrics.update(lowbit_max_loss=max_loss, lowbit_bound_met=float(not ctl.quality.exceeds(loss, max_loss)),
                       lowbit_groups_raised=float(len(levels)),
                       lowbit_groups_float=float(sum(v == FLOAT for v in levels.values())))
    return metrics


def write_report(folder: Path, rows: list[Row], quality: Any, split: str) -> None:
    """sensitivity.json, a Markdown table and a bar chart (worst first) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"split": split, "metric": quality.metric, "loss": quality.loss, "rows": [asdict(r) for r in rows]}
    (folder / "sensitivity.json").write_text(json.dumps(data, indent=2))
    lines = [f"Loss on the {split} split ({quality.limit_words()}), restoring one group to float at a time.", "",
             "| group | params | loss, all quantized | loss, this group float | gain |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.group} | {r.params} | {quality.short_loss(r.loss_all_quantized)} | "
              f"{quality.short_loss(r.loss_group_float)} | {_gain(r.gain, quality)} |" for r in rows]
    (folder / "sensitivity.md").write_text("\n".join(lines) + "\n")
    _bar_chart(folder / "sensitivity.png", rows, quality)


def _gain(gain: float, quality: Any) -> str:
    """A gain in the loss's units: points for a drop (a difference of drops), a plain number for ratios."""
    return quality.short_loss(gain) if quality.loss == "drop" else f"{gain:+.3f}"


def _bar_chart(path: Path, rows: list[Row], quality: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here
    import matplotlib.pyplot as plt

    shown = rows[:30]  # a 200-layer model's tail is noise; the table has every row
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(shown) + 1.2))
    ax.barh([r.group for r in shown][::-1], [r.gain for r in shown][::-1])
    ax.set_xlabel(f"{quality.limit_words()} recovered by restoring the group to float")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
