"""Which processes descend from a pid, read from /proc (Linux), and whether they
still run. A process is named by (pid, start time) so that a reused pid is not
mistaken for the one we saw."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcInfo:
    pid: int
    ppid: int
    state: str
    start_time: int  # clock ticks after boot: with pid, a unique name
    comm: str


def read_proc(pid: int) -> ProcInfo | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself hold spaces or ')'.
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5) (state); start time is field 22.
    return ProcInfo(pid, int(fields[1]), fields[0], int(fields[19]), comm)


def all_processes() -> list[ProcInfo]:
    found = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            info = read_proc(int(entry.name))
            if info is not None:
                found.append(info)
    return found


def descendants(pid: int) -> list[ProcInfo]:
    """Children, grandchildren, ... of `pid` (threads are not processes here)."""
    by_parent: dict[int, list[ProcInfo]] = {}
    for info in all_processes():
        by_parent.setdefault(info.ppid, []).append(info)
    found: list[ProcInfo] = []
    stack = [pid]
    while stack:
        for child in by_parent.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return found


def running(procs: list[ProcInfo]) -> list[ProcInfo]:
    """Those of `procs` still running: same pid and start time, and not a zombie
    (an orphan's zombie waits for init to reap it; it runs nothing)."""
    alive = []
    for seen in procs:
        now = read_proc(seen.pid)
        if now is not None and now.start_time == seen.start_time and now.state not in "ZX":
            alive.append(now)
    return alive


def describe(procs: list[ProcInfo]) -> str:
    """One line per process: pid and command line (for failure messages)."""
    lines = []
    for info in procs:
        try:
            argv = (_PROC / str(info.pid) / "cmdline").read_bytes().split(b"\0")
            command = b" ".join(argv).decode(errors="replace").strip()
        except OSError:
            command = info.comm
        lines.append(f"  pid {info.pid} ({info.state}): {command}")
    return "\n".join(lines)


def kill_leftovers(procs: list[ProcInfo]) -> None:
    """SIGKILL those of `procs` that still run (cleanup after a failed check)."""
    for info in running(procs):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGKILL)
