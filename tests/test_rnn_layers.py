"""LSTM, GRU and SimpleRNN against real Keras 3 (reference data from
tests/reference/make_rnn_reference.py): outputs, states and the gradients of a
fixed scalar loss with respect to the input, the initial states and every weight,
with return_sequences / return_state / go_backwards / masks / initial_state; the
configs and weights Keras reports; a masked Embedding -> LSTM -> Dense model's
predictions, masks, loss and one SGD step."""

import json
from pathlib import Path

import numpy as np
import pytest

import pyfuncnet as keras
from helpers import assert_close_to_reference, numbered
from pyfuncnet import layers

DATA = Path(__file__).parent / "reference" / "data" / "rnn"
META = json.loads((DATA / "layers.json").read_text())
ARRAYS = np.load(DATA / "layers.npz")

# Keras's own backends disagree on these: with `unroll=True` JAX (and torch and
# TensorFlow always) output 0 at masked steps before the first valid one and
# ignore zero_output_for_mask, while JAX's scan (which the other cases follow,
# and pyfuncnet with it whatever `unroll` says) outputs the kept state.
BACKEND_SPECIFIC = ("_mask_unroll_initial_state", "_mask_unroll_zero_output")
CASES = [c for c in META["cases"] if not c["id"].endswith(BACKEND_SPECIFIC)]


def _arrays(case, prefix):
    return numbered(ARRAYS, f"{case['id']}/{prefix}")


def _layer(case):
    layer = getattr(layers, case["class"])(**case["kwargs"])
    layer.build(tuple(case["input_shape"]))
    layer.set_weights(_arrays(case, "weight_"))
    return layer


def _call(layer, case, x, states):
    kwargs = {}
    if case["masked"]:
        kwargs["mask"] = ARRAYS[f"{case['id']}/mask"]
    if case["initial_state"]:
        kwargs["initial_state"] = states
    out = layer(x, **kwargs)
    return out if isinstance(out, list) else [out]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_outputs_and_gradients_match_keras(case):
    layer = _layer(case)
    assert [w.shape for w in layer.weights] == [tuple(w["shape"]) for w in case["weights"]]
    # Paths below the layer's own (unique) name: "lstm/lstm_cell/kernel".
    assert [w.path.split("/", 1)[1] for w in layer.weights] == [w["path"].split("/", 1)[1] for w in case["weights"]]
    x = keras.Variable(ARRAYS[f"{case['id']}/input"])
    states = [keras.Variable(s) for s in _arrays(case, "initial_state_")]
    with keras.GradientTape() as tape:
        tape.watch(x)
        for s in states:
            tape.watch(s)
        outs = _call(layer, case, x, states)
        loss = sum(keras.ops.sum(o * w) for o, w in zip(outs, _arrays(case, "w_out_")))
    want = _arrays(case, "output_")
    assert len(outs) == len(want)
    for i, (o, w) in enumerate(zip(outs, want)):
        assert_close_to_reference(np.asarray(o), w, f"output {i}")
    grads = tape.gradient(loss, [x, *states, *layer.trainable_weights])
    names = ["input"] + [f"initial_state_{i}" for i in range(len(states))] + [f"weight_{i}" for i in range(len(layer.weights))]
    for name, g in zip(names, grads):
        assert_close_to_reference(np.asarray(g), ARRAYS[f"{case['id']}/grad_{name}"], f"gradient of {name}")


@pytest.mark.parametrize("case", CASES[:8], ids=[c["id"] for c in CASES[:8]])
def test_symbolic_shapes_and_masks(case):
    layer = _layer(case)
    x = keras.Input(shape=tuple(case["input_shape"][1:]))
    kwargs = {}
    if case["masked"]:
        kwargs["mask"] = keras.Input(shape=(case["input_shape"][1],), dtype="bool")
    out = layer(x, **kwargs)
    outs = out if isinstance(out, list) else [out]
    assert [tuple(o.shape) for o in outs] == [tuple(s) for s in case["symbolic_output_shapes"]]


DEFAULTS = json.loads((DATA / "defaults.json").read_text())


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_config_weights_and_state_size_match_keras(key):
    ref = DEFAULTS[key]
    keras.backend.clear_session()
    cls = getattr(layers, key.split("_")[0])
    kwargs = {"reset_after": False} if key == "GRU_reset_after_false" else {}
    layer = cls(5, **kwargs)
    layer.build(tuple(ref["build_shape"]))
    assert [(w.name, w.path, list(w.shape)) for w in layer.weights] == [(w["name"], w["path"], w["shape"]) for w in ref["weights"]]
    assert layer.cell.state_size == ref["state_size"]
    assert type(layer.cell).__name__ == ref["cell_class"]
    config = layer.get_config()
    want = ref["config"]
    assert set(config) == set(want)
    for name, value in want.items():
        if name == "dtype" or isinstance(value, dict):
            continue
        assert config[name] == value, name
    for name in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
        assert config[name]["class_name"] == want[name]["class_name"]
    clone = cls.from_config(config)
    assert clone.get_config() == config


def test_lstm_starts_its_forget_gate_bias_at_one():
    layer = layers.LSTM(3)
    layer.build((None, 4, 2))
    bias = layer.get_weights()[2]
    np.testing.assert_array_equal(bias, np.r_[np.zeros(3), np.ones(3), np.zeros(6)])
    layer = layers.LSTM(3, unit_forget_bias=False)
    layer.build((None, 4, 2))
    np.testing.assert_array_equal(layer.get_weights()[2], np.zeros(12))


MODEL = json.loads((DATA / "masked_model.json").read_text())
MODEL_ARRAYS = np.load(DATA / "masked_model.npz")


def _masked_model():
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = layers.Embedding(12, 4, mask_zero=True, name="embedding")(tokens)
    x = layers.LSTM(5, return_sequences=True, name="lstm")(x)
    out = layers.Dense(3, name="dense")(x)
    model = keras.Model(tokens, out)
    model.set_weights([MODEL_ARRAYS[f"weight_{i}"] for i in range(6)])
    return model, out


def test_masked_embedding_lstm_model_matches_keras():
    model, out = _masked_model()
    assert [w.path for w in model.weights] == [w["path"] for w in MODEL["weights"]]
    assert out._keras_mask is not None and out._keras_mask.shape == (None, None)
    tokens, y = MODEL_ARRAYS["tokens"], MODEL_ARRAYS["y"]
    assert_close_to_reference(model.predict(tokens, verbose=0), MODEL_ARRAYS["predict"], "predict")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    assert model.evaluate(tokens, y, verbose=0) == pytest.approx(MODEL["evaluate"], rel=1e-5)
    loss = model.train_on_batch(tokens, y)
    loss = loss[0] if isinstance(loss, list) else loss
    assert loss == pytest.approx(MODEL["train_on_batch_loss"], rel=1e-5)
    for i, w in enumerate(model.get_weights()):
        assert_close_to_reference(w, MODEL_ARRAYS[f"after_sgd/weight_{i}"], f"weight {i} after one SGD step")


def test_embedding_padding_gets_no_gradient_and_changes_nothing():
    # Appending padding to every row changes neither predictions at real steps
    # nor the loss (the mask removes the padded steps from the mean).
    model, _ = _masked_model()
    tokens = MODEL_ARRAYS["tokens"]
    padded = np.concatenate([tokens, np.zeros((tokens.shape[0], 3), tokens.dtype)], axis=1)
    a = model.predict(tokens, verbose=0)
    b = model.predict(padded, verbose=0)
    np.testing.assert_allclose(b[:, : tokens.shape[1]], a, atol=1e-6)


@pytest.mark.parametrize("cell_class", [layers.LSTMCell, layers.GRUCell, layers.SimpleRNNCell])
def test_rnn_over_a_cell_round_trips_its_config_and_matches_the_layer(cell_class):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    rnn = layers.RNN(cell_class(4), return_sequences=True)
    y = np.asarray(rnn(x))
    clone = layers.RNN.from_config(rnn.get_config())
    clone.build((None, 5, 3))
    clone.set_weights(rnn.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x)), y)
    # The named layer over the same weights computes the same sequence.
    named = {layers.LSTMCell: layers.LSTM, layers.GRUCell: layers.GRU, layers.SimpleRNNCell: layers.SimpleRNN}[cell_class](4, return_sequences=True)
    named.build((None, 5, 3))
    named.set_weights(rnn.get_weights())
    np.testing.assert_array_equal(np.asarray(named(x)), y)


def test_input_dropout_keeps_one_mask_per_sample_and_feature_over_time():
    # Keras's cell dropout: x * keep / (1 - rate) with keep drawn per (sample,
    # feature) and shared by every step. With one sample and three features, the
    # training output must equal the dropout-free layer on one of the 8 masked
    # inputs; a mask drawn per step would match none of them.
    import itertools

    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 6, 3)).astype(np.float32)
    layer = layers.LSTM(4, dropout=0.5, seed=1)
    plain = layers.LSTM(4)
    layer.build((None, 6, 3))
    plain.build((None, 6, 3))
    plain.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), np.asarray(plain(x)))
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(plain(x)))
    got = np.asarray(layer(x, training=True))
    candidates = [np.asarray(plain(x * (np.array(keep, np.float32) * 2.0))) for keep in itertools.product([0, 1], repeat=3)]
    assert min(np.abs(got - c).max() for c in candidates) < 1e-6


def test_input_dropout_trains_and_predicts_deterministically():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 5, 3)).astype(np.float32)
    y = rng.standard_normal((16, 2)).astype(np.float32)
    inp = keras.Input(shape=(None, 3))
    model = keras.Model(inp, layers.Dense(2)(layers.LSTM(4, dropout=0.3)(inp)))
    model.compile(optimizer="sgd", loss="mse")
    before = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("cell_class", [layers.LSTMCell, layers.GRUCell, layers.SimpleRNNCell])
def test_a_cell_called_on_one_step_matches_the_layer_over_one_step(cell_class):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 1, 2)).astype(np.float32)
    cell = cell_class(5)
    states = [rng.standard_normal((3, 5)).astype(np.float32) for _ in np.atleast_1d(cell.state_size)]
    out, new_states = cell(x[:, 0], states)
    layer = layers.RNN(cell, return_state=True)
    want = layer(x, initial_state=states)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(want[0]))
    for s, w in zip(new_states, want[1:]):
        np.testing.assert_array_equal(np.asarray(s), np.asarray(w))


def test_bad_input_raises_naming_the_layer():
    with pytest.raises(ValueError, match="units"):
        layers.LSTM(0)
    with pytest.raises(ValueError, match="dropout"):
        layers.GRU(3, dropout=1.5)
    with pytest.raises(ValueError, match="my_lstm"):
        layers.LSTM(3, name="my_lstm")(keras.Input(shape=(4,)))
    with pytest.raises(ValueError, match="gelu"):
        layers.LSTM(3, activation="gelu")(keras.Input(shape=(5, 4)))
    lstm = layers.LSTM(3, name="two_states")
    with pytest.raises(ValueError, match="initial_state"):
        lstm(np.zeros((2, 5, 4), np.float32), initial_state=[np.zeros((2, 3), np.float32)])
    assert not lstm.built or all(np.isfinite(w).all() for w in lstm.get_weights())


@pytest.mark.parametrize("cell_class", ["LSTM", "GRU", "SimpleRNN"])
def test_return_state_gives_each_output_its_own_tensor(cell_class):
    # Without return_sequences the last output is the final state: the layer
    # still returns distinct tensors, each at its own index of the layer's node
    # (Keras shows `lstm[0][0]` for the output), with equal values.
    inp = keras.Input(shape=(5, 4))
    outs = getattr(layers, cell_class)(3, return_state=True)(inp)
    assert len({id(t) for t in outs}) == len(outs)
    assert [t._keras_history[1:] for t in outs] == [(0, k) for k in range(len(outs))]
    model = keras.Model(inp, outs)
    x = np.random.default_rng(3).random((2, 5, 4), dtype=np.float32)
    values = model.predict(x, verbose=0)
    np.testing.assert_array_equal(values[0], values[1])
