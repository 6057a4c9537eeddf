"""Nothing read from the cache can run code: a planted pickle is refused and rebuilt, odd structures refused."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from orchestrator.artifacts import torch_io
from orchestrator.engine.cache import Cache


class Payload:
    """Unpickling this runs os.system: the classic malicious-checkpoint payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_really_would_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))  # the control: this payload does run when unpickled
    assert marker.exists()


@pytest.mark.slow
def test_planted_pickle_runs_nothing_and_the_node_is_rebuilt(store: dict[str, str], tmp_path: Path) -> None:
    assert run_cli(store, "+recipe=pkdq", "sweep={}", "tracking=none").returncode == 0
    cache = Cache(store["cache"])
    marker = tmp_path / "pwned"
    torch_nodes = [p.parent.name for p in Path(store["cache"], "nodes").glob("*/model.safetensors")]
    assert torch_nodes
    for key in torch_nodes:  # the attacker swaps every torch artifact for a pickle and points meta.json at it
        folder = cache.path(key)
        (folder / "model.pt").write_bytes(pickle.dumps(Payload(marker)))
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps({**meta, "model_file": "model.pt"}))
    out = run_cli(store, "+recipe=pkdq", "sweep={}", "tracking=none", "eval.repeats=31")
    assert out.returncode == 0, out.stderr
    assert not marker.exists()
    assert "refused (model file 'model.pt' is neither ONNX, GGUF nor model.safetensors" in out.stderr
    for key in torch_nodes:  # rebuilt in the safe format
        assert cache.has(key) and cache.model_path(key).name == "model.safetensors"
        assert not (cache.path(key) / "model.pt").exists()


def test_structure_asking_for_another_class_is_refused(digits, baseline, tmp_path: Path) -> None:
    weights = tmp_path / torch_io.save(baseline, tmp_path, digits)
    structure = json.loads((tmp_path / torch_io.STRUCTURE).read_text())
    structure["modules"]["1"]["class"] = "os.system"
    (tmp_path / torch_io.STRUCTURE).write_text(json.dumps(structure))
    with pytest.raises(torch_io.UnsafeArtifact, match="os.system"):
        torch_io.load(weights, digits)


def test_structure_with_non_plain_attribute_is_refused(digits, baseline, tmp_path: Path) -> None:
    weights = tmp_path / torch_io.save(baseline, tmp_path, digits)
    structure = json.loads((tmp_path / torch_io.STRUCTURE).read_text())
    structure["modules"]["0"]["attrs"]["padding"] = {"__reduce__": "os.system"}
    (tmp_path / torch_io.STRUCTURE).write_text(json.dumps(structure))
    with pytest.raises(torch_io.UnsafeArtifact, match="plain data"):
        torch_io.load(weights, digits)


def test_only_safetensors_files_are_read_as_torch(digits, baseline, tmp_path: Path) -> None:
    torch.save(baseline, tmp_path / "model.pt")
    with pytest.raises(torch_io.UnsafeArtifact, match="model.safetensors"):
        torch_io.load(tmp_path / "model.pt", digits)


def test_a_pruned_digits_model_round_trips(digits, baseline, tmp_path: Path) -> None:
    import copy

    from orchestrator.stages import REGISTRY, StageContext

    ctx = StageContext(task=digits, work_dir=tmp_path, seed=0, teacher=lambda: baseline)
    pruned = REGISTRY["prune"](REGISTRY["prune"].Params(ratio=0.5)).run(ctx, copy.deepcopy(baseline)).model
    loaded = torch_io.load(tmp_path / torch_io.save(pruned, tmp_path, digits), digits)
    assert loaded[0].out_channels == pruned[0].out_channels < baseline[0].out_channels
    x, _ = next(digits.batches("test", 16))
    torch.testing.assert_close(loaded(x), pruned(x))
    assert torch_io.param_count(tmp_path / torch_io.WEIGHTS) == sum(p.numel() for p in pruned.parameters())
