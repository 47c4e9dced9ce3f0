"""Three-view augmentation throughput: batched ViewMaker vs per-sample torchvision (PIL) vs
kornia.augmentation, and a check that kornia's views follow the same distribution as ours.

Usage:  .venv/bin/python benchmarks/views.py [--quick] [--batch 256] [--reps 5] [--device cpu]
                                            [--no-kornia] [--out benchmarks/results/views.json]

LeOCLR needs three views per image (the original + two RandomResizedCrops), all with the MoCo v2
augmentations. Three ways of making them are measured side by side in one run, on the same
images, after a warm-up, as the median of several repetitions:

* batched: ``trainables.views.ViewMaker`` on a uint8 batch (B x 3 x S x S), torch's default
  thread count (all cores) and one thread;
* per-sample: the "official style" torchvision pipeline on PIL images
  (``torchvision_reference_pipeline``: RandomResizedCrop / Resize, RandomApply(ColorJitter),
  RandomGrayscale, RandomApply(GaussianBlur), flip, ToTensor, Normalize), three calls per image,
  sequential like a DataLoader with 0 workers, with torch's default thread count and with one
  thread (what one DataLoader worker process gets); CPU only;
* kornia: ``kornia.augmentation`` with the same parameters (RandomResizedCrop / Resize with
  antialias, ColorJitter p 0.8, RandomGrayscale 0.2, RandomGaussianBlur p 0.5 sigma 0.1-2 with
  our kernel size, RandomHorizontalFlip, Normalize) on the same batch converted to float,
  default threads and one thread. Needs the ``bench`` extra (``pip install -c constraints.txt
  -e ".[bench]"``); skipped with a note when kornia is not installed.

Reported: images/s (an image = its three views); ratios of the batched path to the faster
per-sample figure and to kornia; per core (one thread each), the ratios that carry over to a
machine with more cores. Measurements of the variants are interleaved (one repetition of each in
turn) so that load from other processes hits all of them alike. ``--device cuda`` times the
batched path and kornia on the GPU (synchronised), no per-sample path.

Distribution check (kornia vs ours, same parameters, thousands of views): crop geometry from a
coordinate image (area fraction, log aspect ratio, centre) with the colour ops off, and per-view
pixel statistics with every op on (mean, contrast, channel spread, share of gray views). Each
statistic's means are compared by z = difference / standard error; |z| < 4 passes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import load_note, write_results  # noqa: E402
from trainables.views import ViewConfig, ViewMaker, torchvision_reference_pipeline  # noqa: E402

KINDS = ("original", "crop", "crop")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def kornia_pipelines(cfg: ViewConfig) -> dict:
    """``kornia.augmentation`` with ``cfg``'s parameters, one pipeline per view kind (float input
    in [0, 1]); None if kornia is not installed."""
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    size, k = cfg.size, cfg.resolved_blur_kernel_size
    b, c, s, h = cfg.resolved_jitter

    def pipeline(kind: str):
        geo = (K.RandomResizedCrop((size, size), scale=cfg.crop_scale, ratio=cfg.crop_ratio) if kind == "crop"
               else K.Resize((size, size), antialias=True))
        ops = [geo, K.ColorJitter(b, c, s, h, p=cfg.resolved_jitter_prob), K.RandomGrayscale(p=cfg.grayscale_prob)]
        if cfg.resolved_blur_prob > 0:
            ops.append(K.RandomGaussianBlur((k, k), cfg.blur_sigma, p=cfg.resolved_blur_prob))
        ops += [K.RandomHorizontalFlip(p=cfg.flip_prob), K.Normalize(torch.tensor(cfg.mean), torch.tensor(cfg.std))]
        return K.AugmentationSequential(*ops)

    return {kind: pipeline(kind) for kind in set(KINDS)}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_case(src: int, out: int, batch: int, pil_images: int, reps: int, seed: int = 0,
               device: str = "cpu", use_kornia: bool = True) -> dict:
    """Interleaves the measurements (batched, per-sample, kornia; each at the default thread
    count and on one thread, repeat) so that a change in machine load during the run hits all of
    them alike."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, src, src), generator=g, dtype=torch.uint8).to(device)
    cfg = ViewConfig(size=out)  # MoCo v2 preset, crop scale (0.2, 1)
    maker = ViewMaker(cfg)
    threads = torch.get_num_threads()
    gen = torch.Generator(device).manual_seed(seed + 1)
    torch.manual_seed(seed)
    kornia = kornia_pipelines(cfg) if use_kornia else None

    def batched():
        maker(images, KINDS, gen)
        _sync(device)

    def per_sample():
        for im in pil:
            for k in KINDS:
                pipes[k](im)

    def with_kornia():
        x = images.float().div_(255.0)
        for k in KINDS:
            kornia[k](x)
        _sync(device)

    def one_thread(fn):
        def run():
            torch.set_num_threads(1)
            try:
                fn()
            finally:
                torch.set_num_threads(threads)
        return run

    runs = {"batched": batched, "batched_1t": one_thread(batched)}
    sizes = {"batched": batch, "batched_1t": batch}
    if device == "cpu":
        pil = [Image.fromarray(images[i % batch].permute(1, 2, 0).numpy()) for i in range(pil_images)]
        pipes = {k: torchvision_reference_pipeline(cfg, k) for k in set(KINDS)}
        runs.update(per_sample=per_sample, per_sample_1t=one_thread(per_sample))
        sizes.update(per_sample=pil_images, per_sample_1t=pil_images)
    if kornia is not None:
        kornia = {k: p.to(device) for k, p in kornia.items()}
        runs.update(kornia=with_kornia, kornia_1t=one_thread(with_kornia))
        sizes.update(kornia=batch, kornia_1t=batch)
    if device != "cpu":  # one thread says nothing about a GPU
        runs = {k: v for k, v in runs.items() if not k.endswith("_1t")}
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for k, fn in runs.items():
            times[k].append(_timed(fn))
    rate = {k: sizes[k] / statistics.median(v) for k, v in times.items()}
    row = {"case": f"{out} px (src {src}x{src} uint8)", "threads": threads, "device": device, **rate}
    if "per_sample" in rate:  # against the faster of the two per-sample figures (conservative)
        row["ratio"] = rate["batched"] / max(rate["per_sample"], rate["per_sample_1t"])
        row["ratio_1t"] = rate["batched_1t"] / rate["per_sample_1t"]
    if "kornia" in rate:
        row["vs_kornia"] = rate["batched"] / rate["kornia"]
        if "kornia_1t" in rate:
            row["vs_kornia_1t"] = rate["batched_1t"] / rate["kornia_1t"]
    return row


# ------------------------------------------------------------------------------------------------
# Distribution check: kornia's views against ours
# ------------------------------------------------------------------------------------------------


def _coordinate_images(n: int, size: int) -> torch.Tensor:
    """Channel 0 = x / W, channel 1 = y / H (pixel centres), channel 2 = 0.5: a view's min and
    max of channels 0 and 1 give the box it was cut from."""
    ramp = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    img = torch.empty(n, 3, size, size)
    img[:, 0] = ramp.view(1, 1, size)
    img[:, 1] = ramp.view(1, size, 1)
    img[:, 2] = 0.5
    return img


def _geometry_stats(views: torch.Tensor) -> torch.Tensor:
    """Per view: area fraction, log aspect ratio, centre x, centre y of the box (N x 4)."""
    x, y = views[:, 0], views[:, 1]
    x0, x1 = x.amin(dim=(1, 2)), x.amax(dim=(1, 2))
    y0, y1 = y.amin(dim=(1, 2)), y.amax(dim=(1, 2))
    w, h = (x1 - x0).clamp_min(1e-6), (y1 - y0).clamp_min(1e-6)
    return torch.stack([w * h, (w / h).log(), (x0 + x1) / 2, (y0 + y1) / 2], dim=1)


def _colour_stats(views: torch.Tensor, cfg: ViewConfig) -> torch.Tensor:
    """Per view (unnormalised): mean, std (contrast), mean channel spread (saturation), gray (0/1)."""
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    x = views * std + mean
    spread = x.amax(dim=1) - x.amin(dim=1)
    gray = (spread.amax(dim=(1, 2)) < 0.02).float()
    return torch.stack([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3)), spread.mean(dim=(1, 2)), gray], dim=1)


def distribution_check(n: int = 4096, size: int = 64, src: int = 80, seed: int = 0) -> list[dict]:
    """Compare kornia's and our views statistic by statistic (see the module docstring)."""
    import torch.nn.functional as F

    base = ViewConfig(size=size)
    geometry_only = ViewConfig(size=size, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
    kornia_geo, kornia_full = kornia_pipelines(geometry_only), kornia_pipelines(base)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    coords = _coordinate_images(n, src)
    low = torch.rand(n, 3, 6, 6, generator=g)
    photos = F.interpolate(low, size=(src, src), mode="bilinear", align_corners=False).clamp(0, 1)
    rows = []
    for what, images, ours_cfg, theirs, stats, names in (
        ("crop geometry", coords, geometry_only, kornia_geo, _geometry_stats,
         ("area fraction", "log aspect ratio", "centre x", "centre y")),
        ("pixels, every op", photos, base, kornia_full, lambda v: _colour_stats(v, base),
         ("mean", "contrast (std)", "channel spread", "gray share")),
    ):
        maker = ViewMaker(ours_cfg)
        gen = torch.Generator().manual_seed(seed + 1)
        if stats is _geometry_stats:  # undo the normalisation before reading coordinates back
            mean = torch.tensor(ours_cfg.mean).view(1, 3, 1, 1)
            std = torch.tensor(ours_cfg.std).view(1, 3, 1, 1)
            ours = stats(maker(images, ["crop"], gen)[0] * std + mean)
            theirs_views = theirs["crop"](images) * std + mean
        else:
            ours = stats(maker(images, ["crop"], gen)[0])
            theirs_views = theirs["crop"](images)
        other = stats(theirs_views)
        for i, name in enumerate(names):
            a, b = ours[:, i], other[:, i]
            se = ((a.var() + b.var()) / n).sqrt().item()
            z = (a.mean() - b.mean()).item() / se if se > 0 else 0.0
            rows.append({"check": what, "statistic": name, "ours": a.mean().item(), "kornia": b.mean().item(),
                         "ours_sd": a.std().item(), "kornia_sd": b.std().item(), "z": z, "agree": abs(z) < 4})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and repetitions (smoke run)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--no-kornia", action="store_true", help="leave kornia out")
    ap.add_argument("--out", default=None, help="also write the figures as JSON to this file")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    reps = args.reps or (2 if args.quick else 5)
    batch = min(args.batch, 64) if args.quick else args.batch
    cases = [(32, 32, 64 if args.quick else 128), (256, 224, 16 if args.quick else 48)]
    cpu = platform.processor() or platform.machine()
    use_kornia = not args.no_kornia and kornia_pipelines(ViewConfig(size=8)) is not None
    version = ""
    if use_kornia:
        import kornia

        version = f", kornia {kornia.__version__}"
    print(f"# views benchmark: torch {torch.__version__}{version}, {os.cpu_count()} CPUs ({cpu}), "
          f"device {args.device}, torch threads {torch.get_num_threads()}, batch {batch}, reps {reps} (median)")
    if not use_kornia:
        print("(kornia not measured: install the bench extra, pip install -c constraints.txt -e '.[bench]')")
    load_before = os.getloadavg()
    rows = [bench_case(src, out, batch, n_pil, reps, device=args.device, use_kornia=use_kornia)
            for src, out, n_pil in cases]
    checks = distribution_check(1024 if args.quick else 4096) if use_kornia else []
    load_after = os.getloadavg()
    t = rows[0]["threads"]

    def f(row, key, fmt="{:.0f}"):
        return fmt.format(row[key]) if key in row else "-"

    head = ("case", f"batched img/s ({t} threads)", f"per-sample PIL img/s ({t} threads / 1 thread)",
            f"kornia img/s ({t} threads / 1 thread)", "batched / per-sample", "batched / kornia",
            "batched img/s (1 thread)", "per core: batched / per-sample", "per core: batched / kornia")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['case']} | {f(r, 'batched')} | {f(r, 'per_sample')} / {f(r, 'per_sample_1t')} | "
              f"{f(r, 'kornia')} / {f(r, 'kornia_1t')} | {f(r, 'ratio', '{:.1f}x')} | {f(r, 'vs_kornia', '{:.1f}x')} | "
              f"{f(r, 'batched_1t')} | {f(r, 'ratio_1t', '{:.1f}x')} | {f(r, 'vs_kornia_1t', '{:.1f}x')} |")
    print("(an image = 3 views: original + 2 RandomResizedCrops, MoCo v2 augmentations)")
    if checks:
        print("\n| distribution check (kornia vs ours) | statistic | ours: mean (sd) | kornia: mean (sd) | z | agree |")
        print("|---|---|---|---|---|---|")
        for c in checks:
            print(f"| {c['check']} | {c['statistic']} | {c['ours']:.4f} ({c['ours_sd']:.4f}) | "
                  f"{c['kornia']:.4f} ({c['kornia_sd']:.4f}) | {c['z']:+.1f} | {'yes' if c['agree'] else 'NO'} |")
    print(load_note(load_before, load_after, time.perf_counter() - start, "every path"))
    if args.out:
        write_results(args.out, sys.argv[1:] if argv is None else argv, {
            "torch": torch.__version__, "kornia": version.removeprefix(", kornia ") or None,
            "cpus": os.cpu_count(), "cpu": cpu, "device": args.device, "batch": batch, "reps": reps,
            "load_before": load_before, "load_after": load_after, "seconds": time.perf_counter() - start,
            "cases": rows, "distribution_check": checks,
        })
    return 0


if __name__ == "__main__":
    np.random.seed(0)
    raise SystemExit(main())
