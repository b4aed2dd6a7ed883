"""The envelope codec: round trips, byte-identity with fastavro, schema evolution."""

from __future__ import annotations

import copy
import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.codec import (
    MARKER,
    CodecError,
    EnvelopeCodec,
    SchemaVersion,
    check_evolution,
    load_schemas,
)
from contracts.envelope import REQUEST, Envelope, HttpInfo, Principal, new_id, now_ms

text = st.text(max_size=40)
opt_text = st.none() | text
names = st.lists(text, max_size=4)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)

principals = st.builds(
    Principal,
    subject=text,
    tenant=opt_text,
    roles=names,
    scopes=names,
    tier=opt_text,
    authmethod=opt_text,
)
https = st.builds(
    HttpInfo,
    method=text,
    scheme=text,
    host=text,
    path=text,
    query=text,
    headers=st.lists(st.tuples(text, text), max_size=6),
    status=ints,
    client=text,
    params=st.dictionaries(text, text, max_size=4),
    apiversion=opt_text,
)
envelopes = st.builds(
    Envelope,
    id=text,
    source=text,
    type=text,
    time=longs,
    subject=opt_text,
    datacontenttype=opt_text,
    data=st.binary(max_size=300),
    correlationid=text,
    replyto=opt_text,
    deadline=longs,
    traceparent=opt_text,
    tracestate=opt_text,
    principal=st.none() | principals,
    http=st.none() | https,
    slip=names,
    attempt=ints,
    idempotencykey=opt_text,
    specversion=text,
)

fast = EnvelopeCodec()
reference = EnvelopeCodec(load_schemas())  # the fastavro path, same schemas


@settings(max_examples=150, deadline=None)
@given(envelopes)
def test_round_trip_keeps_every_field(envelope: Envelope) -> None:
    assert fast.decode(fast.encode(envelope)) == envelope


@settings(max_examples=150, deadline=None)
@given(envelopes)
def test_fast_codec_writes_the_bytes_fastavro_writes(envelope: Envelope) -> None:
    data = fast.encode(envelope)
    assert data == reference.encode(envelope)
    assert reference.decode(data) == envelope


def test_message_starts_with_single_object_marker_and_fingerprint() -> None:
    data = fast.encode(_request())
    latest = load_schemas()[-1]
    canonical = fastavro.schema.to_parsing_canonical_form(latest.parsed)
    assert data[:2] == MARKER == b"\xc3\x01"
    assert data[2:10] == bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    body = io.BytesIO(data[10:])
    record = fastavro.schemaless_reader(body, latest.parsed, None)
    assert isinstance(record, dict)
    assert record["correlationid"] == "cid-1"


def _request() -> Envelope:
    return Envelope(
        id=new_id(),
        source="relaygate://test",
        type=REQUEST,
        time=now_ms(),
        subject="orders",
        data=b"\x00\xffbody",
        correlationid="cid-1",
        replyto="rg.reply.n1.cid-1",
        deadline=now_ms() + 1000,
        principal=Principal("alice", roles=["admin"]),
        http=HttpInfo(
            method="POST",
            path="/orders/a%2Fb",
            query="x=1&x=2",
            headers=[("x-a", "1"), ("x-a", "2")],
            params={"id": "7"},
        ),
    )


def _next_version(extra_field: dict[str, Any]) -> SchemaVersion:
    """A future envelope version: v-latest plus one appended field."""
    latest = load_schemas()[-1]
    schema = copy.deepcopy(latest.schema)
    schema["fields"].append(extra_field)
    return SchemaVersion.from_json(latest.version + 1, schema)


REGION = {"name": "region", "type": ["null", "string"], "default": None}


def test_every_released_version_obeys_the_evolution_rule() -> None:
    versions = load_schemas()
    assert [v.version for v in versions] == list(range(1, len(versions) + 1))
    check_evolution(versions)


def test_old_reader_reads_a_message_from_a_newer_writer() -> None:
    newer = _next_version(REGION)
    writer = EnvelopeCodec([*load_schemas(), newer])
    assert (
        writer.encode(_request())[2:10] == newer.fingerprint
    )  # a fingerprint today's readers don't know
    original = _request()
    assert fast.decode(writer.encode(original)) == original  # the new field is left unread


def test_new_reader_reads_a_message_from_an_older_writer() -> None:
    newer = _next_version(REGION)
    reader = EnvelopeCodec([*load_schemas(), newer])
    original = _request()
    decoded = reader.decode(fast.encode(original))
    assert decoded == original  # the added field took its default


def test_old_readers_and_new_readers_agree_on_every_released_version() -> None:
    versions = load_schemas()
    original = _request()
    for i in range(len(versions)):
        older = EnvelopeCodec(versions[: i + 1])
        for j in range(len(versions)):
            other = EnvelopeCodec(versions[: j + 1])
            assert other.decode(older.encode(original)) == original


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.pop(3), "changes fields"),
        (lambda f: f.__setitem__(0, {"name": "id", "type": "bytes"}), "changes fields"),
        (lambda f: f.append({"name": "x", "type": "string"}), "without default"),
    ],
)
def test_evolution_rule_rejects_anything_but_appending_defaulted_fields(
    change: Any, message: str
) -> None:
    latest = load_schemas()[-1]
    schema = copy.deepcopy(latest.schema)
    change(schema["fields"])
    with pytest.raises(CodecError, match=message):
        check_evolution([latest, SchemaVersion.from_json(latest.version + 1, schema)])


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc3", b"{}", b"\xc3\x02" + bytes(8) + b"x"],
)
def test_non_envelopes_are_rejected_with_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError, match="marker"):
        fast.decode(data)


@settings(max_examples=100, deadline=None)
@given(envelopes, st.data())
def test_truncated_envelope_is_a_codec_error_not_a_crash(envelope: Envelope, data: Any) -> None:
    encoded = fast.encode(envelope)
    cut = data.draw(st.integers(min_value=10, max_value=len(encoded) - 1))
    with pytest.raises(CodecError):
        fast.decode(encoded[:cut])
