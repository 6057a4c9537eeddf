"""Screenshots of the MLflow UI for the README: the runs table (variants, speedup / size_ratio) and a parent run.

Serves a store with `mlflow server`, opens it in headless Chromium (Playwright) and clicks as a person
would: filter to leaves, add the ratio columns, sort by speedup, expand the sweep.

    python benchmarks/ui_screenshots.py [--store mlruns/mlflow.db] [--experiment pkdq] [--out benchmarks/ui]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def serve(db: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{db}", "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("mlflow server did not start")


def main(argv: list[str] | None = None) -> int:
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="mlruns/mlflow.db")
    ap.add_argument("--experiment", default="pkdq")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "ui"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{Path(args.store).resolve()}")
    exp = client.get_experiment_by_name(args.experiment)
    parent = client.search_runs([exp.experiment_id], "tags.`orchestrator.recipe` LIKE '%'",
                                order_by=["start_time DESC"], max_results=1)[0]
    proc, url = serve(Path(args.store).resolve())
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 760})
            page.set_default_timeout(30000)
            page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs")
            page.get_by_text("matching runs").first.wait_for()
            page.get_by_label("Close").first.click()  # the assistant side panel: give the table the width
            box = page.get_by_placeholder('metrics.rmse < 1 and params.model = "tree"')
            box.fill("tags.orchestrator.leaf = 'true'")
            box.press("Enter")
            page.wait_for_timeout(2000)
            page.get_by_role("button", name="Columns", exact=True).click()
            for col in ("speedup", "size_ratio", "accuracy_drop"):
                page.get_by_placeholder("Search columns").fill(col)
                page.wait_for_timeout(400)
                page.get_by_text(col, exact=True).last.click()
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)
            page.locator("button[data-component-id*='runnamecellrenderer']").first.click()  # expand the sweep
            page.get_by_role("button", name="Sort: Created").click()
            page.get_by_placeholder("Search", exact=True).fill("speedup")
            page.wait_for_timeout(400)
            page.get_by_text("speedup", exact=True).last.click()
            page.keyboard.press("Escape")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "runs_table.png"))
            page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}")
            page.get_by_text(": ship").first.wait_for()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(out / "parent_run.png"), full_page=True)
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    print(f"wrote {out / 'runs_table.png'} and {out / 'parent_run.png'} from {args.store} ({args.experiment})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
