"""Typed reads of environment variables (12-factor settings).

A bad value raises ``ImproperlyConfigured`` naming the variable, so a
misconfigured process stops at start rather than failing on first use.
``load_development_env`` fills in what a developer's ``.env`` file sets
(``manage.py`` and ``platform/stack.py`` call it before the settings load).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_MISSING = object()


def env_str(name: str, default: str | object = _MISSING) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is _MISSING:
            raise ImproperlyConfigured(f"Set the environment variable {name} (see README.md and .env.example).")
        return str(default)
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a finite number.")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, default: str | object = _MISSING, *, schemes: set[str]) -> str:
    """A URL whose scheme is one of ``schemes``; anything else names the variable."""
    value = env_str(name, default)
    scheme = urlparse(value).scheme
    if scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise ImproperlyConfigured(f"{name}={value!r} has scheme {scheme!r}; expected one of: {allowed}.")
    return value


# --- The development `.env` file ---------------------------------------------
# A newcomer copies `.env.example` to `.env` once, and every command the README shows then works as written,
# without exporting anything. The format is the common subset of what docker compose and python-dotenv read, so
# one file serves all of them; parsing it here keeps the settings free of another dependency.

DEVELOPMENT_SETTINGS = "config.settings.base"


def parse_env_file(text: str, *, source: str = ".env") -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` allowed) with ``#`` comments, blank lines and optional quotes.

    Unquoted values end at a `` #`` comment and lose surrounding blanks, so the documented
    ``NAME=value   # what it is`` lines of ``.env.example`` mean ``value``; a ``#`` inside a word
    (``pass#word``) is kept. Single quotes are literal; double quotes understand ``\\"``, ``\\\\`` and
    ``\\n``. A line that is none of these stops the process naming the file and the line, like a bad
    setting does: a half-read ``.env`` would start the platform on settings nobody wrote.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, equals, rest = line.partition("=")
        key = key.strip()
        if not equals or not key.isidentifier():
            raise ImproperlyConfigured(f"{source}:{number}: expected KEY=VALUE, got {raw.strip()!r}.")
        values[key] = _parse_value(rest.strip(), where=f"{source}:{number}")
    return values


def _parse_value(rest: str, *, where: str) -> str:
    """One value: quoted (up to its closing quote) or bare (up to a comment)."""
    if rest[:1] in {"'", '"'}:
        quote, value, index = rest[0], [], 1
        while index < len(rest) and rest[index] != quote:
            char = rest[index]
            if quote == '"' and char == "\\" and index + 1 < len(rest):
                index += 1
                char = {"n": "\n"}.get(rest[index], rest[index])
            value.append(char)
            index += 1
        trailing = rest[index + 1 :].strip()
        if index >= len(rest) or (trailing and not trailing.startswith("#")):
            raise ImproperlyConfigured(f"{where}: unterminated quote or text after the closing quote.")
        return "".join(value)
    for index, char in enumerate(rest):
        if char == "#" and (index == 0 or rest[index - 1] in " \t"):
            return rest[:index].rstrip()
    return rest


def load_env_file(path: Path, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Copy ``path``'s variables into ``environ`` (``os.environ``) without overriding any already set.

    The real environment always wins, so ``DEBUG=0 ./manage.py …`` or a deployment's variables are never
    undone by a file. A missing file is no error: ``.env`` is optional. Returns the names it set.
    """
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    added = []
    for key, value in parse_env_file(text, source=str(path)).items():
        if key not in environ:
            environ[key] = value
            added.append(key)
    return added


def load_development_env(root: Path, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Read ``root/.env`` unless the environment already names settings other than the development ones.

    ``.env`` is a developer's file (``DEBUG=1``, a local database). A process started with
    ``config.settings.production`` takes its configuration from its deployment only, so a stray ``.env``
    can neither turn ``DEBUG`` on nor hand it a ``SECRET_KEY``; and one started with ``config.settings.test``
    (the suite's child processes) gets exactly the variables the test gave it, never a developer's database.
    """
    environ = os.environ if environ is None else environ
    if (environ.get("DJANGO_SETTINGS_MODULE") or DEVELOPMENT_SETTINGS) != DEVELOPMENT_SETTINGS:
        return []
    return load_env_file(root / ".env", environ)
