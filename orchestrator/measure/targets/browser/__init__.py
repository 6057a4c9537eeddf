"""`browser`: onnxruntime-web (WASM) in a real headless Chromium, driven by Playwright.

One browser process and one local static server per measuring process (a sweep, or a pool worker),
started on first use and torn down at exit; each measurement gets a fresh browser context, so the
model is fetched cold and nothing of an earlier model stays in memory. The model's files are compressed
(brotli, gzip) before the page loads, once per content, as a static host's deploy step would, so the timed
fetch reads ready bytes. The page (index.html + harness.mjs) fetches the model, creates a session, and reports:

- `browser_download_mb`: bytes the tab transferred for the model with the encoding the server chose for
  Chromium's Accept-Encoding; `browser_download_gzip_mb` / `browser_download_br_mb`: the model as a
  static host would serve it gzip'ed or brotli'ed; `browser_runtime_download_mb`: onnxruntime-web's own files;
- `browser_load_ms` (fetch + session create), `browser_first_inference_ms`, `browser_latency_p50_ms`,
  `browser_latency_p95_ms`, `browser_latency_cv` (batch 1, `eval.warmup` + `eval.repeats` calls);
- `browser_memory_mb`: JS heap + WASM memory of the page after load and the first inference
  (`performance.measureUserAgentSpecificMemory`, available because the page is cross-origin isolated);
- `browser_accuracy` on the first `eval.samples` test examples and `browser_max_abs_diff`, the largest
  logit difference from ONNX Runtime in Python on the same inputs.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.artifacts.onnx_utils import model_files
from orchestrator.errors import ConfigError, check_range
from orchestrator.measure.targets import sample
from orchestrator.measure.targets.base import Limit, Target, TargetError

HERE = Path(__file__).resolve().parent
ORT_WEB = HERE / "node_modules" / "onnxruntime-web"
INSTALL = ("npm ci --prefix orchestrator/measure/targets/browser (onnxruntime-web), pip install -e '.[browser]' "
           "(Playwright), apt-get install chromium (or set eval.browser.executable)")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
        "--enable-blink-features=ForceEagerMeasureMemory"]


@dataclass
class BrowserConfig:
    """`eval.browser`: onnxruntime-web WASM threads, the Chromium to drive ('' = found on PATH), and how long one
    measurement may take."""

    threads: int = 1
    executable: str = ""
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        check_range("threads", self.threads, 1, 64)
        check_range("timeout_s", self.timeout_s, 1.0, 86400.0)


def executable(settings: Any) -> str | None:
    """The Chromium to drive: eval.browser.executable, else chromium / chromium-browser / google-chrome on PATH."""
    given = settings.block("browser").get("executable") or ""
    if given:
        return given if Path(given).is_file() else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@functools.cache
def browser_version(path: str) -> str:
    """`Chromium 156.0...` as the binary prints it."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or "unknown"


def ort_web_version() -> str:
    """The installed onnxruntime-web version (pinned in package.json / package-lock.json)."""
    return json.loads((ORT_WEB / "package.json").read_text())["version"]


class _Session:
    """The process's Playwright, browser and static server; replaced if the browser dies."""

    current: _Session | None = None

    def __init__(self, exe: str) -> None:
        from playwright.sync_api import sync_playwright

        from orchestrator.measure.targets.server import StaticServer

        self.server = StaticServer()
        for name in ("index.html", "harness.mjs"):
            self.server.add(f"/{name}", HERE / name)
        for f in (ORT_WEB / "dist").iterdir():
            if f.name.startswith(("ort.wasm", "ort-wasm-simd-threaded")) and f.suffix in (".mjs", ".wasm"):
                self.server.add(f"/ort/{f.name}", f)
        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(executable_path=exe, headless=True, args=ARGS)

    @classmethod
    def get(cls, exe: str) -> _Session:
        if cls.current is None or not cls.current.browser.is_connected():
            cls.close_current()
            cls.current = cls(exe)
        return cls.current

    @classmethod
    def close_current(cls) -> None:
        """Close the browser, Playwright's driver and the server (also at interpreter exit)."""
        session, cls.current = cls.current, None
        if session is None:
            return
        for step in (session.browser.close, session.pw.stop, session.server.close):
            try:
                step()
            except Exception:  # already gone (a killed browser): keep tearing down the rest
                pass


atexit.register(_Session.close_current)


class BrowserTarget(Target):
    """onnxruntime-web in headless Chromium (WASM, `eval.browser.threads` threads, SIMD)."""

    name = "browser"
    title = "browser (onnxruntime-web)"
    where = "in the browser"
    Settings = BrowserConfig
    columns = (("browser_latency_p50_ms", "web p50 ms", "{:.4g}"),
               ("browser_first_inference_ms", "web 1st ms", "{:.4g}"),
               ("browser_download_mb", "web dl MB", "{:.4g}"), ("browser_max_abs_diff", "web diff", "{:.2g}"))
    size_metric = "browser_download_mb"  # what the tab pays, rather than the size on disk
    size_label = "download to the browser (MB)"
    size_word = "download"
    limits = (Limit("max_download_mb", "browser_download_mb"),)

    def check(self, settings: Any) -> None:
        problems = []
        if executable(settings) is None:
            given = settings.block(self.name).get("executable")
            problems.append(f"no Chromium found (eval.browser.executable={given!r})")
        if not (ORT_WEB / "package.json").is_file():
            problems.append("onnxruntime-web is not installed")
        try:
            import playwright  # noqa: F401
        except ImportError:
            problems.append("Playwright (Python) is not installed")
        if problems:
            raise ConfigError("eval.targets", list(settings.targets), f"the browser target needs: "
                              f"{'; '.join(problems)}. Install: {INSTALL}")

    def check_task(self, task_cls: type, settings: Any) -> None:
        sample.check_plain_inputs(task_cls, settings)

    def key_data(self, settings: Any) -> dict[str, Any]:
        return {"browser": browser_version(executable(settings) or ""), "onnxruntime-web": ort_web_version(),
                "threads": settings.block("browser").get("threads", 1), "warmup": settings.warmup,
                "repeats": settings.repeats, "samples": settings.samples, "harness": "1"}

    def tags(self, settings: Any) -> dict[str, str]:
        return {"orchestrator.browser.version": browser_version(executable(settings) or ""),
                "orchestrator.browser.onnxruntime_web": ort_web_version()}

    def measure(self, model: Path, task: Any, settings: Any, reference: Path | None = None) -> dict[str, float]:
        own = settings.block(self.name)
        feeds, labels = sample.subset(task, settings.samples)
        ref = sample.reference(model, feeds)
        request = {"threads": int(own.get("threads", 1)), "warmup": settings.warmup,
                   "repeats": settings.repeats, "samples": [sample.encode(f) for f in feeds]}
        out = self._run(model, request, float(own.get("timeout_s", 600)), executable(settings))
        return self._metrics(model, out, ref, labels)

    def _run(self, model: Path, request: dict[str, Any], timeout_s: float, exe: str | None) -> dict[str, Any]:
        from orchestrator.measure.targets.server import precompress

        session = _Session.get(exe or "")
        context = None
        try:
            precompress(model_files(model))  # before the page times its fetch: the server sends ready bytes
            request["model"] = session.server.add(f"/models/{model.parent.name}-{model.name}", model)
            request["external"] = [  # a split model's shards, under the names its graph gives them
                {"path": f.name, "url": session.server.add(f"/models/{model.parent.name}-{f.name}", f)}
                for f in model_files(model)[1:]]
            context = session.browser.new_context()
            page = context.new_page()
            page.set_default_timeout(timeout_s * 1000)
            page.goto(session.server.origin + "/index.html")
            page.wait_for_function("window.benchReady === true")
            return page.evaluate("req => window.bench(req)", request)
        except Exception as err:
            dead = not session.browser.is_connected()
            if dead:
                _Session.close_current()
            what = "the browser died during the measurement" if dead else "the browser measurement failed"
            raise TargetError(f"{what}: {str(err).strip().splitlines()[0] if str(err).strip() else err!r}") \
                from None
        finally:
            if context is not None:
                try:
                    context.close()
                except Exception:
                    pass

    @staticmethod
    def _metrics(model: Path, out: dict[str, Any], ref: Any, labels: Any) -> dict[str, float]:
        from orchestrator.measure.targets.server import compressed_size

        files = model_files(model)  # the graph and a split model's shards
        model_res = [r for r in out["resources"] if "/models/" in r["name"]]
        runtime = [r for r in out["resources"] if "/ort/" in r["name"]]
        metrics = {"browser_download_mb": sum(r["transferSize"] for r in model_res) / 1e6,
                   "browser_download_gzip_mb": sum(compressed_size(f, "gzip") for f in files) / 1e6,
                   "browser_download_br_mb": sum(compressed_size(f, "br") for f in files) / 1e6,
                   "browser_runtime_download_mb": sum(r["transferSize"] for r in runtime) / 1e6,
                   "browser_load_ms": out["fetch_ms"] + out["create_ms"], "browser_fetch_ms": out["fetch_ms"],
                   "browser_first_inference_ms": out["first_ms"], "browser_threads": float(out["threads"]),
                   "browser_isolated": float(bool(out["isolated"]))}
        if out.get("memory") is not None:
            metrics["browser_memory_mb"] = out["memory"] / 1e6
        metrics.update(sample.latency("browser", out["times"]))
        metrics.update(sample.quality("browser", out["logits"], ref, labels))
        return metrics
