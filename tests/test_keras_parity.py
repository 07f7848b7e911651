"""Parity with real Keras 3: the same builders, the same weights, the same outputs,
weight names and summary tables as Keras produced (tests/reference/data, made by
tests/reference/make_keras_reference.py in a separate venv with Keras 3.15.1)."""

import json
import os

import numpy as np
import pytest

import pyfuncnet as keras
from reference.models import BUILDERS

DATA = os.path.join(os.path.dirname(__file__), "reference", "data")


def load(name):
    with open(os.path.join(DATA, "models", f"{name}.json")) as f:
        meta = json.load(f)
    arrays = np.load(os.path.join(DATA, "models", f"{name}.npz"))
    return meta, arrays


def numbered(arrays, prefix):
    keys = sorted((k for k in arrays.files if k.startswith(prefix + "_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    return [arrays[k] for k in keys]


def build(name):
    keras.backend.clear_session()
    return BUILDERS[name](keras)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_structure_and_weights_match_keras(name):
    meta, _ = load(name)
    model = build(name)
    assert model.name == meta["name"]
    assert type(model).__name__ == meta["class"]
    assert [layer.name for layer in model.layers] == meta["layer_names"]
    assert [type(layer).__name__ for layer in model.layers] == meta["layer_classes"]
    assert [t.name for t in model.inputs] == meta["input_tensor_names"]
    assert [list(t.shape) for t in model.inputs] == meta["input_shapes"]
    assert [list(t.shape) for t in model.outputs] == meta["output_shapes"]
    if meta["output_names"] is not None:
        assert model.output_names == meta["output_names"]
    assert model.count_params() == meta["count_params"]
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == meta["trainable_params"]
    got = [{"name": w.name, "path": w.path, "shape": list(w.shape), "trainable": w.trainable} for w in model.weights]
    assert got == meta["weights"]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_outputs_match_keras_with_the_same_weights(name):
    _, arrays = load(name)
    model = build(name)
    model.set_weights(numbered(arrays, "weight"))
    inputs = numbered(arrays, "input")
    x = inputs if len(inputs) > 1 or name == "feature_extraction" else inputs[0]
    predicted = model.predict(x, verbose=0)
    called = model(x)
    predicted = predicted if isinstance(predicted, list) else [predicted]
    called = called if isinstance(called, list) else [called]
    for got, want in zip(predicted, numbered(arrays, "predict")):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(called, numbered(arrays, "call")):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize(
    "variant,kwargs",
    [("default", {}), ("line_length_120", {"line_length": 120}), ("show_trainable", {"show_trainable": True}), ("expand_nested", {"expand_nested": True})],
)
def test_summary_text_matches_keras(name, variant, kwargs, monkeypatch):
    # Keras cuts the default width to the terminal's; the reference ran with COLUMNS=200.
    monkeypatch.setenv("COLUMNS", "200")
    meta, _ = load(name)
    model = build(name)
    printed = []
    model.summary(print_fn=printed.append, **kwargs)
    assert printed == [meta["summary"][variant]]
