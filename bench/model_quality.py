#!/usr/bin/env python
"""Model quality on the sample data, through the platform's own trainer (one run, in-process).

    .venv/bin/python bench/model_quality.py [--ctr-rows 8000] [--sentiment-rows 4000] [--epochs 3]

Generates the click and sentiment sample datasets, stores and validates them,
trains the seed model (``sequence_ctr`` with its default layer sizes) and the
``text_classifier`` exactly as a job would (the same code path a worker runs),
and prints the held-out metrics against the targets: validation AUC >= 0.90
on the click data, accuracy >= 0.85 on the sentiment data.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time

from _stack import bench_tenant, embedded_stack


def dataset_from_sample(tenant, kind: str, rows: int, label: str):
    from datasets import services
    from datasets.sample_data import write_csv

    text = io.StringIO()
    write_csv(kind, rows, text, seed=11)
    content = text.getvalue().encode()
    dataset = services.create_dataset(
        tenant=tenant,
        staged=io.BytesIO(content),
        staged_sha256=hashlib.sha256(content).hexdigest(),
        staged_size=len(content),
        name=kind,
        filename=f"{kind}.csv",
        label_column=label,
    )
    services.validate_dataset(dataset_id=dataset.id)
    return dataset


def train(tenant, dataset, template: str, model_name: str, label: str, params: dict):
    from training import services as job_services
    from training.models import TrainingJob
    from training.trainer.run import run_job

    job = job_services.create_job(
        tenant=tenant,
        dataset_id=dataset.id,
        template=template,
        model_name=model_name,
        label_column=label,
        params=params,
        validation_split=0.2,
        seed=3,
    )
    started = time.perf_counter()
    run_job(job_id=str(job.id), worker="bench")
    job = TrainingJob.objects.get(pk=job.pk)
    if job.status != "succeeded":
        raise SystemExit(f"{template} failed: {job.error_message}\n{job.error_traceback}")
    return job, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ctr-rows", type=int, default=8000)
    parser.add_argument("--sentiment-rows", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with embedded_stack(s3_port=28433, name="quality"):
        tenant, _ = bench_tenant()
        clicks = dataset_from_sample(tenant, "ctr", args.ctr_rows, "clicked")
        news = dataset_from_sample(tenant, "sentiment", args.sentiment_rows, "sentiment")
        ctr_job, ctr_seconds = train(tenant, clicks, "sequence_ctr", "ctr", "clicked", {"epochs": args.epochs})
        text_job, text_seconds = train(
            tenant, news, "text_classifier", "sentiment", "sentiment", {"epochs": args.epochs}
        )
        auc, accuracy = ctr_job.metrics["auc"], text_job.metrics["accuracy"]
        print(
            f"sequence_ctr on {args.ctr_rows} click rows, {args.epochs} epochs ({ctr_seconds:.0f} s): "
            f"validation AUC {auc:.4f} (target >= 0.90) {'PASS' if auc >= 0.90 else 'FAIL'}; "
            f"log loss {ctr_job.metrics['log_loss']:.4f}, F1 {ctr_job.metrics['f1']:.4f}"
        )
        print(
            f"text_classifier on {args.sentiment_rows} Chinese headlines, {args.epochs} epochs "
            f"({text_seconds:.0f} s): validation accuracy {accuracy:.4f} (target >= 0.85) "
            f"{'PASS' if accuracy >= 0.85 else 'FAIL'}; macro-F1 {text_job.metrics['macro_f1']:.4f}"
        )
        return 0 if auc >= 0.90 and accuracy >= 0.85 else 1


if __name__ == "__main__":
    raise SystemExit(main())
