"""Object storage: the one code path to S3 (SeaweedFS here, any S3 in production).

Keys are always built from a tenant id (``tenants/<tenant-id>/...``) by
:func:`tenant_key`, which refuses path tricks, so no caller can write outside
a tenant's prefix. Uploads and downloads stream in parts; nothing here holds
a whole object in memory.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from django.conf import settings

TENANTS_ROOT = "tenants"
_DELETE_BATCH = 1000
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,254}$")
# boto3's own defaults (8 MB parts, 10 threads): at most ~80 MB of part buffers per transfer.
TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=8 * 1024 * 1024,
    multipart_chunksize=8 * 1024 * 1024,
    max_concurrency=10,
    use_threads=True,
)


class UnsafeKeyError(ValueError):
    """A key part would escape its tenant's prefix or is not a plain name."""


def file_sha256(path) -> str:
    """The hex sha256 of a local file, read in 1 MB blocks (manifests are written and checked with it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def tenant_prefix(tenant_id: uuid.UUID | str) -> str:
    """``tenants/<tenant-id>/`` for a tenant's UUID (anything else is refused)."""
    try:
        canonical = str(uuid.UUID(str(tenant_id)))
    except ValueError:
        raise UnsafeKeyError(f"not a tenant id: {tenant_id!r}") from None
    return f"{TENANTS_ROOT}/{canonical}/"


def tenant_key(tenant_id: uuid.UUID | str, *parts: str) -> str:
    """Join plain name parts under the tenant's prefix.

    Each part must be a plain name (letters, digits, ``. _ = -``; not ``.`` or
    ``..``): separators, NUL bytes and Unicode look-alikes cannot smuggle a
    key out of the prefix.
    """
    if not parts:
        raise UnsafeKeyError("a key needs at least one part below the tenant prefix")
    for part in parts:
        if not isinstance(part, str) or not _SAFE_PART.match(part) or part in {".", ".."}:
            raise UnsafeKeyError(f"unsafe key part: {part!r}")
    return tenant_prefix(tenant_id) + "/".join(parts)


@functools.cache
def client():
    """A thread-safe boto3 S3 client configured from settings (one per process)."""
    return _client_for(settings.S3_ENDPOINT_URL)


@functools.cache
def presigning_client():
    """The client that signs URLs handed to tenants: for the public endpoint, since the host is signed too."""
    if settings.S3_PUBLIC_ENDPOINT_URL == settings.S3_ENDPOINT_URL:
        return client()
    return _client_for(settings.S3_PUBLIC_ENDPOINT_URL)


def _client_for(endpoint_url: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=settings.S3_ACCESS_KEY_ID,
        aws_secret_access_key=settings.S3_SECRET_ACCESS_KEY,
        region_name=settings.S3_REGION,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def bucket() -> str:
    return settings.S3_BUCKET


def _put_extra_args(content_type: str | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if settings.S3_SERVER_SIDE_ENCRYPTION:
        extra["ServerSideEncryption"] = settings.S3_SERVER_SIDE_ENCRYPTION
    if content_type:
        extra["ContentType"] = content_type
    return extra


def ensure_bucket() -> None:
    """Create the bucket if it does not exist (called at start)."""
    try:
        client().head_bucket(Bucket=bucket())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
            raise
        client().create_bucket(Bucket=bucket())


def upload_stream(key: str, fileobj: IO[bytes], *, content_type: str | None = None) -> None:
    """Stream a file-like object to ``key`` (multipart above 8 MB, constant memory)."""
    client().upload_fileobj(
        fileobj, bucket(), key, ExtraArgs=_put_extra_args(content_type) or None, Config=TRANSFER_CONFIG
    )


def put_bytes(key: str, data: bytes, *, content_type: str | None = None) -> None:
    client().put_object(Bucket=bucket(), Key=key, Body=data, **_put_extra_args(content_type))


def download_stream(key: str, fileobj: IO[bytes]) -> None:
    """Stream an object into a writable file-like object."""
    client().download_fileobj(bucket(), key, fileobj, Config=TRANSFER_CONFIG)


def iter_chunks(key: str, *, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """Yield an object's bytes in chunks (for parsers that read as they go)."""
    body = client().get_object(Bucket=bucket(), Key=key)["Body"]
    try:
        yield from body.iter_chunks(chunk_size)
    finally:
        body.close()


def get_bytes(key: str) -> bytes:
    """A small object's whole content (manifests, metadata); not for datasets."""
    return client().get_object(Bucket=bucket(), Key=key)["Body"].read()


def head(key: str) -> dict[str, Any] | None:
    """The object's metadata, or None when it does not exist."""
    try:
        return client().head_object(Bucket=bucket(), Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise


def list_keys(prefix: str) -> Iterator[str]:
    paginator = client().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket(), Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"]


def delete_prefix(prefix: str) -> int:
    """Delete every object under ``prefix`` (which must be inside a tenant); returns the count."""
    if not prefix.startswith(f"{TENANTS_ROOT}/") or not prefix.endswith("/") or len(prefix.split("/")) < 3:
        raise UnsafeKeyError(f"refusing to delete outside a tenant folder: {prefix!r}")
    deleted = 0
    batch: list[dict[str, str]] = []
    for key in list_keys(prefix):
        batch.append({"Key": key})
        if len(batch) == _DELETE_BATCH:
            deleted += _delete_batch(batch)
            batch = []
    if batch:
        deleted += _delete_batch(batch)
    return deleted


def _delete_batch(batch: list[dict[str, str]]) -> int:
    client().delete_objects(Bucket=bucket(), Delete={"Objects": batch, "Quiet": True})
    return len(batch)


def reachable() -> tuple[bool, str]:
    """Whether the bucket answers, with a reason when it does not (for /readyz)."""
    try:
        client().head_bucket(Bucket=bucket())
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return False, f"{type(exc).__name__}: {exc}"[:200]
    return True, "ok"


class RangeReader(io.RawIOBase):
    """A seekable, read-only file over one object, fetched by ranged GETs.

    Wrap it in ``io.BufferedReader(reader, buffer_size=…)`` for sequential
    parsing (CSV, JSON lines) or hand it to pyarrow, which seeks to the
    Parquet footer and reads row groups: either way only a buffer is in memory.
    """

    def __init__(self, key: str, size: int | None = None, digest=None) -> None:
        super().__init__()
        self.key = key
        self.size = size if size is not None else head_or_raise(key)["ContentLength"]
        self.position = 0
        # With ``digest`` (a hashlib object), bytes read in order are hashed as they pass,
        # so a sequential parse also yields the object's checksum without a second download.
        self.digest = digest
        self.hashed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        if self.position >= self.size or len(buffer) == 0:
            return 0
        end = min(self.position + len(buffer), self.size) - 1
        data = client().get_object(Bucket=bucket(), Key=self.key, Range=f"bytes={self.position}-{end}")["Body"].read()
        data = data[: end - self.position + 1]  # a server that ignores Range sends more than asked
        if self.digest is not None and self.position == self.hashed:
            self.digest.update(data)
            self.hashed += len(data)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def head_or_raise(key: str) -> dict[str, Any]:
    meta = head(key)
    if meta is None:
        raise FileNotFoundError(key)
    return meta


def open_reader(
    key: str, *, buffer_size: int = 8 * 1024 * 1024, size: int | None = None, digest=None
) -> io.BufferedReader:
    """A buffered, seekable reader over an object (constant memory); see RangeReader for ``digest``."""
    return io.BufferedReader(RangeReader(key, size=size, digest=digest), buffer_size=buffer_size)


def create_multipart_upload(key: str) -> str:
    extra = _put_extra_args()
    return client().create_multipart_upload(Bucket=bucket(), Key=key, **extra)["UploadId"]


def presigned_part_url(
    key: str, *, upload_id: str, part_number: int, content_length: int, expires_in: int | None = None
) -> str:
    """A URL for PUTting one part of exactly ``content_length`` bytes.

    The length is a signed header (``X-Amz-SignedHeaders=content-length;host``), so S3 refuses a PUT of any
    other size with ``SignatureDoesNotMatch``: a client cannot store more than it declared (and was counted for).
    """
    return presigning_client().generate_presigned_url(
        "upload_part",
        Params={
            "Bucket": bucket(),
            "Key": key,
            "UploadId": upload_id,
            "PartNumber": part_number,
            "ContentLength": content_length,
        },
        ExpiresIn=expires_in or settings.S3_PRESIGNED_URL_TTL_SECONDS,
    )


def presigned_get_url(key: str, *, filename: str | None = None, expires_in: int | None = None) -> str:
    """A URL to GET one object; ``filename`` makes browsers save it under that name."""
    params = {"Bucket": bucket(), "Key": key}
    if filename:
        params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
    return presigning_client().generate_presigned_url(
        "get_object", Params=params, ExpiresIn=expires_in or settings.S3_PRESIGNED_URL_TTL_SECONDS
    )


def list_parts(key: str, *, upload_id: str) -> Iterator[dict[str, Any]]:
    """The parts S3 holds for a multipart upload (``PartNumber``, ``Size``, ``ETag``), all pages."""
    paginator = client().get_paginator("list_parts")
    for page in paginator.paginate(Bucket=bucket(), Key=key, UploadId=upload_id):
        yield from page.get("Parts", [])


def complete_multipart_upload(key: str, *, upload_id: str, parts: list[dict[str, Any]]) -> None:
    client().complete_multipart_upload(Bucket=bucket(), Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})


def abort_multipart_upload(key: str, *, upload_id: str) -> None:
    try:
        client().abort_multipart_upload(Bucket=bucket(), Key=key, UploadId=upload_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"NoSuchUpload", "404"}:
            raise


def delete_key(key: str) -> None:
    client().delete_object(Bucket=bucket(), Key=key)


class ObjectWriter(io.RawIOBase):
    """A write-only file that streams into one object as a multipart upload, hashing and counting as it goes.

    Parts of ``part_size`` bytes are uploaded on a few threads while the caller
    keeps writing (parsing, encoding), so producing the bytes and sending them
    overlap; at most ``max_in_flight`` parts are buffered. An object smaller than
    one part is a single PUT. Use it as a context manager: leaving the block by
    an exception aborts the upload, so no part is left behind; otherwise the
    upload completes and ``sha256``/``size`` describe the object.
    """

    def __init__(
        self,
        key: str,
        *,
        content_type: str | None = None,
        part_size: int = 8 * 1024 * 1024,
        max_in_flight: int = 4,
    ) -> None:
        super().__init__()
        self.key = key
        self.content_type = content_type
        self.part_size = part_size
        self.size = 0
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Any] = []  # futures of {"PartNumber", "ETag"}, in order
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="s3-part")
        self._slots = threading.Semaphore(max_in_flight)
        self.sha256 = ""

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self._buffer += view
        self.size += len(view)
        while len(self._buffer) >= self.part_size:
            part = bytes(self._buffer[: self.part_size])
            del self._buffer[: self.part_size]
            self._send(part)
        return len(view)

    def _send(self, part: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = create_multipart_upload(self.key)
        for done in self._parts:  # surface a failed part now, not after the whole stream was produced
            if done.done() and done.exception() is not None:
                raise done.exception()
        number = len(self._parts) + 1
        self._slots.acquire()  # bounded memory: wait while max_in_flight parts are being sent
        self._parts.append(self._pool.submit(self._upload_part, number, part))

    def _upload_part(self, number: int, part: bytes) -> dict[str, Any]:
        try:
            response = client().upload_part(
                Bucket=bucket(), Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=part
            )
            return {"PartNumber": number, "ETag": response["ETag"]}
        finally:
            self._slots.release()

    def finish(self) -> None:
        """Send what is buffered and complete the object (idempotent once done)."""
        if self.closed:
            return
        try:
            if self._upload_id is None:
                client().put_object(
                    Bucket=bucket(), Key=self.key, Body=bytes(self._buffer), **_put_extra_args(self.content_type)
                )
            else:
                if self._buffer:
                    self._send(bytes(self._buffer))
                parts = [future.result() for future in self._parts]
                complete_multipart_upload(self.key, upload_id=self._upload_id, parts=parts)
            self._buffer = bytearray()
            self.sha256 = self._hash.hexdigest()
        finally:
            self._pool.shutdown(wait=True)
            super().close()

    def abort(self) -> None:
        """Drop everything sent so far (safe to call more than once)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._upload_id is not None:
            abort_multipart_upload(self.key, upload_id=self._upload_id)
            self._upload_id = None
        self._buffer = bytearray()
        super().close()

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()
