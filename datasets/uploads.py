"""Receiving ``POST /api/v1/datasets``: the file is streamed to S3 while it arrives, or staged on local disk.

Streamed (the fast path). When the form fields come before the file and ``column_tags`` among them is empty
(``{}``), no column needs rewriting, so the bytes go straight into the dataset's object as a multipart upload
while the request body is still arriving (:class:`core.storage.ObjectWriter`): no copy on disk, no second
upload. The first ``head_bytes`` are held in memory first; the head checks run on them before any part is sent,
and a file no larger than that is never streamed at all (it is stored after every check, like a staged one).

Staged (the fallback). Otherwise columns may be tagged PII, and the tags may only arrive after the file, so
streaming could put raw PII in storage: the file is written to a temporary file in ``DATASET_STAGING_DIR`` and
``services.create_dataset`` hashes or drops the PII columns before anything is uploaded.

Either way the bytes are hashed and counted as they arrive and reading stops the moment the tenant's limit is
passed (the view answers 413 or 403), and fields that came before the file are checked before its bytes are read.
Whatever a refused or failed request streamed is aborted or deleted by :meth:`DatasetUploadHandler.discard`.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from typing import Any, NoReturn

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile, TemporaryUploadedFile, UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import DataAndFiles, MultiPartParser, get_encoding

from core import storage
from core.errors import ServiceError
from core.storage import ObjectWriter
from datasets import services
from datasets.readers import detect_format
from datasets.serializers import DatasetCreateSerializer

UPLOAD_FIELD = "file"
# Held in memory before streaming starts: the head checks read HEAD_BYTES and the first HEAD_ROWS rows.
HEAD_KEEP_BYTES = 4 * 1024 * 1024


class StagedUpload(TemporaryUploadedFile):
    """A file staged on local disk, with its digest."""

    sha256: str


class HeldUpload(InMemoryUploadedFile):
    """A file small enough to be held whole in memory, with its digest; stored like a staged one."""

    sha256: str


class StreamedUpload(UploadedFile):
    """A file already in its object (``stored``); the file object itself holds no bytes."""

    sha256: str
    stored: services.StoredObject


class _PastHead(Exception):
    """A check needs bytes beyond the head held in memory: it cannot decide yet."""


class _HeadOnly(io.BytesIO):
    """The head as a stream that raises :class:`_PastHead` instead of ending (more of the file follows)."""

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data and size != 0:
            raise _PastHead
        return data


def check_early_fields(fields) -> dict[str, Any]:
    """Check the form fields that came before the file, before its bytes are read; returns them validated.

    Only the fields present are checked (the others may follow the file); the view checks the whole form again.
    """
    serializer = DatasetCreateSerializer(data=fields, partial=True)
    serializer.is_valid(raise_exception=True)
    data = dict(serializer.validated_data)
    if "name" in data:
        services.check_name(data["name"])
    services.check_column_tags(data.get("column_tags"))
    return data


def check_head(head: bytes, *, fields: dict[str, Any], filename: str) -> str:
    """Run the head checks on the bytes held in memory, before any part is sent; returns the format.

    A check that needs more than the head (a Parquet footer, rows longer than the head) passes here undecided:
    ``create_dataset`` checks the stored object again with the complete form, which decides.
    """
    fmt = fields.get("format") or detect_format(head[: services.HEAD_BYTES], filename)
    if fmt == "parquet":
        return fmt
    try:
        return services.inspect_head(
            _HeadOnly(head), fmt=fmt, filename=filename, label_column=fields.get("label_column", ""), tags={}
        )
    except _PastHead:
        return fmt


class _Staging:
    """Today's path: chunks go to a temporary file on local disk, hashed as they pass."""

    def __init__(self, upload: StagedUpload) -> None:
        self.upload = upload
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.hash.update(data)
        self.upload.write(data)

    def complete(self, size: int) -> UploadedFile:
        self.upload.seek(0)
        self.upload.size = size
        self.upload.sha256 = self.hash.hexdigest()
        return self.upload

    def discard(self) -> None:
        self.upload.close()


class _Streaming:
    """The fast path: the head is held and checked in memory, then everything goes to the dataset's object."""

    def __init__(self, handler: DatasetUploadHandler, *, fields: dict[str, Any]) -> None:
        self.handler = handler
        self.fields = fields
        self.head = bytearray()
        self.writer: ObjectWriter | None = None
        self.stored: services.StoredObject | None = None

    def write(self, data: bytes) -> None:
        if self.writer is not None:
            self.writer.write(data)
            return
        self.head += data
        if len(self.head) > self.handler.head_bytes:
            self._start()

    def _start(self) -> None:
        """Check the head, then open the object under the format it shows and send what was held."""
        handler = self.handler
        fmt = check_head(bytes(self.head), fields=self.fields, filename=handler.file_name or "")
        key = services.dataset_key(tenant_id=handler.tenant_id, dataset_id=handler.dataset_id, fmt=fmt)
        self.writer = ObjectWriter(key)
        self.writer.write(self.head)
        self.head = bytearray()

    def complete(self, size: int) -> UploadedFile:
        handler = self.handler
        if self.writer is None:  # the whole file fit in the head: nothing was sent, store it like a staged one
            held = HeldUpload(
                io.BytesIO(self.head), UPLOAD_FIELD, handler.file_name, handler.content_type, size, handler.charset
            )
            held.sha256 = hashlib.sha256(self.head).hexdigest()
            return held
        self.writer.finish()
        self.stored = services.StoredObject(
            dataset_id=handler.dataset_id, key=self.writer.key, sha256=self.writer.sha256, size=self.writer.size
        )
        streamed = StreamedUpload(io.BytesIO(), handler.file_name, handler.content_type, size, handler.charset)
        streamed.sha256, streamed.stored = self.stored.sha256, self.stored
        return streamed

    def discard(self) -> None:
        """Abort an unfinished multipart upload, or delete the object a refused request streamed."""
        if self.stored is not None:
            storage.delete_key(self.stored.key)
            self.stored = None
        elif self.writer is not None and not self.writer.sha256:  # sha256 is set once the object is complete
            self.writer.abort()
        self.writer = None


class DatasetUploadHandler(FileUploadHandler):
    """Receives the ``file`` field of a dataset upload: streamed to S3 or staged on disk (see the module)."""

    chunk_size = 1024 * 1024
    head_bytes = HEAD_KEEP_BYTES

    def __init__(self, request=None, *, limit_bytes: int) -> None:
        super().__init__(request)
        self.limit_bytes = limit_bytes
        # Decided before the body is read, so the object key is known when the file starts.
        self.dataset_id = uuid.uuid4()
        self.tenant_id: uuid.UUID | None = None  # set once the caller is known; without it nothing is streamed
        self.fields = None  # the form fields parsed so far (given by DatasetFormParser)
        self.exceeded = False
        self.rejection: Exception | None = None
        self.files_seen = 0
        self._size = 0
        self._sink: _Staging | _Streaming | None = None

    def new_file(self, field_name, file_name, content_type, content_length, charset=None, content_type_extra=None):
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        self.files_seen += 1
        if field_name != UPLOAD_FIELD or self.files_seen > 1:
            raise StopUpload(connection_reset=True)  # one file, in the `file` field, per upload
        try:
            fields = check_early_fields(self.fields if self.fields is not None else {})
        except (ServiceError, ValidationError) as exc:
            self._reject(exc)
        self._size = 0
        if self._may_stream(fields):
            self._sink = _Streaming(self, fields=fields)
        else:
            self._sink = _Staging(StagedUpload(file_name, content_type, 0, charset, content_type_extra))

    def _may_stream(self, fields: dict[str, Any]) -> bool:
        """Stream only for a known tenant and when the form said, before the file, that no column is PII."""
        return self.tenant_id is not None and "column_tags" in fields and not fields["column_tags"]

    def receive_data_chunk(self, raw_data, start):
        self._size += len(raw_data)
        if self._size > self.limit_bytes:
            self.exceeded = True
            self.discard()
            raise StopUpload(connection_reset=True)
        try:
            self._sink.write(raw_data)
        except (ServiceError, ValidationError) as exc:
            self._reject(exc)
        return None

    def _reject(self, exc: Exception) -> NoReturn:
        """Stop reading: the view answers with ``exc``; nothing read so far is kept."""
        self.rejection = exc
        self.discard()
        raise StopUpload(connection_reset=True)

    def file_complete(self, file_size):
        if self._sink is None:
            return None
        return self._sink.complete(file_size)

    def upload_interrupted(self):
        self.discard()

    def keep(self) -> None:
        """The dataset now owns what was streamed: :meth:`discard` must leave it."""
        if isinstance(self._sink, _Streaming):
            self._sink.stored = None
        self._sink = None

    def discard(self) -> None:
        """Drop whatever this upload holds that no dataset took: a staged file, a part-sent or stored object."""
        if self._sink is not None:
            self._sink.discard()
            self._sink = None


class _FieldSharingParser(DjangoMultiPartParser):
    """Django's multipart parser, letting a :class:`DatasetUploadHandler` see the form fields read so far.

    Django keeps them in ``self._post`` (a QueryDict it fills as it parses) and tells upload handlers nothing
    about them; this hands that QueryDict to the handler when Django creates it. Should a Django release stop
    using ``_post``, the handler never sees fields, never streams, and stages every upload: slower, never unsafe.
    """

    @property
    def _post(self):
        try:
            return self.__dict__["_post"]
        except KeyError:
            raise AttributeError("_post") from None

    @_post.setter
    def _post(self, value) -> None:
        self.__dict__["_post"] = value
        for handler in self._upload_handlers:
            if isinstance(handler, DatasetUploadHandler):
                handler.fields = value


class DatasetFormParser(MultiPartParser):
    """DRF's multipart parser over :class:`_FieldSharingParser` (its ``parse``, otherwise unchanged)."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        request = parser_context["request"]
        encoding = get_encoding(parser_context)
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        try:
            data, files = _FieldSharingParser(meta, stream, request.upload_handlers, encoding).parse()
        except MultiPartParserError as exc:
            raise ParseError(f"Multipart form parse error - {exc}") from None
        return DataAndFiles(data, files)


def hard_limit_bytes() -> int:
    """The cap applied before the tenant is known (the largest any plan allows)."""
    from tenants.models import Plan

    largest = Plan.objects.order_by("-max_dataset_bytes").values_list("max_dataset_bytes", flat=True).first()
    return largest or settings.DATA_UPLOAD_MAX_MEMORY_SIZE
