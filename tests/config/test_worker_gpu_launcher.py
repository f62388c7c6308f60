"""platform/worker-gpu.sh on a machine with several GPUs: one worker per device, and a warm shutdown that the
container actually waits for.

The script is the GPU pod's (and compose's worker-gpu's) main process: when it exits, the container ends and
every worker still inside is killed. So on SIGTERM it must pass the signal on and stay until each worker has
finished its warm shutdown. This machine has no GPU, so ``celery`` is a stand-in on PATH that records its
device and takes a moment to shut down, as a worker finishing its task does; the script itself runs as is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHUTDOWN_SECONDS = 1.5

# The trap is set before the start is recorded: a SIGTERM sent as soon as both starts are seen must find it.
STAND_IN = f"""#!/bin/sh
trap 'sleep {SHUTDOWN_SECONDS}; echo "$CUDA_VISIBLE_DEVICES" >> "$MARKERS/finished"; exit 0' TERM
echo "$CUDA_VISIBLE_DEVICES $WORKER_METRICS_PORT $*" >> "$MARKERS/started"
while :; do sleep 0.05; done
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_each_gpu_gets_a_worker_and_the_script_outlives_their_warm_shutdown(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "celery").write_text(STAND_IN)
    (bin_dir / "celery").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "GPU_COUNT": "2",
        "MARKERS": str(tmp_path),
        "WORKER_METRICS_PORT": "9808",
    }
    script = subprocess.Popen(["sh", str(ROOT / "platform" / "worker-gpu.sh")], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while len(_lines(tmp_path / "started")) < 2:
            assert time.monotonic() < deadline, "the launcher did not start a worker per GPU"
            assert script.poll() is None
            time.sleep(0.05)
        started = sorted(_lines(tmp_path / "started"))
        assert [line.split()[0] for line in started] == ["0", "1"]  # CUDA_VISIBLE_DEVICES, one device each
        assert [line.split()[1] for line in started] == ["9808", "9809"]  # a metrics port each
        assert all("-Q gpu -c 1" in line and "--prefetch-multiplier=1" in line for line in started)

        sent = time.monotonic()
        script.send_signal(signal.SIGTERM)
        code = script.wait(timeout=30)
        waited = time.monotonic() - sent
    finally:
        if script.poll() is None:
            script.kill()
    assert sorted(_lines(tmp_path / "finished")) == ["0", "1"], "a worker was still shutting down when it exited"
    assert waited >= SHUTDOWN_SECONDS
    assert code == 0
