"""Starts the benchmark's processes, each with its own log, waits until each is
ready, and stops them all (last started, first stopped)."""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.support.processes import ManagedProcess, wait_for_port


class StartFailed(RuntimeError):
    """A process exited or never became ready: why, its log's last line, the log's path."""

    def __init__(self, name: str, why: str, log_path: Path) -> None:
        self.name = name
        self.why = why
        self.log_path = log_path
        self.last_line = log_tail(log_path, 1)
        super().__init__(f"{name} did not start ({why}): {self.last_line} (log: {log_path})")

    def tail(self, lines: int = 12) -> str:
        return log_tail(self.log_path, lines)


@dataclass(frozen=True, slots=True)
class Started:
    name: str
    command: list[str]
    log_path: Path
    process: ManagedProcess

    @property
    def pid(self) -> int:
        return self.process.pid


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without RELAYGATE_* overrides, which would change the config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYGATE_")}
    env.update(extra)
    return env


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def wait_for_file(path: Path, process: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not process.alive():
            raise RuntimeError(f"exited with {process.proc and process.proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {timeout:.0f}s")
        time.sleep(0.05)


class Launcher:
    """`with Launcher(logs) as launcher:` — everything started is stopped on exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Started] = []
        self._processes: list[ManagedProcess] = []

    def __enter__(self) -> Launcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        while self._processes:
            self._processes.pop().stop()

    def start(
        self,
        name: str,
        command: list[str],
        *,
        port: int | None = None,
        ready_file: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 40.0,
    ) -> Started:
        """Start `command`; ready when `ready_file` exists, else when `port` listens."""
        if ready_file is None and port is None:
            raise ValueError("give a port or a ready file")
        log_path = self.logs / f"{name.replace(' ', '-')}.log"
        if ready_file is not None:
            # One left by an earlier run in a reused --logs directory would pass at once.
            ready_file.unlink(missing_ok=True)
        process = ManagedProcess(command, log_path, env=env or clean_env()).start()
        self._processes.append(process)
        try:
            if ready_file is not None:
                wait_for_file(ready_file, process, timeout)
            elif port is not None:
                wait_for_port(port, timeout, proc=process.proc)
        except (RuntimeError, TimeoutError) as exc:
            process.stop()
            self._processes.remove(process)
            raise StartFailed(name, str(exc), log_path) from None
        started = Started(name, command, log_path, process)
        self.started.append(started)
        return started


def describe(started: Started) -> str:
    return f"{started.name:<15} pid {started.pid:<7} {shlex.join(started.command)}"
