"""`--profile`: py-spy samples a process during a run; the raw stacks are summed
into the functions that use the most CPU (self = the sampled frame itself,
total = the function anywhere on the stack)."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import venv_bin

SAMPLES_PER_SECOND = 200


@dataclass(frozen=True, slots=True)
class FunctionCost:
    function: str
    self_pct: float
    total_pct: float


@dataclass(frozen=True, slots=True)
class Profile:
    process: str
    samples: int
    busy_pct: float
    top: list[FunctionCost]
    raw_path: str


def py_spy_binary() -> str | None:
    try:
        return venv_bin("py-spy")
    except RuntimeError:
        return shutil.which("py-spy")


def summarise(raw: str, limit: int = 15) -> tuple[int, list[FunctionCost]]:
    """Sample count and the top functions by self time, from py-spy's raw format
    (one `outer;…;leaf count` line per distinct stack)."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
    if not samples:
        return 0, []
    top = [
        FunctionCost(name, 100 * n / samples, 100 * anywhere[name] / samples)
        for name, n in own.most_common(limit)
    ]
    return samples, top


class Recorder:
    """One `py-spy record` running in the background for `duration_s`."""

    def __init__(self, binary: str, name: str, pid: int, duration_s: int, out_dir: Path) -> None:
        self.name = name
        self.duration_s = duration_s
        self.raw_path = out_dir / f"profile-{name.replace(' ', '-')}.txt"
        self.log_path = out_dir / f"profile-{name.replace(' ', '-')}.log"
        self.command = [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(duration_s),
            "--rate",
            str(SAMPLES_PER_SECOND),
            "--function",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(self.raw_path),
        ]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)

    def finish(self) -> Profile | str:
        """The summary, or why there is none."""
        try:
            code = self._proc.wait(self.duration_s + 30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            return f"py-spy on {self.name} did not finish"
        if code != 0 or not self.raw_path.exists():
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            return f"py-spy on {self.name} exited with {code}: {' / '.join(tail)}"
        samples, top = summarise(self.raw_path.read_text(errors="replace"))
        busy = 100 * samples / (SAMPLES_PER_SECOND * self.duration_s)
        return Profile(self.name, samples, busy, top, str(self.raw_path))
