"""`leoclr promote` on a sweep recorded in a real SQLite store (no Ray): the best finished trial
registered with its lineage, the alias moved, the same run's version reused, refusals."""

from __future__ import annotations

import pytest

from leoclr_platform.errors import RegistryError
from leoclr_platform.registry import parse_model_uri, promote, resolve_model_version
from leoclr_platform.tracking import client
from mlflow_checks import tracked_runs


def quiet(line: str) -> None:
    pass


def test_the_best_finished_trial_is_registered_with_its_lineage(recorded_sweep):
    uri = recorded_sweep["uri"]
    c, parent, runs = tracked_runs(uri, "s1")
    printed = []
    first = promote(uri, sweep="s1", out=printed.append)
    best = runs["t2"]  # the highest val_knn_top1 of the finished trials
    assert first["run_id"] == best.info.run_id and first["alias"] == "candidate" and first["version"] == "1"
    assert first["previous_version"] is None
    version = c.get_model_version_by_alias("leoclr-encoder", "candidate")
    assert version.run_id == best.info.run_id
    assert version.tags["sweep"] == "s1" and version.tags["trial_id"] == "t2"
    assert version.tags["config_hash"] == best.data.tags["config_hash"]
    assert version.tags["git_commit"] == parent.data.tags["git_commit"]
    assert float(version.tags["objective_value"]) == pytest.approx(best.data.metrics["val_knn_top1"], abs=1e-3)
    assert printed[0].startswith(f"promoted run {best.info.run_id} (trial t2, moco_v2, val_knn_top1=")
    assert printed[1] == "  evaluate it: leoclr evaluate models:/leoclr-encoder@candidate"


def test_promoting_again_reuses_the_version_and_another_run_moves_the_alias(recorded_sweep):
    uri = recorded_sweep["uri"]
    c, _, runs = tracked_runs(uri, "s1")
    first = promote(uri, sweep="s1", out=quiet)
    assert promote(uri, sweep="s1", out=quiet)["version"] == first["version"]
    moved = promote(uri, run_id=runs["t1"].info.run_id, out=quiet)
    assert moved["previous_version"] == first["version"] != moved["version"]
    assert c.get_model_version_by_alias("leoclr-encoder", "candidate").run_id == runs["t1"].info.run_id
    champion = promote(uri, run_id=runs["t1"].info.run_id, alias="champion", model_name="other", out=quiet)
    assert champion["model_uri"] == "models:/other@champion" and champion["version"] == "1"


def test_what_cannot_be_promoted_is_refused_with_the_reason(recorded_sweep):
    uri = recorded_sweep["uri"]
    _, _, runs = tracked_runs(uri, "s1")
    stopped = runs["t3"].info.run_id
    with pytest.raises(RegistryError, match=rf"^run {stopped} \(leoclr t=0.4 m=0.99 enq=both #t3 \[stopped@1\], FINISHED\) has no logged encoder"):
        promote(uri, run_id=stopped, out=quiet)
    with pytest.raises(RegistryError, match=r"^--run-id 0123: no such run in sqlite:///"):
        promote(uri, run_id="0123", out=quiet)
    with pytest.raises(RegistryError, match=r"^sweep 's1': no finished trial with a logged encoder and a "
                                            r"'knn_top9' value to promote \(trial runs by status: "):
        promote(uri, sweep="s1", metric="knn_top9", out=quiet)


@pytest.mark.parametrize("alias", ["latest", "v3", "9lives", "a b"])
def test_an_alias_mlflow_would_misread_is_refused_before_the_store_is_opened(tmp_path, alias):
    with pytest.raises(RegistryError) as err:
        promote(f"sqlite:///{tmp_path / 'never.db'}", sweep="s1", alias=alias, out=quiet)
    assert (err.value.key, err.value.value) == ("--alias", alias)
    assert not (tmp_path / "never.db").exists()


def test_model_uris_resolve_to_versions_or_say_what_exists(recorded_sweep):
    uri = recorded_sweep["uri"]
    promote(uri, sweep="s1", out=quiet)
    c = client(uri)
    assert parse_model_uri("models:/leoclr-encoder@candidate") == ("leoclr-encoder", "candidate", None)
    assert parse_model_uri("models:/leoclr-encoder/1") == ("leoclr-encoder", None, "1")
    version, alias = resolve_model_version(c, "models:/leoclr-encoder/1")
    assert str(version.version) == "1" and alias is None
    with pytest.raises(RegistryError, match=r"is not a registered model URI"):
        parse_model_uri("leoclr-encoder@candidate")
    with pytest.raises(RegistryError, match=r"no alias @champion \(aliases: @candidate->v1\)"):
        resolve_model_version(c, "models:/leoclr-encoder@champion")
    with pytest.raises(RegistryError, match=r"has no version 7 \(versions: 1\)"):
        resolve_model_version(c, "models:/leoclr-encoder/7")
    with pytest.raises(RegistryError, match=r"no registered model named 'leoclr-encodr' \(registered: leoclr-encoder;"):
        resolve_model_version(c, "models:/leoclr-encodr@candidate")
