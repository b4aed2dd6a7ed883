"""`relaygate` run as a user runs it, for end-to-end tests: `relaygate up` with a
config, or one role at a time (`ingress`, `worker KIND`), each a subprocess with
its output in a log file, started on free ports and stopped with SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.processes import ManagedProcess, free_port

READY_BANNER = "relaygate up: ready"


def relaygate_argv(*args: str) -> list[str]:
    """The CLI as the venv runs it (`relaygate ...` is the same entry point)."""
    return [sys.executable, "-m", "deploy", *args]


def relaygate_env(
    overrides: Mapping[str, str] | None = None, python_path: Sequence[Path] = ()
) -> dict[str, str]:
    """Our environment without stray RELAYGATE_* settings, plus `overrides`;
    `python_path` goes first on PYTHONPATH (for a team's worker module)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYGATE_")}
    if python_path:
        parts = [str(p) for p in python_path]
        if env.get("PYTHONPATH"):
            parts.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(parts)
    env.update(overrides or {})
    return env


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, proc: ManagedProcess | None = None
) -> None:
    """Poll `condition()` until true; fail early if `proc` exits, else after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and not proc.alive():
            raise AssertionError(
                f"{what}: process exited with {proc.proc.returncode if proc.proc else None} "
                f"first; its log:\n{tail(proc.log())}"
            )
        if time.monotonic() > deadline:
            log = f"; its log:\n{tail(proc.log())}" if proc is not None else ""
            raise AssertionError(f"{what}: not after {timeout:.0f}s{log}")
        time.sleep(0.05)


def tail(text: str, chars: int = 4000) -> str:
    return text[-chars:]


def terminate(process: ManagedProcess, timeout: float = 15.0) -> tuple[int | None, float]:
    """SIGTERM, then wait up to `timeout`: (exit code or None if it had to be killed, seconds)."""
    assert process.proc is not None
    started = time.monotonic()
    if process.proc.poll() is not None:
        return process.proc.returncode, 0.0
    process.proc.send_signal(signal.SIGTERM)
    try:
        code = process.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        process.proc.kill()
        process.proc.wait(10)
        return None, time.monotonic() - started
    return code, time.monotonic() - started


class RelaygateUp(ManagedProcess):
    """`relaygate up [--config FILE]` with its ingress and admin on free ports."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        config: Mapping[str, Any] | None,
        *,
        env: Mapping[str, str] | None = None,
        python_path: Sequence[Path] = (),
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.admin_port = free_port()
        # Its run folder (config copy, ready files, JetStream store) goes under workdir.
        overrides = {"TMPDIR": str(workdir), **(env or {})}
        args = ["up"]
        if config is None:
            # The built-in demo config: ports only through the environment.
            overrides["RELAYGATE_INGRESS__PORT"] = str(self.port)
            overrides["RELAYGATE_ADMIN__PORT"] = str(self.admin_port)
        else:
            data = dict(config)
            data["ingress"] = {**data.get("ingress", {}), "port": self.port}
            data["admin"] = {**data.get("admin", {}), "port": self.admin_port}
            self.config_file = write_config(workdir / f"{name}.yaml", data)
            args += ["--config", str(self.config_file)]
        super().__init__(
            relaygate_argv(*args),
            workdir / f"{name}.log",
            env=relaygate_env(overrides, python_path),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> RelaygateUp:
        super().start()
        return self

    def wait_ready(self, timeout: float = 60.0) -> RelaygateUp:
        """The banner on stdout, then /readyz answering 200."""
        wait_until(lambda: READY_BANNER in self.log(), timeout, "relaygate up banner", self)
        wait_until(lambda: admin_ready(self.admin_url), 10.0, "relaygate up /readyz", self)
        return self


class RelaygateRole(ManagedProcess):
    """One `relaygate ingress` or `relaygate worker KIND` process with a ready file."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        config_file: Path,
        role: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        python_path: Sequence[Path] = (),
    ) -> None:
        self.ready_file = workdir / f"{name}.ready"
        self.ready_file.unlink(missing_ok=True)
        super().__init__(
            relaygate_argv(
                *role, "--config", str(config_file), "--ready-file", str(self.ready_file)
            ),
            workdir / f"{name}.log",
            env=relaygate_env(env, python_path),
        )
        self.name = name

    def start(self) -> RelaygateRole:
        super().start()
        return self

    def wait_ready(self, timeout: float = 60.0) -> RelaygateRole:
        wait_until(self.ready_file.exists, timeout, f"{self.name} ready file", self)
        return self


class IngressNode(RelaygateRole):
    """`relaygate ingress` on its own data-plane and admin ports (set through the env)."""

    def __init__(self, workdir: Path, name: str, config_file: Path) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        super().__init__(
            workdir,
            name,
            config_file,
            ["ingress"],
            env={
                "RELAYGATE_INGRESS__PORT": str(self.port),
                "RELAYGATE_ADMIN__PORT": str(self.admin_port),
            },
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def wait_ready(self, timeout: float = 60.0) -> IngressNode:
        super().wait_ready(timeout)
        wait_until(lambda: admin_ready(self.admin_url), 10.0, f"{self.name} /readyz", self)
        return self


@contextlib.contextmanager
def running(
    processes: Sequence[RelaygateRole], *, exit_zero: bool = True
) -> Iterator[Sequence[RelaygateRole]]:
    """Start every process, then wait until each is ready; until the block ends. Then
    SIGTERM each in order; with `exit_zero`, each must have ended with exit code 0."""
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready()
        yield processes
    finally:
        codes = stop_all(processes)
    if exit_zero:
        assert all(code == 0 for code in codes.values()), codes


@contextlib.contextmanager
def nodes_sharing_redis(
    workdir: Path,
    nats_url: str,
    redis_url: str,
    policies: Sequence[Mapping[str, Any]],
    *,
    count: int = 2,
    **settings: Any,
) -> Iterator[list[IngressNode]]:
    """`count` `relaygate ingress` nodes on one Redis (`state.url`) and an echo worker,
    on a fresh bus prefix; route `orders` (`/orders/{rest:path}`, to the worker) runs
    `policies`; `settings` are more top-level config keys. Every process must end with
    exit code 0 on SIGTERM."""
    config_file = write_config(
        workdir / "shared.yaml",
        {
            "bus": {"url": nats_url, "prefix": f"shared-{uuid.uuid4().hex[:10]}"},
            "state": {"url": redis_url},
            **settings,
            "routes": [
                {
                    "name": "orders",
                    "when": {"path": "/orders/{rest:path}"},
                    "to": {"type": "worker", "topic": "echo"},
                    "policies": list(policies),
                }
            ],
        },
    )
    worker = RelaygateRole(workdir, "worker", config_file, ["worker", "echo", "--topic", "echo"])
    nodes = [IngressNode(workdir, f"ingress-{i}", config_file) for i in range(1, count + 1)]
    with running([worker, *nodes]):
        yield nodes


def admin_ready(admin_url: str) -> bool:
    try:
        return httpx.get(f"{admin_url}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def admin_stats(admin_url: str) -> dict[str, Any]:
    response = httpx.get(f"{admin_url}/stats", timeout=5.0)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def stop_all(processes: Sequence[ManagedProcess]) -> dict[str, int | None]:
    """SIGTERM each (in order); exit code per log name, None when it had to be killed."""
    codes: dict[str, int | None] = {}
    for process in processes:
        if process.proc is not None:
            codes[process.log_path.name], _ = terminate(process)
    return codes


@contextlib.contextmanager
def running_up(
    workdir: Path,
    name: str,
    config: Mapping[str, Any] | None,
    *,
    env: Mapping[str, str] | None = None,
    python_path: Sequence[Path] = (),
    ready_timeout: float = 60.0,
) -> Iterator[RelaygateUp]:
    """`relaygate up` until the block ends; then SIGTERM, which must end it with
    exit code 0 within 15 s."""
    gateway = RelaygateUp(workdir, name, config, env=env, python_path=python_path).start()
    try:
        gateway.wait_ready(ready_timeout)
    except BaseException:
        terminate(gateway)
        raise
    try:
        yield gateway
    finally:
        code, seconds = terminate(gateway)
    assert code == 0, (
        f"relaygate up ended with {code} {seconds:.1f}s after SIGTERM (want 0 within 15s); "
        f"its log:\n{tail(gateway.log())}"
    )


def wait_routed(url: str, timeout: float = 60.0, **request: Any) -> int:
    """Send `GET url` until it answers 2xx; the number of attempts that did not.
    A Kafka consumer serves only after its group join, some seconds after start."""
    deadline = time.monotonic() + timeout
    failures = 0
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=10.0, **request)
            if response.is_success:
                return failures
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        failures += 1
        time.sleep(0.2)
    raise AssertionError(f"GET {url}: no 2xx after {timeout:.0f}s; last answer: {last}")
