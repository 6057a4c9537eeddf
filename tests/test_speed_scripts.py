"""The comparison benchmarks' own logic on small real inputs: onnx_speed times real ONNX Runtime sessions of a
digits CNN and profiles them; vs_nncf's row-by-row comparison gives the exact McNemar p."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import benchmark


def test_onnx_speed_times_files_in_turns_and_shows_where_the_time_goes(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    from orchestrator.tasks.digits import Digits, DigitsParams, build_cnn

    paths = {}
    for name, width in (("narrow", 8), ("wide", 64)):
        paths[name] = tmp_path / f"{name}.onnx"
        Digits(DigitsParams(), seed=0).export(build_cnn(width, 128).eval(), paths[name], 17, "torchscript")
    assert benchmark("onnx_speed").main(["--task", "digits", "--rounds", "2", "--repeats", "30", "--warmup", "3",
                                      *(f"{k}={v}" for k, v in paths.items())]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("digits: batch-1 p50 over 2 interleaved rounds of 30 calls")
    narrow, wide = (next(line for line in out if line.startswith(f"{n}:")) for n in ("narrow", "wide"))
    assert "1.000x the first" in narrow and "Conv" in narrow and "Conv" in wide
    assert float(wide.split("x the first")[0].split(", ")[-1]) > 0


def test_vs_nncf_paired_comparison_counts_the_rows_they_disagree_on() -> None:
    paired = benchmark("vs_nncf").paired
    ours, theirs = np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 1, 0, 1], bool)
    assert paired(ours, theirs) == ("on the same 5 rows: 1 right only by ours, 1 right only by NNCF "
                                    "(exact McNemar p = 1.00)")
    six = paired(np.zeros(6, bool), np.ones(6, bool))
    assert "0 right only by ours, 6 right only by NNCF" in six and "p = 0.03" in six  # 2 / 2**6
