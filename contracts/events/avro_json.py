"""Checks a JSON value against an Avro schema and says where it fails, as a JSON pointer.

fastavro's own validator names the failing field by its record (`ns.Record.field`),
which does not locate it in a nested payload; this walk keeps the path. Plain JSON
values are taken as fastavro writes them (a union's value is given directly).
"""

from __future__ import annotations

from typing import Any

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def escape(token: str) -> str:
    """One JSON pointer token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


class AvroJsonChecker:
    """Built once per schema (a parsed fastavro schema: dicts, lists, names)."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.names: dict[str, Any] = {}
        self._collect(schema, "")

    def _collect(self, schema: Any, namespace: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch, namespace)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                name = schema["name"]
                space = schema.get("namespace", namespace)
                full = name if "." in name or not space else f"{space}.{name}"
                self.names[full] = schema
                self.names.setdefault(name, schema)
                namespace = full.rsplit(".", 1)[0] if "." in full else ""
            for field in schema.get("fields", ()):
                self._collect(field["type"], namespace)
            for key in ("items", "values"):
                if key in schema:
                    self._collect(schema[key], namespace)
            if isinstance(kind, dict | list):
                self._collect(kind, namespace)

    def first_error(self, value: Any) -> tuple[str, str] | None:
        """(JSON pointer, message) of the first problem, or None when the value fits."""
        return self._check(self.schema, value, "")

    def _check(self, schema: Any, value: Any, at: str) -> tuple[str, str] | None:
        if isinstance(schema, str):
            if schema in self.names:
                return self._check(self.names[schema], value, at)
            return self._primitive(schema, value, at)
        if isinstance(schema, list):
            for branch in schema:
                if self._check(branch, value, at) is None:
                    return None
            names = ", ".join(_type_name(b) for b in schema)
            return at, f"{_show(value)} matches none of the union's types ({names})"
        kind = schema.get("type")
        if kind in ("record", "error"):
            if not isinstance(value, dict):
                return at, f"expected an object ({schema['name']}), got {_show(value)}"
            known = set()
            for field in schema["fields"]:
                name = field["name"]
                known.add(name)
                where = f"{at}/{escape(name)}"
                if name not in value:
                    if "default" in field:
                        continue
                    return where, f"required field {name!r} is missing"
                problem = self._check(field["type"], value[name], where)
                if problem is not None:
                    return problem
            extra = sorted(set(value) - known)
            if extra:
                return f"{at}/{escape(extra[0])}", f"unknown field {extra[0]!r}"
            return None
        if kind == "enum":
            if value not in schema["symbols"]:
                symbols = ", ".join(schema["symbols"])
                return at, f"{_show(value)} is not one of {symbols}"
            return None
        if kind == "array":
            if not isinstance(value, list):
                return at, f"expected an array, got {_show(value)}"
            for i, item in enumerate(value):
                problem = self._check(schema["items"], item, f"{at}/{i}")
                if problem is not None:
                    return problem
            return None
        if kind == "map":
            if not isinstance(value, dict):
                return at, f"expected an object (map), got {_show(value)}"
            for key, item in value.items():
                problem = self._check(schema["values"], item, f"{at}/{escape(str(key))}")
                if problem is not None:
                    return problem
            return None
        if kind == "fixed":
            if not isinstance(value, str) or len(value) != schema["size"]:
                return at, f"expected {schema['size']} bytes as a string, got {_show(value)}"
            return None
        return self._check(kind, value, at)  # {"type": "long", "logicalType": ...}

    @staticmethod
    def _primitive(kind: str, value: Any, at: str) -> tuple[str, str] | None:
        ok: bool
        if kind == "null":
            ok = value is None
        elif kind == "boolean":
            ok = isinstance(value, bool)
        elif kind in ("int", "long"):
            low, high = _INT32 if kind == "int" else _INT64
            ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        elif kind in ("float", "double"):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif kind in ("string", "bytes"):
            ok = isinstance(value, str)
        else:
            return at, f"unsupported Avro type {kind!r}"
        return None if ok else (at, f"expected {kind}, got {_show(value)}")


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        return str(schema.get("name") or schema.get("type"))
    return "union"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
