"""`RNN` over user-written cells and `StackedRNNCells` against real Keras 3
(reference data from tests/reference/make_rnn_cells_reference.py): outputs, states
and gradients, eagerly and in compiled models (unrolled per sequence length);
configs, copies and errors."""

import json
from pathlib import Path

import numpy as np
import pytest

import pyfuncnet as keras
from helpers import assert_close_to_reference, numbered
from pyfuncnet import layers, ops
from reference.rnn_cells import cell_classes, make_cell

DATA = Path(__file__).parent / "reference" / "data" / "rnn"
CASES = json.loads((DATA / "cells.json").read_text())["cases"]
ARRAYS = np.load(DATA / "cells.npz")
CELLS = cell_classes(keras)


def _arrays(case, prefix):
    return numbered(ARRAYS, f"{case['id']}/{prefix}")


def _layer(case):
    keras.backend.clear_session()
    layer = layers.RNN(make_cell(keras, case["cell"]), **case["kwargs"])
    layer.build(tuple(case["input_shape"]))
    layer.set_weights(_arrays(case, "weight_"))
    return layer


def _flat(outs):
    out = []
    for o in outs if isinstance(outs, (list, tuple)) else [outs]:
        out += _flat(o) if isinstance(o, (list, tuple)) else [o]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_eager_outputs_and_gradients_match_keras(case):
    layer = _layer(case)
    assert [(w.name, w.path, list(w.shape)) for w in layer.weights] == [(w["name"], w["path"], w["shape"]) for w in case["weights"]]
    x = keras.Variable(ARRAYS[f"{case['id']}/input"])
    states = [keras.Variable(s) for s in _arrays(case, "initial_state_")]
    kwargs = {}
    if case["masked"]:
        kwargs["mask"] = ARRAYS[f"{case['id']}/mask"]
    if states:
        kwargs["initial_state"] = states
    with keras.GradientTape() as tape:
        tape.watch(x)
        for s in states:
            tape.watch(s)
        outs = _flat(layer(x, **kwargs))
        loss = sum(ops.sum(o * w) for o, w in zip(outs, _arrays(case, "w_out_")))
    want = _arrays(case, "output_")
    assert len(outs) == len(want)
    for i, (o, w) in enumerate(zip(outs, want)):
        assert_close_to_reference(np.asarray(o), w, f"output {i}")
    grads = tape.gradient(loss, [x, *states, *layer.trainable_weights])
    names = ["input"] + [f"initial_state_{i}" for i in range(len(states))] + [f"weight_{i}" for i in range(len(layer.weights))]
    for name, g in zip(names, grads):
        want = ARRAYS[f"{case['id']}/grad_{name}"]
        # A weight the loss does not reach (the two-state cell's memory kernel when
        # only outputs are used) has no gradient; JAX reports zeros.
        assert_close_to_reference(np.zeros_like(want) if g is None else np.asarray(g), want, f"gradient of {name}")


def _model(case, layer):
    """A model of the layer with an unknown time dimension: inputs x, then the
    mask, then the initial states."""
    features = case["input_shape"][2]
    x = keras.Input(shape=(None, features), name="x")
    inputs, kwargs = [x], {}
    if case["masked"]:
        kwargs["mask"] = keras.Input(shape=(None,), dtype="bool", name="mask")
        inputs.append(kwargs["mask"])
    states = _arrays(case, "initial_state_")
    if states:
        kwargs["initial_state"] = [keras.Input(shape=(s.shape[1],), name=f"state_{i}") for i, s in enumerate(states)]
        inputs += kwargs["initial_state"]
    return keras.Model(inputs, _flat(layer(x, **kwargs))), inputs


def _feeds(case):
    feeds = [ARRAYS[f"{case['id']}/input"]]
    if case["masked"]:
        feeds.append(ARRAYS[f"{case['id']}/mask"])
    return feeds + _arrays(case, "initial_state_")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_compiled_model_matches_keras(case):
    layer = _layer(case)
    model, _ = _model(case, layer)
    got = model.predict(_feeds(case), verbose=0)
    got = got if isinstance(got, list) else [got]
    for i, (o, w) in enumerate(zip(got, _arrays(case, "output_"))):
        assert o.shape == w.shape
        assert_close_to_reference(o, w, f"output {i}")


def _sum_product(y_true, y_pred):
    return ops.sum(y_true * y_pred, axis=list(range(1, len(y_pred.shape))))


# The compiled losses skip masked steps (Keras applies the output mask), which the
# reference loss does not: cases whose loss meets no mask.
UNMASKED_LOSS = [c for c in CASES if not (c["masked"] and c["kwargs"].get("return_sequences"))]


@pytest.mark.parametrize("case", UNMASKED_LOSS, ids=[c["id"] for c in UNMASKED_LOSS])
def test_compiled_training_step_follows_keras_gradients(case):
    # loss = sum_i sum(out_i * w_out_i) / batch; SGD with learning rate = batch
    # moves each weight by minus the reference gradient.
    layer = _layer(case)
    model, _ = _model(case, layer)
    batch = case["input_shape"][0]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=float(batch)), loss=[_sum_product] * len(model.outputs))
    before = [w.numpy() for w in layer.weights]
    model.train_on_batch(_feeds(case), _arrays(case, "w_out_"))
    for i, (w, b) in enumerate(zip(layer.weights, before)):
        assert_close_to_reference(b - w.numpy(), ARRAYS[f"{case['id']}/grad_weight_{i}"], f"step of weight {i}")


def _np_minimal(x, kernel, recurrent):
    h = np.zeros((x.shape[0], kernel.shape[1]))
    outputs = []
    for t in range(x.shape[1]):
        h = x[:, t] @ kernel + h @ recurrent
        outputs.append(h)
    return np.stack(outputs, axis=1)


def test_each_sequence_length_compiles_its_own_unrolled_program():
    rng = np.random.default_rng(0)
    keras.backend.clear_session()
    x = keras.Input(shape=(None, 3))
    layer = layers.RNN(CELLS["minimal"](4), return_sequences=True)
    model = keras.Model(x, layer(x))
    kernel, recurrent = (rng.normal(size=w.shape).astype(np.float32) * 0.5 for w in layer.weights)
    layer.set_weights([kernel, recurrent])
    for steps in (7, 1, 4, 7):
        data = rng.uniform(-1, 1, size=(5, steps, 3)).astype(np.float32)
        got = model.predict(data, verbose=0)
        want = _np_minimal(data.astype(np.float64), kernel.astype(np.float64), recurrent.astype(np.float64))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(model._programs) == 3


def test_a_user_cell_trains_in_a_model():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(64, 5, 2)).astype(np.float32)
    target = data.sum(axis=(1, 2))[:, None].astype(np.float32)
    x = keras.Input(shape=(None, 2))
    model = keras.Model(x, layers.Dense(1)(layers.RNN(CELLS["two_state"](8))(x)))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    first = model.evaluate(data, target, verbose=0)
    model.fit(data, target, epochs=20, batch_size=16, verbose=0)
    assert model.evaluate(data, target, verbose=0) < 0.5 * first


def test_stacked_cells_config_round_trips_and_a_list_of_cells_stacks():
    rng = np.random.default_rng(2)
    data = rng.uniform(-1, 1, size=(3, 5, 4)).astype(np.float32)
    keras.backend.clear_session()
    rnn = layers.RNN([layers.LSTMCell(3), layers.GRUCell(2, reset_after=False)], return_sequences=True)
    assert isinstance(rnn.cell, layers.StackedRNNCells)
    want = np.asarray(rnn(data))
    config = rnn.get_config()
    assert [c["class_name"] for c in config["cell"]["config"]["cells"]] == ["LSTMCell", "GRUCell"]
    clone = layers.RNN.from_config(config)
    clone.build((None, 5, 4))
    clone.set_weights(rnn.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(data)), want)


def test_a_user_cell_comes_back_from_config_only_through_custom_objects():
    rnn = layers.RNN(CELLS["minimal"](3))
    config = rnn.get_config()
    with pytest.raises(ValueError, match="MinimalRNNCell"):
        layers.RNN.from_config(config)
    clone = layers.RNN.from_config(config, custom_objects={"MinimalRNNCell": CELLS["minimal"]})
    assert type(clone.cell).__name__ == "MinimalRNNCell" and clone.cell.units == 3


def test_bidirectional_over_a_user_cell_runs_both_directions():
    rng = np.random.default_rng(3)
    data = rng.uniform(-1, 1, size=(2, 6, 3)).astype(np.float32)
    keras.backend.clear_session()
    bi = layers.Bidirectional(layers.RNN(CELLS["minimal"](4), return_sequences=True), merge_mode=None)
    forward, backward = (np.asarray(o) for o in bi(data))
    kernel, recurrent = (w.numpy().astype(np.float64) for w in bi.forward_layer.weights)
    np.testing.assert_allclose(forward, _np_minimal(data, kernel, recurrent), rtol=1e-5, atol=1e-5)
    kernel, recurrent = (w.numpy().astype(np.float64) for w in bi.backward_layer.weights)
    # Keras flips the backward outputs back into time order.
    np.testing.assert_allclose(backward, _np_minimal(data[:, ::-1], kernel, recurrent)[:, ::-1], rtol=1e-5, atol=1e-5)


def test_bad_cells_and_states_raise_naming_the_layer():
    class NoState(keras.layers.Layer):
        def call(self, inputs, states):
            return inputs, states

    with pytest.raises(ValueError, match="state_size"):
        layers.RNN(NoState())

    class WrongStates(keras.layers.Layer):
        state_size = [2, 2]

        def call(self, inputs, states):
            return states[0], [states[0]]

    with pytest.raises(ValueError, match="returned 1 state"):
        layers.RNN(WrongStates(), name="wrong")(np.zeros((1, 3, 2), np.float32))
    with pytest.raises(ValueError, match="initial_state"):
        layers.RNN(CELLS["minimal"](2))(np.zeros((1, 3, 2), np.float32), initial_state=[np.zeros((1, 2)), np.zeros((1, 2))])


def test_bidirectional_config_passes_custom_objects_to_the_cell():
    bi = layers.Bidirectional(layers.RNN(CELLS["minimal"](2)))
    config = bi.get_config()
    with pytest.raises(ValueError, match="MinimalRNNCell"):
        layers.Bidirectional.from_config(config)
    clone = layers.Bidirectional.from_config(config, custom_objects={"MinimalRNNCell": CELLS["minimal"]})
    assert type(clone.forward_layer.cell).__name__ == "MinimalRNNCell"


def test_a_cell_that_assigns_variables_is_refused_at_build_time():
    class Normalizing(keras.layers.Layer):
        state_size = 3

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.norm = layers.BatchNormalization()

        def call(self, inputs, states):
            h = self.norm(inputs) + states[0]
            return h, [h]

    with pytest.raises(NotImplementedError, match="moving_mean"):
        layers.RNN(Normalizing())(keras.Input((None, 3)))
