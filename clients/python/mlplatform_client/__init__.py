"""Python SDK of the ML platform: ``Client`` and its resource groups, typed from the API's OpenAPI schema.

from mlplatform_client import Client
client = Client()                      # MLP_API_URL, MLP_API_KEY, MLP_SERVING_URL, or the config file
dataset = client.datasets.upload("clicks.csv", name="clicks", label_column="clicked")
client.datasets.wait(dataset["id"])
job = client.jobs.create(dataset=dataset["id"], template="sequence_ctr", model_name="ctr",
                         label_column="clicked", params={"epochs": 1})
job = client.jobs.wait(job["id"])
client.models.promote("ctr", job["model_version"])
client.predict("ctr", {"instances": ["12 85 3 9"]}).body
client.explain("ctr", ["12 85 3 9"]).explanations
"""

from mlplatform_client.client import Client
from mlplatform_client.config import Settings, load_settings
from mlplatform_client.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    DatasetInvalidError,
    JobFailedError,
    MLPlatformError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnprocessableError,
)
from mlplatform_client.serving import Explanation, Prediction

__version__ = "0.1.0"
__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "DatasetInvalidError",
    "Explanation",
    "JobFailedError",
    "MLPlatformError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Prediction",
    "RateLimitedError",
    "ServerError",
    "Settings",
    "TransportError",
    "UnprocessableError",
    "load_settings",
]
