"""trainables.validation: the structured input error, the one did-you-mean, the predicates."""

from __future__ import annotations

import dataclasses
import math
import pickle

import pytest

from trainables.config import ConfigError, TrainConfig
from trainables.validation import (
    NOT_GIVEN,
    InputError,
    did_you_mean,
    format_problem,
    is_int,
    is_number,
    is_probability,
)

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


def test_message_is_built_from_the_fields():
    err = InputError("must be > 0", source="run.yaml", key="temperature", value=0.0)
    assert str(err) == "run.yaml: temperature=0.0: must be > 0"
    assert (err.source, err.key, err.value, err.reason) == ("run.yaml", "temperature", 0.0, "must be > 0")
    assert err.detail == "temperature=0.0: must be > 0"
    assert isinstance(err, ValueError)
    # parts that are not given are left out; None is a value, NOT_GIVEN is not
    assert str(InputError("file not found", source="nope.yaml")) == "nope.yaml: file not found"
    assert str(InputError("no value", key="photo_patches")) == "photo_patches: no value"
    assert str(InputError("needs data_root", key="data_root", value=None)) == "data_root=None: needs data_root"
    assert format_problem(None, None, NOT_GIVEN, "just a reason") == "just a reason"


def test_a_plain_message_and_an_explicit_message():
    plain = InputError("something is wrong")
    assert str(plain) == plain.reason == "something is wrong"
    assert plain.source is plain.key is None and plain.value is NOT_GIVEN
    worded = InputError("cannot identify image", source="a/b.png", message="cannot read the image file a/b.png")
    assert str(worded) == "cannot read the image file a/b.png" and worded.source == "a/b.png"


def test_located_keeps_class_and_fields():
    err = ConfigError("must be >= 1", key="epochs", value=0).located("--set")
    assert type(err) is ConfigError and str(err) == "--set: epochs=0: must be >= 1"
    assert (err.key, err.value, err.reason) == ("epochs", 0, "must be >= 1")


def test_fields_survive_pickling():
    """Errors cross process boundaries (Ray tasks, DataLoader workers) as pickles."""
    err = pickle.loads(pickle.dumps(ConfigError("must be > 0", source="x.yaml", key="lr", value=0.0)))
    assert type(err) is ConfigError and str(err) == "x.yaml: lr=0.0: must be > 0"
    assert (err.source, err.key, err.value, err.reason) == ("x.yaml", "lr", 0.0, "must be > 0")
    assert pickle.loads(pickle.dumps(NOT_GIVEN)) is NOT_GIVEN


def test_config_errors_carry_their_fields():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"temperature": -1.0}, source="run.yaml")
    err = info.value
    assert (err.source, err.key, err.value) == ("run.yaml", "temperature", -1.0)
    assert err.reason == "must be a finite number > 0"
    assert str(err) == "run.yaml: temperature=-1.0: must be a finite number > 0"
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"epochs": "ten"}, source="--set")
    assert (info.value.key, info.value.value, info.value.reason) == ("epochs", "ten", "expected an integer, got str")


@pytest.mark.parametrize("typo, hint", [
    ("tempreature", " (did you mean 'temperature'?)"),  # a swap: difflib
    ("warmup", " (did you mean 'warmup_epochs'?)"),  # a prefix beats an edit-distance neighbour ('amp')
    ("queue", " (did you mean 'queue_size'?)"),  # not 'enqueue'
    ("blur", " (did you mean 'blur_prob' or 'blur_sigma'?)"),  # not 'lr'
    ("knn", " (did you mean 'knn_k' or 'knn_temperature'?)"),  # at most two
    ("momentum", " (did you mean 'key_momentum'?)"),
    ("batchsize", " (did you mean 'batch_size'?)"),
    ("strategy", " (did you mean 'attraction_strategy'?)"),  # a substring, last
    ("zzzz", ""),
])
def test_did_you_mean_on_config_keys(typo, hint):
    assert did_you_mean(typo, FIELDS) == hint


def test_did_you_mean_on_names():
    strategies = ("moco_v2", "leoclr", "leoclr_random_original", "attract_all")
    assert did_you_mean("leoclr_random", strategies) == " (did you mean 'leoclr_random_original'?)"
    assert did_you_mean("resnet34", ("small_cnn", "resnet18_cifar", "resnet18", "resnet50")) == \
        " (did you mean 'resnet50'?)"
    assert did_you_mean("demoo", ("demo", "smoke", "table8")) == " (did you mean 'demo'?)"


def test_predicates():
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_number(1) and is_number(0.5) and not is_number(False)
    assert not is_number(math.nan) and not is_number(math.inf) and not is_number("1")
    assert is_probability(0) and is_probability(1.0) and not is_probability(1.5) and not is_probability(-0.1)
