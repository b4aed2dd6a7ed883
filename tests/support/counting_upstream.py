"""An upstream HTTP server in a thread of the test process that counts the requests it
gets, to prove what the gateway answers without a bus hop. Like the reflector, it
answers what the request asks for:

    x-reflect-header: Name: v     add a response header (repeatable)
    x-reflect-delay-ms: N         answer after N milliseconds
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.processes import free_port


class CountingUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.hits: Counter[str] = Counter()  # method + path -> requests
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                with upstream.lock:
                    upstream.hits[f"{self.command} {self.path}"] += 1
                delay = int(self.headers.get("x-reflect-delay-ms") or 0)
                if delay:
                    time.sleep(delay / 1000)
                body = json.dumps({"method": self.command, "path": self.path}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                for value in self.headers.get_all("x-reflect-header") or []:
                    name, _, header_value = value.partition(":")
                    self.send_header(name.strip(), header_value.strip())
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def total(self) -> int:
        with self.lock:
            return sum(self.hits.values())

    def start(self) -> CountingUpstream:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
