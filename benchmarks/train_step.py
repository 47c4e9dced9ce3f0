"""End-to-end training-step throughput: the platform's engine vs an official-style MoCo v2.

Usage:
    .venv/bin/python benchmarks/train_step.py                 # small_cnn + resnet18_cifar, 32 px
    .venv/bin/python benchmarks/train_step.py --quick         # smoke run (a few minutes)
    .venv/bin/python benchmarks/train_step.py --threads 1     # per core; steadier on a shared CPU
    .venv/bin/python benchmarks/train_step.py --resnet50      # adds ResNet-50 at 224 px (slow on CPU)
    .venv/bin/python benchmarks/train_step.py --device cuda --resnet50 [--compile]
                                            # on a GPU: bf16 autocast and channels_last (auto)
    add --out benchmarks/results/train_step.json to keep the rows (with every timing) as JSON

What one "step" is, for both sides: take a batch from the data pipeline, make the views, the
query forward + backward, the key forward(s) (shuffled batch, SplitBatchNorm on one process),
the SGD step, the momentum (EMA) update of the key encoder and the enqueue.

* ours: ``trainables.loop.Trainer.train_epoch`` (the code a trial runs), capped at a few steps:
  in-memory uint8 batches, ``ViewMaker`` views on the batch, foreach EMA, in-place queue, the loss
  read back once per ``finite_check_every`` steps. One row per attraction strategy.
* reference: ``benchmarks/reference_moco.py``, MoCo v2 written like facebookresearch/moco:
  per-sample PIL augmentation in a DataLoader (``--ref-workers``; default 0 on CPU: in the
  training process, at one torch thread as in a DataLoader worker; min(8, CPUs) on CUDA), a
  Python loop over parameters for the EMA, the queue cloned every step,
  ``loss.item()`` every step. Same data (photo_patches), same network (``Encoder`` + MLP head,
  SplitBatchNorm 8), same batch, same queue size, same machine.

All variants are built first, then measured interleaved (one timed chunk of each in turn, ``reps``
rounds, after a warm-up; the variant that starts a round rotates), so load from other processes
hits all of them alike. Ratios are the median over rounds of the ratio *within* a round
(variants measured next to each other). With reference DataLoader workers (``--ref-workers`` >
0) the workers keep preparing batches while the other variants are timed, so the reference's
loading is partly hidden and its figure flattered; the CPU-time columns are then left out
(the workers' CPU time is not this process's).

Memory, per variant: on CUDA ``torch.cuda.max_memory_allocated`` during its steps minus what was
allocated before them. On CPU the tensor allocator has no peak counter, so each variant runs
once more in a fresh subprocess: the process's peak RSS (``VmHWM``, reset with
``/proc/self/clear_refs`` just before the steps) during two steps, and that peak minus the
RSS just before the steps (activations, gradients, optimizer state, views, the batch: what a
step adds on top of the built models and data). RSS counts pages touched, including memory the
allocator keeps cached, so it is an upper bound on what the tensors need.

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one step of each variant on a small
batch (matmuls and convolutions of forward and backward; the views' blur convolutions are
counted separately and subtracted), scaled per image. Achieved FLOP/s = FLOP/image x images/s;
on a GPU also the share of the card's dense bf16 peak (table ``PEAK_BF16_TFLOPS``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_model  # noqa: E402
from reference_moco import ReferenceTrainer  # noqa: E402
from trainables.config import TrainConfig  # noqa: E402
from trainables.data import load_data  # noqa: E402
from trainables.loop import Trainer  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a substring of the device name.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 70.0),
    ("L4", 121.0),
    ("V100", 125.0),  # fp16 (no bf16 on V100)
)

# (name, attraction_strategy, symmetric) of the platform's rows
OURS = (
    ("moco_v2", "moco_v2", False),
    ("moco_v2 symmetric", "moco_v2", True),
    ("leoclr", "leoclr", False),
    ("leoclr_random_original", "leoclr_random_original", False),
    ("attract_all", "attract_all", False),
)
REFS = (("reference moco_v2", False), ("reference moco_v2 symmetric", True))
# rows measured only when --variants names them: (name, strategy, symmetric, config overrides)
EXTRA = (("moco_v2 nchw", "moco_v2", False, {"channels_last": "off"}),)


def peak_bf16_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16_TFLOPS:
        if key in name:
            return peak
    return None


# ------------------------------------------------------------------------------------------
# Building the variants
def our_config(case: dict, strategy: str, symmetric: bool, steps: int, device: str,
               compile: bool = False, overrides: dict | None = None) -> TrainConfig:
    return TrainConfig.from_dict({
        **(overrides or {}),
        "dataset": "photo_patches",
        "photo_patches": {"train_per_class": case["per_class"], "test_per_class": 4},
        "image_size": case["image_size"],
        "view_size": case["view_size"],
        "backbone": case["backbone"],
        "batch_size": case["batch"],
        "queue_size": case["queue"],
        "bn_splits": 8,
        "attraction_strategy": strategy,
        "symmetric": symmetric,
        "epochs": 1000,
        "max_steps_per_epoch": steps,
        "finite_check_every": 20,
        "device": device,
        "loader_workers": 0,
        "compile": compile,
    })


class Ours:
    def __init__(self, case, strategy, symmetric, steps, device, compile=False, overrides=None):
        self.trainer = Trainer(our_config(case, strategy, symmetric, steps, device, compile, overrides))
        if self.trainer.steps_per_epoch != steps:  # the timing divides by `steps`
            raise SystemExit(f"{case['label']}: the training set holds only "
                             f"{self.trainer.steps_per_epoch} batches, fewer than {steps} steps")
        self.steps = steps
        self.batch = case["batch"]

    def run(self) -> None:
        self.trainer.train_epoch()  # exactly `steps` steps (max_steps_per_epoch)


class Reference:
    def __init__(self, case, symmetric, steps, device, workers, images):
        self.trainer = ReferenceTrainer(images, case["backbone"], case["batch"], case["view_size"],
                                        queue_size=case["queue"], bn_splits=8, symmetric=symmetric,
                                        num_workers=workers, device=device)
        self.steps = steps
        self.batch = case["batch"]

    def run(self) -> None:
        for _ in range(self.steps):
            self.trainer.step()
        if self.trainer.device.type == "cuda":
            torch.cuda.synchronize()


def build(case: dict, name: str, steps: int, device: str, workers: int, compile: bool = False):
    for our_name, strategy, symmetric in OURS:
        if name == our_name:
            return Ours(case, strategy, symmetric, steps, device, compile)
    for our_name, strategy, symmetric, overrides in EXTRA:
        if name == our_name:
            return Ours(case, strategy, symmetric, steps, device, compile, overrides)
    for ref_name, symmetric in REFS:
        if name == ref_name:
            # the very same uint8 images the platform trains on
            cfg = our_config(case, "moco_v2", False, steps, device)
            images = load_data(cfg.dataset, root=None, image_size=cfg.image_size,
                               photo_patches=cfg.photo_patches).pretrain.images
            return Reference(case, symmetric, steps, device, workers, images)
    raise ValueError(name)


# ------------------------------------------------------------------------------------------
# FLOPs of one step
def flops_per_image(variant, device: torch.device, n: int = 16) -> float:
    """Model FLOPs (forward + backward matmuls/convs, loss) per image of one step."""
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(variant, Ours):
        tr = variant.trainer
        images = tr.data.pretrain.images[:n].to(device)
        gen_state = torch.Generator(device).manual_seed(123).get_state()
        view_gen = torch.Generator(device)
        view_gen.set_state(gen_state)
        # count on the eager modules (same FLOPs; a compiled one would recompile for the
        # counting mode and for the small batch)
        compiled = tr.query_fwd, tr.key_fwd
        tr.query_fwd, tr.key_fwd = tr.query_encoder, tr.key_encoder
        try:
            with FlopCounterMode(display=False) as total:
                tr.train_step(images, view_gen, torch.Generator().manual_seed(0))
        finally:
            tr.query_fwd, tr.key_fwd = compiled
        view_gen.set_state(gen_state)
        with FlopCounterMode(display=False) as views:
            tr.views(images, tr.strategy.views, view_gen)
        return (total.get_total_flops() - views.get_total_flops()) / n
    tr = variant.trainer
    im_q, im_k = tr._next_batch()
    im_q, im_k = im_q[:n].to(device), im_k[:n].to(device)
    n = im_q.shape[0]
    model = tr.model
    ptr = model.queue_ptr.clone()
    with FlopCounterMode(display=False) as total:
        loss = model(im_q, im_k)
        loss.backward()
    tr.optimizer.zero_grad()
    model.queue_ptr.copy_(ptr)  # later full batches must land on multiples of the batch
    return total.get_total_flops() / n


# ------------------------------------------------------------------------------------------
# Memory (CPU: a subprocess per variant; CUDA: the allocator's peak counter)
def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def memory_probe(spec: dict) -> dict:
    """Run in a fresh process: build one variant, then 2 steps; report peak RSS (MiB)."""
    torch.set_num_threads(spec["threads"])
    variant = build(spec["case"], spec["name"], 1, spec["device"], spec["workers"],
                    spec.get("compile", False))
    before = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        reset = True
    except OSError:
        reset = False
    for _ in range(2):  # the optimizer's momentum buffers exist from the first step on
        variant.run()
    peak = _status_kib("VmHWM")
    return {"peak_mib": peak / 1024, "step_peak_mib": (peak - before) / 1024 if reset else None}


def measure_memory_subprocess(case, name, device, workers, compile=False) -> dict:
    spec = {"case": case, "name": name, "device": device, "workers": workers,
            "threads": torch.get_num_threads(), "compile": compile}
    out = subprocess.run([sys.executable, __file__, "--memory-probe", json.dumps(spec)],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        print(f"(memory probe of {name} failed: {out.stderr.strip().splitlines()[-1:]})",
              file=sys.stderr)
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------
def bench_case(case: dict, names: list[str], reps: int, device: torch.device, workers: int,
               memory: bool, compile: bool = False) -> list[dict]:
    steps = case["steps"]
    variants = {name: build(case, name, steps, str(device), workers, compile) for name in names}
    for v in variants.values():  # warm-up (allocator, oneDNN primitives, optimizer state)
        v.run()
    for v in variants.values():
        if isinstance(v, Reference):
            v.trainer.load_time = v.trainer.load_cpu_time = 0.0
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu_times: dict[str, list[float]] = {k: [] for k in variants}
    cuda_peak: dict[str, float] = {}
    order = list(variants)
    for r in range(reps):
        # the starting variant rotates from round to round, so that no variant always runs
        # right after the same neighbour (caches, allocator state, a load burst at round start)
        for name in order[r % len(order):] + order[:r % len(order)]:
            v = variants[name]
            if device.type == "cuda":
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            t0, c0 = time.perf_counter(), time.process_time()
            v.run()
            times[name].append(time.perf_counter() - t0)
            cpu_times[name].append(time.process_time() - c0)
            if device.type == "cuda":
                cuda_peak[name] = max(cuda_peak.get(name, 0.0),
                                      (torch.cuda.max_memory_allocated() - base) / 2**20)
    flops = {name: flops_per_image(v, device) for name, v in variants.items()}
    peak = peak_bf16_tflops(device)
    rows = []
    ref_name = "reference moco_v2" if "reference moco_v2" in times else None
    for name, v in variants.items():
        per_img = [t / (steps * case["batch"]) for t in times[name]]
        img_s = 1.0 / statistics.median(per_img)
        row = {"case": case["label"], "variant": name, "img_s": img_s,
               "step_ms": 1000 * statistics.median(times[name]) / steps,
               "gflop_img": flops[name] / 1e9}
        row["gflop_s"] = row["gflop_img"] * img_s
        if peak:
            row["peak_share"] = row["gflop_s"] / 1e3 / peak
        row["img_cpu_s"] = steps * case["batch"] / statistics.median(cpu_times[name])
        row["gflop_cpu_s"] = row["gflop_img"] * row["img_cpu_s"]  # per second of CPU time
        ref = "reference moco_v2 symmetric" if name.endswith("symmetric") else ref_name
        # CPU time counts this process only: with reference DataLoader workers their CPU time
        # would be missing, so the CPU-time ratios are reported only without workers
        keys = (("", times), ("_cpu", cpu_times)) if workers == 0 else (("", times),)
        for key, tt in keys:
            if ref in tt and not name.startswith("reference"):
                row["x_ref" + key] = statistics.median(r / t for r, t in zip(tt[ref], tt[name]))
            if "moco_v2" in tt and not name.startswith("reference"):
                row["vs_moco" + key] = statistics.median(t / m for t, m in zip(tt[name], tt["moco_v2"]))
        if isinstance(v, Reference):
            total, total_cpu = sum(times[name]), sum(cpu_times[name])
            row["ref_load_share"] = v.trainer.load_time / total if total else None
            row["ref_load_cpu_share"] = v.trainer.load_cpu_time / total_cpu if total_cpu else None
            row["ref_workers"] = workers
        if device.type == "cuda":
            row["step_peak_mib"] = cuda_peak.get(name)
        row["times_s"] = times[name]
        row["cpu_times_s"] = cpu_times[name]
        rows.append(row)
    del variants
    if memory and device.type == "cpu":
        for row in rows:
            row.update(measure_memory_subprocess(case, row["variant"], str(device), workers, compile))
    return rows


def fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def print_table(rows: list[dict], device: torch.device) -> None:
    gpu = device.type == "cuda"
    head = ["case", "variant", "img/s", "step (ms)", "x reference", "step / our moco_v2"]
    if not gpu:
        head += ["img per CPU-s", "x reference (CPU time)", "step / our moco_v2 (CPU time)"]
    head += ["GFLOP/img", "GFLOP/s"]
    if not gpu:
        head += ["GFLOP per CPU-s"]
    if gpu:
        head += ["% bf16 peak", "step peak alloc (MiB)"]
    else:
        head += ["peak RSS (MiB)", "step peak RSS (MiB)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))

    def rate(x):
        return f"{x:.0f}" if x >= 100 else f"{x:.1f}"

    def ratio(r, key):
        return fmt(r.get(key), ".2f") + ("x" if key in r else "")

    for r in rows:
        cells = [r["case"], r["variant"], rate(r["img_s"]), f"{r['step_ms']:.0f}",
                 ratio(r, "x_ref"), ratio(r, "vs_moco")]
        # a reference with DataLoader workers: its workers' CPU time is not counted, so no
        # per-CPU-second figures for it
        cpu_ok = not r.get("ref_workers")
        if not gpu:
            cells += [rate(r["img_cpu_s"]) if cpu_ok else "-", ratio(r, "x_ref_cpu"),
                      ratio(r, "vs_moco_cpu")]
        cells += [f"{r['gflop_img']:.2f}", f"{r['gflop_s']:.1f}"]
        if not gpu:
            cells += [f"{r['gflop_cpu_s']:.1f}" if cpu_ok else "-"]
        if gpu:
            cells += [fmt(100 * r["peak_share"] if r.get("peak_share") else None, ".1f"),
                      fmt(r.get("step_peak_mib"), ".0f")]
        else:
            cells += [fmt(r.get("peak_mib"), ".0f"), fmt(r.get("step_peak_mib"), ".0f")]
        print("| " + " | ".join(cells) + " |")
    for r in rows:
        if r.get("ref_load_share") is not None:
            cpu = r.get("ref_load_cpu_share")
            cpu = (f", {100 * cpu:.0f} % of its CPU time"
                   if cpu is not None and not gpu and r.get("ref_workers") == 0 else "")
            print(f"({r['case']}, {r['variant']}: {100 * r['ref_load_share']:.0f} % of its step "
                  f"time is waiting for the DataLoader's per-sample augmentation{cpu})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer variants, smaller batches")
    ap.add_argument("--backbones", default="small_cnn,resnet18_cifar")
    ap.add_argument("--resnet50", action="store_true", help="also ResNet-50 at 224 px (slow on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="override every case's batch size")
    ap.add_argument("--reps", type=int, default=None,
                    help="timed rounds of every case (default 5; --quick 2)")
    ap.add_argument("--steps", type=int, default=None, help="override every case's steps per timed chunk")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--ref-workers", type=int, default=None,
                    help="DataLoader workers of the reference (default: 0 on CPU, i.e. the "
                         "augmentation in the training process at one thread; min(8, CPUs) on CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile our encoders (cfg.compile)")
    ap.add_argument("--out", default=None, help="also write the rows and the run's settings to this JSON file")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's default, all cores); 1 = a 1-CPU Ray trial")
    ap.add_argument("--variants", default=None,
                    help="comma-separated rows to measure (default: all but 'moco_v2 nchw', our "
                         "moco_v2 with channels_last off; --quick: moco_v2, leoclr, reference moco_v2)")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant memory probes")
    ap.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(json.loads(args.memory_probe))))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.ref_workers is None:
        args.ref_workers = min(8, os.cpu_count() or 1) if gpu else 0
    reps = args.reps or (2 if args.quick else 5)

    # (label, backbone, stored size, view size, batch, per-class images, steps per timed chunk)
    cases = []
    for bb in args.backbones.split(","):
        if bb == "small_cnn":
            batch, steps = (64, 2) if args.quick else (256, 2)
        elif bb == "resnet18_cifar":
            batch, steps = (32, 1) if args.quick else (64, 1)
        else:
            raise SystemExit(f"unknown backbone {bb!r} (small_cnn, resnet18_cifar; --resnet50)")
        if gpu:
            batch, steps = 512, 10
        cases.append({"label": f"{bb} 32 px", "backbone": bb, "image_size": 32, "view_size": 32,
                      "batch": batch, "per_class": 256, "steps": steps})
    if args.resnet50:
        batch, steps = (256, 5) if gpu else ((8, 1) if args.quick else (16, 1))
        cases.append({"label": "resnet50 224 px", "backbone": "resnet50", "image_size": 256,
                      "view_size": 224, "batch": batch, "per_class": max(4, batch // 8), "steps": steps})
    for case in cases:
        if args.batch:
            case["batch"] = args.batch
        if args.steps:
            case["steps"] = args.steps
        # the reference (official code) needs K % keys-per-step == 0; the symmetric loss
        # enqueues 2 x batch keys per step. 4096 for the default batches; same K on both sides.
        case["queue"] = -(-4096 // (2 * case["batch"])) * 2 * case["batch"]
        # photo_patches has 16 classes: the training set must hold at least one timed chunk
        # of batches, or our side (an epoch capped at `steps`) would run fewer steps than timed
        case["per_class"] = max(case["per_class"], -(-case["batch"] * max(2, case["steps"]) // 16))
    names_full = [n for n, _, _ in OURS] + [n for n, _ in REFS]
    names_quick = ["moco_v2", "leoclr", "reference moco_v2"]
    names = names_quick if args.quick else names_full
    if args.variants:
        names = [n.strip() for n in args.variants.split(",")]
        known = names_full + [n for n, _, _, _ in EXTRA]
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown}; choose from {known}")
    cpu = cpu_model()
    print(f"# train-step benchmark: torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if gpu else
             f", {os.cpu_count()} CPUs ({cpu}), torch threads {torch.get_num_threads()}")
          + f", reps {reps} (median), reference DataLoader workers {args.ref_workers}")
    load_before = os.getloadavg()
    run_start = time.perf_counter()
    rows = []
    case_info = []
    for case in cases:
        t0 = time.perf_counter()
        load0 = os.getloadavg()[0]
        # ResNet-50 at 224 px on a CPU: only the three rows the targets are about (minutes each)
        # (unless --variants names the rows)
        case_names = names_quick if case["backbone"] == "resnet50" and not gpu and not args.variants else names
        case["reps"] = reps
        rows += bench_case(case, case_names, case["reps"], device, args.ref_workers, not args.no_memory,
                           args.compile)
        info = dict(case, seconds=time.perf_counter() - t0, load_before=load0,
                    load_after=os.getloadavg()[0])
        case_info.append(info)
        print(f"({case['label']}: batch {case['batch']}, queue {case['queue']}, {case['steps']} "
              f"step(s) per timed chunk, {case['reps']} rounds, {info['seconds']:.0f} s, 1-min load "
              f"{info['load_before']:.1f} -> {info['load_after']:.1f})", file=sys.stderr)
    load_after = os.getloadavg()
    print_table(rows, device)
    print("(x reference: images/s over the official-style reference's, same backbone and batch; "
          "symmetric rows against the symmetric reference. step / our moco_v2: step time over "
          "our asymmetric moco_v2's. Both are medians of ratios within one round, from wall time "
          "and, on CPU, from the process's CPU time: with 1 thread and other processes competing "
          "for the cores, CPU time is the steadier measure of the work a step needs.)")
    print(f"(1-min load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f} on "
          f"{os.cpu_count()} CPUs; {time.perf_counter() - run_start:.0f} s in all)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "argv": sys.argv[1:] if argv is None else argv,
            "torch": torch.__version__, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if gpu else cpu,
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "ref_workers": args.ref_workers, "compile": args.compile,
            "load_before": load_before, "load_after": load_after,
            "seconds": time.perf_counter() - run_start, "cases": case_info, "rows": rows,
        }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
