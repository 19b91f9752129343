"""The deployment files hold together: they parse, pin, run as non-root, and point at real things.

No Docker engine or cluster runs here, so these read deploy/Dockerfile, .dockerignore,
deploy/docker-compose.yml with its env file, and deploy/k8s/ as text and YAML.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_ENV = DEPLOY / "compose.env.example"
IMAGE_ROOT = "/app"  # WORKDIR of the image: /app/X is the repository's X

SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD")
PLACEHOLDER = re.compile(r"^(REPLACE_ME|change-me[a-z0-9-]*|<[^<>]+>)$")


def _yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def _docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


# --------------------------------------------------------------------------- Dockerfile


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def _args() -> dict[str, str]:
    defaults: dict[str, str] = {}
    for keyword, rest in _instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
    return defaults


def _base_images() -> list[str]:
    """The image of every FROM, ARGs substituted, stage names (FROM build) left out."""
    stages: set[str] = set()
    images = []
    for keyword, rest in _instructions():
        if keyword != "FROM":
            continue
        words = rest.split()
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: _args()[m.group(1)], words[0])
        if image not in stages:
            images.append(image)
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2])
    return images


def test_dockerfile_is_multi_stage_on_a_pinned_python_slim() -> None:
    froms = [rest for keyword, rest in _instructions() if keyword == "FROM"]
    assert len(froms) >= 2, "build and runtime stages"
    images = _base_images()
    assert images
    for image in images:
        assert not image.endswith(":latest") and ":" in image, f"{image}: pin a version tag"
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-bookworm)?(@sha256:[0-9a-f]{64})?", image), (
            f"{image}: expected python:3.11.<patch>-slim-bookworm"
        )


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    instructions = _instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    users = [rest for keyword, rest in instructions[last_from:] if keyword == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # Kubernetes' runAsNonRoot can only verify a numeric user.
    assert user.isdigit()
    pod_uids = {
        spec["securityContext"]["runAsUser"] for spec in (_pod_spec(d) for d in _deployments())
    }
    assert pod_uids == {int(user)}


def test_dockerfile_installs_the_lock_then_the_project_without_deps() -> None:
    runs = [rest for keyword, rest in _instructions() if keyword == "RUN"]
    lock = [i for i, r in enumerate(runs) if re.search(r"pip install .*-r requirements\.lock", r)]
    project = [i for i, r in enumerate(runs) if re.search(r"pip install --no-deps \.", r)]
    assert lock and project and lock[0] < project[0]


def test_dockerfile_entrypoint_command_ports_and_healthcheck() -> None:
    by_keyword: dict[str, list[str]] = {}
    for keyword, rest in _instructions():
        by_keyword.setdefault(keyword, []).append(rest)
    assert json.loads(by_keyword["ENTRYPOINT"][-1]) == ["journeyctl"]
    assert json.loads(by_keyword["CMD"][-1]) == ["worker"]
    exposed = {p for rest in by_keyword["EXPOSE"] for p in rest.split()}
    assert {"6066", "8080", "8070"} <= exposed
    healthcheck = by_keyword["HEALTHCHECK"][-1]
    assert "/healthz" in healthcheck and "WORKER_WEB_PORT" in healthcheck
    check = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    compile(check[-1], "HEALTHCHECK", "exec")  # the inline Python at least parses
    env = " ".join(by_keyword["ENV"])
    assert "WORKER_WEB_HOST=0.0.0.0" in env, "the worker must listen beyond the container"


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _ignored(relative: str) -> bool:
    parts = Path(relative).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in _dockerignore():
        bare = pattern.removeprefix("**/")
        for candidate in candidates:
            if fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(Path(candidate).name, bare):
                return True
    return False


def test_dockerignore_keeps_local_state_caches_and_secrets_out() -> None:
    for path in (".venv", ".kafka", ".demo", "artifacts", ".git", ".journey-data"):
        assert _ignored(path), path
    for path in (".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", "x/__pycache__"):
        assert _ignored(path), path
    assert _ignored("deploy/compose.env") and _ignored(".env")


def test_dockerfile_copies_files_that_exist_and_are_in_the_build_context() -> None:
    copies = [rest for keyword, rest in _instructions() if keyword == "COPY"]
    sources = []
    for rest in copies:
        words = [w for w in rest.split() if not w.startswith("--")]
        if "--from=" in rest:
            continue
        sources.extend(words[:-1])
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not _ignored(source), f"COPY {source}: excluded by .dockerignore"


# --------------------------------------------------------------------------- compose


def _compose() -> dict[str, Any]:
    [doc] = _docs(COMPOSE)
    assert isinstance(doc, dict)
    return doc


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=value: {line!r}"
            values[key.strip()] = value.strip()
    return values


def test_compose_has_the_local_trial_services() -> None:
    services = _services()
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert _command(services["worker"]) == ["worker"]
    assert _command(services["webhook"]) == ["webhook", "--host", "0.0.0.0"]
    assert _command(services["sandbox"]) == [
        "sandbox",
        "--host",
        "0.0.0.0",
        "--templates",
        "/app/deploy/sandbox/templates.yaml",
        "--webhook-url",
        "http://webhook:8080/webhooks/whatsapp",
    ]
    deploy_job = " ".join(_command(services["deploy-journeys"]))
    assert "journeyctl deploy" in deploy_job and "/app/examples/journeys/" in deploy_job
    assert services["deploy-journeys"]["restart"] == "no"
    worker_env = {**_env_file(COMPOSE_ENV), **services["worker"].get("environment", {})}
    assert worker_env["WORKER_WEB_HOST"] == "0.0.0.0"


def test_compose_engine_services_are_built_from_the_dockerfile() -> None:
    for name, service in _services().items():
        if name == "kafka":
            continue
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert service["read_only"] is True


def _app_paths(service: dict[str, Any]) -> Iterator[str]:
    for word in _command(service):
        for token in word.split():
            if token.startswith(IMAGE_ROOT + "/"):
                yield token


def test_compose_paths_exist_in_the_repository_and_the_image() -> None:
    copied = {
        rest.split()[-1].removeprefix("./")
        for keyword, rest in _instructions()
        if keyword == "COPY" and "--from=" not in rest
    }
    seen = 0
    for name, service in _services().items():
        for path in _app_paths(service):
            relative = path.removeprefix(IMAGE_ROOT + "/")
            matches = sorted(ROOT.glob(relative)) if "*" in relative else [ROOT / relative]
            assert matches and all(m.exists() for m in matches), f"{name}: {path} does not exist"
            top = relative.split("*")[0].rstrip("/")
            assert any(top == c or top.startswith(c + "/") for c in copied), (
                f"{name}: {path} is not copied into the image"
            )
            seen += 1
        for volume in service.get("volumes", []):
            source, _, rest = volume.partition(":")
            if source.startswith((".", "/")):
                target = rest.split(":")[0]
                assert (DEPLOY / source).exists(), f"{name}: no {source}"
                assert target.startswith(IMAGE_ROOT + "/") or target.startswith("/var/lib/")
    assert seen >= 2  # the sandbox's templates and the journeys the init job deploys


def test_compose_env_files_exist_and_hold_only_placeholder_secrets() -> None:
    for name, service in _services().items():
        for entry in service.get("env_file", []):
            path, required = (
                (entry, True) if isinstance(entry, str) else (entry["path"], entry["required"])
            )
            if required:
                assert (DEPLOY / path).exists(), f"{name}: env file {path} is missing"
        for key in service.get("environment") or {}:
            assert not SECRET_NAME.search(key), f"{name}: secret {key} in the compose file"
            if "build" in service:
                assert key in SETTINGS_ENV | {"HEALTHCHECK_URL"}, f"{name}: unknown setting {key}"
    env = _env_file(COMPOSE_ENV)
    unknown = sorted(set(env) - SETTINGS_ENV)
    assert not unknown, f"compose.env.example names unknown settings: {unknown}"
    secrets = {k: v for k, v in env.items() if SECRET_NAME.search(k)}
    assert secrets, "the secrets are listed, with placeholders"
    for key, value in secrets.items():
        assert PLACEHOLDER.match(value), f"{key} looks like a real value"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:29092"
    assert (
        "DOCKER://kafka:29092" in _services()["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert env["WHATSAPP_API_URL"] == "http://sandbox:8070"


def test_compose_dependencies_wait_for_health_that_exists() -> None:
    services = _services()
    healthcheck_in_image = any(k == "HEALTHCHECK" for k, _ in _instructions())
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            other = services[target]
            if condition == "service_healthy":
                own = other.get("healthcheck")
                assert (own and not own.get("disable")) or (
                    "build" in other and healthcheck_in_image
                )
                if "build" in other and not own:
                    url = (other.get("environment") or {}).get("HEALTHCHECK_URL")
                    ports = {p.split(":")[-1] for p in other.get("ports", [])}
                    assert url is None or url.split(":")[-1].split("/")[0] in ports, (
                        f"{target}: HEALTHCHECK_URL {url} is not its port"
                    )
            else:
                assert condition == "service_completed_successfully"
                assert other.get("restart") == "no"
    for name in ("worker", "webhook", "sandbox", "deploy-journeys"):
        assert services[name].get("depends_on"), f"{name} starts before what it needs"


# --------------------------------------------------------------------------- Kubernetes


def _kustomization() -> dict[str, Any]:
    [doc] = _docs(K8S / "kustomization.yaml")
    assert isinstance(doc, dict)
    return doc


def _k8s_objects() -> list[dict[str, Any]]:
    return [doc for name in _kustomization()["resources"] for doc in _docs(K8S / name)]


def _deployments() -> list[dict[str, Any]]:
    """The workloads: the webhook's Deployment and the worker's StatefulSet."""
    return [o for o in _k8s_objects() if o["kind"] in ("Deployment", "StatefulSet")]


def _one(kind: str) -> dict[str, Any]:
    [obj] = [o for o in _k8s_objects() if o["kind"] == kind]
    return obj


def _pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def _volumes(workload: dict[str, Any]) -> dict[str, Any]:
    """A pod's volumes by name, with a StatefulSet's volume claims among them."""
    volumes = {v["name"]: v for v in _pod_spec(workload)["volumes"]}
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = claim
    return volumes


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert _docs(path), f"{path} is empty"


def test_kustomization_lists_every_manifest_and_they_exist() -> None:
    listed = set(_kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kinds = sorted(o["kind"] for o in _k8s_objects())
    assert kinds == ["ConfigMap", "Deployment", "Secret", "Service", "Service", "StatefulSet"]
    names = {o["metadata"]["name"] for o in _deployments()}
    assert names == {"journey-worker", "journey-webhook"}
    image_names = {i["name"] for i in _kustomization()["images"]}
    for deployment in _deployments():
        for container in _pod_spec(deployment)["containers"]:
            assert container["image"].split(":")[0] in image_names


def test_every_container_has_resources_probes_and_a_locked_down_context() -> None:
    for deployment in _deployments():
        spec = _pod_spec(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True
        volumes = _volumes(deployment)
        for container in spec["containers"]:
            where = f"{deployment['metadata']['name']}/{container['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where}: {kind}"
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("livenessProbe", "readinessProbe"):
                assert probe in container, f"{where}: no {probe}"
                http = container[probe]["httpGet"]
                assert http["port"] in ports or http["port"] in ports.values(), f"{where}: {probe}"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where}: undeclared volume {mount['name']}"
            writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
            assert "/tmp" in writable, f"{where}: a read-only root needs a writable /tmp"


def test_worker_probes_readyz_and_keeps_rocksdb_on_a_claim_per_pod() -> None:
    worker = _one("StatefulSet")
    assert worker["metadata"]["name"] == "journey-worker"
    spec = _pod_spec(worker)
    [container] = spec["containers"]
    assert container["args"] == ["worker"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    config = _one("ConfigMap")["data"]
    assert config["STORE"] == "rocksdb://"
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == config["DATA_DIR"]]
    assert mount["name"] not in {v["name"] for v in spec["volumes"]}
    [claim] = [
        c for c in worker["spec"]["volumeClaimTemplates"] if c["metadata"]["name"] == mount["name"]
    ]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    services = {o["metadata"]["name"]: o for o in _k8s_objects() if o["kind"] == "Service"}
    assert services[worker["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    partitions = int(config["TOPIC_PARTITIONS"])
    assert worker["spec"]["replicas"] <= partitions, "more workers than partitions sit idle"


def test_env_references_point_at_the_configmap_and_mounted_secret_keys() -> None:
    configmap, secret = _one("ConfigMap"), _one("Secret")
    for deployment in _deployments():
        spec = _pod_spec(deployment)
        volumes = _volumes(deployment)
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] == configmap["metadata"]["name"]
            mounted: dict[str, str] = {}
            for mount in container["volumeMounts"]:
                secret_volume = volumes[mount["name"]].get("secret")
                if secret_volume:
                    assert secret_volume["secretName"] == secret["metadata"]["name"]
                    for item in secret_volume["items"]:
                        assert item["key"] in secret["stringData"]
                        mounted[f"{mount['mountPath']}/{item['path']}"] = item["key"]
            for env in container.get("env", []):
                assert env["name"].removesuffix("_FILE") in SETTINGS_ENV, env["name"]
                if env["name"].endswith("_FILE"):
                    assert env["value"] in mounted, f"{env['name']}: {env['value']} not mounted"


def test_configmap_holds_known_settings_and_no_secrets() -> None:
    data = _one("ConfigMap")["data"]
    unknown = sorted(set(data) - SETTINGS_ENV)
    assert not unknown, f"the ConfigMap names unknown settings: {unknown}"
    assert not [k for k in data if SECRET_NAME.search(k)], "secrets belong in the Secret"
    assert data["WORKER_WEB_HOST"] == "0.0.0.0" and data["WEBHOOK_HOST"] == "0.0.0.0"
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"


def test_secret_is_a_template_without_real_looking_values() -> None:
    secret = _one("Secret")
    assert "data" not in secret, "base64 `data` would hide real values from review"
    values = secret["stringData"]
    assert values
    for key, value in values.items():
        assert PLACEHOLDER.match(value), f"{key}: {value!r} looks like a real value"


@pytest.mark.parametrize(
    ("service_name", "args"), [("journey-webhook", ["webhook"]), ("journey-worker", ["worker"])]
)
def test_each_service_selects_its_pods_on_a_named_port(service_name: str, args: list[str]) -> None:
    [service] = [
        o
        for o in _k8s_objects()
        if o["kind"] == "Service" and o["metadata"]["name"] == service_name
    ]
    [workload] = [d for d in _deployments() if d["metadata"]["name"] == service_name]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    [container] = _pod_spec(workload)["containers"]
    assert container["args"] == args
    names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= names
