"""Property-based fuzzing (hypothesis) of the parsers that read what callers send.

The prediction body parser (both protocols, the three kinds of model input)
and the dataset readers (CSV, JSON lines, Parquet, through the same reading
and profiling the validation task does) must turn any input into either a
result or their own 4xx error, never another exception. Seeded and bounded,
so a run is repeatable and quick.
"""

from __future__ import annotations

import contextlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.batches import as_profiled_text, open_batches
from datasets.profiling import DatasetProfile
from datasets.readers import DatasetFormatError, open_rows
from datasets.services import DatasetRejected, inspect_head
from serving.runtime import protocols
from serving.runtime.http import HTTPError, parse_json
from serving.runtime.signatures import InputError, Signature

FUZZ = settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
SIGNATURES = [
    Signature.from_manifest(
        {"template": "sequence_ctr", "signature": {"inputs": {"item_sequence": {"dtype": "string", "shape": [None]}}}}
    ),
    Signature.from_manifest(
        {
            "template": "text_classifier",
            "label_names": ["neg", "pos"],
            "signature": {"inputs": {"review": {"dtype": "string", "shape": [None]}}},
        }
    ),
    Signature.from_manifest(
        {
            "template": "tabular_classifier",
            "label_names": ["0", "1"],
            "signature": {
                "inputs": {
                    "age": {"dtype": "float32", "shape": [None, 1]},
                    "visits": {"dtype": "int64", "shape": [None, 1]},
                    "city": {"dtype": "string", "shape": [None, 1]},
                }
            },
        }
    ),
]
FIELD_NAMES = ["instances", "inputs", "signature_name", "id", "outputs", "name", "shape", "datatype", "data"]
FIELD_NAMES += ["item_sequence", "review", "age", "visits", "city", "serving_default", "BYTES", "FP32", "INT64"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["12 85 3", "1 2 x", "", " ", "-1 5", "99999999999999999999", "é 3"])
)
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=6),
    max_leaves=40,
)
bodies = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=4).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
)


@FUZZ
@given(body=bodies)
def test_prediction_bodies_parse_or_fail_with_a_4xx(body):
    for signature in SIGNATURES:
        for parse in (protocols.parse_tfserving, protocols.parse_v2):
            try:
                parse(parse_json(body), signature, max_instances=50)
            except InputError:
                pass  # answered as 400
            except HTTPError as error:
                assert 400 <= error.status < 500


def _row_profile(fmt: str, data: bytes) -> tuple[list, dict] | DatasetFormatError:
    """The reference: the row reader, profiled value by value (JSON values as the text the batches carry)."""
    try:
        columns, rows = open_rows(fmt, io.BytesIO(data))
        profile = DatasetProfile(columns, label_column=columns[0] if columns else "")
        for _, row in rows:
            profile.add({k: as_profiled_text(v) for k, v in row.items()} if fmt == "jsonl" else row)
    except DatasetFormatError as error:
        return error
    return profile.schema(), profile.stats()


def _significant(value):
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _significant(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_significant(v) for v in value]
    return value


def _read_all(fmt: str, data: bytes) -> None:
    """What validation does with a stored object: read it in record batches, profile them and write the
    canonical copy; the result (or the refusal's code) must equal the row-by-row reference."""
    reference = _row_profile(fmt, data)
    try:
        columns, batches = open_batches(fmt, io.BytesIO(data))
        profile = DatasetProfile(columns, label_column=columns[0] if columns else "")
        copy, writer = io.BytesIO(), None
        for batch in batches:
            writer = writer or pq.ParquetWriter(copy, batch.schema)
            writer.write_batch(batch.cast(writer.schema))
            profile.add_batch(batch)
    except DatasetFormatError as error:
        if isinstance(reference, DatasetFormatError):
            assert error.code == reference.code, (error.as_dict(), reference.as_dict())
        else:  # only Arrow refuses it: a CSV the row reader accepts is refused as malformed, never silently
            assert fmt == "csv" and error.code == "malformed_csv", error.as_dict()
        raise
    assert not isinstance(reference, DatasetFormatError), reference.as_dict()
    # Means are sums in another order (Arrow adds pairwise): equal to nine significant digits.
    assert _significant((profile.schema(), profile.stats())) == _significant(reference)
    json.dumps(profile.stats(), allow_nan=False)  # statistics are stored as JSON


def _parse_or_refuse(fmt: str, data: bytes) -> None:
    try:
        inspect_head(io.BytesIO(data), fmt=fmt, filename=f"data.{fmt}", label_column="", tags={})
    except DatasetRejected as rejected:
        assert 400 <= rejected.status_code < 500
        return
    with contextlib.suppress(DatasetFormatError):  # a later line is broken: the dataset becomes invalid
        _read_all(fmt, data)


cells = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(repr),
    st.sampled_from(["", "NaN", "inf", "-0", "1e999", "true", "1 2 3", '"', "a,b", "\r", "\x00"]),
)
csv_files = st.lists(st.lists(cells, min_size=1, max_size=5), min_size=1, max_size=8).map(
    lambda rows: "\n".join(",".join(row) for row in rows).encode("utf-8", "surrogatepass")
)


@FUZZ
@given(data=csv_files | st.binary(max_size=400))
def test_csv_reads_or_is_refused(data):
    _parse_or_refuse("csv", data)


jsonl_files = st.lists(
    st.dictionaries(keys, json_values, max_size=5).map(json.dumps) | st.text(max_size=40), min_size=1, max_size=8
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=jsonl_files | st.binary(max_size=400))
def test_json_lines_read_or_are_refused(data):
    _parse_or_refuse("jsonl", data)


parquet_columns = st.sampled_from(
    [
        (pa.int64(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        (pa.float64(), st.floats()),
        (pa.string(), st.text(max_size=20)),
        (pa.bool_(), st.booleans()),
        (pa.list_(pa.int64()), st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=4)),
        (pa.binary(), st.binary(max_size=10)),
        (pa.timestamp("ms"), st.integers(min_value=-(2**40), max_value=2**40)),
    ]
)


@st.composite
def parquet_files(draw) -> bytes:
    rows = draw(st.integers(min_value=0, max_value=6))
    names = draw(st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=4, unique=True))
    arrays = {}
    for name in names:
        kind, values = draw(parquet_columns)
        arrays[name] = pa.array(draw(st.lists(st.none() | values, min_size=rows, max_size=rows)), type=kind)
    out = io.BytesIO()
    pq.write_table(pa.table(arrays), out)
    data = out.getvalue()
    if draw(st.booleans()):  # and sometimes a damaged copy
        cut = draw(st.integers(min_value=0, max_value=len(data)))
        data = data[:cut] + draw(st.binary(max_size=20)) + data[cut + 1 :]
    return data


@FUZZ
@given(data=parquet_files() | st.binary(max_size=400))
def test_parquet_reads_or_is_refused(data):
    _parse_or_refuse("parquet", data)
