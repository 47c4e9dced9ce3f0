"""A real local cluster: `ray start --head` on 127.0.0.1, then `ray job submit` of the demo sweep.

Token authentication is on, as docs/cluster.md asks: Ray 2.60 enables it only when a token exists
or RAY_AUTH_MODE=token is set (a fresh machine has no ~/.ray/auth_token, and `ray start --head`
then runs WITHOUT authentication). The fixture writes its own token file (the user's ~/.ray is
never read or written) and starts the head and every client with RAY_AUTH_MODE=token and
RAY_AUTH_TOKEN_PATH pointing at it.
"""

from __future__ import annotations

import json
import re
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from processes import free_port, stop_cluster

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    temp = Path("/tmp") / f"leoclr-ray-{os.getpid()}"  # short: Ray's socket paths have a length limit
    storage = tmp_path_factory.mktemp("cluster_runs")
    port, dash, agent, client = free_port(), free_port(), free_port(), free_port()
    token = tmp_path_factory.mktemp("ray_auth") / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}:{os.environ['PATH']}",
           "LEOCLR_CACHE": str(storage / "cache"), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
         "--dashboard-agent-listen-port", str(agent), "--ray-client-server-port", str(client),
         "--num-cpus", "4", "--temp-dir", str(temp), "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        yield {"address": f"http://127.0.0.1:{dash}", "gcs": f"127.0.0.1:{port}", "env": env,
               "storage": storage}
    finally:  # the Ray client server is daemonised and names only its port
        stop_cluster(temp, (f"--port={client} ",))


def job_env(cluster) -> dict[str, str]:
    return dict(cluster["env"])  # RAY_AUTH_MODE=token + this cluster's RAY_AUTH_TOKEN_PATH


def test_ray_job_submit_runs_sweeps_with_leoclr_and_with_python_dash_m(cluster):
    """One job, both ways of calling the platform: the `leoclr` console script (the demo sweep)
    and `python -m leoclr_platform` (the job runs the cluster's Python; no script on PATH needed)."""
    storage = cluster["storage"]
    both = (f"leoclr sweep demo --smoke-test --name jobdemo --storage {storage} && "
            f"python -m leoclr_platform sweep smoke --smoke-test --name jobmodule --storage {storage}")
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", cluster["address"], "--working-dir", str(ROOT),
         "--submission-id", "leoclr-demo-test", "--", "bash", "-c", both],
        env=job_env(cluster), capture_output=True, text=True, timeout=900)
    logs = submit.stdout[-4000:] + submit.stderr[-4000:]
    assert submit.returncode == 0, logs
    status = subprocess.run(
        [str(BIN / "ray"), "job", "status", "--address", cluster["address"], "leoclr-demo-test"],
        env=job_env(cluster), capture_output=True, text=True, timeout=120)
    assert "Job 'leoclr-demo-test' succeeded" in status.stdout, status.stdout + status.stderr
    summary = json.loads((storage / "jobdemo" / "summary.json").read_text())
    assert len(summary["trials"]) == 2 and summary["errors"] == 0
    assert summary["best"]["checkpoint"] and Path(summary["best"]["checkpoint"], "checkpoint.pt").exists()
    assert len(re.findall(r"^best trial ", submit.stdout, re.M)) == 2, logs  # each sweep's own summary
    summary = json.loads((storage / "jobmodule" / "summary.json").read_text())
    assert len(summary["trials"]) == 2 and summary["errors"] == 0
