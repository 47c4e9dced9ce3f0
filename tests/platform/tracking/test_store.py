"""Where tracking goes: URI resolution, the store check before compute, experiments."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from leoclr_platform import tracking as T


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LEOCLR_HOME", str(tmp_path))
    assert T.resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert T.resolve_tracking_uri() == "http://127.0.0.1:5999"
    assert T.resolve_tracking_uri("sqlite:///x.db") == f"sqlite:///{Path('x.db').absolute()}"  # never relative
    assert T.resolve_tracking_uri("my.db") == f"sqlite:///{Path('my.db').absolute()}"
    with pytest.raises(T.TrackingError, match="plain file store is not supported"):
        T.resolve_tracking_uri("file:///tmp/mlruns")
    with pytest.raises(T.TrackingError, match="--tracking-uri: 'mlruns' is not a tracking URI"):
        T.resolve_tracking_uri("mlruns")
    assert T.artifact_root_for(f"sqlite:///{tmp_path}/m.db") == (tmp_path / "mlartifacts").as_uri()


def test_an_unreachable_server_fails_in_seconds_before_compute():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.time()
    with pytest.raises(T.TrackingError, match=rf"MLflow tracking server http://127.0.0.1:{port} is not reachable"):
        T.check_store(f"http://127.0.0.1:{port}")
    assert time.time() - start < 15


def test_a_refused_uri_carries_where_it_came_from(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:./mlruns")
    with pytest.raises(T.TrackingError) as err:
        T.resolve_tracking_uri()
    assert (err.value.source, err.value.value) == ("MLFLOW_TRACKING_URI", "file:./mlruns")
    assert str(err.value).startswith("MLFLOW_TRACKING_URI: 'file:./mlruns': the plain file store")
    with pytest.raises(T.TrackingError, match=r"give a SQLite file"):
        T.resolve_tracking_uri("sqlite://")


def test_an_unwritable_sqlite_folder_is_refused(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    with pytest.raises(T.TrackingError, match=r"^tracking store sqlite:///.*/blocker/sub/m\.db: cannot create"):
        T.check_store(f"sqlite:///{blocker / 'sub' / 'm.db'}")
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(T.TrackingError, match="is not writable"):
            T.check_store(f"sqlite:///{ro / 'm.db'}")


def test_experiments_get_artifacts_next_to_a_local_store_and_a_deleted_one_is_refused(mlflow_uri, tmp_path):
    c = T.client(mlflow_uri)
    exp_id = T.ensure_experiment(c, "leoclr/my space", mlflow_uri)
    assert T.ensure_experiment(c, "leoclr/my space", mlflow_uri) == exp_id  # found, not created again
    location = c.get_experiment(exp_id).artifact_location
    assert location == (tmp_path / "mlartifacts" / "leoclr_my_space").as_uri()
    c.delete_experiment(exp_id)
    with pytest.raises(T.TrackingError, match=r"MLflow experiment 'leoclr/my space' is deleted"):
        T.ensure_experiment(c, "leoclr/my space", mlflow_uri)


def test_use_store_leaves_the_environment_as_it_was(mlflow_uri, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    T.use_store(mlflow_uri)
    assert mlflow.get_tracking_uri() == mlflow_uri and "MLFLOW_TRACKING_URI" not in os.environ
    assert T.redact_uri("http://user:pw@host:5000/x") == "http://***@host:5000/x"
    assert T.is_local_store(mlflow_uri) and T.sqlite_path(mlflow_uri) == Path(mlflow_uri[len("sqlite:///"):])
    assert not T.is_local_store("http://127.0.0.1:5000")
