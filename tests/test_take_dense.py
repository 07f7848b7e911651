"""An Embedding read only by a Dense (or an RNN's input projection) compiles to one
lookup-and-project op that multiplies each distinct row of the batch once. Checked
against float64 NumPy with many repeated indices (the distinct-row path) and with
none (every index its own row): predictions, one SGD step's weights, the loss; the
same bits for one and two threads; an index outside the table is an IndexError
naming the embedding layer and changes no weight."""

import numpy as np
import pytest

import pyfuncnet as keras
from pyfuncnet import config

# Width 16 over 7 rows takes the distinct-row path (repeats x width >= 8 x
# indices); 80 distinct indices of 400 rows, the plain one.
VOCAB_SMALL, VOCAB_LARGE, DIM, UNITS, STEPS, BATCH = 7, 400, 16, 6, 20, 4
LR = 0.1


def _model(vocab, activation="tanh", use_bias=True):
    inputs = keras.Input(shape=(STEPS,), dtype="int32")
    embedded = keras.layers.Embedding(vocab, DIM, name="table")(inputs)
    out = keras.layers.Dense(UNITS, activation=activation, use_bias=use_bias, name="proj")(embedded)
    model = keras.Model(inputs, out)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    rng = np.random.default_rng(vocab)
    weights = [rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(weights)
    return model


def _indices(vocab, seed=0):
    rng = np.random.default_rng(seed)
    if vocab == VOCAB_SMALL:  # 80 indices over 7 rows: nearly all repeat
        return rng.integers(0, vocab, size=(BATCH, STEPS)).astype(np.int32)
    return rng.permutation(vocab)[: BATCH * STEPS].reshape(BATCH, STEPS).astype(np.int32)


_ACTIVATIONS = {"tanh": (np.tanh, lambda y: 1.0 - y * y), "linear": (lambda z: z, lambda y: np.ones_like(y))}


def _reference_step(weights, x, t, activation, use_bias):
    """Loss, prediction and the weights after one SGD step, in float64."""
    table, kernel = (w.astype(np.float64) for w in weights[:2])
    bias = weights[2].astype(np.float64) if use_bias else np.zeros(UNITS)
    f, df = _ACTIVATIONS[activation]
    rows = table[x]
    y = f(rows @ kernel + bias)
    loss = np.mean((y - t) ** 2)
    dz = 2.0 * (y - t) / y.size * df(y)
    d_kernel = rows.reshape(-1, DIM).T @ dz.reshape(-1, UNITS)
    d_table = np.zeros_like(table)
    np.add.at(d_table, x, dz @ kernel.T)
    new = [table - LR * d_table, kernel - LR * d_kernel]
    if use_bias:
        new.append(bias - LR * dz.reshape(-1, UNITS).sum(axis=0))
    return loss, y, new


@pytest.mark.parametrize("vocab", [VOCAB_SMALL, VOCAB_LARGE])
@pytest.mark.parametrize("activation,use_bias", [("tanh", True), ("linear", False)])
def test_lookup_and_project_matches_float64(vocab, activation, use_bias):
    model = _model(vocab, activation, use_bias)
    x = _indices(vocab)
    t = np.random.default_rng(5).normal(size=(BATCH, STEPS, UNITS)).astype(np.float32)
    loss, y, new = _reference_step(model.get_weights(), x, t, activation, use_bias)
    np.testing.assert_allclose(model.predict(x, verbose=0), y, rtol=1e-5, atol=1e-5)
    got_loss = model.train_on_batch(x, t)
    np.testing.assert_allclose(got_loss, loss, rtol=1e-5)
    for got, want in zip(model.get_weights(), new):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _train_rnn(threads):
    previous = config.get_num_threads()
    config.set_num_threads(threads)
    try:
        keras.utils.set_random_seed(3)
        inputs = keras.Input(shape=(None,), dtype="int32")
        x = keras.layers.Embedding(VOCAB_SMALL, 32)(inputs)
        # Batches of 64 split the LSTM into row tasks: it projects its rows itself.
        x = keras.layers.LSTM(32)(x)
        model = keras.Model(inputs, keras.layers.Dense(3)(x))
        model.compile(optimizer="rmsprop", loss="mse")
        rng = np.random.default_rng(1)
        x = rng.integers(0, VOCAB_SMALL, size=(128, 30)).astype(np.int32)
        t = rng.normal(size=(128, 3)).astype(np.float32)
        model.fit(x, t, batch_size=64, epochs=2, verbose=0)
        return model.get_weights()
    finally:
        config.set_num_threads(previous)


def test_same_bits_for_any_thread_count():
    one, two = _train_rnn(1), _train_rnn(2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_index_outside_the_table_names_the_layer_and_changes_nothing():
    model = _model(VOCAB_SMALL)
    before = model.get_weights()
    x = _indices(VOCAB_SMALL)
    x[2, 3] = VOCAB_SMALL
    t = np.zeros((BATCH, STEPS, UNITS), np.float32)
    with pytest.raises(IndexError, match=rf"table.*index {VOCAB_SMALL} at position {2 * STEPS + 3}"):
        model.train_on_batch(x, t)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(IndexError, match="index -1"):
        model.predict(np.full((1, STEPS), -1, np.int32), verbose=0)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _lstm_reference(table, kernel, recurrent, bias, x):
    """An Embedding feeding an LSTM (Keras's gates i, f, c, o), in float64."""
    table, kernel, recurrent, bias = (w.astype(np.float64) for w in (table, kernel, recurrent, bias))
    units = recurrent.shape[0]
    h = np.zeros((x.shape[0], units))
    c = np.zeros_like(h)
    for t in range(x.shape[1]):
        z = table[x[:, t]] @ kernel + h @ recurrent + bias
        i, f, g, o = (z[:, k * units : (k + 1) * units] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
    return h


def _embedded_lstm(units=32):
    inputs = keras.Input(shape=(STEPS,), dtype="int32")
    x = keras.layers.Embedding(VOCAB_LARGE, DIM, name="words")(inputs)
    x = keras.layers.LSTM(units, name="reader")(x)
    return keras.Model(inputs, x)


def test_an_lstm_projecting_its_looked_up_rows_matches_float64():
    # 64 rows split the LSTM into row tasks, so it projects each step's rows itself;
    # repeated indices (the lookup deduplicates) and distinct ones.
    model = _embedded_lstm()
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype(np.float32) for w in model.get_weights()])
    for x in (rng.integers(0, 9, size=(64, STEPS)), rng.permutation(VOCAB_LARGE * 4)[: 64 * STEPS] % VOCAB_LARGE):
        x = x.reshape(64, STEPS).astype(np.int32)
        want = _lstm_reference(*model.get_weights(), x)
        np.testing.assert_allclose(model.predict(x, batch_size=64, verbose=0), want, rtol=1e-4, atol=1e-5)


def test_an_index_outside_the_table_of_an_embedding_feeding_an_lstm_changes_nothing():
    # The LSTM projects the looked-up rows itself: the lookup still checks the indices.
    model = _embedded_lstm()
    model.compile(optimizer="rmsprop", loss="mse")
    x = np.random.default_rng(3).integers(0, VOCAB_LARGE, size=(64, STEPS)).astype(np.int32)
    t = np.zeros((64, 32), np.float32)
    model.train_on_batch(x, t)
    before = model.get_weights()
    slots = [np.array(v) for v in model.optimizer.variables]
    x[1, 4] = -3
    with pytest.raises(IndexError, match=rf"words.*index -3 at position {STEPS + 4}"):
        model.train_on_batch(x, t)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    for v, s in zip(model.optimizer.variables, slots):
        np.testing.assert_array_equal(np.asarray(v), s)
