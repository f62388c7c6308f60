"""Types of the ML platform API, generated from its OpenAPI schema. Do not edit by hand.

Regenerate with ``python clients/python/scripts/generate_models.py`` after an API change; the test suite fails
while this file differs from what the live schema generates.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

BlankEnum = Literal[""]
DatasetStatusEnum = Literal["uploading", "validating", "ready", "invalid"]
DatasetUploadStatusEnum = Literal["pending", "completed", "aborted"]
FormatEnum = Literal["csv", "parquet", "jsonl"]
ModelVersionStatusEnum = Literal["publishing", "ready", "archived"]
PiiModeEnum = Literal["hash", "drop"]
RoleEnum = Literal["owner", "admin", "member", "viewer"]
ScopesEnum = Literal["read", "write", "predict"]
TenantStatusEnum = Literal["active", "suspended"]
TrainingJobStatusEnum = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
TypeEnum = Literal["api_key", "user"]
WebhookDeliveryStatusEnum = Literal["pending", "succeeded", "failed"]


class AliasInputRequest(TypedDict):
    version: int


class ApiKey(TypedDict):
    id: str
    name: str
    prefix: str
    scopes: NotRequired[Any]
    role: NotRequired[RoleEnum]
    created_by: str | None
    parent: str | None
    created_at: str
    expires_at: NotRequired[str | None]
    revoked_at: NotRequired[str | None]
    last_used_at: NotRequired[str | None]


class ApiKeyCreateRequest(TypedDict):
    name: str
    scopes: list[ScopesEnum]
    role: NotRequired[RoleEnum]
    expires_at: NotRequired[str | None]


class ApiKeyCreated(TypedDict):
    id: str
    name: str
    prefix: str
    scopes: NotRequired[Any]
    role: NotRequired[RoleEnum]
    created_by: str | None
    parent: str | None
    created_at: str
    expires_at: NotRequired[str | None]
    revoked_at: NotRequired[str | None]
    last_used_at: NotRequired[str | None]
    key: str


class AuditEvent(TypedDict):
    id: str
    created_at: str
    action: str
    target_type: str
    target_id: str
    actor_kind: str
    actor_label: str
    request_id: NotRequired[str]
    details: NotRequired[Any]


class Caller(TypedDict):
    type: TypeEnum
    role: str
    scopes: list[str]
    api_key: NotRequired[ApiKey]
    email: NotRequired[str]


class CurrentTenant(TypedDict):
    tenant: Tenant
    caller: Caller


class Dataset(TypedDict):
    id: str
    name: str
    version: int
    format: FormatEnum
    status: NotRequired[DatasetStatusEnum]
    size_bytes: NotRequired[int]
    sha256: NotRequired[str]
    canonical_sha256: NotRequired[str]
    canonical_size_bytes: NotRequired[int]
    original_filename: NotRequired[str]
    label_column: NotRequired[str]
    column_tags: NotRequired[Any]
    pii_mode: NotRequired[PiiModeEnum]
    row_count: NotRequired[int | None]
    schema: NotRequired[Any]
    stats: NotRequired[Any]
    errors: NotRequired[Any]
    duplicate_of: NotRequired[str | None]
    created_at: str
    validated_at: NotRequired[str | None]


class DatasetCreateRequest(TypedDict):
    file: bytes
    name: str
    format: NotRequired[FormatEnum | BlankEnum]
    label_column: NotRequired[str]
    column_tags: NotRequired[dict[str, Literal["pii"]]]
    pii_mode: NotRequired[PiiModeEnum]


class DatasetList(TypedDict):
    id: str
    name: str
    version: int
    format: FormatEnum
    status: NotRequired[DatasetStatusEnum]
    size_bytes: NotRequired[int]
    sha256: NotRequired[str]
    canonical_sha256: NotRequired[str]
    canonical_size_bytes: NotRequired[int]
    original_filename: NotRequired[str]
    label_column: NotRequired[str]
    column_tags: NotRequired[Any]
    pii_mode: NotRequired[PiiModeEnum]
    row_count: NotRequired[int | None]
    schema: NotRequired[Any]
    errors: NotRequired[Any]
    duplicate_of: NotRequired[str | None]
    created_at: str
    validated_at: NotRequired[str | None]


class DatasetUpload(TypedDict):
    id: str
    status: NotRequired[DatasetUploadStatusEnum]
    declared_size: int
    part_size: int
    created_at: str
    expires_at: str
    dataset: DatasetList


class DatasetUploadCreated(TypedDict):
    id: str
    status: NotRequired[DatasetUploadStatusEnum]
    declared_size: int
    part_size: int
    created_at: str
    expires_at: str
    dataset: DatasetList
    parts: list[PartUrl]


class Error(TypedDict):
    error: Any


class MemberCreateRequest(TypedDict):
    email: str
    role: NotRequired[RoleEnum]


class Membership(TypedDict):
    id: str
    email: str
    role: NotRequired[RoleEnum]
    created_at: str


class ModelCard(TypedDict):
    model: str
    version: int
    status: str
    published_at: str | None
    job: dict[str, Any] | None
    template: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, Any]
    per_class: dict[str, Any] | None
    privacy: dict[str, Any]
    explanation: dict[str, Any] | None
    global_explanations: dict[str, Any] | None
    runtime: dict[str, Any]
    absent: list[str]


class ModelVersion(TypedDict):
    model: str
    version: int
    status: NotRequired[ModelVersionStatusEnum]
    template: str
    serving: dict[str, Any]
    metrics: NotRequired[Any]
    manifest: NotRequired[Any]
    lineage: dict[str, Any]
    aliases: list[str]
    object_prefix: str
    size_bytes: NotRequired[int]
    request_count: NotRequired[int]
    error_count: NotRequired[int]
    created_at: str
    published_at: NotRequired[str | None]


class ModelVersionList(TypedDict):
    model: str
    version: int
    status: NotRequired[ModelVersionStatusEnum]
    template: str
    serving: dict[str, Any]
    metrics: NotRequired[Any]
    aliases: list[str]
    object_prefix: str
    size_bytes: NotRequired[int]
    request_count: NotRequired[int]
    error_count: NotRequired[int]
    created_at: str
    published_at: NotRequired[str | None]


class PaginatedApiKeyList(TypedDict):
    count: int
    next: NotRequired[str | None]
    previous: NotRequired[str | None]
    results: list[ApiKey]


class PaginatedAuditEventList(TypedDict):
    count: int
    next: NotRequired[str | None]
    previous: NotRequired[str | None]
    results: list[AuditEvent]


class PaginatedDatasetListList(TypedDict):
    count: int
    next: NotRequired[str | None]
    previous: NotRequired[str | None]
    results: list[DatasetList]


class PaginatedMembershipList(TypedDict):
    count: int
    next: NotRequired[str | None]
    previous: NotRequired[str | None]
    results: list[Membership]


class PaginatedModelVersionListList(TypedDict):
    count: int
    next: NotRequired[str | None]
    previous: NotRequired[str | None]
    results: list[ModelVersionList]


class PaginatedRegisteredModelList(TypedDict):
    count: int
    next: NotRequired[str | None]
    previous: NotRequired[str | None]
    results: list[RegisteredModel]


class PaginatedTrainingJobList(TypedDict):
    count: int
    next: NotRequired[str | None]
    previous: NotRequired[str | None]
    results: list[TrainingJob]


class PaginatedWebhookDeliveryList(TypedDict):
    count: int
    next: NotRequired[str | None]
    previous: NotRequired[str | None]
    results: list[WebhookDelivery]


class PaginatedWebhookList(TypedDict):
    count: int
    next: NotRequired[str | None]
    previous: NotRequired[str | None]
    results: list[Webhook]


class PartRequest(TypedDict):
    part_number: int
    etag: str


class PartUrl(TypedDict):
    part_number: int
    size: int
    url: str


class PatchedMemberUpdateRequest(TypedDict):
    role: NotRequired[RoleEnum]


class PatchedWebhookUpdateRequest(TypedDict):
    url: NotRequired[str]
    event_types: NotRequired[list[str]]
    description: NotRequired[str]
    is_active: NotRequired[bool]


class Plan(TypedDict):
    slug: str
    name: str
    max_concurrent_jobs: NotRequired[int]
    compute_seconds_per_month: NotRequired[int]
    storage_bytes: NotRequired[int]
    max_dataset_bytes: NotRequired[int]
    predictions_per_minute: NotRequired[int]
    max_job_memory_bytes: NotRequired[int]


class Preview(TypedDict):
    columns: list[str]
    rows: list[list[Any]]


class PrivacyBudgetInputRequest(TypedDict):
    epsilon: float | None
    delta: float | None


class RegisteredModel(TypedDict):
    name: str
    aliases: dict[str, int]
    traffic: NotRequired[Any]
    latest_version: int | None
    created_at: str


class Tenant(TypedDict):
    id: str
    name: str
    slug: str
    status: NotRequired[TenantStatusEnum]
    plan: Plan
    created_at: str


class TrafficInputRequest(TypedDict):
    weights: dict[str, int]


class TrainingJob(TypedDict):
    id: str
    status: NotRequired[TrainingJobStatusEnum]
    dataset: str
    template: str
    model_name: str
    model_version: NotRequired[int | None]
    params: NotRequired[Any]
    privacy: dict[str, Any]
    label_column: str
    feature_columns: NotRequired[Any]
    validation_split: NotRequired[float]
    seed: NotRequired[int]
    attempts: NotRequired[int]
    progress: NotRequired[Any]
    metrics: NotRequired[Any]
    error_code: NotRequired[str]
    error_message: NotRequired[str]
    device: NotRequired[str]
    compute_seconds: NotRequired[float]
    max_runtime_seconds: NotRequired[int | None]
    estimated_memory_bytes: NotRequired[int | None]
    timings: NotRequired[Any]
    created_at: str
    dispatched_at: NotRequired[str | None]
    started_at: NotRequired[str | None]
    cancel_requested_at: NotRequired[str | None]
    finished_at: NotRequired[str | None]


class TrainingJobCreateRequest(TypedDict):
    dataset: str
    template: str
    model_name: str
    label_column: str
    params: NotRequired[dict[str, Any]]
    feature_columns: NotRequired[list[str]]
    validation_split: NotRequired[float]
    seed: NotRequired[int]
    max_runtime_seconds: NotRequired[int]
    privacy: NotRequired[Any]


class UploadCompleteRequest(TypedDict):
    parts: list[PartRequest]


class UploadCreateRequest(TypedDict):
    name: str
    size: int
    filename: NotRequired[str]
    format: NotRequired[FormatEnum | BlankEnum]
    label_column: NotRequired[str]
    column_tags: NotRequired[dict[str, Literal["pii"]]]


class VersionFile(TypedDict):
    path: str
    size: int
    sha256: str | None
    url: str


class VersionFiles(TypedDict):
    model: str
    version: int
    expires_at: str
    files: list[VersionFile]


class Webhook(TypedDict):
    id: str
    url: str
    description: str
    event_types: list[str]
    is_active: bool
    disabled_reason: str
    disabled_at: str | None
    failing_since: str | None
    consecutive_failures: int
    created_at: str
    updated_at: str


class WebhookCreateRequest(TypedDict):
    url: str
    event_types: list[str]
    description: NotRequired[str]
    is_active: NotRequired[bool]


class WebhookDelivery(TypedDict):
    id: str
    webhook: str
    event_id: str
    event_type: str
    status: WebhookDeliveryStatusEnum
    attempts: int
    last_status_code: int | None
    last_error: str
    last_attempt_at: str | None
    next_attempt_at: str | None
    delivered_at: str | None
    created_at: str


class WebhookWithSecret(TypedDict):
    id: str
    url: str
    description: str
    event_types: list[str]
    is_active: bool
    disabled_reason: str
    disabled_at: str | None
    failing_since: str | None
    consecutive_failures: int
    created_at: str
    updated_at: str
    secret: str


# Every operation the schema documents: (METHOD, path template).
OPERATIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("DELETE", "/api/v1/api-keys/{id}"),
        ("DELETE", "/api/v1/datasets/uploads/{id}"),
        ("DELETE", "/api/v1/datasets/{id}"),
        ("DELETE", "/api/v1/members/{id}"),
        ("DELETE", "/api/v1/models/{model_name}/versions/{version}"),
        ("DELETE", "/api/v1/models/{name}/aliases/{alias}"),
        ("DELETE", "/api/v1/webhooks/{id}"),
        ("GET", "/api/v1/api-keys"),
        ("GET", "/api/v1/api-keys/{id}"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/audit/{id}"),
        ("GET", "/api/v1/billing/estimate"),
        ("GET", "/api/v1/datasets"),
        ("GET", "/api/v1/datasets/uploads/{id}"),
        ("GET", "/api/v1/datasets/{id}"),
        ("GET", "/api/v1/datasets/{id}/preview"),
        ("GET", "/api/v1/datasets/{id}/privacy"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/{id}"),
        ("GET", "/api/v1/jobs/{id}/logs"),
        ("GET", "/api/v1/jobs/{id}/metrics"),
        ("GET", "/api/v1/members"),
        ("GET", "/api/v1/members/{id}"),
        ("GET", "/api/v1/models"),
        ("GET", "/api/v1/models/{model_name}/versions"),
        ("GET", "/api/v1/models/{model_name}/versions/{version}"),
        ("GET", "/api/v1/models/{model_name}/versions/{version}/card"),
        ("GET", "/api/v1/models/{model_name}/versions/{version}/download"),
        ("GET", "/api/v1/models/{model_name}/versions/{version}/files"),
        ("GET", "/api/v1/models/{name}"),
        ("GET", "/api/v1/models/{name}/export"),
        ("GET", "/api/v1/quotas"),
        ("GET", "/api/v1/templates"),
        ("GET", "/api/v1/tenant"),
        ("GET", "/api/v1/usage"),
        ("GET", "/api/v1/webhook-deliveries/{id}"),
        ("GET", "/api/v1/webhooks"),
        ("GET", "/api/v1/webhooks/{id}"),
        ("GET", "/api/v1/webhooks/{id}/deliveries"),
        ("PATCH", "/api/v1/members/{id}"),
        ("PATCH", "/api/v1/webhooks/{id}"),
        ("POST", "/api/v1/api-keys"),
        ("POST", "/api/v1/datasets"),
        ("POST", "/api/v1/datasets/uploads"),
        ("POST", "/api/v1/datasets/uploads/{id}/complete"),
        ("POST", "/api/v1/datasets/uploads/{id}/part-urls"),
        ("POST", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs/{id}/cancel"),
        ("POST", "/api/v1/members"),
        ("POST", "/api/v1/models/{model_name}/versions/{version}/archive"),
        ("POST", "/api/v1/models/{name}/aliases/{alias}/rollback"),
        ("POST", "/api/v1/webhook-deliveries/{id}/redeliver"),
        ("POST", "/api/v1/webhooks"),
        ("POST", "/api/v1/webhooks/{id}/ping"),
        ("POST", "/api/v1/webhooks/{id}/rotate-secret"),
        ("PUT", "/api/v1/datasets/{id}/privacy"),
        ("PUT", "/api/v1/models/{name}/aliases/{alias}"),
        ("PUT", "/api/v1/models/{name}/traffic"),
    }
)
API_VERSION = "1.0.0"
