"""The live stack the SDK and CLI tests drive: the API under gunicorn, a Celery worker and the serving process,
each a real process on the test database; and the ``mlp`` command run as a subprocess with a key in its
environment (never on its command line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.workers import celery_worker, gunicorn_server, serving_process

MLP = str(Path(sys.executable).with_name("mlp"))


@dataclass(frozen=True)
class Stack:
    api_url: str
    serving_url: str


@contextmanager
def api_server(*, ready_timeout: float = 60):
    """gunicorn with the deployment's config (one worker, threads) on a free port; yields its base URL."""
    with gunicorn_server(workers=1, threads=4, ready_timeout=ready_timeout) as (base, _):
        yield base


@contextmanager
def live_stack():
    """API, worker (every queue) and serving, started together and stopped by process id."""
    with ExitStack() as stack:
        api = stack.enter_context(api_server())
        stack.enter_context(celery_worker("gpu,cpu,default"))
        serving = stack.enter_context(serving_process(SERVING_ROUTE_TTL_SECONDS="1"))
        yield Stack(api_url=api, serving_url=serving)


def cli_env(stack: Stack, key: str, home: Path, **extra: str) -> dict[str, str]:
    """A clean environment for ``mlp``: its own home (config and upload state), the key in MLP_API_KEY."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
        "COLUMNS": "200",
        "MLP_API_URL": stack.api_url,
        "MLP_SERVING_URL": stack.serving_url,
        "MLP_API_KEY": key,
    } | extra


def mlp(*args: str | Path, env: dict[str, str], expect: int = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``mlp args`` and check its exit code; the key must never appear in what it prints."""
    done = subprocess.run([MLP, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == expect, (
        f"mlp {' '.join(map(str, args))} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    key = env.get("MLP_API_KEY")
    if key:
        assert key not in done.stdout and key not in done.stderr, "the key was printed"
    return done


def mlp_json(*args: str | Path, env: dict[str, str], expect: int = 0, timeout: float = 300):
    return json.loads(mlp(*args, env=env, expect=expect, timeout=timeout).stdout)
