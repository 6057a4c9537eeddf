"""ONNX export of Hugging Face sequence classifiers.

An intact architecture (every shape as its config builds it) goes through optimum's exporter, which
knows each architecture's inputs and quirks. A pruned one cannot (optimum rebuilds nothing, but its
configs assume uniform layers), so it goes through `torch.onnx.export` of a thin wrapper that takes
the inputs positionally and returns the logits, with dynamic batch and sequence axes.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from orchestrator.tasks.hf.model import is_intact


def export(model: Any, path: Path, opset: int, exporter: str, example: dict[str, Any],
           input_names: list[str], log: Any = print) -> str:
    """Write `model` as ONNX to `path`; returns which exporter was used ('optimum' or 'torch.onnx')."""
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    if exporter != "dynamo" and is_intact(model):
        if _optimum(model, path, opset, input_names):
            return "optimum"
        log("optimum's ONNX inputs differ from the tokenizer's; exporting with torch.onnx instead")
    _torch(model, path, opset, exporter, example, input_names)
    return "torch.onnx"


def _optimum(model: Any, path: Path, opset: int, input_names: list[str]) -> bool:
    """Export through optimum into a scratch folder and move model.onnx to `path`; False if unusable."""
    import onnx
    from optimum.exporters.onnx import onnx_export_from_model

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, quiet():
        onnx_export_from_model(model, tmp, opset=opset, task="text-classification", do_validation=False)
        produced = Path(tmp) / "model.onnx"
        inputs = {i.name for i in onnx.load(str(produced), load_external_data=False).graph.input}
        if inputs != set(input_names):
            return False
        shutil.move(str(produced), str(path))
    return True


def _wrap(model: Any, names: list[str]) -> Any:
    """A module that calls the HF model with positional inputs (as the ONNX graph takes them) -> logits."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> Any:
            return self.model(**dict(zip(names, args, strict=True))).logits

    return Logits().eval()


def _torch(model: Any, path: Path, opset: int, exporter: str, example: dict[str, Any], names: list[str]) -> None:
    """torch.onnx export with dynamic batch and sequence axes on every input."""
    import torch

    wrapper = _wrap(model, names)
    args = tuple(example[n] for n in names)
    with quiet(), torch.no_grad():
        if exporter == "dynamo":
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=4096)
            torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=["logits"],
                              opset_version=opset, dynamo=True, external_data=False,
                              dynamic_shapes=(tuple({0: batch, 1: seq} for _ in names),))  # one *args input
        else:
            axes = {n: {0: "batch", 1: "sequence"} for n in names}
            torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=["logits"],
                              opset_version=opset, dynamo=False, dynamic_axes={**axes, "logits": {0: "batch"}})


@contextlib.contextmanager
def quiet() -> Any:
    """Silence what exporters and loaders print that says nothing actionable here (progress, tracer
    warnings, opset hints, GGUF progress bars): the root, optimum and transformers loggers, stdout."""
    import logging

    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    loggers = [logging.getLogger(n) for n in ("", "optimum", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        transformers.logging.set_verbosity(verbosity)
