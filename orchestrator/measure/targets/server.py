"""A static HTTP server for the browser target: loopback only, a free port, explicit files only.

It serves what a static host would: correct MIME types (`application/wasm` for WebAssembly streaming),
the cross-origin-isolation headers that WASM threads and a fine-grained `performance.now()` need
(COOP `same-origin`, COEP `require-corp`), and each file compressed with the `Content-Encoding` the
browser accepts (brotli, then gzip), as a CDN would. Only files registered by URL are served (no
directory listing, no path from the request reaches the filesystem).

A static host compresses at deploy time, not per request, so files are compressed once and kept on disk,
named by the hash of their content (`$ORCHESTRATOR_HOME/compressed/<sha256>.br`): `precompress` runs when
the target prepares a model, before anything is timed, and a file met again (the next measurement, another
node with the same bytes, the next sweep) is never compressed again. Brotli at quality 9 takes minutes for
a 2 GB model; done inside a request it was counted in `browser_fetch_ms`.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import shutil
import threading
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

MIME = {".html": "text/html; charset=utf-8", ".mjs": "text/javascript", ".js": "text/javascript",
        ".wasm": "application/wasm", ".onnx": "application/octet-stream", ".data": "application/octet-stream",
        ".json": "application/json"}
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
             "Cross-Origin-Resource-Policy": "same-origin", "Cache-Control": "no-store",
             "Timing-Allow-Origin": "*"}
BROTLI_QUALITY = 9  # what a static host's build step typically uses (11 is ~10x slower for ~3% smaller)
GZIP_LEVEL = 9
ENCODINGS = {"br": f"br{BROTLI_QUALITY}", "gzip": f"gz{GZIP_LEVEL}"}  # the level is part of the file's name
STORE_LIMIT_BYTES = 16 * 2**30  # compressed files kept, least recently used dropped first
CHUNK = 2**20  # files stream through in chunks: a 2 GB model is never held in memory


def store() -> Path:
    """The folder of compressed files (`$ORCHESTRATOR_HOME/compressed`, default ~/.cache/orchestrator)."""
    home = Path(os.environ.get("ORCHESTRATOR_HOME") or Path.home() / ".cache" / "orchestrator")
    return home / "compressed"


@lru_cache(maxsize=256)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a file's bytes, read once per version of the file in this process."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _compress(src: Path, dst: Path, encoding: str) -> None:
    """Write `src` compressed with `encoding` ('br' or 'gzip') to `dst`, in chunks."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        if encoding == "br":
            import brotli

            packer = brotli.Compressor(quality=BROTLI_QUALITY)
            while chunk := fin.read(CHUNK):
                fout.write(packer.process(chunk))
            fout.write(packer.finish())
            return
        with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=fout, mtime=0) as packed:
            shutil.copyfileobj(fin, packed, CHUNK)


def compressed_file(path: Path, encoding: str) -> Path:
    """The file holding `path` compressed with `encoding`: made on first need, then found by content."""
    st = Path(path).stat()
    out = store() / f"{_digest(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)}.{ENCODINGS[encoding]}"
    if out.is_file():
        os.utime(out)  # recently used: kept when the store is trimmed
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.part")  # concurrent makers: no clash
    try:
        _compress(Path(path), part, encoding)
        os.replace(part, out)  # whole or absent: a reader never sees half a file
    finally:
        part.unlink(missing_ok=True)
    _trim(keep=out)
    return out


def _trim(keep: Path) -> None:
    """Drop the least recently used compressed files while the store holds more than STORE_LIMIT_BYTES."""
    files = []
    for f in keep.parent.iterdir():
        try:
            if f != keep and not f.name.endswith(".part"):
                st = f.stat()
                files.append((st.st_mtime, st.st_size, f))
        except FileNotFoundError:
            continue  # removed by another process meanwhile
    total = sum(size for _, size, _ in files) + keep.stat().st_size
    for _, size, f in sorted(files):
        if total <= STORE_LIMIT_BYTES:
            break
        f.unlink(missing_ok=True)
        total -= size


def precompress(paths: Iterable[Path]) -> None:
    """Compress every file in each encoding the server offers (done once per content; call before timing)."""
    for path in paths:
        for encoding in ENCODINGS:
            compressed_file(path, encoding)


def compressed_size(path: Path, encoding: str) -> int:
    """Bytes of `path` as served with `encoding` ('br' or 'gzip')."""
    return compressed_file(path, encoding).stat().st_size


class StaticServer:
    """Serves registered files (URL path -> file) on 127.0.0.1 from a daemon thread."""

    def __init__(self) -> None:
        self.files: dict[str, Path] = {}
        self.served: list[tuple[str, str, int]] = []  # (url, encoding, bytes sent)
        handler = self._handler()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, url: str, path: Path) -> str:
        """Serve `path` at `url` (an absolute URL path); returns the full URL."""
        self.files[url] = Path(path)
        return self.origin + url

    def close(self) -> None:
        """Stop serving and free the port."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                path = server.files.get(self.path.split("?", 1)[0])
                if path is None or not path.is_file():
                    self.send_error(404)
                    return
                accepted = self.headers.get("Accept-Encoding", "")
                encoding = "br" if "br" in accepted else "gzip" if "gzip" in accepted else ""
                body = compressed_file(path, encoding) if encoding else path  # made before timing, if prepared
                size = body.stat().st_size
                self.send_response(200)
                self.send_header("Content-Type", MIME.get(path.suffix, "application/octet-stream"))
                self.send_header("Content-Length", str(size))
                if encoding:
                    self.send_header("Content-Encoding", encoding)
                for k, v in ISOLATION.items():
                    self.send_header(k, v)
                self.end_headers()
                with open(body, "rb") as f:
                    shutil.copyfileobj(f, self.wfile, CHUNK)
                server.served.append((self.path, encoding, size))

            def log_message(self, *args: object) -> None:
                pass

        return Handler
