"""Evaluation of a trained encoder, pure PyTorch: the linear probe, kNN and the random-crop test.

protocol.py: ``LinearProtocol`` (the settings), ``ProtocolError``, ``EvaluationError``.
linear.py: ``evaluate_encoder`` (a frozen backbone on a ``DataBundle``), ``evaluate_checkpoint``
(a checkpoint folder with its run's own data and settings), ``topk_accuracy``,
``make_linear_classifier``. frozen.py: the frozen-backbone forward both use.
"""

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
    "evaluate_checkpoint",
    "evaluate_encoder",
    "make_linear_classifier",
    "topk_accuracy",
]
