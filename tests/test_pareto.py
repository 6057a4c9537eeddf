"""Pareto fronts, the constrained recommendation and the report tables, on hand-made numbers."""

from __future__ import annotations

import pytest

from orchestrator.config.schema import validate_settings
from orchestrator.errors import ConfigError
from orchestrator.report.pareto import Constraints, Row, front, layers, recommend
from orchestrator.report.tradeoff import build, markdown, node_tags, render

BASE = {"accuracy": 0.90, "latency_p50_ms": 10.0, "model_size_mb": 100.0}


def row(label: str, acc: float, lat: float, size: float, status: str = "done", baseline: bool = False) -> Row:
    metrics = {"accuracy": acc, "latency_p50_ms": lat, "model_size_mb": size}
    return Row(label, label, status, metrics, dict(metrics) if baseline else dict(BASE), baseline)


@pytest.fixture
def rows() -> list[Row]:
    return [row("base", 0.90, 10.0, 100.0, baseline=True),
            row("fast", 0.85, 2.0, 60.0),       # fastest, loses 0.05
            row("mid", 0.89, 5.0, 30.0),        # loses 0.01
            row("slow", 0.88, 8.0, 20.0),       # dominated on latency by mid, smallest but one
            row("tiny", 0.80, 9.0, 5.0),        # smallest
            row("gated", 0.95, 1.0, 1.0, status="gated"),  # would dominate everything, but it is gated
            Row("broken", "broken", "failed")]


def keys(rs: list[Row]) -> list[str]:
    return [r.key for r in rs]


def test_fronts_leave_out_dominated_gated_and_unmeasured_rows(rows: list[Row]) -> None:
    assert keys(front(rows, "latency_p50_ms")) == ["fast", "mid", "base"]
    assert keys(front(rows, "model_size_mb")) == ["tiny", "slow", "mid", "base"]
    assert layers(rows, "latency_p50_ms") == {"fast": 1, "mid": 1, "base": 1, "slow": 2, "tiny": 3}


def test_equal_points_are_both_on_the_front() -> None:
    twins = [row("a", 0.9, 1.0, 1.0), row("b", 0.9, 1.0, 1.0), row("c", 0.8, 1.0, 1.0)]
    assert keys(front(twins, "latency_p50_ms")) == ["a", "b"]


def test_no_constraints_recommends_the_fastest(rows: list[Row]) -> None:
    rec = recommend(rows, Constraints())
    assert rec.row.key == "fast"
    assert "no constraint is set" in rec.text


def test_recommends_the_fastest_that_meets_every_constraint(rows: list[Row]) -> None:
    rec = recommend(rows, Constraints(max_loss=0.02, max_size_mb=50))
    assert rec.row.key == "mid"  # fast loses 0.05; base is 100 MB; slow (drop exactly 0.02) meets both but is slower
    assert "2 of 5 measured variants" in rec.text and "accuracy drop <= 0.02" in rec.text


def test_ties_in_latency_go_to_the_more_accurate() -> None:
    rec = recommend([row("a", 0.85, 1.0, 1.0), row("b", 0.87, 1.0, 2.0)], Constraints())
    assert rec.row.key == "b"


def test_nothing_meets_names_the_binding_constraint(rows: list[Row]) -> None:
    rec = recommend(rows, Constraints(max_loss=0.005, max_latency_ms=6.0))
    assert rec.row is None
    assert rec.lines[0].startswith("No variant meets every constraint")
    # Only base meets the accuracy limit (it is 10 ms); relaxing latency to 10 admits it. Relaxing accuracy
    # alone admits fast and mid (both <= 6 ms), and mid needs the smaller relaxation (0.01).
    text = rec.text
    assert "report.max_latency_ms=6 rejects 3 of 5; relaxing it alone to 10 admits base" in text
    assert "report.max_loss=0.005 rejects 4 of 5; relaxing it alone to 0.01 admits mid" in text


def test_nothing_meets_and_no_single_constraint_binds() -> None:
    rs = [row("a", 0.80, 1.0, 90.0), row("b", 0.90, 50.0, 90.0)]
    rec = recommend(rs, Constraints(max_loss=0.01, max_latency_ms=5.0, max_size_mb=10.0))
    assert rec.row is None
    assert "No single constraint binds alone" in rec.text
    assert "report.max_size_mb=10 rejects 2" in rec.text


def test_unknown_baseline_accuracy_breaks_the_accuracy_constraint() -> None:
    orphan = Row("x", "x", "done", {"accuracy": 0.9, "latency_p50_ms": 1.0, "model_size_mb": 1.0}, {})
    assert recommend([orphan], Constraints(max_loss=0.5)).row is None
    assert recommend([orphan], Constraints()).row is orphan


def test_no_measured_row() -> None:
    assert recommend([Row("x", "x", "skipped")], Constraints()).text == "No measured variant: nothing to recommend."


def test_report_sorts_by_the_latency_front_and_marks_the_pick(rows: list[Row]) -> None:
    report = build(rows, Constraints(max_loss=0.02))
    assert keys(report.rows) == ["fast", "mid", "base", "slow", "tiny", "gated", "broken"]
    assert report.fronts["mid"] == "L+S" and report.fronts["fast"] == "L" and report.fronts["slow"] == "S"
    lines = render(report).splitlines()
    assert lines[2].startswith("fast ") and lines[3].startswith("* mid ")
    assert "Recommended: mid" in render(report)
    md = markdown(report, "demo", {"orchestrator.env.threads": "1"})
    assert md.count("\n| ") == 8 and "threads=1" in md  # header + 7 rows
    tags = node_tags(report)
    assert set(tags) == {"base", "fast", "mid", "slow", "tiny"}  # gated and failed rows are not candidates
    assert tags["mid"]["orchestrator.recommended"] == "true" and tags["fast"]["orchestrator.recommended"] == "false"
    assert tags["tiny"]["orchestrator.pareto"] == "true" and tags["tiny"]["orchestrator.pareto.latency"] == "false"


@pytest.mark.parametrize("key,value", [("report", {"max_accuracy_drop": 1.5}), ("report", {"max_latency_ms": 0}),
                                       ("report", {"max_size_mb": -1.0}), ("gate", {"max_accuracy_drop": -0.1})])
def test_report_and_gate_settings_are_range_checked(key: str, value: dict) -> None:
    with pytest.raises(ConfigError) as err:
        validate_settings({key: value})
    assert err.value.key == f"{key}.{next(iter(value))}"


def test_a_collapsed_variant_is_not_recommended_unless_a_quality_bound_is_set() -> None:
    """With no constraint the fastest model wins, unless it no longer works: more than five points lost."""
    base = {"accuracy": 0.90, "latency_p50_ms": 10.0, "model_size_mb": 100.0}
    rows = [Row("base", "b", "done", base, base, True),
            Row("wrecked", "w", "done", {"accuracy": 0.40, "latency_p50_ms": 1.0, "model_size_mb": 5.0}, base),
            Row("good", "g", "done", {"accuracy": 0.89, "latency_p50_ms": 4.0, "model_size_mb": 30.0}, base)]
    rec = recommend(rows, Constraints())
    assert rec.row.key == "g"
    assert "Not eligible, collapsed" in rec.text and "wrecked (50.00 points below the baseline's)" in rec.text
    assert "report.max_loss" in rec.text
    assert recommend(rows, Constraints(max_loss=0.6)).row.key == "w"  # an explicit bound overrides
