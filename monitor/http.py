"""/metrics, /healthz and /readyz on one loopback-friendly HTTP server thread.

The handler only reads: `render` reads the daemon's current immutable Snapshot, and
health comes from two callables. It never touches ingestion state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    # HTTPServer sets SO_REUSEADDR, so a restarted daemon binds `listen` at once.
    daemon_threads = True  # a stuck client must not hold up shutdown


class MetricsServer:
    def __init__(
        self,
        host: str,
        port: int,
        render: Callable[[str | None], tuple[bytes, str]],
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        routes = {
            "/metrics": self._metrics,
            "/healthz": lambda h: self._status(h, healthy()),
            "/readyz": lambda h: self._status(h, ready()),
        }
        self.render = render

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404, "try /metrics, /healthz or /readyz")
                else:
                    route(self)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http %s", format % args)

        self.server = _Server((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def _metrics(self, handler: BaseHTTPRequestHandler) -> None:
        body, content_type = self.render(handler.headers.get("Accept"))
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    @staticmethod
    def _status(handler: BaseHTTPRequestHandler, ok: bool) -> None:
        body = b"ok\n" if ok else b"not ready\n"
        handler.send_response(200 if ok else 503)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
