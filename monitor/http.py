"""/metrics, /healthz and /readyz on one loopback-friendly HTTP server thread.

The handler only reads: `render` reads the daemon's current immutable Snapshot, and
health comes from two callables. It never touches ingestion state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from monitor.spool import Ingest

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
        ingest: Ingest | None = None,
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

            # POST: only the ingest routes of http_sources (spool.py answers them).
            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                limit = ingest.max_body(path) if ingest is not None else None
                if limit is None:
                    self.send_error(405 if path in routes else 404)
                    return
                length = self.headers.get("Content-Length", "")
                if not length.isdigit():
                    self.send_error(411, "Content-Length required")
                    return
                if int(length) > limit:
                    self.close_connection = True  # the body is not read
                    self.send_error(413, "body larger than max_spool_bytes")
                    return
                body = self.rfile.read(int(length))
                assert ingest is not None
                answer = ingest.handle(path, {k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

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
