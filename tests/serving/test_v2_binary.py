"""KServe v2 with the binary tensor data extension: what NVIDIA's tritonclient sends and reads by default.

The bodies here are built byte for byte as the extension specifies (a JSON header of
``Inference-Header-Content-Length`` bytes, then each binary input's bytes in input order; BYTES values as a 4-byte
little-endian length and the bytes). ``test_a_stock_tritonclient_works_without_options`` runs the real client.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.support.serving import call, publish_model, serving_server

pytestmark = pytest.mark.django_db(transaction=True)  # the serving app reads the registry from its own threads

SEQUENCES = ["12 85 3 9", "", "7 7 7 7 7 7 7 7 7"]


def _bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def _binary_request(header: dict, data: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + data, {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def _post(base: str, path: str, body: bytes, headers: dict[str, str], key: str):
    request = urllib.request.Request(
        base + path, data=body, method="POST", headers=headers | {"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def _read_binary_response(headers, body: bytes) -> dict[str, np.ndarray]:
    length = int(headers["Inference-Header-Content-Length"])
    head, offset, outputs = json.loads(body[:length]), length, {}
    for tensor in head["outputs"]:
        size = tensor["parameters"]["binary_data_size"]
        chunk = body[offset : offset + size]
        offset += size
        if tensor["datatype"] == "BYTES":
            values, at = [], 0
            while at < len(chunk):
                (n,) = struct.unpack_from("<I", chunk, at)
                values.append(chunk[at + 4 : at + 4 + n].decode())
                at += 4 + n
            outputs[tensor["name"]] = np.array(values, dtype=object).reshape(tensor["shape"])
        else:
            outputs[tensor["name"]] = np.frombuffer(chunk, "<f4").reshape(tensor["shape"])
    assert offset == len(body)
    return outputs


@pytest.fixture
def served(tenant_a):
    publish_model(tenant_a.tenant, name="clicks", kind="ctr", compiled=True)
    publish_model(tenant_a.tenant, name="people", kind="tabular", compiled=True)
    with serving_server() as (base, _):
        yield base


def test_binary_inputs_and_outputs_answer_as_the_json_form_does(served, tenant_a):
    key = tenant_a.raw_key
    status, as_json, _ = call(
        served,
        "POST",
        "/v2/models/clicks/infer",
        {"inputs": [{"name": "item_ids", "shape": [3], "datatype": "BYTES", "data": SEQUENCES}]},
        key,
    )
    assert status == 200, as_json
    header = {
        "inputs": [{"name": "item_ids", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": 0}}],
        "parameters": {"binary_data_output": True},
    }
    data = _bytes_tensor(SEQUENCES)
    header["inputs"][0]["parameters"]["binary_data_size"] = len(data)
    body, headers = _binary_request(header, data)
    status, response_headers, raw = _post(served, "/v2/models/clicks/infer", body, headers, key)
    assert status == 200, raw
    assert response_headers["Content-Type"] == "application/octet-stream"
    outputs = _read_binary_response(response_headers, raw)
    expected = {t["name"]: t["data"] for t in as_json["outputs"]}
    np.testing.assert_allclose(outputs["probability"].reshape(-1), expected["probability"], atol=1e-7)
    assert outputs["label"].reshape(-1).tolist() == expected["label"]

    # One output as JSON, one binary; a numeric input in binary beside a BYTES one.
    header = {
        "inputs": [
            {"name": "age", "shape": [2, 1], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
            {"name": "city", "shape": [2, 1], "datatype": "BYTES", "data": [["paris"], ["oslo"]]},
        ],
        "outputs": [{"name": "label"}, {"name": "probabilities", "parameters": {"binary_data": True}}],
    }
    body, headers = _binary_request(header, np.array([31.0, 64.5], "<f4").tobytes())
    status, response_headers, raw = _post(served, "/v2/models/people/infer", body, headers, key)
    assert status == 200, raw
    head = json.loads(raw[: int(response_headers["Inference-Header-Content-Length"])])
    assert [o["name"] for o in head["outputs"]] == ["label", "probabilities"]
    assert "data" in head["outputs"][0] and head["outputs"][1]["parameters"] == {"binary_data_size": 16}


@pytest.mark.parametrize(
    "inputs, data, header_length, message",
    [
        ([{"binary_data_size": 100}], b"\x01\x00\x00\x00a", None, "fewer follow"),
        ([{"binary_data_size": 5}], b"\x01\x00\x00\x00ab", None, "bytes of binary data follow"),
        ([{"binary_data_size": 5}], b"\x09\x00\x00\x00a", None, "declares 9 bytes"),
        ([{"binary_data_size": 6}], b"\x01\x00\x00\x00a\x00", None, "ends before value 1"),
        ([{"binary_data_size": 10}], b"\x01\x00\x00\x00\xff\x01\x00\x00\x00a", None, "not UTF-8 text"),
        ([{"binary_data_size": -1}], b"", None, "non-negative integer"),
        ([{"binary_data_size": True}], b"", None, "non-negative integer"),
        ([{"compression": "gzip"}], b"", None, "Unknown parameter 'compression'"),
        ([{"binary_data_size": 5}], b"\x01\x00\x00\x00a", 10**9, "longer than the body"),
        ([{"binary_data_size": 5}], b"\x01\x00\x00\x00a", "x", "must be a number of bytes"),
    ],
)
def test_malformed_binary_data_is_a_clear_400(served, tenant_a, inputs, data, header_length, message):
    header = {"inputs": [{"name": "item_ids", "shape": [2], "datatype": "BYTES", "parameters": inputs[0]}]}
    body, headers = _binary_request(header, data)
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    status, _, raw = _post(served, "/v2/models/clicks/infer", body, headers, tenant_a.raw_key)
    assert status == 400, raw
    assert message in json.loads(raw)["error"]


def test_binary_data_without_the_header_length_is_refused(served, tenant_a):
    header = {
        "inputs": [{"name": "item_ids", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}]
    }
    status, _, raw = _post(
        served, "/v2/models/clicks/infer", json.dumps(header).encode(), {"Content-Type": "application/json"},
        tenant_a.raw_key,
    )  # fmt: skip
    assert status == 400 and "Inference-Header-Content-Length" in json.loads(raw)["error"]


TRITON_VENV = Path(__file__).resolve().parents[2] / "var" / "test" / "tritonclient-venv"
TRITON_REQUIREMENTS = Path(__file__).resolve().parents[1] / "support" / "requirements-tritonclient.txt"
TRITON_CLIENT = """
import json, sys
import numpy as np
import tritonclient.http as httpclient

base, key = sys.argv[1], sys.argv[2]
client = httpclient.InferenceServerClient(base)
ids = httpclient.InferInput("item_ids", [3], "BYTES")
ids.set_data_from_numpy(np.array([b"12 85 3 9", b"", b"7 7 7"], dtype=object))
result = client.infer("clicks", [ids], headers={"Authorization": "Bearer " + key})
print(json.dumps({
    "probability": result.as_numpy("probability").tolist(),
    "label": [v.decode() for v in result.as_numpy("label").reshape(-1)],
}))
"""


def _tritonclient_python() -> Path:
    """NVIDIA's client in a venv of its own: its pins (ml-dtypes, greenlet) conflict with the project's."""
    python = TRITON_VENV / "bin" / "python"
    stamp = TRITON_VENV / ".installed"
    wanted = TRITON_REQUIREMENTS.read_text()
    if not (stamp.exists() and stamp.read_text() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(TRITON_VENV)], check=True, timeout=120)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-r", str(TRITON_REQUIREMENTS)],
            check=True,
            timeout=600,
            capture_output=True,
        )
        stamp.write_text(wanted)
    return python


def test_a_stock_tritonclient_works_without_options(served, tenant_a):
    python = _tritonclient_python()
    done = subprocess.run(
        [str(python), "-c", TRITON_CLIENT, served.removeprefix("http://"), tenant_a.raw_key],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    status, as_json, _ = call(
        served, "POST", "/v1/models/clicks:predict", {"instances": ["12 85 3 9", "", "7 7 7"]}, tenant_a.raw_key
    )
    assert status == 200
    assert answer["probability"] == pytest.approx([row["probability"] for row in as_json["predictions"]], abs=1e-7)
    assert answer["label"] == [row["label"] for row in as_json["predictions"]]
