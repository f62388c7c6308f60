"""The model card of a published version: what it was trained on, how, how well, how private, and what it looks at.

Built from three rows the registry already keeps (no storage read, no new table): the version (metrics, when and
by which job it was published), its manifest (the JSON copy of ``manifest.json`` written when it was published:
template, params, columns, label names, the privacy statement, the explanation method and the global
explanations) and the dataset it was trained on (row count, the columns tagged PII and how they were handled).

Versions published before a piece existed (no privacy statement, no ``explain`` signature, a deleted dataset) get
that piece as ``null`` and its name in ``absent``: an old version's card is shorter, never an error.

The Markdown form is for pasting into a review. Everything that comes from a tenant's data or requests (model,
dataset, column, label and token names, params) is escaped, so a hostile name cannot add headings, links, table
cells or HTML to the reviewer's document.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from datasets.models import Dataset, PiiMode
from serving.models import ModelVersion
from training import templates
from training.compiled import serving_runtime

NOT_PRIVATE = "Not trained with differential privacy."
PII_HANDLING = {
    PiiMode.HASH: (
        "replaced by a keyed hash (HMAC-SHA256 with a key per tenant) before the file was stored; "
        "raw values never reached storage or training"
    ),
    PiiMode.DROP: "dropped before the file was stored; the model never saw it",
}
NO_PII = "No column of the dataset was tagged PII: every column was stored and used as uploaded."
MAX_TEXT = 200  # longest tenant string put into the Markdown card (longer ones are cut, with an ellipsis)


def version_card(*, version: ModelVersion) -> dict[str, Any]:
    """The card of one version (already scoped to its tenant by the caller's queryset), as plain JSON data."""
    manifest = version.manifest or {}
    job = version.job
    absent: list[str] = []

    def present(name: str, value: Any) -> Any:
        if value is None:
            absent.append(name)
        return value

    params = manifest.get("params") if manifest.get("params") is not None else (job.params if job else None)
    data = {
        "dataset": present("data.dataset", _dataset(version, manifest)),
        "feature_columns": present("data.feature_columns", _first(manifest, job, "feature_columns")),
        "label_column": present("data.label_column", _first(manifest, job, "label_column")),
        "label_names": present("data.label_names", manifest.get("label_names")),
        "validation_split": job.validation_split if job else None,
        "pii": present("data.pii", _pii(version.dataset, _first(manifest, job, "feature_columns") or [])),
    }
    kinds = _kinds(manifest, version.template)
    # An empty statement (as an empty plan means) is no guarantee: only a stated one makes the version private.
    statement = manifest.get("privacy") if isinstance(manifest.get("privacy"), dict) and manifest["privacy"] else None
    return {
        "model": version.model.name,
        "version": version.version,
        "status": version.status,
        "published_at": version.published_at.isoformat() if version.published_at else None,
        "job": present("job", _job(version, manifest)),
        "template": {
            "name": manifest.get("template") or version.template,
            "task": kinds.get("task"),
            "input_kind": kinds.get("input_kind"),
            "params": present("template.params", params),
        },
        "data": data,
        "metrics": {k: v for k, v in (version.metrics or {}).items() if _scalar(v)},
        "per_class": (version.metrics or {}).get("per_class"),
        "privacy": {
            "differentially_private": statement is not None,
            "summary": privacy_summary(statement),
            "statement": statement,
        },
        "explanation": present("explanation", _dict_or_none(manifest.get("explanation"))),
        "global_explanations": present("global_explanations", _dict_or_none(manifest.get("global_explanations"))),
        "runtime": serving_runtime(manifest),
        "absent": absent,
    }


def privacy_summary(statement: dict[str, Any] | None) -> str:
    """One sentence a reviewer reads first: the guarantee and its unit, or that there is none."""
    if not statement:
        return NOT_PRIVATE
    epsilon, delta = statement.get("epsilon"), statement.get("delta")
    unit = statement.get("privacy_unit") or "one row of the dataset"
    accountant = statement.get("accountant") or "an unnamed accountant"
    summary = (
        f"Trained with differential privacy: ({_number(epsilon)}, {_number(delta)})-DP for {unit} "
        f"({statement.get('adjacency') or 'add or remove one row'}), accounted by {accountant}."
    )
    outside = statement.get("not_covered")
    if isinstance(outside, list) and outside:
        summary += " Not covered: " + "; ".join(str(item) for item in outside) + "."
    return summary


def _kinds(manifest: dict[str, Any], template: str) -> dict[str, str]:
    """The task and input kind as serving reads them (older manifests: from their template's declaration)."""
    try:
        return templates.manifest_kinds({"template": template} | manifest)
    except ValueError:
        return {}


def _dataset(version: ModelVersion, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The row when it still exists (a deleted dataset keeps its lineage in the manifest, without a row count)."""
    recorded = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    row: Dataset | None = version.dataset
    if row is None and not recorded:
        return None
    return {
        "id": str(row.pk) if row else recorded.get("id"),
        "name": row.name if row else recorded.get("name"),
        "version": row.version if row else recorded.get("version"),
        # What the job trained on is the manifest's; the row's is the same file unless the manifest predates it.
        "sha256": recorded.get("sha256") or (row.sha256 if row else None),
        "row_count": row.row_count if row else None,
        "format": row.format if row else None,
        "deleted": row is None,
    }


def _pii(dataset: Dataset | None, features: list[str]) -> dict[str, Any] | None:
    """What the dataset says about its columns' PII (``column_tags``) and what that meant for this version."""
    if dataset is None:
        return None
    tagged = sorted(name for name, tag in (dataset.column_tags or {}).items() if tag == "pii")
    handling = PII_HANDLING.get(dataset.pii_mode, dataset.pii_mode)
    columns = []
    for name in tagged:
        used = name in features and dataset.pii_mode == PiiMode.HASH
        columns.append(
            {
                "column": name,
                "tag": "pii",
                "handling": handling,
                "in_features": used,
                "effect": "the model reads the hashed values, never the raw ones" if used else "not read by the model",
            }
        )
    statement = (
        f"{len(tagged)} column(s) tagged PII, {handling}. Untagged columns were stored and used as uploaded."
        if tagged
        else NO_PII
    )
    return {"mode": dataset.pii_mode, "columns": columns, "statement": statement}


def _job(version: ModelVersion, manifest: dict[str, Any]) -> dict[str, Any] | None:
    job = version.job
    if job is None:
        job_id = manifest.get("job_id")
        return {"id": job_id, "status": None, "finished_at": None, "deleted": True} if job_id else None
    return {
        "id": str(job.pk),
        "status": job.status,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "deleted": False,
    }


def _first(manifest: dict[str, Any], job, field: str) -> Any:
    value = manifest.get(field)
    if value is None and job is not None:
        value = getattr(job, field, None) or None
    return value


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str)  # bools too (a subclass of int)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?" if value is None else str(value)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.4g}"


# --- Markdown ---------------------------------------------------------------------------------------------------

# What is markup in the middle of a line (md's output never starts one): emphasis, code spans, links and images
# (no "[" means no link, whatever follows), table cells, strikethrough, escapes. "<", ">" and "&" become entities,
# so no HTML, autolink or entity gets through.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
# GFM's autolinks need no markup: a bare "http://" or "https://" URL (any "://" here), "www." and an e-mail address
# become links. Escaping one character of each trigger (a backslash before ASCII punctuation shows the character
# itself) leaves the text as it reads but no trigger in it; "//" is escaped too, so "\://host" is no
# protocol-relative link either.
_AUTOLINK_TRIGGERS = (
    (re.compile(r"://"), r"\:\/\/"),
    (re.compile(r"(www)\.", re.IGNORECASE), r"\1\\."),
    (re.compile(r"@"), r"\\@"),
)
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,99}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def md(value: Any) -> str:
    """A tenant's string as inert Markdown text: one line, no markup, no HTML, no autolinks, no table cell breaks,
    bounded.

    Only for the middle of a line (after a label, or in a table cell): line-start markup (headings, lists,
    quotes, HTML blocks) cannot begin there, and newlines are removed.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(value) if isinstance(value, float) else str(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = _CONTROL.sub(" ", text)
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "…"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    for trigger, broken in _AUTOLINK_TRIGGERS:
        text = trigger.sub(broken, text)
    return text


def code(value: Any) -> str:
    """An id or a digest as a code span (copyable as is) when it is one; anything else as :func:`md` text."""
    if isinstance(value, str) and _IDENTIFIER.fullmatch(value):
        return f"`{value}`"
    return md(value) if value is not None else "absent"


def card_markdown(*, card: dict[str, Any]) -> str:
    """The card as a Markdown document (tenants' strings escaped with :func:`md`)."""
    lines: list[str] = []
    add = lines.append
    add(f"# Model card: {md(card['model'])} v{int(card['version'])}")
    add("")
    add(f"Status: {md(card['status'])}. Published: {md(card['published_at'] or 'absent')}.")
    job = card["job"]
    add(f"Published by job: {code(job['id']) if job else 'absent'}{' (deleted)' if job and job['deleted'] else ''}.")
    runtime = card["runtime"]
    add(f"Runtime: {md(runtime.get('runtime'))} ({md(runtime.get('reason') or '')}).")
    add("")

    add("## Data lineage")
    add("")
    data = card["data"]
    dataset = data["dataset"]
    if dataset:
        rows = [
            ("Dataset", md(dataset["name"]) + (" (deleted)" if dataset["deleted"] else "")),
            ("Dataset version", md(dataset["version"])),
            ("Dataset id", code(dataset["id"])),
            ("sha256", code(dataset["sha256"])),
            ("Rows", md(dataset["row_count"] if dataset["row_count"] is not None else "absent")),
        ]
    else:
        rows = [("Dataset", "absent")]
    rows += [
        ("Feature columns", _md_list(data["feature_columns"])),
        ("Label column", md(data["label_column"]) if data["label_column"] is not None else "absent"),
        ("Label names", _md_list(data["label_names"])),
    ]
    if data["validation_split"] is not None:
        rows.append(("Validation split", md(data["validation_split"])))
    lines += _md_table(("", ""), rows)
    add("")
    add("### PII handling")
    add("")
    pii = data["pii"]
    if pii is None:
        add("Absent: the dataset row no longer exists.")
    else:
        add("Statement: " + md(pii["statement"]))
        for column in pii["columns"]:
            add(f"- {md(column['column'])}: {md(column['handling'])}; {md(column['effect'])}.")
    add("")

    add("## Template and parameters")
    add("")
    template = card["template"]
    rows = [("Template", md(template["name"])), ("Task", md(template["task"] or "absent"))]
    params = template["params"]
    if params is None:
        rows.append(("Parameters", "absent"))
    else:
        rows += [(md(k), md(v)) for k, v in sorted(params.items())]
    lines += _md_table(("", ""), rows)
    add("")

    add("## Metrics (held-out split)")
    add("")
    metrics = card["metrics"]
    lines += _md_table(("Metric", "Value"), [(md(k), md(v)) for k, v in metrics.items()]) if metrics else ["absent"]
    add("")

    add("## Privacy")
    add("")
    privacy = card["privacy"]
    add("Summary: " + md(privacy["summary"]))
    if privacy["statement"]:
        add("")
        lines += _md_table(("", ""), [(md(k), md(v)) for k, v in privacy["statement"].items()])
    add("")

    add("## Explanations")
    add("")
    explanation = card["explanation"]
    if explanation is None:
        add("Method: absent (published before per-prediction explanations).")
    else:
        add(
            f"Method: {md(explanation.get('method'))}, {md(explanation.get('steps'))} steps, "
            f"{md(explanation.get('rule'))} rule, per {md(explanation.get('unit'))}"
            + (f" of {md(explanation['output'])}" if explanation.get("output") else "")
            + "; "
            f"baseline: {md(explanation.get('baseline'))}; attributed at: {md(explanation.get('attributed_at'))}."
        )
    add("")
    global_explanations = card["global_explanations"]
    if global_explanations is None:
        add("Global explanations: absent.")
    else:
        add(
            f"Global explanations: {md(global_explanations.get('method'))}; "
            f"per {md(global_explanations.get('unit'))}, largest first."
        )
        add("")
        top = [t for t in global_explanations.get("top") or [] if isinstance(t, dict)]
        lines += _md_table(
            ("Rank", "Feature", "Mean abs. attribution", "Seen"),
            [
                (str(i), md(t.get("feature")), md(t.get("mean_abs_attribution")), md(t.get("count")))
                for i, t in enumerate(top, 1)
            ],
        )
    if card["absent"]:
        add("")
        add("Absent from this version: " + ", ".join(md(name) for name in card["absent"]) + ".")
    return "\n".join(lines).rstrip() + "\n"


def _md_list(values: list[Any] | None) -> str:
    return "absent" if values is None else (", ".join(md(v) for v in values) or "none")


def _md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out
