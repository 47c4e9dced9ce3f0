"""Evaluation of a trained encoder, pure PyTorch: the linear probe, kNN and the random-crop test.

protocol.py: ``LinearProtocol`` (the settings), ``ProtocolError``, ``EvaluationError``.
linear.py: ``evaluate_encoder`` (a frozen backbone on a ``DataBundle``), ``evaluate_checkpoint``
(a checkpoint folder with its run's own data and settings), ``topk_accuracy``,
``make_linear_classifier``. frozen.py: the frozen-backbone forward both use. baseline.py: the
recalibrated random baseline (``recalibrated_random_backbone``, ``baseline_metrics``,
``recalibrate_batchnorm``).
"""

from trainables.eval.baseline import baseline_metrics, recalibrate_batchnorm, recalibrated_random_backbone
from trainables.eval.linear import (
    evaluate_checkpoint,
    evaluate_encoder,
    make_linear_classifier,
    topk_accuracy,
)
from trainables.eval.protocol import AUGMENTS, EvaluationError, LinearProtocol, ProtocolError

__all__ = [
    "AUGMENTS",
    "EvaluationError",
    "LinearProtocol",
    "ProtocolError",
    "baseline_metrics",
    "evaluate_checkpoint",
    "evaluate_encoder",
    "make_linear_classifier",
    "recalibrate_batchnorm",
    "recalibrated_random_backbone",
    "topk_accuracy",
]
