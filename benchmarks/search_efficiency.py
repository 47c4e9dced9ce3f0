"""Search efficiency on photo_patches: TPE+ASHA vs random search vs the full grid, at equal compute.

Usage:
    .venv/bin/python benchmarks/search_efficiency.py            # build the table if missing, then replay
    .venv/bin/python benchmarks/search_efficiency.py build      # (re)build / resume the table only
    .venv/bin/python benchmarks/search_efficiency.py replay     # replay searches on the cached table
    .venv/bin/python benchmarks/search_efficiency.py replay --replays 40 --workers 2

Method (the tabular benchmark of HPOBench / NAS-Bench): running dozens of real sweeps is
impossible on a 2-core CPU, so

(a) ``build``: every cell of a grid over the searched space is trained ONCE, for every epoch up to
    ``max_epochs``, with ``trainables.loop.run_training`` called directly in this process
    (no Ray, ``torch.set_num_threads(1)``), and the kNN top-1 after EVERY epoch and the CPU
    seconds of every epoch (``time.process_time`` between two reports: steps + kNN monitor +
    checkpoint; the first epoch also carries the few-ms data load and model build) are cached in
    ``benchmarks/results/search_table.json`` with the settings and the machine. Each training seed
    is one full pass over the grid (seeds are the outer loop); the file is rewritten after every
    run, so an interrupted build resumes where it stopped.

(b) ``replay``: searches are replayed against the table many times. A replayed trial "trains"
    by reading its cell's curve epoch by epoch and paying the table's CPU seconds:

    * TPE: the platform's own sampler (``leoclr_platform.spaces.make_sampler``: ``TPESampler``
      seeded with ``seeds[0]``, here the replay index), asked through the platform's own
      define-by-run function (``leoclr_platform.spaces.define_by_run``) and ``decode_sampled``, of
      a platform ``SweepSpec`` over the same keys (parsed and validated by the platform), either
      categorical over the grid values or the real distributions of ``demo.yaml`` (log-uniform
      temperature, ``one_minus_log`` momentum) snapped to the nearest grid value (in log space)
      before the table is read; TPE variants (``n_startup_trials``, ``multivariate``) build a
      ``TPESampler`` with those options;
    * random search: ``optuna.samplers.RandomSampler`` through the same function;
    * ASHA: Ray's own ``AsyncHyperBandScheduler`` (``ASHAScheduler``), constructed as the
      platform's ``sweep/tuner.py`` constructs it (``time_attr="epoch"``, ``max_t = max_epochs + 1``,
      so trials end by themselves; ``grace_period``, ``reduction_factor``) and driven with Tune's
      calls (``on_trial_add``, ``on_trial_result`` per epoch, ``on_trial_complete`` with the last
      result); nothing of it is re-implemented here;
    * Tune's OptunaSearch semantics as the platform's ``SafeOptunaSearch`` has them: every epoch's
      value is reported to the Optuna trial as an intermediate value, a trial stopped by ASHA is
      told to the study as COMPLETE with its last reported value; a new trial is asked when a
      worker frees up; with ``--workers`` > 1 the replay is an event simulation of that many
      concurrent trials (TPE then sees only finished trials, as in Tune with
      ``max_concurrent_trials``). A configuration proposed twice is trained (and paid) twice, as
      in the platform (the "repeats" column);
    * full grid: every cell to ``max_epochs`` without early stopping, in the platform's order
      (``SweepSpec.cells()``, file order) and in random order (averaged over replays).

    Where the kNN monitor runs: by default every trial evaluates it every epoch (``knn_every: 1``,
    the table's setting). ``--grid-knn-end`` lets grid trials evaluate it at their last epoch only
    (``knn_every = max_epochs``), ``--search-knn-rungs`` lets search trials evaluate it only at
    ASHA's rung epochs (taken from Ray's bracket) and their last epoch; the epochs without it cost
    their CPU seconds minus the monitor's share (median ``knn_time_s / wall_s`` of the table's
    uncontended epochs). ASHA's and TPE's decisions do not change: they only read those epochs.

    Only training seeds whose runs cover every cell are used (an interrupted build leaves a
    partial seed, which the replay names and leaves out).

    Every trial of a search trains with the same training seed (the platform's search mode:
    ``seeds[0]`` seeds TPE and every trial), so replay r reads the table of training seed
    ``r mod n_seeds``, and its grid reference is the grid run with that same training seed:
    best = max over cells of the final-epoch kNN top-1, target = best - 1 point, budget in
    multiples of that grid's CPU seconds. Compute = the CPU seconds of the epochs the trials ran
    (a trial stopped by ASHA pays only its epochs); ``--trial-overhead-s`` adds a fixed cost per
    trial (e.g. the measured worker-group start of a real sweep, see sweep_overhead.py).

Outputs: tables on stdout, ``benchmarks/results/search_efficiency.json`` (curves, summary) and
``benchmarks/results/search_efficiency.png`` (best objective vs compute, mean and 10-90 % band).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "platform"))

from machine import cpu_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TABLE = RESULTS / "search_table.json"
OUT_JSON = RESULTS / "search_efficiency.json"
OUT_PNG = RESULTS / "search_efficiency.png"

# The table's setting: demo.yaml's base (photo_patches 32 px, 32 train / 16 test patches per
# class, batch 64, queue 512, lr 0.06 per 256, no blur, kNN k=200) with the small CNN instead of
# ResNet-18 so that 30 cells x 8 epochs x 3 seeds take about 38 CPU-minutes (~25 CPU-s a cell).
BASE = {
    "dataset": "photo_patches",
    "photo_patches": {"train_per_class": 32, "test_per_class": 16},
    "image_size": 32,
    "backbone": "small_cnn",
    "batch_size": 64,
    "queue_size": 512,
    "lr": 0.06,
    "blur_prob": 0.0,
    "knn_k": 200,
    "device": "cpu",
    "checkpoint_every": 1000,  # only the final epoch writes one (into a temp dir, then deleted)
}
GRID = {
    "attraction_strategy": ["moco_v2", "leoclr"],
    "temperature": [0.07, 0.1, 0.2, 0.3, 0.5],
    "key_momentum": [0.9, 0.99, 0.996],
}
MAX_EPOCHS = 8
SEEDS = [0, 1, 2]
METRIC = "knn_top1"


# =============================================================================================
# (a) the table
# =============================================================================================
def grid_cells() -> list[dict]:
    keys = list(GRID)
    return [dict(zip(keys, values)) for values in itertools.product(*(GRID[k] for k in keys))]


def cell_key(cell: dict) -> str:
    return "|".join(f"{k}={cell[k]}" for k in GRID)


def machine_info() -> dict:
    import torch

    model = cpu_model()
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform(), "note": "shared 2-core machine: other jobs ran meanwhile; "
            "CPU seconds (process_time) are what is charged, not wall time"}


def load_table() -> dict | None:
    if TABLE.exists():
        return json.loads(TABLE.read_text())
    return None


def save_table(table: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = TABLE.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, TABLE)


def table_settings() -> dict:
    return {"base": BASE, "grid": GRID, "max_epochs": MAX_EPOCHS, "seeds": SEEDS, "metric": METRIC,
            "cpu_s": "time.process_time() between consecutive epoch reports (steps + kNN + checkpoint)"}


def code_info(note: str | None) -> dict:
    """Which engine built the table: the trainables package's path, a hash of its sources, git."""
    import hashlib
    import subprocess

    import trainables

    pkg = Path(trainables.__file__).parent
    digest = hashlib.sha256()
    for f in sorted(pkg.glob("*.py")):
        digest.update(f.name.encode() + f.read_bytes())
    info = {"trainables": str(pkg), "sha256": digest.hexdigest()[:16], "note": note}
    try:
        info["git"] = subprocess.run(["git", "-C", str(pkg), "describe", "--always", "--dirty"], capture_output=True,
                                     text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git"] = None
    return info


def build_table(seeds: list[int], limit_s: float | None = None, code_note: str | None = None) -> dict:
    import torch

    torch.set_num_threads(1)
    import trainables.loop
    from trainables.config import TrainConfig

    # engines from before the rename (e.g. the 24aaf9b snapshot of --trainables) name it train_fn_per_worker
    run_training = getattr(trainables.loop, "run_training", None) or trainables.loop.train_fn_per_worker

    table = load_table()
    settings = table_settings()
    if table is not None and {k: table["settings"][k] for k in ("base", "grid", "max_epochs", "metric")} != \
            {k: settings[k] for k in ("base", "grid", "max_epochs", "metric")}:
        raise SystemExit(f"{TABLE} was built with other settings; move it away to rebuild")
    if table is None:
        table = {"settings": settings, "machine": machine_info(), "code": code_info(code_note), "runs": [],
                 "build_wall_s": 0.0,
                 "build_cpu_s": 0.0, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if table.get("code", {}).get("sha256") != code_info(None)["sha256"]:
        raise SystemExit(f"{TABLE} was built by another version of trainables/ ({table.get('code')}); "
                         "build with that code (--trainables DIR) or move the table away")
    done = {(r["cell_key"], r["seed"]) for r in table["runs"]}
    todo = [(s, c) for s in seeds for c in grid_cells() if (cell_key(c), s) not in done]
    print(f"table: {len(done)} runs cached, {len(todo)} to train ({MAX_EPOCHS} epochs each)", flush=True)
    t_start = time.time()
    for i, (seed, cell) in enumerate(todo):
        if limit_s is not None and time.time() - t_start > limit_s:
            print(f"stopping after {limit_s:.0f} s (resume by running build again)")
            break
        cfg = TrainConfig.from_dict({**BASE, **cell, "epochs": MAX_EPOCHS, "seed": seed})
        epochs: list[dict] = []
        wall0, cpu0 = time.perf_counter(), time.process_time()
        marks = [(wall0, cpu0)]

        def report(metrics, _ckpt, epochs=epochs, marks=marks):
            wall, cpu = time.perf_counter(), time.process_time()
            epochs.append({
                "epoch": int(metrics["epoch"]), METRIC: metrics[METRIC], "knn_top5": metrics.get("knn_top5"),
                "loss": metrics["loss"], "cpu_s": cpu - marks[-1][1], "wall_s": wall - marks[-1][0],
                "train_time_s": metrics["train_time_s"], "knn_time_s": metrics.get("knn_time_s"),
            })
            marks.append((wall, cpu))

        run_training(cfg, report, keep_checkpoints=0)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        table["runs"].append({"cell": cell, "cell_key": cell_key(cell), "seed": seed, "epochs": epochs,
                              "cpu_s": cpu, "wall_s": wall})
        table["build_wall_s"] += wall
        table["build_cpu_s"] += cpu
        table["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        save_table(table)
        curve = " ".join(f"{e[METRIC]:.1f}" for e in epochs)
        print(f"[{i + 1}/{len(todo)}] seed {seed} {cell_key(cell)}: {curve}  ({cpu:.1f} CPU-s, {wall:.1f} s)",
              flush=True)
    return table


def merge_table(other_path: Path) -> None:
    table, other = load_table(), json.loads(other_path.read_text())
    if table is None:
        save_table(other)
        return
    keys = ("base", "grid", "max_epochs", "metric")
    if {k: table["settings"][k] for k in keys} != {k: other["settings"][k] for k in keys}:
        raise SystemExit(f"{other_path}: built with other settings than {TABLE}")
    if table.get("code", {}).get("sha256") != other.get("code", {}).get("sha256"):
        raise SystemExit(f"{other_path}: built by another version of trainables/ than {TABLE}")
    done = {(r["cell_key"], r["seed"]) for r in table["runs"]}
    new = [r for r in other["runs"] if (r["cell_key"], r["seed"]) not in done]
    table["runs"] += new
    table["build_wall_s"] = table.get("build_wall_s", 0) + other.get("build_wall_s", 0)
    table["build_cpu_s"] = sum(r["cpu_s"] for r in table["runs"])
    table.setdefault("merged", []).append({"from": str(other_path), "runs": len(new)})
    save_table(table)
    print(f"merged {len(new)} runs from {other_path} into {TABLE}")


# =============================================================================================
# (b) the replay
# =============================================================================================
class Table:
    """curves[seed][cell_key] = list of (value, cpu_s) per epoch; only training seeds whose runs
    cover every cell of the grid, each with epochs 1..max_epochs, are kept (``self.seeds``)."""

    def __init__(self, data: dict, verbose: bool = False):
        self.data = data
        self.max_epochs = data["settings"]["max_epochs"]
        if data["settings"]["grid"] != GRID:
            raise SystemExit(f"{TABLE}: built over another grid than this script's GRID")
        self.cells = grid_cells()
        keys = {cell_key(c) for c in self.cells}
        all_seeds = sorted({r["seed"] for r in data["runs"]})
        self.curves: dict[int, dict[str, list[tuple[float, float]]]] = {s: {} for s in all_seeds}
        for r in data["runs"]:
            epochs = [e["epoch"] for e in r["epochs"]]
            if r["cell_key"] not in keys or epochs != list(range(1, self.max_epochs + 1)):
                raise SystemExit(f"{TABLE}: run seed {r['seed']} {r['cell_key']} has epochs {epochs} "
                                 f"(expected 1..{self.max_epochs} of a grid cell)")
            if any(not (e[METRIC] is not None and math.isfinite(e[METRIC]) and e["cpu_s"] > 0) for e in r["epochs"]):
                raise SystemExit(f"{TABLE}: run seed {r['seed']} {r['cell_key']} has a missing metric or cpu_s")
            self.curves[r["seed"]][r["cell_key"]] = [(e[METRIC], e["cpu_s"]) for e in r["epochs"]]
        complete = [s for s in all_seeds if set(self.curves[s]) == keys]
        self.incomplete = {s: len(self.curves[s]) for s in all_seeds if s not in complete}
        if not complete:
            raise SystemExit(f"{TABLE}: no training seed has all {len(self.cells)} cells yet; run build")
        if self.incomplete and verbose:
            print("table: left out incomplete training seed(s) "
                  + ", ".join(f"{s} ({n}/{len(self.cells)} cells)" for s, n in self.incomplete.items()))
        self.seeds = complete
        self.curves = {s: self.curves[s] for s in complete}

    def use_order(self, cells: list[dict]) -> None:
        """Grid order = the platform's (``SweepSpec.cells()``); must be the same set of cells."""
        cells = [{k: c[k] for k in GRID} for c in cells]
        if sorted(map(cell_key, cells)) != sorted(map(cell_key, self.cells)):
            raise SystemExit("the platform's grid cells differ from the table's")
        self.cells = cells

    def knn_fraction(self) -> tuple[float, int]:
        """Share of an epoch's CPU seconds spent in the kNN monitor: median of knn_time_s / wall_s
        over the epochs that ran without contention (cpu_s / wall_s > 0.9: wall ~ CPU time there;
        the loop times kNN in wall seconds). Returns (fraction, number of epochs it is based on)."""
        shares = [e["knn_time_s"] / e["wall_s"] for r in self.data["runs"] if r["seed"] in self.seeds
                  for e in r["epochs"] if e.get("knn_time_s") and e["wall_s"] > 0 and e["cpu_s"] / e["wall_s"] > 0.9]
        if len(shares) < 10:
            raise SystemExit(f"--grid-knn-end: only {len(shares)} uncontended epochs in the table to estimate "
                             "the kNN share from")
        return statistics.median(shares), len(shares)

    def epoch_cost(self, seed: int, key: str, i: int, knn_end: float | None = None) -> float:
        """CPU seconds of epoch i (0-based) of a cell; with knn_end = f, the kNN monitor (a share f
        of the epoch) is left out of every epoch but the last (a grid with knn_every = max_epochs)."""
        cpu = self.curves[seed][key][i][1]
        if knn_end is not None and i < self.max_epochs - 1:
            return cpu * (1.0 - knn_end)
        return cpu

    def grid_cpu(self, seed: int, knn_end: float | None = None) -> float:
        return sum(self.epoch_cost(seed, k, i, knn_end) for k in self.curves[seed] for i in range(self.max_epochs))

    def grid_best(self, seed: int) -> float:
        return max(curve[-1][0] for curve in self.curves[seed].values())


class ASHA:
    """Ray's own ``AsyncHyperBandScheduler``, built exactly as the platform builds it
    (``leoclr_platform.sweep.tuner``: ``ASHAScheduler(time_attr="epoch", max_t=max_epochs + 1,
    grace_period, reduction_factor)``, metric and mode set by Tune through
    ``set_search_properties``) and driven with the calls Tune makes: ``on_trial_add`` when a trial
    starts, ``on_trial_result`` for every reported epoch, ``on_trial_complete`` with the last
    result when the trial ends (finished, or stopped by the scheduler)."""

    def __init__(self, grace_period: int, reduction_factor: float, max_t: int):
        from ray.tune.schedulers import ASHAScheduler, TrialScheduler

        self.scheduler = ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=grace_period,
                                       reduction_factor=reduction_factor)
        if not self.scheduler.set_search_properties(METRIC, "max"):
            raise RuntimeError("ASHAScheduler refused the metric/mode")
        self.STOP, self.CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE
        self.trials: dict[int, object] = {}

    def judged_epochs(self, max_epochs: int) -> set[int]:
        """The epochs at which Ray's bracket judges a trial (its rung milestones, taken from the
        scheduler itself), those a trial can reach."""
        rungs = self.scheduler._brackets[0]._rungs  # [(milestone, recorded), ...], Ray's own
        return {math.ceil(m) for m, _ in rungs if math.ceil(m) <= max_epochs}

    def add(self, trial_id: int) -> None:
        import types

        self.trials[trial_id] = types.SimpleNamespace(trial_id=f"t{trial_id:05d}")
        self.scheduler.on_trial_add(None, self.trials[trial_id])

    def on_result(self, trial_id: int, epoch: int, value: float) -> bool:
        """True = STOP (the platform passes max_t = max_epochs + 1: a trial ends by itself)."""
        action = self.scheduler.on_trial_result(None, self.trials[trial_id], {"epoch": epoch, METRIC: value})
        if action not in (self.STOP, self.CONTINUE):  # pragma: no cover - ASHA never pauses
            raise RuntimeError(f"unexpected scheduler decision {action!r}")
        return action == self.STOP

    def on_complete(self, trial_id: int, epoch: int, value: float) -> None:
        self.scheduler.on_trial_complete(None, self.trials.pop(trial_id), {"epoch": epoch, METRIC: value})


def make_spec(kind: str):
    """The searched space as a platform SweepSpec (parsed and validated by the platform)."""
    from leoclr_platform.spaces import parse_space, validate_space

    if kind == "categorical":
        space = "\n".join(f"  {k}: {{choice: {json.dumps(v)}}}" for k, v in GRID.items())
    else:  # demo.yaml's distributions over the grid's range, snapped to the grid values
        t, m = GRID["temperature"], GRID["key_momentum"]
        space = (f"  attraction_strategy: {{choice: {json.dumps(GRID['attraction_strategy'])}}}\n"
                 f"  temperature: {{loguniform: [{min(t)}, {max(t)}]}}\n"
                 f"  key_momentum: {{one_minus_log: [{min(m)}, {max(m)}]}}")
    text = (f"name: replay_{kind}\nmode: search\nbase: {json.dumps(BASE)}\nspace:\n{space}\n"
            f"objective: {{metric: {METRIC}, mode: max}}\n"
            f"budget: {{trials: 1000, max_epochs: {MAX_EPOCHS}, grace_period: 1, reduction_factor: 2}}\n"
            "seeds: [0]\n")
    spec = parse_space(text, source=f"replay_{kind}.yaml")
    validate_space(spec, check_data=False)
    return spec


def snap(cell: dict) -> dict:
    """Nearest grid value of every numeric key (log scale for temperature, log(1 - m) for m)."""
    out = dict(cell)
    t = cell["temperature"]
    out["temperature"] = min(GRID["temperature"], key=lambda g: abs(math.log(g) - math.log(t)))
    m = cell["key_momentum"]
    out["key_momentum"] = min(GRID["key_momentum"], key=lambda g: abs(math.log(1 - g) - math.log(1 - m)))
    return out


class Method:
    def __init__(self, name: str, sampler: str, space: str = "categorical", asha: tuple | None = None,
                 tpe: dict | None = None, grid: str | None = None, dedupe: bool = False):
        self.name, self.sampler, self.space, self.asha, self.tpe, self.grid = name, sampler, space, asha, tpe or {}, grid
        # dedupe: NOT the platform's behaviour, a proposal: a configuration already trained in this
        # sweep (same training seed, so the same curve) is not trained again; its last value is
        # told to the study at no compute (FAIL, ignored by TPE, if it is still running)
        self.dedupe = dedupe


def make_search_sampler(method: "Method", spec, replay: int):
    """The sampler of one replayed search. Default TPE is the platform's own ``make_sampler``
    (``TPESampler(seed=seeds[0])``) with the replay index as the seed; variants add TPE options."""
    import dataclasses

    import optuna
    from leoclr_platform.spaces import make_sampler

    if method.sampler == "tpe":
        if not method.tpe:
            sampler = make_sampler(dataclasses.replace(spec, seeds=[replay]))
            if not isinstance(sampler, optuna.samplers.TPESampler):  # the platform changed its sampler
                raise RuntimeError(f"make_sampler returned {type(sampler).__name__}, not TPESampler")
            return sampler
        return optuna.samplers.TPESampler(seed=replay, **method.tpe)
    if method.sampler == "random":
        return optuna.samplers.RandomSampler(seed=replay)
    raise ValueError(f"unknown sampler {method.sampler!r}")


def run_search(method: Method, table: Table, seed: int, replay: int, budget: float, workers: int,
               trial_overhead: float, specs: dict, grid_knn_end: float | None = None,
               search_knn_rungs: float | None = None) -> dict:
    """One replayed sweep. Returns the anytime curves [(compute, best_so_far, cell)] and the trials."""
    import random

    import optuna
    from leoclr_platform.spaces import decode_sampled, define_by_run

    curves = table.curves[seed]
    asha = ASHA(*method.asha, max_t=table.max_epochs + 1) if method.asha else None
    knn_end = grid_knn_end if method.grid else None
    # search trials need the objective where ASHA judges them and at their last epoch; with
    # search_knn_rungs = f they evaluate kNN only there (knn_every > 1 in a search: kNN at the
    # rungs too) and the other epochs cost (1 - f); ASHA and TPE never look at those epochs
    knn_epochs = None
    if search_knn_rungs is not None and not method.grid:
        knn_epochs = (asha.judged_epochs(table.max_epochs) if asha else set()) | {table.max_epochs}

    def cost(key: str, i: int) -> float:
        if knn_epochs is not None and i + 1 not in knn_epochs:
            return curves[key][i][1] * (1.0 - search_knn_rungs)
        return table.epoch_cost(seed, key, i, knn_end)

    if method.grid:
        order = list(table.cells)  # the platform's grid order (spec.cells(), file order)
        if method.grid == "random":
            random.Random(replay).shuffle(order)
        queue = iter(order)
        ask = lambda: (next(queue, None), None)  # noqa: E731
        report = lambda handle, value, epoch: None  # noqa: E731
        tell = lambda handle, value: None  # noqa: E731
    else:
        spec = specs[method.space]
        fn = define_by_run(spec)
        study = optuna.create_study(direction="maximize", sampler=make_search_sampler(method, spec, replay))

        def ask():  # Tune's OptunaSearch.suggest with a define-by-run space
            trial = study.ask()
            constants = fn(trial)
            values = decode_sampled(spec, {**trial.params, **constants})
            cell = snap(values) if method.space == "snapped" else values
            return {k: cell[k] for k in GRID}, trial

        def report(handle, value, epoch):  # SafeOptunaSearch.on_trial_result: intermediate value by epoch
            handle.report(value, epoch)

        def tell(handle, value):  # Tune's OptunaSearch: a trial stopped by ASHA is told COMPLETE too
            study.tell(handle, value)

    # Event simulation: each worker runs one trial at a time; the clock is CPU seconds of one core.
    # "Best so far" is what the sweep would report if it ended now: the best last-reported value of
    # the trials that have ended (completed, or stopped by ASHA), as summarize() picks it; the
    # curve also keeps which cell that is. curve_full counts only trials that ran every epoch.
    limit = budget * (1 + 1e-9)  # the grid's own total must fit its budget despite float sums
    compute = 0.0
    best = best_full = -math.inf
    curve: list[tuple[float, float, str | None]] = [(0.0, best, None)]
    curve_full: list[tuple[float, float, str | None]] = [(0.0, best, None)]  # full-length trials only
    trials: list[dict] = []
    running: list[dict] = []
    exhausted = False
    busy_since: dict[int, float] = {}
    next_id = itertools.count()
    seen: set[str] = set()
    duplicates = 0

    known: dict[str, float] = {}  # dedupe: last value of every ended trial's cell
    skipped = 0

    def start(worker: int, t: float) -> None:
        nonlocal exhausted, duplicates, skipped
        if exhausted:
            return
        if method.dedupe and len(seen) == len(table.cells):  # everything trained: nothing new to propose
            exhausted = True
            return
        for _ in range(100):
            cell, handle = ask()
            if cell is None:
                exhausted = True
                return
            key = cell_key(cell)
            if key not in curves:
                raise KeyError(f"sampled {key}, which is not a cell of the table")
            if not (method.dedupe and key in seen):
                break
            skipped += 1
            if key in known:
                tell(handle, known[key])
            else:
                study.tell(handle, state=optuna.trial.TrialState.FAIL)
        else:  # dedupe: the sampler proposed 100 trained configurations in a row: the sweep ends
            exhausted = True
            return
        duplicates += key in seen  # the platform trains a repeated configuration again
        seen.add(key)
        trial_id = next(next_id)
        if asha:
            asha.add(trial_id)
        running.append({"id": trial_id, "cell": key, "handle": handle, "epoch": 0, "worker": worker,
                        "t_next": t + trial_overhead + cost(key, 0)})
        busy_since[worker] = t

    for w in range(workers):
        start(w, 0.0)
    while running:
        entry = min(running, key=lambda e: (e["t_next"], e["id"]))
        now = entry["t_next"]
        spent = compute + sum(now - busy_since[e["worker"]] for e in running)
        if spent > limit:
            break
        key = entry["cell"]
        value = curves[key][entry["epoch"]][0]
        entry["epoch"] += 1
        stop = False
        if knn_epochs is None or entry["epoch"] in knn_epochs:  # a result with the objective
            report(entry["handle"], value, entry["epoch"])
            stop = asha.on_result(entry["id"], entry["epoch"], value) if asha else False
        if stop or entry["epoch"] >= table.max_epochs:
            if asha:
                asha.on_complete(entry["id"], entry["epoch"], value)
            running.remove(entry)
            compute += now - busy_since[entry["worker"]]
            tell(entry["handle"], value)
            known[key] = value
            trials.append({"cell": key, "epochs": entry["epoch"], "value": value})
            if value > best:
                best = value
                curve.append((spent, best, key))
            if entry["epoch"] >= table.max_epochs and value > best_full:
                best_full = value
                curve_full.append((spent, best_full, key))
            start(entry["worker"], now)
        else:
            entry["t_next"] = now + cost(key, entry["epoch"])
    return {"curve": curve, "curve_full": curve_full, "trials": trials, "duplicates": duplicates,
            "skipped": skipped}


def point_at(curve: list[tuple], x: float) -> tuple:
    xs = [c[0] for c in curve]
    i = bisect.bisect_right(xs, x) - 1
    return curve[i] if i >= 0 else (0.0, -math.inf, None)


def best_at(curve: list[tuple], x: float) -> float:
    return point_at(curve, x)[1]


def compute_to_reach(curve, target: float) -> float | None:
    for c, b, _ in curve:
        if b >= target:
            return c
    return None


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    pos = (len(v) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi or v[lo] == v[hi]:  # also inf (never reached) without inf - inf = nan
        return v[lo]
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def methods_for(args) -> list[Method]:
    g, rf = args.grace_period, args.reduction_factor
    ms = [
        Method("grid (file order)", "grid", grid="file"),
        Method("grid (random order)", "grid", grid="random"),
        Method("random", "random"),
        Method(f"random+ASHA(g{g},rf{rf:g})", "random", asha=(g, rf)),
        Method("TPE", "tpe"),
        Method(f"TPE+ASHA(g{g},rf{rf:g})", "tpe", asha=(g, rf)),
        Method(f"TPE+ASHA(g{g},rf{rf:g}) snapped", "tpe", space="snapped", asha=(g, rf)),
        Method(f"random+ASHA(g{g},rf{rf:g}) snapped", "random", space="snapped", asha=(g, rf)),
    ]
    if not args.quick:
        ms += [
            Method("TPE+ASHA(g1,rf3)", "tpe", asha=(1, 3)),
            Method("TPE+ASHA(g1,rf4)", "tpe", asha=(1, 4)),
            Method("TPE+ASHA(g2,rf2)", "tpe", asha=(2, 2)),
            Method(f"TPE(startup 5)+ASHA(g{g},rf{rf:g})", "tpe", asha=(g, rf), tpe={"n_startup_trials": 5}),
            Method("TPE(startup 5)+ASHA(g2,rf2)", "tpe", asha=(2, 2), tpe={"n_startup_trials": 5}),
            # Optuna 5's TPESampler is multivariate by default (the platform's make_sampler takes the
            # default); the independent TPE of Optuna <= 4 for comparison
            Method(f"TPE(independent)+ASHA(g{g},rf{rf:g})", "tpe", asha=(g, rf), tpe={"multivariate": False}),
            # a platform change, not a setting: repeated configurations are not trained again
            Method(f"TPE+ASHA(g{g},rf{rf:g}) dedupe", "tpe", asha=(g, rf), dedupe=True),
            Method("TPE(startup 5)+ASHA(g2,rf2) dedupe", "tpe", asha=(2, 2), tpe={"n_startup_trials": 5}, dedupe=True),
            Method(f"random+ASHA(g{g},rf{rf:g}) dedupe", "random", asha=(g, rf), dedupe=True),
        ]
    return ms


def _se(xs):
    """Standard error of the mean over replays (sampler randomness only: the table is fixed)."""
    xs = [x for x in xs if x is not None and x > -math.inf]
    return statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None


def _mean(xs):
    xs = [x for x in xs if x is not None and x > -math.inf]
    return statistics.mean(xs) if xs else None


def replay(args) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_table()
    if data is None:
        raise SystemExit(f"{TABLE} not found: run `build` first")
    table = Table(data, verbose=True)
    if args.trial_overhead_epochs is not None:
        epochs = [c for s in table.seeds for curve in table.curves[s].values() for _, c in curve]
        args.trial_overhead_s = args.trial_overhead_epochs * statistics.mean(epochs)
        print(f"trial overhead: {args.trial_overhead_epochs:g} x the mean epoch ({statistics.mean(epochs):.2f} CPU-s) "
              f"= {args.trial_overhead_s:.1f} s per trial")
    specs = {"categorical": make_spec("categorical"), "snapped": make_spec("snapped")}
    table.use_order(specs["categorical"].cells())
    methods = methods_for(args)
    knn_end = None
    if args.grid_knn_end:
        knn_end, n_ep = table.knn_fraction()
        print(f"grid with kNN at the last epoch only: the monitor is {knn_end * 100:.1f} % of an epoch's CPU "
              f"seconds (median over {n_ep} uncontended epochs); grid trials leave it out of epochs "
              f"1..{table.max_epochs - 1}" + ("" if args.search_knn_rungs else
                                              ", search trials keep it every epoch (knn_every: 1)"))
    knn_rungs = None
    if args.search_knn_rungs:
        knn_rungs, n_ep = table.knn_fraction()
        print(f"search trials evaluate kNN only at ASHA's rung epochs and the last epoch (without ASHA: the "
              f"last epoch): the other epochs cost {100 - knn_rungs * 100:.1f} % (kNN share from {n_ep} "
              "uncontended epochs)")
    grid_cpu = {s: table.grid_cpu(s, knn_end) for s in table.seeds}
    grid_best = {s: table.grid_best(s) for s in table.seeds}
    # "true" quality of a configuration: its final-epoch kNN top-1 averaged over the training seeds
    # (what retraining the picked configuration gives on average), and the grid's own pick per seed
    true = {cell_key(c): statistics.mean(table.curves[s][cell_key(c)][-1][0] for s in table.seeds)
            for c in table.cells}
    oracle = max(true.values())
    grid_pick = {s: max(table.curves[s], key=lambda k: table.curves[s][k][-1][0]) for s in table.seeds}
    fractions = [round(0.02 * i, 2) for i in range(0, int(round(args.budget / 0.02)) + 1)]
    print(f"table: {len(table.cells)} cells x {table.max_epochs} epochs, training seeds {table.seeds}; "
          + "; ".join(f"seed {s}: grid best {grid_best[s]:.2f} % ({grid_pick[s]}), grid compute "
                      f"{grid_cpu[s]:.0f} CPU-s" for s in table.seeds))
    print(f"true value (final epoch, mean over seeds): best cell {oracle:.2f} %; grid's pick "
          + ", ".join(f"seed {s}: {true[grid_pick[s]]:.2f}" for s in table.seeds))
    print(f"replays: {args.replays} per method (training seed = replay mod {len(table.seeds)}), "
          f"{args.workers} concurrent trial(s), trial overhead {args.trial_overhead_s:g} s, "
          f"budget {args.budget:g} x grid compute\n", flush=True)
    results = {}
    for m in methods:
        t0 = time.time()
        runs = []
        reps = args.replays if m.grid != "file" else len(table.seeds)
        for r in range(reps):
            seed = table.seeds[r % len(table.seeds)]
            unit = grid_cpu[seed] + args.trial_overhead_s * len(table.cells)
            out = run_search(m, table, seed, r, args.budget * unit, args.workers, args.trial_overhead_s, specs,
                             grid_knn_end=knn_end, search_knn_rungs=knn_rungs)
            run = {"seed": seed, "n_trials": len(out["trials"]), "duplicates": out["duplicates"],
                   "skipped": out["skipped"],
                   "mean_epochs": statistics.mean(t["epochs"] for t in out["trials"]) if out["trials"] else 0}
            for kind in ("curve", "curve_full"):
                norm = [(c / unit, b, k) for c, b, k in out[kind]]
                third, full = point_at(norm, 1 / 3), point_at(norm, args.budget)
                run[kind] = {"curve": norm, "reach": compute_to_reach(norm, grid_best[seed] - 1.0),
                             "gap_third": third[1] - grid_best[seed], "gap_full": full[1] - grid_best[seed],
                             "true_third": true[third[2]] if third[2] else None,
                             "true_full": true[full[2]] if full[2] else None}
            runs.append(run)
        summary = {"replays": len(runs), "mean_trials": statistics.mean(r["n_trials"] for r in runs),
                   "mean_duplicates": statistics.mean(r["duplicates"] for r in runs),
                   "mean_skipped": statistics.mean(r["skipped"] for r in runs),
                   "mean_epochs_per_trial": statistics.mean(r["mean_epochs"] for r in runs)}
        curves = {}
        for kind in ("curve", "curve_full"):
            rs = [r[kind] for r in runs]
            reach = [r["reach"] for r in rs]
            summary[kind] = {
                "reached_target_frac": sum(x is not None for x in reach) / len(rs),
                "reached_by_third_frac": sum(x is not None and x <= 1 / 3 + 1e-9 for x in reach) / len(rs),
                "median_reach": pct([x if x is not None else math.inf for x in reach], 0.5),
                "no_pick_third_frac": sum(r["gap_third"] == -math.inf for r in rs) / len(rs),
                "mean_gap_third": _mean(r["gap_third"] for r in rs),
                "se_gap_third": _se(r["gap_third"] for r in rs),
                "mean_gap_full": _mean(r["gap_full"] for r in rs),
                "mean_true_third": _mean(r["true_third"] for r in rs),
                "mean_true_full": _mean(r["true_full"] for r in rs),
                "reach": reach,
            }
            pts_by_f = []
            for f in fractions:
                pts = [(point_at(r[kind]["curve"], f), r["seed"]) for r in runs]
                gaps = [p[1] - grid_best[sd] for p, sd in pts if p[1] > -math.inf]
                pts_by_f.append({"f": f, "n": len(gaps), "gap_mean": _mean(gaps),
                                 "gap_p10": pct(gaps, 0.1) if gaps else None,
                                 "gap_p90": pct(gaps, 0.9) if gaps else None,
                                 "true_mean": _mean([true[p[2]] for p, _ in pts if p[2]])})
            curves[kind] = pts_by_f
        results[m.name] = {"summary": summary, "curves": curves,
                           "settings": {"sampler": m.sampler, "space": m.space, "asha": m.asha, "tpe": m.tpe,
                                        "grid": m.grid, "dedupe": m.dedupe}}
        print(f"  {m.name}: {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    out = {"table": {"cells": len(table.cells), "max_epochs": table.max_epochs, "seeds": table.seeds,
                     "grid_cpu_s": grid_cpu, "grid_best": grid_best, "grid_pick": grid_pick,
                     "true_value": true, "oracle_true": oracle, "settings": data["settings"],
                     "machine": data["machine"], "build_cpu_s": data.get("build_cpu_s"),
                     "build_wall_s": data.get("build_wall_s")},
           "replay": {"replays": args.replays, "workers": args.workers, "trial_overhead_s": args.trial_overhead_s,
                      "trial_overhead_epochs": args.trial_overhead_epochs,
                      "budget": args.budget, "grace_period": args.grace_period,
                      "grid_knn_end_fraction": knn_end, "search_knn_rungs_fraction": knn_rungs,
                      "reduction_factor": args.reduction_factor},
           "methods": results}
    print_tables(out)
    return out


def fmt_frac(x) -> str:
    if x is None or (isinstance(x, float) and math.isinf(x)):
        return "never"
    return f"{x:.2f}"


def _f(x, spec="{:.2f}") -> str:
    return "-" if x is None else spec.format(x)


def print_tables(out: dict) -> None:
    t = out["table"]
    r = out["replay"]
    print(f"Grid reference per training seed: best final-epoch kNN top-1 "
          + ", ".join(f"seed {s}: {v:.2f} %" for s, v in t["grid_best"].items())
          + f"; target = that - 1 point. Compute in fractions of that grid's CPU seconds"
          + (f" (+ {r['trial_overhead_s']:g} s per trial)" if r["trial_overhead_s"] else "")
          + (f" (grid trials evaluate kNN at their last epoch only: -{r['grid_knn_end_fraction'] * 100:.0f} % "
             "of the other epochs)" if r.get("grid_knn_end_fraction") else "")
          + (" (search trials evaluate kNN at ASHA's rungs and their last epoch only)"
             if r.get("search_knn_rungs_fraction") else "")
          + f"; {r['workers']} concurrent trial(s); means over replays.\n")
    for kind, title in (("curve", "A. Reported best (platform semantics: best last-reported value of the ended "
                                  "trials, ASHA-stopped ones included)"),
                        ("curve_full", "B. Best full-length trial (only trials that ran all "
                                       f"{t['max_epochs']} epochs can be picked)")):
        print(title + f"; true = final-epoch kNN of the picked cell, mean over the {len(t['seeds'])} training "
              f"seeds (best cell {t['oracle_true']:.2f})\n")
        print("| method | trials | repeats | epochs/trial | no pick @1/3 | gap @1/3 (± s.e.) | gap @1x | true @1/3 "
              "| true @1x | reached grid-best-1 by 1/3 | by 1x | median compute to reach |")
        print("|" + "---|" * 12)
        for name, res in out["methods"].items():
            s, k = res["summary"], res["summary"][kind]
            rep = f"{s['mean_duplicates']:.1f}" + (f" ({s['mean_skipped']:.0f} not retrained)"
                                                   if res["settings"].get("dedupe") else "")
            print(f"| {name} | {s['mean_trials']:.1f} | {rep} | {s['mean_epochs_per_trial']:.2f} | "
                  f"{k['no_pick_third_frac'] * 100:.0f} % | "
                  f"{_f(k['mean_gap_third'], '{:+.2f}')} ± {_f(k['se_gap_third'])} | "
                  f"{_f(k['mean_gap_full'], '{:+.2f}')} | "
                  f"{_f(k['mean_true_third'])} | {_f(k['mean_true_full'])} | "
                  f"{k['reached_by_third_frac'] * 100:.0f} % | {k['reached_target_frac'] * 100:.0f} % | "
                  f"{fmt_frac(k['median_reach'])} |")
        print()
    print_verdict(out)


def verdicts(out: dict) -> dict:
    """Target: the grid's best - 1 point with at most 1/3 of the grid's compute. Per method and
    per kind of pick, two readings, both computed from the replays (nothing assumed):
    mean = the mean over ALL replays of (best so far at 1/3 - grid best) is >= -1 (a replay with
    nothing to pick at 1/3 fails this reading); median = at least half of the replays reach
    grid best - 1 by 1/3 (median compute to reach <= 1/3)."""
    res = {}
    for name, m in out["methods"].items():
        res[name] = {}
        for kind in ("curve", "curve_full"):
            k = m["summary"][kind]
            mean_ok = (k["no_pick_third_frac"] == 0 and k["mean_gap_third"] is not None
                       and k["mean_gap_third"] >= -1.0 - 1e-9)
            median_ok = k["median_reach"] <= 1 / 3 + 1e-9
            res[name][kind] = {"mean_gap_third": k["mean_gap_third"], "mean_ok": mean_ok,
                               "reached_by_third_frac": k["reached_by_third_frac"], "median_ok": median_ok}
    return res


def print_verdict(out: dict) -> None:
    v = verdicts(out)
    out["verdicts"] = v
    print("Target (grid best - 1 point with <= 1/3 of the grid's compute), per search method:\n")
    print("| method | A: mean gap @1/3 >= -1 | A: >= half reach by 1/3 | B: mean gap @1/3 >= -1 "
          "| B: >= half reach by 1/3 |")
    print("|---|---|---|---|---|")
    for name, r in v.items():
        if out["methods"][name]["settings"]["grid"]:
            continue
        cols = []
        for kind in ("curve", "curve_full"):
            x = r[kind]
            cols.append(f"{'yes' if x['mean_ok'] else 'no'} ({_f(x['mean_gap_third'], '{:+.2f}')})")
            cols.append(f"{'yes' if x['median_ok'] else 'no'} ({x['reached_by_third_frac'] * 100:.0f} %)")
        print(f"| {name} | " + " | ".join(cols) + " |")
    print()


def curve_table(table: Table) -> str:
    """Per training seed: each cell's final value, to show the landscape."""
    lines = ["| cell | " + " | ".join(f"seed {s} (final / best epoch)" for s in table.seeds) + " |",
             "|---|" + "---|" * len(table.seeds)]
    for c in table.cells:
        k = cell_key(c)
        parts = []
        for s in table.seeds:
            curve = table.curves[s][k]
            parts.append(f"{curve[-1][0]:.1f} / {max(v for v, _ in curve):.1f}")
        lines.append(f"| {k} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, r = out["table"], out["replay"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    g, rf = r["grace_period"], r["reduction_factor"]
    wanted = ["grid (file order)", "grid (random order)", "random", f"random+ASHA(g{g},rf{rf:g})", "TPE",
              f"TPE+ASHA(g{g},rf{rf:g})", f"TPE+ASHA(g{g},rf{rf:g}) snapped", "TPE(startup 5)+ASHA(g2,rf2)",
              f"TPE+ASHA(g{g},rf{rf:g}) dedupe"]
    show = [n for n in wanted if n in out["methods"]]
    for ax, kind, title in ((axes[0], "curve", "A. reported best (ASHA-stopped trials count)"),
                            (axes[1], "curve_full", f"B. best full-length ({t['max_epochs']}-epoch) trial")):
        for i, name in enumerate(show):
            n_all = out["methods"][name]["summary"]["replays"]  # plotted from where every replay has a pick
            pts = [p for p in out["methods"][name]["curves"][kind] if p["gap_mean"] is not None and p["n"] == n_all]
            if not pts:
                continue
            main = name == f"TPE+ASHA(g{g},rf{rf:g})"
            ax.plot([p["f"] for p in pts], [p["gap_mean"] for p in pts], label=name, color=f"C{i}",
                    lw=2.4 if main else 1.3, ls="--" if "grid" in name else "-")
            if main or name == "random":
                ax.fill_between([p["f"] for p in pts], [p["gap_p10"] for p in pts], [p["gap_p90"] for p in pts],
                                alpha=0.12, color=f"C{i}")
        ax.axhline(-1.0, color="k", lw=0.8, ls=":")
        ax.axvline(1 / 3, color="grey", lw=0.8, ls=":")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("compute spent (fraction of the full grid's CPU seconds)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best kNN top-1 so far - grid best (points)")
    axes[0].set_ylim(-6, 1)
    axes[1].legend(fontsize=7.5, loc="lower right")
    fig.suptitle(f"photo_patches, small CNN 32 px, {t['cells']} cells x {t['max_epochs']} epochs, training seeds "
                 f"{t['seeds']}\n{r['replays']} replays per method (mean, 10-90 % band for TPE+ASHA and random); "
                 f"{r['workers']} worker(s), {r['trial_overhead_s']:.3g} s overhead per trial"
                 + (", grid with kNN at the last epoch only" if r.get("grid_knn_end_fraction") else "")
                 + (", search kNN at rungs + last epoch only" if r.get("search_knn_rungs_fraction") else "")
                 + "; dotted: grid best - 1, 1/3 of the grid's compute", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main(argv=None) -> None:
    global TABLE
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", default="all", choices=["all", "build", "replay", "merge"],
                   help="merge: add the runs of --from (a table built in parallel, e.g. another seed "
                        "with --table elsewhere --seeds 1) to the table")
    p.add_argument("--code-note", default=None, help="build: where the engine code came from (stored)")
    p.add_argument("--trainables", default=None,
                   help="build: a trainables/ package folder to train with instead of the working tree's "
                        "(the table refuses to mix engine versions; e.g. `git archive 24aaf9b trainables | "
                        "tar -x -C /tmp/snap` and --trainables /tmp/snap/trainables)")
    p.add_argument("--from", dest="merge_from", default=None, help="merge: the other table file")
    p.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help="training seeds of the table")
    p.add_argument("--build-limit-s", type=float, default=None, help="stop the build after this long (resumable)")
    p.add_argument("--replays", type=int, default=60, help="replays (sampler seeds) per method")
    p.add_argument("--workers", type=int, default=1, help="concurrent trials in the replay")
    p.add_argument("--budget", type=float, default=1.0, help="compute budget, in multiples of the grid's")
    p.add_argument("--trial-overhead-s", type=float, default=0.0, help="fixed cost per trial (start-up), seconds")
    p.add_argument("--trial-overhead-epochs", type=float, default=None,
                   help="fixed cost per trial in units of the table's mean epoch (overrides --trial-overhead-s)")
    p.add_argument("--grid-knn-end", action="store_true",
                   help="grid trials evaluate kNN at their last epoch only (knn_every = max_epochs, which "
                        "grid mode allows): their compute, and so the unit, leaves the monitor out of the "
                        "other epochs (share estimated from the table's uncontended epochs)")
    p.add_argument("--search-knn-rungs", action="store_true",
                   help="search trials evaluate kNN only at ASHA's rung epochs and their last epoch "
                        "(search mode with knn_every > 1, kNN added at the rungs): the other epochs leave "
                        "the monitor out (same share as --grid-knn-end); decisions are unchanged")
    p.add_argument("--grace-period", type=int, default=1)
    p.add_argument("--reduction-factor", type=float, default=2)
    p.add_argument("--quick", action="store_true", help="fewer methods")
    p.add_argument("--tag", default="", help="suffix for the output files (other replay settings)")
    p.add_argument("--table", default=None, help=f"table file (default {TABLE.relative_to(ROOT)})")
    args = p.parse_args(argv)
    if args.table:
        TABLE = Path(args.table).resolve()
    if args.trainables:
        pkg = Path(args.trainables).resolve()
        if not (pkg / "__init__.py").exists() or pkg.name != "trainables":
            raise SystemExit(f"--trainables {pkg}: not a trainables package folder")
        if "trainables" in sys.modules and Path(sys.modules["trainables"].__file__).parent != pkg:
            raise SystemExit("--trainables: another trainables package is already imported")
        sys.path.insert(0, str(pkg.parent))
    if args.command == "merge":
        merge_table(Path(args.merge_from))
        return
    if args.command in ("all", "build"):
        build_table(args.seeds, args.build_limit_s, args.code_note)
    if args.command in ("all", "replay"):
        out = replay(args)
        table = Table(load_table())
        print("Final kNN top-1 of every cell (the table):\n")
        print(curve_table(table))
        RESULTS.mkdir(parents=True, exist_ok=True)
        suffix = f"_{args.tag}" if args.tag else ""
        json_path = OUT_JSON.with_name(f"search_efficiency{suffix}.json")
        json_path.write_text(json.dumps(out, indent=1, default=str))
        print(f"\nresults: {json_path}")
        plot(out, OUT_PNG.with_name(f"search_efficiency{suffix}.png"))


if __name__ == "__main__":
    main()
