"""Sensitivity analysis and accuracy control of `quantize` on real models: a planted sensitive layer, a bound
held with the fewest groups raised, the test split never read, bad bounds refused before compute."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import leaf_runs, run_cli

from orchestrator.stages import REGISTRY, StageContext
from orchestrator.stages.quantize import Quantize, QuantizeParams


def ctx(task: Any, folder: Path) -> StageContext:
    folder.mkdir(parents=True, exist_ok=True)
    return StageContext(task=task, work_dir=folder, seed=0, teacher=lambda: None, log=lambda _: None)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, digits: Any, baseline: Any) -> Path:
    """The digits CNN as ONNX with one planted int4-fragile layer, the first Linear (`6.weight`).

    Conv channels 0, 16, 32, 48 are made dead (zero weights, negative bias: ReLU outputs 0), and the Linear
    weights that read them are set to 100. The float model computes the same thing without those channels,
    but each int4 block (block_size 256: 16 channels of 16 positions, so every block holds one dead channel)
    now gets a scale of 100/7, which rounds every real weight to zero: quantizing this layer alone wrecks
    the model.
    """
    import copy

    import onnx
    from onnx import numpy_helper

    folder = tmp_path_factory.mktemp("planted")
    export = REGISTRY["export"](REGISTRY["export"].Params())
    path = export.run(ctx(digits, folder / "fp32"), copy.deepcopy(baseline)).model
    proto = onnx.load(str(path))
    inits = {t.name: t for t in proto.graph.initializer}

    def put(name: str, change: Any) -> None:
        array = numpy_helper.to_array(inits[name]).copy()
        change(array)
        inits[name].CopyFrom(numpy_helper.from_array(array, name))

    dead = [0, 16, 32, 48]
    put("2.weight", lambda w: w.__setitem__(dead, 0.0))
    put("2.bias", lambda b: b.__setitem__(dead, -1.0))
    inputs = np.concatenate([np.arange(16 * c, 16 * c + 16) for c in dead])  # flatten order: channel, 4x4
    put("6.weight", lambda w: w.__setitem__((slice(None), inputs), 100.0))  # (out, in)
    onnx.save(proto, str(folder / "planted.onnx"))
    return folder / "planted.onnx"


class SplitSpy:
    """Records every split a wrapped task is asked for, to prove which data a stage read."""

    def __init__(self, task: Any) -> None:
        self.task, self.read = task, set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def batches(self, split: str, *args: Any, **kwargs: Any) -> Any:
        self.read.add(split)
        return self.task.batches(split, *args, **kwargs)

    def onnx_batches(self, split: str, *args: Any, **kwargs: Any) -> Any:
        self.read.add(split)
        return self.task.onnx_batches(split, *args, **kwargs)


INT4 = {"mode": "int4", "block_size": 256, "val_samples": 256}


@pytest.fixture(scope="module")
def table(planted: Path, digits: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, set]:
    """(stage metrics, sensitivity.json, splits read) of int4 with a sensitivity table on the planted model."""
    spy = SplitSpy(digits)
    folder = tmp_path_factory.mktemp("sensitivity")
    out = Quantize(QuantizeParams(**INT4, sensitivity=True)).run(ctx(spy, folder), planted)
    return out.metrics, json.loads((folder / "report" / "sensitivity.json").read_text()), spy.read


def test_the_planted_layer_is_found_first(table: tuple[dict, dict, set]) -> None:
    metrics, report, read = table
    rows = report["rows"]
    assert [r["group"] for r in rows] == ["6.weight", "8.weight"]  # worst first
    assert rows[0]["loss_all_quantized"] > 0.5  # int4 of the planted layer collapses the classifier...
    assert rows[0]["loss_group_float"] < 0.05  # ...and restoring it alone recovers it
    assert rows[0]["gain"] == pytest.approx(rows[0]["loss_all_quantized"] - rows[0]["loss_group_float"])
    assert metrics["sensitivity_top_gain"] == pytest.approx(rows[0]["gain"])
    assert metrics["sensitivity_groups"] == 2 and report["metric"] == "accuracy" and report["split"] == "calib"
    assert "test" not in read and "calib" in read


def test_accuracy_control_stops_at_the_first_group_that_meets_the_bound(planted: Path, digits: Any, tmp_path: Path,
                                                                        table: tuple[dict, dict, set]) -> None:
    import onnx

    rows = table[1]["rows"]
    bound = rows[0]["loss_group_float"] + 0.02  # met once the planted layer is float, missed before
    spy = SplitSpy(digits)
    out = Quantize(QuantizeParams(**INT4, max_loss=bound)).run(ctx(spy, tmp_path), planted)
    m = out.metrics
    assert m["lowbit_bound_met"] == 1.0 and m["lowbit_val_loss"] <= bound
    # int8 of the planted row still rounds its real weights to 0 (scale 100/127): float it is, and nothing else
    assert m["lowbit_groups_raised"] == 1 and m["lowbit_groups_float"] == 1
    assert m["lowbit_val_loss"] == pytest.approx(rows[0]["loss_group_float"])
    params = {r["group"]: r["params"] for r in rows}
    expected = (32 * params["6.weight"] + 4 * params["8.weight"]) / sum(params.values())
    assert m["lowbit_bits_per_weight"] == pytest.approx(expected)
    ops = [n.op_type for n in onnx.load(str(out.model)).graph.node]
    assert ops.count("MatMulNBits") == 1 and ops.count("MatMul") == 1  # the head int4, the planted layer float
    assert "test" not in spy.read


def test_a_level_that_gains_nothing_is_taken_back_and_the_next_is_still_tried() -> None:
    """The ladder logic alone, on a table of losses (perplexity ratios): the head gains from int8 and nothing
    from float (it stays int8); a layer gains nothing from int8 but float rescues it (it goes float)."""
    from orchestrator.artifacts.mixed_precision import Group
    from orchestrator.stages.accuracy_control import Control, Row
    from orchestrator.tasks.quality import Quality

    losses = {(): 1.40, (("head", "int8"),): 1.20, (("head", "float"),): 1.20,
              (("head", "int8"), ("layer", "int8")): 1.20, (("head", "int8"), ("layer", "float")): 1.05}

    class Ladder:
        groups = [Group("head", ("h",), 100), Group("layer", ("l",), 10)]

        def ladder_of(self, group: Group) -> tuple[str, ...]:
            return ("int4", "int8", "float")

    ctl = Control.__new__(Control)
    ctl.quality, ctl.mixed, ctl.log, ctl.builds = Quality("perplexity", False, "ratio"), Ladder(), lambda _: None, 0
    tried = []

    def loss(levels: dict[str, str]) -> float:
        tried.append(dict(levels))
        return losses[tuple(sorted(levels.items()))]

    ctl.loss = loss
    rows = [Row("head", 1.4, 1.2, 0.2, 100), Row("layer", 1.4, 1.3, 0.1, 10)]
    levels, final = ctl.raise_until(rows, 1.08, 1.40)
    assert levels == {"head": "int8", "layer": "float"} and final == 1.05
    assert tried == [{"head": "int8"}, {"head": "float"}, {"head": "int8", "layer": "int8"},
                     {"head": "int8", "layer": "float"}]


def test_a_bound_the_quantized_model_meets_raises_nothing(planted: Path, digits: Any, tmp_path: Path) -> None:
    out = Quantize(QuantizeParams(**INT4, max_loss=1.0)).run(ctx(digits, tmp_path), planted)
    m = out.metrics
    assert m["lowbit_groups_raised"] == 0 and m["lowbit_bits_per_weight"] == 4.0
    assert "sensitivity_top_gain" not in m and m["lowbit_builds"] == 2  # no sensitivity pass was needed
    assert not (tmp_path / "report").exists()


def test_the_validation_subsample_is_fixed_and_never_the_test_split(digits: Any) -> None:
    from orchestrator.stages.accuracy_control import Validation, validation_split

    val = Validation(digits, 100)
    assert val.count == 100 and val.split == "calib"
    test_x = next(digits.onnx_batches("test", 10_000))[0]["input"]
    seen = np.concatenate([feeds["input"] for feeds, _ in val.batches])
    assert not any((seen[i] == test_x).all(axis=(1, 2, 3)).any() for i in range(len(seen)))

    class Leaky:
        name, validation_split = "leaky", "test"

    with pytest.raises(ValueError, match="test split"):
        validation_split(Leaky())


def test_tinylm_sensitivity_is_by_block_and_in_perplexity_ratios(tmp_path: Path) -> None:
    from orchestrator.tasks.lm.tinylm import TinyLM, TinyLMParams

    lm = TinyLM(TinyLMParams(vocab_size=512, hidden_size=32, layers=2, heads=4, kv_heads=2, ffn=64, context=64,
                             train_tokens=30000, eval_tokens=2048, batch_size=8), seed=0)
    path = tmp_path / "fp32.onnx"
    lm.export(lm.build_baseline(), path, 17, "torchscript")
    spy = SplitSpy(lm)
    out = Quantize(QuantizeParams(mode="int4", sensitivity=True, val_samples=8)).run(ctx(spy, tmp_path / "q"), path)
    report = json.loads((tmp_path / "q" / "report" / "sensitivity.json").read_text())
    groups = {r["group"] for r in report["rows"]}
    assert {"layers.0", "layers.1"} <= groups and len(groups) <= 4  # blocks, plus the embedding and the head
    assert report["loss"] == "ratio" and out.metrics["lowbit_loss_all"] > 0.9  # a perplexity ratio, not a drop
    assert (tmp_path / "q" / "report" / "sensitivity.png").stat().st_size > 0
    assert spy.read == {"val"}

    import onnx

    from orchestrator.artifacts.mixed_precision import Mixed, Options

    mixed = Mixed(path, tmp_path, Options("int4"))  # ORT's Gather quantizer has 4 bits only: int8 means float
    table = next(g for g in mixed.groups if set(g.nodes) <= mixed.tables)
    assert mixed.ladder_of(table) == ("int4", "float")
    ops = {n.op_type for n in onnx.load(str(mixed.build({table.name: "int8"}, tmp_path / "m.onnx"))).graph.node}
    assert "Gather" in ops and "GatherBlockQuantized" not in ops


@pytest.mark.parametrize("overrides, key, words", [
    (["stages.quantize.max_loss=-1"], "stages.quantize.max_loss", "[0, inf]"),
    (["stages.quantize.mode=fp16", "stages.quantize.sensitivity=true"], "stages.quantize.sensitivity", "modes"),
    (["task=tinylm", "stages.quantize.max_loss=0.5"], "stages.quantize.max_loss", ">= 1"),
])
def test_bad_bounds_exit_2_before_compute(store: dict[str, str], overrides: list[str], key: str, words: str) -> None:
    proc = run_cli(store, "+recipe=int4", *overrides, timeout=120)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if key in line]
    assert len(errors) == 1 and words in errors[0], proc.stderr[-2000:]
    assert not Path(store["cache"], "nodes").exists() or not any(Path(store["cache"], "nodes").iterdir())


def test_a_sweep_logs_the_table_and_the_control_metrics_to_mlflow(store: dict[str, str]) -> None:
    from mlflow.tracking import MlflowClient

    proc = run_cli(store, "+recipe=int4", "~sweep", "stages.quantize.sensitivity=true",
                   "stages.quantize.max_loss=0.001", "tracking.log_models=false", timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = next(r for r in leaf_runs(store, "int4") if r.data.tags["orchestrator.pipeline"] == "quantize")
    m = run.data.metrics
    assert {"lowbit_bits_per_weight", "lowbit_val_loss", "lowbit_bound_met", "sensitivity_top_gain"} <= m.keys()
    assert "accuracy" in m  # the engine's own test measurement, after the stage
    files = {f.path for f in MlflowClient(store["uri"]).list_artifacts(run.info.run_id, "report")}
    assert {"report/sensitivity.json", "report/sensitivity.md", "report/sensitivity.png"} <= files
