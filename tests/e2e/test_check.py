"""`relaygate check FILE` names each problem by its YAML path and exits 2; a good
file gets a one-line summary and exit 0. `relaygate up` with a bad file says the
same and starts nothing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.support.gateway import relaygate_argv, relaygate_env
from tests.support.proctree import ProcInfo, descendants

pytestmark = pytest.mark.e2e

ROUTE_A = "{name: a, when: {path: /a}, to: {type: worker, topic: a}}"
ROUTE_B = "{name: b, when: {path: /b}, to: {type: worker, topic: b}}"

MALFORMED = [
    pytest.param(
        f"routes:\n  - {ROUTE_A}\n  - {ROUTE_B}\n"
        "  - {name: c, when: {path: /c}, to: {type: worker}}\n",
        "routes[2].to.topic: field required",
        id="missing-topic",
    ),
    pytest.param(
        "routes:\n  - {name: a, when: {path: /a}, to: {type: upstream, upstream: nope}}\n"
        "upstreams: {svc: {url: 'http://127.0.0.1:9'}}\n",
        "routes[0].to.upstream: unknown upstream 'nope'",
        id="unknown-upstream",
    ),
    pytest.param(
        "routes:\n  - {name: a, when: {path: /a}, to: {type: queue, topic: a}}\n",
        "routes[0].to: input tag 'queue'",
        id="unknown-target-type",
    ),
    pytest.param(
        "routes:\n  - {name: a, when: {path: a/b}, to: {type: worker, topic: a}}\n",
        "routes[0].when.path: must start with '/'",
        id="relative-path",
    ),
    pytest.param("rotues: []\n", "rotues: unknown key", id="misspelt-key"),
    pytest.param(
        "bus: {url: 'amqp://127.0.0.1'}\n",
        "bus.url: must start with nats://, tls://, kafka:// or memory://",
        id="bus-scheme",
    ),
    pytest.param(
        "ingress: {port: 70000}\n",
        "ingress.port: input should be less than or equal to 65535",
        id="port-range",
    ),
    pytest.param(
        f"routes:\n  - {ROUTE_A}\n  - {ROUTE_B.replace('name: b', 'name: a')}\n",
        "routes[1].name: duplicate route name 'a'",
        id="duplicate-route",
    ),
    pytest.param(
        "routes:\n  - {name: a, when: {path: '/a/{x}'}, to: {type: upstream, upstream: svc, "
        "path: '/{y}'}}\nupstreams: {svc: {url: 'http://127.0.0.1:9'}}\n",
        "routes[0].to.path: parameter {y} is not in when.path",
        id="unknown-path-parameter",
    ),
    pytest.param(
        "workers:\n  - {type: echo, replicas: 0}\n",
        "workers[0].replicas: input should be greater than or equal to 1",
        id="zero-replicas",
    ),
    pytest.param(
        "upstreams: {svc: {url: 'ftp://files'}}\n",
        "upstreams.svc.url: must be an http:// or https:// URL with a host",
        id="upstream-scheme",
    ),
    pytest.param(
        "routes:\n  - name: a\n   when: {path: /a}\n",
        "line 3, column 4: invalid YAML",
        id="yaml-syntax",
    ),
]


def _relaygate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        relaygate_argv(*args),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=relaygate_env(),
        check=False,
    )


@pytest.mark.parametrize(("text", "problem"), MALFORMED)
def test_check_rejects_a_malformed_config_naming_the_yaml_path(
    tmp_path: Path, text: str, problem: str
) -> None:
    (tmp_path / "bad.yaml").write_text(text)

    result = _relaygate("check", "bad.yaml", cwd=tmp_path)

    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"relaygate: bad.yaml: {problem}"), result.stderr
    assert result.stdout == ""


def test_check_accepts_a_valid_config_with_a_one_line_summary(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(
        "routes:\n"
        "  - {name: a, when: {path: '/a/{x}'}, to: {type: upstream, upstream: svc, path: '/{x}'}}\n"
        f"  - {ROUTE_B}\n"
        "upstreams: {svc: {url: 'http://127.0.0.1:9'}}\n"
    )

    result = _relaygate("check", "good.yaml", cwd=tmp_path)

    assert result.returncode == 0, result
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("good.yaml: ok"), lines[0]
    assert "2 route(s)" in lines[0], lines[0]
    assert "1 upstream(s)" in lines[0], lines[0]


def test_check_reports_field_and_reference_errors_together(tmp_path: Path) -> None:
    """DESIGN.md: `relaygate check FILE` reports *every* error."""
    (tmp_path / "bad.yaml").write_text(
        "ingress: {port: 70000}\n"
        "routes:\n  - {name: a, when: {path: /a}, to: {type: upstream, upstream: nope}}\n"
    )

    result = _relaygate("check", "bad.yaml", cwd=tmp_path)

    assert result.returncode == 2, result
    assert "ingress.port" in result.stderr
    assert "routes[0].to.upstream: unknown upstream 'nope'" in result.stderr, result.stderr


def test_up_with_a_bad_config_says_why_and_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "ingress: {port: -1}\n"
        "routes:\n"
        "  - {name: a, when: {path: a}, to: {type: worker}}\n"
        "workers:\n  - {type: echo}\n"
    )
    run_dir = tmp_path / "tmp"
    run_dir.mkdir()
    env = relaygate_env({"TMPDIR": str(run_dir)})
    proc = subprocess.Popen(
        relaygate_argv("up", "--config", "bad.yaml"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Watch its process tree while it runs: it must never start a child.
    children: dict[int, ProcInfo] = {}
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        children.update((child.pid, child) for child in descendants(proc.pid))
        time.sleep(0.01)
    stdout, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 2, (proc.returncode, stderr)
    assert stderr.splitlines() == [
        "relaygate: bad.yaml: ingress.port: input should be greater than or equal to 0 (line 1)",
        "relaygate: bad.yaml: routes[0].when.path: must start with '/' (line 3)",
        "relaygate: bad.yaml: routes[0].to.topic: field required (line 3)",
    ]
    assert stdout == ""
    assert not children, [c.comm for c in children.values()]
    assert list(run_dir.iterdir()) == []
