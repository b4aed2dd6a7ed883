"""The deployment files hold together: compose.yaml, deploy/compose/*.yaml, deploy/k8s/*.yaml,
the Dockerfile, docs/config.schema.json and the examples in the docs. Docker and kubectl do
not run on the development machines, so these checks stand in for `docker compose up` and
`kubectl apply`: every relaygate command parses, every config it names exists and loads the
way the container will load it (file plus RELAYGATE_* variables), every health dependency
resolves, and every selector finds its pods."""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import yaml

from contracts.bus.memory import MemoryBus, MemoryHub
from contracts.codec import EnvelopeCodec
from contracts.config import Config, json_schema, load_config
from contracts.envelope import REQUEST, Envelope, HttpInfo, new_id, now_ms
from contracts.topics import Topics
from deploy.cli import _parser as cli_parser  # the real argument parser of `relaygate`
from workers.sdk import load_worker

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
COMPOSE_CONFIGS = ROOT / "deploy" / "compose"
K8S = ROOT / "deploy" / "k8s"
CONFIG_PATH = "/etc/relaygate/relaygate.yaml"
# Kubernetes fills RELAYGATE_INGRESS__NODE_ID from the pod name; one of that shape.
SAMPLE_POD_NAME = "relaygate-ingress-7c9d5b8f6d-x2x7q"

Service = dict[str, Any]
Doc = dict[str, Any]


# ---------------------------------------------------------------------- helpers


@functools.cache
def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


def _services() -> dict[str, Service]:
    services: dict[str, Service] = _compose()["services"]
    return services


def _is_relaygate(service: Service) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("relaygate")


def _relaygate_services() -> list[str]:
    return [name for name, service in _services().items() if _is_relaygate(service)]


def _ingress_services() -> list[str]:
    return [
        name for name in _relaygate_services() if _command(_services()[name])[:1] == ["ingress"]
    ]


def _command(service: Service) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _environment(service: Service) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _profiles(service: Service) -> set[str]:
    return set(service.get("profiles", []))


def _depends_on(service: Service) -> dict[str, str]:
    """Dependency -> condition (the list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _healthcheck_test(service: Service) -> list[str]:
    check = service.get("healthcheck") or {}
    if check.get("disable"):
        return []
    test = check.get("test", [])
    return [test] if isinstance(test, str) else [str(part) for part in test]


def _mounted_source(service: Service, target: str) -> Path | None:
    """The host file of a bind mount `./src:target[:ro]`, resolved from the repo root."""
    for volume in service.get("volumes", []):
        parts = str(volume).split(":")
        if len(parts) >= 2 and parts[1] == target and parts[0].startswith("."):
            return (ROOT / parts[0]).resolve()
    return None


def _parse(argv: list[str]) -> argparse.Namespace:
    """`relaygate ARGV` as the CLI reads it; a typo fails with the command, not a usage line."""
    try:
        return cli_parser().parse_args(argv)
    except SystemExit:
        raise AssertionError(f"`relaygate {' '.join(argv)}` does not parse") from None


def _config_flag(argv: list[str]) -> str | None:
    return argv[argv.index("--config") + 1] if "--config" in argv else None


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No RELAYGATE_* from the machine that runs the tests: only what a container sets."""
    for key in list(os.environ):
        if key.startswith("RELAYGATE_"):
            monkeypatch.delenv(key)
    return monkeypatch


def _load_as_container(path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Config:
    with monkeypatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        return load_config(path)


def _k8s_documents() -> Iterator[tuple[str, Doc]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                yield path.name, doc


def _k8s(kind: str) -> list[Doc]:
    return [doc for _, doc in _k8s_documents() if doc["kind"] == kind]


def _k8s_one(kind: str, name: str) -> Doc:
    found = [doc for doc in _k8s(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in deploy/k8s, found {len(found)}"
    return found[0]


def _container_env(container: Doc) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = SAMPLE_POD_NAME
        else:
            raise AssertionError(f"env {item['name']}: no value this test knows how to fill")
    return env


def _configmap_file(deployment: Doc, argv: list[str], tmp_path: Path) -> Path:
    """Where the pod's --config file comes from: a ConfigMap key under a volume mount."""
    config_path = _config_flag(argv)
    assert config_path is not None, f"{deployment['metadata']['name']}: no --config"
    pod = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for container in pod["containers"]:
        for mount in container.get("volumeMounts", []):
            prefix = mount["mountPath"].rstrip("/") + "/"
            if not config_path.startswith(prefix):
                continue
            source = volumes[mount["name"]].get("configMap")
            assert source is not None, f"{config_path} is not mounted from a ConfigMap"
            configmap = _k8s_one("ConfigMap", source["name"])
            key = config_path[len(prefix) :]
            assert key in configmap["data"], f"ConfigMap {source['name']} has no key {key}"
            file = tmp_path / key
            file.write_text(configmap["data"][key], encoding="utf-8")
            return file
    raise AssertionError(f"{deployment['metadata']['name']}: nothing is mounted at {config_path}")


def _relaygate_containers() -> list[tuple[Doc, Doc]]:
    return [
        (deployment, container)
        for deployment in _k8s("Deployment")
        for container in deployment["spec"]["template"]["spec"]["containers"]
        if container["image"].split(":")[0].endswith("relaygate")
    ]


def _doc_blocks(language: str) -> list[tuple[str, str]]:
    """(file:line, text) of every ```language block in README.md and docs/*.md."""
    blocks: list[tuple[str, str]] = []
    fence = re.compile(rf"^```{language}\n(.*?)^```", re.MULTILINE | re.DOTALL)
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in fence.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{path.relative_to(ROOT)}:{line}", match[1]))
    return blocks


# ---------------------------------------------------------------------- compose


def test_compose_has_two_ingress_nodes_worker_replicas_and_the_brokers() -> None:
    services = _services()
    ingress = _ingress_services()
    assert {"ingress-1", "ingress-2"} <= set(ingress)
    for kind in ("echo", "routing"):
        replicas = [
            service.get("deploy", {}).get("replicas", 1)
            for service in services.values()
            if _is_relaygate(service)
            and _command(service)[:2] == ["worker", kind]
            and not _profiles(service)
        ]
        assert replicas, f"no {kind} worker in the default deployment"
        assert max(replicas) >= 2, f"the {kind} worker runs a single replica"

    nats = services["nats"]
    assert str(nats["image"]).startswith("nats:2.10")
    assert "-js" in _command(nats), "NATS must run with JetStream (-js)"
    assert any(":8222/healthz" in part for part in _healthcheck_test(nats))

    kafka = services["kafka"]
    env = _environment(kafka)
    assert str(kafka["image"]).startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, "KRaft mode"
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "a base64url UUID"
    assert _profiles(kafka) == {"kafka"}

    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    assert "redis-cli" in _healthcheck_test(redis)
    assert "ping" in _healthcheck_test(redis)


@pytest.mark.parametrize("name", sorted(_services()))
def test_every_service_is_health_checked_or_waits_for_healthy_ones(name: str) -> None:
    services = _services()
    service = services[name]
    deps = _depends_on(service)
    for dep, condition in deps.items():
        assert dep in services, f"{name} depends on unknown service {dep}"
        assert condition == "service_healthy", f"{name} waits for {dep} only to start"
        assert _healthcheck_test(services[dep]), f"{name} waits for {dep}, which has no check"
        # `docker compose up` without the profile must not need a profiled service.
        assert _profiles(services[dep]) <= _profiles(service) or not _profiles(services[dep])
    test = _healthcheck_test(service)
    if test:
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test {test}"
        assert len(test) > 1
    else:
        assert deps, f"{name} has no healthcheck and waits for nothing healthy"


@pytest.mark.parametrize("name", sorted(_relaygate_services()))
def test_relaygate_command_parses_and_its_config_loads_as_in_the_container(
    name: str, clean_env: pytest.MonkeyPatch
) -> None:
    services = _services()
    service = services[name]
    argv = _command(service)
    args = _parse(argv)
    config_path = _config_flag(argv)
    if args.command == "demo-upstream":
        assert config_path is None
        return
    assert config_path == CONFIG_PATH
    source = _mounted_source(service, CONFIG_PATH)
    assert source is not None, f"{name}: nothing mounted at {CONFIG_PATH}"
    assert source.parent == COMPOSE_CONFIGS.resolve(), f"{name}: {source} not in deploy/compose"
    assert source.is_file(), f"{name}: {source} does not exist"

    config = _load_as_container(source, _environment(service), clean_env)

    assert config.bus.url is not None, f"{name}: compose has no embedded bus: set bus.url"
    bus_host = urlsplit(config.bus.url.split(",")[0]).hostname
    assert bus_host in services, f"{name}: bus host {bus_host} is not a compose service"
    assert _depends_on(service).get(bus_host) == "service_healthy"
    assert _profiles(services[bus_host]) <= _profiles(service)
    if args.command == "worker" and args.kind == "routing":
        for upstream in config.upstreams.values():
            for target in upstream.instances():
                host = urlsplit(target.url).hostname
                assert host in services, f"{name}: upstream host {host} is not a compose service"
    if args.command == "ingress":
        assert config.ingress.host == "0.0.0.0"
        assert config.admin.host == "0.0.0.0"
        assert config.ingress.node_id is not None
        published = [str(port).rsplit(":", 1)[-1] for port in service.get("ports", [])]
        assert str(config.ingress.port) in published
        assert str(config.admin.port) in published
        probe = " ".join(_healthcheck_test(service))
        assert f":{config.admin.port}/readyz" in probe


def test_ingress_nodes_have_their_own_node_ids_and_host_ports(
    clean_env: pytest.MonkeyPatch,
) -> None:
    services = _services()
    ingress = _ingress_services()
    node_ids = [_environment(services[name]).get("RELAYGATE_INGRESS__NODE_ID") for name in ingress]
    assert None not in node_ids
    assert len(set(node_ids)) == len(node_ids)
    host_ports = [
        str(port).rsplit(":", 1)[0] for name in ingress for port in services[name]["ports"]
    ]
    assert len(set(host_ports)) == len(host_ports), f"host ports collide: {host_ports}"


def test_every_compose_config_is_used_and_valid(clean_env: pytest.MonkeyPatch) -> None:
    mounted = {
        _mounted_source(service, CONFIG_PATH)
        for service in _services().values()
        if _is_relaygate(service)
    }
    files = sorted(COMPOSE_CONFIGS.glob("*.yaml"))
    assert {path.name for path in files} >= {"relaygate.yaml", "relaygate-kafka.yaml"}
    for path in files:
        assert path.resolve() in mounted, f"{path.name} is mounted by no service"
        load_config(path)
    assert load_config(COMPOSE_CONFIGS / "relaygate-kafka.yaml").bus.url == "kafka://kafka:9092"


def test_nats_config_allows_the_bodies_ingress_accepts() -> None:
    nats = _services()["nats"]
    conf_flag = _command(nats)[_command(nats).index("--config") + 1]
    source = _mounted_source(nats, conf_flag)
    assert source is not None
    assert source.is_file()
    match = re.search(r"^max_payload:\s*(\d+)\s*$", source.read_text(), re.MULTILINE)
    assert match is not None, "set max_payload in bytes"
    max_body = load_config(COMPOSE_CONFIGS / "relaygate.yaml").ingress.max_body_bytes
    assert int(match[1]) > max_body, "an envelope is the body plus headers and metadata"


def test_dockerfile_installs_the_package_and_runs_relaygate_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert stages
    assert all(image.startswith("python:3.11-slim") for image in stages)
    assert re.search(r"pip install\b.*\s\.$", dockerfile, re.MULTILINE), "pip install ."
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["relaygate"\]$', dockerfile, re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".venv" in ignored  # or the build context carries the whole virtualenv


# ---------------------------------------------------------------------- kubernetes


def test_every_k8s_document_parses_and_names_itself() -> None:
    docs = list(_k8s_documents())
    assert docs, "deploy/k8s has no manifests"
    for file, doc in docs:
        assert isinstance(doc.get("apiVersion"), str), f"{file}: no apiVersion"
        assert isinstance(doc.get("kind"), str), f"{file}: no kind"
        assert doc.get("metadata", {}).get("name"), f"{file}: {doc['kind']} has no name"
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "relaygate", f"{file}: {doc['kind']}"
    assert [doc["metadata"]["name"] for doc in _k8s("Namespace")] == ["relaygate"]
    # `kubectl apply -f deploy/k8s/` goes in file-name order: the namespace comes first.
    assert sorted(K8S.glob("*.yaml"))[0].name == "00-namespace.yaml"


def test_k8s_configmap_config_is_valid_for_every_relaygate_container(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    containers = _relaygate_containers()
    assert containers
    for deployment, container in containers:
        argv = [str(arg) for arg in container["args"]]
        args = _parse(argv)
        if args.command == "demo-upstream":
            continue
        source = _configmap_file(deployment, argv, tmp_path)
        config = _load_as_container(source, _container_env(container), clean_env)
        assert config.bus.url is not None
        bus_host = urlsplit(config.bus.url).hostname
        assert bus_host in {doc["metadata"]["name"] for doc in _k8s("Service")}


def test_k8s_ingress_runs_two_probed_replicas_with_a_disruption_budget(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    deployment = _k8s_one("Deployment", "relaygate-ingress")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    argv = [str(arg) for arg in container["args"]]
    assert _parse(argv).command == "ingress"
    config = _load_as_container(
        _configmap_file(deployment, argv, tmp_path), _container_env(container), clean_env
    )
    assert config.ingress.host == "0.0.0.0"
    assert config.admin.host == "0.0.0.0"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": config.ingress.port, "admin": config.admin.port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budgets = [
        pdb
        for pdb in _k8s("PodDisruptionBudget")
        if pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(budgets) == 1
    assert 1 <= budgets[0]["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_k8s_workers_run_replicas_of_echo_and_routing() -> None:
    kinds: dict[str, int] = {}
    for deployment, container in _relaygate_containers():
        argv = [str(arg) for arg in container["args"]]
        args = _parse(argv)
        if args.command == "worker":
            kinds[args.kind] = deployment["spec"]["replicas"]
    assert kinds.get("echo", 0) >= 2
    assert kinds.get("routing", 0) >= 2


def test_k8s_selectors_find_their_pods_and_named_ports() -> None:
    pods = []
    for deployment in _k8s("Deployment"):
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        match_labels = deployment["spec"]["selector"]["matchLabels"]
        assert match_labels.items() <= template_labels.items(), deployment["metadata"]["name"]
        pods.append(deployment["spec"]["template"])
    for service in _k8s("Service"):
        name = service["metadata"]["name"]
        if service["spec"].get("type") == "ExternalName":
            assert service["spec"]["externalName"].endswith(".svc.cluster.local")
            continue
        selector = service["spec"]["selector"]
        selected = [pod for pod in pods if selector.items() <= pod["metadata"]["labels"].items()]
        assert selected, f"Service {name} selects no pod"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for pod in selected:
                offered = {
                    p.get("name") if isinstance(target, str) else p["containerPort"]
                    for c in pod["spec"]["containers"]
                    for p in c.get("ports", [])
                }
                assert target in offered, f"Service {name}: no container port {target}"


# ---------------------------------------------------------------------- docs


def test_config_schema_in_docs_is_current() -> None:
    stored = json.loads((ROOT / "docs" / "config.schema.json").read_text(encoding="utf-8"))
    assert stored == json_schema(), "regenerate it: make schema"


@pytest.mark.parametrize(
    ("where", "text"), _doc_blocks("yaml"), ids=[where for where, _ in _doc_blocks("yaml")]
)
def test_config_examples_in_the_docs_are_valid(
    where: str, text: str, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Every ```yaml block in README.md and docs/*.md is a relaygate config."""
    path = tmp_path / "example.yaml"
    path.write_text(text, encoding="utf-8")
    load_config(path)


async def test_readme_worker_example_answers_over_the_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's `myteam/orders.py`, loaded the way `relaygate worker module` loads it."""
    examples = [text for _, text in _doc_blocks("python") if "Worker(" in text]
    assert len(examples) == 1, "README.md should show one worker module"
    package = tmp_path / "myteam"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "orders.py").write_text(examples[0], encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("myteam", "myteam.orders"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    worker = load_worker("myteam.orders:worker")

    bus = MemoryBus(topics=Topics(), node_id="readme", hub=MemoryHub())
    await bus.connect()
    codec = EnvelopeCodec()
    subscription = await worker.serve(bus)

    async def call(method: str, params: dict[str, str], body: bytes = b"") -> Envelope:
        cid = new_id()
        request = Envelope(
            id=new_id(),
            source="test",
            type=REQUEST,
            time=now_ms(),
            subject="orders",
            data=body,
            correlationid=cid,
            replyto=bus.reply_address(cid),
            deadline=now_ms() + 5_000,
            http=HttpInfo(method=method, path="/orders", params=params),
        )
        message = await bus.request(
            bus.topics.request(worker.topic), codec.encode(request), correlation_id=cid, timeout=5
        )
        return codec.decode(message.data)

    try:
        found = await call("GET", {"id": "42"})
        assert found.http is not None
        assert found.http.status == 200
        assert orjson.loads(found.data)["id"] == "42"
        created = await call("POST", {}, b'{"item": "book", "qty": 2}')
        assert created.http is not None
        assert created.http.status == 201
        assert orjson.loads(created.data)["qty"] == 2
        refused = await call("POST", {}, b'{"item": "book"}')
        assert refused.http is not None
        assert refused.http.status == 400
        assert ("content-type", "application/problem+json") in refused.http.headers
    finally:
        await subscription.stop()
        await bus.close()
