"""Options of `python -m tests.bench` and its entry point."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType


@dataclass(frozen=True, slots=True)
class BenchOptions:
    duration_s: int
    connections: int
    threads: int
    warmup_s: int
    rounds: int
    quiet_wait_s: int
    skip_kafka: bool
    profile: bool
    json_path: Path | None
    logs: Path | None


def parse_options(argv: Sequence[str] | None = None) -> BenchOptions:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Direct upstream, nginx and relaygate (NATS, Kafka) side by side with wrk.",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (10)")
    parser.add_argument("--connections", type=int, default=64, help="loaded runs' conns (64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads when loaded (2)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per row (2)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="a feature row and its baseline alternate this many times; the ratio is the "
        "median of the rounds' (3)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=int,
        default=60,
        metavar="SECONDS",
        help="before each row, wait up to this long for other work on the machine to stop (60)",
    )
    parser.add_argument("--skip-kafka", action="store_true", help="NATS rows only")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="an extra (c) NATS run with py-spy on the ingress and the echo worker",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="save the results as JSON")
    parser.add_argument("--logs", type=Path, metavar="DIR", help="keep process logs here")
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.threads, args.rounds) < 1 or args.warmup < 0:
        parser.error(
            "--duration, --connections, --threads and --rounds must be >= 1, --warmup >= 0"
        )
    return BenchOptions(
        duration_s=args.duration,
        connections=args.connections,
        threads=min(args.threads, args.connections),
        warmup_s=args.warmup,
        rounds=args.rounds,
        quiet_wait_s=max(0, args.quiet_wait),
        skip_kafka=args.skip_kafka,
        profile=args.profile,
        json_path=args.json,
        logs=args.logs,
    )


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through the launchers, which stop every process they started.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    from tests.bench.runner import run_bench
    from tests.bench.tools import find_tools

    options = parse_options(argv)
    tools = find_tools(options.profile)
    if isinstance(tools, str):
        print(tools, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if options.logs is not None:
        options.logs.mkdir(parents=True, exist_ok=True)
        return run_bench(options, tools, options.logs)
    with tempfile.TemporaryDirectory(prefix="relaygate-bench-") as logs:
        return run_bench(options, tools, Path(logs))
