"""Hand-specialised Avro binary writer/reader for the *latest* envelope schema.

fastavro's public API costs 40-70 us per envelope on this hardware (it re-parses
the schema per call and picks union branches by validating the datum), more than
the whole per-request budget of the ingress. This module writes exactly the
bytes fastavro writes for `envelope.v1.avsc`, in a few microseconds.
`tests/contracts/test_codec.py` holds it to that: byte-identical output for
generated envelopes, both directions. When a new schema version is released,
extend both functions and bump `SCHEMA_VERSION`; the test fails until you do.
"""

from __future__ import annotations

from contracts.envelope import Envelope, HttpInfo, Principal

SCHEMA_VERSION = 1


def _long(out: bytearray, n: int) -> None:
    if 0 <= n < 64:  # lengths, counts, statuses, attempts: one byte
        out.append(n << 1)
        return
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _str(out: bytearray, s: str) -> None:
    b = s.encode()
    size = len(b)
    if size < 64:
        out.append(size << 1)
    else:
        _long(out, size)
    out += b


def _opt_str(out: bytearray, s: str | None) -> None:
    if s is None:
        out.append(0)
        return
    b = s.encode()
    size = len(b)
    if size < 64:
        out.append(2)
        out.append(size << 1)
    else:
        out.append(2)
        _long(out, size)
    out += b


def _str_array(out: bytearray, items: list[str]) -> None:
    if items:
        _long(out, len(items))
        for item in items:
            _str(out, item)
    out.append(0)


def write(out: bytearray, env: Envelope) -> None:
    _str(out, env.id)
    _str(out, env.source)
    _str(out, env.type)
    _str(out, env.specversion)
    _long(out, env.time)
    _opt_str(out, env.subject)
    _opt_str(out, env.datacontenttype)
    _long(out, len(env.data))
    out += env.data
    _str(out, env.correlationid)
    _opt_str(out, env.replyto)
    _long(out, env.deadline)
    _opt_str(out, env.traceparent)
    _opt_str(out, env.tracestate)
    p = env.principal
    if p is None:
        out.append(0)
    else:
        out.append(2)
        _str(out, p.subject)
        _opt_str(out, p.tenant)
        _str_array(out, p.roles)
        _str_array(out, p.scopes)
        _opt_str(out, p.tier)
        _opt_str(out, p.authmethod)
    h = env.http
    if h is None:
        out.append(0)
    else:
        out.append(2)
        _str(out, h.method)
        _str(out, h.scheme)
        _str(out, h.host)
        _str(out, h.path)
        _str(out, h.query)
        if h.headers:
            _long(out, len(h.headers))
            for name, value in h.headers:
                _str(out, name)
                _str(out, value)
        out.append(0)
        _long(out, h.status)
        _str(out, h.client)
        if h.params:
            _long(out, len(h.params))
            for key, value in h.params.items():
                _str(out, key)
                _str(out, value)
        out.append(0)
        _opt_str(out, h.apiversion)
    _str_array(out, env.slip)
    _long(out, env.attempt)
    _opt_str(out, env.idempotencykey)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos

    def long(self) -> int:
        buf = self.buf
        pos = self.pos
        b = buf[pos]
        pos += 1
        if b < 0x80:
            self.pos = pos
            return (b >> 1) ^ -(b & 1)
        n = b & 0x7F
        shift = 7
        while b & 0x80:
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
        self.pos = pos
        return (n >> 1) ^ -(n & 1)

    def raw(self) -> bytes:
        buf = self.buf
        pos = self.pos
        b = buf[pos]
        if b < 0x80:  # a length below 64 fits one byte: skip the general varint path
            size = b >> 1
            if b & 1:
                raise ValueError("negative length")
            pos += 1
        else:
            size = self.long()
            if size < 0:
                raise ValueError("negative length")
            pos = self.pos
        end = pos + size
        if end > len(buf):
            raise EOFError("truncated envelope")
        self.pos = end
        return buf[pos:end]

    def text(self) -> str:
        return self.raw().decode()

    def opt_str(self) -> str | None:
        branch = self.buf[self.pos]
        self.pos += 1
        if branch == 0:
            return None
        if branch != 2:
            raise ValueError(f"bad union branch {branch}")
        return self.raw().decode()

    def present(self) -> bool:
        branch = self.buf[self.pos]
        self.pos += 1
        if branch not in (0, 2):
            raise ValueError(f"bad union branch {branch}")
        return branch == 2

    def block_count(self) -> int:
        count = self.long()
        if count < 0:  # a negative count is followed by the block's size in bytes
            self.long()
            count = -count
        return count

    def str_array(self) -> list[str]:
        items: list[str] = []
        count = self.block_count()
        while count:
            for _ in range(count):
                items.append(self.raw().decode())
            count = self.block_count()
        return items


def read(buf: bytes, pos: int) -> Envelope:
    r = _Reader(buf, pos)
    env = Envelope(
        id=r.text(),
        source=r.text(),
        type=r.text(),
        specversion=r.text(),
        time=r.long(),
        subject=r.opt_str(),
        datacontenttype=r.opt_str(),
        data=r.raw(),
        correlationid=r.text(),
        replyto=r.opt_str(),
        deadline=r.long(),
        traceparent=r.opt_str(),
        tracestate=r.opt_str(),
    )
    if r.present():
        env.principal = Principal(
            subject=r.text(),
            tenant=r.opt_str(),
            roles=r.str_array(),
            scopes=r.str_array(),
            tier=r.opt_str(),
            authmethod=r.opt_str(),
        )
    if r.present():
        http = HttpInfo(
            method=r.text(), scheme=r.text(), host=r.text(), path=r.text(), query=r.text()
        )
        headers = http.headers
        count = r.block_count()
        while count:
            for _ in range(count):
                headers.append((r.raw().decode(), r.raw().decode()))
            count = r.block_count()
        http.status = r.long()
        http.client = r.text()
        params = http.params
        count = r.block_count()
        while count:
            for _ in range(count):
                key = r.text()
                params[key] = r.text()
            count = r.block_count()
        http.apiversion = r.opt_str()
        env.http = http
    env.slip = r.str_array()
    env.attempt = r.long()
    env.idempotencykey = r.opt_str()
    return env
