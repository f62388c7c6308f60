"""docker-compose.yml and platform/Dockerfile read the way Docker reads them, for running services as processes.

No Docker daemon here: ``tests/deploy/test_compose_stack.py`` takes each application service's command,
environment and health check from the compose file (anchors and ``<<`` merges resolved by YAML itself,
``${VAR:-default}`` / ``${VAR:?message}`` interpolated from the operator's variables exactly as compose does,
failing on a missing required one), and the image's ENV, WORKDIR and ENTRYPOINT from its Dockerfile stage.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = ROOT / "compose.env.example"
DOCKERFILE = ROOT / "platform" / "Dockerfile"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}, ${NAME:+alternative}, $NAME, $$
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>[^}]*))?\})"
)


class ComposeError(RuntimeError):
    """What ``docker compose`` would refuse (a required variable missing, a form it does not know)."""


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """Compose's interpolation over every string of ``value`` (nested lists and mappings included)."""
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name = match["bare"] or match["name"]
        op, arg = match["op"], match["arg"] or ""
        current = variables.get(name)
        unset_or_empty = not current
        if op == ":-":
            return arg if unset_or_empty else current
        if op == "-":
            return arg if current is None else current
        if op in {":?", "?"}:
            if current is None or (op == ":?" and unset_or_empty):
                raise ComposeError(f"required variable {name} is missing a value: {arg}")
            return current
        if op == ":+":
            return "" if unset_or_empty else arg
        if op == "+":
            return "" if current is None else arg
        return current or ""

    return _VARIABLE.sub(replace, value)


def referenced_variables(text: str) -> set[str]:
    """Every variable the compose file's text interpolates."""
    return {m["bare"] or m["name"] for m in _VARIABLE.finditer(text) if not m["escaped"]}


def read_env_file(path: Path) -> dict[str, str]:
    """A compose ``.env`` file: ``NAME=value`` lines; comments, blank lines and commented-out settings skipped."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, _, value = stripped.partition("=")
        found[name.strip()] = re.split(r"\s+#", value, maxsplit=1)[0].strip()
    return found


def documented_variables(path: Path) -> set[str]:
    """Names the example documents, set or commented out (``# NAME=default``)."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", path.read_text(), flags=re.MULTILINE))


def load_compose(variables: dict[str, str]) -> dict[str, Any]:
    """The compose file with anchors and merges resolved and every variable interpolated."""
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), variables)


@dataclass
class ImageStage:
    """What a Dockerfile target gives a container: environment, working directory, entry point, user."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str = "root"
    run: list[str] = field(default_factory=list)


def dockerfile_stage(target: str, path: Path = DOCKERFILE) -> ImageStage:
    """The instructions that apply to ``target``: its own and those of the stages it is built ``FROM``."""
    stages: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] | None = None
    text = re.sub(r"\\\n", " ", path.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), flags=re.IGNORECASE)
            if not match or not match[2]:
                raise ComposeError(f"{path}: every stage needs a name: {line}")
            current = []
            stages[match[2]] = (match[1], current)
        elif current is not None:
            current.append((instruction, rest.strip()))
    if target not in stages:
        raise ComposeError(f"{path} has no stage {target!r} (stages: {sorted(stages)})")
    chain: list[list[tuple[str, str]]] = []
    name: str | None = target
    while name in stages:
        parent, instructions = stages[name]
        chain.insert(0, instructions)
        name = parent
    stage = ImageStage()
    for instructions in chain:
        for instruction, rest in instructions:
            if instruction == "ENV":
                for pair in shlex.split(rest):
                    key, _, value = pair.partition("=")
                    stage.env[key] = value
            elif instruction == "WORKDIR":
                stage.workdir = rest
            elif instruction == "ENTRYPOINT":
                stage.entrypoint = json.loads(rest)
            elif instruction == "CMD":
                stage.cmd = json.loads(rest)
            elif instruction == "USER":
                stage.user = rest
            elif instruction == "RUN":
                stage.run.append(rest)
    return stage


def duration_seconds(raw: str | None, default: float) -> float:
    """Compose durations: ``10s``, ``1m30s``, ``500ms``."""
    if not raw:
        return default
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", raw)
    if not parts or "".join(a + b for a, b in parts) != raw:
        raise ComposeError(f"not a compose duration: {raw!r}")
    return sum(float(amount) * units[unit] for amount, unit in parts)


def healthcheck_argv(test: list[str] | str | None) -> list[str] | None:
    """The process a health check runs: ``CMD`` as is, ``CMD-SHELL`` (or a string) through ``/bin/sh -c``."""
    if not test:
        return None
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *rest = test
    if kind == "NONE":
        return None
    if kind == "CMD":
        return rest
    if kind == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(rest)]
    raise ComposeError(f"unknown health check form {kind!r}")


def startup_order(services: dict[str, dict[str, Any]]) -> list[str]:
    """Services in ``depends_on`` order (a dependency before its dependants); a cycle is an error."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ComposeError(f"depends_on cycle through {name}")
        visiting.add(name)
        for dependency in services[name].get("depends_on") or {}:
            if dependency not in services:
                raise ComposeError(f"{name} depends on {dependency}, which is not a service")
            visit(dependency)
        visiting.discard(name)
        order.append(name)

    for name in services:
        visit(name)
    return order


# --- what each image has installed ------------------------------------------------------------------------------

REQUIREMENTS = {"api": ROOT / "requirements" / "api.txt", "ml": ROOT / "requirements" / "ml.txt"}
BASE_IMAGE_PACKAGES = {"pip", "setuptools", "wheel"}  # what python:3.11-slim brings


def pinned_requirements(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file and of the files it includes with ``-r`` (canonical names)."""
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            found |= pinned_requirements(path.parent / line[3:].strip())
            continue
        if "==" not in line:
            raise ComposeError(f"{path.name}: {line!r} is not pinned with ==")
        name, version = line.split("==", 1)
        found[canonicalize_name(name)] = version.strip()
    return found


def modules_missing_from_image(target: str) -> set[str]:
    """Top-level modules installed here (the development venv) that the ``target`` image does not install."""
    from importlib.metadata import distributions

    from packaging.utils import canonicalize_name

    installed_in_image = set(pinned_requirements(REQUIREMENTS[target])) | BASE_IMAGE_PACKAGES
    missing: set[str] = set()
    for dist in distributions():
        if canonicalize_name(dist.metadata["Name"]) in installed_in_image:
            continue
        for file in dist.files or []:
            top = file.parts[0]
            if top.endswith((".dist-info", ".data", ".libs", ".pth")) or top in {"..", "__pycache__", "bin"}:
                continue
            if len(file.parts) == 1 and not top.endswith((".py", ".so")):
                continue
            missing.add(top.split(".")[0])
    # A wheel's stray top-level folders (tf2onnx ships tests/, tools/) are not what `import tests` finds here.
    return {name for name in missing if not (ROOT / name).exists() and name.isidentifier()}


IMPORT_BLOCKER = '''"""The {target} image's Python: what it does not install cannot be imported."""
import sys

MISSING = {missing!r}


class NotInThisImage:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed in the {target} image)", name=name)
        return None


sys.meta_path.insert(0, NotInThisImage())
'''


def image_site_folder(target: str, folder: Path) -> Path:
    """A folder for ``PYTHONPATH`` whose ``sitecustomize`` makes this Python look like the image's."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = sorted(modules_missing_from_image(target))
    (folder / "sitecustomize.py").write_text(IMPORT_BLOCKER.format(target=target, missing=missing))
    return folder
