"""Where the API address and key come from: arguments, then environment variables, then a config file's profile.

Environment: ``MLP_API_URL``, ``MLP_API_KEY``, ``MLP_SERVING_URL``, ``MLP_TENANT``, ``MLP_PROFILE`` and
``MLP_CONFIG`` (the file's path). The file, ``$XDG_CONFIG_HOME/mlplatform/config.toml`` (by default
``~/.config/mlplatform/config.toml``), holds named profiles::

    default_profile = "staging"

    [profiles.staging]
    api_url = "https://ml.example.com"
    serving_url = "https://predict.ml.example.com"
    api_key = "mlp_..."
    tenant = "acme-retail"      # optional: only for keys or sessions in several tenants

Environment variables win over the file, so CI can override one value of a profile. The key is never part of
``repr`` or of anything the SDK prints (:func:`mask`).
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlplatform_client.errors import ConfigurationError

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_SERVING_URL = "http://127.0.0.1:8001"
KEYS = ("api_url", "api_key", "serving_url", "tenant")
ENV = {"api_url": "MLP_API_URL", "api_key": "MLP_API_KEY", "serving_url": "MLP_SERVING_URL", "tenant": "MLP_TENANT"}


@dataclass(frozen=True)
class Settings:
    api_url: str
    api_key: str | None = field(default=None, repr=False)
    serving_url: str = DEFAULT_SERVING_URL
    tenant: str | None = None
    profile: str | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)  # which place gave each value


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("MLP_CONFIG"):
        return Path(env["MLP_CONFIG"]).expanduser()
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "mlplatform" / "config.toml"


def read_config(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from None


def config_is_private(path: Path) -> bool:
    """Whether only its owner can read the file (it holds keys); the CLI warns otherwise."""
    try:
        return not path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    except OSError:
        return True


def load_settings(
    *,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
    **given: str | None,
) -> Settings:
    """Resolve each setting: ``given`` (not None) > environment > the profile in the config file > default."""
    env = os.environ if env is None else env
    path = path or config_path(env)
    document = read_config(path)
    profiles = document.get("profiles", {})
    name = profile or env.get("MLP_PROFILE") or document.get("default_profile") or "default"
    explicit = bool(profile or env.get("MLP_PROFILE"))
    if explicit and name not in profiles:
        raise ConfigurationError(f"no profile {name!r} in {path}")
    from_file = profiles.get(name, {})
    values: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        for source, value in (
            ("argument", given.get(key)),
            (f"${ENV[key]}", env.get(ENV[key])),
            (f"{path} [profiles.{name}]", from_file.get(key)),
        ):
            if value:
                values[key], sources[key] = str(value), source
                break
    return Settings(
        api_url=(values.get("api_url") or DEFAULT_API_URL).rstrip("/"),
        api_key=values.get("api_key"),
        serving_url=(values.get("serving_url") or DEFAULT_SERVING_URL).rstrip("/"),
        tenant=values.get("tenant"),
        profile=name if from_file else None,
        sources=sources,
    )


def write_profile(path: Path, name: str, values: Mapping[str, str]) -> None:
    """Add or replace one profile in the file (created owner-only: it holds a key)."""
    document = read_config(path)
    profiles = dict(document.get("profiles", {}))
    profiles[name] = {k: v for k, v in values.items() if v}
    lines = []
    if document.get("default_profile"):
        lines.append(f"default_profile = {_toml_string(document['default_profile'])}")
    for profile, settings in profiles.items():
        lines += ["", f"[profiles.{_toml_key(profile)}]"]
        lines += [f"{key} = {_toml_string(str(value))}" for key, value in settings.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write("\n".join(lines).lstrip("\n") + "\n")
    os.chmod(path, 0o600)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(value: str) -> str:
    return value if value.replace("-", "").replace("_", "").isalnum() else _toml_string(value)


def mask(key: str | None) -> str:
    """A key as it may be shown: its public prefix only."""
    if not key:
        return "(none)"
    return key[:8] + "…" if len(key) > 12 else "…"
