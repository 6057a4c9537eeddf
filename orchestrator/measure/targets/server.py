"""A static HTTP server for the browser target: loopback only, a free port, explicit files only.

It serves what a static host would: correct MIME types (`application/wasm` for WebAssembly streaming),
the cross-origin-isolation headers that WASM threads and a fine-grained `performance.now()` need
(COOP `same-origin`, COEP `require-corp`), and each file compressed with the `Content-Encoding` the
browser accepts (brotli, then gzip), as a CDN would. Only files registered by URL are served (no
directory listing, no path from the request reaches the filesystem).
"""

from __future__ import annotations

import gzip
import http.server
import threading
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


@lru_cache(maxsize=64)
def _compressed(path: str, mtime_ns: int, size: int, encoding: str) -> bytes:
    data = Path(path).read_bytes()
    if encoding == "br":
        import brotli

        return brotli.compress(data, quality=BROTLI_QUALITY)
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def compressed(path: Path, encoding: str) -> bytes:
    """The file's bytes as served with `encoding` ('br' or 'gzip'), memoised per file version."""
    st = path.stat()
    return _compressed(str(path), st.st_mtime_ns, st.st_size, encoding)


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
                body = compressed(path, encoding) if encoding else path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", MIME.get(path.suffix, "application/octet-stream"))
                self.send_header("Content-Length", str(len(body)))
                if encoding:
                    self.send_header("Content-Encoding", encoding)
                for k, v in ISOLATION.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                server.served.append((self.path, encoding, len(body)))

            def log_message(self, *args: object) -> None:
                pass

        return Handler
