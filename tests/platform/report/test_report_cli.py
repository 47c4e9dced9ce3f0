"""`leoclr report` as a user meets it: --help describes the command and every flag, names no
placeholder without a flag, and an unknown sweep is answered before MLflow is imported, with
the sweeps that exist."""

from __future__ import annotations

import subprocess
import sys

import pytest

from leoclr_platform import cli


def report_parser():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices["report"]


def test_help_describes_the_command_and_every_flag(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["report", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "Write the report of sweep NAME" in text and "95 % intervals" in text
    assert "<storage>" not in text and "%%" not in text
    for flag in ("--out", "--tracking-uri", "NAME"):
        assert flag in text


def test_every_argument_has_help():
    parser = report_parser()
    assert parser.description
    assert all(a.help for a in parser._actions), [a.dest for a in parser._actions if not a.help]


def test_an_unknown_sweep_answers_before_mlflow_is_imported(recorded_sweep):
    code = ("import sys\nfrom leoclr_platform.cli import main\n"
            f"rc = main(['report', 'nosuch', '--tracking-uri', {recorded_sweep['uri']!r}])\n"
            "print(rc, sorted(m for m in ('mlflow', 'matplotlib', 'torch', 'ray') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "2 []", (done.stdout, done.stderr)
    assert "no sweep named 'nosuch'" in done.stderr and "sweeps there, newest first: s1" in done.stderr
