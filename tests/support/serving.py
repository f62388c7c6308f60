"""Serving test support: tiny real SavedModels published to the real S3, and the serving app on a real port.

The models are built by the trainer's own builders (small sizes, untrained
weights from a fixed seed) and published through ``serving.publishing``,
so the serving process reads exactly what training writes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from serving import publishing
from serving.models import ModelVersion, RegisteredModel
from tenants.models import Tenant
from tests.support.workers import free_port

ROOT = Path(__file__).resolve().parents[2]  # the repository: this file is tests/support/<name>.py
EXPORT_DIR = ROOT / "var" / "test" / "exports"
CTR_PARAMS = {
    "max_len": 8,
    "vocab_size": 50,
    "embedding_dim": 4,
    "conv_filters": 4,
    "conv_kernel": 3,
    "pool_size": 2,
    "lstm_units": 4,
    "learning_rate": 0.01,
}
TEXTS = ["好评 很好", "差评 太差", "great product", "awful product", "很好 很好", "太差 差"]
KINDS = {
    # kind: (template, feature columns, label names)
    "ctr": ("sequence_ctr", ["item_ids"], ["0", "1"]),
    "text": ("text_classifier", ["review"], ["negative", "neutral", "positive"]),
    "tabular": ("tabular_classifier", ["age", "city"], ["no", "yes"]),
}
_lock = threading.Lock()


def exported_model(kind: str, seed: int = 1, *, compiled: bool = False) -> tuple[Path, dict]:
    """A SavedModel of this kind (built once per seed and kept under var/test), and its manifest's runtime fields.

    ``compiled``: with the ONNX core and preprocessing spec beside it, after the trainer's own parity gate.
    """
    target = EXPORT_DIR / f"{kind}-{seed}{'-compiled' if compiled else ''}"
    fields_file = target.with_name(target.name + ".fields.json")
    with _lock:
        if (target / "saved_model.pb").exists() and fields_file.exists():
            return target, json.loads(fields_file.read_text())
        import keras
        import numpy as np

        from training.trainer import models

        keras.utils.set_random_seed(seed)
        if kind == "ctr":
            model = models.sequence_ctr(column="item_ids", params=CTR_PARAMS, vocab_size=50)
        elif kind == "text":
            params = {
                "tokenize": "auto",
                "max_tokens": 50,
                "sequence_length": 8,
                "embedding_dim": 4,
                "encoder": "average",
                "lstm_units": 4,
                "learning_rate": 0.01,
            }
            model = models.text_classifier(column="review", params=params, texts=np.array(TEXTS), classes=3)
        else:
            features = {"age": np.array([20.0, 35.0, 50.0]), "city": np.array(["paris", "oslo", "lima"])}
            model = models.tabular_classifier(
                columns={"age": "float", "city": "string"},
                params={"hidden_units": [4], "dropout": 0.0, "learning_rate": 0.01},
                features=features,
                classes=2,
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        model.export(str(target), format="tf_saved_model", verbose=False)
        fields = _compile(model, target, kind) if compiled else {}
        fields_file.write_text(json.dumps(fields))
        return target, fields


def _compile(model, target: Path, kind: str) -> dict:
    import numpy as np

    from training.trainer import compile as compiler

    held_out = {
        "ctr": {"item_ids": ["1 2 3", "4 5 6 7 8 9 10 11", "49"]},
        "text": {"review": TEXTS},
        "tabular": {"age": [20.0, 44.0], "city": ["paris", "quito"]},
    }[kind]
    features = {name: np.array(values, dtype=object) for name, values in held_out.items()}
    index = np.arange(len(next(iter(held_out.values()))))
    signature = {"inputs": _input_specs(kind)}
    fields = compiler.compile_version(
        model=model,
        export_dir=target,
        input_kind={"ctr": "id_sequence", "text": "text", "tabular": "columns"}[kind],
        signature=signature,
        binary=kind == "ctr",
        rows=lambda steps: compiler.gate_rows(features, index, signature, steps),
    )
    assert fields["runtime"] == "onnxruntime", fields
    return fields


def _input_specs(kind: str) -> dict:
    if kind == "tabular":
        return {"age": {"dtype": "float32", "shape": [None, 1]}, "city": {"dtype": "string", "shape": [None, 1]}}
    column = KINDS[kind][1][0]
    return {column: {"dtype": "string", "shape": [None]}}


def publish_model(
    tenant: Tenant,
    *,
    name: str = "clicks",
    kind: str = "ctr",
    seed: int = 1,
    compiled: bool = False,
    manifest_fields: dict | None = None,
) -> ModelVersion:
    """Publish the next version of ``name`` for ``tenant`` from a tiny exported model, as training does.

    ``compiled``: with its compiled artifact, so ONNX Runtime serves it; otherwise TensorFlow does (as for a
    version published before compiled serving). ``manifest_fields``: more fields for its manifest.
    """
    export_dir, runtime_fields = exported_model(kind, seed, compiled=compiled)
    template, columns, labels = KINDS[kind]
    registered, _ = RegisteredModel.objects.get_or_create(tenant=tenant, name=name)
    number = registered.last_version + 1
    RegisteredModel.objects.filter(pk=registered.pk).update(last_version=number)
    version = ModelVersion.objects.create(
        tenant=tenant,
        model=registered,
        version=number,
        template=template,
        object_prefix=publishing.version_prefix(tenant.id, name, number),
    )
    return publishing.publish(
        version=version,
        export_dir=export_dir,
        metrics={"seed": seed},
        manifest_fields={
            "template": template,
            "feature_columns": columns,
            "label_names": labels,
            "signature": {"name": "serving_default", "inputs": _input_specs(kind)},
            **runtime_fields,
            **(manifest_fields or {}),
        },
    )


@contextmanager
def serving_server(**settings_overrides):
    """The serving ASGI app under uvicorn on a free port in this process; yields (base url, app)."""
    import uvicorn
    from django.test import override_settings

    with override_settings(**settings_overrides):
        from serving.runtime.app import ServingApp

        app = ServingApp()
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", access_log=False, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise AssertionError("the serving app did not start")
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}", app
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def call(base: str, method: str, path: str, body=None, key: str | None = None, raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base + path, data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as exc:
        payload, status, headers = exc.read(), exc.code, exc.headers
    content = json.loads(payload) if headers.get("Content-Type", "").startswith("application/json") else payload
    return status, content, headers


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as ``{'name{labels}': value}`` (labels as the server wrote them: sorted)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values
