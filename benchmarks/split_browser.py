"""Does a model over 2 GB load in the browser target through its shards? Measure it.

Builds an ONNX model of `--gb` GB of float32 weights (a chain of `--width` x `--width` MatMul + Tanh layers,
random weights: nothing compresses), writes it with the `split` stage's sharding (`--shard-mb` per shard),
then loads it in headless Chromium with onnxruntime-web (WASM) from the local static server, runs one
input and compares the output with ONNX Runtime in Python on the same shards. Prints the shard count and
sizes, fetch and session-creation times in the browser, the ORT (Python) cold and warm load times and the
max |difference| of the outputs. A single file over 2 GB cannot be written at all (protobuf's limit), and
a single ArrayBuffer of that size is refused by the browser, so the shards are the only way in.

    python benchmarks/split_browser.py [--gb 2.2] [--width 4096] [--shard-mb 512] [--dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def build(folder: Path, gb: float, width: int, shard_mb: float) -> Path:
    """The sharded model in `folder` (graph file + shards)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from orchestrator.stages.split import shard

    layers = int(np.ceil(gb * 1e9 / (width * width * 4)))
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        x = f"t{i}"
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # what ORT-web reads
    sizes = shard(model, folder, int(shard_mb * 1e6), 1024)
    onnx.save(model, str(folder / "model.onnx"))
    print(f"{layers} layers of {width}x{width} float32: {sum(sizes) / 1e9:.3f} GB in {len(sizes)} shards "
          f"(largest {max(sizes) / 1e6:.1f} MB), graph file {(folder / 'model.onnx').stat().st_size} bytes")
    return folder / "model.onnx"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.2)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--shard-mb", type=float, default=512.0)
    parser.add_argument("--dir", default="")
    args = parser.parse_args()
    folder = Path(args.dir or tempfile.mkdtemp(prefix="split-browser-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return run(folder, args)
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path, args: argparse.Namespace) -> int:
    from orchestrator.artifacts.onnx_utils import model_files
    from orchestrator.measure.evaluate import EvalSettings
    from orchestrator.measure.probe import session
    from orchestrator.measure.targets import sample
    from orchestrator.measure.targets.browser import BrowserTarget, _Session, executable
    from orchestrator.measure.targets.server import precompress
    from orchestrator.stages.split import load_times

    path = build(folder, args.gb, args.width, args.shard_mb)
    cold, warm = load_times(path, model_files(path)[1:])
    print(f"ONNX Runtime (Python) session from the shards: cold {cold:.0f} ms, warm {warm:.0f} ms")
    feeds = {"x": np.random.default_rng(1).standard_normal((1, args.width), dtype=np.float32)}
    ref_session = session(path, 1)
    ref = ref_session.run(None, feeds)[0]
    del ref_session
    request = {"threads": 1, "warmup": 1, "repeats": 3, "samples": [sample.encode(feeds)]}
    start = time.perf_counter()  # a static host serves precompressed files (the target does this before timing)
    precompress(model_files(path))
    print(f"compressed the files for the server (brotli, gzip; kept by content) in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    try:
        out = BrowserTarget()._run(path, request, 1800.0, executable(EvalSettings()))
    finally:
        _Session.close_current()
    diff = float(np.abs(np.asarray(out["logits"][0], dtype=np.float32) - ref.reshape(-1)).max())
    print(f"browser (onnxruntime-web, WASM): fetch of graph + shards {out['fetch_ms']:.0f} ms, session "
          f"{out['create_ms']:.0f} ms, first run {out['first_ms']:.0f} ms, whole page "
          f"{time.perf_counter() - start:.1f} s; max |browser - Python| {diff:.2e}")
    return 0 if diff < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
