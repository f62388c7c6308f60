"""Compiled serving: each template's preprocessing in NumPy equals its Keras layers, the ONNX core equals the
SavedModel within 1e-5 on held-out rows and edge cases, and a version that fails the gate stays on TensorFlow."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.support.serving import CTR_PARAMS
from training import compiled
from training.trainer import compile as compiler
from training.trainer import models

CTR = CTR_PARAMS | {"vocab_size": 0}  # the vocabulary from the builder's argument
TEXTS = np.array(
    ["好评 很好 推荐", "差评 太差", "great product, would buy", "awful product!", "很好 很好", "太差 差 退货", "ok"]
)
EDGE_TEXTS = [*compiler._TEXT_EDGES, "GREAT Product", "很好\uff0c太差\uff01", "tab\tseparated\nlines", "É great"]


def _text_model(tokenize: str, encoder: str) -> keras.Model:
    params = {
        "tokenize": tokenize,
        "max_tokens": 40,
        "sequence_length": 6,
        "embedding_dim": 4,
        "encoder": encoder,
        "lstm_units": 4,
        "learning_rate": 0.01,
    }
    return models.text_classifier(column="review", params=params, texts=TEXTS, classes=3)


def _tabular_model() -> keras.Model:
    features = {
        "age": np.array([20.0, 35.0, 50.0, 41.0]),
        "city": np.array(["paris", "oslo", "lima", "北京"]),
        "score": np.array([0.5, 0.1, 0.9, 0.7]),
    }
    return models.tabular_classifier(
        columns={"age": "float", "city": "string", "score": "float"},
        params={"hidden_units": [4], "dropout": 0.0, "learning_rate": 0.01},
        features=features,
        classes=3,
    )


def _signature(model: keras.Model) -> dict:
    return {
        "inputs": {
            t.name.split(":")[0]: {"dtype": str(t.dtype), "shape": [d if d is None else int(d) for d in t.shape]}
            for t in model.inputs
        }
    }


CASES = {
    # name: (model builder, input kind, binary, held-out rows per input)
    "sequence_ctr": (
        lambda: models.sequence_ctr(column="item_ids", params=CTR, vocab_size=50),
        "id_sequence",
        True,
        {"item_ids": ["1 2 3", "4 5 6 7 8 9 10 11 12 13", "49", "12 7 7 7"]},
    ),
    "text_words_average": (lambda: _text_model("words", "average"), "text", False, {"review": list(TEXTS)}),
    "text_characters_bilstm": (lambda: _text_model("characters", "bilstm"), "text", False, {"review": list(TEXTS)}),
    "tabular": (
        _tabular_model,
        "columns",
        False,
        {"age": [20.0, 33.5, 61.0], "city": ["paris", "oslo", "tokyo"], "score": [0.2, 0.0, 1.0]},
    ),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request, tmp_path):
    build, input_kind, binary, held_out = CASES[request.param]
    keras.utils.set_random_seed(3)
    model = build()
    export_dir = tmp_path / "model"
    model.export(str(export_dir), format="tf_saved_model", verbose=False)
    signature = _signature(model)
    index = np.arange(len(next(iter(held_out.values()))))
    features = {name: np.array(values, dtype=object) for name, values in held_out.items()}
    return model, export_dir, input_kind, binary, signature, index, features


def _compile(case) -> dict:
    """The trainer's publish-time compilation, its gate run on the case's held-out rows and the edge cases."""
    model, export_dir, input_kind, binary, signature, index, features = case
    return compiler.compile_version(
        model=model,
        export_dir=export_dir,
        input_kind=input_kind,
        signature=signature,
        binary=binary,
        rows=lambda steps: compiler.gate_rows(features, index, signature, steps),
    )


def test_each_template_compiles_and_passes_the_parity_gate(case):
    _, export_dir, _, _, signature, index, features = case
    fields = _compile(case)
    assert fields["runtime"] == "onnxruntime", fields
    report = fields["parity"]
    assert report["passed"] and report["max_abs_difference"] <= 1e-5 and report["labels_agree"] == report["rows"]
    assert report["rows"] > len(index)  # the edge cases were run too
    for part in ("model", "preprocess"):
        written = (export_dir / fields["compiled"][part]["file"]).read_bytes()
        assert compiler._sha256(written) == fields["compiled"][part]["sha256"]
    # The files serving reads answer as the SavedModel does, on rows the gate did not see.
    served = compiled.CompiledModel(
        model_bytes=(export_dir / compiled.MODEL_FILE).read_bytes(),
        spec=json.loads((export_dir / compiled.SPEC_FILE).read_bytes()),
    )
    function = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    steps = json.loads((export_dir / compiled.SPEC_FILE).read_bytes())["steps"]
    columns = compiler.gate_rows(features, index[::-1], signature, steps)
    expected = next(iter(function(**{n: tf.constant(v) for n, v in columns.items()}).values())).numpy()
    np.testing.assert_allclose(served.scores(columns), expected, atol=1e-5, rtol=0)


def test_a_version_that_fails_the_gate_stays_on_tensorflow_and_says_why(case, monkeypatch):
    export_dir = case[1]
    monkeypatch.setattr(compiler, "TOLERANCE", -1.0)  # no difference can pass
    fields = _compile(case)
    assert fields["runtime"] == "tensorflow"
    assert fields["runtime_reason"].startswith("parity gate failed: max difference")
    assert not fields["parity"]["passed"]
    assert not (export_dir / compiled.FOLDER).exists()
    assert compiled.serving_runtime(fields | {"files": {}})["runtime"] == "tensorflow"


def test_an_input_kind_without_a_compiled_form_is_served_by_tensorflow(tmp_path):
    model = models.sequence_ctr(column="item_ids", params=CTR, vocab_size=50)
    fields = compiler.compile_version(
        model=model,
        export_dir=tmp_path,
        input_kind="images",
        signature=_signature(model),
        binary=True,
        rows=lambda steps: {},
    )
    reason = "not compiled: no compiled form for input kind 'images'"
    assert fields == {"runtime": "tensorflow", "runtime_reason": reason}


# --- the NumPy steps against the Keras layers they replace, value by value -----------------------------------


def _bytes(values: list[str]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = [v.encode("utf-8") for v in values]
    return array


def test_id_sequences_pad_clip_and_shift_like_the_layer():
    layer = models.IdSequence(max_len=5, vocab_size=12)
    values = ["", " ", "0", "1 2 3", "3 4 5 6 7 8 9", "10 11 12 13 999999999999", "  7   8  "]
    step = compiled.Step(kind="id_sequence", column="c", feed="x0", params={"max_len": 5, "vocab_size": 12})
    np.testing.assert_array_equal(step.apply(_bytes(values)), layer(tf.constant(values)).numpy())


@pytest.mark.parametrize("tokenize", ["words", "characters"])
def test_text_standardizes_splits_and_looks_up_like_text_vectorization(tokenize):
    model = _text_model(tokenize, "average")
    vectorizer = model.get_layer("vectorizer")
    (step,) = compiler._split(model, "text")[1]
    expected = vectorizer(tf.constant(EDGE_TEXTS)).numpy()
    np.testing.assert_array_equal(compiled.Step(**step).apply(_bytes(EDGE_TEXTS)), expected)


def test_categories_and_numbers_encode_like_lookup_and_normalization():
    model = _tabular_model()
    steps = {s["column"]: compiled.Step(**s) for s in compiler._split(model, "columns")[1]}
    cities = ["paris", "北京", "", "never seen", "PARIS"]
    city_layer = model.get_layer("city_lookup")
    np.testing.assert_array_equal(
        steps["city"].apply(_bytes(cities).reshape(-1, 1)),
        city_layer(tf.constant(np.array(cities, dtype=object).reshape(-1, 1))).numpy(),
    )
    ages = np.array([[0.0], [20.0], [1e6], [-3.5], [np.nan]], dtype=np.float32)
    np.testing.assert_allclose(
        steps["age"].apply(ages), model.get_layer("age_norm")(tf.constant(ages)).numpy(), rtol=1e-6, equal_nan=True
    )


def test_a_spec_of_another_format_or_kind_is_refused():
    with pytest.raises(compiled.SpecError):
        compiled.Preprocessor.from_spec({"format": 99, "steps": []})
    with pytest.raises(compiled.SpecError):
        compiled.Preprocessor.from_spec({"format": 1, "steps": [{"kind": "images", "column": "a", "feed": "x0"}]})
