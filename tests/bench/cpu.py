"""CPU time of the processes a run involves, from /proc/PID/stat (utime + stime of
every thread, plus the process's descendants, so nginx's workers count for nginx)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:  # the process ended between listing and reading
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw.rsplit(")", 1)[1].split()


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _tree(pid: int, children: Mapping[int, list[int]]) -> list[int]:
    found = [pid]
    for child in children.get(pid, []):
        found.extend(_tree(child, children))
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the command name: state is field 3, utime field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def snapshot(processes: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process tree."""
    children = _children_by_parent()
    return {
        name: sum(cpu_seconds(member) for member in _tree(pid, children))
        for name, pid in processes.items()
    }


def per_request_us(
    before: Mapping[str, float], after: Mapping[str, float], requests: int
) -> dict[str, float]:
    """Microseconds of CPU per request for each process between two snapshots."""
    if requests <= 0:
        return dict.fromkeys(before, 0.0)
    return {name: (after[name] - before[name]) * 1e6 / requests for name in before}


def _cpu_totals() -> tuple[int, int]:
    # First line of /proc/stat: "cpu user nice system idle iowait irq softirq steal ...".
    fields = [int(x) for x in (_PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle, sum(fields[:8])


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot, whoever used them."""
    return _cpu_totals()[0] / _TICKS_PER_SECOND


def machine_busy_fraction(seconds: float = 1.0) -> float:
    """Share of all cores busy over `seconds`: other work here lowers every figure."""
    busy_0, total_0 = _cpu_totals()
    time.sleep(seconds)
    busy_1, total_1 = _cpu_totals()
    return (busy_1 - busy_0) / max(1, total_1 - total_0)
