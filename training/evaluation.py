"""Held-out evaluation metrics computed with NumPy (no TensorFlow needed).

``EVALUATIONS`` names each way a template's model is evaluated; a template
declares one (``Template.evaluation``) and the trainer asks for it by that
name, so the trainer never decides from the template which metrics apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

ROC_POINTS = 101


def _round(value: float) -> float:
    return round(float(value), 6)


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic (ties get average ranks)."""
    positives = int(y_true.sum())
    negatives = len(y_true) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=float)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return (ranks[y_true == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)


def roc_curve(y_true: np.ndarray, scores: np.ndarray, points: int = ROC_POINTS) -> list[list[float]]:
    positives = max(int(y_true.sum()), 1)
    negatives = max(len(y_true) - int(y_true.sum()), 1)
    curve = []
    for threshold in np.linspace(1.0, 0.0, points):
        predicted = scores >= threshold
        tpr = np.logical_and(predicted, y_true == 1).sum() / positives
        fpr = np.logical_and(predicted, y_true == 0).sum() / negatives
        curve.append([_round(fpr), _round(tpr), _round(threshold)])
    return curve


def binary_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    y_true = y_true.astype(int)
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    predicted = (scores >= 0.5).astype(int)
    tp = int(((predicted == 1) & (y_true == 1)).sum())
    fp = int(((predicted == 1) & (y_true == 0)).sum())
    fn = int(((predicted == 0) & (y_true == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "task": "binary",
        "examples": len(y_true),
        "auc": _round(roc_auc(y_true, scores)),
        "log_loss": _round(-np.mean(y_true * np.log(clipped) + (1 - y_true) * np.log(1 - clipped))),
        "accuracy": _round((predicted == y_true).mean()),
        "precision": _round(precision),
        "recall": _round(recall),
        "f1": _round(f1),
        "threshold": 0.5,
        "roc_curve": roc_curve(y_true, scores),
    }


def multiclass_metrics(y_true: np.ndarray, probabilities: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    classes = len(label_names)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((classes, classes), dtype=int)
    np.add.at(confusion, (y_true, predicted), 1)
    per_class = {}
    f1s = []
    for index, name in enumerate(label_names):
        tp = confusion[index, index]
        precision = tp / confusion[:, index].sum() if confusion[:, index].sum() else 0.0
        recall = tp / confusion[index, :].sum() if confusion[index, :].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per_class[name] = {
            "precision": _round(precision),
            "recall": _round(recall),
            "f1": _round(f1),
            "support": int(confusion[index, :].sum()),
        }
    return {
        "task": "multiclass",
        "examples": len(y_true),
        "accuracy": _round((predicted == y_true).mean()),
        "macro_f1": _round(np.mean(f1s)),
        "per_class": per_class,
        "labels": label_names,
        "confusion_matrix": confusion.tolist(),
    }


def _binary(truth: np.ndarray, predictions: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    return binary_metrics(truth, predictions.reshape(-1).astype("float64"))


def _multiclass(truth: np.ndarray, predictions: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    metrics = multiclass_metrics(truth, predictions.astype("float64"), label_names)
    if len(label_names) == 2:  # two classes: also the binary view (AUC, ROC) of the second label
        metrics |= binary_metrics(truth, predictions[:, 1].astype("float64"))
    return metrics


@dataclass(frozen=True)
class Evaluation:
    """One evaluation kind: the model output it reads (a template task) and the metrics it computes from it."""

    task: str  # "binary": one probability per row; "multiclass": one per label
    compute: Callable[[np.ndarray, np.ndarray, list[str]], dict[str, Any]]  # (class indices, predictions, names)


EVALUATIONS: dict[str, Evaluation] = {
    "binary": Evaluation(task="binary", compute=_binary),
    # Per-class metrics and the confusion matrix, plus the binary view when there are exactly two labels.
    "multiclass": Evaluation(task="multiclass", compute=_multiclass),
}


def evaluate(kind: str, *, truth: np.ndarray, predictions: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """The held-out metrics of evaluation ``kind`` (a template's ``evaluation``) for the model's predictions."""
    return EVALUATIONS[kind].compute(truth, predictions, label_names)
