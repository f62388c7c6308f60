"""Upload handling that stages a dataset file on local disk while hashing and counting it.

Django would otherwise keep small uploads in memory and know nothing of our
limits. This handler writes every chunk to a temporary file in
``DATASET_STAGING_DIR``, computes its SHA-256 and size as the bytes arrive,
and stops reading the moment the tenant's limit is passed.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

UPLOAD_FIELD = "file"


class StagedUpload(TemporaryUploadedFile):
    """A staged upload with its digest and size."""

    sha256: str


class StagingUploadHandler(FileUploadHandler):
    chunk_size = 1024 * 1024

    def __init__(self, request=None, *, limit_bytes: int) -> None:
        super().__init__(request)
        self.limit_bytes = limit_bytes
        self.exceeded = False
        self.files_seen = 0
        self._file: StagedUpload | None = None
        self._hash = hashlib.sha256()
        self._size = 0

    def new_file(self, field_name, file_name, content_type, content_length, charset=None, content_type_extra=None):
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        self.files_seen += 1
        if field_name != UPLOAD_FIELD or self.files_seen > 1:
            raise StopUpload(connection_reset=True)  # one file, in the `file` field, per upload
        self._file = StagedUpload(file_name, content_type, 0, charset, content_type_extra)
        self._hash = hashlib.sha256()
        self._size = 0

    def receive_data_chunk(self, raw_data, start):
        self._size += len(raw_data)
        if self._size > self.limit_bytes:
            self.exceeded = True
            self._file.close()
            self._file = None
            raise StopUpload(connection_reset=True)
        self._hash.update(raw_data)
        self._file.write(raw_data)
        return None

    def file_complete(self, file_size):
        if self._file is None:
            return None
        self._file.seek(0)
        self._file.size = file_size
        self._file.sha256 = self._hash.hexdigest()
        return self._file

    def upload_interrupted(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def hard_limit_bytes() -> int:
    """The cap applied before the tenant is known (the largest any plan allows)."""
    from tenants.models import Plan

    largest = Plan.objects.order_by("-max_dataset_bytes").values_list("max_dataset_bytes", flat=True).first()
    return largest or settings.DATA_UPLOAD_MAX_MEMORY_SIZE
