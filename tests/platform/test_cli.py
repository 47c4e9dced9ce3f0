"""The `leoclr` command line: each command parses its flags and calls the library; refusals are
one `leoclr: error:` line and exit status 2, before Ray starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from leoclr_platform import cli
from leoclr_platform.sweep import SweepOutcome

LEOCLR = [sys.executable, "-m", "leoclr_platform"]


@pytest.fixture
def calls(monkeypatch):
    """Replace the library functions the commands call; record how they were called."""
    seen: dict = {}

    def recorder(name, value=None):
        def call(*args, **kwargs):
            seen[name] = (args, kwargs)
            return value
        return call

    outcome = SweepOutcome("s1", "/r/s1", None, [], 0)
    monkeypatch.setattr("leoclr_platform.sweep.run_sweep", recorder("run_sweep", outcome))
    monkeypatch.setattr("leoclr_platform.sweep.sync_sweep", recorder("sync_sweep"))
    monkeypatch.setattr("leoclr_platform.registry.promote", recorder("promote"))
    monkeypatch.setattr("leoclr_platform.evaluation.evaluate_model", recorder("evaluate_model"))
    monkeypatch.setattr("leoclr_platform.report.command.report_sweep", recorder("report_sweep"))
    monkeypatch.setattr("leoclr_platform.report.lookup.check_sweep", recorder("check_sweep"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/store.db")
    return seen


def test_sweep_flags_become_a_sweep_request(calls, capsys):
    assert cli.main(["sweep", "smoke", "--name", "s1", "--trials", "2", "--max-epochs", "3",
                     "--storage", "/tmp/r", "--num-cpus", "2", "--no-tracking"]) == 1  # no best trial
    (request,), _ = calls["run_sweep"]
    assert request.space.name == "smoke" and request.name == "s1" and not request.resume
    assert (request.trials, request.max_epochs, request.storage, request.num_cpus) == (2, 3, "/tmp/r", 2)
    assert request.track is False and request.tracking_timeout == 300.0
    assert "sweep s1: 0 trials, 0 failed" in capsys.readouterr().out


def test_resume_takes_the_sweep_s_own_space(calls, capsys):
    cli.main(["sweep", "demo", "--resume", "s1", "--tracking-uri", "sqlite:////tmp/x.db"])
    (request,), _ = calls["run_sweep"]
    assert request.resume and request.name == "s1" and request.space is None
    assert request.tracking_uri == "sqlite:////tmp/x.db"
    assert "SPACE is ignored with --resume" in capsys.readouterr().out


def test_a_dry_run_describes_the_space_and_its_first_configurations(calls, capsys):
    assert cli.main(["sweep", "smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep 'smoke' (search) from ") and "\nfirst configurations:\n" in out
    assert len([line for line in out.splitlines() if line.startswith('  {"attraction_strategy"')]) == 3
    assert "run_sweep" not in calls


def test_the_smoke_test_shrinks_what_the_space_fixes():
    from leoclr_platform import spaces

    demo = spaces.load_space("demo")
    small = cli.smoke_space(demo)
    assert small.trials == 2 and small.max_epochs == 1 and small.seeds == demo.seeds[:1]
    assert small.base["backbone"] == "small_cnn" and small.base["image_size"] == 16
    assert small.params == demo.params  # what is searched stays searched
    assert demo.confirm and small.confirm is None  # no confirmation stage (--confirm N adds one)


def test_the_registry_report_and_sync_commands_call_the_library(calls):
    cli.main(["promote", "--sweep", "s1", "--alias", "champion"])
    args, kwargs = calls["promote"]
    assert args == ("sqlite:////tmp/store.db",) and kwargs["sweep"] == "s1" and kwargs["alias"] == "champion"
    cli.main(["evaluate", "models:/leoclr-encoder@candidate", "--smoke-test", "--linear-epochs", "5"])
    args, kwargs = calls["evaluate_model"]
    assert args[1] == "models:/leoclr-encoder@candidate" and kwargs["checkpoint"] is None
    assert kwargs["protocols"] == "knn,linear,random_crop"
    assert kwargs["settings"] == {"linear": {"epochs": 5, "augment": "none"}}
    assert cli.main(["evaluate", "--checkpoint", "runs/train-1", "--protocols", "knn,semi_10pct,transfer:cifar100",
                     "--set", "semi_10pct.epochs=3", "--set", "transfer:cifar100.data_root=/d",
                     "--set", "semi:0.05.lr=1", "--smoke-test"]) == 0
    args, kwargs = calls["evaluate_model"]
    assert args[1] is None and kwargs["checkpoint"] == "runs/train-1"
    assert kwargs["settings"] == {"semi_10pct": {"epochs": 3}, "transfer:cifar100": {"data_root": "/d"},
                                  "semi:0.05": {"lr": 1}, "semi": {"epochs": 1},
                                  "transfer": {"linear": {"epochs": 2, "augment": "none"}, "finetune": {"epochs": 1}}}
    cli.main(["report", "s1", "--out", "/tmp/rep"])
    assert calls["report_sweep"][0] == ("sqlite:////tmp/store.db", "s1", "/tmp/rep")
    cli.main(["sync", "s1", "--storage", "/tmp/r"])
    assert calls["sync_sweep"] == (("s1",), {"storage": "/tmp/r", "tracking_uri": None})


def test_refusals_are_one_line_with_exit_status_2_and_divergence_is_3(monkeypatch, capsys):
    from trainables.loop import DivergenceError

    assert cli.main(["sweep"]) == 2
    assert capsys.readouterr().err.startswith("leoclr: error: leoclr sweep: give a search space ")

    def diverge(args):
        raise DivergenceError("loss is not finite at epoch 1")

    monkeypatch.setattr(cli, "cmd_sync", diverge)
    assert cli.main(["sync", "s1"]) == 3
    assert capsys.readouterr().err == "leoclr: training failed: loss is not finite at epoch 1\n"


def test_bad_space_fails_before_ray_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbase: {temperature: -1}\nspace: {lr: {uniform: [0.1, 0.01]}}\n")
    start = time.time()
    proc = subprocess.run(LEOCLR + ["sweep", str(bad), "--storage", str(tmp_path)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{bad}: " in proc.stderr and "leoclr: error:" in proc.stderr
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
    assert not (tmp_path / "bad").exists()
    assert time.time() - start < 60


def test_unreachable_address_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    proc = subprocess.run(LEOCLR + ["sweep", "smoke", "--address", f"127.0.0.1:{port}", "--storage", str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"cannot connect to the Ray cluster at '127.0.0.1:{port}'" in proc.stderr


@pytest.mark.parametrize("command", ["train", "sweep", "ui", "promote", "sync"])
def test_every_flag_says_what_it_does(command):
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    silent = [a.dest for a in sub._actions if not isinstance(a, argparse._HelpAction) and not a.help]
    assert silent == [], f"leoclr {command}: no --help text for {silent}"
    assert sub.description, f"leoclr {command} --help has no description"


def test_no_system_metrics_reaches_the_sweep_request(calls):
    cli.main(["sweep", "smoke", "--name", "s1", "--no-system-metrics"])
    (request,), _ = calls["run_sweep"]
    assert request.system_metrics is False
    cli.main(["sweep", "smoke", "--name", "s2"])
    (request,), _ = calls["run_sweep"]
    assert request.system_metrics is True
