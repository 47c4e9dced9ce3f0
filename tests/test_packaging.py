"""The layout guard of DESIGN.md: platform/ is a source root, never a package."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_platform_is_not_a_package():
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_stdlib_platform_still_wins_after_importing_the_project():
    code = (
        "import leoclr_platform, trainables, platform, sys\n"
        "assert hasattr(platform, 'python_version'), platform\n"
        "assert 'site-packages' not in platform.__file__ and 'leoclr' not in platform.__file__, platform.__file__\n"
        "print(platform.python_version())\n"
    )
    # run from the repository root, where `platform/` is first on sys.path as `ray job submit` does
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ".".join(map(str, sys.version_info[:3]))


def test_trainables_never_imports_ray_optuna_or_mlflow():
    code = (
        "import sys, trainables.loop, trainables.data, trainables.views, trainables.checkpoint, trainables.eval\n"
        "bad = [m for m in ('ray', 'optuna', 'mlflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_engine_package_is_packaged():
    """pyproject's packages.find patterns pick up the engine's sub-packages (data/, eval/)."""
    import tomllib

    from setuptools import find_packages

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = {p for where in find["where"] for p in find_packages(str(ROOT / where), include=find["include"])}
    on_disk = {str(d.relative_to(ROOT)).replace("/", ".") for d in (ROOT / "trainables").rglob("*")
               if (d / "__init__.py").exists()} | {"trainables"}
    assert on_disk >= {"trainables", "trainables.data", "trainables.eval"}
    assert on_disk <= found, on_disk - found
    assert "platform" not in found


def test_console_script_and_module_entry_point():
    for cmd in (["leoclr", "--help"], [sys.executable, "-m", "leoclr_platform", "--help"]):
        exe = Path(sys.executable).parent / cmd[0] if cmd[0] == "leoclr" else None
        argv = [str(exe)] + cmd[1:] if exe else cmd
        out = subprocess.run(argv, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "train" in out.stdout and "sweep" in out.stdout
