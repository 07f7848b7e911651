"""Training an embedding table: the step hands the optimizer the gathered rows'
gradients instead of a table-sized one. Checked against the update worked out in
float64 NumPy: repeated indices add up, rows no batch gathered follow each
optimizer's rule for a zero gradient (RMSprop and SGD leave them, Adam keeps moving
them), and clipping by the norm sees the whole table's gradient."""

import numpy as np
import pytest

import pyfuncnet as keras

VOCAB, DIM, STEPS = 23, 4, 5


def _model(optimizer):
    inputs = keras.Input(shape=(STEPS,), dtype="int32")
    embedded = keras.layers.Embedding(VOCAB, DIM, name="table")(inputs)
    head = keras.layers.Dense(1, use_bias=False, name="head")
    out = head(keras.layers.Flatten()(embedded))
    model = keras.Model(inputs, out)
    head.trainable = False  # only the table learns: its update is the one checked
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _table_gradient(table, kernel, x, t):
    """d mean((flatten(table[x]) @ kernel - t)^2) / d table, in float64."""
    rows = table[x]  # (batch, steps, dim)
    y = rows.reshape(len(x), -1) @ kernel
    dy = 2.0 * (y - t) / y.size
    d_rows = (dy @ kernel.T).reshape(rows.shape)
    grad = np.zeros_like(table)
    np.add.at(grad, x, d_rows)
    return grad


def _rmsprop(state, w, g, lr=0.01, rho=0.9, eps=1e-7):
    v = state.get("v", np.zeros_like(w))
    v = rho * v + (1 - rho) * g * g
    state["v"] = v
    return w - lr * g / np.sqrt(v + eps)  # Keras 3: epsilon inside the root


def _adam(state, w, g, lr=0.01, b1=0.9, b2=0.999, eps=1e-7):
    t = state.get("t", 0) + 1
    m = b1 * state.get("m", np.zeros_like(w)) + (1 - b1) * g
    v = b2 * state.get("v", np.zeros_like(w)) + (1 - b2) * g * g
    state.update(t=t, m=m, v=v)
    alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
    return w - alpha * m / (np.sqrt(v) + eps)


def _sgd_clipnorm(state, w, g, lr=0.5, clip=0.01):
    norm = np.sqrt(np.sum(g * g))
    return w - lr * g * clip / max(norm, clip)


CASES = [
    (lambda: keras.optimizers.RMSprop(0.01), _rmsprop),
    (lambda: keras.optimizers.Adam(0.01), _adam),
    (lambda: keras.optimizers.SGD(0.5, clipnorm=0.01), _sgd_clipnorm),
]


@pytest.mark.parametrize("make, update", CASES, ids=["rmsprop", "adam", "sgd-clipnorm"])
def test_embedding_steps_match_float64_updates(make, update):
    model = _model(make())
    rng = np.random.default_rng(3)
    kernel = rng.uniform(-1, 1, (STEPS * DIM, 1)).astype(np.float32)
    model.get_layer("head").set_weights([kernel])
    initial = rng.uniform(-0.05, 0.05, (VOCAB, DIM)).astype(np.float32)
    model.get_layer("table").set_weights([initial])
    table = initial.astype(np.float64)
    # Row 7 three times in one sample, rows 0 and VOCAB - 1 at the ends; rows 10-15
    # never gathered; the second batch gathers other rows than the first.
    batches = [
        np.array([[7, 7, 0, 7, 22], [1, 2, 3, 22, 7]], np.int32),
        np.array([[4, 5, 5, 6, 8], [9, 16, 17, 18, 19]], np.int32),
    ]
    state = {}
    for x in batches:
        t = rng.uniform(-1, 1, (len(x), 1))
        model.train_on_batch(x, t.astype(np.float32))
        g = _table_gradient(table, kernel.astype(np.float64), x, t)
        table = update(state, table, g)
        got = model.get_layer("table").get_weights()[0]
        np.testing.assert_allclose(got, table, rtol=2e-5, atol=1e-6)
        after_first = got if x is batches[0] else after_first
    # Rows no step gathered: a zero gradient from the start leaves them exactly.
    np.testing.assert_array_equal(model.get_layer("table").get_weights()[0][10:16], initial[10:16])
    # Row 1, gathered by the first step only: Adam's momentum moves it in the second.
    moved = not np.array_equal(got[1], after_first[1])
    assert moved == (update is _adam)
