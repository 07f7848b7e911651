"""Recurrent dropout (Keras's per-gate cells, against a float64 NumPy recurrence with
the same masks) and stateful recurrent layers (states carried from batch to batch in
predict, evaluate, fit and eager calls; reset; errors)."""

import numpy as np
import pytest

import pyfuncnet as keras
from pyfuncnet import layers, ops

RECURRENT = [
    ("LSTM", {}),
    ("GRU", {}),
    ("GRU", {"reset_after": False}),
    ("SimpleRNN", {}),
]
IDS = ["lstm", "gru", "gru_reset_before", "simple_rnn"]


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _np_per_gate(kind, kwargs, weights, x, input_masks, recurrent_masks):
    """Keras's implementation-1 cells (per-gate dropout masks) over the sequence, float64."""
    kernel, recurrent, bias = weights
    u = recurrent.shape[0]
    h = np.zeros((x.shape[0], u))
    c = np.zeros_like(h)

    def block(w, g):
        return w[..., g * u : (g + 1) * u]

    input_bias = bias[0] if kind == "GRU" and kwargs.get("reset_after", True) else bias
    outputs = []
    for t in range(x.shape[1]):
        xs = [x[:, t] * m for m in input_masks] if input_masks is not None else [x[:, t]] * len(recurrent_masks)
        gx = [xs[g] @ block(kernel, g) + block(input_bias, g) for g in range(len(recurrent_masks))]
        hd = [h * m for m in recurrent_masks]
        if kind == "LSTM":
            z = [gx[g] + hd[g] @ block(recurrent, g) for g in range(4)]
            c = _sigmoid(z[1]) * c + _sigmoid(z[0]) * np.tanh(z[2])
            h = _sigmoid(z[3]) * np.tanh(c)
        elif kind == "SimpleRNN":
            h = np.tanh(gx[0] + hd[0] @ recurrent)
        elif kwargs.get("reset_after", True):
            rb = bias[1]
            z = _sigmoid(gx[0] + hd[0] @ block(recurrent, 0) + block(rb, 0))
            r = _sigmoid(gx[1] + hd[1] @ block(recurrent, 1) + block(rb, 1))
            hh = np.tanh(gx[2] + r * (hd[2] @ block(recurrent, 2) + block(rb, 2)))
            h = z * h + (1 - z) * hh
        else:
            z = _sigmoid(gx[0] + hd[0] @ block(recurrent, 0))
            r = _sigmoid(gx[1] + hd[1] @ block(recurrent, 1))
            hh = np.tanh(gx[2] + (r * hd[2]) @ block(recurrent, 2))
            h = z * h + (1 - z) * hh
        outputs.append(h)
    return np.stack(outputs, axis=1)


def _captured_masks(cell):
    """Records the masks each call of the layer draws (the cell's `_step`)."""
    seen = []
    prepare = cell._prepare_step

    def recording(*args, **kwargs):
        prepare(*args, **kwargs)
        seen.append(cell._step)

    cell._prepare_step = recording
    return seen


def _layer(kind, kwargs, units=4, features=3, dropout=0.25, recurrent_dropout=0.4, seed=3, **extra):
    layer = getattr(layers, kind)(units, dropout=dropout, recurrent_dropout=recurrent_dropout, seed=seed, return_sequences=True, **kwargs, **extra)
    layer.build((None, 5, features))
    rng = np.random.default_rng(0)
    layer.set_weights([(rng.normal(size=w.shape) * 0.5).astype(np.float32) for w in layer.weights])
    return layer


@pytest.mark.parametrize("kind,kwargs", RECURRENT, ids=IDS)
@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_recurrent_dropout_follows_keras_per_gate_cells(kind, kwargs, dropout):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(3, 5, 3)).astype(np.float32)
    layer = _layer(kind, kwargs, dropout=dropout)
    seen = _captured_masks(layer.cell)
    got = np.asarray(layer(x, training=True))
    input_masks, recurrent_masks, _ = seen[-1]
    gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[kind]
    assert len(recurrent_masks) == gates and (input_masks is None) == (dropout == 0.0)
    for masks, rate, width in ((input_masks, dropout, 3), (recurrent_masks, 0.4, 4)):
        for m in masks or []:
            m = np.asarray(m)
            assert m.shape == (3, width)
            assert set(np.unique(m)) <= {0.0, np.float32(1.0 / (1.0 - rate))}
    if gates > 1:
        assert not all(np.array_equal(np.asarray(recurrent_masks[0]), np.asarray(m)) for m in recurrent_masks[1:])
    f64 = [None if input_masks is None else [np.asarray(m, np.float64) for m in input_masks], [np.asarray(m, np.float64) for m in recurrent_masks]]
    want = _np_per_gate(kind, kwargs, [w.numpy().astype(np.float64) for w in layer.weights], x.astype(np.float64), *f64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,kwargs", RECURRENT, ids=IDS)
def test_recurrent_dropout_gradients_match_finite_differences(kind, kwargs):
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(2, 4, 3)).astype(np.float32)
    w_out = rng.uniform(-1, 1, size=(2, 4, 4))
    layer = _layer(kind, kwargs)
    seen = _captured_masks(layer.cell)
    with keras.GradientTape() as tape:
        loss = ops.sum(layer(x, training=True) * w_out.astype(np.float32))
    grads = tape.gradient(loss, layer.trainable_weights)
    input_masks, recurrent_masks, _ = seen[-1]
    masks = [[np.asarray(m, np.float64) for m in input_masks], [np.asarray(m, np.float64) for m in recurrent_masks]]
    weights = [w.numpy().astype(np.float64) for w in layer.weights]

    def reference(ws):
        return float(np.sum(_np_per_gate(kind, kwargs, ws, x.astype(np.float64), *masks) * w_out))

    eps = 1e-6
    for k, (weight, grad) in enumerate(zip(weights, grads)):
        for position in rng.choice(weight.size, size=min(8, weight.size), replace=False):
            index = np.unravel_index(position, weight.shape)
            moved = [w.copy() for w in weights]
            moved[k][index] += eps
            up = reference(moved)
            moved[k][index] -= 2 * eps
            numeric = (up - reference(moved)) / (2 * eps)
            assert abs(numeric - float(np.asarray(grad)[index])) < 1e-4 * max(1.0, abs(numeric)), (k, index)


@pytest.mark.parametrize("kind,kwargs", RECURRENT, ids=IDS)
def test_recurrent_dropout_acts_in_training_steps_only(kind, kwargs):
    rng = np.random.default_rng(4)
    data = rng.uniform(-1, 1, size=(8, 5, 3)).astype(np.float32)
    target = rng.normal(size=(8, 5, 4)).astype(np.float32)

    def model(**layer_args):
        keras.utils.set_random_seed(7)
        x = keras.Input(shape=(None, 3))
        m = keras.Model(x, getattr(layers, kind)(4, return_sequences=True, **kwargs, **layer_args)(x))
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return m

    dropped = model(recurrent_dropout=0.5, seed=5)
    plain = model()
    plain.set_weights(dropped.get_weights())
    np.testing.assert_array_equal(dropped.predict(data, verbose=0), plain.predict(data, verbose=0))
    np.testing.assert_array_equal(dropped.evaluate(data, target, verbose=0), plain.evaluate(data, target, verbose=0))
    # A training step sees the masks: its loss differs from the inference loss.
    assert dropped.train_on_batch(data, target) != plain.evaluate(data, target, verbose=0)
    # The same seed and data train the same weights.
    again = model(recurrent_dropout=0.5, seed=5)
    first = model(recurrent_dropout=0.5, seed=5)
    again.set_weights(first.get_weights())
    for m in (first, again):
        m.fit(data, target, epochs=2, batch_size=4, shuffle=False, verbose=0)
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- stateful


def _stateful_pair(make, batch=4, features=3):
    keras.backend.clear_session()
    x = keras.Input(batch_shape=(batch, None, features))
    layer = make(stateful=True, return_sequences=True)
    stateful = keras.Model(x, layer(x))
    plain = keras.Model(x, make(return_sequences=True)(x))
    plain.set_weights(stateful.get_weights())
    return layer, stateful, plain


STATEFUL = {
    "lstm": lambda **k: layers.LSTM(5, **k),
    "gru": lambda **k: layers.GRU(5, **k),
    "stacked": lambda **k: layers.RNN([layers.SimpleRNNCell(3), layers.LSTMCell(2)], **k),
    "user_cell": lambda **k: layers.RNN(_Accumulator(), **k),
}


class _Accumulator(keras.layers.Layer):
    """A running sum of x W: state h_t = h_{t-1} + x_t W (a user cell)."""

    state_size = 2

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 2), name="kernel")

    def call(self, inputs, states):
        h = states[0] + ops.matmul(inputs, self.kernel)
        return h, [h]


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_stateful_layers_carry_states_across_batches(name):
    rng = np.random.default_rng(5)
    data = rng.normal(size=(4, 10, 3)).astype(np.float32)
    layer, stateful, plain = _stateful_pair(STATEFUL[name])
    whole = plain.predict(data, batch_size=4, verbose=0)
    # The states are not weights: the same parameters as the plain layer.
    assert len(stateful.weights) == len(plain.weights) and stateful.count_params() == plain.count_params()
    assert all(s.shape[0] == 4 for s in layer.states)
    parts = [stateful.predict(data[:, :6], batch_size=4, verbose=0), stateful.predict(data[:, 6:], batch_size=4, verbose=0)]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-6, atol=1e-6)
    layer.reset_states()
    assert all(not s.numpy().any() for s in layer.states)
    parts = [np.asarray(stateful(data[:, :4])), np.asarray(stateful(data[:, 4:]))]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-6, atol=1e-6)
    layer.reset_states()
    stateful.compile(optimizer="sgd", loss="mse")
    assert stateful.evaluate(data[:, :5], whole[:, :5], batch_size=4, verbose=0) < 1e-10
    assert stateful.evaluate(data[:, 5:], whole[:, 5:], batch_size=4, verbose=0) < 1e-10


def test_fit_carries_states_from_batch_to_batch():
    rng = np.random.default_rng(6)
    data = rng.normal(size=(8, 3, 3)).astype(np.float32)
    layer, stateful, plain = _stateful_pair(STATEFUL["lstm"])
    stateful.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    stateful.fit(data, np.zeros((8, 3, 5), np.float32), batch_size=4, shuffle=False, epochs=1, verbose=0)
    # Batch 2 started from batch 1's final states: the same as one sequence of 6 steps.
    joined = np.concatenate([data[:4], data[4:]], axis=1)
    out = plain.predict(joined, batch_size=4, verbose=0)
    kept = [s.numpy() for s in layer.states]
    np.testing.assert_allclose(kept[0], out[:, -1], rtol=1e-6, atol=1e-6)


def test_stateful_errors_and_bidirectional_reset():
    with pytest.raises(ValueError, match="batch size must be static"):
        layers.LSTM(3, stateful=True)(keras.Input(shape=(None, 2)))
    layer = layers.LSTM(3, stateful=True)
    layer(np.zeros((2, 4, 2), np.float32))
    with pytest.raises(ValueError, match="batch size"):
        layer(np.zeros((3, 4, 2), np.float32))
    with pytest.raises(AttributeError, match="stateful"):
        layers.Bidirectional(layers.LSTM(2)).reset_states()
    bi = layers.Bidirectional(layers.GRU(2, stateful=True))
    bi(np.ones((2, 3, 2), np.float32))
    assert all(s.numpy().any() for s in bi.states)
    bi.reset_states()
    assert not any(s.numpy().any() for s in bi.states)


def test_a_subclassed_model_and_a_sequential_without_input_carry_states():
    rng = np.random.default_rng(7)
    data = rng.normal(size=(8, 5, 3)).astype(np.float32)

    class Model(keras.Model):
        def __init__(self):
            super().__init__()
            self.lstm = layers.LSTM(2, stateful=True)

        def call(self, x):
            return self.lstm(x)

    model = Model()
    model(data[:4])
    model.lstm.reset_states()
    predicted = model.predict(data, batch_size=4, verbose=0)
    model.lstm.reset_states()
    eager = np.concatenate([np.asarray(model(data[:4])), np.asarray(model(data[4:]))])
    np.testing.assert_allclose(predicted, eager, rtol=1e-6, atol=1e-6)
    # Built from the data, as Keras does: the batch size is the data's.
    sequential = keras.Sequential([layers.GRU(2, stateful=True)])
    assert np.asarray(sequential(data[:4])).shape == (4, 2)
    assert [s.shape for s in sequential.layers[0].states] == [(4, 2)]


def test_a_batch_of_another_size_gets_kerass_error_and_changes_no_state():
    data = np.ones((6, 3, 2), np.float32)
    x = keras.Input(batch_shape=(4, None, 2))
    layer = layers.LSTM(2, stateful=True)
    model = keras.Model(x, layer(x))
    with pytest.raises(ValueError, match="stateful"):
        model.predict(data[:2], verbose=0)
    assert not any(s.numpy().any() for s in layer.states)


def test_dropout_masks_need_a_known_batch_size():
    cell = layers.LSTMCell(4, recurrent_dropout=0.5)
    with pytest.raises(ValueError, match="known batch size"):
        cell(keras.Input((3,)), [keras.Input((4,)), keras.Input((4,))], training=True)
