"""The outside programs the bench drives (wrk, nginx, py-spy): where they are, how
to install the missing ones, and their versions for the report's header."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.bench.profiling import py_spy_binary
from tests.support.processes import venv_bin

APT_HINT = "apt-get update && apt-get install -y wrk nginx-light"
PY_SPY_HINT = ".venv/bin/pip install py-spy"


@dataclass(frozen=True, slots=True)
class Tools:
    wrk: str
    nginx: str
    py_spy: str | None


def _nginx() -> str | None:
    # Debian puts nginx in /usr/sbin, which is not on every user's PATH.
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").exists():
        found = "/usr/sbin/nginx"
    return found


def find_tools(profile: bool) -> Tools | str:
    """The tools, or one line saying what is missing and how to install it."""
    wrk, nginx = shutil.which("wrk"), _nginx()
    if wrk is None or nginx is None:
        missing = " and ".join(n for n, p in (("wrk", wrk), ("nginx", nginx)) if p is None)
        return f"bench: {missing} not found; install with: {APT_HINT}"
    py_spy = py_spy_binary()
    if profile and py_spy is None:
        return f"bench: --profile needs py-spy; install with: {PY_SPY_HINT}"
    return Tools(wrk, nginx, py_spy)


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    text = (done.stdout or done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else "?"


def versions(tools: Tools) -> dict[str, str]:
    return {
        "wrk": _first_line([tools.wrk, "-v"]).split(" Copyright")[0],
        "nginx": _first_line([tools.nginx, "-v"]),
        "nats-server": _first_line([venv_bin("nats-server"), "--version"]),
    }
