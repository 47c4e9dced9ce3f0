"""The platform's layout rules, checked: every sub-package is packaged, no module over 400
lines, no function over 60, no private Ray/Optuna attribute outside sweep/compat.py."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "platform" / "leoclr_platform"
MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_platform_package_is_packaged():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = {p for where in find["where"] for p in find_packages(str(ROOT / where), include=find["include"])}
    on_disk = {".".join(d.relative_to(ROOT / "platform").parts) for d in PACKAGE.rglob("*")
               if d.is_dir() and (d / "__init__.py").exists()} | {"leoclr_platform"}
    assert on_disk <= found, on_disk - found


def test_modules_and_functions_stay_small():
    long_modules = [f"{m.relative_to(PACKAGE)}: {n}" for m in MODULES
                    if (n := len(m.read_text().splitlines())) > 400]
    long_functions = [f"{m.relative_to(PACKAGE)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1}"
                      for m in MODULES for node in ast.walk(ast.parse(m.read_text()))
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.end_lineno - node.lineno + 1 > 60]
    assert not long_modules and not long_functions, (long_modules, long_functions)


def test_private_ray_and_optuna_attributes_only_in_the_adapter():
    private = re.compile(r"\bray\._private\b|\._local_tuner\b|\._ot_trials\b|\._completed_trials\b|\._trial_id\b")
    users = [str(m.relative_to(PACKAGE)) for m in MODULES if private.search(m.read_text())]
    assert users == ["sweep/compat.py"], users
