"""Predictions from the serving process, over TensorFlow Serving REST or the KServe Open Inference Protocol v2,
and explanations of them (KServe v1's explainer shape).

    POST {serving}/v1/models/<name>[/versions/<n> | /labels/<alias>]:predict  {"instances": [...]} | {"inputs": ...}
    POST {serving}/v2/models/<name>[/versions/<n>]/infer   {"inputs": [{"name", "shape", "datatype", "data"}]}
    POST {serving}/v1/models/<name>[/versions/<n> | /labels/<alias>]:explain  {"instances": [...]}

v2 has no labels: an alias is resolved to its version through the registry first. A v2 call may also be given
TF Serving's ``{"instances": [...]}``; the rows are turned into v2 tensors from the model's v2 metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

if TYPE_CHECKING:
    from mlplatform_client.client import Client

Protocol = Literal["tf-serving", "kserve"]
PROTOCOLS: tuple[str, ...] = ("tf-serving", "kserve")


@dataclass(frozen=True)
class Prediction:
    body: dict[str, Any]  # the serving process's answer as it sent it
    model_version: int | None  # which version answered (X-Model-Version)
    protocol: str


def predict(
    client: Client,
    model: str,
    body: dict[str, Any],
    *,
    protocol: Protocol = "tf-serving",
    version: int | None = None,
    alias: str | None = None,
) -> Prediction:
    """Send ``body`` to the serving process; without ``version`` or ``alias`` the traffic split or ``production``
    alias (else the latest version) answers, and ``Prediction.model_version`` says which."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")
    if version is not None and alias is not None:
        raise ValueError("give a version or an alias, not both")
    name = quote(model, safe="")
    if protocol == "tf-serving":
        path = _v1_path(model, "predict", version=version, alias=alias)
    else:
        if alias is not None:
            aliases = client.models.get(model)["aliases"]
            if alias not in aliases:
                from mlplatform_client.errors import NotFoundError

                raise NotFoundError(f"model {model} has no alias {alias}", status=404, code="not_found")
            version = aliases[alias]
        where = f"/versions/{int(version)}" if version is not None else ""
        path = f"/v2/models/{name}{where}/infer"
        if "instances" in body and "inputs" not in body:
            metadata = client.request("GET", f"/v2/models/{name}{where}", base=client.serving_url).json()
            body = v2_body_from_instances(body["instances"], metadata["inputs"])
    response = client.request("POST", path, json=body, base=client.serving_url)
    header = response.headers.get("X-Model-Version")
    answer = response.json()
    number = header or answer.get("model_version")
    return Prediction(body=answer, model_version=int(number) if number else None, protocol=protocol)


@dataclass(frozen=True)
class Explanation:
    """An ``:explain`` answer: ``predictions`` exactly as ``:predict`` answers them, and one explanation per
    instance (``explanations[i]["attributions"][0]``: the explained output, its value at the instance and at the
    baseline, ``feature_attributions`` and ``approximation_error``)."""

    body: dict[str, Any]
    model_version: int | None

    @property
    def predictions(self) -> list[Any]:
        return self.body.get("predictions", [])

    @property
    def explanations(self) -> list[dict[str, Any]]:
        return self.body.get("explanations", [])


def explain(
    client: Client,
    model: str,
    instances: list[Any],
    *,
    version: int | None = None,
    alias: str | None = None,
) -> Explanation:
    """Explain the predictions for ``instances`` (rows, as for :func:`predict`); explanations are metered and
    billed apart from predictions and limited to a few instances per request (the serving process says how many)."""
    if version is not None and alias is not None:
        raise ValueError("give a version or an alias, not both")
    if not isinstance(instances, list):
        raise TypeError("instances must be a list with one entry per row")
    path = _v1_path(model, "explain", version=version, alias=alias)
    response = client.request("POST", path, json={"instances": instances}, base=client.serving_url)
    header = response.headers.get("X-Model-Version")
    return Explanation(body=response.json(), model_version=int(header) if header else None)


def _v1_path(model: str, method: str, *, version: int | None, alias: str | None) -> str:
    where = ""
    if version is not None:
        where = f"/versions/{int(version)}"
    elif alias:
        where = f"/labels/{quote(alias, safe='')}"
    return f"/v1/models/{quote(model, safe='')}{where}:{method}"


def v2_body_from_instances(instances: list[Any], inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """TF Serving rows as v2 tensors: one input takes the rows as they are; several take ``row[name]`` each."""
    tensors = []
    for spec in inputs:
        if len(inputs) == 1:
            data = [row[spec["name"]] if isinstance(row, dict) else row for row in instances]
        else:
            data = [row[spec["name"]] for row in instances]
        shape = [len(instances), *[d for d in spec.get("shape", [-1])[1:]]]
        flat: list[Any] = []
        for value in data:
            flat.extend(value if isinstance(value, list) else [value])
        tensors.append({"name": spec["name"], "shape": shape, "datatype": spec["datatype"], "data": flat})
    return {"inputs": tensors}
