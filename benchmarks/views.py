"""Three-view augmentation throughput: batched ViewMaker vs per-sample torchvision (PIL).

Usage:  .venv/bin/python benchmarks/views.py [--quick] [--batch 256] [--reps 5]

LeOCLR needs three views per image (the original + two RandomResizedCrops), all with the MoCo v2
augmentations. Two ways of making them are measured side by side in one run, on the same
images, after a warm-up, as the median of several repetitions:

* batched: ``trainables.views.ViewMaker`` on a uint8 batch (B x 3 x S x S), CPU, torch's default
  thread count (all cores);
* per-sample: the "official style" torchvision pipeline on PIL images
  (``torchvision_reference_pipeline``: RandomResizedCrop / Resize, RandomApply(ColorJitter),
  RandomGrayscale, RandomApply(GaussianBlur), flip, ToTensor, Normalize), three calls per image,
  sequential like a DataLoader with 0 workers: measured with torch's default thread count (the
  tensor ops inside the pipeline, GaussianBlur, ToTensor, Normalize, may use the other core) and
  with one thread (what one DataLoader worker process gets).

Reported: images/s (an image = its three views); the ratio of the batched path to the faster of
the two per-sample figures; and, for a per-core comparison, both paths on one thread (a
DataLoader with N workers scales the per-sample path by at most N cores, so this is the ratio
that carries over to a machine with more cores). Measurements of the variants are interleaved
(one repetition of each in turn) so that load from other processes hits all of them alike.
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

from trainables.views import ViewConfig, ViewMaker, torchvision_reference_pipeline  # noqa: E402

KINDS = ("original", "crop", "crop")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_case(src: int, out: int, batch: int, pil_images: int, reps: int, seed: int = 0) -> dict:
    """Interleaves the measurements (batched, batched on 1 thread, per-sample, per-sample on 1
    thread, repeat) so that a change in machine load during the run hits all of them alike."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, src, src), generator=g, dtype=torch.uint8)
    cfg = ViewConfig(size=out)  # MoCo v2 preset, crop scale (0.2, 1)
    maker = ViewMaker(cfg)
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(seed + 1)
    pil = [Image.fromarray(images[i % batch].permute(1, 2, 0).numpy()) for i in range(pil_images)]
    pipes = {k: torchvision_reference_pipeline(cfg, k) for k in set(KINDS)}
    torch.manual_seed(seed)

    def batched():
        maker(images, KINDS, gen)

    def per_sample():
        for im in pil:
            for k in KINDS:
                pipes[k](im)

    def one_thread(fn):
        def run():
            torch.set_num_threads(1)
            try:
                fn()
            finally:
                torch.set_num_threads(threads)
        return run

    runs = {"batched": batched, "batched_1t": one_thread(batched), "per_sample": per_sample,
            "per_sample_1t": one_thread(per_sample)}
    sizes = {"batched": batch, "batched_1t": batch, "per_sample": pil_images, "per_sample_1t": pil_images}
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for k, fn in runs.items():
            times[k].append(_timed(fn))
    rate = {k: sizes[k] / statistics.median(v) for k, v in times.items()}
    return {
        "case": f"{out} px (src {src}x{src} uint8)",
        "batched": rate["batched"],
        "threads": threads,
        "batched_1t": rate["batched_1t"],
        "per_sample": rate["per_sample"],
        "per_sample_1t": rate["per_sample_1t"],
        # against the faster of the two per-sample figures (conservative)
        "ratio": rate["batched"] / max(rate["per_sample"], rate["per_sample_1t"]),
        "ratio_1t": rate["batched_1t"] / rate["per_sample_1t"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and repetitions (smoke run)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args(argv)
    reps = args.reps or (2 if args.quick else 5)
    batch = min(args.batch, 64) if args.quick else args.batch
    cases = [(32, 32, 64 if args.quick else 128), (256, 224, 16 if args.quick else 48)]
    cpu = platform.processor() or platform.machine()
    print(f"# views benchmark: torch {torch.__version__}, {os.cpu_count()} CPUs ({cpu}), "
          f"torch threads {torch.get_num_threads()}, batch {batch}, reps {reps} (median)")
    load_before = os.getloadavg()
    rows = []
    for src, out, n_pil in cases:
        rows.append(bench_case(src, out, batch, n_pil, reps))
    load_after = os.getloadavg()
    t = rows[0]["threads"]
    head = ("case", f"batched img/s ({t} threads)", f"per-sample PIL img/s ({t} threads / 1 thread)",
            "ratio", "batched img/s (1 thread)", "ratio per core (1 thread vs 1 thread)")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['case']} | {r['batched']:.0f} | {r['per_sample']:.0f} / {r['per_sample_1t']:.0f} | "
              f"{r['ratio']:.1f}x | {r['batched_1t']:.0f} | {r['ratio_1t']:.1f}x |")
    print("(an image = 3 views: original + 2 RandomResizedCrops, MoCo v2 augmentations)")
    print(f"(1-min load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f} on "
          f"{os.cpu_count()} CPUs; other processes competing for the cores slow both paths)")
    return 0


if __name__ == "__main__":
    np.random.seed(0)
    raise SystemExit(main())
