"""Evaluation of a trained encoder, pure PyTorch: the paper's protocols (docs/method.md,
"Evaluation").

registry.py: ``parse_protocols`` (``"knn,linear,random_crop,semi_10pct,transfer:cifar100"`` ->
typed, validated ``ProtocolSpec`` list), ``run_protocols``, ``evaluate_protocols`` (a checkpoint
folder). One module per protocol: knn.py (``KnnProtocol``, ``run_knn``), linear.py
(``LinearProtocol`` from protocol.py, ``run_linear``, and ``evaluate_encoder``: linear + kNN +
random crop in one pass), random_crop.py (``RandomCropProtocol``, ``run_random_crop``),
finetune.py (``FinetuneProtocol``, ``run_finetune``: the semi-supervised protocols and the
fine-tune half of transfer), transfer.py (``TransferProtocol``, ``run_transfer``). settings.py:
the settings' shared base and errors; inputs.py: the views every protocol feeds the backbone;
frozen.py: the frozen-backbone forward; metrics.py: top-k accuracy. baseline.py: the
recalibrated random baseline (``recalibrated_random_backbone``, ``baseline_metrics``,
``recalibrate_batchnorm``): the same backbone with random weights and BatchNorm statistics
recalibrated on the training images, the row every report compares against.
"""

from trainables.eval.baseline import baseline_metrics, recalibrate_batchnorm, recalibrated_random_backbone

from trainables.eval.finetune import FinetuneProtocol, FinetuneResult, FineTuned, run_finetune
from trainables.eval.knn import KnnProtocol, run_knn
from trainables.eval.linear import (
    LinearProbe,
    evaluate_checkpoint,
    evaluate_encoder,
    make_linear_classifier,
    run_linear,
    topk_accuracy,
)
from trainables.eval.protocol import AUGMENTS, EvaluationError, LinearProtocol, ProtocolError
from trainables.eval.random_crop import RandomCropProtocol, run_random_crop
from trainables.eval.registry import (
    PROTOCOLS,
    ProtocolResult,
    ProtocolSpec,
    evaluate_protocols,
    parse_protocols,
    run_protocols,
)
from trainables.eval.settings import ProtocolSettings, RunSettings
from trainables.eval.transfer import TransferProtocol, load_transfer_data, run_transfer

__all__ = [
    "AUGMENTS",
    "PROTOCOLS",
    "EvaluationError",
    "FineTuned",
    "FinetuneProtocol",
    "FinetuneResult",
    "KnnProtocol",
    "LinearProbe",
    "LinearProtocol",
    "ProtocolError",
    "ProtocolResult",
    "ProtocolSettings",
    "ProtocolSpec",
    "RandomCropProtocol",
    "RunSettings",
    "TransferProtocol",
    "baseline_metrics",
    "evaluate_checkpoint",
    "evaluate_encoder",
    "evaluate_protocols",
    "load_transfer_data",
    "make_linear_classifier",
    "parse_protocols",
    "recalibrate_batchnorm",
    "recalibrated_random_backbone",
    "run_finetune",
    "run_knn",
    "run_linear",
    "run_protocols",
    "run_random_crop",
    "run_transfer",
    "topk_accuracy",
]
