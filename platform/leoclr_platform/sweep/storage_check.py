"""On a multi-node Ray cluster, refuse a local `--storage` folder that the nodes do not share.

Trials write their checkpoints and Tune its results to `--storage` from whatever node they run
on, and a trial restarted on another node (a lost node, a retried worker) resumes from the
checkpoints there. A folder that is local to each node (the default `./runs`, a path on the
head's own disk) would split a sweep's files across machines: results missing from the
summary, trials restarting from epoch 1. So before any trial starts, the driver writes a marker
file with a random token into the sweep's folder and a zero-CPU task pinned to each alive node
(NodeAffinitySchedulingStrategy, not soft) reads it back. A node that does not see the token
refuses the sweep with the node named (docs/cluster.md). One node, or a URI (s3://...), needs
no check. A node that does not answer within the timeout (or cannot run the probe) is reported
and not refused: the check refuses on evidence only.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from leoclr_platform.errors import SweepError
from leoclr_platform.sweep.paths import is_uri

MARKER_PREFIX = ".shared-storage-check-"


def _read_marker(path: str) -> str | None:
    """On one node: the marker's text, or None where the file does not exist there."""
    try:
        return Path(path).read_text()
    except OSError:
        return None


def check_shared_storage(root: str, timeout: float = 120.0) -> None:
    """Refuse (SweepError, an InputError) a local `root` that some alive node does not see."""
    if is_uri(root):
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    token = secrets.token_hex(16)
    marker = Path(root) / f"{MARKER_PREFIX}{token}"
    marker.write_text(token)
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_read_marker)
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(marker)): n for n in nodes}
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        answers = {ref: _answer(ref) for ref in ready}
        for ref in late:
            ray.cancel(ref)
    finally:
        marker.unlink(missing_ok=True)
    for ref in [*late, *(ref for ref, answer in answers.items() if isinstance(answer, Exception))]:
        node, why = refs[ref], answers.get(ref) or f"no answer in {timeout:g} s"
        print(f"leoclr: warning: node {node['NodeManagerAddress']} ({node['NodeID'][:12]}) could not run the "
              f"shared-storage check ({why}); it must see --storage {root} too", file=sys.stderr)
    blind = [refs[ref] for ref, answer in answers.items() if not isinstance(answer, Exception) and answer != token]
    if blind:
        node = blind[0]
        reason = (f"is not shared by the Ray cluster's nodes: node {node['NodeManagerAddress']} "
                  f"({node['NodeID'][:12]}) does not see a file the driver wrote there; a multi-node "
                  "sweep needs storage that every node mounts at the same path, or a URI such as s3://... "
                  "(docs/cluster.md)")
        raise SweepError(reason, key="--storage", value=root, message=f"storage path {root!r} {reason}")


def _answer(ref) -> str | None | Exception:
    """What the node read (None: no such file there), or the error that kept it from reading."""
    import ray

    try:
        return ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - reported as a warning, not taken as evidence
        return exc
