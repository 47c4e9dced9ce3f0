"""What a run carries: flattened params, the config hash, provenance, hardware, no secrets."""

from __future__ import annotations

from leoclr_platform import tracking as T


def test_secrets_and_uri_credentials_are_scrubbed(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-planted-value")
    out = T.scrub({"a": "path/s3cr3t-planted-value/x", "b": "http://user:pw@host:5000", "c": "plain"})
    assert out == {"a": "path/***/x", "b": "http://***@host:5000", "c": "plain"}


def test_nested_config_values_become_readable_param_strings():
    flat = T.flatten_params({"photo_patches": {"train_per_class": 32, "scale": [0.2, 1.0]}, "lr": 0.06,
                             "data_root": None, "amp": False})
    assert flat == {"photo_patches.train_per_class": "32", "photo_patches.scale": "[0.2, 1.0]", "lr": "0.06",
                    "data_root": "None", "amp": "False"}


def test_the_config_hash_ignores_key_order_and_sees_every_value():
    a = T.config_hash({"lr": 0.06, "seed": 0})
    assert a == T.config_hash({"seed": 0, "lr": 0.06}) and len(a) == 16
    assert a != T.config_hash({"lr": 0.06, "seed": 1})


def test_provenance_names_the_commit_the_code_and_the_versions(monkeypatch):
    monkeypatch.setenv("LEOCLR_GIT_COMMIT", "abc123")
    code = T.code_version()
    assert code["git_commit"] == code["mlflow.source.git.commit"] == "abc123" and len(code["code_hash"]) == 16
    versions = T.package_versions()
    assert {"versions.python", "versions.torch", "versions.ray", "versions.optuna", "versions.mlflow"} <= set(versions)


def test_hardware_tags_say_what_one_trial_holds_and_what_the_cluster_has():
    tags = T.hardware_tags(2, 1, 0.5, {"CPU": 8.0, "GPU": 1.0, "accelerator_type:H100": 1.0})
    assert tags["hardware.per_trial"] == "2 worker(s) x (1 CPU, 0.5 GPU)"
    assert tags["hardware.accelerator"] == "H100" and tags["hardware.cluster"] == "8 CPU, 1 GPU"
    assert T.hardware_tags(1, 1, 0)["hardware.accelerator"] == "CPU" and "hardware.cluster" not in T.hardware_tags(1, 1, 0)
