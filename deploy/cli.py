"""The `relaygate` command: `up`, `ingress`, `worker KIND`, `bridge`, `check FILE`,
`schema`, `announce`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from contracts.config import (
    AsyncWorker,
    Config,
    ConfigError,
    EchoWorker,
    ModuleWorker,
    RoutingWorker,
    UpstreamTarget,
    json_schema,
    load_config,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relaygate", description=__doc__)
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: telemetry.logs.level of the config, else info",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="the whole gateway on this machine (embedded NATS by default)")
    up.add_argument("--config", "-c", help="YAML config; without one, the demo routes")

    ingress = sub.add_parser("ingress", help="one ingress node (data plane + admin API)")
    ingress.add_argument("--config", "-c", required=True)
    ingress.add_argument("--ready-file", help=argparse.SUPPRESS)

    worker = sub.add_parser("worker", help="one worker process of a kind")
    worker.add_argument("kind", choices=["echo", "routing", "module", "async"])
    worker.add_argument("--config", "-c", required=True)
    worker.add_argument("--topic", action="append", help="echo: topic(s) to serve")
    worker.add_argument("--target", help="module: package.module:worker")
    worker.add_argument("--ready-file", help=argparse.SUPPRESS)
    worker.add_argument(
        "--metrics-port", type=int, help="serve /metrics here (default: telemetry.metrics)"
    )

    bridge = sub.add_parser("bridge", help="one webhook bridge replica (delivery + admin API)")
    bridge.add_argument("--config", "-c", required=True)
    bridge.add_argument("--ready-file", help=argparse.SUPPRESS)

    check = sub.add_parser("check", help="validate a config file; every error with its path")
    check.add_argument("file")

    sub.add_parser("schema", help="print the config's JSON Schema (for editors)")

    announce = sub.add_parser(
        "announce", help="announce a service instance on the bus until stopped (bus discovery)"
    )
    announce.add_argument("--service", required=True, help="the upstream's service name")
    announce.add_argument("--url", required=True, help="this instance's base URL")
    where = announce.add_mutually_exclusive_group(required=True)
    where.add_argument("--bus", help="nats://… or kafka://…")
    where.add_argument("--config", "-c", help="take bus.url and bus.prefix from this config")
    announce.add_argument("--prefix", help="bus prefix (default: the config's, or rg)")
    announce.add_argument("--ttl", type=float, default=10.0, help="seconds (default 10)")
    announce.add_argument("--group", type=int, default=0, help="failover group (default 0)")
    announce.add_argument("--weight", type=int, default=1, help="balancing weight (default 1)")
    announce.add_argument("--instance-id", help="default: random")

    demo = sub.add_parser("demo-upstream", help="the small HTTP upstream the demo proxies to")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8090)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _run(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"relaygate: {exc.source}: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "check":
        config = load_config(args.file)
        _check_event_schemas(config, args.file)
        upstream_routes = sum(isinstance(r.to, UpstreamTarget) for r in config.routes)
        print(
            f"{args.file}: ok — {len(config.routes)} route(s) ({upstream_routes} to upstreams), "
            f"{len(config.upstreams)} upstream(s), bus {config.bus.url or 'embedded NATS'}"
        )
        return 0
    if args.command == "schema":
        print(json.dumps(json_schema(), indent=2))
        return 0
    if args.command == "demo-upstream":
        from deploy.demo_upstream import serve_demo_upstream

        serve_demo_upstream(args.host, args.port)
        return 0
    if args.command == "announce":
        return _announce(args)
    if args.command == "up":
        from deploy.runner import run_up

        return run_up(args.config, args.log_level)

    config = load_config(args.config)
    _use_uvloop()
    from contracts import telemetry

    if args.command == "ingress":
        from ingress.server import serve_ingress

        telemetry.setup(config, "ingress", args.log_level)
        try:
            asyncio.run(serve_ingress(config, args.ready_file, args.config))
        finally:
            telemetry.shutdown()
        return 0
    if args.command == "bridge":
        from bridge.server import serve_bridge

        asyncio.run(serve_bridge(config, args.ready_file))
        return 0
    spec = _worker_spec(config, args)
    from workers.runner import serve_worker

    telemetry.setup(config, f"worker-{spec.type}", args.log_level)
    try:
        asyncio.run(
            serve_worker(config, spec, args.ready_file, args.config, metrics_port=args.metrics_port)
        )
    finally:
        telemetry.shutdown()
    return 0


def _check_event_schemas(config: Config, source: str) -> None:
    """The event types' schema files are read at start: `check` reads them too."""
    if not config.events.types:
        return
    from contracts.events import EventRegistry, RegistryError

    try:
        EventRegistry.load(config.events)
    except RegistryError as exc:
        raise ConfigError(source, exc.problems) from None


def _worker_spec(
    config: Config, args: argparse.Namespace
) -> EchoWorker | RoutingWorker | ModuleWorker | AsyncWorker:
    if args.kind == "echo":
        return EchoWorker(type="echo", topics=args.topic or ["echo"])
    if args.kind == "routing":
        return RoutingWorker(type="routing")
    if args.kind == "async":
        return AsyncWorker(type="async")
    if not args.target:
        raise SystemExit("relaygate worker module: --target package.module:worker is required")
    return ModuleWorker(type="module", target=args.target)


def _announce(args: argparse.Namespace) -> int:
    from deploy.announce import run_announce

    if args.config is not None:
        config = load_config(args.config)
        if config.bus.url is None:
            print(f"relaygate: {args.config}: bus.url is not set", file=sys.stderr)
            return 2
        bus_url, prefix = config.bus.url, args.prefix or config.bus.prefix
    else:
        bus_url, prefix = args.bus, args.prefix or "rg"
    return asyncio.run(
        run_announce(
            bus_url,
            args.service,
            args.url,
            ttl_s=args.ttl,
            prefix=prefix,
            group=args.group,
            weight=args.weight,
            instance_id=args.instance_id,
        )
    )


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # not on Windows; asyncio's loop works, slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
