"""``mlp``: the platform from a terminal (click + rich), on the SDK.

Results go to stdout (a table, or JSON with ``--json``); progress bars and notes go to stderr, so
``mlp --json … | jq`` always reads clean JSON. Exit codes: 0 done, 1 refused by the API, 2 bad usage or
configuration, 3 a job or dataset failed, 4 not found, 5 not allowed (key, scope, role, quota), 6 the server
could not be reached or stayed unavailable.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from mlplatform_client import errors
from mlplatform_client.client import Client
from mlplatform_client.config import config_is_private, config_path, load_settings, mask, write_profile
from mlplatform_client.resources import DEFAULT_MULTIPART_THRESHOLD
from mlplatform_client.serving import PROTOCOLS

EXIT_API, EXIT_USAGE, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_DENIED, EXIT_UNAVAILABLE = 1, 2, 3, 4, 5, 6
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class State:
    def __init__(self, *, profile, api_url, serving_url, tenant, as_json, timeout) -> None:
        self.options = {"profile": profile, "api_url": api_url, "serving_url": serving_url, "tenant": tenant}
        self.as_json = as_json
        self.timeout = timeout
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            settings = load_settings(
                profile=self.options["profile"],
                api_url=self.options["api_url"],
                serving_url=self.options["serving_url"],
                tenant=self.options["tenant"],
            )
            source = settings.sources.get("api_key", "")
            if source.startswith(str(config_path())) and not config_is_private(config_path()):
                err.print(f"[yellow]warning:[/] {config_path()} holds a key and others can read it (chmod 600)")
            self._client = Client(settings=settings, timeout=self.timeout)
        return self._client


def parse_size(text: str) -> int:
    """``64M``, ``1G``, ``500k`` or a number of bytes."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size (e.g. 64M, 1G, 1048576)") from None


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it is JSON (``epochs=1``, ``units=[8,4]``), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r}: expected key=value")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def emit(state: State, data: Any, render: Callable[[Any], None] | None = None) -> None:
    if state.as_json or render is None:
        out.print_json(json.dumps(data, default=str)) if out.is_terminal else print(json.dumps(data, default=str))
    else:
        render(data)


def handle_errors(command: Callable) -> Callable:
    """Map SDK exceptions to a one-line message on stderr and an exit code (never a traceback, never the key)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except errors.APIError as exc:
            details = f"\n  details: {json.dumps(exc.details)}" if exc.details else ""
            err.print(f"[red]error:[/] {escape(str(exc) + details)}", highlight=False)
            if exc.status == 404:
                sys.exit(EXIT_NOT_FOUND)
            if exc.status in (401, 403):
                sys.exit(EXIT_DENIED)
            if exc.status >= 500 or exc.status == 429:
                sys.exit(EXIT_UNAVAILABLE)
            sys.exit(EXIT_API)
        except errors.TransportError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            sys.exit(EXIT_UNAVAILABLE)
        except errors.ConfigurationError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            sys.exit(EXIT_USAGE)
        except (errors.JobFailedError, errors.DatasetInvalidError) as exc:
            err.print(f"[red]failed:[/] {escape(str(exc))}", highlight=False)
            sys.exit(EXIT_FAILED)
        except (errors.MLPlatformError, TimeoutError, OSError) as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            sys.exit(EXIT_API)

    return wrapper


def json_option(command: Callable) -> Callable:
    """``--json`` on a subcommand too (``mlp models list --json``), same as ``mlp --json models list``."""

    @click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
    @functools.wraps(command)
    def wrapper(*args, as_json: bool = False, **kwargs):
        if as_json:
            click.get_current_context().find_object(State).as_json = True
        return command(*args, **kwargs)

    return wrapper


def byte_progress(description: str, total: int) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    )


# --- the group --------------------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--profile", envvar="MLP_PROFILE", help="Profile of the config file (default: default_profile).")
@click.option("--api-url", help="API address (else $MLP_API_URL, else the profile).")
@click.option("--serving-url", help="Serving address (else $MLP_SERVING_URL, else the profile).")
@click.option("--tenant", help="Tenant slug or id (X-Tenant), for keys in several tenants.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds per request.")
@click.version_option(package_name="mlplatform-client")
@click.pass_context
def cli(ctx, profile, api_url, serving_url, tenant, as_json, timeout):
    """The ML platform's command line. Keys: $MLP_API_KEY, or a profile in ~/.config/mlplatform/config.toml."""
    ctx.obj = State(
        profile=profile, api_url=api_url, serving_url=serving_url, tenant=tenant, as_json=as_json, timeout=timeout
    )


@cli.command()
@click.option("--profile", "name", default="default", show_default=True)
@click.option("--api-url", prompt="API URL", default="http://127.0.0.1:8000")
@click.option("--serving-url", prompt="Serving URL", default="http://127.0.0.1:8001")
@click.option("--api-key", prompt="API key", hide_input=True)
def configure(name, api_url, serving_url, api_key):
    """Save a profile (address and key) in the config file, readable by you only."""
    path = config_path()
    write_profile(path, name, {"api_url": api_url, "serving_url": serving_url, "api_key": api_key})
    err.print(f"saved profile {name!r} in {path} (key {mask(api_key)})", highlight=False)


@cli.command()
@json_option
@click.pass_obj
@handle_errors
def whoami(state: State):
    """The tenant and caller the key belongs to, and where each setting came from (the key masked)."""
    client = state.client
    body = client.get("/api/v1/tenant")
    settings = client.settings
    shown = {
        "api_url": settings.api_url,
        "serving_url": settings.serving_url,
        "api_key": mask(settings.api_key),
        "profile": settings.profile,
        "sources": settings.sources,
        "tenant": body.get("tenant", {}).get("slug"),
        "role": body.get("caller", {}).get("role"),
        "scopes": body.get("caller", {}).get("scopes"),
    }
    emit(state, shown, lambda d: [out.print(f"{k}: {v}", highlight=False) for k, v in d.items()])


# --- datasets ---------------------------------------------------------------------------------------------------


@cli.group()
def datasets():
    """Upload, list and inspect datasets."""


@datasets.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Dataset name; each upload is its next version.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "parquet"]), help="Else detected.")
@click.option("--label-column", default="", help="The label column (checked on upload).")
@click.option("--pii", "pii_columns", multiple=True, help="A PII column (repeat); hashed or dropped before storage.")
@click.option("--pii-mode", type=click.Choice(["hash", "drop"]))
@click.option(
    "--multipart-threshold",
    default=str(DEFAULT_MULTIPART_THRESHOLD // 2**20) + "M",
    show_default=True,
    help="Files this large go as a presigned multipart upload straight to S3.",
)
@click.option("--parallel", default=4, show_default=True, help="Parts sent at once (multipart).")
@click.option("--no-resume", is_flag=True, help="Start a new multipart upload even if one was interrupted.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for validation to end.")
@json_option
@click.pass_obj
@handle_errors
def datasets_upload(
    state: State, file, name, fmt, label_column, pii_columns, pii_mode, multipart_threshold, parallel, no_resume, wait
):
    """Upload FILE as the next version of dataset --name."""
    client = state.client
    threshold = parse_size(multipart_threshold)
    size = file.stat().st_size
    tags = {column: "pii" for column in pii_columns}
    how = "multipart" if size >= threshold and not tags else "direct"
    try:
        with byte_progress("upload", size) as bar:
            task = bar.add_task(f"{file.name} ({how})", total=size)
            dataset = client.datasets.upload(
                file,
                name=name,
                format=fmt,
                label_column=label_column,
                column_tags=tags or None,
                pii_mode=pii_mode,
                multipart_threshold=threshold,
                concurrency=parallel,
                resume=not no_resume,
                progress=lambda n: bar.advance(task, n),
            )
    except KeyboardInterrupt:
        if how == "multipart":
            err.print("interrupted: run the same command again to send only the parts left", highlight=False)
        sys.exit(130)
    err.print(f"uploaded {file.name} ({size} bytes, {how}) as {dataset['name']} v{dataset['version']}", highlight=False)
    if wait:
        with err.status("validating…"):
            dataset = client.datasets.wait(dataset["id"])
    emit(state, dataset | {"upload": how}, _show_dataset)


def _show_dataset(dataset: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in ("id", "name", "version", "status", "format", "row_count", "size_bytes", "label_column", "upload"):
        if key in dataset:
            table.add_row(key, str(dataset[key]))
    out.print(table)
    for column in dataset.get("schema") or []:
        if isinstance(column, dict):
            out.print(f"  {column.get('name')}: {column.get('type')}", highlight=False)


@datasets.command("list")
@click.option("--name")
@click.option("--status", type=click.Choice(["uploading", "validating", "ready", "invalid"]))
@json_option
@click.pass_obj
@handle_errors
def datasets_list(state: State, name, status):
    """Datasets, newest first."""
    rows = state.client.datasets.list(name=name, status=status)
    emit(state, rows, lambda r: _table(r, ["id", "name", "version", "status", "format", "row_count", "size_bytes"]))


@datasets.command("show")
@click.argument("dataset_id")
@json_option
@click.pass_obj
@handle_errors
def datasets_show(state: State, dataset_id):
    """One dataset with its schema."""
    emit(state, state.client.datasets.get(dataset_id), _show_dataset)


@datasets.command("preview")
@click.argument("dataset_id")
@click.option("--rows", default=10, show_default=True, help="1 to 100.")
@json_option
@click.pass_obj
@handle_errors
def datasets_preview(state: State, dataset_id, rows):
    """The first rows as stored."""
    body = state.client.datasets.preview(dataset_id, rows=rows)

    def render(data: dict[str, Any]) -> None:
        table = Table(*data["columns"])
        for row in data["rows"]:
            table.add_row(*[_cell(value) for value in row])
        out.print(table)

    emit(state, body, render)


# --- jobs -------------------------------------------------------------------------------------------------------


@cli.group()
def jobs():
    """Run and follow training jobs."""


@jobs.command("run")
@click.option("--dataset", required=True, help="Dataset id.")
@click.option("--template", required=True, help="Model template (mlp jobs templates).")
@click.option("--model-name", help="Registry name of the model (default: the dataset's name).")
@click.option("--label-column", help="Default: the dataset's label column.")
@click.option("--param", "params", multiple=True, help="Hyperparameter key=value (repeat); values are JSON.")
@click.option("--feature-column", "feature_columns", multiple=True)
@click.option("--validation-split", type=float)
@click.option("--seed", type=int)
@click.option("--max-runtime", "max_runtime_seconds", type=int, help="Runtime budget in seconds.")
@click.option("--follow/--no-follow", default=False, help="Stay and print each epoch's metrics until it ends.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between polls.")
@json_option
@click.pass_obj
@handle_errors
def jobs_run(
    state: State, dataset, template, model_name, label_column, params, feature_columns, follow, interval, **rest
):
    """Submit a training job (and with --follow, watch it to the end)."""
    client = state.client
    if not model_name or not label_column:
        info = client.datasets.get(dataset)
        model_name = model_name or info["name"]
        label_column = label_column or info.get("label_column") or ""
        if not label_column:
            raise click.UsageError("--label-column is needed: the dataset has none")
    job = client.jobs.create(
        dataset=dataset,
        template=template,
        model_name=model_name,
        label_column=label_column,
        params=dict(parse_param(p) for p in params),
        feature_columns=list(feature_columns) or None,
        **rest,
    )
    if not follow:
        emit(state, job, lambda j: out.print(f"job {j['id']} {j['status']}", highlight=False))
        return
    err.print(f"job {job['id']} {job['status']}", highlight=False)
    _follow(state, job["id"], interval)


@jobs.command("follow")
@click.argument("job_id")
@click.option("--interval", default=1.0, show_default=True)
@json_option
@click.pass_obj
@handle_errors
def jobs_follow(state: State, job_id, interval):
    """Watch a job to its end, printing each epoch's metrics."""
    _follow(state, job_id, interval)


def _follow(state: State, job_id: str, interval: float) -> None:
    """Print epochs as they finish (JSON lines with --json); exit 3 unless the job succeeds."""
    status = err.status("queued…") if err.is_terminal and not state.as_json else None
    if status:
        status.start()
    job: dict[str, Any] = {}
    last_state = None
    try:
        for event, data in state.client.jobs.follow(job_id, interval=interval):
            if event == "done":
                job = data
            if state.as_json:
                print(json.dumps({"event": event, **({"job": data} if event != "epoch" else data)}, default=str))
                sys.stdout.flush()
            elif event == "epoch":
                # Above the spinner when both go to one terminal (printed through it), else to stdout.
                (err if status and out.is_terminal else out).print(_epoch_line(data), highlight=False)
            elif event == "progress":
                progress = data.get("progress") or {}
                where = f" epoch {progress['epoch']}/{progress['epochs']}" if progress.get("epochs") else ""
                steps = f" step {progress['step']}/{progress['steps']}" if progress.get("steps") else ""
                if status:
                    status.update(f"{data['status']}{where}{steps}")
                elif data["status"] != last_state:  # no spinner off a terminal: one line per state
                    err.print(f"job {data['status']}", highlight=False)
                last_state = data["status"]
    finally:
        if status:
            status.stop()
    if job["status"] != "succeeded":
        raise errors.JobFailedError(job)
    if not state.as_json:
        metrics = job.get("metrics") or {}
        shown = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        out.print(
            f"succeeded: {job['model_name']} version {job['model_version']}  "
            + "  ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items())),
            highlight=False,
        )


def _epoch_line(row: dict[str, Any]) -> str:
    values = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, int | float))
    return f"epoch {row['epoch']}  {values}"


@jobs.command("show")
@click.argument("job_id")
@json_option
@click.pass_obj
@handle_errors
def jobs_show(state: State, job_id):
    """A job's state, progress, metrics and published version."""
    job = state.client.jobs.get(job_id)
    fields = ["id", "status", "template", "model_name", "model_version", "progress", "attempts", "error_code"]
    emit(state, job, lambda j: _pairs(j, [*fields, "metrics"]))


@jobs.command("list")
@click.option("--status")
@click.option("--model-name")
@json_option
@click.pass_obj
@handle_errors
def jobs_list(state: State, status, model_name):
    """Jobs, newest first."""
    rows = state.client.jobs.list(status=status, model_name=model_name)
    emit(state, rows, lambda r: _table(r, ["id", "status", "template", "model_name", "model_version", "created_at"]))


@jobs.command("logs")
@click.argument("job_id")
@click.option("--lines", default=100, show_default=True)
@json_option
@click.pass_obj
@handle_errors
def jobs_logs(state: State, job_id, lines):
    """The tail of a job's log."""
    rows = state.client.jobs.logs(job_id, lines=lines)
    emit(state, rows, lambda r: [out.print(f"{line['time']}  {line['message']}", highlight=False) for line in r])


@jobs.command("cancel")
@click.argument("job_id")
@json_option
@click.pass_obj
@handle_errors
def jobs_cancel(state: State, job_id):
    """Cancel a job (a running one stops at its next batch, keeping its checkpoint)."""
    job = state.client.jobs.cancel(job_id)
    emit(state, job, lambda j: out.print(f"job {j['id']} {j['status']}", highlight=False))


@jobs.command("templates")
@json_option
@click.pass_obj
@handle_errors
def jobs_templates(state: State):
    """Model templates and their hyperparameters."""
    rows = state.client.jobs.templates()
    emit(state, rows, lambda r: [out.print(f"{t.get('name')}: {t.get('description', '')}", highlight=False) for t in r])


# --- models -----------------------------------------------------------------------------------------------------


@cli.group()
def models():
    """The model registry: list, promote, roll back, download, export, model cards."""


@models.command("list")
@click.argument("name", required=False)
@json_option
@click.pass_obj
@handle_errors
def models_list(state: State, name):
    """Models with their aliases; with NAME, that model's versions."""
    client = state.client
    if name:
        rows = client.models.versions(name)
        emit(state, rows, lambda r: _table(r, ["version", "status", "aliases", "template", "created_at"]))
    else:
        rows = client.models.list()
        emit(state, rows, lambda r: _table(r, ["name", "latest_version", "aliases", "traffic"]))


@models.command("promote")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--alias", default="production", show_default=True)
@json_option
@click.pass_obj
@handle_errors
def models_promote(state: State, name, version, alias):
    """Point an alias (production) at VERSION; serving follows within seconds."""
    model = state.client.models.promote(name, version, alias=alias)
    emit(state, model, lambda m: out.print(f"{name}: {alias} -> {m['aliases'].get(alias)}", highlight=False))


@models.command("rollback")
@click.argument("name")
@click.option("--alias", default="production", show_default=True)
@json_option
@click.pass_obj
@handle_errors
def models_rollback(state: State, name, alias):
    """Move an alias back to the version it pointed at before its last move."""
    model = state.client.models.rollback(name, alias=alias)
    emit(state, model, lambda m: out.print(f"{name}: {alias} -> {m['aliases'].get(alias)}", highlight=False))


@models.command("download")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--out", "destination", default=".", type=click.Path(file_okay=False, path_type=Path), show_default=True)
@click.option("--archive", type=click.Path(dir_okay=False, path_type=Path), help="Also keep the .tar.gz here.")
@click.option(
    "--via",
    type=click.Choice(["archive", "files"]),
    default="archive",
    show_default=True,
    help="One .tar.gz from the API, or each file from its presigned storage URL.",
)
@json_option
@click.pass_obj
@handle_errors
def models_download(state: State, name, version, destination, archive, via):
    """Download VERSION into OUT/NAME/VERSION (TF Serving's layout), every file checked against the manifest."""
    if via == "files":
        if archive:
            raise click.UsageError("--archive goes with --via archive")
        folder = state.client.models.download_files(name, version, destination)
    else:
        with byte_progress("download", 0) as bar:
            task = bar.add_task(f"{name} v{version}", total=None)
            folder = state.client.models.download(
                name, version, destination, archive=archive, progress=lambda n: bar.advance(task, n)
            )
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    emit(state, {"path": str(folder), "files": files}, lambda d: out.print(f"{d['path']} ({len(files)} files)"))


@models.command("card")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--markdown", is_flag=True, help="The card as Markdown (to paste into a review) instead of JSON.")
@click.pass_obj
@handle_errors
def models_card(state: State, name, version, markdown):
    """VERSION's model card: lineage, PII handling, params, metrics, privacy statement, explanations."""
    if markdown:
        click.echo(state.client.models.card(name, version, markdown=True), nl=False)
    else:
        emit(state, state.client.models.card(name, version))


@models.command("export")
@click.argument("name")
@click.option("--engine", type=click.Choice(["tf-serving", "kserve"]), default="tf-serving", show_default=True)
@click.option("--base-path", help="Where the engine finds the version folders, if not the platform's bucket.")
@click.pass_obj
@handle_errors
def models_export(state: State, name, engine, base_path):
    """Configuration for an existing engine: TF Serving model_config_list or a KServe InferenceService."""
    click.echo(state.client.models.export(name, engine=engine, base_path=base_path), nl=False)


# --- predict and explain ----------------------------------------------------------------------------------------


@cli.command()
@click.argument("model")
@click.option("--json", "body", help='The request body, e.g. \'{"instances": ["12 85 3"]}\'.')
@click.option("--file", "body_file", type=click.File("r"), help="Read the body from a file (- for stdin).")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="tf-serving", show_default=True)
@click.option("--version", type=int, help="A version number.")
@click.option("--alias", help="An alias (production, staging, ...).")
@click.pass_obj
@handle_errors
def predict(state: State, model, body, body_file, protocol, version, alias):
    """Ask the serving process for predictions (prints the answer as JSON)."""
    payload = _request_body(body, body_file, version, alias)
    answer = state.client.predict(model, payload, protocol=protocol, version=version, alias=alias)
    err.print(f"answered by {model} version {answer.model_version}", highlight=False)
    print(json.dumps(answer.body))


@cli.command()
@click.argument("model")
@click.option("--json", "body", help='The request body, e.g. \'{"instances": ["12 85 3"]}\'.')
@click.option("--file", "body_file", type=click.File("r"), help="Read the body from a file (- for stdin).")
@click.option("--version", type=int, help="A version number.")
@click.option("--alias", help="An alias (production, staging, ...).")
@click.pass_obj
@handle_errors
def explain(state: State, model, body, body_file, version, alias):
    """Ask the serving process to explain its predictions for some instances (prints the answer as JSON).

    Each explanation gives every feature's, token's or id position's attribution to the explained output;
    explanations are billed apart from predictions.
    """
    payload = _request_body(body, body_file, version, alias)
    if set(payload) != {"instances"} or not isinstance(payload["instances"], list):
        raise click.UsageError('the body must be {"instances": [...]}')
    answer = state.client.explain(model, payload["instances"], version=version, alias=alias)
    err.print(f"explained by {model} version {answer.model_version}", highlight=False)
    print(json.dumps(answer.body))


def _request_body(body: str | None, body_file, version: int | None, alias: str | None) -> dict[str, Any]:
    """The JSON object given with --json or --file (exactly one), with at most one of --version and --alias."""
    if (body is None) == (body_file is None):
        raise click.UsageError("give the body with --json or --file (one of them)")
    if version is not None and alias is not None:
        raise click.UsageError("give --version or --alias, not both")
    try:
        payload = json.loads(body if body is not None else body_file.read())
    except ValueError as exc:
        raise click.UsageError(f"the body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise click.UsageError("the body must be a JSON object")
    return payload


# --- rendering --------------------------------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    table = Table(*columns)
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    out.print(table)


def _pairs(data: dict[str, Any], keys: list[str]) -> None:
    for key in keys:
        out.print(f"{key}: {_cell(data.get(key))}", highlight=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def main() -> None:
    cli(prog_name="mlp")


if __name__ == "__main__":
    main()
