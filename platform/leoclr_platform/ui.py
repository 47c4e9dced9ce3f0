"""`leoclr ui`: the MLflow UI on the project's store, opened where a researcher starts.

MLflow 3 opens an experiment in its GenAI (traces) view unless the experiment's kind says
otherwise, and has no saved runs-table view; so `serve_ui` tags every leoclr experiment as
model training (`mlflow.experimentKind = custom_model_development`), starts `mlflow server`
bound to 127.0.0.1, waits until it answers /health, and only then prints (and with `open_browser`
opens) the URL of the latest leoclr experiment's runs table in the model-training view.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Callable

#: The experiment tag MLflow 3's UI reads to pick the view, and the model-training value.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def tag_experiments(uri: str, prefix: str = "leoclr/") -> list:
    """Mark the store's leoclr experiments as model training; returns them, latest first."""
    from leoclr_platform.tracking import client

    c = client(uri)
    found = [e for e in c.search_experiments(max_results=1000) if e.name.startswith(prefix)]
    for exp in found:
        if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return sorted(found, key=lambda e: e.last_update_time or e.creation_time or 0, reverse=True)


def runs_url(base: str, experiment_id: str | None) -> str:
    """The runs table of an experiment in the model-training view (or the experiment list)."""
    if experiment_id is None:
        return f"{base}/"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def wait_for_health(base: str, server: subprocess.Popen, timeout: float = 600.0,
                    sleep: Callable[[float], None] = time.sleep) -> bool:
    """Poll `<base>/health` until it answers 200 (True), the server exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        sleep(0.5)
    return False


def server_command(uri: str, host: str, port: int) -> list[str]:
    """`mlflow server` for a local SQLite store (artifacts next to it), one worker."""
    from leoclr_platform import tracking

    artifacts = tracking.sqlite_path(uri).parent / "mlartifacts"
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return [shutil.which("mlflow", path=path) or "mlflow", "server", "--backend-store-uri", uri,
            "--artifacts-destination", str(artifacts), "--host", host, "--port", str(port), "--workers", "1"]


def serve_ui(uri: str, *, host: str = "127.0.0.1", port: int = 5000, open_browser: bool = False,
             experiment: str | None = None, out: Callable[[str], None] = print) -> int:
    """Serve the UI for the local store `uri` until Ctrl-C; the URL is printed once it answers."""
    from leoclr_platform import tracking

    tracking.check_store(uri)  # creates the schema if this is a fresh store
    experiments = tag_experiments(uri)
    chosen = [e for e in experiments if experiment is None or e.name == experiment]
    if host not in ("127.0.0.1", "localhost"):
        out(f"leoclr: note: binding {host}: anyone who can reach this port can read and change the store; "
            "MLflow also checks the Host header (add --allowed-hosts through `mlflow server` if needed)")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown}:{port}"
    out(f"MLflow UI for {uri}: starting the server (the link follows once it answers; Ctrl-C stops it)")
    server = subprocess.Popen(server_command(uri, host, port))
    try:
        if not wait_for_health(base, server):
            out(f"leoclr: error: the MLflow server did not answer {base}/health (exit status {server.poll()})")
            server.terminate()
            return 1
        url = runs_url(base, chosen[0].experiment_id if chosen else None)
        what = f"experiment {chosen[0].name!r}" if chosen else "no leoclr experiment yet"
        out(f"  open {url}  ({what}; all experiments: {base}/)")
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        server.wait(timeout=30)
        return 0
