#!/usr/bin/env python
"""Load: many tenants on one serving process, the REST API on one big tenant, and 200 jobs from 20 tenants.

    .venv/bin/python bench/load.py [--parts serving,api,queue] [--tenants 50] [--seconds 20]
                                   [--concurrency 32] [--jobs 200] [--queue-tenants 20]

Starts its own SeaweedFS (``--s3-port``, 18533) and SQLite (``bench/_stack.py``)
and stops everything it started, by process id.

- serving: ``--tenants`` tenants, each with its own model (the click model's
  architecture with its own weights, so every tenant's model answers the same
  visitor differently; compiled, as publishing makes them, or with ``--tensorflow`` served by TensorFlow),
  one ``manage.py serve_models`` process. Each model is
  asked alone first (its reference answer); then a separate load generator
  process (``bench/_tenant_loadgen.py``) keeps ``--concurrency`` connections
  busy for ``--seconds``, cycling over the tenants, and checks every 200
  against the caller's own reference: an answer matching another tenant's
  model is counted as foreign. Plans keep their default rate limits, so 429s
  are expected and reported apart (target: zero errors that are not 429s).
  The baseline, measured in the same run, is one tenant alone at the same
  concurrency; RSS of the serving process is printed before and after.
- api: one tenant with 10,000 jobs and 1,000 datasets; each list endpoint and
  dashboard list page is read at random pages (in process, through Django's
  full request handling); prints SQL queries per page and p50/p95 latency.
- queue: ``--jobs`` small training jobs from ``--queue-tenants`` tenants (plans
  allowing one job at a time), created tenant by tenant at once, run by two
  Celery worker processes; checks that all finish, that no tenant ever ran two
  at once (from the recorded start and end times), and how fair the start
  order was across tenants.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]
sys.path.insert(0, str(HERE.parent))
sys.path.append(str(HERE))

from _stack import ROOT, bench_tenant, embedded_stack  # noqa: E402

# Three visitors per request: each tenant's model answers them with its own three probabilities.
VISITORS = ["12 85 3 9 41 7 7 120", "5 5 5 200 17", "1 2 3 4 5 6 7 8 9 10 11 12"]
LOGS = ROOT / "var" / "bench" / "load-last"
TINY_CTR = {"epochs": 1, "batch_size": 32, "max_len": 20, "embedding_dim": 8, "conv_filters": 8, "lstm_units": 8}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "wb") as log:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(url: str, body: dict, key: str) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


# --- serving ----------------------------------------------------------------------------


def _set_rate_limits(tenants, per_minute: int | None) -> None:
    """None restores the default plan's limit (the serving process re-reads keys within its 2 s cache)."""
    from tenants.models import Plan

    default = Plan._meta.get_field("predictions_per_minute").default
    for tenant, _ in tenants:
        Plan.objects.filter(pk=tenant.plan_id).update(predictions_per_minute=per_minute or default)
    time.sleep(3)


def serving_part(args, env: dict[str, str]) -> dict:
    from tests.support.serving import publish_model

    tenants = []
    started = time.perf_counter()
    for index in range(args.tenants):
        tenant, key = bench_tenant(f"Load{index}")
        publish_model(tenant, name="ctr", kind="ctr", seed=index + 1, compiled=not args.tensorflow)
        tenants.append((tenant, key))
    publish_seconds = time.perf_counter() - started
    port = free_port()
    server = start(
        "serving",
        [sys.executable, str(ROOT / "manage.py"), "serve_models", "--host", "127.0.0.1", "--port", str(port)],
        env | {"SERVING_CACHE_DIR": str(Path(env["BENCH_WORK_DIR"]) / "model-cache")},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/v2/health/ready", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("serving did not start; see var/bench/load-last/serving.log") from None
                time.sleep(0.3)
        rss_idle = rss_mb(server.pid)
        plan = []
        for tenant, key in tenants:
            status, answer = post(f"{base}/v1/models/ctr:predict", {"instances": VISITORS}, key)
            if status != 200:
                raise SystemExit(f"{tenant.slug}: reference request answered {status} {answer}")
            expected = [p["probability"] for p in answer["predictions"]]
            plan.append(
                {"path": "/v1/models/ctr:predict", "key": key, "body": {"instances": VISITORS}, "expected": expected}
            )
        distinct = len({tuple(round(p, 5) for p in entry["expected"]) for entry in plan})
        rss_loaded = rss_mb(server.pid)
        results = {}
        unlimited = f"{len(plan)} tenants, no rate limit"
        runs = (("one tenant, no rate limit", plan[:1]), (unlimited, plan), (f"{len(plan)} tenants, plan limits", plan))
        for label, subset in runs:
            _set_rate_limits(tenants, None if "plan limits" in label else 10**7)
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                json.dump(subset, handle)
            done = subprocess.run(
                [
                    sys.executable,
                    str(HERE / "_tenant_loadgen.py"),
                    "--port",
                    str(port),
                    "--plan",
                    handle.name,
                    "--concurrency",
                    str(args.concurrency),
                    "--seconds",
                    str(args.seconds),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            results[label] = json.loads(done.stdout.strip().splitlines()[-1])
            os.unlink(handle.name)
        rss_after = rss_mb(server.pid)
    finally:
        stop(server)
    return {
        "tenants": args.tenants,
        "publish_seconds": publish_seconds,
        "distinct_references": distinct,
        "rss_mb": {"idle": rss_idle, "all models loaded": rss_loaded, "after load": rss_after},
        "runs": results,
    }


# --- api ---------------------------------------------------------------------------------


def api_part(args) -> dict:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from datasets.models import Dataset
    from training.models import TrainingJob

    tenant, key = bench_tenant("BigTenant")
    now = timezone.now()
    datasets = Dataset.objects.bulk_create(
        Dataset(
            tenant=tenant,
            name=f"set-{i // 10}",
            version=i % 10 + 1,
            format="csv",
            status="ready",
            object_key=f"tenants/{tenant.id}/datasets/x{i}/data.csv",
            size_bytes=1000 + i,
            row_count=100,
            schema=[{"name": "a", "type": "integer", "nullable": False}],
            created_at=now,
        )
        for i in range(1000)
    )
    TrainingJob.objects.bulk_create(
        TrainingJob(
            tenant=tenant,
            dataset=datasets[i % 1000],
            template="sequence_ctr",
            model_name=f"model-{i % 37}",
            params=TINY_CTR,
            label_column="clicked",
            feature_columns=["item_sequence"],
            status=random.choice(["succeeded", "failed", "cancelled", "queued"]),
            progress={"epoch": 1, "epochs": 1},
            metrics={"auc": 0.9},
        )
        for i in range(10_000)
    )
    api = Client(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_HOST="127.0.0.1")
    person = Client(HTTP_HOST="127.0.0.1")
    person.force_login(_owner(tenant))
    endpoints = [
        (api, "/api/v1/jobs", 10_000),
        (api, "/api/v1/datasets", 1000),
        (api, "/api/v1/audit", None),
        (api, "/api/v1/models", None),
        (person, "/jobs/", 10_000),
        (person, "/datasets/", 1000),
    ]
    rows = {}
    for client, path, total in endpoints:
        pages = max(1, (total or 50) // 50)
        queries = {}
        for page in (1, pages):
            with CaptureQueriesContext(connection) as captured:
                response = client.get(path, {"page": page})
            assert response.status_code == 200, (path, response.status_code)
            queries[page] = len(captured.captured_queries)
        latencies = []
        for _ in range(args.api_requests):
            started = time.perf_counter()
            response = client.get(path, {"page": random.randint(1, pages)})
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        latencies.sort()
        rows[path] = {
            "queries_first_page": queries[1],
            "queries_last_page": queries[pages],
            "p50_ms": statistics.median(latencies),
            "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
        }
    return rows


def _owner(tenant):
    from tenants.models import Membership

    return Membership.objects.for_tenant(tenant).select_related("user").first().user


# --- queue -------------------------------------------------------------------------------


def queue_part(args, env: dict[str, str]) -> dict:
    from model_quality import dataset_from_sample

    from training import services as job_services
    from training.models import TrainingJob

    tenants = []
    for index in range(args.queue_tenants):
        tenant, _ = bench_tenant(f"Queue{index}")
        tenant.plan.max_concurrent_jobs = 1
        tenant.plan.save()
        tenants.append((tenant, dataset_from_sample(tenant, "ctr", 200, "clicked")))
    workers = [
        start(
            f"worker-{n}",
            [
                str(Path(sys.executable).with_name("celery")),
                "-A",
                "config",
                "worker",
                "-Q",
                "gpu,cpu,default",
                "-c",
                "1",
                "-n",
                f"load-{n}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=WARNING",
            ],
            env,
        )
        for n in (1, 2)
    ]
    per_tenant = args.jobs // len(tenants)
    try:
        created = time.perf_counter()
        for tenant, dataset in tenants:  # tenant by tenant: a FIFO queue would run one tenant's jobs first
            for n in range(per_tenant):
                job_services.create_job(
                    tenant=tenant,
                    dataset_id=dataset.id,
                    template="sequence_ctr",
                    model_name=f"q{n}",
                    label_column="clicked",
                    params=TINY_CTR,
                    seed=n,
                )
        ids = {t.pk for t, _ in tenants}
        deadline = time.monotonic() + args.queue_timeout
        while True:
            jobs = TrainingJob.objects.filter(tenant_id__in=ids)
            done = jobs.filter(status__in=TrainingJob.TERMINAL).count()
            if done == len(tenants) * per_tenant or time.monotonic() > deadline:
                break
            time.sleep(2)
        wall = time.perf_counter() - created
    finally:
        for worker in workers:
            stop(worker)
    jobs = list(TrainingJob.objects.filter(tenant_id__in=ids).order_by("started_at"))
    statuses: dict[str, int] = {}
    for job in jobs:
        statuses[job.status] = statuses.get(job.status, 0) + 1
    overlaps = 0
    by_tenant: dict = {}
    for job in jobs:
        if job.started_at and job.finished_at:
            by_tenant.setdefault(job.tenant_id, []).append((job.started_at, job.finished_at))
    for spans in by_tenant.values():
        spans.sort()
        overlaps += sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    started = [j for j in jobs if j.started_at]
    first_round = len({j.tenant_id for j in started[: len(tenants)]})
    spread, counts = 0, dict.fromkeys(ids, 0)
    for job in started:
        counts[job.tenant_id] += 1
        spread = max(spread, max(counts.values()) - min(counts.values()))
    return {
        "jobs": len(jobs),
        "tenants": len(tenants),
        "statuses": statuses,
        "wall_seconds": wall,
        "jobs_per_minute": 60 * statuses.get("succeeded", 0) / wall,
        "tenants_with_two_at_once": overlaps,
        "distinct_tenants_in_first_round": first_round,
        "max_start_spread": spread,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="serving,api,queue")
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--api-requests", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--queue-tenants", type=int, default=20)
    parser.add_argument("--queue-timeout", type=float, default=3600)
    parser.add_argument("--s3-port", type=int, default=18533)
    parser.add_argument(
        "--tensorflow", action="store_true", help="serve the tenants' models by TensorFlow (no compiled artifact)"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    report = {}
    with embedded_stack(s3_port=args.s3_port, name="load") as env:
        if "serving" in parts:
            report["serving"] = serving_part(args, env)
            print_serving(report["serving"])
        if "api" in parts:
            report["api"] = api_part(args)
            print_api(report["api"])
        if "queue" in parts:
            report["queue"] = queue_part(args, env)
            print_queue(report["queue"])
    (ROOT / "var" / "bench").mkdir(parents=True, exist_ok=True)
    (ROOT / "var" / "bench" / "load-last.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


def print_serving(result: dict) -> None:
    print(
        f"\nServing: {result['tenants']} tenants, one model each ({result['distinct_references']} distinct answers "
        f"to the same visitor), one serving process; published in {result['publish_seconds']:.0f} s"
    )
    print(
        f"{'':22}{'ok req/s':>9}{'all req/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'429s':>7}{'other errors':>13}"
        f"{'foreign':>8}{'tenants answered':>17}"
    )
    for label, run in result["runs"].items():
        print(
            f"{label:22}{run['ok_rps']:9.0f}{run['all_rps']:10.0f}{run['p50_ms']:8.2f}{run['p99_ms']:8.2f}"
            f"{run['statuses'].get('429', 0):7}{run['errors_not_429']:13}{run['foreign'] + run['unexplained']:8}"
            f"{run['tenants_answered']:17}"
        )
    runs = list(result["runs"].values())
    ratio, p99 = runs[1]["ok_rps"] / runs[0]["ok_rps"], runs[1]["p99_ms"] / runs[0]["p99_ms"]
    print(
        f"ratio: {ratio:.2f}x the one-tenant rate with {result['tenants']} tenants' models in use at once "
        f"(baseline: one tenant, same process and concurrency, this run; target >= 0.6x): "
        f"{'PASS' if ratio >= 0.6 else 'FAIL'}"
    )
    print(
        f"p99: {runs[1]['p99_ms']:.1f} ms with {result['tenants']} tenants vs {runs[0]['p99_ms']:.1f} ms with one = "
        f"{p99:.1f}x (target <= 2x): {'PASS' if p99 <= 2 else 'FAIL'}"
    )
    print("RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in result["rss_mb"].items()))
    bad = sum(run["errors_not_429"] + run["foreign"] + run["unexplained"] for run in runs)
    print(f"target: zero errors that are not 429s and no foreign answer: {'PASS' if not bad else 'FAIL'}")


def print_api(rows: dict) -> None:
    print("\nREST API and dashboard lists on one tenant with 10,000 jobs and 1,000 datasets (50 rows a page)")
    print(f"{'':22}{'SQL first page':>15}{'SQL last page':>15}{'p50 ms':>9}{'p95 ms':>9}")
    for path, row in rows.items():
        print(
            f"{path:22}{row['queries_first_page']:15}{row['queries_last_page']:15}{row['p50_ms']:9.1f}"
            f"{row['p95_ms']:9.1f}"
        )


def print_queue(result: dict) -> None:
    print(
        f"\nQueue: {result['jobs']} jobs from {result['tenants']} tenants created at once, two workers: "
        f"{result['statuses']} in {result['wall_seconds']:.0f} s ({result['jobs_per_minute']:.1f} jobs/min)"
    )
    print(f"tenants that ever ran two jobs at once (plan allows one): {result['tenants_with_two_at_once']}")
    print(
        f"distinct tenants among the first starts: {result['distinct_tenants_in_first_round']}; "
        f"largest gap in started jobs between two tenants at any moment: {result['max_start_spread']}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
