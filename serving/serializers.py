from rest_framework import serializers

from core.serializers import StrictInputSerializer
from serving.models import ModelVersion, RegisteredModel
from training.compiled import serving_runtime


class ModelVersionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    lineage = serializers.SerializerMethodField()
    aliases = serializers.SerializerMethodField()
    serving = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "model",
            "version",
            "status",
            "template",
            "serving",
            "metrics",
            "manifest",
            "lineage",
            "aliases",
            "object_prefix",
            "size_bytes",
            "request_count",
            "error_count",
            "created_at",
            "published_at",
        ]

    def get_lineage(self, version: ModelVersion) -> dict:
        job = version.job
        return {
            "dataset": str(version.dataset_id) if version.dataset_id else version.manifest.get("dataset", {}).get("id"),
            "dataset_sha256": version.manifest.get("dataset", {}).get("sha256"),
            "job": str(version.job_id) if version.job_id else version.manifest.get("job_id"),
            "params": job.params if job else version.manifest.get("params"),
        }

    def get_aliases(self, version: ModelVersion) -> list[str]:
        return sorted(alias.name for alias in version.aliases.all())

    def get_serving(self, version: ModelVersion) -> dict:
        """Which runtime answers for this version (compiled ONNX or TensorFlow), why, and its parity report."""
        return serving_runtime(version.manifest or {})


class ModelVersionListSerializer(ModelVersionSerializer):
    class Meta(ModelVersionSerializer.Meta):
        fields = [f for f in ModelVersionSerializer.Meta.fields if f not in {"manifest", "lineage"}]


class RegisteredModelSerializer(serializers.ModelSerializer):
    aliases = serializers.SerializerMethodField()
    latest_version = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = ["name", "aliases", "traffic", "latest_version", "created_at"]

    def get_aliases(self, model: RegisteredModel) -> dict[str, int]:
        return {alias.name: alias.version.version for alias in model.aliases.all()}

    def get_latest_version(self, model: RegisteredModel) -> int | None:
        # From the versions the view prefetched: one query for the whole page, not one per model.
        ready = [v.version for v in model.versions.all() if v.status == ModelVersion.Status.READY]
        return max(ready, default=None)


MAX_VERSION = 2**31 - 1  # the largest number the version column holds


class AliasInputSerializer(StrictInputSerializer):
    version = serializers.IntegerField(min_value=1, max_value=MAX_VERSION)


class TrafficInputSerializer(StrictInputSerializer):
    weights = serializers.DictField(child=serializers.IntegerField(min_value=0, max_value=100), allow_empty=True)


class VersionFileSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="Relative to the version's folder (TensorFlow Serving layout).")
    size = serializers.IntegerField()
    sha256 = serializers.CharField(allow_null=True, help_text="From the manifest; null for manifest.json itself.")
    url = serializers.URLField(help_text="A presigned GET straight from object storage.")


class VersionFilesSerializer(serializers.Serializer):
    model = serializers.CharField()
    version = serializers.IntegerField()
    expires_at = serializers.DateTimeField()
    files = VersionFileSerializer(many=True)


class ExportQuerySerializer(StrictInputSerializer):
    """``?engine=…&base_path=…``. A base path is a URI or an absolute path without quotes, blanks or backslashes:
    it lands inside a protobuf text string and a YAML scalar, and must not break out of either."""

    engine = serializers.ChoiceField(choices=["tf-serving", "kserve"], default="tf-serving")
    base_path = serializers.RegexField(
        r"^(?:[a-z][a-z0-9+.-]*://|/)[A-Za-z0-9._~:/@%+=-]{1,1000}\Z",
        required=False,
        help_text="Where the engine finds the version folders, if not the platform's bucket (e.g. your own copy).",
    )


class CardQuerySerializer(StrictInputSerializer):
    """``?format=json|markdown`` (an ``Accept: text/markdown`` header asks for Markdown too)."""

    format = serializers.ChoiceField(choices=["json", "markdown"], required=False)


class ModelCardSerializer(serializers.Serializer):
    """A version's model card (``serving.cards``): each piece a version lacks is null and named in ``absent``."""

    model = serializers.CharField()
    version = serializers.IntegerField()
    status = serializers.CharField()
    published_at = serializers.DateTimeField(allow_null=True)
    job = serializers.DictField(allow_null=True, help_text="id, status, finished_at, deleted: the publishing job.")
    template = serializers.DictField(help_text="name, task, input_kind, params.")
    data = serializers.DictField(
        help_text="dataset (id, name, version, sha256, row_count, format, deleted), feature_columns, label_column, "
        "label_names, validation_split, pii (mode, columns, statement)."
    )
    metrics = serializers.DictField(help_text="Scalar metrics on the held-out split.")
    per_class = serializers.DictField(allow_null=True)
    privacy = serializers.DictField(
        help_text="differentially_private, summary, statement (the manifest's privacy statement, or null)."
    )
    explanation = serializers.DictField(allow_null=True, help_text="The explanation method (null: none exported).")
    global_explanations = serializers.DictField(allow_null=True, help_text="Top attributions on the validation split.")
    runtime = serializers.DictField(help_text="runtime (onnxruntime or tensorflow), reason, parity.")
    absent = serializers.ListField(child=serializers.CharField(), help_text="The pieces this version lacks.")
