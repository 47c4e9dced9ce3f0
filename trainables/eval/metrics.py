"""Top-k accuracy of class scores and the per-epoch progress record, shared by every protocol."""

from __future__ import annotations

from typing import Callable

import torch

from trainables.eval.settings import EvaluationError

__all__ = ["ProgressFn", "recorder", "topk_accuracy", "topk_correct"]

#: Called after every training epoch of a protocol with {"epoch", "lr", "train_loss", "train_top1", ...}.
ProgressFn = Callable[[dict[str, float]], None]


def recorder(history: list[dict[str, float]], progress: ProgressFn | None) -> ProgressFn:
    """A progress function that appends each epoch's stats to ``history`` and passes a copy to
    ``progress`` (if given)."""
    def record(stats: dict[str, float]) -> None:
        history.append(dict(stats))
        if progress is not None:
            progress(dict(stats))
    return record


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    """Rows of ``scores`` (N x C) whose label (N, int64) is among the ``min(k, C)`` highest."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices  # N x k
    return int((top == labels[:, None]).any(dim=1).sum().item())


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percent of rows whose label is among the ``k`` highest scores.

    scores: N x C, labels: N (int64). With C <= k every class is among the top k and the result
    is 100 (that is how top-5 is defined for fewer than 5 classes here; ties are broken by
    ``torch.topk``).
    """
    n = scores.shape[0]
    if n == 0:
        raise EvaluationError("topk_accuracy: no samples")
    return 100.0 * topk_correct(scores, labels, k) / n
