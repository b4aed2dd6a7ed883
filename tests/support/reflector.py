"""A real upstream HTTP server for gateway tests: it reflects the request it got
and answers what the request asks for.

    x-reflect-status: N           answer with status N (default 200)
    x-reflect-header: Name: v     add a response header (repeatable, order kept)
    x-reflect-delay-ms: N         answer after N milliseconds
    x-reflect-body: raw           the body is the request body, byte for byte;
                                  otherwise JSON: method, raw path, raw query,
                                  headers [[name, value], ...], body length and sha256

Every response carries `x-seen-method` (a HEAD answer has no body to say it).
Run it with `python -m tests.support.reflector --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import sys
from pathlib import Path

from aiohttp import web
from multidict import CIMultiDict

from tests.support.processes import ManagedProcess, free_port, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[2]


async def reflect(request: web.BaseRequest) -> web.StreamResponse:
    body = await request.content.read()
    delay_ms = int(request.headers.get("x-reflect-delay-ms", "0"))
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.raw_headers]
    status = int(request.headers.get("x-reflect-status", "200"))
    out: CIMultiDict[str] = CIMultiDict()
    for value in request.headers.getall("x-reflect-header", []):
        name, _, header_value = value.partition(":")
        out.add(name.strip(), header_value.strip())
    out["x-seen-method"] = request.method
    if request.headers.get("x-reflect-body") == "raw":
        payload = body
        out.setdefault(
            "content-type", request.headers.get("content-type", "application/octet-stream")
        )
    else:
        raw_path, _, raw_query = request.raw_path.partition("?")
        payload = json.dumps(
            {
                "method": request.method,
                "path": raw_path,
                "query": raw_query,
                "headers": headers,
                "body_length": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            }
        ).encode()
        out.setdefault("content-type", "application/json")
    if status in (204, 304) or status < 200:
        payload = b""
    return web.Response(status=status, body=payload, headers=out)


async def _serve(port: int) -> None:
    server = web.Server(reflect)
    runner = web.ServerRunner(server, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


class Reflector(ManagedProcess):
    """The reflector as its own process (so that it does not share the tests' GIL)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__(
            [sys.executable, "-m", "tests.support.reflector", "--port", str(self.port)],
            workdir / f"reflector-{self.port}.log",
            cwd=str(REPO_ROOT),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Reflector:
        super().start()
        wait_for_port(self.port, proc=self.proc)
        return self


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args().port))
