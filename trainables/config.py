"""All training defaults in one typed place, with strict validation.

A `TrainConfig` is what one trial trains. It is flat on purpose: every key is a readable name
(`attraction_strategy`, `key_momentum`, `temperature`, `queue_size`, ...) that appears unchanged
in `--set key=value` overrides, in search-space YAML files and as an MLflow parameter.

Defaults follow docs/method.md: the paper's optimisation (lr 0.03 per 256 images, key momentum
0.999, weight decay 1e-4) and MoCo v2's augmentation, on the offline photo_patches set at 32 px so
a CPU run works out of the box. ``preset`` fills whole recipes (trainables/presets.py: the paper's
ImageNet / CIFAR-10 / STL-10 settings, the MoCo CIFAR-10 demo); keys given explicitly win.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from trainables.presets import PRESETS
from trainables.validation import InputError, did_you_mean, is_int, is_number, is_probability

ATTRACTION_STRATEGIES = ("moco_v2", "leoclr", "leoclr_random_original", "attract_all")
MECHANISMS = ("momentum", "end_to_end")
BACKBONES = ("small_cnn", "resnet18_cifar", "resnet18", "resnet50")
HEADS = ("mlp", "linear")
AUGMENTATIONS = ("v2", "v1")
ENQUEUE = ("both", "first")
DATASETS = ("photo_patches", "digits", "cifar10", "cifar100", "stl10", "imagefolder", "parquet")


class ConfigError(InputError):
    """A bad configuration value. Fields: source (file or --set), key, value, reason; the message
    is ``<source>: <key>=<value>: <reason>``."""


@dataclass
class TrainConfig:
    preset: str | None = None  # a recipe of trainables/presets.py; explicit keys override it
    # ---- data ----------------------------------------------------------------------------
    dataset: str = "photo_patches"
    data_root: str | None = None  # required for cifar10/100, stl10, imagefolder, parquet
    download: bool = False  # let torchvision download CIFAR/STL when the machine is online
    image_size: int = 32  # decoded/stored size of every image (square), pixels
    view_size: int | None = None  # resolution of the training views; None = image_size
    photo_patches: dict = field(default_factory=dict)  # options for the photo_patches builder
    loader_workers: int = 0  # DataLoader processes for file-backed datasets
    val_fraction: float = 0.1  # share of each class's labelled training images held out for validation
    val_seed: int = 0  # seeds the validation carve; fixed across a sweep (it does not follow `seed`)
    # ---- views (augmentation) --------------------------------------------------------------
    augmentation: str = "v2"  # MoCo augmentation base: v2 (aug+) or v1; the keys below refine it
    crop_scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop area range
    jitter_prob: float | None = None  # colour jitter probability; None = base (v2: 0.8, v1: 1)
    jitter_brightness: float | None = None  # jitter strengths; None = base (v2: .4 .4 .4 .1,
    jitter_contrast: float | None = None  # v1: .4 .4 .4 .4); 0 switches that op off
    jitter_saturation: float | None = None
    jitter_hue: float | None = None  # in [0, 0.5]
    grayscale_prob: float = 0.2  # RandomGrayscale probability (both bases: 0.2)
    blur_prob: float | None = None  # None = base default (v2: 0.5, v1: 0)
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # Gaussian blur sigma range
    flip_prob: float = 0.5  # horizontal flip probability
    # ---- model -----------------------------------------------------------------------------
    backbone: str = "resnet18_cifar"
    head: str = "mlp"  # mlp = MoCo v2 head, linear = MoCo v1 head
    embedding_dim: int = 128
    bn_splits: int = 0  # SplitBatchNorm groups for single-process runs; 0 = auto (8 if 1 worker)
    shuffle_bn: bool = True  # shuffle key batches across workers (or splits) before f_k
    # ---- method (docs/method.md) -----------------------------------------------------------
    attraction_strategy: str = "leoclr"
    mechanism: str = "momentum"  # momentum (queue + key encoder) or end_to_end (NT-Xent)
    symmetric: bool = False  # moco_v2 only: also l(q2, k1)
    enqueue: str = "both"  # which key views enter the queue: both (all) or first
    key_momentum: float = 0.999  # m in theta_k <- m theta_k + (1 - m) theta_q
    temperature: float = 0.2  # tau
    queue_size: int = 4096  # K negatives
    # ---- optimisation ----------------------------------------------------------------------
    epochs: int = 10
    batch_size: int = 256  # global batch (all workers together)
    lr: float = 0.03  # base learning rate per 256 images; actual lr = lr * batch_size / 256
    optimizer_momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    # ---- monitoring ------------------------------------------------------------------------
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_every: int = 1  # epochs between kNN evaluations (always at the last epoch)
    knn_epochs: tuple[int, ...] = ()  # more epochs with a kNN evaluation (a search adds ASHA's rungs)
    knn_at_start: bool = False  # also measure the random-init encoder (epoch 0)
    rankme_samples: int = 2048  # validation images (in order) whose features RankMe reads
    finite_check_every: int = 20  # steps between host syncs that check the loss is finite
    # ---- runtime ---------------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 on cuda) | bf16 | off
    channels_last: str = "auto"  # auto (= on, every device) | on | off
    compile: bool = False  # torch.compile the encoders
    checkpoint_every: int = 1  # epochs between checkpoints (always at the last epoch)
    max_steps_per_epoch: int | None = None  # cap for smoke tests

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        """Build and validate a config; `source` (a file name) prefixes every error message."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"expected a mapping of keys to values, got {type(values).__name__}",
                              source=source)
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            hints = [f"{k!r}{did_you_mean(k, known)}" for k in unknown]
            raise ConfigError(f"unknown key(s) {', '.join(hints)}", source=source)
        values = {**preset_defaults(values.get("preset"), source), **values}
        hints_by_name = typing.get_type_hints(cls)
        coerced = {k: _coerce(source, k, v, hints_by_name[k]) for k, v in values.items()}
        cfg = cls(**coerced)
        cfg.validate(source)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "TrainConfig":
        values = load_yaml_mapping(path)
        values.update(parse_overrides(overrides or []))
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key, value in d.items():
            if isinstance(value, tuple):
                d[key] = list(value)
        return d

    def replace(self, **changes: Any) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    # ------------------------------------------------------------------------------------------
    @property
    def resolved_view_size(self) -> int:
        return self.view_size or self.image_size

    def jitter_strengths(self) -> tuple[float | None, float | None, float | None, float | None]:
        """(brightness, contrast, saturation, hue) as given; None = the augmentation base's."""
        return (self.jitter_brightness, self.jitter_contrast, self.jitter_saturation, self.jitter_hue)

    def scaled_lr(self) -> float:
        """Linear scaling rule: lr * global batch / 256."""
        return self.lr * self.batch_size / 256

    def validate(self, source: str = "config") -> None:
        def bad(key: str, reason: str) -> ConfigError:
            return ConfigError(reason, source=source, key=key, value=getattr(self, key))

        for key, allowed in (
            ("preset", (None, *PRESETS)),
            ("attraction_strategy", ATTRACTION_STRATEGIES),
            ("mechanism", MECHANISMS),
            ("backbone", BACKBONES),
            ("head", HEADS),
            ("augmentation", AUGMENTATIONS),
            ("enqueue", ENQUEUE),
            ("dataset", DATASETS),
            ("device", ("auto", "cpu", "cuda")),
            ("amp", ("auto", "bf16", "off")),
            ("channels_last", ("auto", "on", "off")),
        ):
            value = getattr(self, key)
            if value not in allowed:
                names = [a for a in allowed if a is not None]
                hint = did_you_mean(value, names) if isinstance(value, str) else ""
                null = " or null" if None in allowed else ""
                raise bad(key, f"must be one of {', '.join(names)}{null}{hint}")
        if not 0.0 <= self.key_momentum < 1.0:
            raise bad("key_momentum", "must be in [0, 1) (theta_k <- m theta_k + (1 - m) theta_q)")
        if not (is_number(self.temperature) and self.temperature > 0):
            raise bad("temperature", "must be a finite number > 0")
        if not (is_number(self.val_fraction) and 0.0 < self.val_fraction < 1.0):
            raise bad("val_fraction", "must be in (0, 1): the share of each class's labelled training "
                      "images held out as the validation split that every selection reads")
        if self.val_seed < 0:
            raise bad("val_seed", "must be >= 0")
        if not (self.knn_temperature > 0):
            raise bad("knn_temperature", "must be > 0")
        for key in ("epochs", "batch_size", "image_size", "embedding_dim", "knn_k", "knn_every",
                    "checkpoint_every", "finite_check_every", "rankme_samples"):
            if getattr(self, key) < 1:
                raise bad(key, "must be >= 1")
        if any(e < 1 for e in self.knn_epochs):
            raise bad("knn_epochs", "must be epoch numbers >= 1")
        for key in ("bn_splits", "loader_workers"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        if self.view_size is not None and self.view_size < 8:
            raise bad("view_size", "must be >= 8 pixels (or null for image_size)")
        if self.image_size < 8:
            raise bad("image_size", "must be >= 8 pixels")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise bad("max_steps_per_epoch", "must be >= 1 or null")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise bad("crop_scale", "must be two numbers 0 < min <= max <= 1")
        for key in ("jitter_prob", "blur_prob", "grayscale_prob", "flip_prob"):
            value = getattr(self, key)
            if value is not None and not is_probability(value):
                null = "" if key in ("grayscale_prob", "flip_prob") else " (or null for the augmentation base)"
                raise bad(key, f"must be a probability in [0, 1]{null}")
        for key in ("jitter_brightness", "jitter_contrast", "jitter_saturation", "jitter_hue"):
            value = getattr(self, key)
            if value is not None and not (is_number(value) and value >= 0):
                raise bad(key, "must be a number >= 0 (0 switches the op off; null for the augmentation base)")
        if self.jitter_hue is not None and self.jitter_hue > 0.5:
            raise bad("jitter_hue", "must be in [0, 0.5] (a hue shift is a fraction of the colour wheel)")
        s0, s1 = self.blur_sigma
        if not (is_number(s0) and 0.0 < s0 <= s1):
            raise bad("blur_sigma", "must be two numbers 0 < min <= max")
        for key in ("lr", "weight_decay", "optimizer_momentum", "warmup_epochs"):
            value = getattr(self, key)
            if not (is_number(value) and value >= 0):
                raise bad(key, "must be a finite number >= 0")
        if self.lr == 0:
            raise bad("lr", "must be > 0")
        if self.optimizer_momentum >= 1:
            raise bad("optimizer_momentum", "must be < 1")
        if self.warmup_epochs >= self.epochs:
            raise bad("warmup_epochs", f"must be smaller than epochs ({self.epochs})")
        if self.symmetric and self.attraction_strategy != "moco_v2":
            raise bad("symmetric", "only applies to attraction_strategy=moco_v2")
        if self.mechanism == "momentum" and self.queue_size < self.batch_size:
            raise bad(
                "queue_size",
                f"must be >= the global batch_size ({self.batch_size}); a queue smaller than one "
                "batch of keys would hold fewer negatives than the batch itself",
            )
        if self.mechanism == "momentum" and self.queue_size < 1:
            raise bad("queue_size", "must be >= 1")
        if self.dataset in ("cifar10", "cifar100", "stl10", "imagefolder", "parquet") and not self.data_root:
            raise bad("data_root", f"dataset {self.dataset!r} needs data_root (the folder holding its files)")
        if not isinstance(self.photo_patches, dict):
            raise bad("photo_patches", "must be a mapping of builder options")


# ------------------------------------------------------------------------------------------
def preset_defaults(name: Any, source: str = "config") -> dict[str, Any]:
    """The keys preset ``name`` fills (``{}`` for None); an unknown name is a ConfigError with
    a did-you-mean."""
    if name is None:
        return {}
    if not isinstance(name, str) or name not in PRESETS:
        hint = did_you_mean(name, PRESETS) if isinstance(name, str) else ""
        raise ConfigError(f"must be one of {', '.join(PRESETS)} or null{hint}", source=source,
                          key="preset", value=name)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in PRESETS[name].items()}


def _coerce(source: str, key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the field's type; ints are accepted where floats are expected."""
    def bad(reason: str) -> ConfigError:
        return ConfigError(reason, source=source, key=key, value=value)

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(source, key, value, inner)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad(f"expected true or false, got {type(value).__name__}")
    if hint is int:
        if is_int(value):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad(f"expected an integer, got {type(value).__name__}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad(f"expected a number, got {type(value).__name__}")
    if hint is str:
        if isinstance(value, str):
            return value
        note = " (YAML reads on/off/yes/no as true/false: quote the value)" if isinstance(value, bool) else ""
        raise bad(f"expected a string, got {type(value).__name__}{note}")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[int, ...]
        if not isinstance(value, (list, tuple)):
            raise bad(f"expected a list, got {type(value).__name__}")
        return tuple(_coerce(source, key, v, args[0]) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad(f"expected a list of {len(args)} numbers")
        return tuple(_coerce(source, key, v, a) for v, a in zip(value, args))
    if hint is dict or origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise bad(f"expected a mapping, got {type(value).__name__}")
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # pragma: no cover


class StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads 1e-4 as a float (as YAML 1.2 does)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None,
                            f"duplicate key {key!r} (first given on line {seen[key] + 1})",
                            key_node.start_mark)
                    seen[key] = key_node.start_mark.line
                except TypeError:  # unhashable key: let PyYAML report it
                    pass
        return super().construct_mapping(node, deep=deep)


StrictYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML text strictly; errors name `source` and the line/column of the problem."""
    try:
        return yaml.load(text, Loader=StrictYamlLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError(f"malformed YAML: {where}{exc.problem}{context}", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {exc}", source=source) from None


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file and the YAML problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None
    data = read_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping of keys to values, got {type(data).__name__}",
                          source=str(path))
    return data


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Parse `key=value` strings; values are YAML scalars/lists (`lr=0.1`, `crop_scale=[0.08,1]`)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("expected key=value", source=f"--set {item!r}")
        out[key.strip()] = read_yaml(raw, f"--set {item!r}") if raw.strip() else None
    return out
