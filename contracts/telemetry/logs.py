"""Structured logs: JSON lines (text on a terminal), written by a thread behind a
`QueueHandler` so that the event loop never waits on stderr; the correlation and
trace ids of the request being served ride along in a context variable; secrets in
structured fields are redacted.

    configure_logging(config.telemetry.logs, "info")   # once per process
    token = bind(correlation_id, trace_id)              # per request / message
    access_log()                                        # the ingress's access log, or None
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from logging.handlers import QueueHandler
from typing import IO, Any

import orjson

from contracts.config import LogsConfig
from contracts.telemetry.memory import keep_freed_memory

REDACTED = "[redacted]"
# Names (lower-case) whose values never reach a log, whatever the configuration says.
ALWAYS_REDACTED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "api_key",
        "apikey",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
    }
)

# (correlation id, trace id) of the request or message being handled.
_context: ContextVar[tuple[str, str] | None] = ContextVar("relaygate_log_context", default=None)

# LogRecord attributes that are not `extra=` fields.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

_access: AccessLog | None = None
_listener: _Writer | None = None
_redactor: Redactor | None = None


def bind(correlation_id: str, trace_id: str) -> Token[tuple[str, str] | None]:
    """The ids every log line written by this task carries from now on."""
    return _context.set((correlation_id, trace_id))


def unbind(token: Token[tuple[str, str] | None]) -> None:
    _context.reset(token)


def trace_id_of(traceparent: str | None) -> str:
    """`00-<trace id>-<span id>-<flags>` -> the trace id ("" when there is none)."""
    return traceparent[3:35] if traceparent and len(traceparent) >= 35 else ""


class Redactor:
    """Replaces the values of secret names in (nested) mappings and header pairs."""

    __slots__ = ("names",)

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.names = ALWAYS_REDACTED | {name.lower() for name in extra}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                k: REDACTED if isinstance(k, str) and k.lower() in self.names else self(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            if (
                len(value) == 2
                and isinstance(value[0], str | bytes)
                and _text(value[0]).lower() in self.names
            ):
                return (value[0], REDACTED)
            return [self(item) for item in value]
        return value

    def query(self, query: str) -> str:
        """A query string with the values of secret parameters (`api_key=…`) replaced."""
        if not query:
            return query
        parts = query.split("&")
        for i, part in enumerate(parts):
            name, eq, _ = part.partition("=")
            if eq and name.lower() in self.names:
                parts[i] = f"{name}={REDACTED}"
        return "&".join(parts)


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


# The fields of an access-log line, in the order `AccessLog.write` takes them.
ACCESS_FIELDS = (
    "time", "route", "method", "path", "status", "seconds", "bytes", "correlation_id",
    "traceparent", "principal", "client", "cache", "ratelimit",
)  # fmt: skip


# An access-log line's values, in `ACCESS_FIELDS` order: the tuple `AccessLog.write`
# was called with, queued as is (a tuple: ~10x cheaper to make on the request path than
# the line; nothing else on the queue is a tuple).
AccessLine = tuple[Any, ...]


class AccessLog:
    """One line per request at the ingress: `write(values)` only queues the values (a
    tuple in `ACCESS_FIELDS` order; `time` an epoch float, `seconds` the duration,
    `traceparent` the request's); the writer thread names, formats and renders them."""

    __slots__ = ("write",)

    def __init__(self, sink: queue.SimpleQueue[Any]) -> None:
        # The queue's own method: no Python frame per line on the request path.
        self.write: Callable[[AccessLine], None] = sink.put_nowait


def redactor() -> Redactor:
    """What `configure_logging` set up (the built-in names until then): spans use it too."""
    global _redactor
    if _redactor is None:
        _redactor = Redactor()
    return _redactor


def access_log() -> AccessLog | None:
    """The access log when `configure_logging` enabled it, else None."""
    return _access


class _Context(logging.Filter):
    """Runs in the emitting thread: stamps the record with the ids of its task."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _context.get()
        if ids is not None:
            record.correlation_id, record.trace_id = ids
        return True


class _Enqueue(QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The queue stays in this process: no pickling, so no need to format here (the
        # writer thread does). Only fix the message while its arguments are current.
        record.msg = record.getMessage()
        record.args = None
        return record


class _Writer:
    """The thread that renders records and access-log dicts and writes them. It wakes
    every `interval_s` and writes everything queued at once: no thread switch per line,
    which costs the event loop far more than the line itself."""

    def __init__(
        self,
        sink: queue.SimpleQueue[Any],
        stream: IO[str],
        *,
        json: bool,
        redact: Redactor,
        interval_s: float = 0.05,
    ) -> None:
        self.queue = sink
        self.stream = stream
        self.json = json
        self.redact = redact
        self.text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relaygate-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.flush()
        self.flush()

    def flush(self) -> None:
        # Bytes, joined and written once: access-log lines go from their values to
        # JSON bytes in one orjson call, without a str to decode and encode again.
        json = self.json
        chunks: list[bytes] = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            try:
                if json and type(item) is tuple:
                    chunks.append(_access_json(item))
                else:
                    chunks.append(self.render(item).encode() + b"\n")
            except Exception as exc:  # a bad record must not take the others down
                chunks.append(f"relaygate: a log line could not be rendered: {exc!r}\n".encode())
        if chunks:
            with contextlib.suppress(Exception):  # stderr closed: nothing to tell anyone
                self._write(b"".join(chunks))

    def _write(self, data: bytes) -> None:
        stream = self.stream
        binary = getattr(stream, "buffer", None)
        if binary is None:  # a text-only stream (StringIO)
            stream.write(data.decode())
            stream.flush()
            return
        stream.flush()  # what was written through the text layer goes first
        binary.write(data)
        binary.flush()

    def render(self, item: logging.LogRecord | AccessLine) -> str:
        if type(item) is tuple:  # an access-log line: our own fields, no secrets
            fields = _access_fields(item)
            return orjson.dumps(fields).decode() if self.json else _access_text(fields)
        assert isinstance(item, logging.LogRecord)
        if not self.json:
            line = self.text.format(item)
            ids = getattr(item, "correlation_id", None)
            return f"{line} [cid={ids} trace={getattr(item, 'trace_id', '')}]" if ids else line
        data: dict[str, Any] = {
            "time": _iso(item.created),
            "level": item.levelname.lower(),
            "logger": item.name,
            "message": item.getMessage(),
        }
        for key, value in item.__dict__.items():
            if key not in _STANDARD:
                data[key] = value
        if item.exc_info:
            data["exception"] = self.text.formatException(item.exc_info)
        return orjson.dumps(self.redact(data), default=str).decode()


# The ISO 8601 text of the current second, made once a second: datetime's formatting
# cost more than the rest of an access-log line. Only the writer thread (or, after it
# stopped, the thread logging) reads and replaces it.
_second: tuple[int, str] = (-1, "")
_MILLIS = tuple(f".{ms:03d}+00:00" for ms in range(1000))


def _iso(created: float) -> str:
    """`created` (epoch seconds) as `datetime.isoformat(timespec="milliseconds")` in UTC
    writes it."""
    global _second
    second = int(created)
    cached = _second
    if cached[0] != second:
        text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:19]
        cached = _second = (second, text)
    return cached[1] + _MILLIS[int((created - second) * 1000) % 1000]


_LINE = orjson.OPT_APPEND_NEWLINE


def _access_json(line: AccessLine) -> bytes:
    """An access-log line as one JSON line (with its newline)."""
    at, route, method, path, status, seconds, size, cid, traceparent, principal, client, cache, rl = line  # fmt: skip  # noqa: E501
    return orjson.dumps(
        {
            "time": _iso(at),
            "level": "info",
            "logger": "relaygate.access",
            "message": "request",
            "route": route or None,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "bytes": size,
            "correlation_id": cid,
            "trace_id": traceparent[3:35] if traceparent and len(traceparent) >= 35 else "",
            "principal": principal,
            "client": client,
            "cache": cache or None,
            "ratelimit": rl or None,
        },
        option=_LINE,
    )


def _access_fields(line: AccessLine) -> dict[str, Any]:
    """The fields of an access-log line, for the text format."""
    return orjson.loads(_access_json(line))  # type: ignore[no-any-return]


def _access_text(f: dict[str, Any]) -> str:
    return (
        f'{f["time"]} {f["client"] or "-"} "{f["method"]} {f["path"]}" {f["status"]} '
        f"{f['bytes']}B {f['duration_ms']}ms route={f['route'] or '-'} "
        f"cid={f['correlation_id']} trace={f['trace_id']}"
    )


def configure_logging(
    options: LogsConfig, level: str | None = None, stream: IO[str] | None = None
) -> None:
    """Route every log record through one queue to a writer thread; set the levels.
    `level` (the CLI's --log-level) wins over `options.level`. Idempotent."""
    global _access, _listener, _redactor
    out = stream or sys.stderr
    if options.format == "auto":
        as_json = not (hasattr(out, "isatty") and out.isatty())
    else:
        as_json = options.format == "json"
    shutdown_logging()  # a previous configuration's writer, if any
    sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
    handler = _Enqueue(sink)
    handler.addFilter(_Context())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or options.level or "info").upper())
    for component, component_level in options.levels.items():
        logging.getLogger(f"relaygate.{component}").setLevel(component_level.upper())
    _redactor = Redactor(options.redact_fields)
    _listener = _Writer(sink, out, json=as_json, redact=_redactor)
    _listener.start()
    enabled = options.access_log and logging.getLogger("relaygate.access").isEnabledFor(
        logging.INFO
    )
    _access = AccessLog(sink) if enabled else None
    if enabled:
        keep_freed_memory()  # the writer's batches of lines (see memory.py)


def shutdown_logging() -> None:
    """Write what is queued and stop the writer thread; records logged afterwards (while
    the interpreter exits) are written directly, in the same format."""
    global _listener, _access
    writer, _listener, _access = _listener, None, None
    if writer is None:
        return
    writer.stop()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _Enqueue):
            root.removeHandler(handler)
            direct = _Direct(writer)
            direct.addFilter(_Context())
            root.addHandler(direct)


class _Direct(logging.Handler):
    def __init__(self, writer: _Writer) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.stream.write(self.writer.render(record) + "\n")
            self.writer.stream.flush()
        except Exception:
            self.handleError(record)


atexit.register(shutdown_logging)
