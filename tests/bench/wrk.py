"""Runs wrk and reads its figures from a Lua `done` hook (exact microseconds, not
the rounded text table), plus wrk's own CPU time from wait4's resource usage."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_MARKER = "BENCH-RESULT "

# `done` runs once after the run; defining no `request`/`response` hook keeps wrk
# on its fast path, so the load generator stays cheap.
_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\\n',
    "MARKER", summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
""".replace("MARKER", _MARKER)


class WrkFailed(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx_3xx: int
    socket_errors: int
    wrk_cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def write_script(directory: Path, *, extra: str = "", name: str = "bench-done.lua") -> Path:
    """The `done` hook, plus `extra` Lua (a `request` hook for rows that POST)."""
    path = directory / name
    path.write_text(_SCRIPT + extra)
    return path


def wrk_command(
    url: str,
    *,
    threads: int,
    connections: int,
    duration_s: int,
    script: Path,
    headers: Sequence[str] = (),
) -> list[str]:
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        *[arg for header in headers for arg in ("-H", header)],
        "-s",
        str(script),
        url,
    ]


def run_wrk(command: list[str], output: Path, duration_s: int) -> WrkResult:
    """Run one wrk command to completion; its text output is kept in `output`."""
    with output.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + duration_s + 30
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise WrkFailed(f"wrk did not finish in {duration_s + 30}s: {' '.join(command)}")
            time.sleep(0.05)
    except BaseException:  # a timeout, Ctrl-C or SIGTERM: leave no wrk behind
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        raise
    text = output.read_text(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith(_MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise WrkFailed(f"wrk exited with {proc.returncode}: {text.strip()[-400:]}")
    data = json.loads(line[len(_MARKER) :])
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        non_2xx_3xx=data["status"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        wrk_cpu_s=usage.ru_utime + usage.ru_stime,
    )
