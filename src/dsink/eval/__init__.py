"""Metrics, evaluation of runs and reports."""

from .evaluate import evaluate_trainer, load_predictions
from .metrics import classification_report, label_diagnostics, macro_f1, per_class_accuracy, shot_groups

__all__ = ["classification_report", "evaluate_trainer", "label_diagnostics", "load_predictions", "macro_f1",
           "per_class_accuracy", "shot_groups"]
