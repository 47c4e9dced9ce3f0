"""Input-pipeline throughput at 224 px, before and after true geometry: decode (+ LeOCLR views)
from ImageFolder and Parquet.

Usage:  .venv/bin/python benchmarks/data_loading.py [--quick] [--files 384] [--workers 0,1,2]
                                                   [--out benchmarks/results/data_loading.json]

Data: a temporary ImageFolder of JPEGs (quality 90, ~500 x 375 or 375 x 500 like an average
ImageNet photo) cut at random from the colour photographs shipped with scikit-image, and the
same JPEG bytes in Parquet shards (the ``parquet`` dataset's format). Both are read the way a
trial reads them, side by side in one run:

* **before** (the squash path, what in-memory sets still do): ``load_data(..., image_size=256,
  in_memory=False)`` + ``iterate_batches``: the loader workers decode with PIL and squash every
  photo to 256 x 256; the three views (original resized to 224, two 224 px RandomResizedCrops,
  MoCo v2 augmentations) are then made from the squashed batch by ``ViewMaker``;
* **after** (worker-side geometry, ``trainables.data.geometry``, what the loop does for
  file-backed sets): the loader workers decode each photo at its own size and cut the three
  224 px views from it as uint8 (``GeometricViews`` + ``iterate_view_batches``); only the
  photometric stage is left (``ViewMaker.photometric``).

Measured per configuration (format, N workers, path), as images/s over a warm epoch (persistent
workers already started), interleaved over ``reps`` rounds, median:

* decode (before) / decode + cut (after): batches only, what the CPU must do when the
  device-side stage runs on the GPU;
* + views on the CPU: ``ViewMaker`` (before) or ``ViewMaker.photometric`` (after) on each batch
  in the training process.

Then the per-core rates (one thread, in this process: decode + squash, decode + cut, the
device-side stage on an in-memory batch) and from them the CPU cores one GPU needs at the
issue's targets (2,000 img/s ResNet-50 224 px LeOCLR; 10,000 img/s ResNet-18 32 px), with the
device-side stage on the CPU or on the GPU. Cores are counted as (images/s needed) / (images/s
per core), so they assume that the work spreads over worker processes without loss.

Parquet at scale: the benchmark's set is one row group (the engine writes 512 rows per group and
its reader keeps the last 4 row groups of each process in an LRU), so every read above hits the
cache. A shuffled epoch over a real set (many times 4 x 512 rows) misses it on almost every
read, and a miss reads and converts a whole 512-row group to fetch one image. The per-core rate
of that case is measured too: the JPEGs repeated to two full 512-row groups, the LRU emptied
before every read (``ParquetImageDataset._cache``, a private attribute: this is a benchmark).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.data import iterate_batches, load_data, release_loaders, write_parquet_split  # noqa: E402
from trainables.data.geometry import GeometricViews, GeometryConfig, iterate_view_batches  # noqa: E402
from trainables.data.photo_patches import photo_path  # noqa: E402
from trainables.views import ViewConfig, ViewMaker  # noqa: E402

COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field",
                 "ihc", "retina")
KINDS = ("original", "crop", "crop")
TARGETS = (("ResNet-50 224 px LeOCLR", 2000, 224), ("ResNet-18 32 px (CIFAR stem)", 10000, 32))


def make_jpegs(files: int, seed: int = 0) -> list[tuple[int, bytes]]:
    """`files` JPEGs (label, bytes): random 4:3 / 3:4 crops of the scikit-image photos, 500 x 375."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = []
    for name in COLOUR_PHOTOS:
        with Image.open(photo_path(name)) as im:
            photos.append(im.convert("RGB"))
    out = []
    for i in range(files):
        label = i % len(photos)
        im = photos[label]
        w, h = im.size
        landscape = rng.random() < 0.7
        ar = 4 / 3 if landscape else 3 / 4
        area = rng.uniform(0.4, 1.0) * w * h
        cw = int(min(w, round(np.sqrt(area * ar))))
        ch = int(min(h, round(cw / ar)))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((500, 375) if landscape else (375, 500),
                                                           Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=90)
        out.append((label, buf.getvalue()))
    return out


def write_sets(root: Path, jpegs: list[tuple[int, bytes]]) -> tuple[Path, Path]:
    classes = list(COLOUR_PHOTOS)
    folder, parquet = root / "imagefolder", root / "parquet"
    for split, items in (("train", jpegs), ("val", jpegs[:len(classes)])):
        for i, (label, data) in enumerate(items):
            d = folder / split / classes[label]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:05d}.jpg").write_bytes(data)
        write_parquet_split(parquet / ("train" if split == "train" else "test"),
                            [b for _, b in items], [y for y, _ in items], classes)
    return folder, parquet


#: The loader configurations' paths: (name, worker-side geometry?, device-side stage on the CPU?)
PATHS = (("before: decode", False, False), ("before: decode + CPU views", False, True),
         ("after: decode + cut", True, False), ("after: decode + cut + CPU photometric", True, True))


def epoch(ds, batch: int, workers: int, maker: ViewMaker | None, gen: torch.Generator, ep: int) -> int:
    """One epoch of ``ds``: squashed batches (a dataset) or worker-cut views (``GeometricViews``);
    ``maker``, if given, runs the device-side stage on the CPU."""
    cut = isinstance(ds, GeometricViews)
    iterate = iterate_view_batches if cut else iterate_batches
    n = 0
    for images, _ in iterate(ds, batch, shuffle=True, seed=0, epoch=ep, drop_last=False, num_workers=workers):
        if maker is not None:
            maker.photometric(images, gen) if cut else maker(images, KINDS, gen)
        n += images.shape[0]
    return n


def per_core_rates(sets: dict, reps: int) -> dict[str, float]:
    """Images/s on one core (``ds[key]`` in this process, one torch thread: what one DataLoader
    worker does per image) of each ``name: (ds, key_of_index)``, interleaved."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {name: [] for name in sets}
    try:
        for _ in range(reps):
            for name, (ds, key) in sets.items():
                t0 = time.perf_counter()
                for i in range(len(ds)):
                    ds[key(i)]
                times[name].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(saved)
    return {name: len(sets[name][0]) / statistics.median(t) for name, t in times.items()}


def parquet_miss_rate(root: Path, jpegs: list[tuple[int, bytes]], reads: int, reps: int) -> float:
    """Images/s on one thread of Parquet reads that each miss the reader's row-group LRU: the
    JPEGs repeated to 2 x 512 rows (two full row groups of the engine's default size), the
    LRU emptied before every read, reads spread over both groups."""
    from trainables.data import PARQUET_ROWS_PER_GROUP

    rows = 2 * PARQUET_ROWS_PER_GROUP
    items = [jpegs[i % len(jpegs)] for i in range(rows)]
    write_parquet_split(root / "train", [b for _, b in items], [y for y, _ in items], list(COLOUR_PHOTOS))
    write_parquet_split(root / "test", [b for _, b in items[:8]], [y for y, _ in items[:8]],
                        list(COLOUR_PHOTOS))
    ds = load_data("parquet", root=str(root), image_size=256, in_memory=False).pretrain
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(0))[:reads].tolist()
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds[0]  # open the shard
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for i in order:
                ds._cache.clear()
                ds[i]
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(saved)
    return reads / statistics.median(times)


def views_rate(size: int, src: int, batch: int, reps: int, precut: bool = False) -> float:
    """Images/s of the device-side stage on one thread on an in-memory uint8 batch: the three
    views from ``src`` px images, or (``precut``) the photometric stage of three views already
    cut to ``size``."""
    maker = ViewMaker(ViewConfig(size=size))
    g = torch.Generator().manual_seed(0)
    shape = (batch, len(KINDS), 3, size, size) if precut else (batch, 3, src, src)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)

    def run():
        maker.photometric(images, g) if precut else maker(images, KINDS, g)

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(saved)
    return batch / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer files and rounds (smoke run)")
    ap.add_argument("--files", type=int, default=None, help="JPEGs in the temporary set (default 384)")
    ap.add_argument("--workers", default="0,1,2", help="loader worker counts to measure")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default=None, help="also write the figures as JSON to this file")
    args = ap.parse_args(argv)
    run_start = time.perf_counter()
    files = args.files or (128 if args.quick else 384)
    reps = args.reps or (2 if args.quick else 3)
    workers = [int(w) for w in args.workers.split(",")]
    from machine import cpu_model, load_note, write_results

    print(f"# data-loading benchmark: torch {torch.__version__}, {os.cpu_count()} CPUs ({cpu_model()}), torch threads "
          f"{torch.get_num_threads()}, {files} JPEGs (~500 x 375, q90), before: load size 256, after: cut "
          f"at 224; views 224, batch {args.batch}, reps {reps} (median)")
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="leoclr_loading_"))
    geometry = GeometryConfig(224, KINDS, crop_scale=(0.2, 1.0))
    try:
        jpegs = make_jpegs(files)
        mean_kb = sum(len(b) for _, b in jpegs) / len(jpegs) / 1024
        folder, parquet = write_sets(tmp, jpegs)
        sets = {
            "ImageFolder": load_data("imagefolder", root=str(folder), image_size=256, in_memory=False).pretrain,
            "Parquet": load_data("parquet", root=str(parquet), image_size=256, in_memory=False).pretrain,
        }
        cut = {fmt: GeometricViews(ds, geometry) for fmt, ds in sets.items()}
        maker = ViewMaker(ViewConfig(size=224))
        gen = torch.Generator().manual_seed(0)
        # the after paths for ImageFolder (the measure); Parquet's after rate per core below
        configs = [(fmt, n, path) for fmt in sets for n in workers for path, after, _ in PATHS
                   if not after or fmt == "ImageFolder"]
        spec = {path: (after, views) for path, after, views in PATHS}

        def run(fmt, n, path, ep):
            after, views = spec[path]
            return epoch(cut[fmt] if after else sets[fmt], args.batch, n, maker if views else None, gen, ep)

        for c in configs:  # warm-up: start the persistent workers, fill the OS page cache
            run(*c, 0)
        rates: dict[tuple, list[float]] = {c: [] for c in configs}
        for r in range(reps):
            # interleaved; the configuration that starts a round rotates
            k = r * len(configs) // reps
            for c in configs[k:] + configs[:k]:
                t0 = time.perf_counter()
                count = run(*c, r + 1)
                rates[c].append(count / (time.perf_counter() - t0))
        for ds in (*sets.values(), *cut.values()):
            release_loaders(ds)
        core = per_core_rates({**{f"{fmt} before": (ds, int) for fmt, ds in sets.items()},
                               **{f"{fmt} after": (ds, lambda i: (i, 0)) for fmt, ds in cut.items()}}, reps)
        miss_rate = parquet_miss_rate(tmp / "parquet_groups", jpegs, 64 if args.quick else 128, reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {c: statistics.median(v) for c, v in rates.items()}
    batch224 = 32 if args.quick else 64
    views224 = views_rate(224, 256, batch224, reps)
    photometric224 = views_rate(224, 224, batch224, reps, precut=True)
    views32 = views_rate(32, 32, 256, reps)
    load_after = os.getloadavg()

    print(f"(mean JPEG size {mean_kb:.0f} KiB)")
    # median over the rounds, and the best round: on a shared machine the rounds in which other
    # processes took the cores drag the median down; the best round is the least disturbed one
    columns = [(fmt, path) for fmt in sets for path, after, _ in PATHS if not after or fmt == "ImageFolder"]
    print("| loader workers | " + " | ".join(f"{fmt} {path} img/s" for fmt, path in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for n in workers:
        print(f"| {n} | " + " | ".join(f"{med[(fmt, n, path)]:.0f} (best {max(rates[(fmt, n, path)]):.0f})"
                                       for fmt, path in columns) + " |")
    print("(median of the rounds; in brackets the best round)")

    # before / after per core, at 224 px, and the cores one GPU needs at 2,000 img/s
    def whole(a: float, b: float) -> float:  # two stages on one core, one after the other
        return 1.0 / (1.0 / a + 1.0 / b)

    rows = []
    for fmt in sets:
        before, after = core[f"{fmt} before"], core[f"{fmt} after"]
        rows += [(f"{fmt}: decode (before: + squash to 256; after: + cut 3 views at 224), img/s per core",
                  before, after),
                 (f"{fmt}: whole pipeline on one core (+ views / + photometric on the CPU), img/s",
                  whole(before, views224), whole(after, photometric224))]
    rows.append(("device-side stage on the CPU, img/s per core (before: 3 views from 256 px; after: "
                 "photometric of 3 pre-cut views)", views224, photometric224))
    target = TARGETS[0][1]
    image_folder = (core["ImageFolder before"], core["ImageFolder after"])
    rows += [(f"ImageFolder: CPU cores for {target} img/s, device-side stage on the GPU",
              target / image_folder[0], target / image_folder[1]),
             (f"ImageFolder: CPU cores for {target} img/s, device-side stage on the CPU",
              target / whole(image_folder[0], views224), target / whole(image_folder[1], photometric224))]
    print("\n| measure (224 px) | before (squash path) | after (worker-side geometry) | after / before |")
    print("|---|---|---|---|")
    for name, before, after in rows:
        print(f"| {name} | {before:.1f} | {after:.1f} | {after / before:.2f}x |")
    print(f"(also per core: views at 32 px {views32:.0f} img/s; Parquet with a row-group cache miss on every "
          f"read (a shuffled epoch over a large set, before path) {miss_rate:.0f} img/s, so "
          f"{target / miss_rate:.1f} cores for {target} img/s)")
    print(load_note(load_before, load_after, time.perf_counter() - run_start))
    if args.out:
        write_results(args.out, sys.argv[1:] if argv is None else argv, {
            "torch": torch.__version__, "cpus": os.cpu_count(), "cpu_model": cpu_model(),
            "torch_threads": torch.get_num_threads(), "files": files, "mean_jpeg_kib": mean_kb,
            "batch": args.batch, "reps": reps, "load_before": load_before, "load_after": load_after,
            "seconds": time.perf_counter() - run_start,
            "loader": [{"format": f, "workers": n, "path": path, "img_s": med[(f, n, path)],
                        "all_img_s": rates[(f, n, path)]} for f, n, path in configs],
            "per_core_img_s": {**core, "parquet_row_group_miss": miss_rate, "views_224": views224,
                               "photometric_224": photometric224, "views_32": views32},
            "before_after": [{"measure": name, "before": b, "after": a} for name, b, a in rows],
        })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
