"""Config loading: every error names its YAML path; env overrides; redaction; schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.config import Config, ConfigError, UpstreamTarget, json_schema, load_config

VALID = """
bus: {url: "nats://user:secret@127.0.0.1:4222"}
ingress: {port: 9000}
routes:
  - name: orders
    when: {path: "/orders/{id}", methods: [get, POST]}
    to: {type: upstream, upstream: orders, path: "/v2/orders/{id}"}
  - name: echo
    when: {path: "/echo/{rest:path}"}
    to: {type: worker, topic: echo}
upstreams:
  orders: {url: "http://orders.internal:8000/"}
"""


def _load(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "relaygate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_valid_config_loads_with_defaults_filled(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID)
    config = load_config(path)
    assert config.ingress.port == 9000
    assert config.admin.port == 8081
    assert config.routes[0].when.methods == ["GET", "POST"]
    assert isinstance(config.routes[0].to, UpstreamTarget)
    assert config.upstreams["orders"].url == "http://orders.internal:8000"
    assert [w.type for w in config.effective_workers()] == ["routing"]


MALFORMED = [
    (
        "routes:\n  - name: a\n    when: {path: /a}\n    to: {type: worker}\n",
        "routes[0].to.topic: field required (line 4)",
    ),
    (
        "routes:\n  - name: a\n    when: {path: a}\n    to: {type: worker, topic: t}\n",
        "routes[0].when.path: must start with '/' (line 3)",
    ),
    (
        "routes:\n  - name: a\n    when: {path: /a}\n    to: {type: carrier-pigeon}\n",
        "routes[0].to: input tag 'carrier-pigeon' found using 'type'",
    ),
    (
        "routes:\n  - name: a\n    when: {path: /a}\n    to: {type: upstream, upstream: nope}\n",
        "routes[0].to.upstream: unknown upstream 'nope' (upstreams: none defined) (line 4)",
    ),
    ("ingress: {port: 70000}\n", "ingress.port: input should be less than or equal to 65535"),
    ("bus: {url: amqp://x}\n", "bus.url: must start with nats://, tls://, kafka:// or memory://"),
    ("ingres: {port: 1}\n", "ingres: unknown key (check the spelling) (line 1)"),
    ("upstreams:\n  u: {url: ftp://x}\n", "upstreams.u.url: must be an http:// or https:// URL"),
    (
        "routes:\n  - name: a\n    when: {path: /a}\n    to: {type: worker, topic: t}\n"
        "  - name: a\n    when: {path: /b}\n    to: {type: worker, topic: t}\n",
        "routes[1].name: duplicate route name 'a' (line 5)",
    ),
    (
        "routes:\n  - name: a\n    when: {path: '/a/{x'}\n    to: {type: worker, topic: t}\n",
        "routes[0].when.path: bad parameter",
    ),
    (
        "routes:\n  - name: a\n    when: {path: /a, methods: []}\n"
        "    to: {type: worker, topic: t}\n",
        "routes[0].when.methods: list at least one method",
    ),
    (
        "routes:\n  - name: a\n    when: {path: /a}\n    to: {type: worker, topic: 'a b'}\n",
        "routes[0].to.topic: string should match pattern",
    ),
    (
        "workers:\n  - {type: echo, replicas: 0}\n",
        "workers[0].replicas: input should be greater than or equal to 1",
    ),
    ("routes: {name: a}\n", "routes: input should be a valid list"),
    (
        "routes:\n  - name: a\n    when: {path: '/a/{id}'}\n"
        "    to: {type: upstream, upstream: u, path: '/b/{other}'}\nupstreams: {u: {url: 'http://u'}}\n",
        "routes[0].to.path: parameter {other} is not in when.path",
    ),
]


@pytest.mark.parametrize(("text", "expected"), MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_malformed_config_is_rejected_with_its_yaml_path(
    tmp_path: Path, text: str, expected: str
) -> None:
    problems = _load(tmp_path, text)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    problems = _load(tmp_path, "ingress: {port: -1}\nadmin: {port: 99999}\nbus: {prefix: 'a b'}\n")
    assert [p.split(":")[0] for p in problems] == ["bus.prefix", "ingress.port", "admin.port"]


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    problems = _load(tmp_path, "routes:\n  - name: [unclosed\n")
    assert problems[0].startswith("line 3, column 1: invalid YAML")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert _load(tmp_path, "- a\n- b\n") == [
        "(top level): must be a mapping with bus, ingress, routes, …"
    ]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID)
    monkeypatch.setenv("RELAYGATE_INGRESS__PORT", "9100")
    monkeypatch.setenv("RELAYGATE_BUS__URL", "kafka://127.0.0.1:9092")
    config = load_config(path)
    assert config.ingress.port == 9100
    assert config.bus.url == "kafka://127.0.0.1:9092"
    assert config.routes[0].name == "orders"  # the rest of the file still applies


def test_bad_environment_override_names_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAYGATE_INGRESS__PORT", "eighty")
    problems = _load(tmp_path, VALID)
    assert problems[0].startswith("ingress.port: input should be a valid integer")


def test_redacted_config_hides_credentials(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID)
    redacted = load_config(path).redacted()
    assert redacted["bus"]["url"] == "nats://***:***@127.0.0.1:4222"
    assert "secret" not in json.dumps(redacted)


def test_json_schema_is_exported_for_editors() -> None:
    schema = json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert {"bus", "ingress", "admin", "routes", "upstreams", "workers"} <= set(
        schema["properties"]
    )
    json.dumps(schema)  # serialisable as-is


def test_redacted_config_hides_credentials_in_every_url() -> None:
    config = Config(
        state={"url": "redis://:pw1@127.0.0.1:6379/0"},
        upstreams={"u": {"targets": [{"url": "http://user:pw2@10.0.0.1:80"}]}},
    )
    text = json.dumps(config.redacted())
    assert "pw1" not in text
    assert "pw2" not in text
