"""`split`: write a model as a small graph file plus external-data shards of at most `shard_mb` MB (ONNX -> ONNX).

A browser tab cannot take a multi-GB ArrayBuffer and protobuf cannot hold a file over 2 GB, but both ONNX
Runtime (Python) and onnxruntime-web load a graph whose weights live in external-data files. Shards are
tensor-aligned: every weight of at least `min_tensor_kb` KB lies whole in one shard (smaller ones stay in
the graph file), shards fill in graph order, and a tensor larger than `shard_mb` fails the node naming it.
The browser target fetches the shards and hands them to onnxruntime-web (`externalData`).

Stage metrics: `split_shards`, `split_max_shard_mb`, `split_graph_mb`, `split_total_mb`, and the session
load time from the shards on this host, `split_load_cold_ms` (the shards' pages dropped from the OS page
cache first, as after a reboot or a fresh download) and `split_load_warm_ms` (median of 3, cached pages).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import check_range
from orchestrator.stages.base import ONNX, Stage, StageContext, StageOutput

SHARD = "model.onnx.data{}"  # shard i is model.onnx.data<i> (no suffix: not an ONNX file the cache would list)


@dataclass
class SplitParams:
    """shard_mb: the largest shard (MB, 1e6 bytes); min_tensor_kb: smaller tensors stay in the graph file."""

    shard_mb: float = 512.0
    min_tensor_kb: float = 1.0

    def __post_init__(self) -> None:
        check_range("shard_mb", self.shard_mb, 0.0, 1_000_000.0, lo_open=True)
        check_range("min_tensor_kb", self.min_tensor_kb, 0.0, 1_000_000.0)


class Split(Stage):
    """Graph file + tensor-aligned external-data shards of at most shard_mb each."""

    name = "split"
    version = "1"
    consumes = ONNX
    produces = ONNX
    Params = SplitParams
    libraries = ("onnx",)

    def run(self, ctx: StageContext, model: Any) -> StageOutput:
        import onnx

        out = ctx.work_dir / "model.onnx"
        proto = onnx.load(str(model))  # external data of the parent, if any, is read in
        sizes = shard(proto, ctx.work_dir, int(self.params.shard_mb * 1e6), int(self.params.min_tensor_kb * 1e3))
        onnx.save(proto, str(out))
        files = [ctx.work_dir / SHARD.format(i) for i in range(len(sizes))]
        cold, warm = load_times(out, files)
        return StageOutput(out, {"split_shards": float(len(sizes)), "split_max_shard_mb": max(sizes, default=0) / 1e6,
                                 "split_graph_mb": out.stat().st_size / 1e6,
                                 "split_total_mb": (out.stat().st_size + sum(sizes)) / 1e6,
                                 "split_load_cold_ms": cold, "split_load_warm_ms": warm})


def shard(proto: Any, folder: Path, limit: int, min_bytes: int) -> list[int]:
    """Move `proto`'s large initializers into shard files in `folder` (in place); returns each shard's bytes."""
    from onnx import TensorProto, numpy_helper
    from onnx.external_data_helper import set_external_data

    for tensor in proto.graph.initializer:
        if not tensor.HasField("raw_data"):  # typed fields (float_data ...) -> raw bytes, same values
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
    big = max(proto.graph.initializer, key=lambda t: len(t.raw_data), default=None)
    if big is not None and len(big.raw_data) > limit:
        raise ValueError(f"split: tensor {big.name!r} is {len(big.raw_data) / 1e6:.3f} MB, larger than "
                         f"shard_mb={limit / 1e6:g}; shards are tensor-aligned (the largest tensor decides), so "
                         f"raise stages.split.shard_mb to at least {len(big.raw_data) / 1e6:.3f}")
    sizes: list[int] = []
    handle = None
    try:
        for tensor in proto.graph.initializer:
            data = tensor.raw_data
            if len(data) < max(min_bytes, 1):
                continue
            if not sizes or sizes[-1] + len(data) > limit:
                if handle:
                    handle.close()
                sizes.append(0)
                handle = open(folder / SHARD.format(len(sizes) - 1), "wb")  # noqa: SIM115 (one per shard)
            set_external_data(tensor, SHARD.format(len(sizes) - 1), offset=sizes[-1], length=len(data))
            handle.write(data)
            sizes[-1] += len(data)
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
    finally:
        if handle:
            handle.close()
    return sizes


def _drop_cached(path: Path) -> None:
    """Ask the OS to forget the file's cached pages, so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty (just written) pages cannot be dropped: write them out first
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def load_times(graph: Path, shards: list[Path]) -> tuple[float, float]:
    """(cold, warm) ms to create an ONNX Runtime session from `graph` and its shards (see the module doc)."""
    import onnxruntime as ort

    def load() -> float:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.log_severity_level = 1, 3
        start = time.perf_counter()
        ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        return (time.perf_counter() - start) * 1e3

    for path in (graph, *shards):
        _drop_cached(path)
    cold = load()
    return cold, statistics.median(load() for _ in range(3))
