"""deploy/: the image and the rendered Kubernetes overlays agree with each other and with Settings.

Schemas and lint are checked by scripts/check_deploy.sh; these tests check what a schema cannot:
ports, addresses and the user id line up, the sidecar is native, the probes hit the health-only port.
"""

from __future__ import annotations

import functools
import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from session_store.config import Settings
from session_store.security.transport import exposure

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
OVERLAYS = DEPLOY / "k8s" / "overlays"
KUBECTL = shutil.which("kubectl")
# Expected values read from manifests, not addresses or paths this test uses.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104  # the health port's address in the manifests, never bound here
TMP = "/tmp"  # noqa: S108  # the container's one writable path (an emptyDir), not used by this test

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not found: overlays not rendered")


BACKSLASH = "\\"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = " ".join(filter(None, (pending, line.removesuffix(BACKSLASH).strip())))
        if not line.endswith(BACKSLASH):
            keyword, _, arguments = pending.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (from its FROM on)."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    """The ENV of the runtime stage (`KEY=value` pairs; values in this file need no unquoting)."""
    env: dict[str, str] = {}
    for keyword, arguments in runtime_stage():
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def image_uid() -> int:
    """The numeric user of the runtime stage."""
    users = [arguments for keyword, arguments in runtime_stage() if keyword == "USER"]
    return int(users[-1].partition(":")[0])


@functools.cache
def render(overlay: str) -> list[dict[str, Any]]:
    """The resources of one overlay, rendered by `kubectl kustomize` (once per run; read only)."""
    assert KUBECTL is not None
    out = subprocess.run(  # noqa: S603  # fixed arguments, no shell
        [KUBECTL, "kustomize", str(OVERLAYS / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single resource of `kind`."""
    found = [r for r in resources if r["kind"] == kind]
    assert 1 == len(found), f"expected one {kind}, got {len(found)}"
    return found[0]


def settings_map(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The single ConfigMap of SESSION_STORE_* settings (an overlay may add others, e.g. its callers file)."""
    found = [
        r
        for r in resources
        if r["kind"] == "ConfigMap" and any(key.startswith("SESSION_STORE_") for key in r.get("data", {}))
    ]
    assert 1 == len(found), f"expected one settings ConfigMap, got {len(found)}"
    return found[0]


def named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The item called `name` in a list of containers, ports, volumes…"""
    return next(item for item in items if item["name"] == name)


def port_of(address: str) -> int:
    """The port of a `host:port` address."""
    return int(address.rpartition(":")[2])


class TestImage:
    def test_two_stages_on_a_slim_python_base(self) -> None:
        """A builder stage and a runtime stage, both on the python 3.11 slim base."""
        instructions = dockerfile_instructions()
        args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
        stages = [a for k, a in instructions if k == "FROM"]

        assert ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"] == stages
        assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")

    def test_entrypoint_signal_user_and_no_healthcheck(self) -> None:
        """Exec-form `session-store serve`, SIGTERM, a fixed non-root UID, no Docker HEALTHCHECK."""
        stage = dict(runtime_stage())

        assert ["session-store", "serve"] == json.loads(stage["ENTRYPOINT"])
        assert "SIGTERM" == stage["STOPSIGNAL"]
        assert 10001 == image_uid()
        assert "HEALTHCHECK" not in stage

    def test_environment_is_valid_and_matches_exposed_ports(self) -> None:
        """The image's SESSION_STORE_* defaults parse, keep the API on loopback and are the EXPOSEd ports."""
        env = image_env()
        settings = Settings.from_env(env)
        exposed = {int(p) for k, a in runtime_stage() if k == "EXPOSE" for p in a.split()}

        assert ("true", "127.0.0.1:50051") == (env["SESSION_STORE_LOG_JSON"], settings.listen)
        assert settings.health_listen.startswith(f"{ALL_INTERFACES}:")
        assert {port_of(settings.listen), port_of(settings.health_listen)} == exposed
        assert settings.redis.data_dir.is_relative_to(TMP)  # the only writable path
        assert TMP == env["HOME"]


@needs_kubectl
class TestSidecarOverlay:
    def test_session_store_is_a_native_sidecar(self) -> None:
        """session-store is an init container with restartPolicy Always next to the identity server."""
        deployment = one(render("sidecar"), "Deployment")
        pod = deployment["spec"]["template"]["spec"]

        assert "identity-server" == deployment["metadata"]["name"]
        assert "Always" == named(pod["initContainers"], "session-store")["restartPolicy"]
        assert ["identity-server"] == [c["name"] for c in pod["containers"]]

    def test_api_on_loopback_probes_on_the_health_port(self) -> None:
        """The API stays on 127.0.0.1; all three probes are gRPC on the numeric health-only port."""
        resources = render("sidecar")
        settings = Settings.from_env(settings_map(resources)["data"])
        pod = one(resources, "Deployment")["spec"]["template"]["spec"]
        sidecar = named(pod["initContainers"], "session-store")

        assert "127.0.0.1" == settings.listen.rpartition(":")[0]
        assert ALL_INTERFACES == settings.health_listen.rpartition(":")[0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert port_of(settings.health_listen) == sidecar[probe]["grpc"]["port"], probe


@pytest.mark.parametrize("overlay", ["sidecar", "shared"])
@needs_kubectl
class TestBothOverlays:
    def session_store_container(self, overlay: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the session-store container, its pod spec) in the overlay's Deployment."""
        pod = one(render(overlay), "Deployment")["spec"]["template"]["spec"]
        containers = pod.get("initContainers", []) + pod["containers"]
        return named(containers, "session-store"), pod

    def test_security_context_and_resources(self, overlay: str) -> None:
        """Non-root as the image's UID, no privilege escalation or capabilities, read-only root, limits."""
        container, pod = self.session_store_container(overlay)
        context = container["securityContext"]

        expected = (True, image_uid(), False, ["ALL"], True, "RuntimeDefault")
        actual = (
            context["runAsNonRoot"],
            context["runAsUser"],
            context["allowPrivilegeEscalation"],
            context["capabilities"]["drop"],
            context["readOnlyRootFilesystem"],
            context["seccompProfile"]["type"],
        )
        assert expected == actual
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert "memory" in container["resources"]["limits"]
        tmp = named(container["volumeMounts"], "session-store-tmp")
        assert TMP == tmp["mountPath"]
        assert "emptyDir" in named(pod["volumes"], tmp["name"])

    def test_redis_urls_from_a_secret_and_settings_from_the_config_map(self, overlay: str) -> None:
        """SESSION_STORE_REDIS_URLS comes from a Secret key; the rest from the rendered ConfigMap."""
        container, _ = self.session_store_container(overlay)
        config_map = settings_map(render(overlay))

        urls = named(container["env"], "SESSION_STORE_REDIS_URLS")["valueFrom"]["secretKeyRef"]
        assert ("session-store-redis", "redis-urls") == (urls["name"], urls["key"])
        assert [{"configMapRef": {"name": config_map["metadata"]["name"]}}] == container["envFrom"]
        assert not any(key.endswith("REDIS_URLS") for key in config_map["data"])

    def test_api_listener_passes_the_exposure_rule_with_its_files_mounted(self, overlay: str) -> None:
        """The server would start: its API address is local or protected (TLS + caller authentication),
        and every TLS or callers file it names lies in a read-only volume of a Secret or a rendered
        ConfigMap."""
        resources = render(overlay)
        auth = Settings.from_env(settings_map(resources)["data"]).auth
        container, pod = self.session_store_container(overlay)
        config_maps = {r["metadata"]["name"] for r in resources if r["kind"] == "ConfigMap"}

        exposure(Settings.from_env(settings_map(resources)["data"]).listen, auth)  # raises when refused
        for path in (auth.tls_cert_file, auth.tls_key_file, auth.tls_client_ca_file, auth.callers_file):
            if path is None:
                continue
            mount = next(m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"]))
            volume = named(pod["volumes"], mount["name"])
            assert mount.get("readOnly") is True, path
            assert "secret" in volume or volume["configMap"]["name"] in config_maps, path


@needs_kubectl
class TestSharedOverlay:
    def test_two_replicas_behind_a_service_and_a_budget(self) -> None:
        """2 replicas; the ClusterIP Service reaches the API port; the PDB keeps 1 of them up."""
        resources = render("shared")
        deployment = one(resources, "Deployment")
        service = one(resources, "Service")
        budget = one(resources, "PodDisruptionBudget")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        container = named(deployment["spec"]["template"]["spec"]["containers"], "session-store")
        listen = Settings.from_env(settings_map(resources)["data"]).listen
        target = named(container["ports"], service["spec"]["ports"][0]["targetPort"])["containerPort"]

        assert 2 == deployment["spec"]["replicas"]
        assert Settings.from_env(settings_map(resources)["data"]).auth.mutual_tls  # beyond loopback: mTLS
        assert ("ClusterIP", ALL_INTERFACES, port_of(listen)) == (
            service["spec"]["type"],
            listen.rpartition(":")[0],
            target,
        )
        assert service["spec"]["selector"].items() <= labels.items()
        assert 1 == budget["spec"]["minAvailable"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
