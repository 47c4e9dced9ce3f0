"""Batched view generation for MoCo v1/v2 and LeOCLR (pure PyTorch, CPU or CUDA).

Why one module of ~900 lines: it is one algorithm. Sampling (``ViewMaker.sample_params``),
planning (``_plan``: the per-sample colour matrices of every pass) and rendering
(``_render_chunk`` and the batched kernels it calls) share private structures (``_Plan``, the
fused matrix form ``a I + c 1 l^T``) and exactness arguments that only hold together (the flip
folded into the crop grid, grayscale folded into the last pass, hue and blur on sample subsets);
the tests check the private kernels against torchvision directly. Split, each part would need
the others' internals.

One call turns a batch of images (``B x 3 x H x W``, uint8 in [0, 255] or float in [0, 1]) into
several augmented, normalised views (``B x 3 x R x R``), each sample with its own random
parameters drawn from a ``torch.Generator``. There is no per-image Python loop: every step works
on the whole batch (on CPU, on cache-sized chunks of it).

View kinds (LeOCLR, docs/method.md):

* ``"original"``: the whole image resized to ``R x R`` (no crop), then the augmentations;
* ``"crop"``: a RandomResizedCrop (torchvision's sampling semantics), then the augmentations.

Augmentation presets (official MoCo code):

* ``"v2"``: RandomApply(ColorJitter(.4, .4, .4, .1), p=.8), RandomGrayscale(.2),
  RandomApply(GaussianBlur(sigma in [.1, 2]), p=.5), RandomHorizontalFlip, Normalize;
* ``"v1"``: RandomGrayscale(.2), ColorJitter(.4, .4, .4, .4) (always), RandomHorizontalFlip,
  Normalize (no blur).

Semantics and the implementation choices that keep them exact
-------------------------------------------------------------
* Crop sampling is torchvision's ``RandomResizedCrop.get_params`` vectorised: 10 candidate
  (area, log-aspect) pairs per image are drawn at once and the first valid one is kept; images
  with no valid candidate fall back to torchvision's centre crop. Boxes are integer pixel boxes.
* Original view (and ``eval_view``): torchvision's ``Resize((R, R))`` of the whole image,
  bilinear with antialias. For uint8 input on CPU this is ``F.interpolate`` on the uint8 batch,
  i.e. torchvision's uint8 kernel (``transforms.v2`` gives identical results; v1 and PIL differ
  by at most one level of 1/255), which avoids converting the batch to float before resampling.
  When S == R the image is used as is.
* Crop + resize: bilinear sampling with ``F.grid_sample`` on a separable grid built directly
  from the boxes (cheaper than ``F.affine_grid``). Source coordinates are those of
  ``F.interpolate(crop, R, mode="bilinear", align_corners=False, antialias=False)`` *including
  the clamp at the crop border*, so a view equals ``resized_crop(img, ..., antialias=False)`` of
  its box to float rounding. ``torchvision.ops.roi_align(aligned=True)`` is not used: it samples
  outside the box near its border (no clamp) and cannot fold the flip. No antialiasing for crops: at the platform's sizes crops are mostly up-sampled (CIFAR
  32 -> 32, or the ImageNet crops of scale < 0.77 from 256 px sources) and the largest
  down-sampling factor is 256 / 224 = 1.14, where antialiasing changes little (torchvision/PIL
  antialias there).
* The horizontal flip is folded into the crop's sampling grid. This is exact: every later op is
  per-pixel, uses a global statistic, or is a symmetric blur with symmetric (reflect) padding,
  so all of them commute with a horizontal flip.
* ColorJitter keeps torchvision's per-op semantics (brightness ``x*f``; contrast: blend with the
  mean of the grayscale image; saturation: blend with the grayscale image; hue: rotation in
  HSV; clamp to [0, 1] after each op; factors uniform in ``[max(0, 1-s), 1+s]``, hue in
  ``[-h, h]``; an op of strength 0 is skipped, as torchvision does) and a random op order per
  sample. Brightness, contrast and saturation are all "per-sample colour matrix
  ``a*I + c*1 l^T`` plus a bias, then clamp" (l = luma row), so for each of the 4 positions in
  the order one batched matrix pass + one clamp applies whichever of the three ops each sample
  has at that position (identity for the others), and the hue op runs on the subset of samples
  that have hue at that position. Each sample thus gets exactly its 4 ops in its own order, in
  one pass per position instead of one per op.
* Hue uses the closed form ``rgb_n = V - (V - min) * clamp(min(k_n, 4 - k_n), 0, 1)``,
  ``k_n = (n + 6 h') mod 6`` (n = 5, 3, 1 for R, G, B), which is algebraically identical to
  torchvision's rgb -> hsv -> shift -> rgb round trip (same hue formula, same tie-breaking)
  without building the HSV image; they agree to ~2e-6.
* Grayscale (ITU-R 601-2 luma, torchvision's 0.2989/0.587/0.114) and normalisation are channel
  matrices; channel matrices commute with the blur (same kernel on every channel, kernel sums
  to 1, reflect padding), so grayscale (v2) is folded into the final normalisation pass, the
  v1 grayscale into the first jitter pass, and the uint8 -> [0, 1] scaling into the first
  matrix pass.
* Gaussian blur: torchvision's kernel (``_get_gaussian_kernel1d``: odd size, normalised
  Gaussian pdf sampled on ``linspace(-(k-1)/2, (k-1)/2, k)``), reflect padding, applied as two
  1-D depthwise convolutions with per-sample kernels (grouped conv; on CPU in channels_last
  layout, where oneDNN's depthwise kernel vectorises across the image planes). Kernel size default: ``int(0.1 * R)``
  made odd, at least 3 (23 at 224 px, 3 at 32 px), configurable. The result equals
  torchvision's 2-D ``gaussian_blur`` to float rounding.

Randomness and devices: every random number comes from the generator passed in (it must live on
the images' device); the same generator state gives the same output, and the result does not
depend on the CPU chunk size or thread count. On CPU the subsets (hue, blur) are gathered with
index tensors. On CUDA (``sync_free``) the code avoids host synchronisation: hue is computed for
the whole batch at each position and selected with ``torch.where`` (exact: the others keep their
pixels), and the blur runs on every sample with an identity (delta) kernel where no blur was
drawn (exact too).

CPU execution: the batch is cut into chunks of about 1.6M values (8 images at 256 px, the whole
batch split in two at 32 px) so that a chunk's intermediates stay in cache, and the chunks are
spread over ``torch.get_num_threads()`` Python threads, each running single-threaded torch ops
(independent chunks scale better than intra-op parallelism over ~100 small ops per chunk, and
keep working when other processes compete for the cores). See docs/performance.md.

Dtypes: uint8 input is computed in float32. Floating input is computed in its own dtype on CUDA
(float16 / bfloat16 / float32 / float64) and in float32 on CPU for float16 / bfloat16 (CPU
half-precision kernels are slow); in reduced precision the crop sampling and the hue op run in
float32 internally (coordinates and the mod-6 hue arithmetic need the bits), everything else in
the reduced dtype. ``compute_dtype`` overrides the choice; views are returned in the compute
dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "ViewConfig",
    "ViewMaker",
    "ViewParams",
    "LUMA",
    "blur_kernel_size",
    "centre_crop_fallback",
    "gaussian_kernels",
    "sample_crop_boxes",
    "torchvision_reference_pipeline",
]

# ITU-R 601-2 luma as torchvision's rgb_to_grayscale.
LUMA = (0.2989, 0.587, 0.114)
KINDS = ("original", "crop")
# Op indices of the colour jitter (torchvision's ColorJitter numbering).
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3

_PRESETS = {
    # preset: (jitter_prob, jitter strengths, blur_prob, grayscale before jitter?)
    "v2": (0.8, (0.4, 0.4, 0.4, 0.1), 0.5, False),
    "v1": (1.0, (0.4, 0.4, 0.4, 0.4), 0.0, True),
}


@dataclass(frozen=True)
class ViewConfig:
    size: int  # output resolution R
    crop_scale: tuple[float, float] = (0.2, 1.0)
    preset: str = "v2"  # "v2" | "v1"
    jitter_prob: float | None = None  # None -> preset default (v2: 0.8, v1: 1.0)
    # (brightness, contrast, saturation, hue); None -> preset, and a None entry -> that preset value
    jitter: tuple[float | None, float | None, float | None, float | None] | None = None
    grayscale_prob: float = 0.2
    blur_prob: float | None = None  # None -> preset (v2: 0.5, v1: 0.0)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    flip_prob: float = 0.5
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    blur_kernel_size: int | None = None  # None -> int(0.1 * size) made odd, at least 3

    def __post_init__(self) -> None:
        if self.preset not in _PRESETS:
            raise ValueError(f"preset must be one of {sorted(_PRESETS)}, got {self.preset!r}")
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        rlo, rhi = self.crop_ratio
        if not 0.0 < rlo <= rhi:
            raise ValueError(f"crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}")
        for name in ("jitter_prob", "grayscale_prob", "blur_prob", "flip_prob"):
            p = getattr(self, name)
            if p is not None and not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if self.jitter is not None:
            given = [j for j in self.jitter if j is not None]
            if len(self.jitter) != 4 or min(given, default=0) < 0 or (self.jitter[3] or 0) > 0.5:
                raise ValueError(f"jitter must be 4 values >= 0 (or None) with hue <= 0.5, got {self.jitter}")
        s0, s1 = self.blur_sigma
        if not 0.0 < s0 <= s1:
            raise ValueError(f"blur_sigma must satisfy 0 < lo <= hi, got {self.blur_sigma}")
        if self.blur_kernel_size is not None and (
            self.blur_kernel_size < 1 or self.blur_kernel_size % 2 == 0
        ):
            raise ValueError(f"blur_kernel_size must be odd and positive, got {self.blur_kernel_size}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    # Resolved values (preset defaults filled in).
    @property
    def resolved_jitter_prob(self) -> float:
        return _PRESETS[self.preset][0] if self.jitter_prob is None else float(self.jitter_prob)

    @property
    def resolved_jitter(self) -> tuple[float, float, float, float]:
        base = _PRESETS[self.preset][1]
        if self.jitter is None:
            return base
        return tuple(float(b if j is None else j) for j, b in zip(self.jitter, base))

    @classmethod
    def from_train_config(cls, cfg, size: int | None = None) -> "ViewConfig":
        """The views of a ``TrainConfig`` (its ``augmentation`` base refined by the augmentation
        keys, docs/config.md) at ``size`` (default: its view size)."""
        return cls(size=size or cfg.resolved_view_size, crop_scale=tuple(cfg.crop_scale),
                   preset=cfg.augmentation, jitter_prob=cfg.jitter_prob,
                   jitter=cfg.jitter_strengths(), grayscale_prob=cfg.grayscale_prob,
                   blur_prob=cfg.blur_prob, blur_sigma=tuple(cfg.blur_sigma), flip_prob=cfg.flip_prob)

    @property
    def resolved_blur_prob(self) -> float:
        return _PRESETS[self.preset][2] if self.blur_prob is None else float(self.blur_prob)

    @property
    def grayscale_first(self) -> bool:
        """v1 applies RandomGrayscale before ColorJitter, v2 after it."""
        return _PRESETS[self.preset][3]

    @property
    def resolved_blur_kernel_size(self) -> int:
        if self.blur_kernel_size is not None:
            return int(self.blur_kernel_size)
        return blur_kernel_size(self.size)


def blur_kernel_size(size: int) -> int:
    """``int(0.1 * size)`` made odd (SimCLR/MoCo-style ~10 % of the side), at least 3."""
    k = int(0.1 * size)
    if k % 2 == 0:
        k += 1
    return max(k, 3)


def _jitter_ranges(cfg: ViewConfig) -> list[tuple[float, float]]:
    b, c, s, h = cfg.resolved_jitter
    return [(max(0.0, 1.0 - b), 1.0 + b), (max(0.0, 1.0 - c), 1.0 + c),
            (max(0.0, 1.0 - s), 1.0 + s), (-h, h)]


# --------------------------------------------------------------------------------------------
# Parameter sampling
# --------------------------------------------------------------------------------------------


def _rand(shape, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device)


def centre_crop_fallback(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop's fallback when no try fits: the centred box ``(x0, y0, x1,
    y1)`` of the whole image with its aspect ratio clamped into ``ratio``."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    y0, x0 = (height - h) // 2, (width - w) // 2
    return x0, y0, x0 + w, y0 + h


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    tries: int = 10,
) -> torch.Tensor:
    """RandomResizedCrop boxes with torchvision's ``get_params`` semantics, vectorised.

    For each of ``n`` images draw ``tries`` candidates (area fraction uniform in ``scale``,
    aspect ratio log-uniform in ``ratio``, ``w = round(sqrt(A*r))``, ``h = round(sqrt(A/r))``),
    keep the first that fits, place it uniformly (``randint(0, H - h + 1)``); if none fits use
    torchvision's centre-crop fallback. Returns float ``n x 4`` boxes ``(x0, y0, x1, y1)`` in
    pixel units (integers; ``x1 - x0 = w``), on the generator's device.
    """
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    u = _rand((n, tries, 2), generator).double()
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # first valid try (0 if none)
    found = valid.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    pos = _rand((n, 2), generator).double()
    # randint(0, H - h + 1): floor(u * (H - h + 1)), guarded against u*(m) rounding up to m.
    y0 = torch.minimum(torch.floor(pos[:, 0] * (height - h + 1)), height - h)
    x0 = torch.minimum(torch.floor(pos[:, 1] * (width - w + 1)), width - w)
    fx0, fy0, fx1, fy1 = centre_crop_fallback(height, width, ratio)
    fw, fh = fx1 - fx0, fy1 - fy0
    # (Python scalars, not new tensors: a host -> device copy would synchronise on CUDA)
    x0 = torch.where(found, x0, float(fx0))
    y0 = torch.where(found, y0, float(fy0))
    w = torch.where(found, w, float(fw))
    h = torch.where(found, h, float(fh))
    return torch.stack((x0, y0, x0 + w, y0 + h), dim=1).float()


@dataclass
class ViewParams:
    """Per-sample random parameters of one view of a batch (all tensors have leading dim B).

    ``brightness``/``contrast``/``saturation``/``hue`` are the factors torchvision would pass to
    ``adjust_*``; ``order[b, p]`` is the op (0 brightness, 1 contrast, 2 saturation, 3 hue) at
    position ``p`` of sample ``b``; ops are applied only where ``jitter`` is true, and an op whose
    strength is 0 in the config is skipped (as torchvision does).
    """

    kind: str
    boxes: torch.Tensor  # B x 4 float (x0, y0, x1, y1) in source pixels
    flip: torch.Tensor  # B bool
    jitter: torch.Tensor  # B bool
    brightness: torch.Tensor  # B float
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    order: torch.Tensor  # B x 4 long
    grayscale: torch.Tensor  # B bool
    blur: torch.Tensor  # B bool
    sigma: torch.Tensor  # B float
    enabled: tuple[bool, bool, bool, bool] = field(default=(True, True, True, True))
    blur_enabled: bool = True  # False: no sample is blurred (skips the blur pass entirely)

    @classmethod
    def geometry_only(cls, kind: str, boxes: torch.Tensor, flip: torch.Tensor | None = None) -> "ViewParams":
        """A view that only crops / resizes (``boxes``: B x 4 source boxes) and optionally flips
        (``flip``: B bool, default none): no colour jitter, grayscale or blur."""
        n, dev = boxes.shape[0], boxes.device
        no = torch.zeros(n, dtype=torch.bool, device=dev)
        one = torch.ones(n, device=dev)
        return cls(kind=kind, boxes=boxes, flip=no if flip is None else flip, jitter=no,
                   brightness=one, contrast=one, saturation=one, hue=torch.zeros(n, device=dev),
                   order=torch.arange(4, device=dev).expand(n, 4), grayscale=no, blur=no, sigma=one,
                   enabled=(False, False, False, False), blur_enabled=False)

    @classmethod
    def identity(cls, n: int, height: int, width: int, device) -> "ViewParams":
        """The eval view: the whole H x W image of each of ``n`` samples, resized, nothing else."""
        return cls.geometry_only("original", _full_boxes(n, height, width, device))

    def index(self, sl) -> "ViewParams":
        """The parameters of a sub-batch (slice or index tensor)."""
        kw = {}
        for name in ("boxes", "flip", "jitter", "brightness", "contrast", "saturation", "hue",
                     "order", "grayscale", "blur", "sigma"):
            kw[name] = getattr(self, name)[sl]
        return replace(self, **kw)

    def to(self, device) -> "ViewParams":
        kw = {}
        for name in ("boxes", "flip", "jitter", "brightness", "contrast", "saturation", "hue",
                     "order", "grayscale", "blur", "sigma"):
            kw[name] = getattr(self, name).to(device)
        return replace(self, **kw)


def _full_boxes(n: int, height: int, width: int, device) -> torch.Tensor:
    """n x 4 boxes covering the whole image (built on the device, no host -> device copy)."""
    boxes = torch.zeros(n, 4, device=device)
    boxes[:, 2] = float(width)
    boxes[:, 3] = float(height)
    return boxes


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int, dtype=torch.float32) -> torch.Tensor:
    """Per-sample 1-D Gaussian kernels exactly as torchvision's ``_get_gaussian_kernel1d``."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size, dtype=dtype, device=sigma.device)
    pdf = torch.exp(-0.5 * (x[None, :] / sigma.to(dtype)[:, None]).pow(2))
    return pdf / pdf.sum(dim=1, keepdim=True)


# --------------------------------------------------------------------------------------------
# Batched kernels
# --------------------------------------------------------------------------------------------

_LUMA_SUM = sum(LUMA)
_CHUNK_VALUES = 1_600_000  # CPU chunk budget (values of one image plane set x images)


def _sample_coords(lo: torch.Tensor, hi: torch.Tensor, out: int) -> torch.Tensor:
    """Source pixel coordinates (n x out) of F.interpolate(bilinear, align_corners=False) on the
    window [lo, hi) of the source, clamped to the window's first/last pixel like interpolate."""
    c = (torch.arange(out, device=lo.device, dtype=torch.float32) + 0.5) / out
    lo32, hi32 = lo.float()[:, None], hi.float()[:, None]
    s = lo32 + c[None, :] * (hi32 - lo32) - 0.5
    return torch.minimum(torch.maximum(s, lo32), hi32 - 1.0)


def _crop_resize(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Batched bilinear crop + resize (+ horizontal flip) with one grid_sample call.

    The grid is separable (x depends on the column, y on the row), so it is built from two
    n x R coordinate vectors instead of F.affine_grid (which costs a batched matmul per pixel).
    """
    n, _, height, width = x.shape
    sx = _sample_coords(boxes[:, 0], boxes[:, 2], size)
    sy = _sample_coords(boxes[:, 1], boxes[:, 3], size)
    sx = torch.where(flip[:, None], sx.flip(1), sx)
    # Pixel -> normalised coordinates (align_corners=False): g = (s + 0.5) * 2 / W - 1.
    gx = ((sx + 0.5) * (2.0 / width) - 1.0).to(x.dtype)
    gy = ((sy + 0.5) * (2.0 / height) - 1.0).to(x.dtype)
    grid = torch.empty(n, size, size, 2, dtype=x.dtype, device=x.device)
    grid[..., 0] = gx[:, None, :]
    grid[..., 1] = gy[:, :, None]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of n x 3 x ... images -> n x 1 x ... (torchvision's coefficients)."""
    g = x[:, 0:1] * LUMA[0]
    g.add_(x[:, 1:2], alpha=LUMA[1]).add_(x[:, 2:3], alpha=LUMA[2])
    return g


def _adjust_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """torchvision ``adjust_hue`` for a batch of float images in [0, 1], per-sample factors.

    Closed form of torchvision's rgb -> hsv -> (h + f) % 1 -> rgb round trip. With V = max,
    m = min, C = V - m and the hue h in sixths (torchvision's formula and tie-breaking: red
    before green before blue), torchvision's output is ``V - C * clamp(min(k_n, 4 - k_n), 0, 1)``
    with ``k_n = (n + 6 (h + f)) mod 6``, n = 5, 3, 1 for R, G, B; that equals
    ``m + C * clamp(|k_n - 2| - 1, 0, 1)``, which is what is computed. Written with in-place
    float ops (no comparisons to bool, no torch.where / remainder: those are slow on CPU); the
    exact "is not the maximum" masks are ``ceil(V - x)`` (V - x is in [0, 1]).
    """
    if x.dtype in (torch.float16, torch.bfloat16):  # the mod-6 arithmetic needs float32
        return _adjust_hue(x.float(), hue.float()).to(x.dtype)
    dtype = x.dtype
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    v = torch.maximum(r, g)
    torch.maximum(v, b, out=v)
    m = torch.minimum(r, g)
    torch.minimum(m, b, out=m)
    c = v - m  # chroma
    # 1 where red / green is NOT a maximum (the clamps only matter for inputs outside [0, 1])
    not_g = torch.sub(v, g).ceil_().clamp_(max=1.0)
    not_r = torch.sub(v, r, out=v).ceil_().clamp_(max=1.0)  # v is not needed any more
    # hue numerator by sector: red (g - b) before green (b - r) before blue (r - g)
    num = b - r
    num.lerp_(r - g, not_g)  # lerp with weight 0 / 1 is exact
    num = torch.lerp(g - b, num, not_r)
    off = not_g.mul_(2.0).add_(2.0).mul_(not_r)  # sector offset: 0 (red), 2 (green), 4 (blue)
    h6 = num.div_(c).nan_to_num_(0.0).add_(off)  # hue * 6 in [-1, 5]; gray pixels (0/0) -> 0
    offsets = torch.arange(5.0, 0.0, -2.0, dtype=dtype, device=x.device)  # 5, 3, 1 (no H2D copy)
    shift = (hue.to(dtype) * 6.0 + 6.0).view(-1, 1, 1) + offsets.view(1, 3, 1)
    k = h6.view(h6.shape[0], 1, -1) + shift  # >= 0
    q = torch.mul(k, 1.0 / 6.0).floor_()
    k.sub_(q, alpha=6.0)  # k mod 6
    k.sub_(2.0).abs_().sub_(1.0).clamp_(0.0, 1.0)
    n = x.shape[0]
    return torch.addcmul(m.view(n, 1, -1), c.view(n, 1, -1), k, out=k).view(x.shape)


def _depthwise_blur(x: torch.Tensor, kernels: torch.Tensor, contiguous: bool = True) -> torch.Tensor:
    """Separable Gaussian blur, per-sample 1-D kernels (n x k), reflect padding.

    Two depthwise (grouped) convolutions with one group per (image, channel). On CPU the data
    is put in channels_last layout first: oneDNN's depthwise kernel then vectorises across the
    n*3 planes instead of along each plane's rows. ``contiguous=False`` may return that
    layout (a caller that copies the result anyway saves a pass).
    """
    n, c, h, w = x.shape
    k = kernels.shape[1]
    p = k // 2
    if p == 0:
        return x
    weight = kernels.to(x.dtype).repeat_interleave(c, dim=0)  # (n*c, k)
    y = x.reshape(1, n * c, h, w)
    if p >= h or p >= w:  # reflect padding needs p < size; replicate for tiny images
        y = F.pad(y, (p, p, p, p), mode="replicate")
    else:
        y = F.pad(y, (p, p, p, p), mode="reflect")
    if x.device.type == "cpu":
        y = y.contiguous(memory_format=torch.channels_last)
    y = F.conv2d(y, weight.view(n * c, 1, 1, k), groups=n * c)
    y = F.conv2d(y, weight.view(n * c, 1, k, 1), groups=n * c)
    y = y.view(n, c, h, w)  # (1, n*c, h, w) -> (n, c, h, w) is a view in either layout
    return y.contiguous() if contiguous else y


class _Chunk:
    """A chunk of the input batch; its values in the compute dtype are converted on first use."""

    def __init__(self, raw: torch.Tensor, dtype: torch.dtype) -> None:
        self.raw, self.dtype, self._values = raw, dtype, None

    @property
    def values(self) -> torch.Tensor:
        if self._values is None:
            self._values = self.raw.to(dtype=self.dtype, memory_format=torch.contiguous_format)
        return self._values


def _run_threaded(fn, items, workers: int) -> None:
    """Run ``fn`` over ``items`` on ``workers`` threads with single-threaded torch ops in each.

    ``torch.set_num_threads(1)`` in a worker sets that thread's OpenMP/MKL thread count (they are
    per thread) and the global default that threads initialise from; the caller's setting is
    restored afterwards.
    """
    from concurrent.futures import ThreadPoolExecutor

    saved = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads,
                                initargs=(1,)) as pool:
            for fut in [pool.submit(fn, item) for item in items]:
                fut.result()
    finally:
        torch.set_num_threads(saved)


@dataclass
class _Plan:
    """Per-sample coefficients of one view, derived from ViewParams (whole batch).

    Every channel matrix in the pipeline has the form ``a * I + c * 1 l^T`` (l = luma row):
    brightness (f, 0), contrast (f, 0) plus a bias, saturation (f, 1 - f), grayscale (0, 1),
    uint8 scaling (1/255, 0); products of such matrices keep the form.
    """

    kind: str
    boxes: torch.Tensor
    flip: torch.Tensor
    pos_a: list  # per jitter position: (B,) a, or None if the position needs no matrix pass
    pos_c: list  # (B,) c or None (no sample mixes channels at that position)
    pos_bias: list  # (B,) contrast coefficient (1 - f) * mean multiplier, or None
    hue_sel: list  # per position: (B,) bool or None
    hue: torch.Tensor | None
    blur: torch.Tensor | None  # (B,) bool
    kernels: torch.Tensor | None  # (B, k)
    final_a: torch.Tensor
    final_c: torch.Tensor | None

    def index(self, sl) -> "_Plan":
        def ix(v):
            if v is None:
                return None
            if isinstance(v, list):
                return [ix(u) for u in v]
            return v[sl]

        return _Plan(self.kind, *(ix(getattr(self, f)) for f in (
            "boxes", "flip", "pos_a", "pos_c", "pos_bias", "hue_sel", "hue", "blur", "kernels",
            "final_a", "final_c")))


# --------------------------------------------------------------------------------------------
# ViewMaker
# --------------------------------------------------------------------------------------------


class ViewMaker:
    """Makes batched augmented views; see the module docstring for semantics.

    Args:
        cfg: the view configuration.
        channels_last: return channels_last views (None: if the input is channels_last).
        chunk_size: images processed together (None: on CPU about 1.6M values, e.g. 8 images at
            256 px, so that a chunk's intermediates stay in cache; the whole batch on other
            devices). The output does not depend on it.
        sync_free: avoid host synchronisation (torch.where instead of index subsets; None: on
            non-CPU devices).
        compute_dtype: override the compute/output dtype (see module docstring).
        num_workers: CPU only: chunks are spread over this many threads, each running torch ops
            single-threaded (None: ``torch.get_num_threads()`` at call time). Independent chunks
            scale better than intra-op parallelism over many small ops, and do not stall when
            other processes compete for the cores (an OpenMP team waits at every op's barrier for
            its slowest, possibly descheduled, thread). The output does not depend on it.
    """

    def __init__(
        self,
        cfg: ViewConfig,
        *,
        channels_last: bool | None = None,
        chunk_size: int | None = None,
        sync_free: bool | None = None,
        compute_dtype: torch.dtype | None = None,
        num_workers: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.num_workers = num_workers
        self.channels_last = channels_last
        self.chunk_size = chunk_size
        self.sync_free = sync_free
        self.compute_dtype = compute_dtype
        self._ranges = _jitter_ranges(cfg)
        strengths = cfg.resolved_jitter
        self._enabled = tuple(s > 0 for s in strengths)
        self._jitter_prob = cfg.resolved_jitter_prob
        self._blur_prob = cfg.resolved_blur_prob
        self._ksize = cfg.resolved_blur_kernel_size
        self._consts: dict = {}

    # -- parameters ---------------------------------------------------------------------------

    def sample_crop_boxes(self, n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """``n x 4`` float boxes (x0, y0, x1, y1) with the config's scale/ratio."""
        return sample_crop_boxes(n, height, width, generator, self.cfg.crop_scale, self.cfg.crop_ratio)

    def sample_params(self, kind: str, n: int, height: int, width: int,
                      generator: torch.Generator) -> ViewParams:
        """Draw every random parameter of one view for ``n`` images (in a fixed order)."""
        if kind not in KINDS:
            raise ValueError(f"unknown view kind {kind!r}; expected one of {KINDS}")
        dev = generator.device
        if kind == "crop":
            boxes = self.sample_crop_boxes(n, height, width, generator)
        else:
            boxes = _full_boxes(n, height, width, dev)
        u = _rand((n, 9), generator)
        flip = u[:, 0] < self.cfg.flip_prob
        jitter = u[:, 1] < self._jitter_prob
        factors = []
        for i, (lo, hi) in enumerate(self._ranges):
            f = lo + (hi - lo) * u[:, 2 + i]
            neutral = 0.0 if i == HUE else 1.0
            factors.append(torch.where(jitter, f, torch.full_like(f, neutral)))
        brightness, contrast, saturation, hue = factors
        order = _rand((n, 4), generator).argsort(dim=1)
        grayscale = u[:, 6] < self.cfg.grayscale_prob
        blur = u[:, 7] < self._blur_prob
        s0, s1 = self.cfg.blur_sigma
        sigma = s0 + (s1 - s0) * u[:, 8]
        return ViewParams(kind=kind, boxes=boxes, flip=flip, jitter=jitter, brightness=brightness,
                          contrast=contrast, saturation=saturation, hue=hue, order=order,
                          grayscale=grayscale, blur=blur, sigma=sigma, enabled=self._enabled,
                          blur_enabled=self._blur_prob > 0 and self._ksize > 1)

    # -- public entry points ------------------------------------------------------------------

    def __call__(self, images: torch.Tensor, kinds: Sequence[str],
                 generator: torch.Generator) -> list[torch.Tensor]:
        """One normalised float view (``B x 3 x R x R``) per entry of ``kinds``."""
        self._check(images)
        n, _, height, width = images.shape
        params = [self.sample_params(kind, n, height, width, generator) for kind in kinds]
        return self.render(images, params)

    def photometric(self, views: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """The photometric stage alone, on views already cut to ``R x R`` elsewhere (by the loader
        workers: ``trainables.data.geometry``).

        views: ``B x V x 3 x R x R`` (uint8 or float) -> V normalised views ``B x 3 x R x R``,
        each sample with its own colour jitter, grayscale, blur and flip drawn from
        ``generator``. A pre-cut view is rendered as an ``"original"`` view whose source already
        has the output size, so nothing is resampled and the rest is the same code as
        ``__call__``: for the same generator state, ``photometric(x[:, None], g)[0]`` equals
        ``self(x, ["original"], g)[0]`` bit for bit.
        """
        size = self.cfg.size
        if not isinstance(views, torch.Tensor) or views.dim() != 5 or views.shape[2:] != (3, size, size):
            got = getattr(views, "shape", type(views))
            raise ValueError(f"views must be a B x V x 3 x {size} x {size} tensor, got {got}")
        return [self(views[:, i], ["original"], generator)[0] for i in range(views.shape[1])]

    def eval_view(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic test transform: resize the whole image to R x R (the original view's
        resize: torchvision's antialiased bilinear Resize) and normalise."""
        self._check(images)
        n, _, height, width = images.shape
        return self.render(images, [ViewParams.identity(n, height, width, images.device)])[0]

    def render(self, images: torch.Tensor, params: Sequence[ViewParams]) -> list[torch.Tensor]:
        """Apply given per-sample parameters (from :meth:`sample_params`) to a batch."""
        self._check(images)
        n, _, height, width = images.shape
        dev = images.device
        cdtype = self._compute_dtype(images)
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = (images.is_contiguous(memory_format=torch.channels_last)
                             and not images.is_contiguous())
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        size = self.cfg.size
        outs = [torch.empty(n, 3, size, size, dtype=cdtype, device=dev, memory_format=fmt)
                for _ in params]
        if n == 0:
            return outs
        sync_free = self.sync_free if self.sync_free is not None else dev.type != "cpu"
        in_scale = 255.0 if images.dtype == torch.uint8 else 1.0
        plans = [self._plan(p.to(dev), in_scale, cdtype, sync_free) for p in params]
        workers = self.num_workers if self.num_workers is not None else torch.get_num_threads()
        workers = max(1, workers) if dev.type == "cpu" else 1
        chunk = self.chunk_size
        if chunk is None:
            if dev.type == "cpu":
                # ~1.6M values per chunk (8 images at 256 px): a chunk's intermediates stay in
                # cache, while small images still come in big enough chunks to amortise the
                # per-op overhead; at least one chunk per worker.
                per_image = 3 * max(height * width, size * size)
                chunk = max(1, min(_CHUNK_VALUES // per_image, -(-n // workers)))
            else:
                chunk = n
        starts = range(0, n, chunk)

        def do_chunk(start: int) -> None:
            sl = slice(start, min(n, start + chunk))
            src = _Chunk(images[sl], cdtype)
            for plan, out in zip(plans, outs):
                self._render_chunk(src, plan.index(sl), out[sl], sync_free)

        workers = min(workers, len(starts))
        if workers <= 1:
            for start in starts:
                do_chunk(start)
        else:
            _run_threaded(do_chunk, starts, workers)
        return outs

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _check(images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            got = getattr(images, "shape", type(images))
            raise ValueError(f"images must be a B x 3 x H x W tensor, got {got}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")

    def _compute_dtype(self, images: torch.Tensor) -> torch.dtype:
        if self.compute_dtype is not None:
            return self.compute_dtype
        if not images.is_floating_point():
            return torch.float32
        if images.device.type == "cpu" and images.dtype in (torch.float16, torch.bfloat16):
            return torch.float32
        return images.dtype

    def _norm_consts(self, dtype: torch.dtype, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """mean and 1/std as 1 x 3 x 1 tensors, made once per (dtype, device): creating them
        from Python lists is a host -> device copy, which synchronises on CUDA."""
        key = (dtype, dev)
        consts = self._consts.get(key)
        if consts is None:
            mean = torch.tensor(self.cfg.mean, dtype=dtype, device=dev).view(1, 3, 1)
            inv_std = 1.0 / torch.tensor(self.cfg.std, dtype=dtype, device=dev).view(1, 3, 1)
            consts = self._consts[key] = (mean, inv_std)
        return consts

    def _plan(self, p: ViewParams, in_scale: float, dtype: torch.dtype, sync_free: bool) -> _Plan:
        """Turn the sampled parameters into per-sample (a, c, bias) coefficients of each pass."""
        cfg = self.cfg
        n = p.flip.shape[0]
        dev = p.flip.device

        def anyv(t: torch.Tensor) -> bool:
            # On CUDA (sync_free) do not ask the device: assume the pass is needed.
            return True if sync_free else bool(t.any())

        one = torch.ones(n, dtype=dtype, device=dev)
        zero = torch.zeros(n, dtype=dtype, device=dev)
        # Pending matrix (a_p, c_p): uint8 scaling, and v1's grayscale (before the jitter).
        pa, pc = one / in_scale, zero
        pending = in_scale != 1.0
        if cfg.grayscale_first and cfg.grayscale_prob > 0 and anyv(p.grayscale):
            pa = torch.where(p.grayscale, zero, pa)
            pc = torch.where(p.grayscale, one / in_scale, pc)
            pending = True
        pos_a, pos_c, pos_bias, hue_sel = [None] * 4, [None] * 4, [None] * 4, [None] * 4
        en = p.enabled
        if any(en) and anyv(p.jitter):
            j = p.jitter
            for pos in range(4):
                op = p.order[:, pos]
                has = [(op == i) & j & en[i] for i in range(4)]
                mat = [has[i] for i in (BRIGHTNESS, CONTRAST, SATURATION) if en[i]]
                if pending or any(anyv(m) for m in mat):
                    fb = torch.where(has[BRIGHTNESS], p.brightness.to(dtype), one)
                    fc = torch.where(has[CONTRAST], p.contrast.to(dtype), one)
                    fs = torch.where(has[SATURATION], p.saturation.to(dtype), one)
                    a, c = fb * fc * fs, 1.0 - fs
                    # compose with the pending matrix: (a I + c 1l^T)(pa I + pc 1l^T)
                    pos_a[pos] = a * pa
                    pos_c[pos] = a * pc + c * pa + c * pc * _LUMA_SUM
                    if not anyv(pos_c[pos] != 0):
                        pos_c[pos] = None
                    if en[CONTRAST] and anyv(has[CONTRAST]):
                        # bias = (1 - f) * mean(gray(current)); gray(P x) = (pa + pc sum(l)) gray(x)
                        pos_bias[pos] = (1.0 - fc) * (pa + pc * _LUMA_SUM)
                    pa, pc, pending = one, zero, False
                if en[HUE] and anyv(has[HUE]):
                    hue_sel[pos] = has[HUE]
        # v2: grayscale after the jitter, folded into the final pass with the pending matrix.
        fa, fc_ = pa, pc
        if not cfg.grayscale_first and cfg.grayscale_prob > 0 and anyv(p.grayscale):
            g = p.grayscale
            fa = torch.where(g, zero, pa)
            fc_ = torch.where(g, pa + pc * _LUMA_SUM, pc)
        final_c = fc_ if anyv(fc_ != 0) else None
        blur = kernels = None
        if p.blur_enabled and anyv(p.blur):
            blur = p.blur
            kernels = gaussian_kernels(p.sigma, self._ksize, dtype)
            if sync_free:  # identity (delta) kernel where no blur was drawn: exact, no sync
                delta = torch.zeros_like(kernels)
                delta[:, self._ksize // 2] = 1.0
                kernels = torch.where(blur[:, None], kernels, delta)
        return _Plan(p.kind, p.boxes, p.flip, pos_a, pos_c, pos_bias, hue_sel,
                     p.hue.to(dtype), blur, kernels, fa, final_c)

    def _render_chunk(self, src: "_Chunk", p: _Plan, out: torch.Tensor, sync_free: bool) -> None:
        cfg = self.cfg
        n, _, height, width = src.raw.shape
        size = cfg.size
        npix = size * size
        dtype, dev = src.dtype, src.raw.device
        half = dtype in (torch.float16, torch.bfloat16)  # resampling runs in float32 then

        # 1. crop / resize / flip (linear; values stay in [0, in_scale]).
        if p.kind == "original":
            if height == size and width == size:
                y = src.values
            elif src.raw.dtype == torch.uint8 and dev.type == "cpu":
                # torchvision's Resize on uint8: the separable (AVX2) uint8 kernel, antialiased,
                # rounded to uint8 like torchvision and PIL; no float copy of the batch first.
                y = F.interpolate(src.raw.contiguous(), size=(size, size), mode="bilinear",
                                  align_corners=False, antialias=True)
            else:
                y = F.interpolate(src.values.float() if half else src.values, size=(size, size),
                                  mode="bilinear", align_corners=False, antialias=True)
            x = torch.where(p.flip.view(n, 1, 1, 1), y.flip(3), y).to(dtype)
        elif half:  # sampling coordinates need float32
            x = _crop_resize(src.values.float(), p.boxes, p.flip, size).to(dtype)
        else:
            x = _crop_resize(src.values, p.boxes, p.flip, size)
        x = x.reshape(n, 3, npix)

        # 2. colour jitter: per position one matrix pass (+ clamp) and the hue subset.
        # (Formulations chosen for CPU speed: in-place ops on x, which this function owns, and
        # broadcast operands whose innermost dimension is full; addcmul with an n x 1 x 1
        # "self" falls off the vectorised path.)
        for pos in range(4):
            a = p.pos_a[pos]
            if a is not None:
                c, bias = p.pos_c[pos], p.pos_bias[pos]
                if bias is not None:
                    m = x.mean(dim=2)
                    mean_gray = m[:, 0] * LUMA[0] + m[:, 1] * LUMA[1] + m[:, 2] * LUMA[2]
                    bias = (bias * mean_gray).view(n, 1, 1)
                if c is not None:
                    t = _gray(x).mul_(c.view(n, 1, 1))
                    if bias is not None:
                        t.add_(bias)
                    x.mul_(a.view(n, 1, 1)).add_(t)
                else:
                    x.mul_(a.view(n, 1, 1))
                    if bias is not None:
                        x.add_(bias)
                x.clamp_(0.0, 1.0)
            sel = p.hue_sel[pos]
            if sel is not None:
                if sync_free:
                    y = _adjust_hue(x, torch.where(sel, p.hue, torch.zeros_like(p.hue)))
                    x = torch.where(sel.view(n, 1, 1), y, x)
                else:
                    idx = sel.nonzero().squeeze(1)
                    if idx.numel() == n:
                        x = _adjust_hue(x, p.hue)
                    elif idx.numel():
                        y = _adjust_hue(x.index_select(0, idx), p.hue.index_select(0, idx))
                        x.index_copy_(0, idx, y)

        # 3. Gaussian blur (commutes with the pending channel matrix).
        if p.blur is not None:
            if sync_free:
                x = _depthwise_blur(x.view(n, 3, size, size), p.kernels).view(n, 3, npix)
            else:
                idx = p.blur.nonzero().squeeze(1)
                if idx.numel() == n:
                    x = _depthwise_blur(x.view(n, 3, size, size), p.kernels).view(n, 3, npix)
                elif idx.numel():
                    y = _depthwise_blur(x.index_select(0, idx).view(-1, 3, size, size),
                                        p.kernels.index_select(0, idx), contiguous=False)
                    x.view(n, 3, size, size).index_copy_(0, idx, y)

        # 4. pending matrix (+ v2 grayscale) and normalisation, the last op writing into `out`.
        mean, inv_std = self._norm_consts(dtype, dev)
        t = _gray(x).mul_(p.final_c.view(n, 1, 1)) if p.final_c is not None else None
        x.mul_(p.final_a.view(n, 1, 1))
        if t is not None:
            x.add_(t)
        if out.is_contiguous():
            torch.sub(x, mean, out=out.view(n, 3, npix)).mul_(inv_std)
        else:  # channels_last: a strided write is slow; normalise in place and copy once
            out.copy_(x.sub_(mean).mul_(inv_std).view(n, 3, size, size))


# --------------------------------------------------------------------------------------------
# Per-sample torchvision reference ("official style" PIL pipeline)
# --------------------------------------------------------------------------------------------


def torchvision_reference_pipeline(cfg: ViewConfig, kind: str = "crop"):
    """The per-sample torchvision ``Compose`` on PIL images with the same parameters.

    MoCo's official ordering: v2 = crop/resize, RandomApply(ColorJitter), RandomGrayscale,
    RandomApply(GaussianBlur), flip, ToTensor, Normalize; v1 = crop/resize, RandomGrayscale,
    ColorJitter (p=1), flip, ToTensor, Normalize. ``kind="original"`` replaces the crop with
    ``Resize((R, R))``. (The official MoCo blur is PIL's ImageFilter.GaussianBlur; this uses
    torchvision's GaussianBlur with the same kernel size as the batched path.)
    """
    import torchvision.transforms as T

    if kind not in KINDS:
        raise ValueError(f"unknown view kind {kind!r}; expected one of {KINDS}")
    size = cfg.size
    if kind == "crop":
        geo = T.RandomResizedCrop(size, scale=cfg.crop_scale, ratio=cfg.crop_ratio)
    else:
        geo = T.Resize((size, size))
    b, c, s, h = cfg.resolved_jitter
    jitter = T.RandomApply([T.ColorJitter(b, c, s, h)], p=cfg.resolved_jitter_prob)
    gray = T.RandomGrayscale(p=cfg.grayscale_prob)
    ops = [geo] + ([gray, jitter] if cfg.grayscale_first else [jitter, gray])
    blur_prob = cfg.resolved_blur_prob
    if blur_prob > 0:
        ops.append(T.RandomApply([T.GaussianBlur(cfg.resolved_blur_kernel_size, cfg.blur_sigma)],
                                 p=blur_prob))
    ops += [T.RandomHorizontalFlip(cfg.flip_prob), T.ToTensor(), T.Normalize(cfg.mean, cfg.std)]
    return T.Compose(ops)
