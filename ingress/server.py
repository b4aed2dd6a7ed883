"""Runs one ingress node: the data plane and the admin API (and, with TLS, an optional
HTTP-to-HTTPS redirect listener), uvicorn servers on one event loop, stopped together
by SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from contracts.bus.connect import bus_from_config, connect_with_retry
from contracts.config import Config, ConfigError, load_config
from contracts.envelope import new_id
from contracts.gc_tuning import tune_gc
from contracts.lifecycle import exit_if_stuck
from ingress.admin import build_admin
from ingress.app import IngressApp
from ingress.dashboard import close_dashboard
from ingress.transport import Transport

log = logging.getLogger("relaygate.ingress")


class _Server(uvicorn.Server):
    """Signals are handled once, for both servers, by `serve_ingress`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _server(
    app: Any,
    host: str,
    port: int,
    *,
    http: str | type[asyncio.Protocol],
    config: Config,
    keepalive_s: int = 5,
) -> _Server:
    ingress = config.ingress
    return _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="none",  # the CLI installs uvloop before the loop starts
            http=http,
            # The sans-I/O implementation: no task per socket beside the app's own, and
            # no deprecated websockets.legacy API; no compression (memory per socket).
            ws="websockets-sansio",
            ws_max_size=16 * 1024 * 1024,  # the ceiling; each route has its own limit
            ws_ping_interval=ingress.ws_ping_interval_s or None,
            ws_ping_timeout=ingress.ws_ping_timeout_s,
            ws_per_message_deflate=False,
            lifespan="off",
            access_log=False,
            log_level="warning",
            server_header=False,
            # uvicorn would believe X-Forwarded-* from 127.0.0.1; `caller.trusted_proxies`
            # decides that instead (ingress/forwarded.py).
            proxy_headers=False,
            backlog=4096,
            timeout_keep_alive=keepalive_s,
        )
    )


def data_plane_servers(app: IngressApp, config: Config, transport: Transport) -> list[_Server]:
    """The data plane's listener, and the redirect listener when one is configured."""
    ingress = config.ingress
    transport.use_lane(app.lane)
    keepalive = ingress.limits.keepalive_timeout_s
    servers = [
        _server(
            app,
            ingress.host,
            ingress.port,
            http=transport.protocol,
            config=config,
            keepalive_s=keepalive,
        )
    ]
    if ingress.tls is not None and transport.redirect_protocol is not None:
        assert ingress.tls.redirect_port is not None
        servers.append(
            _server(
                transport.redirect_app(),
                ingress.host,
                ingress.tls.redirect_port,
                http=transport.redirect_protocol,
                config=config,
                keepalive_s=keepalive,
            )
        )
    return servers


async def _started(servers: Sequence[uvicorn.Server], tasks: list[asyncio.Task[None]]) -> None:
    # uvicorn has no "started" event to await; poll its flag until all are up or one failed.
    while not all(s.started for s in servers) and not any(t.done() for t in tasks):  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def reload_config(app: IngressApp, admin: FastAPI, path: str) -> bool:
    """SIGHUP: swap in the file's routes atomically; a bad file changes nothing."""
    try:
        new = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("reload refused, keeping the running config: %s: %s", path, problem)
        return False
    old: Config = admin.state.config
    for section in ("bus", "ingress", "admin", "state"):
        if getattr(new, section) != getattr(old, section):
            log.warning("reload: %s settings changed; they apply after a restart", section)
    app.reload(new)
    admin.state.config = new
    log.info("reloaded %s: %d route(s)", path, len(new.routes))
    return True


async def serve_ingress(
    config: Config, ready_file: str | None = None, config_path: str | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; SIGHUP reloads routes from `config_path`."""
    node_id = config.ingress.node_id or f"ingress-{new_id()[:12]}"
    transport = Transport(config.ingress)  # unusable TLS files stop us before the bus
    bus = bus_from_config(config, node_id)
    await connect_with_retry(bus)
    app = IngressApp(config, bus)
    admin_app = build_admin(app, config)
    admin = _server(admin_app, config.admin.host, config.admin.port, http="auto", config=config)
    servers = [*data_plane_servers(app, config, transport), admin]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        close_dashboard(admin_app)  # its event streams would hold the admin server open
        for server in servers:
            server.should_exit = True

    def on_signal() -> None:
        if app.websockets.connections:
            # 1001 (going away) to every socket first; uvicorn's own shutdown says 1012.
            closing = asyncio.ensure_future(app.websockets.shutdown())
            closing.add_done_callback(lambda _: stop())
        else:
            stop()
        exit_if_stuck()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    if config_path is not None:
        loop.add_signal_handler(signal.SIGHUP, reload_config, app, admin_app, config_path)
    transport.start(loop)
    try:
        tasks = [asyncio.create_task(server.serve()) for server in servers]
        await _started(servers, tasks)
        up = all(server.started for server in servers)
        tune_gc()
        if up and ready_file:
            Path(ready_file).write_text(node_id)  # noqa: ASYNC240 (tiny, once)
        log.info(
            "ingress %s on %s://%s:%d, admin on http://%s:%d, bus %s",
            node_id,
            transport.scheme,
            config.ingress.host,
            config.ingress.port,
            config.admin.host,
            config.admin.port,
            bus.url,
        )
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()  # one server failing to start (port taken) stops the others
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not all(server.started for server in servers):
                task.result()
    finally:
        transport.close()
        await app.aclose()
        await bus.close()
