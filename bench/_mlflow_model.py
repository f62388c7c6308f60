#!/usr/bin/env python
"""Wrap a published SavedModel as an MLflow pyfunc model: run with the MLflow venv's python, never the project's.

    var/bench/mlflow-venv/bin/python bench/_mlflow_model.py --saved-model DIR --column item_sequence --out PATH

MLflow is only the benchmark's peer, so it lives in its own venv
(``bench/requirements-mlflow.txt``) and this file is the only code that
imports it. The wrapper is the plain way anyone would serve this Keras
export with MLflow: ``load_context`` loads the SavedModel, ``predict`` feeds
the DataFrame column to ``serving_default`` and returns the probabilities.
The SavedModel directory goes in as an artifact, so the MLflow model is
self-contained; the class is pickled by value (cloudpickle) with it.
"""

from __future__ import annotations

import argparse

import mlflow.pyfunc


class SavedModelPyfunc(mlflow.pyfunc.PythonModel):
    """``serving_default`` of a Keras-exported SavedModel over one string column."""

    def __init__(self, column: str) -> None:
        self.column = column

    def load_context(self, context) -> None:
        import tensorflow as tf

        self._tf = tf
        self._saved = tf.saved_model.load(context.artifacts["saved_model"])
        self._function = self._saved.signatures["serving_default"]
        (self._input, spec), *_ = self._function.structured_input_signature[1].items()
        self._rank = len(spec.shape)
        self._output = sorted(self._function.structured_outputs)[0]

    def predict(self, context, model_input, params=None):
        values = model_input[self.column].astype(str).tolist()
        tensor = self._tf.constant(values)
        if self._rank == 2:
            tensor = self._tf.reshape(tensor, (-1, 1))
        return self._function(**{self._input: tensor})[self._output].numpy().reshape(-1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saved-model", required=True)
    parser.add_argument("--column", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--requirements", nargs="*", default=[])
    args = parser.parse_args()
    mlflow.pyfunc.save_model(
        path=args.out,
        python_model=SavedModelPyfunc(args.column),
        artifacts={"saved_model": args.saved_model},
        pip_requirements=args.requirements or None,  # given, so MLflow does not infer them by importing things
    )
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
