"""Settings of the linear evaluation (``LinearProtocol``) and the evaluation's errors.

The defaults are MoCo's linear evaluation (``main_lincls.py``), the protocol of LeOCLR Tables 1,
5, 6 and 7 (see docs/method.md); ``for_dataset_size`` adapts it to a small labelled split.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.eval.settings import EvaluationError, ProtocolError, RunSettings
from trainables.validation import is_number

__all__ = ["AUGMENTS", "EvaluationError", "LinearProtocol", "ProtocolError"]

#: Training-view choices of the linear classifier (see ``LinearProtocol.augment``).
AUGMENTS = ("crop_flip", "none")


@dataclass(frozen=True)
class LinearProtocol(RunSettings):
    """Settings of the linear evaluation and the random-crop test.

    Defaults are MoCo's ImageNet linear evaluation (``main_lincls.py``):
    SGD lr 30, momentum 0.9, weight decay 0, batch 256, 100 epochs, lr x 0.1 at 60 % and 80 %
    of the epochs (epochs 60 and 80), train views RandomResizedCrop(R, scale 0.08-1, torchvision's
    default, as main_lincls) + horizontal flip.

    Fields beyond that protocol:

    * ``augment``: ``"crop_flip"`` (the protocol: fresh crop + flip views every epoch, one
      backbone forward per image per epoch) or ``"none"``: the eval-view features are computed
      once and the classifier trains on that cache (one backbone forward per image in all
      instead of one per image and epoch; the numbers are then a "linear probe on fixed
      features", not the protocol - say so when reporting them).
    * ``lr_milestones`` are *fractions* of ``epochs`` (rounded to whole epochs), so an
      ``epochs`` override keeps the schedule's shape: epochs=10 steps the lr at 6 and 8.
    * ``test_crop_fraction``: the eval view keeps the central fraction of the stored image's side
      and resizes it to R. 1.0 (default) = the whole image resized, exactly
      ``ViewMaker.eval_view`` - the view the kNN monitor uses and the CIFAR / STL practice; 0.875
      = ImageNet's Resize(256) + CenterCrop(224) (with images stored at 256 and R = 224 the crop
      is exact, no resampling).
    * ``random_crop_scale``: area range of the random-crop test's RandomResizedCrop (default
      torchvision's 0.08-1, the crops a linear-eval classifier is trained on; the paper does not
      give it), no flip (a flip says nothing about crops); ``random_crop_repeats``: crops per
      test image (accuracy averaged over them; more = less noise).
    * ``seed`` (classifier init, batch order, views), ``eval_batch_size``, ``amp``,
      ``loader_workers``: see ``RunSettings``.

    Scaling to small data (``for_dataset_size``, ``RunSettings``' rule): splits of at least 8 x
    256 = 2,048 images get the protocol unchanged; digits (1,437) gets batch 128 and lr 15;
    128 images get batch 16 and lr 1.875 (``lr = 30 * batch / 256``). To cut compute, pass
    ``epochs`` (the schedule scales with it) and/or ``augment="none"``.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 30.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: tuple[float, ...] = (0.6, 0.8)
    lr_decay: float = 0.1
    augment: str = "crop_flip"
    train_crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_prob: float = 0.5
    test_crop_fraction: float = 1.0
    random_crop_scale: tuple[float, float] = (0.08, 1.0)
    random_crop_repeats: int = 1

    # -- the schedule ---------------------------------------------------------------------------

    def milestone_epochs(self) -> tuple[int, ...]:
        """0-based epochs from which the lr is multiplied by ``lr_decay`` (100 epochs: 60, 80)."""
        return tuple(int(round(f * self.epochs)) for f in self.lr_milestones)

    def lr_at(self, epoch: int) -> float:
        """lr of 0-based ``epoch``: ``lr * lr_decay ** (number of milestones <= epoch)``,
        as ``adjust_learning_rate`` in MoCo's main_lincls.py."""
        return self.lr * self.lr_decay ** sum(epoch >= m for m in self.milestone_epochs())

    # -- validation -----------------------------------------------------------------------------

    def validate(self) -> None:
        self._require_ints(("epochs", "batch_size", "random_crop_repeats"), 1)
        self._require_runtime()
        self._require_numbers(("lr",), low=0, low_open=True, reason="must be a finite number > 0")
        self._require_numbers(("momentum",), low=0, high=1, high_open=True)
        self._require_numbers(("weight_decay",), low=0, reason="must be a finite number >= 0")
        self._require_numbers(("lr_decay",), low=0, high=1, low_open=True,
                              reason="must be a number in (0, 1] (the lr is multiplied by it at each milestone)")
        ms = self.lr_milestones
        if (not isinstance(ms, tuple) or not all(is_number(m) and 0 < m <= 1 for m in ms)
                or list(ms) != sorted(ms)):
            raise self._bad("lr_milestones", "must be increasing fractions of the epochs in (0, 1], e.g. [0.6, 0.8]")
        self._require_choice("augment", AUGMENTS)
        for name in ("train_crop_scale", "random_crop_scale"):
            self._require_range(name, "must be two numbers 0 < min <= max <= 1 (RandomResizedCrop area fractions)")
        self._require_numbers(("flip_prob",), low=0, high=1, reason="must be a probability in [0, 1]")
        self._require_numbers(("test_crop_fraction",), low=0, high=1, low_open=True,
                              reason="must be in (0, 1] (1 = whole image, 0.875 = ImageNet's 224/256)")
