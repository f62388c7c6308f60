"""Sending a dataset file: one streamed form POST for small files, a presigned multipart upload for large ones.

Direct (``POST /api/v1/datasets``): the form fields go before the file, with ``column_tags`` among them (``{}``
when no column is PII), so the API streams the file into storage as it arrives instead of staging it on disk.
The body is generated from the open file (never held in memory) and reports its progress.

Multipart (``POST /api/v1/datasets/uploads``): the API signs one URL per part, each for the part's exact length;
the parts are PUT straight to S3 (a few at a time, each retried), then ``…/complete`` checks them. Progress is
kept in a small state file so that running the same upload again after an interruption sends only the parts S3
does not have yet (with freshly signed URLs), under the same upload.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import requests

from mlplatform_client import errors

if TYPE_CHECKING:
    from mlplatform_client.client import Client

# Called with the number of bytes just sent (from the upload's threads); negative when a failed part is sent again.
Progress = Callable[[int], None]
CHUNK = 1024 * 1024
PART_ATTEMPTS = 5


class MultipartBody:
    """A ``multipart/form-data`` body read from an open file chunk by chunk, with a known length.

    ``requests`` streams any iterable with a length (``Content-Length`` set, no chunked encoding).
    """

    def __init__(
        self, fields: dict[str, str], *, file: BinaryIO, filename: str, size: int, progress: Progress | None = None
    ) -> None:
        self.boundary = f"mlp-{uuid.uuid4().hex}"
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(k)}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        )
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="{_quote(filename)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.head, self.tail = head, f"\r\n--{self.boundary}--\r\n".encode()
        self.file, self.size, self.progress = file, size, progress
        self._start = file.tell()
        self._pending = b""
        self._stage = 0

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def seek(self, offset: int, whence: int = 0) -> None:
        """Only back to the start, for a retry."""
        self.file.seek(self._start)
        self._pending, self._stage = b"", 0

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk

    def read(self, size: int = -1) -> bytes:
        size = CHUNK if size is None or size < 0 else size
        while len(self._pending) < size and self._stage < 3:
            if self._stage == 0:
                self._pending += self.head
                self._stage = 1
            elif self._stage == 1:
                data = self.file.read(CHUNK)
                if data:
                    self._pending += data
                    if self.progress:
                        self.progress(len(data))
                else:
                    self._stage = 2
            else:
                self._pending += self.tail
                self._stage = 3
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")


def form_fields(
    *, name: str, fmt: str | None, label_column: str, column_tags: dict[str, str] | None, pii_mode: str | None
) -> dict[str, str]:
    """The form fields in the order that lets the API stream the file (``column_tags`` before it, always)."""
    fields = {"name": name}
    if fmt:
        fields["format"] = fmt
    if label_column:
        fields["label_column"] = label_column
    if pii_mode:
        fields["pii_mode"] = pii_mode
    fields["column_tags"] = json.dumps(column_tags or {})
    return fields


def upload_direct(
    client: Client,
    path: Path,
    *,
    fields: dict[str, str],
    progress: Progress | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    size = path.stat().st_size
    with path.open("rb") as handle:
        body = MultipartBody(fields, file=handle, filename=path.name, size=size, progress=progress)
        response = client.request(
            "POST",
            "/api/v1/datasets",
            data=body,
            headers={"Content-Type": body.content_type},
            idempotency_key=idempotency_key,
            timeout=max(client.timeout, 600.0),
        )
    return response.json()


# --- presigned multipart upload ------------------------------------------------------------------------------------


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mlplatform" / "uploads"


def _state_file(client: Client, path: Path, name: str) -> Path:
    stat = path.stat()
    identity = f"{client.api_url}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{name}"
    return state_dir() / (hashlib.sha256(identity.encode()).hexdigest()[:32] + ".json")


def upload_multipart(
    client: Client,
    path: Path,
    *,
    fields: dict[str, str],
    progress: Progress | None = None,
    concurrency: int = 4,
    resume: bool = True,
) -> dict[str, Any]:
    """Start (or resume) a presigned multipart upload of ``path`` and complete it; returns the dataset."""
    size = path.stat().st_size
    state_path = _state_file(client, path, fields["name"])
    state = _load_state(state_path) if resume else None
    upload = None
    if state:
        try:
            upload = client.get(f"/api/v1/datasets/uploads/{state['upload_id']}")
        except errors.NotFoundError:
            upload = None
        if upload is not None and upload["status"] == "completed":  # completed, but its answer was lost
            state_path.unlink(missing_ok=True)
            return client.get(f"/api/v1/datasets/{upload['dataset']['id']}")
        if upload is None or upload["status"] != "pending":
            state, upload = None, None
        else:
            upload = client.post(f"/api/v1/datasets/uploads/{state['upload_id']}/part-urls")
    if upload is None:
        body: dict[str, Any] = {"name": fields["name"], "size": size, "filename": path.name}
        for key in ("format", "label_column"):
            if fields.get(key):
                body[key] = fields[key]
        tags = json.loads(fields.get("column_tags") or "{}")
        if tags:
            body["column_tags"] = tags
        upload = client.post("/api/v1/datasets/uploads", body)
        state = {"upload_id": upload["id"], "etags": {}}
    done: dict[str, str] = dict(state["etags"])
    state_path.parent.mkdir(parents=True, exist_ok=True)
    _save_state(state_path, state)
    part_size = int(upload["part_size"])
    if progress:
        progress(sum(p["size"] for p in upload["parts"] if str(p["part_number"]) in done))
    lock = threading.Lock()
    urls = {p["part_number"]: p for p in upload["parts"]}

    def fresh_url(number: int) -> dict[str, Any]:
        with lock:
            renewed = client.post(f"/api/v1/datasets/uploads/{upload['id']}/part-urls")
            urls.update({p["part_number"]: p for p in renewed["parts"]})
            return urls[number]

    stop = threading.Event()  # set on the first failure or interruption: parts not started yet are not sent

    def send(number: int) -> None:
        if stop.is_set():
            return
        try:
            send_part(number)
        except BaseException:
            stop.set()
            raise

    def send_part(number: int) -> None:
        part = urls[number]
        with path.open("rb") as handle:
            handle.seek((number - 1) * part_size)
            data = handle.read(part["size"])
        etag = put_part(part, data, renew=lambda: fresh_url(number), progress=progress)
        with lock:
            done[str(number)] = etag
            state["etags"] = dict(done)
            _save_state(state_path, state)

    pending = [n for n in sorted(urls) if str(n) not in done]
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(pending) or 1))) as pool:
        futures = [pool.submit(send, n) for n in pending]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    parts = [{"part_number": int(n), "etag": etag} for n, etag in sorted(done.items(), key=lambda i: int(i[0]))]
    dataset = client.post(f"/api/v1/datasets/uploads/{upload['id']}/complete", {"parts": parts})
    state_path.unlink(missing_ok=True)
    return dataset


class _CountedBytes:
    """A part's bytes as a body that reports each block as it is read (``requests`` streams it, with its length)."""

    def __init__(self, data: bytes, progress: Progress | None) -> None:
        self.view, self.progress, self.sent = memoryview(data), progress, 0

    def __len__(self) -> int:
        return len(self.view)

    def __iter__(self) -> Iterator[bytes]:
        while block := self.read(64 * 1024):
            yield block

    def read(self, size: int = -1) -> bytes:
        size = len(self.view) - self.sent if size is None or size < 0 else size
        block = bytes(self.view[self.sent : self.sent + size])
        self.sent += len(block)
        if block and self.progress:
            self.progress(len(block))
        return block

    def take_back(self) -> None:
        """The attempt failed: what it counted is counted again by the next one."""
        if self.sent and self.progress:
            self.progress(-self.sent)
        self.sent = 0


def put_part(
    part: dict[str, Any], data: bytes, *, renew: Callable[[], dict[str, Any]], progress: Progress | None = None
) -> str:
    """PUT one part to its presigned URL (no API key: the URL is the credential); retried, re-signed on 403."""
    failure = ""
    for attempt in range(PART_ATTEMPTS):
        body = _CountedBytes(data, progress)
        try:
            response = requests.put(part["url"], data=body, timeout=300)
        except (requests.ConnectionError, requests.Timeout) as exc:
            failure, status = str(exc), None
        else:
            if response.status_code < 300:
                return response.headers["ETag"]
            failure, status = f"S3 answered {response.status_code}: {response.text[:300]}", response.status_code
        body.take_back()
        if status == 403:  # the signature expired (URLs live minutes): sign afresh
            part = renew()
        elif status is not None and status < 500:
            break
        time.sleep(min(2**attempt * 0.5, 10))
    raise errors.TransportError(f"part {part['part_number']} could not be sent: {failure}")


def _load_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "upload_id" in state else None


def _save_state(path: Path, state: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    temporary.replace(path)
