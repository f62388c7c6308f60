#!/usr/bin/env python
"""What differential privacy costs in utility and time: the utility curve of DP-SGD jobs, through the platform.

    .venv/bin/python bench/privacy.py [--ctr-rows 20000] [--sentiment-rows 8000] [--epochs 3] [--epsilons 1,3,8]
    .venv/bin/python bench/privacy.py --small-rows 2048     # also: the small dataset the platform refuses

For the sample click data (``sequence_ctr``) and the sample sentiment headlines (``text_classifier``), trains one
job without privacy (the baseline, measured in the same run) and one private job per target epsilon, exactly as
a tenant's job runs (``create_job`` plans it with the accountant, ``run_job`` trains it in this process), with the
same parameters, split and seed. Prints per job: the noise multiplier the accountant chose, the epsilon (PLD) and
delta it reports, the validation metric and its ratio to the baseline's, and the training time and its ratio to
the baseline's. Layer sizes are smaller than the templates' defaults (DP-SGD keeps one gradient per example:
memory grows with batch x parameters), the same for every job, so the curve compares like with like.
"""

from __future__ import annotations

import argparse
import time

from _stack import bench_tenant, embedded_stack
from model_quality import dataset_from_sample

CTR = {"batch_size": 256, "max_len": 30, "embedding_dim": 32, "conv_filters": 32, "lstm_units": 32}
SENTIMENT = {"batch_size": 256, "max_tokens": 2000, "embedding_dim": 16, "encoder": "pooling", "learning_rate": 3e-3}


def run(tenant, dataset, *, template: str, label: str, params: dict, privacy: dict | None):
    from training import services as job_services
    from training.models import TrainingJob
    from training.trainer.run import run_job

    planned = time.perf_counter()
    job = job_services.create_job(
        tenant=tenant,
        dataset_id=dataset.id,
        template=template,
        model_name=f"{template.replace('_', '-')}-{'dp' if privacy else 'plain'}",
        label_column=label,
        params=params,
        validation_split=0.2,
        seed=3,
        **({"privacy": privacy} if privacy else {}),
    )
    plan_seconds = time.perf_counter() - planned
    started = time.perf_counter()
    run_job(job_id=str(job.id), worker="bench")
    seconds = time.perf_counter() - started
    job = TrainingJob.objects.get(pk=job.pk)
    if job.status != "succeeded":
        raise SystemExit(f"{template} {privacy} failed: {job.error_message}\n{job.error_traceback}")
    return job, seconds, plan_seconds


def curve(tenant, dataset, *, template: str, label: str, params: dict, metric: str, epsilons: list[float]) -> None:
    dataset.refresh_from_db()  # its row count, from validation
    baseline, base_seconds, _ = run(tenant, dataset, template=template, label=label, params=params, privacy=None)
    base = baseline.metrics[metric]
    print(f"\n{template} on {dataset.row_count} rows, {params['epochs']} epochs, batch {params['batch_size']}:")
    print(f"  no privacy: validation {metric} {base:.4f}, {base_seconds:.1f} s (the baseline)")
    for epsilon in epsilons:
        job, seconds, plan_seconds = run(
            tenant,
            dataset,
            template=template,
            label=label,
            params=params,
            privacy={"target_epsilon": epsilon, "accept_low_utility": True},
        )
        plan, value = job.privacy, job.metrics[metric]
        print(
            f"  target epsilon {epsilon:g}: sigma {plan['noise_multiplier']:.3f}, epsilon {plan['epsilon']:.3f} "
            f"(RDP {plan['epsilon_rdp']:.3f}) at delta {plan['delta']:.1e}, {plan['steps']} steps of q "
            f"{plan['sample_rate']:.4f}, noise ratio {plan['noise_multiplier'] / plan['expected_batch_size']:.4f}; "
            f"validation {metric} {value:.4f} ({value / base:.3f} x baseline), {seconds:.1f} s "
            f"({seconds / base_seconds:.1f} x baseline), planned in {plan_seconds:.2f} s"
        )


def small(tenant, rows: int, epochs: int) -> None:
    """The issue's case: a small dataset at a small epsilon, refused (and what it learns when forced)."""
    from core.errors import ServiceError
    from training import services as job_services

    dataset = dataset_from_sample(tenant, "ctr", rows, "clicked")
    params = CTR | {"epochs": epochs, "batch_size": 64}
    try:
        job_services.create_job(
            tenant=tenant,
            dataset_id=dataset.id,
            template="sequence_ctr",
            model_name="small-dp",
            label_column="clicked",
            params=params,
            privacy={"target_epsilon": 1.4},
        )
        print(f"\n{rows} click rows at epsilon 1.4: accepted (not refused)")
    except ServiceError as exc:
        print(f"\n{rows} click rows at epsilon 1.4: refused ({exc.code}): {exc}")
    curve(tenant, dataset, template="sequence_ctr", label="clicked", params=params, metric="auc", epsilons=[1.4])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ctr-rows", type=int, default=20000)
    parser.add_argument("--sentiment-rows", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--epsilons", default="1,3,8")
    parser.add_argument("--small-rows", type=int, default=0, help="also the small-dataset case (e.g. 2048)")
    parser.add_argument("--only", choices=["ctr", "sentiment"], default=None)
    args = parser.parse_args()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    with embedded_stack(s3_port=28453, name="privacy"):
        tenant, _ = bench_tenant()
        if args.only in (None, "ctr"):
            clicks = dataset_from_sample(tenant, "ctr", args.ctr_rows, "clicked")
            params = CTR | {"epochs": args.epochs}
            curve(
                tenant, clicks, template="sequence_ctr", label="clicked", params=params, metric="auc", epsilons=epsilons
            )
        if args.only in (None, "sentiment"):
            news = dataset_from_sample(tenant, "sentiment", args.sentiment_rows, "sentiment")
            params = SENTIMENT | {"epochs": args.epochs}
            curve(
                tenant,
                news,
                template="text_classifier",
                label="sentiment",
                params=params,
                metric="accuracy",
                epsilons=epsilons,
            )
        if args.small_rows:
            small(tenant, args.small_rows, args.epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
