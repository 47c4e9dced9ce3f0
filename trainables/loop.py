"""The per-worker training loop of LeOCLR / MoCo-v2 (pure PyTorch; knows nothing of Ray).

`run_training(config, report)` trains one model. It runs with world size 1 or under an
initialised torch.distributed process group (DDP; gloo on CPU, NCCL on GPU), so the same
function serves `leoclr train` (one process), torchrun, and Ray Train's TorchTrainer workers.

Why a little over 400 lines: one class, `Trainer`, whose methods (step, epoch, monitor,
checkpoint, resume, fit) share its state; every pure piece it calls lives elsewhere (losses,
views, models, distributed, checkpoint, monitor, progress).

One step (momentum mechanism):
  views   = ViewMaker(images)                       # e.g. (X, X1, X2) for leoclr, on device
  q_i     = normalize(f_q(view_i))  for query views  # with gradient
  k_j     = normalize(f_k(view_j))  for key views    # no gradient, shuffle-BN
  loss    = strategy.loss(q, k, queue, tau)          # losses.py (Eq. 2, Eq. 3, Table 8)
  SGD step; theta_k <- m theta_k + (1 - m) theta_q   # models.EmaUpdater (Eq. 1)
  queue.enqueue(all_gather(k to enqueue))            # FIFO, any batch size

Once per epoch: the monitor at its epochs (trainables.monitor: val_knn_top1/5 and rankme on the
validation split; test_knn_top1/5 at the last epoch only), a checkpoint (atomic: temp dir, then
rename), and `report(metrics, checkpoint_dir_or_None)` on every rank (the injected reporting
hook).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from trainables import distributed
from trainables.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    check_structure,
    checkpoint_file,
    checkpoints_newest_first,
    read_checkpoint_file,
    write_checkpoint,
)
from trainables.config import ConfigError, TrainConfig
from trainables.data import DevicePrefetcher, iterate_batches, load_data, num_batches
from trainables.data.geometry import GeometryConfig, geometric_views, iterate_view_batches
from trainables.losses import STRATEGIES, end_to_end_loss
from trainables.models import EmaUpdater, Encoder, KeyQueue, convert_split_bn, make_key_encoder
from trainables.monitor import Monitor, monitor_views, uses_amp, uses_channels_last

ReportFn = Callable[[dict[str, Any], "str | None"], None]


class DivergenceError(RuntimeError):
    """The loss stopped being finite: the trial must fail instead of training on NaNs."""


def _seed_for(*parts: Any) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("no CUDA device is visible to this process", key="device", value=cfg.device)
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up for `warmup_steps`, then half-cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class Trainer:
    """State of one worker's training: models, queue, optimizer, data, counters."""

    def __init__(self, cfg: TrainConfig, device: torch.device | None = None):
        self.cfg = cfg
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if cfg.batch_size % self.world:
            raise ConfigError(f"must be divisible by the {self.world} workers", key="batch_size",
                              value=cfg.batch_size)
        self.local_batch = cfg.batch_size // self.world
        self.bn_splits = cfg.bn_splits or (8 if self.world == 1 else 1)
        split_bn = self.world == 1 and cfg.mechanism == "momentum" and cfg.shuffle_bn and self.bn_splits > 1
        if split_bn and self.local_batch % self.bn_splits:  # checked before any data is loaded
            zero = " (0 means 8 on one process)" if not cfg.bn_splits else ""
            raise ConfigError(f"must be divisible by bn_splits={self.bn_splits}{zero}: SplitBatchNorm needs "
                              "equal groups; change batch_size or bn_splits", key="batch_size",
                              value=cfg.batch_size)
        self.device = device or resolve_device(cfg)
        self.amp = uses_amp(cfg, self.device)
        self.channels_last = uses_channels_last(cfg)
        self.strategy = STRATEGIES[cfg.attraction_strategy]
        self.momentum_mechanism = cfg.mechanism == "momentum"

        # Data: rank 0 builds caches / downloads first, the others then read them.
        with distributed.rank0_first():
            self.data = load_data(cfg.dataset, root=cfg.data_root, image_size=cfg.image_size,
                                  download=cfg.download, photo_patches=cfg.photo_patches,
                                  val_fraction=cfg.val_fraction, val_seed=cfg.val_seed)
        self.steps_per_epoch = num_batches(self.data.pretrain, self.local_batch,
                                           world_size=self.world, drop_last=True)
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"the {cfg.dataset} training set has {len(self.data.pretrain)} images, "
                              "fewer than one global batch", key="batch_size", value=cfg.batch_size)
        # views are written straight in the layout the encoders read (no conversion copy)
        self.views = monitor_views(cfg, self.channels_last)
        self.monitor = Monitor(cfg, self.data, self.device, views=self.views,
                               channels_last=self.channels_last, amp=self.amp, rank=self.rank,
                               world=self.world)
        # file-backed photos keep their aspect ratio: the loader workers cut the geometric views
        # from each decoded image (data/geometry.py); in-memory square sets are cut on the device
        self.worker_views = geometric_views(self.data.pretrain, GeometryConfig(
            cfg.resolved_view_size, self.strategy.views, tuple(cfg.crop_scale), seed=cfg.seed))

        # Models: identical initialisation on every rank (DDP also broadcasts rank 0's weights).
        torch.manual_seed(cfg.seed)
        encoder = Encoder(cfg.backbone, cfg.head, cfg.embedding_dim)
        if split_bn:
            encoder = convert_split_bn(encoder, self.bn_splits)
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.query_encoder = encoder.to(self.device, memory_format=memory_format)
        self.key_encoder = self.queue = self.ema = None
        if self.momentum_mechanism:
            self.key_encoder = make_key_encoder(self.query_encoder)
            self.ema = EmaUpdater(self.key_encoder, self.query_encoder)
            queue_gen = torch.Generator().manual_seed(_seed_for(cfg.seed, "queue"))
            self.queue = KeyQueue(cfg.queue_size, cfg.embedding_dim, queue_gen).to(self.device)
        self.query_fwd = distributed.wrap_ddp(self.query_encoder, self.device)
        self.key_fwd = self.key_encoder
        if cfg.compile:
            self.query_fwd = torch.compile(self.query_fwd)
            if self.key_encoder is not None:
                self.key_fwd = torch.compile(self.key_encoder)

        self.base_lr = cfg.scaled_lr()
        self.optimizer = torch.optim.SGD(self.query_encoder.parameters(), lr=self.base_lr,
                                         momentum=cfg.optimizer_momentum, weight_decay=cfg.weight_decay)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.history: list[dict[str, Any]] = []

    # ---------------------------------------------------------------------------------------
    def _autocast(self):
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _set_lr(self) -> float:
        lr = lr_at(self.global_step, self.total_steps, self.warmup_steps, self.base_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _embed(self, fn, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return F.normalize(fn(x).float(), dim=1)

    def train_step(self, images: torch.Tensor, view_gen: torch.Generator,
                   shuffle_gen: torch.Generator) -> torch.Tensor:
        """One optimisation step on a local batch of uint8 images (B x 3 x S x S, on device), or
        of views the loader workers cut (B x V x 3 x R x R: only the photometric stage is left)."""
        cfg, spec = self.cfg, self.strategy
        views = (self.views.photometric(images, view_gen) if images.dim() == 5
                 else self.views(images, spec.views, view_gen))
        self._set_lr()
        with self._autocast():
            if self.momentum_mechanism:
                qs = [self._embed(self.query_fwd, views[i]) for i in spec.query_views(cfg.symmetric)]
                with torch.no_grad():
                    key_fn = lambda x: self._embed(self.key_fwd, x)  # noqa: E731
                    ks = [
                        distributed.shuffle_bn_forward(key_fn, views[i], shuffle_gen) if cfg.shuffle_bn else key_fn(views[i])
                        for i in spec.key_views(cfg.symmetric)
                    ]
                loss = spec.loss(qs, ks, self.queue.keys, cfg.temperature)
            else:
                zs = [distributed.all_gather_with_grad(self._embed(self.query_fwd, v)) for v in views]
                loss = end_to_end_loss(zs, spec.pairs, cfg.temperature)
        # under DDP the gradients are views of the all-reduce buckets (gradient_as_bucket_view):
        # zeroing keeps them so; set_to_none would drop the views and bring back the copies
        self.optimizer.zero_grad(set_to_none=not distributed.is_distributed())
        loss.backward()
        self.optimizer.step()
        if self.momentum_mechanism:
            self.ema(cfg.key_momentum)
            new_keys = ks if cfg.enqueue == "both" else ks[:1]
            self.queue.enqueue(distributed.concat_all_gather(torch.cat(new_keys, dim=0)))
        self.global_step += 1
        return loss.detach()

    def _check_finite(self, loss_sum: torch.Tensor, step: int) -> None:
        total = distributed.all_reduce_sum_(loss_sum.clone())  # every rank reaches the same verdict
        if not torch.isfinite(total).item():
            raise DivergenceError(
                f"loss is not finite ({total.item()}) at epoch {self.epoch + 1}, step {step + 1} "
                f"(lr={self.optimizer.param_groups[0]['lr']:.4g}, temperature={self.cfg.temperature}); "
                "the run diverged: lower lr or raise temperature"
            )

    def train_epoch(self, progress: Callable[[int, int, int], None] | None = None) -> dict[str, float]:
        """One epoch; `progress(epoch, step, steps)` at its start (step 0) and after each step
        (trainables/progress.py)."""
        cfg = self.cfg
        self.query_encoder.train()
        if self.key_encoder is not None:
            self.key_encoder.train()
        # Per-epoch generators: a resumed run draws exactly the views it would have drawn.
        view_gen = torch.Generator(self.device).manual_seed(_seed_for(cfg.seed, "views", self.epoch, self.rank))
        shuffle_gen = torch.Generator().manual_seed(_seed_for(cfg.seed, "shuffle", self.epoch))
        loss_sum = torch.zeros((), device=self.device)
        start = time.perf_counter()
        steps = 0
        iterate, source = ((iterate_view_batches, self.worker_views) if self.worker_views is not None
                           else (iterate_batches, self.data.pretrain))
        batches = iterate(source, self.local_batch, shuffle=True, seed=cfg.seed, epoch=self.epoch,
                          rank=self.rank, world_size=self.world, drop_last=True,
                          num_workers=cfg.loader_workers, pin_memory=self.device.type == "cuda")
        if progress is not None:  # step 0: the epoch starts
            progress(self.epoch + 1, 0, self.steps_per_epoch)
        # on CUDA: pinned batches, the copy of the next one overlapping this step (no-op on CPU)
        for images, _ in DevicePrefetcher(batches, self.device):
            if steps >= self.steps_per_epoch:
                break
            loss_sum += self.train_step(images, view_gen, shuffle_gen)
            steps += 1
            if progress is not None:
                progress(self.epoch + 1, steps, self.steps_per_epoch)
            if steps % cfg.finite_check_every == 0:
                self._check_finite(loss_sum, steps - 1)
        self._check_finite(loss_sum, steps - 1)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_time = time.perf_counter() - start
        mean_loss = distributed.all_reduce_mean_(loss_sum / steps)
        return {
            "loss": mean_loss.item(),
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": steps * cfg.batch_size / train_time,
            "train_time_s": train_time,
            "steps": steps,
        }

    def sync_bn_statistics(self) -> None:
        """Make every worker's buffers equal, once per epoch, before the kNN monitor and the
        checkpoint read them.

        DDP runs with forward buffer syncing off (`ddp_options`): in training mode BN normalises
        with batch statistics, so running statistics never enter a loss or a gradient and a
        broadcast before every forward would only cost time. Each worker's BN layers therefore
        track the statistics of its own batches. Floating-point buffers (running mean and
        variance) of both encoders are averaged over the workers, so the statistics reflect
        every worker's data; other buffers (num_batches_tracked, equal on every worker) are
        taken from rank 0. Then the monitor, the checkpoint and a later single-process
        evaluation all see the same encoder."""
        for module in (self.query_encoder, self.key_encoder):
            if module is not None:
                distributed.average_float_buffers(module)

    # ---------------------------------------------------------------------------------------
    def knn_eval(self, test: bool = False) -> dict[str, float]:
        """The monitor (trainables.monitor) on the query backbone: val_knn_top1/5 and rankme on
        the validation split; with ``test`` also test_knn_top1/5 (the last epoch only)."""
        return self.monitor(self.query_encoder.backbone, test=test)

    # ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "config": self.cfg.to_dict(),
            "query_encoder": self.query_encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
        }
        if self.momentum_mechanism:
            state["key_encoder"] = self.key_encoder.state_dict()
            state["queue"] = self.queue.state_dict()
        return state

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Write `directory/epoch_NNNN/` atomically (see trainables.checkpoint); rank 0 only."""
        return write_checkpoint(directory, self.epoch, self.state_dict(), encoder=self.query_encoder,
                                config=self.cfg, history=self.history)

    def resume(self, candidates: "str | Path | list[str | Path]") -> Path:
        """Load the first good checkpoint of `candidates` (newest first).

        A path may also be a folder of checkpoints (`epoch_NNNN/` or Ray's `checkpoint_*/`): its
        checkpoints are tried newest epoch first. A truncated, corrupt or incompatible one is
        reported (its file named) and the previous one is used; if none loads, the last error
        is raised."""
        paths = [candidates] if isinstance(candidates, (str, Path)) else list(candidates)
        expanded: list[Path] = []
        for path in map(Path, paths):
            if path.is_dir() and not checkpoint_file(path).exists():
                expanded.extend(checkpoints_newest_first(path))
            else:
                expanded.append(path)
        if not expanded:
            raise CheckpointError("no checkpoint found there", source=str(paths[0]))
        for i, path in enumerate(expanded):
            try:
                self.load_checkpoint(path)
                return path
            except CheckpointError as exc:
                if i == len(expanded) - 1:
                    raise
                print(f"leoclr: warning: {exc}; falling back to the previous checkpoint {expanded[i + 1]}",
                      flush=True)
        raise AssertionError("unreachable")

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything saved by `save_checkpoint` (a checkpoint dir or its checkpoint.pt)."""
        file = checkpoint_file(path)
        state = read_checkpoint_file(file)
        check_structure(state, self.cfg, file)
        try:
            self.query_encoder.load_state_dict(state["query_encoder"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.momentum_mechanism:
                self.key_encoder.load_state_dict(state["key_encoder"])
                self.queue.load_state_dict(state["queue"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not fit the model: {exc}", source=str(file)) from None
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state.get("history", []))
        torch.set_rng_state(state["torch_rng"])

    # ---------------------------------------------------------------------------------------
    def fit(self, report: ReportFn | None = None, checkpoint_dir: str | Path | None = None,
            keep_checkpoints: int | None = 2, progress: Callable[[int, int, int], None] | None = None
            ) -> dict[str, Any]:
        """Train the remaining epochs; returns the last epoch's metrics. The first epoch reported
        by this process also carries the split sizes (data_<split>_images: what tracking logs as
        the run's datasets); `progress` is called after every step (see train_epoch)."""
        cfg = self.cfg
        own_tmp = checkpoint_dir is None
        if own_tmp and self.rank == 0:
            checkpoint_dir = tempfile.mkdtemp(prefix="leoclr_ckpt_")
        init_metrics = {f"data_{k}_images": v for k, v in self.data.splits.items() if isinstance(v, int)}
        if cfg.knn_at_start and self.epoch == 0:
            init_metrics.update({f"{k}_init": v for k, v in self.knn_eval().items()})  # val_knn_top1_init, ...
        written: list[Path] = []
        if self.epoch >= cfg.epochs and self.history and report is not None:
            # resumed from its final checkpoint (e.g. a sweep driver killed after the run ended):
            # nothing to train, but the caller still needs the run's result
            report(dict(self.history[-1]), None)
        try:
            while self.epoch < cfg.epochs:
                epoch_start = time.perf_counter()
                metrics = self.train_epoch(progress)
                self.epoch += 1
                self.sync_bn_statistics()
                last = self.epoch == cfg.epochs
                if self.epoch % cfg.knn_every == 0 or last or self.epoch in cfg.knn_epochs:
                    knn_start = time.perf_counter()
                    metrics.update(self.knn_eval(test=last))
                    metrics["knn_time_s"] = time.perf_counter() - knn_start
                metrics.update(init_metrics)
                init_metrics = {}
                metrics["epoch"] = self.epoch
                metrics["epoch_time_s"] = time.perf_counter() - epoch_start
                self.history.append(metrics)
                ckpt = None
                if self.rank == 0 and (self.epoch % cfg.checkpoint_every == 0 or self.epoch == cfg.epochs):
                    ckpt = self.save_checkpoint(checkpoint_dir)
                    written.append(ckpt)
                if report is not None:
                    report(dict(metrics), str(ckpt) if ckpt else None)
                while keep_checkpoints is not None and len(written) > keep_checkpoints:
                    shutil.rmtree(written.pop(0), ignore_errors=True)
        finally:
            if own_tmp and self.rank == 0:
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return self.history[-1] if self.history else {}


def run_training(
    config: TrainConfig | Mapping[str, Any],
    report: ReportFn | None = None,
    *,
    resume_from: "str | list[str] | None" = None,
    checkpoint_dir: str | None = None,
    keep_checkpoints: int | None = 2,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Train one model on this worker (see module docstring). Returns the final metrics.

    report(metrics, checkpoint_dir) is called on every rank after every epoch; the checkpoint
    directory (rank 0 only, else None) stays valid until the call returns.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    trainer = Trainer(cfg, device=device)
    if resume_from:
        trainer.resume(resume_from)
    return trainer.fit(report, checkpoint_dir=checkpoint_dir, keep_checkpoints=keep_checkpoints)
