"""Parity with real Keras 3 for convolutional layers and models: the same layer
configurations, weights and inputs give the outputs Keras gave; the convolutional seed
models give Keras's summaries, parameter counts and predictions; and one SGD step on a
small conv net with BatchNormalization gives Keras's loss and weights.

The data is tests/reference/data/cnn, made by tests/reference/make_cnn_reference.py
with Keras 3.15.1 (JAX backend) in a separate venv; README.md there describes it.
Only pyfuncnet's public Keras API is used here.
"""

import json
import os

import numpy as np
import pytest

import pyfuncnet as keras
from reference.cnn_models import BUILDERS

DATA = os.path.join(os.path.dirname(__file__), "reference", "data", "cnn")
# Kwargs that stay lists; every other list in the stored kwargs becomes a tuple, as in
# the generator (kernel_size=(2, 3), padding=((1, 0), (2, 3)), ...).
LIST_KWARGS = ("axis",)
RTOL = 1e-5
SUMMARY_VARIANTS = [
    ("default", {}),
    ("line_length_120", {"line_length": 120}),
    ("show_trainable", {"show_trainable": True}),
    ("expand_nested", {"expand_nested": True}),
]


def _read_json(*parts):
    with open(os.path.join(DATA, *parts), encoding="utf-8") as handle:
        return json.load(handle)


LAYER_CASES = {record["id"]: record for record in _read_json("layers.json")["cases"]}
TRAINING_CASES = sorted(case_id for case_id, record in LAYER_CASES.items() if record["training"])
WEIGHTED_CASES = sorted(case_id for case_id, record in LAYER_CASES.items() if record["weights"])
# train_step_convnet is checked by the training-step tests (and its structure here too).
MODEL_NAMES = sorted(BUILDERS)


_layer_arrays = None


def layer_arrays():
    """The arrays of every layer case (loaded once)."""
    global _layer_arrays
    if _layer_arrays is None:
        with np.load(os.path.join(DATA, "layers.npz")) as archive:
            _layer_arrays = {key: archive[key] for key in archive.files}
    return _layer_arrays


def python_kwargs(stored):
    """Constructor kwargs from their JSON form: lists become tuples, except `axis`."""

    def tuples(value):
        if isinstance(value, list):
            return tuple(tuples(v) for v in value)
        return value

    return {k: (v if k in LIST_KWARGS else tuples(v)) for k, v in stored.items()}


def assert_close(got, want, rtol=RTOL, what=""):
    """`got` equals `want` within rtol, with an absolute tolerance of rtol * max|want|.

    Values near zero come out of sums of terms of the output's size, so their error is
    measured against the output's magnitude, not their own.
    """
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, Keras {want.shape}"
    scale = float(np.abs(want).max()) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-6), err_msg=what)


def case_weights(case_id, prefix="weight"):
    record = LAYER_CASES[case_id]
    arrays = layer_arrays()
    return [arrays[f"{case_id}/{prefix}_{index}"] for index in range(len(record["weights"]))]


def make_layer(case_id):
    """The case's layer, built for its input and given its reference weights."""
    record = LAYER_CASES[case_id]
    layer = getattr(keras.layers, record["class"])(**python_kwargs(record["kwargs"]))
    layer.build(tuple(record["input_shape"]))
    if record["weights"]:
        layer.set_weights(case_weights(case_id))
    return layer


# ----------------------------------------------------------------------------
# Per-layer cases


@pytest.mark.parametrize("case_id", sorted(LAYER_CASES))
def test_layer_output_matches_keras(case_id):
    layer = make_layer(case_id)
    arrays = layer_arrays()
    output = layer(arrays[f"{case_id}/input"])
    assert_close(output, arrays[f"{case_id}/output"], what=case_id)


@pytest.mark.parametrize("case_id", WEIGHTED_CASES)
def test_layer_weights_match_keras(case_id):
    record = LAYER_CASES[case_id]
    layer = getattr(keras.layers, record["class"])(**python_kwargs(record["kwargs"]))
    layer.build(tuple(record["input_shape"]))
    got = [{"name": w.name, "shape": list(w.shape), "trainable": w.trainable} for w in layer.weights]
    assert got == record["weights"]
    assert [list(np.shape(w)) for w in layer.get_weights()] == [w["shape"] for w in record["weights"]]


@pytest.mark.parametrize("case_id", sorted(LAYER_CASES))
def test_layer_symbolic_output_shape_matches_keras(case_id):
    record = LAYER_CASES[case_id]
    layer = getattr(keras.layers, record["class"])(**python_kwargs(record["kwargs"]))
    output = layer(keras.Input(shape=tuple(record["input_shape"][1:])))
    assert list(output.shape) == record["symbolic_output_shape"]


@pytest.mark.parametrize("case_id", TRAINING_CASES)
def test_layer_training_call_matches_keras(case_id):
    # BatchNormalization called eagerly with training=True: the output uses the batch
    # statistics, and the call itself updates moving_mean / moving_variance.
    layer = make_layer(case_id)
    arrays = layer_arrays()
    x = arrays[f"{case_id}/input"]
    assert_close(layer(x), arrays[f"{case_id}/output"], what=f"{case_id} inference")
    assert_close(layer(x, training=True), arrays[f"{case_id}/output_training"], what=f"{case_id} training")
    for index, (got, want) in enumerate(zip(layer.get_weights(), case_weights(case_id, "after_training/weight"))):
        assert_close(got, want, what=f"{case_id} weight {index} after the training call")


# ----------------------------------------------------------------------------
# Seed models


def load_model_data(name):
    meta = _read_json("models", f"{name}.json")
    with np.load(os.path.join(DATA, "models", f"{name}.npz")) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return meta, arrays


def numbered(arrays, prefix):
    keys = sorted((k for k in arrays if k.startswith(prefix + "_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    return [arrays[k] for k in keys]


def build(name):
    keras.backend.clear_session()
    return BUILDERS[name](keras)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_structure_and_weights_match_keras(name):
    meta, _ = load_model_data(name)
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
    got = [{"name": w.name, "path": w.path, "shape": list(w.shape), "trainable": w.trainable} for w in model.weights]
    assert got == meta["weights"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_parameter_counts_match_keras(name):
    meta, _ = load_model_data(name)
    model = build(name)
    assert model.count_params() == meta["count_params"]
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == meta["trainable_params"]
    assert sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == meta["non_trainable_params"]


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("variant,kwargs", SUMMARY_VARIANTS, ids=[v for v, _ in SUMMARY_VARIANTS])
def test_model_summary_text_matches_keras(name, variant, kwargs, monkeypatch):
    # Keras cuts the default width to the terminal's; the reference ran with COLUMNS=200.
    monkeypatch.setenv("COLUMNS", "200")
    meta, _ = load_model_data(name)
    model = build(name)
    printed = []
    model.summary(print_fn=printed.append, **kwargs)
    assert printed == [meta["summary"][variant]]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_predictions_match_keras(name):
    _, arrays = load_model_data(name)
    model = build(name)
    model.set_weights(numbered(arrays, "weight"))
    inputs = numbered(arrays, "input")
    x = inputs[0] if len(inputs) == 1 else inputs
    predicted = model.predict(x, verbose=0)
    called = model(x)
    predicted = predicted if isinstance(predicted, (list, tuple)) else [predicted]
    called = called if isinstance(called, (list, tuple)) else [called]
    want_predicted = numbered(arrays, "predict")
    assert len(predicted) == len(want_predicted)
    for index, (got, want) in enumerate(zip(predicted, want_predicted)):
        assert_close(got, want, what=f"{name} predict output {index}")
    for index, (got, want) in enumerate(zip(called, numbered(arrays, "call"))):
        assert_close(got, want, what=f"{name} call output {index}")


# ----------------------------------------------------------------------------
# One SGD step on a conv net with BatchNormalization

TRAIN_RTOL = 5e-6


def load_train_step():
    meta = _read_json("train_step.json")
    with np.load(os.path.join(DATA, "train_step.npz")) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return meta, arrays


def compiled_train_model(meta, arrays):
    model = build(meta["model"])
    initial = [arrays[f"initial/weight_{i}"] for i in range(len(meta["weights"]))]
    model.set_weights(initial)
    model.compile(
        optimizer=keras.optimizers.SGD(**meta["compile"]["optimizer_kwargs"]),
        loss=meta["compile"]["loss"],
    )
    return model, initial


def loss_value(result):
    """train_on_batch's loss (a scalar, or the first entry of a list of results)."""
    return float(np.asarray(result).reshape(-1)[0])


@pytest.mark.parametrize("steps", [1, 2])
def test_train_step_loss_and_weights_match_keras(steps):
    meta, arrays = load_train_step()
    model, initial = compiled_train_model(meta, arrays)
    for step in range(1, steps + 1):
        loss = loss_value(model.train_on_batch(arrays["x"], arrays["y"]))
        np.testing.assert_allclose(loss, meta["losses"][step - 1], rtol=TRAIN_RTOL, err_msg=f"loss of step {step}")
    after = model.get_weights()
    want = [arrays[f"after_{steps}/weight_{i}"] for i in range(len(meta["weights"]))]
    assert len(after) == len(want)
    for index, (got, expected, start) in enumerate(zip(after, want, initial)):
        label = meta["weights"][index]["path"]
        assert_close(got, expected, rtol=TRAIN_RTOL, what=f"{label} after {steps} step(s)")
        # The update itself (small next to the weight) within 1e-3 of its own size.
        update = np.asarray(got, np.float64) - start
        expected_update = np.asarray(expected, np.float64) - start
        scale = float(np.abs(expected_update).max())
        ulp = float(np.spacing(np.abs(expected).max().astype(np.float32)))
        np.testing.assert_allclose(
            update,
            expected_update,
            rtol=1e-3,
            atol=1e-3 * scale + 2 * ulp,
            err_msg=f"{label} update after {steps} step(s)",
        )


def test_train_step_inference_after_step_matches_keras():
    # predict() after a step uses BatchNormalization's updated moving statistics.
    meta, arrays = load_train_step()
    model, _ = compiled_train_model(meta, arrays)
    model.train_on_batch(arrays["x"], arrays["y"])
    assert_close(
        model.predict(arrays["x"], verbose=0),
        arrays["after_1/predict"],
        rtol=TRAIN_RTOL * 4,
        what="predict after 1 step",
    )


def test_train_step_weights_listing_matches_keras():
    meta, arrays = load_train_step()
    model, _ = compiled_train_model(meta, arrays)
    got = [{"name": w.name, "path": w.path, "shape": list(w.shape), "trainable": w.trainable} for w in model.weights]
    assert got == meta["weights"]
