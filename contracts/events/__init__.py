"""The event-type schema registry: each accepted event type with the schema of its data,
JSON Schema (`.json`, any draft the file's `$schema` names, 2020-12 by default) or Avro
(`.avsc`). Built once per config; a check says where the data fails, as a JSON pointer
into the event's data and a message.

Schema files named by a relative path are looked up in the working directory, then
among the schemas shipped in contracts/schemas/events/.
"""

from __future__ import annotations

import abc
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from contracts.config import EventsConfig, EventType
from contracts.events.avro_json import AvroJsonChecker, escape
from contracts.events.quick_accept import compile_accept

AVRO_CONTENT_TYPES = frozenset({"application/avro", "avro/binary", "application/vnd.apache.avro"})


@dataclass(slots=True, frozen=True)
class SchemaError:
    """Where the data fails (a JSON pointer into it; "" is the whole data) and why."""

    pointer: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message}


class EventSchema(abc.ABC):
    kind: str

    @abc.abstractmethod
    def check(self, value: Any) -> list[SchemaError]:
        """Problems of a JSON value; empty when it fits."""

    def check_binary(self, data: bytes) -> list[SchemaError]:
        """Problems of a binary payload (Avro types only take one)."""
        return [SchemaError("", f"a {self.kind} event type takes JSON data")]


class JsonSchemaType(EventSchema):
    kind = "JSON Schema"

    def __init__(self, schema: dict[str, Any]) -> None:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        self.validator = cls(schema)
        self.quick = compile_accept(schema)

    def check(self, value: Any) -> list[SchemaError]:
        if self.quick is not None and self.quick(value):
            return []
        errors = sorted(
            self.validator.iter_errors(value), key=lambda e: (len(e.absolute_path), str(e))
        )
        return [
            SchemaError("".join(f"/{escape(str(p))}" for p in e.absolute_path), e.message)
            for e in errors[:20]
        ]


class AvroType(EventSchema):
    kind = "Avro"

    def __init__(self, schema: Any) -> None:
        self.parsed = fastavro.parse_schema(schema)
        self.checker = AvroJsonChecker(self.parsed)

    def check(self, value: Any) -> list[SchemaError]:
        problem = self.checker.first_error(value)
        return [] if problem is None else [SchemaError(*problem)]

    def check_binary(self, data: bytes) -> list[SchemaError]:
        """Avro binary (no header: the type's schema is the writer's)."""
        buffer = io.BytesIO(data)
        try:
            fastavro.schemaless_reader(buffer, self.parsed, None)
        except Exception as exc:  # fastavro raises what the bytes provoke (EOF, index, …)
            return [SchemaError("", f"not Avro binary of this type: {exc!r}")]
        if buffer.tell() != len(data):
            return [SchemaError("", f"{len(data) - buffer.tell()} bytes left after the record")]
        return []


class RegistryError(Exception):
    """Schemas that cannot be used; `problems` are `path: message` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class EventRegistry:
    def __init__(self, types: dict[str, EventSchema]) -> None:
        self.types = types

    def get(self, name: str) -> EventSchema | None:
        return self.types.get(name)

    @classmethod
    def load(cls, options: EventsConfig) -> EventRegistry:
        """Read and compile every type's schema; RegistryError lists every problem."""
        types: dict[str, EventSchema] = {}
        problems: list[str] = []
        for name, spec in options.types.items():
            try:
                types[name] = _load_type(spec)
            except _Unusable as exc:
                problems.append(f"events.types.{name}.{exc.key}: {exc}")
        if problems:
            raise RegistryError(problems)
        return cls(types)


class _Unusable(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _load_type(spec: EventType) -> EventSchema:
    if spec.json_schema is not None:
        try:
            return JsonSchemaType(spec.json_schema)
        except jsonschema.exceptions.SchemaError as exc:
            raise _Unusable("json_schema", f"not a valid JSON Schema: {exc.message}") from None
    assert spec.schema_file is not None
    path = find_schema(spec.schema_file)
    if path is None:
        raise _Unusable(
            "schema_file",
            f"{spec.schema_file} not found (in the working directory, nor among the "
            "schemas in contracts/schemas/events/)",
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _Unusable("schema_file", f"cannot read {path}: {exc}") from None
    try:
        if path.suffix == ".avsc":
            return AvroType(document)
        return JsonSchemaType(document)
    except jsonschema.exceptions.SchemaError as exc:
        raise _Unusable("schema_file", f"{path}: not a valid JSON Schema: {exc.message}") from None
    except Exception as exc:  # fastavro's SchemaParseException and friends
        raise _Unusable("schema_file", f"{path}: not a valid Avro schema: {exc}") from None


def find_schema(name: Path) -> Path | None:
    if name.is_file():
        return name
    if name.is_absolute():
        return None
    shipped = resources.files("contracts").joinpath("schemas", "events", str(name))
    if shipped.is_file():
        return Path(str(shipped))
    return None
