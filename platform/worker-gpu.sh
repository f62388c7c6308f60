#!/bin/sh
# One Celery training worker per GPU, each seeing only its own device.
# TensorFlow is imported only inside the training task, in the worker's child
# process, so no process forks after TensorFlow is loaded.
# GPU_COUNT defaults to the number of GPUs nvidia-smi lists (0 = one CPU worker).
# With WORKER_METRICS_PORT=P, the worker of GPU i serves its /metrics on P+i (they share the container's ports).
set -eu
count="${GPU_COUNT:-$(nvidia-smi -L 2>/dev/null | wc -l || echo 0)}"
metrics_port="${WORKER_METRICS_PORT:-0}"
if [ "$count" -eq 0 ]; then
  exec celery -A config worker -Q gpu -c 1 -n "gpu-cpu@%h" --prefetch-multiplier=1 --loglevel=INFO
fi
i=0
pids=""
while [ "$i" -lt "$count" ]; do
  port=0
  [ "$metrics_port" -eq 0 ] || port=$((metrics_port + i))
  CUDA_VISIBLE_DEVICES="$i" WORKER_METRICS_PORT="$port" celery -A config worker -Q gpu -c 1 -n "gpu$i@%h" \
    --prefetch-multiplier=1 --loglevel=INFO &
  pids="$pids $!"
  i=$((i + 1))
done
trap 'kill $pids 2>/dev/null || true' TERM INT
# `wait` returns as soon as a trapped signal arrives, and the container ends with this script, taking the
# workers with it: so wait again until each has finished its warm shutdown (the running job goes on meanwhile).
status=0
for pid in $pids; do
  while :; do
    rc=0
    wait "$pid" || rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  [ "$rc" -eq 0 ] || status=$rc
done
exit "$status"
