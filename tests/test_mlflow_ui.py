"""The MLflow UI, as a person sees it: a real `mlflow server` over a sweep's store, opened in headless Chromium.

Asserts on rendered text: the leaves' names carry their swept values, the `speedup` / `size_ratio` columns
can be shown and sorted, the parent run's page states the recommendation, a leaf's page explains itself.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from conftest import ROOT, free_port
from mlflow.tracking import MlflowClient
from test_tracking_loss import start_server, stop_server

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("chromium"), reason="needs Chromium (installed by .ci/run)")]


@pytest.fixture(scope="module")
def ui(pkdq_reference):
    """The session's finished reference sweep served by `mlflow server`, and a Playwright page."""
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    store, out = pkdq_reference
    port = free_port()
    server = start_server(Path(store["uri"].removeprefix("sqlite:///")), Path(store["artifacts"]), port)
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"])
    try:
        yield {"browser": browser, "url": f"http://127.0.0.1:{port}", "client": MlflowClient(store["uri"]),
               "out": out}
    finally:
        browser.close()
        pw.stop()
        stop_server(server)


@pytest.fixture
def page(ui):
    """A fresh browser context per test: the UI keeps filters and columns in local storage."""
    context = ui["browser"].new_context(viewport={"width": 1800, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30000)
    ui["page"] = page
    yield page
    context.close()


def open_runs_table(ui, columns: tuple[str, ...]) -> None:
    """The experiment's runs table filtered to variants, with `columns` added, the sweep expanded."""
    page, client = ui["page"], ui["client"]
    exp = client.get_experiment_by_name("pkdq")
    page.goto(f"{ui['url']}/#/experiments/{exp.experiment_id}/runs")
    page.get_by_text("12 matching runs").wait_for()
    box = page.get_by_placeholder('metrics.rmse < 1 and params.model = "tree"')
    box.fill("tags.orchestrator.leaf = 'true'")  # the one-click filter the README describes
    box.press("Enter")
    page.get_by_text("5 matching runs").wait_for()  # 4 leaves, shown under their sweep
    page.get_by_role("button", name="Columns", exact=True).click()
    for col in columns:
        search = page.get_by_placeholder("Search columns")
        search.wait_for()
        search.fill(col)
        page.wait_for_timeout(500)
        page.get_by_text(col, exact=True).last.click()
    page.keyboard.press("Escape")
    page.wait_for_timeout(500)
    page.locator("button[data-component-id*='runnamecellrenderer']").first.click()  # expand the parent run
    page.get_by_text("· P>KD>Q").first.wait_for()


def rows(page) -> list[str]:
    """Variant rows in the order a person sees them (the grid reuses DOM rows, so order by aria-rowindex)."""
    found = []
    for row in page.locator("[role=row]").all():
        text, index = row.inner_text(), row.get_attribute("aria-rowindex")
        if "· P>KD>Q" in text and index is not None:
            found.append((int(index), text))
    return [text for _, text in sorted(found)]


def test_runs_table_tells_variants_apart_and_shows_ratios(ui, page):
    open_runs_table(ui, ("speedup", "size_ratio"))
    names = sorted(page.get_by_text("· P>KD>Q").all_inner_texts())
    assert names == ["0.3·fp16 · P>KD>Q", "0.3·int8 · P>KD>Q", "0.5·fp16 · P>KD>Q", "0.5·int8 · P>KD>Q"]
    headers = page.locator("[role=columnheader]").all_inner_texts()
    assert "speedup" in headers and "size_ratio" in headers
    # the ratios shown are the ones logged, which equal the printed report's "x faster" column
    client, exp = ui["client"], ui["client"].get_experiment_by_name("pkdq")
    leaves = client.search_runs([exp.experiment_id], "tags.`orchestrator.leaf` = 'true'")
    shown = page.locator("body").inner_text()  # the grid renders names and metric cells in separate rows
    for run in leaves:
        assert f"{run.data.metrics['speedup']:g}"[:5] in shown
        variant = run.data.tags["orchestrator.variant"]
        lines = ui["out"].stdout.splitlines()
        header = re.split(r"\s{2,}", next(ln for ln in lines if ln.startswith("variant ")).strip())
        line = next(ln for ln in lines if ln.lstrip("* ").startswith(variant + " "))
        cell = re.split(r"\s{2,}", line.strip())[header.index("x faster")]
        # the run logs the ratio rounded to 4 places, the table prints the exact one to 2: equal within 0.005
        assert abs(float(cell) - run.data.metrics["speedup"]) <= 0.005 + 1e-9, (cell, run.data.metrics["speedup"])


def test_sorting_by_speedup(ui, page):
    open_runs_table(ui, ("speedup",))
    page.get_by_role("button", name="Sort: Created").click()  # the table's sort control, as a person uses it
    page.get_by_placeholder("Search", exact=True).fill("speedup")
    page.wait_for_timeout(800)
    page.get_by_text("speedup", exact=True).last.click()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Sort: speedup").wait_for()  # the control says what the table is sorted by
    client, exp = ui["client"], ui["client"].get_experiment_by_name("pkdq")
    by_name = {r.info.run_name: r.data.metrics["speedup"]
               for r in client.search_runs([exp.experiment_id], "tags.`orchestrator.leaf` = 'true'")}
    ordered = (sorted(by_name.values()), sorted(by_name.values(), reverse=True))
    values: list[float] = []
    for _ in range(40):  # the table re-renders after the new query returns
        values = [by_name[next(n for n in by_name if n in row)] for row in rows(page)]
        if len(values) == len(by_name) and values in ordered:
            break
        page.wait_for_timeout(500)
    assert values in ordered, values


def test_parent_page_states_the_recommendation(ui, page):
    client = ui["client"]
    exp = client.get_experiment_by_name("pkdq")
    parent = next(r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags)
    page.goto(f"{ui['url']}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}")
    page.get_by_text("pkdq: ship").first.wait_for()
    text = page.locator("body").inner_text()
    chosen = parent.data.tags["orchestrator.recommended_variant"]
    assert chosen in text and "Why: the fastest" in text
    assert "x faster" in text and "x smaller" in text  # the compact table is rendered on the page


def test_a_leaf_page_explains_itself(ui, page):
    client = ui["client"]
    exp = client.get_experiment_by_name("pkdq")
    leaf = client.search_runs([exp.experiment_id], "tags.`orchestrator.leaf` = 'true'")[0]
    page.goto(f"{ui['url']}/#/experiments/{exp.experiment_id}/runs/{leaf.info.run_id}")
    page.get_by_text("then distilled").first.wait_for()
    text = page.locator("body").inner_text()
    assert "pruned (method=structured" in text and "the baseline" in text


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "--rootdir", str(ROOT)]))
