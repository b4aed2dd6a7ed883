"""The upstream block of the config: `url` shorthand or `targets`, and resilience options."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.config import ConfigError, HttpUpstream, load_config


def test_url_is_shorthand_for_one_primary_target() -> None:
    upstream = HttpUpstream(url="http://orders:8000/")
    assert [(i.url, i.group) for i in upstream.instances()] == [("http://orders:8000", 0)]
    assert upstream.balance == "round_robin"
    assert upstream.health is None
    assert (upstream.breaker.min_calls, upstream.retries.attempts) == (20, 2)


def test_targets_keep_their_groups() -> None:
    upstream = HttpUpstream.model_validate(
        {"targets": [{"url": "http://a:1"}, {"url": "http://b:1", "group": 1}]}
    )
    assert [(i.url, i.group) for i in upstream.instances()] == [
        ("http://a:1", 0),
        ("http://b:1", 1),
    ]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"url": "http://a:1", "targets": [{"url": "http://b:1"}]},
        {"targets": []},
        {"targets": [{"url": "http://a:1"}, {"url": "http://a:1/"}]},
    ],
)
def test_url_xor_targets_is_enforced(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"url|targets|at least 1"):
        HttpUpstream.model_validate(data)


def test_resilience_errors_name_their_yaml_path(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "upstreams:\n"
        "  shop:\n"
        "    targets:\n"
        "      - url: ftp://a\n"
        "    balance: random\n"
        "    breaker: {failure_rate: 2}\n"
        "    health: {path: healthz}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = "\n".join(caught.value.problems)
    for where in (
        "upstreams.shop.targets[0].url",
        "upstreams.shop.balance",
        "upstreams.shop.breaker.failure_rate",
        "upstreams.shop.health.path",
    ):
        assert where in problems
