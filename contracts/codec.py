"""Avro single-object encoding of envelopes, with every released schema version kept.

Wire format (Avro spec, "Single object encoding"): ``C3 01`` + the writer schema's
CRC-64-AVRO fingerprint (8 bytes, little-endian) + the Avro binary body.

Evolution rule, enforced by ``load_schemas``: a new version only *appends* fields,
with defaults, to the end of the top-level record. So a reader that knows the
writer's version resolves it exactly, and an older reader that meets an unknown
(newer) fingerprint still decodes the message with its own latest schema: Avro
binary is a concatenation of fields, so the appended tail is simply left unread.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import fastavro

from contracts import _avro_fast
from contracts.envelope import Envelope, HttpInfo, Principal

MARKER = b"\xc3\x01"
_HEADER_LEN = 10
_VERSION_FILE = re.compile(r"^envelope\.v(\d+)\.avsc$")


class CodecError(ValueError):
    """The bytes are not an envelope this codec can read."""


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    version: int
    schema: dict[str, Any]
    parsed: Any
    fingerprint: bytes

    @classmethod
    def from_json(cls, version: int, schema: dict[str, Any]) -> SchemaVersion:
        parsed = fastavro.parse_schema(schema)
        canonical = fastavro.schema.to_parsing_canonical_form(parsed)
        # fastavro gives the 8 bytes in wire (little-endian) order, as hex.
        fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
        return cls(version, schema, parsed, fingerprint)


def load_schemas() -> list[SchemaVersion]:
    """Every released envelope schema, oldest first, checked against the evolution rule."""
    found: list[SchemaVersion] = []
    for entry in resources.files("contracts").joinpath("schemas").iterdir():
        match = _VERSION_FILE.match(entry.name)
        if match:
            found.append(SchemaVersion.from_json(int(match[1]), json.loads(entry.read_text())))
    found.sort(key=lambda v: v.version)
    check_evolution(found)
    return found


def check_evolution(versions: Iterable[SchemaVersion]) -> None:
    """Raise if a version does more than append defaulted fields to its predecessor."""
    previous: SchemaVersion | None = None
    for current in versions:
        if previous is not None:
            old, new = previous.schema["fields"], current.schema["fields"]
            if new[: len(old)] != old:
                raise CodecError(
                    f"envelope v{current.version} changes fields of v{previous.version}; "
                    "only appending fields with defaults is allowed"
                )
            for added in new[len(old) :]:
                if "default" not in added:
                    raise CodecError(
                        f"envelope v{current.version} adds field {added['name']!r} without default"
                    )
        previous = current


class EnvelopeCodec:
    """Encodes with the newest known version; decodes any known version, and newer ones.

    For the shipped schemas the hot path is `_avro_fast` (same bytes as fastavro);
    fastavro resolves messages written by older versions, and serves codecs built
    from other schema lists (the compatibility tests).
    """

    def __init__(self, versions: list[SchemaVersion] | None = None) -> None:
        self.versions = versions if versions is not None else load_schemas()
        if not self.versions:
            raise CodecError("no envelope schema found")
        self.writer = self.versions[-1]
        self._by_fingerprint = {v.fingerprint: v for v in self.versions}
        self._header = MARKER + self.writer.fingerprint
        self._fast = versions is None and self.writer.version == _avro_fast.SCHEMA_VERSION

    def encode(self, envelope: Envelope) -> bytes:
        out = bytearray(self._header)
        if self._fast:
            _avro_fast.write(out, envelope)
            return bytes(out)
        body = io.BytesIO()
        fastavro.schemaless_writer(body, self.writer.parsed, _to_record(envelope))
        return bytes(out) + body.getvalue()

    def decode(self, data: bytes) -> Envelope:
        if len(data) < _HEADER_LEN or data[:2] != MARKER:
            raise CodecError("not an Avro single-object encoded message (bad marker)")
        writer = self._by_fingerprint.get(data[2:_HEADER_LEN])
        try:
            # An unknown fingerprint was written by a newer version: its extra
            # fields trail ours (see the module doc), so our own schema reads it.
            if self._fast and (writer is None or writer is self.writer):
                return _avro_fast.read(data, _HEADER_LEN)
            body = io.BytesIO(data)
            body.seek(_HEADER_LEN)
            if writer is None or writer is self.writer:
                record = fastavro.schemaless_reader(body, self.writer.parsed, None)
            else:
                record = fastavro.schemaless_reader(body, writer.parsed, self.writer.parsed)
        except (EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise CodecError(f"corrupt envelope body: {exc}") from exc
        if not isinstance(record, dict):
            raise CodecError("envelope body is not a record")
        return _from_record(record)


def _to_record(env: Envelope) -> dict[str, Any]:
    principal = env.principal
    http = env.http
    return {  # union branches named explicitly: fastavro would validate to pick them
        "id": env.id,
        "source": env.source,
        "type": env.type,
        "specversion": env.specversion,
        "time": env.time,
        "subject": env.subject,
        "datacontenttype": env.datacontenttype,
        "data": env.data,
        "correlationid": env.correlationid,
        "replyto": env.replyto,
        "deadline": env.deadline,
        "traceparent": env.traceparent,
        "tracestate": env.tracestate,
        "principal": None
        if principal is None
        else (
            "dev.relaygate.Principal",
            {
                "subject": principal.subject,
                "tenant": principal.tenant,
                "roles": principal.roles,
                "scopes": principal.scopes,
                "tier": principal.tier,
                "authmethod": principal.authmethod,
            },
        ),
        "http": None
        if http is None
        else (
            "dev.relaygate.Http",
            {
                "method": http.method,
                "scheme": http.scheme,
                "host": http.host,
                "path": http.path,
                "query": http.query,
                "headers": [{"name": n, "value": v} for n, v in http.headers],
                "status": http.status,
                "client": http.client,
                "params": http.params,
                "apiversion": http.apiversion,
            },
        ),
        "slip": env.slip,
        "attempt": env.attempt,
        "idempotencykey": env.idempotencykey,
    }


def _from_record(rec: dict[str, Any]) -> Envelope:
    p = rec["principal"]
    h = rec["http"]
    return Envelope(
        id=rec["id"],
        source=rec["source"],
        type=rec["type"],
        specversion=rec["specversion"],
        time=rec["time"],
        subject=rec["subject"],
        datacontenttype=rec["datacontenttype"],
        data=rec["data"],
        correlationid=rec["correlationid"],
        replyto=rec["replyto"],
        deadline=rec["deadline"],
        traceparent=rec["traceparent"],
        tracestate=rec["tracestate"],
        principal=None if p is None else Principal(**p),
        http=None
        if h is None
        else HttpInfo(
            method=h["method"],
            scheme=h["scheme"],
            host=h["host"],
            path=h["path"],
            query=h["query"],
            headers=[(x["name"], x["value"]) for x in h["headers"]],
            status=h["status"],
            client=h["client"],
            params=h["params"],
            apiversion=h["apiversion"],
        ),
        slip=rec["slip"],
        attempt=rec["attempt"],
        idempotencykey=rec["idempotencykey"],
    )
