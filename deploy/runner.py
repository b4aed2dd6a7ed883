"""`relaygate up`: the whole gateway on one machine, in one command.

Starts an embedded NATS server (unless the config names a bus), the workers the
config needs, and one ingress node; prints what listens where; restarts a child
that dies; and on Ctrl-C / SIGTERM stops every child (ingress first, bus last),
leaving no process behind. Children also get PR_SET_PDEATHSIG, so they end even
if `up` itself is killed with SIGKILL.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from contracts.config import (
    Config,
    ConfigError,
    EchoWorker,
    ModuleWorker,
    RoutingWorker,
    load_config,
)
from contracts.topics import Topics
from deploy.embedded_nats import free_port, nats_command

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
MAX_RESTARTS_PER_MINUTE = 5


def demo_config(upstream_url: str) -> dict[str, Any]:
    return {
        "routes": [
            {
                "name": "demo-echo",
                "when": {"path": "/demo/echo/{path:path}"},
                "to": {"type": "worker", "topic": "echo"},
            },
            {
                "name": "demo-upstream",
                "when": {"path": "/demo/upstream/{path:path}"},
                "to": {"type": "upstream", "upstream": "demo", "path": "/{path}"},
            },
        ],
        "upstreams": {"demo": {"url": upstream_url}},
        "workers": [{"type": "echo", "topics": ["echo"]}, {"type": "routing"}],
    }


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to SIGTERM it when `up` dies.
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    argv: list[str]
    ready_file: Path | None = None
    port: int | None = None
    reloads: bool = False  # takes SIGHUP to reload its config
    metrics_port: int | None = None  # a worker's /metrics listener
    log_file: Path | None = None  # None: our stdout/stderr
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        if self.ready_file is not None:
            self.ready_file.unlink(missing_ok=True)
        out = None if self.log_file is None else self.log_file.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if out is not None:
                out.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        if self.ready_file is not None:
            return self.ready_file.exists()
        if self.port is not None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        return True


class Stop(Exception):
    """SIGINT or SIGTERM arrived."""


class Supervisor:
    def __init__(
        self, config: Config, rundir: Path, *, config_path: str | None, log_level: str | None
    ) -> None:
        self.config = config
        self.rundir = rundir
        self.config_path = config_path  # the user's file; None for the demo
        self.config_file = rundir / "config.yaml"  # what the children read
        self.log_level = log_level
        self.children: list[Child] = []
        self.stopping = False
        self.reload_requested = False
        self.write_config(config)

    def write_config(self, config: Config) -> None:
        self.config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))

    def reload(self) -> None:
        """SIGHUP: validate the user's file again; if good, the ingress and routing
        workers swap routes in place. A bad file changes nothing."""
        self.reload_requested = False
        if self.config_path is None:
            print("relaygate up: the demo has no config file to reload", file=sys.stderr)
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                print(f"relaygate up: reload refused: {exc.source}: {problem}", file=sys.stderr)
            return
        if new.bus.url is None:  # keep using the embedded server we started
            new = new.model_copy(
                update={"bus": new.bus.model_copy(update={"url": self.config.bus.url})}
            )
        self.write_config(new)
        for child in self.children:
            if child.reloads and child.running():
                assert child.proc is not None
                child.proc.send_signal(signal.SIGHUP)
        print(f"relaygate up: reloaded {self.config_path}", file=sys.stderr, flush=True)

    def _cli(self, *args: str) -> list[str]:
        level = ["--log-level", self.log_level] if self.log_level else []
        return [sys.executable, "-m", "deploy", *level, *args]

    def metrics_port(self, index: int) -> int | None:
        """The /metrics port of the `index`-th worker replica: telemetry.metrics.worker_port
        plus the index when set, else a free port; None when metrics are off."""
        metrics = self.config.telemetry.metrics
        if not metrics.enabled:
            return None
        return metrics.worker_port + index if metrics.worker_port else free_port()

    def add(self, child: Child) -> Child:
        self.children.append(child)
        child.start()
        return child

    def wait_ready(self, children: list[Child]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.stopping:
                raise Stop
            waiting = [c for c in children if not c.ready()]
            if not waiting:
                return
            for child in waiting:
                if not child.running():
                    code = child.proc.returncode if child.proc else None
                    where = "above"
                    if child.log_file is not None:
                        where = f"in {child.log_file}"
                        sys.stderr.write(child.log_file.read_text(errors="replace")[-2000:])
                    raise SystemExit(
                        f"relaygate up: {child.name} exited with code {code} while starting "
                        f"(its log is {where})"
                    )
            if time.monotonic() > deadline:
                names = ", ".join(c.name for c in waiting)
                raise SystemExit(f"relaygate up: {names} not ready after {READY_TIMEOUT_S:.0f}s")
            time.sleep(0.05)

    def start_all(self) -> None:
        config_file = self.config_file
        workers: list[Child] = []
        for spec in self.config.effective_workers():
            for replica in range(1, spec.replicas + 1):
                name = f"worker {spec.type}#{replica}"
                argv = self._cli("worker", spec.type, "--config", str(config_file))
                if isinstance(spec, EchoWorker):
                    for topic in spec.topics:
                        argv += ["--topic", topic]
                elif isinstance(spec, ModuleWorker):
                    argv += ["--target", spec.target]
                ready = self.rundir / f"ready-{spec.type}-{replica}"
                argv += ["--ready-file", str(ready)]
                metrics_port = self.metrics_port(len(workers))
                if metrics_port is not None:
                    argv += ["--metrics-port", str(metrics_port)]
                reloads = isinstance(spec, RoutingWorker)
                child = Child(name, argv, ready, reloads=reloads, metrics_port=metrics_port)
                workers.append(self.add(child))
        if self.config.bridge.enabled:
            ready = self.rundir / "ready-bridge"
            argv = self._cli("bridge", "--config", str(config_file), "--ready-file", str(ready))
            workers.append(self.add(Child("bridge", argv, ready)))
        self.wait_ready(workers)
        ready = self.rundir / "ready-ingress"
        ingress = self.add(
            Child(
                "ingress",
                self._cli("ingress", "--config", str(config_file), "--ready-file", str(ready)),
                ready,
                reloads=True,
            )
        )
        self.wait_ready([ingress])

    def supervise(self) -> None:
        while not self.stopping:
            if self.reload_requested:
                self.reload()
            for child in self.children:
                if child.running() or self.stopping:
                    continue
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                code = child.proc.returncode if child.proc else None
                if len(child.restarts) > MAX_RESTARTS_PER_MINUTE:
                    raise SystemExit(
                        f"relaygate up: {child.name} keeps exiting (code {code}); stopping"
                    )
                print(
                    f"relaygate up: {child.name} exited with code {code}; restarting",
                    file=sys.stderr,
                    flush=True,
                )
                child.start()
            time.sleep(0.2)

    def stop_all(self) -> None:
        """Ingress first (no new requests), workers next, the bus last."""
        self.stopping = True
        for child in reversed(self.children):
            if child.running():
                assert child.proc is not None
                child.proc.send_signal(signal.SIGCONT)
                child.proc.terminate()
                try:
                    child.proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    print(
                        f"relaygate up: {child.name} did not stop in {STOP_TIMEOUT_S:.0f}s; "
                        "killing it",
                        file=sys.stderr,
                        flush=True,
                    )
                    child.proc.kill()
                    child.proc.wait()


def run_up(config_path: str | None, log_level: str | None = None) -> int:
    """`relaygate up`: SIGINT/SIGTERM stop everything, SIGHUP reloads the config."""
    rundir = Path(tempfile.mkdtemp(prefix="relaygate-up-"))
    supervisor: Supervisor | None = None

    def on_signal(signum: int, _frame: object) -> None:
        if supervisor is not None:
            supervisor.stopping = True

    def on_hangup(signum: int, _frame: object) -> None:
        if supervisor is not None:
            supervisor.reload_requested = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    try:
        demo = config_path is None
        pre: list[Child] = []
        if demo:
            upstream_port = free_port()
            data = demo_config(f"http://127.0.0.1:{upstream_port}")
            config = Config(**data)
            pre.append(
                Child(
                    "demo upstream",
                    [sys.executable, "-m", "deploy", "demo-upstream", "--port", str(upstream_port)],
                    port=upstream_port,
                )
            )
        else:
            config = load_config(config_path)
        embedded = config.bus.url is None
        store = None
        if embedded:
            argv, nats_port, store = nats_command(config.bus.embedded, rundir)
            log_file = rundir / "nats-server.log"
            pre.insert(0, Child("nats-server", argv, port=nats_port, log_file=log_file))
            config = config.model_copy(
                update={
                    "bus": config.bus.model_copy(update={"url": f"nats://127.0.0.1:{nats_port}"})
                }
            )
        supervisor = Supervisor(config, rundir, config_path=config_path, log_level=log_level)
        for child in pre:
            supervisor.add(child)
        supervisor.wait_ready(pre)
        supervisor.start_all()
        _print_banner(config, embedded=embedded, demo=demo, store=store)
        _print_metrics(config, supervisor.children)
        supervisor.supervise()
        return 0
    except Stop:
        return 0
    finally:
        if supervisor is not None:
            supervisor.stop_all()
        if (
            config_path is None
            or supervisor is None
            or not supervisor.config.bus.embedded.store_dir
        ):
            shutil.rmtree(rundir, ignore_errors=True)


def _print_banner(config: Config, *, embedded: bool, demo: bool, store: Path | None) -> None:
    topics = Topics(config.bus.prefix)
    tls = config.ingress.tls
    scheme = "https" if tls is not None else "http"
    ingress = f"{scheme}://{config.ingress.host}:{config.ingress.port}"
    lines = [
        "relaygate up: ready",
        f"  ingress  {ingress}"
        + (
            f"  (http://{config.ingress.host}:{tls.redirect_port} redirects to it)"
            if tls is not None and tls.redirect_port is not None
            else ""
        ),
        f"  admin    http://{config.admin.host}:{config.admin.port}"
        "  (/dashboard /api-docs/ /metrics /healthz /readyz /config /stats /upstreams /cache"
        " /admin/keys /admin/oauth /docs)",
        f"  bus      {config.bus.url}"
        + (f"  (embedded NATS, JetStream in {store})" if embedded else ""),
    ]
    if config.bridge.enabled:
        bridge = f"http://{config.bridge.host}:{config.bridge.port}"
        lines.append(f"  bridge   {bridge}  (webhook endpoints, /docs)")
    for spec in config.effective_workers():
        if isinstance(spec, EchoWorker):
            what = ", ".join(topics.request(t) for t in spec.topics)
        elif isinstance(spec, RoutingWorker):
            what = "upstream routes"
        elif spec.type == "async":
            what = f"async requests on {topics.async_requests()}"
        else:
            what = spec.target
        lines.append(f"  worker   {spec.type} x{spec.replicas}  ({what})")
    if demo:
        lines += [
            f"  try      curl {ingress}/demo/echo/hello",
            f"           curl {ingress}/demo/upstream/status/201",
        ]
    lines.append("  stop     Ctrl-C")
    print("\n".join(lines), flush=True)


def _print_metrics(config: Config, children: list[Child]) -> None:
    """Where each process serves its Prometheus metrics."""
    if not config.telemetry.metrics.enabled:
        return
    lines = [f"  metrics  ingress http://{config.admin.host}:{config.admin.port}/metrics"]
    host = config.telemetry.metrics.worker_host
    lines += [
        f"           {child.name} http://{host}:{child.metrics_port}/metrics"
        for child in children
        if child.metrics_port is not None
    ]
    print("\n".join(lines), flush=True)
