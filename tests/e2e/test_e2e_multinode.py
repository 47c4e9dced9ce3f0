"""A real two-node Ray cluster on one machine (issue 14, item 5), as a user builds one:
`ray start --head` plus a second node (`ray start --address ...`, its own --temp-dir, its own
resources) on 127.0.0.1, token authentication on (a token file of the test's own, as in
test_e2e_cluster.py), usage stats off.

- A grid sweep submitted with `ray job submit`, its storage a folder both nodes see (on a real
  cluster: a shared filesystem, docs/cluster.md): one trial lands on each node (one CPU each).
  Once the second node's trial has checkpointed an epoch, that node's raylet is SIGKILLed. The
  sweep still finishes: the lost trial is retried on the head and resumes from its checkpoint
  (its epochs continue, they do not restart at 1), MLflow holds every epoch of every trial once,
  and none of the lost node's processes is left running.
- The same cluster with a node that sees a different folder at the storage path (its own mount
  namespace, a tmpfs over the path): the sweep is refused before any trial starts, with the
  reason docs/bad-inputs.md shows.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlflow_checks import metric_steps, tracked_runs
from processes import free_port, processes_naming, ray_start, raylet_of, stop_cluster

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EPOCHS = 8  # long enough that the kill lands while the lost node still trains (5 raced an idle machine)
#: Two cells, one per node (each node offers one CPU, a trial takes one).
SPACE = f"""
name: twonode
description: Two smoke-sized cells, one per node of a two-node cluster.
mode: grid
base:
  dataset: photo_patches
  image_size: 16
  photo_patches: {{train_per_class: 40, test_per_class: 4}}  # ~5 s epochs: time to kill mid-trial
  backbone: small_cnn
  batch_size: 32
  queue_size: 64
  bn_splits: 2
  knn_k: 10
space:
  attraction_strategy: {{grid: [leoclr, moco_v2]}}
objective: {{metric: val_knn_top1, mode: max}}
budget: {{max_epochs: {EPOCHS}}}
resources: {{workers: 1, cpus_per_worker: 1, gpus_per_worker: 0}}
seeds: [0]
"""
#: A lost node is noticed in seconds, not Ray's default ~30 s of missed health checks.
FAST_HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
               "RAY_health_check_initial_delay_ms": "1000"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tag = f"lc{os.getpid()}"  # short temp dirs: Ray's socket paths have a length limit
    head_temp, node_temp = Path("/tmp") / f"{tag}h", Path("/tmp") / f"{tag}n"
    shared = tmp_path_factory.mktemp("shared_storage")
    token = tmp_path_factory.mktemp("ray_auth") / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, **FAST_HEALTH, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}:{os.environ['PATH']}",
           "LEOCLR_CACHE": str(shared / "cache"), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "LEOCLR_HOME": str(shared)}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    port, dash, client = free_port(), free_port(), free_port()
    info = {"gcs": f"127.0.0.1:{port}", "address": f"http://127.0.0.1:{dash}", "env": env, "shared": shared,
            "head_temp": head_temp, "node_temp": node_temp, "extra_temps": []}
    started = time.time()
    try:
        ray_start(BIN, ["--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                        "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(client),
                        "--num-cpus", "1", "--temp-dir", str(head_temp)], env)
        ray_start(BIN, join_args(info, node_temp, "node2"), env)
        info["head_id"], info["node_id"] = node_ids(info, "node2")
        info["start_s"] = time.time() - started
        yield info
    finally:
        for temp in info["extra_temps"]:
            stop_cluster(temp)
        stop_cluster(node_temp)
        stop_cluster(head_temp, (f"--port={client} ",))


def join_args(cluster, temp: Path, resource: str) -> list[str]:
    """`ray start` arguments of a node joining the cluster with one CPU and a resource of its own."""
    return ["--address", cluster["gcs"], "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
            "--resources", json.dumps({resource: 1}), "--temp-dir", str(temp),
            "--dashboard-agent-listen-port", str(free_port())]


def node_ids(cluster, resource: str) -> tuple[str, str]:
    """(head's node id, node id of the node offering `resource`), from `ray list nodes`."""
    deadline = time.time() + 120
    while True:  # a node that just joined may take a moment to be listed
        listed = subprocess.run([str(BIN / "ray"), "list", "nodes", "--address", cluster["address"],
                                 "--format", "json"], env=cluster["env"], capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        nodes = [n for n in json.loads(listed.stdout) if n.get("state") == "ALIVE"]
        head = [n["node_id"] for n in nodes if n["is_head_node"]]
        other = [n["node_id"] for n in nodes if resource in (n.get("resources_total") or {})]
        if head and other:
            return head[0], other[0]
        assert time.time() < deadline, nodes
        time.sleep(1)


def submit(cluster, command: str, submission_id: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "ray"), "job", "submit", "--address", cluster["address"], "--working-dir", str(ROOT),
         "--submission-id", submission_id, "--", "bash", "-c", command],
        env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def results_by_trial(root: Path) -> dict[str, list[dict]]:
    """Every result Tune recorded, per trial folder (its result.json, one JSON line per epoch)."""
    found = {}
    for result_file in root.glob("*/result.json"):
        lines = []
        for line in result_file.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                pass
        found[result_file.parent.name] = lines
    return found


def wait_for_checkpointed_epoch_on(root: Path, node_id: str, job: subprocess.Popen, timeout: float = 300) -> str:
    """The trial folder whose trial reported (and so checkpointed) an epoch on node `node_id`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert job.poll() is None, job.stdout.read()[-4000:]
        for folder, lines in results_by_trial(root).items():
            if any(r.get("node_id") == node_id and r.get("epoch", 0) >= 1 for r in lines):
                return folder
        time.sleep(0.2)
    raise TimeoutError(f"no trial reported an epoch on node {node_id} in {timeout} s")


def _still_running(pids: set[int]) -> dict[int, str]:
    alive = {}
    for pid in pids:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            zombie = "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if not zombie and "log_monitor" not in args:
            alive[pid] = args[:200]
    return alive


def test_a_sweep_runs_on_both_nodes_and_survives_losing_one(cluster, tmp_path):
    shared = cluster["shared"]
    space = shared / "twonode.yaml"
    space.write_text(SPACE)
    storage = shared / "runs"
    started = time.time()
    job = submit(cluster, f"python -m leoclr_platform sweep {space} --name twonode --storage {storage}",
                 "leoclr-twonode")
    root = storage / "twonode"
    lost = wait_for_checkpointed_epoch_on(root, cluster["node_id"], job)
    raylet = raylet_of(cluster["node_temp"])
    on_node = processes_naming((str(cluster["node_temp"]),))  # its raylet, agents, workers (the trial's)
    os.kill(raylet, 9)
    killed_at = time.time()
    out, _ = job.communicate(timeout=600)
    elapsed = time.time() - started
    assert job.returncode == 0, out[-6000:]

    # the lost node's processes (its workers, the trial that ran there, its agents) went with its
    # raylet; only its log monitor, which tails files and runs no work, waits for the teardown
    deadline = time.time() + 30
    while (left := _still_running(on_node)) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, left

    results = results_by_trial(root)
    assert len(results) == 2
    nodes = {r["node_id"] for lines in results.values() for r in lines}
    assert nodes == {cluster["head_id"], cluster["node_id"]}, nodes  # trials ran on both nodes
    on_lost = [r["epoch"] for r in results[lost] if r["node_id"] == cluster["node_id"]]
    after = [r["epoch"] for r in results[lost] if r["node_id"] != cluster["node_id"]]
    assert on_lost and after, results[lost]
    # resumed from its checkpoint on the surviving node: epochs continue, never restart at 1
    assert after[0] > 1 and after[0] <= on_lost[-1] + 1, (on_lost, after)
    assert after[-1] == EPOCHS and after == list(range(after[0], EPOCHS + 1)), after

    summary = json.loads((root / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["COMPLETED", "COMPLETED"], summary["trials"]
    client, parent, runs = tracked_runs(f"sqlite:///{shared}/mlflow.db", "twonode")
    assert parent.info.status == "FINISHED" and len(runs) == 2
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert metric_steps(client, run) == list(range(1, EPOCHS + 1))  # every epoch, once
    print(f"\ncluster start {cluster['start_s']:.1f} s; sweep {elapsed:.1f} s "
          f"(node killed {killed_at - started:.1f} s in, after epoch {on_lost[-1]} on it; "
          f"resumed at epoch {after[0]})")
    (tmp_path / "timings.json").write_text(json.dumps(
        {"cluster_start_s": cluster["start_s"], "sweep_s": elapsed, "killed_after_s": killed_at - started,
         "lost_epochs_on_node": on_lost, "resumed_epochs": after}))


def test_a_node_that_does_not_see_the_storage_refuses_the_sweep_before_compute(cluster):
    """A third node in a mount namespace of its own, a tmpfs over the storage folder: same path,
    different folder. The sweep is refused with the reason, and no trial starts."""
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:  # needs root (CAP_SYS_ADMIN); CI runs as root
        pytest.skip(f"cannot make a mount namespace here (unshare --mount: {probe.stderr.strip()})")
    storage = cluster["shared"] / "local_runs"
    storage.mkdir()
    temp = Path(str(cluster["head_temp"])[:-1] + "l")
    cluster["extra_temps"].append(temp)
    unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               f'mount -t tmpfs tmpfs "{storage}" && exec "$@"', "sh"]
    ray_start(BIN, join_args(cluster, temp, "local_node"), cluster["env"], prefix=unshare)
    started = time.time()
    refused = subprocess.run(
        [sys.executable, "-m", "leoclr_platform", "sweep", "smoke", "--name", "refused", "--storage", str(storage),
         "--address", cluster["gcs"], "--no-tracking"],
        env=cluster["env"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    line = refused.stderr.strip().splitlines()[-1]
    doc = (ROOT / "docs" / "bad-inputs.md").read_text()
    documented = re.search(r"^\| C1 \| `sweep-storage-not-shared` \|.*?\| `(leoclr: error: [^`]+)` \| 2 \|$",
                           doc, re.M).group(1)
    pattern = ".*?".join(re.escape(part) for part in documented.split("..."))
    print(line)
    assert re.fullmatch(pattern, line), (line, documented)
    assert not list((storage / "refused").glob("*/result.json")), "a trial started"
    assert not (storage / "refused" / "train").exists()
    print(f"\nrefused in {time.time() - started:.1f} s: {line}")
