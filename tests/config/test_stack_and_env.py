"""A newcomer's first hour: the development ``.env`` loader, and ``make up`` stopping everything it started.

The stack tests start the real launcher (``platform/stack.py up``) with its own var dir, S3 port block and
API/serving ports, signal it by its process id at chosen moments of start-up and after, and then look for
any process that carries that var dir in its environment or command line: one left behind (SeaweedFS
above all, which runs in a session of its own) is a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import load_development_env, load_env_file, parse_env_file

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "platform" / "stack.py"
S3_BLOCK = 15  # ports `weed mini` takes from its S3 port upward (core.s3server.weed_ports)


# --- the .env loader -----------------------------------------------------------------------------------------


def test_parses_assignments_comments_and_quotes():
    text = "\n".join(
        [
            "# a comment line",
            "",
            "PLAIN=value",
            "SPACED = padded value   ",
            "INLINE=1            # what it means",
            "HASH_IN_WORD=pass#word",
            "EMPTY=",
            "EMPTY_WITH_COMMENT=   # nothing",
            "SINGLE='a # literal \\n'",
            'DOUBLE="line\\nnext \\"quoted\\" # kept"  # comment',
            "export EXPORTED=yes",
            "URL=postgres://user:p%40ss@127.0.0.1:5432/db",
        ]
    )
    assert parse_env_file(text) == {
        "PLAIN": "value",
        "SPACED": "padded value",
        "INLINE": "1",
        "HASH_IN_WORD": "pass#word",
        "EMPTY": "",
        "EMPTY_WITH_COMMENT": "",
        "SINGLE": "a # literal \\n",
        "DOUBLE": 'line\nnext "quoted" # kept',
        "EXPORTED": "yes",
        "URL": "postgres://user:p%40ss@127.0.0.1:5432/db",
    }


@pytest.mark.parametrize("line", ["NO_EQUALS_SIGN", "1BAD=x", "BAD KEY=x", "OPEN='never closed", 'X="a" trailing'])
def test_a_malformed_line_stops_naming_the_file_and_line(line):
    with pytest.raises(ImproperlyConfigured, match=r"^dev\.env:2: "):
        parse_env_file(f"GOOD=1\n{line}\n", source="dev.env")


def test_never_overrides_what_the_environment_already_has(tmp_path):
    path = tmp_path / ".env"
    path.write_text("DEBUG=1\nSECRET_KEY=from-file\nEMPTY_IN_ENV=from-file\nNEW=from-file\n")
    environ = {"SECRET_KEY": "from-environment", "EMPTY_IN_ENV": ""}
    added = load_env_file(path, environ)
    assert environ == {"SECRET_KEY": "from-environment", "EMPTY_IN_ENV": "", "DEBUG": "1", "NEW": "from-file"}
    assert sorted(added) == ["DEBUG", "NEW"]


def test_a_missing_file_is_no_error(tmp_path):
    environ: dict[str, str] = {}
    assert load_env_file(tmp_path / ".env", environ) == []
    assert environ == {}


@pytest.mark.parametrize(
    "settings_module, read",
    [
        (None, True),
        ("", True),
        ("config.settings.base", True),
        ("config.settings.production", False),
        ("config.settings.test", False),
    ],
)
def test_only_development_settings_read_it(tmp_path, settings_module, read):
    (tmp_path / ".env").write_text("DEBUG=1\nSECRET_KEY=development\n")
    environ = {} if settings_module is None else {"DJANGO_SETTINGS_MODULE": settings_module}
    load_development_env(tmp_path, environ)
    assert ("DEBUG" in environ) is read
    assert ("SECRET_KEY" in environ) is read


def test_the_committed_example_parses_and_turns_on_development_mode():
    values = parse_env_file((ROOT / ".env.example").read_text(), source=".env.example")
    assert values.get("DEBUG") == "1"
    # Anything else set here would reach every manage.py a developer runs, test children included.
    assert set(values) == {"DEBUG"}


# --- platform/stack.py up ------------------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_s3_port() -> int:
    """An S3 port whose whole block is free, below the ephemeral range and away from the 8333/18333/28433 stacks."""
    start = 20000 + (os.getpid() % 300) * 20
    for base in range(start, 28400 - S3_BLOCK, 20):
        if all(port_is_free(port) for port in range(base, base + S3_BLOCK)):
            return base
    raise AssertionError("no free block of ports for SeaweedFS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_of(var_dir: Path) -> dict[int, str]:
    """Every live process whose environment or command line names ``var_dir``: what this stack started."""
    marker = str(var_dir).encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes()
            environ = Path("/proc", entry, "environ").read_bytes()
            state = Path("/proc", entry, "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and (marker in cmdline or b"PLATFORM_VAR_DIR=" + marker + b"\0" in environ + b"\0"):
            found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def stack_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The embedded defaults in a var dir of the test's own, whatever the suite runs on (CI: PostgreSQL, Redis)."""
    var = tmp_path / "var"
    env = dict(os.environ)
    for name in ("SERVING_URL", "SERVING_METRICS_TOKEN", "DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL"):
        env.pop(name, None)
    env |= {
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DEBUG": "1",
        "PLATFORM_VAR_DIR": str(var),
        # Explicit, so that a developer's .env cannot point this stack at their database or broker.
        "DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "CACHE_URL": "locmem://",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_s3_port()}",
        "S3_BUCKET": "mlplatform",
        "SERVING_CACHE_DIR": str(var / "model-cache"),
        "PLATFORM_API_PORT": str(free_port()),
        "PLATFORM_SERVING_PORT": str(free_port()),
    }
    return env, var


def start_stack(tmp_path: Path) -> tuple[subprocess.Popen, dict[str, str], Path, Path]:
    env, var = stack_env(tmp_path)
    log_path = tmp_path / "stack.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(STACK), "up"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: "Ctrl+C" below reaches it and its children only
        )
    return process, env, var, log_path


def wait_for(condition, *, timeout: float, what: str, process: subprocess.Popen, log_path: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            raise AssertionError(f"stack exited ({process.returncode}) before {what}:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout}s:\n{log_path.read_text()[-4000:]}")


def assert_all_stopped(process: subprocess.Popen, var: Path, log_path: Path, *, timeout: float) -> None:
    """The launcher exits 0 in time and leaves no process of its var dir; leftovers are killed, then reported."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"stack still running {timeout}s after the signal:\n{log_path.read_text()[-4000:]}"
        ) from None
    deadline = time.monotonic() + 5  # children the launcher stopped may still be finishing their exit
    while (left := processes_of(var)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"left running after the stack exited: {left}\n{log_path.read_text()[-4000:]}"
    assert process.returncode == 0, log_path.read_text()[-4000:]


def kill_leftovers(process: subprocess.Popen, var: Path) -> None:
    """Whatever a failed test left: the launcher's group, then every process of its var dir, by process id."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for pid in processes_of(var):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def is_weed(cmdline: str) -> bool:
    return Path(cmdline.split(" ")[0]).name == "weed"


def is_migrate(cmdline: str) -> bool:
    return "manage.py migrate" in cmdline


@pytest.mark.parametrize(
    "moment, send",
    [
        pytest.param(is_weed, "SIGTERM", id="sigterm-while-seaweedfs-starts"),
        pytest.param(is_migrate, "SIGTERM", id="sigterm-during-migrations"),
        pytest.param(is_migrate, "ctrl-c", id="ctrl-c-during-migrations"),
    ],
)
def test_a_signal_during_start_up_stops_everything_started_so_far(tmp_path, moment, send):
    process, _, var, log_path = start_stack(tmp_path)
    started = time.monotonic()
    try:
        wait_for(
            lambda: any(moment(cmd) for cmd in processes_of(var).values()),
            timeout=60,
            what=moment.__name__.removeprefix("is_"),
            process=process,
            log_path=log_path,
        )
        assert any(is_weed(cmd) for cmd in processes_of(var).values()), "SeaweedFS should be starting or up by now"
        if send == "ctrl-c":  # the terminal signals the whole foreground process group
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        signalled_after = time.monotonic() - started
        assert_all_stopped(process, var, log_path, timeout=45)
    finally:
        kill_leftovers(process, var)
    print(f"signalled {signalled_after:.1f} s after start; all stopped {time.monotonic() - started:.1f} s after start")


@pytest.mark.slow
def test_the_running_stack_serves_on_its_ports_runs_beat_and_stops_on_sigterm(tmp_path):
    process, env, var, log_path = start_stack(tmp_path)
    try:
        wait_for(
            lambda: "Press Ctrl+C to stop." in log_path.read_text(errors="replace"),
            timeout=180,
            what="ready line",
            process=process,
            log_path=log_path,
        )
        running = processes_of(var).values()
        beat = [cmd for cmd in running if " beat " in cmd and f"--schedule={var / 'beat'}" in cmd]
        assert beat, f"no celery beat among the stack's processes: {running}"
        assert any(" worker " in cmd for cmd in running)
        api, serving = env["PLATFORM_API_PORT"], env["PLATFORM_SERVING_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{api}/healthz", timeout=10) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{serving}/v2/health/ready", timeout=10) as answer:
            assert answer.status == 200
        process.send_signal(signal.SIGTERM)
        assert_all_stopped(process, var, log_path, timeout=60)
    finally:
        kill_leftovers(process, var)
    # beat wrote its schedule where the var dir keeps embedded state (shelve may add a suffix)
    assert list((var / "beat").glob("celerybeat-schedule*"))
