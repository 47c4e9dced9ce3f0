"""Sweep overhead: where the wall time of a real sweep goes, per trial and overall, before/after.

Usage:
    .venv/bin/python benchmarks/sweep_overhead.py                  # demo space, 2 trials, before + after (~9 min)
    .venv/bin/python benchmarks/sweep_overhead.py --trials 4       # the demo sweep as shipped (4 trials; ~20 min)
    .venv/bin/python benchmarks/sweep_overhead.py --variants grid-end --max-epochs 4 \
        --out benchmarks/results/sweep_overhead_grid_end.json      # grid, kNN + checkpoint at the end only
    .venv/bin/python benchmarks/sweep_overhead.py --space smoke --max-epochs 2   # seconds-long trials (plumbing)
    .venv/bin/python benchmarks/sweep_overhead.py --variants before  # one sweep, no comparison
    .venv/bin/python benchmarks/sweep_overhead.py --after-set checkpoint_every=2 --after-set knn_k=50
    .venv/bin/python benchmarks/sweep_overhead.py --from-json benchmarks/results/sweep_overhead.json  # re-print

What runs: a real sweep through ``leoclr_platform.sweep.run_sweep`` (Ray Tune + OptunaSearch +
ASHA + MLflow tracking into a temporary SQLite store), in a temporary storage folder, once per
variant (``--variants``, default ``before,after``), side by side in one run:

* ``before``: the space with ``resources.launcher: ray_train``: every trial starts a Ray Train
  TorchTrainer (controller, placement group, worker actor, process group), as the platform did
  for every trial before one-worker trials trained in the trial itself; run_sweep starts its
  own in-process Ray runtime, the way ``leoclr sweep`` does;
* ``after``: the space as shipped (``launcher: auto``: a one-worker trial trains inside its Tune
  trial actor), same trial count, in the Ray runtime of the first sweep (``ray start --head`` +
  ``leoclr sweep --address`` does the same from the CLI), plus any ``--after-set`` overrides of
  the space's ``base``;
* ``grid-end``: a grid sweep made from the space (its first categorical key as the grid, the
  other searched keys fixed mid-range) with ``knn_every = checkpoint_every = max_epochs``: nothing
  stops a grid trial early, so it needs the kNN metric only at the end.

How it is measured (nothing in platform/ or trainables/ is changed; the benchmark wraps
functions in its own process and ships the wrappers to the Ray actors it starts):

* driver: wall clock around ``run_sweep`` and its phases (store checks, Ray start-up, MLflow
  run opened, ``Tuner.fit``, the final tracking pass), and a Tune callback that stamps each
  trial's start, each epoch's result as the driver receives it, and its end;
* the process that trains (the Tune trial actor, or rank 0 of a Train run): wall-clock stamps
  of ``Trainer`` construction (data load + model build), each ``train_epoch``, ``knn_eval``,
  ``save_checkpoint`` and the report (``ray.tune.report``, or ``ray.train.report``, which also
  copies the checkpoint into the sweep's storage), written to ``<sweep>/_overhead/<trial>.jsonl``;
* the loop's own per-epoch metrics from Tune's result.json: ``train_time_s`` (the training
  steps: batches, views, forward, backward, EMA, enqueue), ``knn_time_s``, ``epoch_time_s``;
* CPU seconds of every process of the Ray runtime (``/proc``, sampled once a second), grouped
  by role, to show what the overhead costs the cores the training runs on.

Per trial (wall, trial start = Tune starts its actor, trial end = Tune marks it finished):
  start-up      trial start -> the training process starts building its Trainer: Tune trial
                actor (+ for Train runs: TorchTrainer, Train controller, placement group,
                worker actor, process group)
  data+model    Trainer construction (data load from the Parquet cache, model build)
  train         sum of the loop's train_time_s (the training steps)
  kNN           sum of knn_time_s (the per-epoch kNN monitor)
  ckpt write    Trainer.save_checkpoint
  report        ray.train.report: checkpoint copied into storage + metrics to Tune
  other         the rest between the first and the last report (BN sync, epoch bookkeeping)
  tail          last report -> trial end: worker-group teardown; after an ASHA stop also the
                partial epoch the worker had started when it was stopped
Overall (slot-seconds = concurrent-trial slots x sweep wall time): the same categories summed
over trials, plus Ray start-up, tracking (store check, parent run, final tracking pass) and idle
slots (Tune set-up, slots left empty while fewer trials than slots run, summary).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "platform"))

from machine import cpu_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
EVENTS_DIR = "_overhead"
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# =============================================================================================
# Instrumentation shipped to the Ray actors (pickled by value: this file is __main__)
# =============================================================================================
def _append_event(path: str, event: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")


def _timed_driver(config, sweep):
    """Wraps leoclr_platform.sweep.trial.train_driver_fn inside the Tune trial actor."""
    import ray.tune

    import leoclr_platform.sweep.trial as S

    trial_id = ray.tune.get_context().get_trial_id()
    events = os.path.join(sweep.root, EVENTS_DIR, f"{trial_id}.jsonl")
    _append_event(events, {"ev": "driver_start", "t": time.time(), "pid": os.getpid()})
    if sweep.in_trial:  # the loop runs right here, reporting with ray.tune.report
        _patch_loop(events, ray.tune)
    else:  # the loop runs on Ray Train workers: wrap their function
        original_worker = S.__dict__.setdefault("_bench_original_worker", S.train_fn_per_worker)

        def worker(loop_config):
            return _timed_worker(loop_config, original_worker, events)

        S.train_fn_per_worker = worker
    original_driver = S.__dict__.get("_bench_original_driver", S.train_driver_fn)
    try:
        return original_driver(config, sweep)
    finally:
        _append_event(events, {"ev": "driver_end", "t": time.time()})


_timed_driver.__name__ = _timed_driver.__qualname__ = "train_driver_fn"  # Tune names trial dirs after it


def _patch_loop(events: str, report_module) -> None:
    """Stamps Trainer init, epochs, kNN, checkpoints and `report_module.report` in this process."""
    import trainables.loop as L

    if getattr(L.Trainer, "_bench_patched", False):
        return
    L.Trainer._bench_patched = True

    def stamp(name, fn):
        def wrapped(*args, **kwargs):
            t0 = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                self = args[0] if args else None
                epoch = getattr(self, "epoch", None) if name != "report" else None
                _append_event(events, {"ev": name, "t0": t0, "t1": time.time(), "epoch": epoch})
        return wrapped

    L.Trainer.__init__ = stamp("init", L.Trainer.__init__)
    L.Trainer.train_epoch = stamp("train_epoch", L.Trainer.train_epoch)
    L.Trainer.knn_eval = stamp("knn", L.Trainer.knn_eval)
    L.Trainer.save_checkpoint = stamp("checkpoint", L.Trainer.save_checkpoint)
    report_module.report = stamp("report", report_module.report)
    _append_event(events, {"ev": "worker_start", "t": time.time(), "pid": os.getpid(),
                           "threads": __import__("torch").get_num_threads()})


def _timed_worker(loop_config, original, events):
    """Runs on each Ray Train worker: stamps Trainer init, epochs, checkpoints and reports (rank 0)."""
    import ray.train

    if ray.train.get_context().get_world_rank() == 0:
        _patch_loop(events, ray.train)
    return original(loop_config)


def _make_callback(store: dict):
    from ray.tune import Callback

    class TimingCallback(Callback):
        """Driver-side stamps of each trial's start, results and end (kept in `store`)."""

        def __reduce__(self):  # Tune pickles the RunConfig into tuner.pkl
            return (Callback, ())

        def _trial(self, trial):
            return store.setdefault(trial.trial_id, {"results": []})

        def on_trial_start(self, iteration, trials, trial, **info):
            self._trial(trial)["start"] = time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            keep = ("epoch", "train_time_s", "knn_time_s", "epoch_time_s", "time_this_iter_s", "time_total_s",
                    "timestamp", "knn_top1", "loss", "images_per_s", "steps")
            self._trial(trial)["results"].append({"t": time.time(), **{k: result.get(k) for k in keep}})

        def on_trial_complete(self, iteration, trials, trial, **info):
            entry = self._trial(trial)
            entry["end"], entry["status"] = time.time(), "done"

        def on_trial_error(self, iteration, trials, trial, **info):
            entry = self._trial(trial)
            entry["end"], entry["status"] = time.time(), "error"

    return TimingCallback()


# =============================================================================================
# CPU accounting of the Ray runtime's processes (/proc)
# =============================================================================================
def _role(cmd: str, pid: int) -> str:
    if pid == os.getpid():
        return "sweep driver (Tune loop, searcher, MLflow thread)"
    if "RayTrainWorker" in cmd:
        return "Train workers (training loop of Train runs)"
    if "ImplicitFunc" in cmd or "_Inner" in cmd or "train_driver" in cmd:
        return "Tune trial actors (training loop of in-trial runs; drivers of Train runs)"
    if "TrainController" in cmd or "TrialStatus" in cmd or "SynchronizationActor" in cmd:
        return "Train controllers and helper actors"
    return "Ray system (GCS, raylet, dashboard, agents, idle workers)"


class CpuSampler:
    """CPU seconds of this process and all its descendants, by role; sampled every `period` s."""

    def __init__(self, period: float = 1.0):
        self.period = period
        self.seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _snapshot(self) -> None:
        me = os.getpid()
        parent: dict[int, int] = {}
        info: dict[int, tuple[str, float]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            rest = stat[stat.rfind(")") + 2:].split()
            parent[pid] = int(rest[1])
            info[pid] = (cmd, (int(rest[11]) + int(rest[12])) / TICK)
        for pid, (cmd, cpu) in info.items():
            p, depth = pid, 0
            while p not in (me, 0, 1) and depth < 32:
                p, depth = parent.get(p, 0), depth + 1
            if p == me:
                role = _role(cmd, pid)
                old = self.seen.get(pid)
                if old is not None and old[0] != role and not role.startswith("Ray system"):
                    pass  # a worker process that took an actor: keep the new, specific role
                elif old is not None and old[0] != role:
                    role = old[0]  # an actor process going back to a generic title: keep its role
                self.seen[pid] = (role, cpu)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self._snapshot()
            except Exception:  # noqa: BLE001 - best effort
                pass

    def start(self) -> "CpuSampler":
        self._snapshot()
        self.base = dict(self.seen)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._snapshot()
        out: dict[str, float] = {}
        for pid, (role, cpu) in self.seen.items():
            before = self.base.get(pid, (role, 0.0))[1]
            out[role] = out.get(role, 0.0) + cpu - before
        return out


# =============================================================================================
# One instrumented sweep
# =============================================================================================
def run_instrumented(label: str, spec, *, storage: str, tracking_uri: str, trials: int | None,
                     max_epochs: int | None, track: bool, num_cpus: int | None) -> dict:
    import ray
    import ray.tune

    import leoclr_platform.sweep.run as R
    import leoclr_platform.sweep.runtime as runtime
    import leoclr_platform.sweep.trial as S
    import leoclr_platform.tracking as T
    from leoclr_platform.sweep import SweepRequest

    phases: list[dict] = []

    def timed(owner, attr, phase):
        original = getattr(owner, attr)

        def wrapped(*args, **kwargs):
            t0 = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                phases.append({"phase": phase, "t0": t0, "t1": time.time()})
        setattr(owner, attr, wrapped)
        return original

    store: dict = {}
    callback = _make_callback(store)
    tuner_init = ray.tune.Tuner.__init__

    def init_with_callback(self, *args, run_config=None, **kwargs):
        if run_config is not None:
            run_config.callbacks = [*(run_config.callbacks or []), callback]
        return tuner_init(self, *args, run_config=run_config, **kwargs)

    originals = {
        (R, "connect_ray"): timed(R, "connect_ray", "ray_start"),
        (T, "check_store"): timed(T, "check_store", "tracking"),
        (R, "_open_tracker"): timed(R, "_open_tracker", "tracking"),
        (R, "finish_tracking"): timed(R, "finish_tracking", "tracking"),
        (R, "summarize"): timed(R, "summarize", "summary"),
        (ray.tune.Tuner, "fit"): timed(ray.tune.Tuner, "fit", "tuner_fit"),
    }
    originals[(ray.tune.Tuner, "__init__")] = tuner_init
    ray.tune.Tuner.__init__ = init_with_callback
    S._bench_original_driver = S.__dict__.get("_bench_original_driver", S.train_driver_fn)
    originals[(S, "train_driver_fn")] = S.train_driver_fn
    S.train_driver_fn = _timed_driver
    ray_was_up = ray.is_initialized()
    sampler = CpuSampler().start()
    name = f"overhead-{label}-{time.strftime('%H%M%S')}"
    t0 = time.time()
    try:
        outcome = R.run_sweep(SweepRequest(spec, name=name, storage=storage, trials=trials, max_epochs=max_epochs,
                                           tracking_uri=tracking_uri, track=track, num_cpus=num_cpus, verbose=0))
    finally:
        t1 = time.time()
        cpu = sampler.stop()
        for (owner, attr), original in originals.items():
            setattr(owner, attr, original)
    root = outcome.root
    concurrency = runtime.check_resources(outcome_spec(spec, trials, max_epochs), runtime.cluster_resources())
    trials_out = []
    for row in outcome.trials:
        tid = row["trial_id"]
        trials_out.append({"trial_id": tid, "status": row["status"], "epochs": row["epochs"],
                           "params": row["params"], "metric": row.get("knn_top1"),
                           "driver": store.get(tid, {}), "worker": read_events(root, tid),
                           "results_json": read_result_json(root, tid)})
    return {"label": label, "name": name, "root": root, "wall": [t0, t1], "phases": phases,
            "ray_was_up": ray_was_up, "concurrency": concurrency, "cpu_s": cpu, "trials": trials_out,
            "best": (outcome.best or {}).get("knn_top1"), "tracking": outcome.tracking is not None}


def outcome_spec(spec, trials, max_epochs):
    changes = {}
    if trials is not None:
        changes["trials"] = trials
    if max_epochs is not None:
        changes["max_epochs"] = max_epochs
    return dataclasses.replace(spec, **changes) if changes else spec


def read_events(root: str, trial_id: str) -> list[dict]:
    path = Path(root) / EVENTS_DIR / f"{trial_id}.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def read_result_json(root: str, trial_id: str) -> list[dict]:
    rows = []
    for f in Path(root).glob(f"*_{trial_id}_*/result.json"):
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows.append({k: r.get(k) for k in ("epoch", "train_time_s", "knn_time_s", "epoch_time_s",
                                               "time_this_iter_s", "time_total_s", "timestamp")})
    return rows


# =============================================================================================
# Analysis
# =============================================================================================
CATS = ["start-up", "data+model", "train", "kNN", "ckpt write", "report", "other", "tail"]
IDLE = ["idle: Tune set-up before the first trial", "idle: slots without a trial (fewer trials than slots left)",
        "idle: rest of the driver (validation, study, summary)"]


def analyse_trial(t: dict) -> dict | None:
    d = t["driver"]
    if "start" not in d or "end" not in d or not d["results"]:
        return None
    start, end = d["start"], d["end"]
    res = [r for r in d["results"] if r.get("epoch") is not None]
    ev = t["worker"]
    inits = [e for e in ev if e["ev"] == "init"]
    ckpts = [e for e in ev if e["ev"] == "checkpoint"]
    reports = [e for e in ev if e["ev"] == "report"]
    epochs_seen = {r["epoch"] for r in res}
    train = sum(r["train_time_s"] or 0 for r in res)
    knn = sum(r["knn_time_s"] or 0 for r in res)
    # only what belongs to the epochs Tune received (a stopped trial may have started another)
    n = len(res)
    reports_n = reports[:n]
    ckpt = sum(e["t1"] - e["t0"] for e in ckpts if e["epoch"] in epochs_seen)
    report = sum(e["t1"] - e["t0"] for e in reports_n)
    if inits and reports_n:
        init0, init1 = inits[0]["t0"], inits[0]["t1"]
        last_report = reports_n[-1]["t1"]
    else:  # no worker stamps: estimate from the driver's receipt times
        first = res[0]
        init1 = first["t"] - (first["epoch_time_s"] or 0)
        init0 = init1
        last_report = res[-1]["t"]
    startup = max(0.0, init0 - start)
    driver_start = next((e["t"] for e in ev if e["ev"] == "driver_start"), start)
    actor_start = max(0.0, driver_start - start)
    data_model = max(0.0, init1 - init0)
    loop_span = max(0.0, last_report - init1)
    other = max(0.0, loop_span - train - knn - ckpt - report)
    tail = max(0.0, end - last_report)
    total = end - start
    parts = {"start-up": startup, "data+model": data_model, "train": train, "kNN": knn, "ckpt write": ckpt,
             "report": report, "other": other, "tail": tail}
    return {"trial_id": t["trial_id"], "status": t["status"], "epochs": t["epochs"], "total": total,
            "parts": parts, "start": start, "end": end, "params": t["params"], "metric": t["metric"],
            "residual": total - sum(parts.values()), "actor_start": actor_start}


def analyse(run: dict) -> dict:
    trials = [a for a in (analyse_trial(t) for t in run["trials"]) if a is not None]
    t0, t1 = run["wall"]
    wall = t1 - t0
    c = run["concurrency"]
    slots = c * wall
    phase = {}
    for p in run["phases"]:
        phase[p["phase"]] = phase.get(p["phase"], 0.0) + p["t1"] - p["t0"]
    overall = {k: sum(a["parts"][k] for a in trials) for k in CATS}
    busy = sum(a["total"] for a in trials)
    ray_start = c * phase.get("ray_start", 0.0)
    tracking = c * phase.get("tracking", 0.0)
    fit = [p for p in run["phases"] if p["phase"] == "tuner_fit"]
    if trials and fit:
        first, last = min(a["start"] for a in trials), max(a["end"] for a in trials)
        setup = c * max(0.0, first - fit[0]["t0"])
        empty = max(0.0, c * (last - first) - busy)
    else:
        setup = empty = 0.0
    other = max(0.0, slots - busy - ray_start - tracking - setup - empty)
    overall.update({"Ray start-up": ray_start, "tracking (check, open, final pass)": tracking,
                    IDLE[0]: setup, IDLE[1]: empty, IDLE[2]: other})
    return {"label": run["label"], "wall": wall, "concurrency": c, "slots": slots, "trials": trials,
            "overall": overall, "phase": phase, "busy": busy, "cpu_s": run["cpu_s"], "best": run.get("best")}


def pct(x: float, total: float) -> str:
    return f"{100 * x / total:.1f}" if total > 0 else "-"


def print_report(runs: list[dict], meta: dict) -> str:
    lines: list[str] = []
    p = lines.append
    analyses = [analyse(r) for r in runs]
    p(f"machine: {meta['machine']}")
    p(f"space: {meta['space']} (search trials {meta['trials']}, max_epochs {meta['max_epochs']}); "
      f"runs: {meta.get('variants', 'before,after')}")
    p(f"  after = {meta['after_desc']}")
    if "grid-end" in meta.get("variants", ""):
        p("  grid-end = grid over the space's first categorical key (other keys fixed mid-range), "
          "knn_every = checkpoint_every = max_epochs (kNN and checkpoint at the last epoch only; "
          "TUNE_DISABLE_STRICT_METRIC_CHECKING=1, see docs/performance-sweeps.md)")
    if "import_s" in meta:
        p(f"  fresh-interpreter import of torch + Ray Train + the loop: {meta['import_s']:.1f} s; "
          f"tracking store created before timing in {meta.get('tracking_store_create_s', 0):.1f} s")
    p("")
    p("Per trial (wall seconds from Tune's trial start to its end; % of that)")
    p("")
    p("| run | trial | status | epochs | strategy | trial s | " + " | ".join(f"{c} %" for c in CATS) + " |")
    p("|" + "---|" * (6 + len(CATS)))
    for a in analyses:
        for tr in a["trials"]:
            strat = tr["params"].get("attraction_strategy", "")
            p(f"| {a['label']} | {tr['trial_id']} | {tr['status']} | {tr['epochs']} | {strat} | {tr['total']:.1f} | "
              + " | ".join(pct(tr["parts"][c], tr["total"]) for c in CATS) + " |")
    p("")
    p("Per trial, seconds (mean over the run's trials)")
    p("")
    p("| run | trials | trial s | " + " | ".join(f"{c} s" for c in CATS) + " | train % (sum/sum) | trials >= 60 s with train >= 70 % |")
    p("|" + "---|" * (3 + len(CATS) + 2))
    for a in analyses:
        ts = a["trials"]
        if not ts:
            continue
        long = [t for t in ts if t["total"] >= 60]
        ok = sum(t["parts"]["train"] / t["total"] >= 0.70 for t in long)
        tot = sum(t["total"] for t in ts)
        p(f"| {a['label']} | {len(ts)} | {statistics.mean(t['total'] for t in ts):.1f} | "
          + " | ".join(f"{statistics.mean(t['parts'][c] for t in ts):.1f}" for c in CATS)
          + f" | {pct(sum(t['parts']['train'] for t in ts), tot)} | {ok}/{len(long)} |")
    p("")
    p("Overall (slot-seconds = concurrent-trial slots x sweep wall time)")
    p("")
    head = "| category | " + " | ".join(f"{a['label']} s | {a['label']} %" for a in analyses) + " |"
    p(head)
    p("|---|" + "---|---|" * len(analyses))
    cats = CATS + ["Ray start-up", "tracking (check, open, final pass)"] + IDLE
    for c in cats:
        p(f"| {c} | " + " | ".join(f"{a['overall'][c]:.1f} | {pct(a['overall'][c], a['slots'])}" for a in analyses) + " |")
    p("| **total slot-seconds** | " + " | ".join(f"{a['slots']:.1f} | 100" for a in analyses) + " |")
    p("| sweep wall time s (slots) | " + " | ".join(f"{a['wall']:.1f} ({a['concurrency']}) | " for a in analyses) + " |")
    p("| best knn_top1 | " + " | ".join(f"{a['best'] if a['best'] is None else round(a['best'], 2)} | " for a in analyses) + " |")
    p("")
    p("Ray runtime: " + "; ".join(f"{r['label']}: {'reused' if r.get('ray_was_up') else 'started by run_sweep'}"
                                  for r in runs))
    p("Driver phases (wall s): " + "; ".join(
        f"{a['label']}: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(a["phase"].items())) for a in analyses))
    p("")
    p("CPU seconds by process role during the sweep (2 cores: what the overhead takes from training)")
    p("")
    roles = sorted({r for a in analyses for r in a["cpu_s"]})
    p("| role | " + " | ".join(f"{a['label']} CPU-s | {a['label']} %" for a in analyses) + " |")
    p("|---|" + "---|---|" * len(analyses))
    for r in roles:
        p(f"| {r} | " + " | ".join(
            f"{a['cpu_s'].get(r, 0):.1f} | {pct(a['cpu_s'].get(r, 0), sum(a['cpu_s'].values()))}" for a in analyses) + " |")
    p("| total | " + " | ".join(f"{sum(a['cpu_s'].values()):.1f} | 100" for a in analyses) + " |")
    p("")
    p(projections(analyses, meta))
    text = "\n".join(lines)
    print(text)
    return text


def projections(analyses: list[dict], meta: dict) -> str:
    """Arithmetic on the measured parts of the first run: what each proposed platform change leaves.

    Nothing here is measured as a whole; each row removes or scales parts that were measured:
    * in-process trial (workers == 1): the start-up becomes the Tune actor start (measured:
      Tune's trial start -> the trial function runs) + importing torch and the loop in that actor
      (measured once: `import_s`, a fresh interpreter on this machine at that moment) + data/model;
      the tail (worker-group teardown) goes;
    * kNN only at ASHA rungs and the last epoch: kNN time x (evaluated epochs / epochs);
    * kNN monitor on half the memory bank: kNN time x (bank/2 + test) / (bank + test);
    * checkpoint asynchronously / only at the end: checkpoint write + report copy leave the path.
    """
    a = analyses[0]
    ts = a["trials"]
    if not ts:
        return ""
    tot = sum(t["total"] for t in ts)
    part = {c: sum(t["parts"][c] for t in ts) for c in CATS}
    actor = sum(t.get("actor_start", 0.0) for t in ts)
    imports = meta.get("import_s", 0.0) * len(ts)
    inproc = part["start-up"] - actor - imports + part["tail"]
    knn_rungs = part["kNN"] * (1 - meta.get("knn_rung_share", 1.0))
    bank, test = meta.get("knn_bank", 0), meta.get("knn_test", 0)
    knn_half = part["kNN"] * (1 - (bank / 2 + test) / (bank + test)) if bank + test else 0.0
    ckpt = part["ckpt write"] + part["report"]
    rows = []

    def row(name, removed):
        rest = tot - removed
        rows.append(f"| {name} | {rest / len(ts):.1f} | {pct(part['train'], rest)} |")

    row("as measured (run 1)", 0.0)
    row("checkpoint asynchronously / only at the end", ckpt)
    row(f"in-process trial for workers=1 (start-up = actor start + imports {meta.get('import_s', 0):.1f} s)", inproc)
    row(f"kNN only at ASHA rungs + last epoch ({meta.get('knn_rung_desc', '')})", knn_rungs)
    row(f"kNN monitor on half the memory bank ({bank} -> {bank // 2} + {test} test images)", knn_half)
    row("in-process trial + half-bank kNN", inproc + knn_half)
    row("all of the above", ckpt + inproc + knn_rungs + knn_half)
    return ("Projection from the measured parts of the first run (arithmetic on measured parts, not a measured "
            "run)\n\n| change | trial s (mean) | train % |\n|---|---|---|\n" + "\n".join(rows))


def import_seconds() -> float:
    """Wall seconds for a fresh interpreter to import torch, Ray Train and the loop (right now)."""
    import subprocess

    t = time.time()
    subprocess.run([sys.executable, "-c", "import torch, ray.train.torch, trainables.loop"], cwd=str(ROOT),
                   check=True, env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'platform'}"})
    return time.time() - t


def knn_meta(spec) -> dict:
    """Sizes of the kNN monitor and the share of epochs that ASHA's rungs (+ last) would evaluate."""
    import math

    from leoclr_platform.spaces import trial_config
    from trainables.data import load_data

    cfg = trial_config(spec, {})
    data = load_data(cfg.dataset, root=cfg.data_root, image_size=cfg.image_size, photo_patches=cfg.photo_patches)
    epochs = spec.max_epochs
    rungs = set()
    if spec.mode == "search":
        max_t = epochs + 1
        n = int(math.log(max_t / spec.grace_period) / math.log(spec.reduction_factor) + 1)
        rungs = {int(math.ceil(spec.grace_period * spec.reduction_factor ** k)) for k in range(n)}
    evaluated = {e for e in rungs if e <= epochs} | {epochs}
    return {"knn_bank": len(data.memory), "knn_test": len(data.test),
            "knn_rung_share": len(evaluated) / epochs,
            "knn_rung_desc": f"epochs {sorted(evaluated)} of {epochs}"}


def grid_end_spec(spec):
    """A grid sweep made from `spec`: its first categorical key as the grid, the other searched keys
    fixed at the middle of their range (log scale where the range is), kNN and checkpoint only at
    the last epoch (allowed in grid mode: nothing stops a grid trial early)."""
    import math

    from leoclr_platform.spaces import ParamSpec

    grid = next(p for p in spec.params if p.categorical and not p.when)
    base = dict(spec.base)
    for p in spec.params:
        if p is grid or p.when:
            continue
        if p.categorical:
            base[p.name] = p.args[0]
        elif p.kind == "one_minus_log":
            base[p.name] = round(1 - math.sqrt((1 - p.args[0]) * (1 - p.args[1])), 4)
        elif p.kind in ("loguniform", "log_int"):
            v = math.sqrt(p.args[0] * p.args[1])
            base[p.name] = round(v) if p.kind == "log_int" else round(v, 4)
        else:
            v = (p.args[0] + p.args[1]) / 2
            base[p.name] = round(v) if p.kind == "int" else v
    base.update({"knn_every": spec.max_epochs, "checkpoint_every": spec.max_epochs})
    return dataclasses.replace(spec, mode="grid", params=[ParamSpec(grid.name, "grid", list(grid.args))],
                               base=base, name=f"{spec.name}_grid_end")


# =============================================================================================
def machine() -> str:
    model = cpu_model()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"{model}, {os.cpu_count()} cores (shared: load average {load[0]:.1f} at start), "
            f"Linux {platform.release()}, Python {platform.python_version()}")


def parse_sets(items: list[str]) -> dict:
    from trainables.config import parse_overrides

    return parse_overrides(items)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="demo", help="search space (shipped name or path)")
    p.add_argument("--trials", type=int, default=2, help="trials per sweep (demo ships 4)")
    p.add_argument("--max-epochs", type=int, default=None, help="override budget.max_epochs")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base key for both sweeps")
    p.add_argument("--after-set", dest="after_sets", action="append", default=None, metavar="KEY=VALUE",
                   help="extra base overrides of the 'after' sweep (e.g. checkpoint_every=2)")
    p.add_argument("--variants", default="before,after",
                   help="comma list of: before, after, grid-end (a grid sweep over the space's first "
                        "categorical key, kNN + checkpoint only at the last epoch); default before,after")
    p.add_argument("--no-track", action="store_true", help="no MLflow tracking")
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--out", default=str(RESULTS / "sweep_overhead.json"))
    p.add_argument("--keep", action="store_true", help="keep the temporary storage folder")
    p.add_argument("--from-json", default=None, help="re-print the tables of a saved run")
    args = p.parse_args(argv)

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        print_report(saved["runs"], saved["meta"])
        return

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from leoclr_platform.spaces import load_space, validate_space

    spec = load_space(args.space)
    if args.max_epochs:
        spec = outcome_spec(spec, None, args.max_epochs)
    if args.sets:
        spec = dataclasses.replace(spec, base={**spec.base, **parse_sets(args.sets)})
    validate_space(spec)
    max_epochs = spec.max_epochs
    after_sets = args.after_sets or []
    after_spec = dataclasses.replace(spec, base={**spec.base, **parse_sets(after_sets)}, launcher="auto")
    validate_space(after_spec)
    meta = {"machine": machine(), "space": args.space, "variants": args.variants, **knn_meta(spec),
            "import_s": import_seconds(), "trials": args.trials, "max_epochs": max_epochs,
            "sets": args.sets, "after_sets": after_sets,
            "after_desc": ("one-worker trials train in the Tune trial (launcher: auto), Ray runtime reused"
                           + "".join(f", {x}" for x in after_sets)),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = tempfile.mkdtemp(prefix="leoclr_overhead_")
    storage = os.path.join(tmp, "runs")
    tracking_uri = f"sqlite:///{os.path.join(tmp, 'mlflow.db')}"
    os.environ.setdefault("LEOCLR_HOME", tmp)  # MLflow artifacts of the temporary store stay in tmp
    if not args.no_track:  # a user's store exists after the first sweep: create it outside the timing
        from leoclr_platform import tracking as T

        t = time.time()
        T.check_store(T.resolve_tracking_uri(tracking_uri))
        meta["tracking_store_create_s"] = time.time() - t
    runs = []
    t_all = time.time()
    try:
        specs = {"before": dataclasses.replace(spec, launcher="ray_train"), "after": after_spec,
                 "grid-end": grid_end_spec(spec)}
        for label in [v.strip() for v in args.variants.split(",") if v.strip()]:
            s = specs[label]
            validate_space(s)
            trials = args.trials if s.mode == "search" else None
            print(f"\n=== {label}: {s.name} ({s.mode}), {trials or s.total_trials()} trials ===", flush=True)
            runs.append(run_instrumented(label, s, storage=storage, tracking_uri=tracking_uri,
                                         trials=trials, max_epochs=None, track=not args.no_track,
                                         num_cpus=args.num_cpus))
        import ray

        t = time.time()
        ray.shutdown()
        meta["ray_shutdown_s"] = time.time() - t
    finally:
        meta["total_wall_s"] = time.time() - t_all
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept: {tmp}")
    print()
    text = print_report(runs, meta)
    print(f"\nbenchmark wall time {meta['total_wall_s']:.0f} s (ray.shutdown {meta.get('ray_shutdown_s', 0):.1f} s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "runs": runs, "report": text}, indent=1, default=str))
    print(f"raw timings: {out}")


if __name__ == "__main__":
    main()
