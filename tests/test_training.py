"""compile / fit / evaluate / predict on dense models.

References: one SGD step checked against gradients derived by hand in NumPy
float64; learnable synthetic tasks whose loss must fall; list and dict feeding
giving bitwise identical training; Keras's documented History keys and return
types.
"""

import numpy as np
import pytest

import pyfuncnet as keras
from pyfuncnet import layers, ops


def make_mlp(seed=0, hidden=16, inputs=8, classes=3):
    keras.utils.set_random_seed(seed)
    x = keras.Input(shape=(inputs,), name="x")
    h = layers.Dense(hidden, activation="relu", name="hidden")(x)
    y = layers.Dense(classes, name="logits")(h)
    return keras.Model(x, y, name="mlp")


def blobs(n=512, classes=3, dim=8, seed=1):
    """Gaussian blobs: a task a small MLP learns to near-perfect accuracy."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(classes, dim))
    labels = rng.integers(0, classes, size=n)
    x = centers[labels] + rng.normal(size=(n, dim))
    return x.astype(np.float32), labels.astype(np.int32)


def test_one_sgd_step_matches_hand_derived_gradients():
    model = make_mlp()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 8)).astype(np.float32)
    y = rng.normal(size=(6, 3)).astype(np.float32)
    w1, b1, w2, b2 = [w.astype(np.float64) for w in model.get_weights()]
    z = x @ w1 + b1
    h = np.maximum(z, 0)
    out = h @ w2 + b2
    loss = np.mean(np.mean((out - y) ** 2, axis=1))
    d_out = 2 * (out - y) / (6 * 3)
    g_w2, g_b2 = h.T @ d_out, d_out.sum(0)
    d_z = (d_out @ w2.T) * (z > 0)
    g_w1, g_b1 = x.T @ d_z, d_z.sum(0)
    reported = model.train_on_batch(x, y)
    assert reported == pytest.approx(loss, rel=1e-5)
    for got, w, g in zip(model.get_weights(), (w1, b1, w2, b2), (g_w1, g_b1, g_w2, g_b2)):
        np.testing.assert_allclose(got, w - 0.1 * g, rtol=1e-5, atol=1e-6)


def test_fit_learns_blobs_and_history_has_keras_keys():
    x, y = blobs()
    model = make_mlp()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=5, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == [0, 1, 2, 3, 4]
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert history.history["val_accuracy"][-1] > 0.9
    loss, acc = model.evaluate(x, y, verbose=0)
    pred = model.predict(x, verbose=0)
    assert acc == pytest.approx(np.mean(np.argmax(pred, axis=1) == y), abs=1e-6)
    logits = pred.astype(np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(log_probs[np.arange(len(y)), y]), rel=1e-4)
    assert model.evaluate(x, y, verbose=0, return_dict=True).keys() == {"loss", "accuracy"}


def test_evaluate_returns_a_scalar_without_metrics_and_weights_loss_by_batch():
    model = make_mlp()
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 8)).astype(np.float32)
    y = rng.normal(size=(10, 3)).astype(np.float32)
    value = model.evaluate(x, y, batch_size=4, verbose=0)
    assert isinstance(value, float)
    pred = model.predict(x, verbose=0).astype(np.float64)
    assert value == pytest.approx(np.mean((pred - y) ** 2), rel=1e-5)


def two_output_model(seed=0):
    keras.utils.set_random_seed(seed)
    title = keras.Input(shape=(6,), name="title")
    body = keras.Input(shape=(4,), name="body")
    h = layers.concatenate([layers.Dense(8, activation="relu")(title), layers.Dense(8, activation="relu")(body)])
    priority = layers.Dense(1, activation="sigmoid", name="priority")(h)
    department = layers.Dense(3, name="department")(h)
    return keras.Model([title, body], [priority, department])


def two_output_data(n=96, seed=4):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, 6)).astype(np.float32)
    b = rng.normal(size=(n, 4)).astype(np.float32)
    p = (t[:, 0] + b[:, 0] > 0).astype(np.float32)[:, None]
    d = (np.argmax(t[:, 1:4] + b[:, 1:4], axis=1)).astype(np.int32)
    return t, b, p, d


def test_multi_output_list_and_dict_feeding_train_identically():
    t, b, p, d = two_output_data()
    results = []
    for feed in ("list", "dict"):
        model = two_output_model()
        if feed == "list":
            model.compile(
                optimizer="rmsprop",
                loss=["binary_crossentropy", keras.losses.SparseCategoricalCrossentropy(from_logits=True)],
                loss_weights=[1.0, 0.2],
                metrics=[["accuracy"], ["accuracy"]],
            )
            hist = model.fit([t, b], [p, d], batch_size=16, epochs=2, shuffle=False, verbose=0)
        else:
            model.compile(
                optimizer="rmsprop",
                loss={"priority": "binary_crossentropy", "department": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
                loss_weights={"priority": 1.0, "department": 0.2},
                metrics={"priority": ["accuracy"], "department": ["accuracy"]},
            )
            hist = model.fit({"title": t, "body": b}, {"priority": p, "department": d}, batch_size=16, epochs=2, shuffle=False, verbose=0)
        results.append((model.get_weights(), hist.history))
    (w_list, h_list), (w_dict, h_dict) = results
    for a, c in zip(w_list, w_dict):
        np.testing.assert_array_equal(a, c)
    assert set(h_list) == {"loss", "priority_loss", "department_loss", "priority_accuracy", "department_accuracy"}
    assert h_list == h_dict
    for k in range(2):
        total = h_list["priority_loss"][k] + 0.2 * h_list["department_loss"][k]
        assert h_list["loss"][k] == pytest.approx(total, rel=1e-4)


def test_custom_loss_custom_layer_and_subclassed_model_train():
    class Scale(layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.scale = Scale()
            self.out = layers.Dense(1)

        def call(self, x, training=None):
            return self.out(self.scale(x))

    def my_mse(y_true, y_pred):
        return ops.mean(ops.square(y_true - y_pred), axis=-1)

    rng = np.random.default_rng(5)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32))[:, None]
    keras.utils.set_random_seed(0)
    net = Net()
    net.compile(optimizer=keras.optimizers.Adam(0.05), loss=my_mse)
    hist = net.fit(x, y, batch_size=32, epochs=20, verbose=0)
    assert hist.history["loss"][-1] < 0.01 * hist.history["loss"][0]
    assert [tuple(w.shape) for w in net.weights] == [(4,), (4, 1), (1,)]
    np.testing.assert_allclose(net.predict(x, verbose=0), y, atol=0.2)


def test_sample_weight_and_class_weight_scale_the_loss():
    model = make_mlp()
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = blobs(n=8)
    base = model.test_on_batch(x, y)
    zero_weights = np.zeros(8, np.float32)
    zero_weights[:4] = 2.0
    weighted = model.test_on_batch(x, y, sample_weight=zero_weights)
    pred = model.predict(x, verbose=0).astype(np.float64)
    lse = np.log(np.exp(pred - pred.max(1, keepdims=True)).sum(1)) + pred.max(1)
    per_sample = lse - pred[np.arange(8), y]
    assert base == pytest.approx(per_sample.mean(), rel=1e-5)
    assert weighted == pytest.approx(np.sum(per_sample * zero_weights) / 8, rel=1e-5)
    before = model.get_weights()
    model.fit(x, y, class_weight={0: 0.0, 1: 0.0, 2: 0.0}, epochs=1, batch_size=8, verbose=0)
    for a, c in zip(before, model.get_weights()):
        np.testing.assert_allclose(a, c, atol=1e-7)


def test_generator_input_and_steps_per_epoch():
    x, y = blobs(n=128)

    def gen():
        while True:
            for i in range(0, 128, 32):
                yield x[i : i + 32], y[i : i + 32]

    model = make_mlp()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["acc"])
    hist = model.fit(gen(), steps_per_epoch=4, epochs=3, verbose=0)
    assert set(hist.history) == {"loss", "acc"}
    assert len(hist.history["loss"]) == 3


def test_bad_inputs_raise_clear_errors_and_change_nothing():
    model = make_mlp()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = blobs(n=16)
    model.fit(x, y, epochs=1, verbose=0)
    before = model.get_weights()
    iterations = model.optimizer.iterations
    with pytest.raises(ValueError, match=r"'x'.*\(None, 8\).*\(16, 7\)"):
        model.fit(x[:, :7], y, verbose=0)
    with pytest.raises(ValueError, match="cardinality"):
        model.fit(x, y[:10], verbose=0)
    bad = y.copy()
    bad[3] = 3
    with pytest.raises(ValueError, match=r"label value of 3.*\[0, 3\)"):
        model.fit(x, bad, verbose=0)
    nan_x = x.copy()
    nan_x[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(nan_x, y, verbose=0)
    with pytest.raises(ValueError, match="Missing data for input 'x'"):
        model.fit({"wrong": x}, y, verbose=0)
    for a, c in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, c)
    assert model.optimizer.iterations == iterations


@pytest.mark.parametrize("bad_value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_non_finite_values_in_a_large_input_are_rejected_before_training(bad_value, where):
    # 40,000 x 8 values: more than one task of the parallel finite check.
    model = make_mlp()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = blobs(n=40_000)
    model.fit(x[:64], y[:64], verbose=0)
    before, iterations = model.get_weights(), model.optimizer.iterations
    row = {"first": 0, "middle": 20_000, "last": 39_999}[where]
    x[row, 7] = bad_value
    want = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
    with pytest.raises(ValueError, match=rf"'x' contains NaN or Inf \(first at index \({want[0]}, {want[1]}\)\)"):
        model.fit(x, y, verbose=0)
    for a, c in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, c)
    assert model.optimizer.iterations == iterations
    x[row, 7] = np.float32(np.finfo(np.float32).max)  # the largest finite value trains
    model.fit(x, y, epochs=1, batch_size=4096, verbose=0)


def test_predict_before_compile_and_fit_requires_compile():
    model = make_mlp()
    x, y = blobs(n=5)
    assert model.predict(x, verbose=0).shape == (5, 3)
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, y, verbose=0)


@pytest.mark.parametrize("name", ["mlp_functional", "mlp_sequential", "multi_io", "shared_layers", "nested", "ensemble", "merge_zoo", "feature_extraction"])
def test_every_reference_model_trains_evaluates_and_predicts(name):
    """Each guide model learns to imitate a copy of itself with other weights (a
    task it can solve exactly), so its loss must fall."""
    from reference.models import BUILDERS, INPUT_SHAPES

    rng = np.random.default_rng(11)
    keras.utils.set_random_seed(3)
    teacher = BUILDERS[name](keras)
    keras.utils.set_random_seed(4)
    student = BUILDERS[name](keras)
    xs = [rng.uniform(-1, 1, size=(128,) + tuple(s)).astype(np.float32) for s in INPUT_SHAPES[name]]
    x = xs if len(xs) > 1 or name == "feature_extraction" else xs[0]
    targets = teacher.predict(x, verbose=0)
    student.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    before = student.evaluate(x, targets, verbose=0)
    before = before[0] if isinstance(before, list) else before
    history = student.fit(x, targets, batch_size=32, epochs=15, verbose=0)
    after = student.evaluate(x, targets, verbose=0)
    after = after[0] if isinstance(after, list) else after
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert after < 0.7 * before
    pred = student.predict(x, verbose=0)
    assert type(pred) is type(targets)


def test_weight_and_activity_penalties_are_added_to_the_loss():
    """Keras adds `l2 * sum(W**2)` of a regularized kernel and the activity penalty
    divided by the batch size to the loss; checked against NumPy in float64."""
    keras.utils.set_random_seed(5)
    x_in = keras.Input(shape=(6,))
    h = layers.Dense(4, kernel_regularizer=keras.regularizers.L2(0.01), name="reg")(x_in)
    h = layers.ActivityRegularization(l1=0.02)(h)
    out = layers.Dense(1, name="out")(h)
    model = keras.Model(x_in, out)
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(10, 6)).astype(np.float32)
    y = rng.normal(size=(10, 1)).astype(np.float32)
    w1, b1, w2, b2 = [w.astype(np.float64) for w in model.get_weights()]
    hid = x @ w1 + b1
    pred = hid @ w2 + b2
    want = np.mean((pred - y) ** 2) + 0.01 * np.sum(w1**2) + 0.02 * np.sum(np.abs(hid)) / 10
    assert model.test_on_batch(x, y) == pytest.approx(want, rel=1e-5)


def test_subclassed_model_rejects_unknown_keyword_arguments():
    class Net(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.out = layers.Dense(1)

        def call(self, x):
            return self.out(x)

    with pytest.raises(TypeError, match="unrecognized keyword arguments.*bogus"):
        Net(bogus=3)
    assert Net(name="net").name == "net"


def test_a_variable_dying_while_the_store_is_busy_is_released_later():
    """A garbage collection can run a dead Variable's finalizer inside a core call
    that holds the weight store (a training step converting its inputs): the
    release must not touch the store then, and the slot must be reused afterwards."""
    import gc

    from pyfuncnet import _variable

    store = _variable.store
    v = keras.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    index = v._index

    class BusyStore:
        def replace(self, *args):
            raise RuntimeError("Already borrowed")

    real, store.core = store.core, BusyStore()
    try:
        del v
        gc.collect()
        assert index in store.released
    finally:
        store.core = real
    w = keras.Variable(np.ones((4,), np.float32))
    # The next `add` emptied the slot: reused by `w` or waiting in the free list.
    assert index not in store.released
    assert w._index == index or index in store.free
    np.testing.assert_array_equal(w.numpy(), np.ones(4, np.float32))


def test_predict_on_batch_serves_repeated_calls_from_the_compiled_step():
    # Reference: the forward pass in float64 NumPy with the model's weights.
    keras.utils.set_random_seed(3)
    inp = keras.Input(shape=(5,))
    hidden = layers.Dense(4, activation="relu")(inp)
    model = keras.Model(inp, {"a": layers.Dense(2, name="a")(hidden), "b": layers.Dense(1, activation="sigmoid", name="b")(hidden)})
    single = keras.Model(inp, model.get_layer("a").output)
    w1, b1, wa, ba, wb, bb = (w.astype(np.float64) for w in model.get_weights())
    rng = np.random.default_rng(0)
    for rows in [1, 1, 3, 1]:  # the same shape again, another, then the first once more
        x = rng.standard_normal((rows, 5)).astype(np.float32)
        h = np.maximum(x @ w1 + b1, 0.0)
        got = model.predict_on_batch(x)
        assert set(got) == {"a", "b"}
        np.testing.assert_allclose(got["a"], h @ wa + ba, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["b"], 1 / (1 + np.exp(-(h @ wb + bb))), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(single.predict_on_batch(x), h @ wa + ba, rtol=1e-5, atol=1e-6)
    # A shape the model does not take still gets the checked path's error.
    with pytest.raises(ValueError, match="expected.*5"):
        single.predict_on_batch(np.zeros((1, 6), np.float32))


def test_each_output_gets_its_own_targets_and_sample_weights():
    # Two outputs with integer targets and sample weights of the same shape, which a
    # mix-up of the feeds would pass silently. Reference: the weighted losses in
    # float64 NumPy from the model's own predictions.
    keras.utils.set_random_seed(4)
    inp = keras.Input(shape=(3,))
    model = keras.Model(inp, {"p": layers.Dense(4, name="p")(inp), "q": layers.Dense(5, name="q")(inp)})
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    y = {"p": rng.integers(0, 4, 8), "q": rng.integers(0, 5, 8)}
    sw = {"p": rng.random(8).astype(np.float32), "q": 3.0 * rng.random(8).astype(np.float32)}

    def weighted_ce(logits, labels, weights):
        z = logits.astype(np.float64)
        logp = z - z.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        return float(np.mean(-logp[np.arange(len(labels)), labels] * weights))

    pred = model.predict_on_batch(x)
    want = {k: weighted_ce(pred[k], y[k], sw[k]) for k in ("p", "q")}
    logs = model.evaluate(x, y, sample_weight=sw, batch_size=8, verbose=0, return_dict=True)
    assert logs["p_loss"] == pytest.approx(want["p"], rel=1e-5)
    assert logs["q_loss"] == pytest.approx(want["q"], rel=1e-5)
    assert logs["loss"] == pytest.approx(want["p"] + want["q"], rel=1e-5)
