"""`leoclr ui`: leoclr experiments open in MLflow's model-training view, and the link (straight to
the latest experiment's runs table) is printed only once the server answers /health."""

from __future__ import annotations

import sys
import threading
import time

from leoclr_platform import tracking, ui


def test_leoclr_experiments_are_tagged_as_model_training(mlflow_uri):
    c = tracking.client(mlflow_uri)
    created = tracking.ensure_experiment(c, "leoclr/new", mlflow_uri)  # new ones: tagged at creation
    assert c.get_experiment(created).tags[ui.EXPERIMENT_KIND_TAG] == ui.MODEL_TRAINING
    older = c.create_experiment("leoclr/older")  # e.g. made by an earlier version
    other = c.create_experiment("someone-else")
    found = ui.tag_experiments(mlflow_uri)
    assert {e.experiment_id for e in found} == {created, older}
    assert c.get_experiment(older).tags[ui.EXPERIMENT_KIND_TAG] == ui.MODEL_TRAINING
    assert ui.EXPERIMENT_KIND_TAG not in c.get_experiment(other).tags
    assert ui.runs_url("http://127.0.0.1:5000", "7") == \
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"


SLOW_SERVER = r"""
import http.server, sys, time
time.sleep(float(sys.argv[2]))  # a busy machine: the server answers late
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers(); self.wfile.write(b"OK")
    def log_message(self, *a): pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
server.timeout = 0.2
end = time.time() + 3
while time.time() < end:
    server.handle_request()
"""


def test_the_link_is_printed_only_once_the_server_answers(mlflow_uri, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exp = tracking.ensure_experiment(tracking.client(mlflow_uri), "leoclr/demo", mlflow_uri)
    monkeypatch.setattr(ui, "server_command", lambda uri, host, p: [sys.executable, "-c", SLOW_SERVER, str(p), "1.5"])
    said: list[tuple[float, str]] = []
    start = time.monotonic()
    thread = threading.Thread(target=lambda: ui.serve_ui(mlflow_uri, port=port,
                                                         out=lambda line: said.append((time.monotonic(), line))))
    thread.start()
    thread.join(timeout=60)
    links = [(t, line) for t, line in said if "/#/experiments/" in line]
    assert len(links) == 1, said
    assert links[0][0] - start >= 1.5  # not before the server answered
    assert f"http://127.0.0.1:{port}/#/experiments/{exp}/runs?workflowType=machine_learning" in links[0][1]


def test_a_server_that_never_answers_is_reported(mlflow_uri, monkeypatch):
    monkeypatch.setattr(ui, "server_command", lambda uri, host, p: [sys.executable, "-c", "raise SystemExit(3)"])
    said: list[str] = []
    assert ui.serve_ui(mlflow_uri, port=1, out=said.append) == 1
    assert "did not answer" in said[-1] and not any("/#/experiments/" in line for line in said)
