"""`fit` over in-memory arrays runs an epoch's full batches several steps per call
into the core (`CompiledStep.train_batches`) when no metric or callback needs each
step's predictions (the accuracies' batch sums are computed by the step itself).

Reference: the same `fit` with a callback that has a hook per batch, which makes
`fit` run one call per batch; weights, optimizer state and History must be
bitwise the same.
"""

import numpy as np
import pytest

import pyfuncnet as keras
from pyfuncnet import layers
from pyfuncnet._variable import store
from pyfuncnet.models.trainer import Trainer


class _PerBatch(keras.callbacks.Callback):
    """A hook per batch: `fit` then runs one step per call."""

    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def _mlp(optimizer):
    keras.utils.set_random_seed(5)
    inp = keras.Input(shape=(6,))
    h = layers.Dense(9, activation="relu")(inp)
    out = layers.Dense(4)(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _two_outputs(optimizer):
    keras.utils.set_random_seed(6)
    a = keras.Input(shape=(5,), name="a")
    b = keras.Input(shape=(3,), name="b")
    h = layers.concatenate([layers.Dense(7, activation="tanh")(a), b])
    score = layers.Dense(1, name="score")(h)
    label = layers.Dense(3, activation="softmax", name="label")(h)
    model = keras.Model({"a": a, "b": b}, {"score": score, "label": label})
    model.compile(optimizer=optimizer, loss={"score": "mse", "label": "categorical_crossentropy"}, loss_weights={"score": 0.5, "label": 2.0})
    return model


def _text(optimizer):
    """Two embedding tables (an LSTM over one): steps that gather a few of their rows."""
    keras.utils.set_random_seed(7)
    words = keras.Input(shape=(6,), dtype="int32", name="words")
    tags = keras.Input(shape=(2,), dtype="int32", name="tags")
    seq = layers.LSTM(5)(layers.Embedding(40, 4)(words))
    pooled = layers.Flatten()(layers.Embedding(30, 3)(tags))
    out = layers.Dense(3)(layers.concatenate([seq, pooled]))
    model = keras.Model([words, tags], out)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _vocabulary(optimizer):
    """A table of 600 rows of which a batch gathers at most 24: steps update only those
    and put the others' updates off until the end of the call into the core."""
    keras.utils.set_random_seed(8)
    words = keras.Input(shape=(6,), dtype="int32", name="words")
    pooled = layers.GlobalAveragePooling1D()(layers.Embedding(600, 5)(words))
    out = layers.Dense(3)(pooled)
    model = keras.Model(words, out)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _repeating(optimizer):
    """A table 16 wide whose rows repeat within a batch: the lookup feeding the LSTM
    deduplicates, and the step hands its row sums to the optimizer as they are; the
    batches gather few of the 300 rows, so with RMSprop the updates of the others
    are put off."""
    keras.utils.set_random_seed(11)
    words = keras.Input(shape=(6,), dtype="int32", name="words")
    out = layers.Dense(3)(layers.LSTM(5)(layers.Embedding(300, 16)(words)))
    model = keras.Model(words, out)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(kind, n):
    rng = np.random.default_rng(1)
    if kind == "repeating":
        # 24 indices a batch among 8 rows (more at the table's end in some batches).
        words = rng.integers(0, 8, size=(n, 6))
        words[::5, 0] = 299
        return words.astype(np.int32), rng.integers(0, 3, size=n), {}
    if kind == "vocabulary":
        # Rows 500.. are never gathered.
        return rng.integers(0, 500, size=(n, 6)).astype(np.int32), rng.integers(0, 3, size=n), {}
    if kind == "text":
        # Rows 35.. of the first table and 25.. of the second are never gathered.
        x = [rng.integers(0, 35, size=(n, 6)).astype(np.int32), rng.integers(0, 25, size=(n, 2)).astype(np.int32)]
        return x, rng.integers(0, 3, size=n), {}
    if kind.startswith("mlp"):
        x = rng.standard_normal((n, 6)).astype(np.float32)
        y = rng.integers(0, 4, size=n)
        return x, y, {} if kind == "mlp-classes" else {"sample_weight": rng.random(n).astype(np.float32)}
    x = {"a": rng.standard_normal((n, 5)).astype(np.float32), "b": rng.standard_normal((n, 3)).astype(np.float32)}
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=n)]
    weights = {"score": rng.random(n).astype(np.float32), "label": 2 * rng.random(n).astype(np.float32)}
    return x, {"score": rng.standard_normal((n, 1)).astype(np.float32), "label": labels}, {"sample_weight": weights} if kind == "two-weighted" else {}


def _fit(build, optimizer, kind, per_batch, monkeypatch, **fit_args):
    """Trains a fresh model; returns (weights, optimizer iterations, history, whether
    the epochs ran in the core)."""
    model = build(optimizer())
    x, y, extra = _data(kind, 50)
    in_core = []
    original = Trainer._fit_array_epoch

    def spy(self, *args):
        in_core.append(True)
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_fit_array_epoch", spy)
    callbacks = [_PerBatch()] if per_batch else []
    np.random.seed(123)  # the shuffling's seed
    history = model.fit(x, y, verbose=0, callbacks=callbacks, **extra, **fit_args)
    weights = model.get_weights() + [np.asarray(v) for v in model.optimizer.variables]
    return weights, model.optimizer.iterations, history.history, bool(in_core)


CASES = {
    "mlp rmsprop shuffled, partial last batch": (_mlp, lambda: keras.optimizers.RMSprop(0.01), "mlp", dict(batch_size=7, epochs=3)),
    "mlp adam in order": (_mlp, lambda: "adam", "mlp", dict(batch_size=8, epochs=2, shuffle=False)),
    "mlp sgd schedule, steps_per_epoch": (
        _mlp,
        lambda: keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 3, 0.5), momentum=0.9),
        "mlp",
        dict(batch_size=4, epochs=2, steps_per_epoch=9),
    ),
    "mlp class weights, validation split": (
        _mlp,
        lambda: keras.optimizers.RMSprop(0.01),
        "mlp-classes",
        dict(batch_size=6, epochs=2, class_weight={0: 1.0, 1: 2.0, 2: 0.5, 3: 1.5}, validation_split=0.2),
    ),
    "two outputs, loss weights, dict feeds": (_two_outputs, lambda: keras.optimizers.Adam(0.01), "two", dict(batch_size=16, epochs=2)),
    "two outputs, sample weights": (_two_outputs, lambda: keras.optimizers.Adam(0.01), "two-weighted", dict(batch_size=16, epochs=2)),
    # Embedding tables, whose gradients reach the optimizer as the gathered rows' sums.
    "embeddings rmsprop": (_text, lambda: keras.optimizers.RMSprop(0.01), "text", dict(batch_size=4, epochs=3)),
    "embeddings rmsprop, global_clipnorm": (_text, lambda: keras.optimizers.RMSprop(0.05, rho=0.5, global_clipnorm=0.1), "text", dict(batch_size=3, epochs=2)),
    "embeddings rmsprop with momentum": (_text, lambda: keras.optimizers.RMSprop(0.01, momentum=0.5), "text", dict(batch_size=4, epochs=2)),
    # A large table: the updates of the rows a step does not gather are put off.
    "large table rmsprop": (_vocabulary, lambda: keras.optimizers.RMSprop(0.01), "vocabulary", dict(batch_size=4, epochs=3)),
    "large table rmsprop, clipnorm": (_vocabulary, lambda: keras.optimizers.RMSprop(0.05, rho=0.5, clipnorm=0.1), "vocabulary", dict(batch_size=3, epochs=2)),
    "large table sgd schedule": (
        _vocabulary,
        lambda: keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.5, 3, 0.5)),
        "vocabulary",
        dict(batch_size=4, epochs=2),
    ),
    "large table adagrad": (_vocabulary, lambda: keras.optimizers.Adagrad(0.1), "vocabulary", dict(batch_size=2, epochs=2)),
    # A deduplicating lookup: its row sums go to the optimizer without a copy.
    "repeating rows rmsprop": (_repeating, lambda: keras.optimizers.RMSprop(0.01), "repeating", dict(batch_size=4, epochs=3)),
    "repeating rows adam, clipnorm": (_repeating, lambda: keras.optimizers.Adam(0.01, clipnorm=0.05), "repeating", dict(batch_size=4, epochs=2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fit_in_core_trains_exactly_as_one_call_per_batch(case, monkeypatch):
    build, optimizer, kind, fit_args = CASES[case]
    weights, iterations, history, in_core = _fit(build, optimizer, kind, False, monkeypatch, **fit_args)
    ref_weights, ref_iterations, ref_history, ref_in_core = _fit(build, optimizer, kind, True, monkeypatch, **fit_args)
    assert in_core and not ref_in_core
    assert iterations == ref_iterations > 0
    for w, r in zip(weights, ref_weights, strict=True):
        np.testing.assert_array_equal(w, r)
    assert history == ref_history
    if kind.startswith("two"):
        assert set(history) == {"loss", "label_loss", "score_loss"}
    if "validation_split" in fit_args:
        assert "val_loss" in history


def test_batch_hooks_of_lambda_callbacks_keep_one_call_per_batch(monkeypatch):
    called = []
    monkeypatch.setattr(Trainer, "_fit_array_epoch", lambda *a: called.append(a))
    model = _mlp("sgd")
    x, y, _ = _data("mlp", 20)
    seen = []
    hook = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: seen.append(batch))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[hook])
    assert not called and seen == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("per_batch", [False, True])
def test_stop_training_set_when_an_epoch_begins_stops_it_after_one_step(per_batch):
    class StopAtEpochBegin(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.model.stop_training = True

    model = _mlp("sgd")
    x, y, _ = _data("mlp", 40)
    callbacks = [StopAtEpochBegin()] + ([_PerBatch()] if per_batch else [])
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=callbacks)
    assert model.optimizer.iterations == 1 and len(history.history["loss"]) == 1


def test_a_callable_learning_rate_keeps_one_call_per_batch(monkeypatch):
    # Its value is only known when a step starts: called once per step, as per batch.
    called = []
    monkeypatch.setattr(Trainer, "_fit_array_epoch", lambda *a: called.append(a))
    calls = []
    model = _mlp(keras.optimizers.SGD(lambda: calls.append(1) or 0.01))
    x, y, _ = _data("mlp", 20)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert not called and len(calls) == model.optimizer.iterations == 6


def _classifier(kind, metric):
    """A model for each label kind of the accuracies, compiled with `metric`."""
    keras.utils.set_random_seed(9)
    inp = keras.Input(shape=(6,))
    h = layers.Dense(8, activation="tanh")(inp)
    if kind == "binary":
        out, loss = layers.Dense(1, activation="sigmoid")(h), "binary_crossentropy"
    else:
        out = layers.Dense(4, activation="softmax")(h)
        loss = "categorical_crossentropy" if kind == "categorical" else "sparse_categorical_crossentropy"
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.RMSprop(0.02), loss=loss, **metric)
    return model


def _labels(kind, n):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    classes = rng.integers(0, 2 if kind.startswith("binary") else 4, size=n)
    if kind == "categorical":
        return x, np.eye(4, dtype=np.float32)[classes]
    # Sparse and binary labels as a vector, or as a column.
    return x, classes.reshape(-1, 1) if kind.endswith("column") else classes


def _numpy_twin(name, fn, **kwargs):
    """The same mean of `fn`, through a function of its own: `fit` computes it with
    NumPy from the predictions each step returns."""

    def same(y_true, y_pred):
        return fn(y_true, y_pred, **kwargs)

    return keras.metrics.MeanMetricWrapper(same, name=name)


# (label kind, compile arguments with a metric the step computes, and with its NumPy twin)
SUMMED = {
    "categorical acc": ("categorical", lambda: dict(metrics=["acc"]), lambda: dict(metrics=[_numpy_twin("acc", keras.metrics.categorical_accuracy)])),
    "sparse accuracy": ("sparse", lambda: dict(metrics=["accuracy"]), lambda: dict(metrics=[_numpy_twin("accuracy", keras.metrics.sparse_categorical_accuracy)])),
    "sparse column, weighted_metrics without weights": (
        "sparse column",
        lambda: dict(weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="sca")]),
        lambda: dict(weighted_metrics=[_numpy_twin("sca", keras.metrics.sparse_categorical_accuracy)]),
    ),
    "binary acc": ("binary", lambda: dict(metrics=["acc"]), lambda: dict(metrics=[_numpy_twin("acc", keras.metrics.binary_accuracy)])),
    "binary column, threshold 0.3": (
        "binary column",
        lambda: dict(metrics=[keras.metrics.BinaryAccuracy(name="ba", threshold=0.3)]),
        lambda: dict(metrics=[_numpy_twin("ba", keras.metrics.binary_accuracy, threshold=0.3)]),
    ),
}


@pytest.mark.parametrize("case", list(SUMMED))
def test_accuracies_summed_by_the_step_match_numpy_and_train_in_the_core(case, monkeypatch):
    kind, summed, twin = SUMMED[case]
    model_kind = kind.split()[0]
    x, y = _labels(kind, 61)
    per_batch = []
    original = Trainer._fit_batch

    def spy(self, *args):
        per_batch.append(self)
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_fit_batch", spy)
    model = _classifier(model_kind, summed())
    np.random.seed(3)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    # Each epoch's 7 full batches ran in the core; the partial last one on its own.
    assert per_batch == [model] * 3
    reference = _classifier(model_kind, twin())
    np.random.seed(3)
    ref_history = reference.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[_PerBatch()])
    assert all(p is reference for p in per_batch[3:]) and len(per_batch) == 3 + 24
    assert not any(p.all_metrics_summed for p in reference._programs.values())
    assert history.history == ref_history.history
    assert 0 < min(next(v for k, v in history.history.items() if k != "loss"))
    for w, r in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(w, r)
    # evaluate sums the batches in its test step too; with every weight zero each
    # row's predictions tie, and the first maximum counts, as NumPy's argmax.
    assert model.evaluate(x, y, batch_size=16, verbose=0) == reference.evaluate(x, y, batch_size=16, verbose=0)
    for m in (model, reference):
        m.set_weights([np.zeros_like(w) for w in m.get_weights()])
    tied = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert tied == reference.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    first = (y == 0) if model_kind != "categorical" else (y.argmax(-1) == 0)
    if model_kind == "binary":
        # sigmoid(0) = 0.5 is not above the threshold 0.5 (0.3: it is).
        first = (y == 0) if "0.3" not in case else (y == 1)
    assert next(v for k, v in tied.items() if k != "loss") == pytest.approx(first.mean(), abs=1e-12)


def _masked_sequence(metric):
    keras.utils.set_random_seed(10)
    words = keras.Input(shape=(5,), dtype="int32")
    seq = layers.Embedding(20, 3, mask_zero=True)(words)
    out = layers.TimeDistributed(layers.Dense(4, activation="softmax"))(layers.LSTM(6, return_sequences=True)(seq))
    model = keras.Model(words, out)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", **metric)
    return model


def test_metrics_of_unhashable_callables_and_patched_instances_stay_with_numpy():
    """A metric function that cannot be hashed, and an accuracy whose instance
    replaces `update_state`, are computed by NumPy as before: the first gets the
    values of the same function as a plain one, the second is the only one called."""

    class Unhashable:
        def __eq__(self, other):
            return isinstance(other, Unhashable)

        def __call__(self, y_true, y_pred):
            return keras.metrics.sparse_categorical_accuracy(y_true, y_pred)

    x, y = _labels("sparse", 20)
    model = _classifier("sparse", dict(metrics=[keras.metrics.MeanMetricWrapper(Unhashable(), name="acc")]))
    reference = _classifier("sparse", dict(metrics=[_numpy_twin("acc", keras.metrics.sparse_categorical_accuracy)]))
    for m in (model, reference):
        np.random.seed(3)
        m.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert model.history.history == reference.history.history
    assert not any(p.all_metrics_summed for p in model._programs.values())

    patched = keras.metrics.SparseCategoricalAccuracy()
    calls = []
    plain_update = patched.update_state
    patched.update_state = lambda *a, **k: calls.append(1) or plain_update(*a, **k)
    model = _classifier("sparse", dict(metrics=[patched]))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert len(calls) == 3


def test_metrics_that_need_the_predictions_keep_one_call_per_batch(monkeypatch):
    """A metric without a graph form, over a masked output, weighted by sample weights,
    listed twice, or giving a sample several values: `fit` runs one call per batch and
    NumPy computes it (its values checked against the predictions elsewhere)."""
    called = []
    original = Trainer._fit_batch
    monkeypatch.setattr(Trainer, "_fit_batch", lambda self, *a: called.append(a) or original(self, *a))
    rng = np.random.default_rng(2)
    x, y = _labels("sparse", 20)
    twice = keras.metrics.SparseCategoricalAccuracy(name="twice")
    cases = [
        (_classifier("sparse", dict(metrics=["accuracy", "sparse_top_k_categorical_accuracy"])), x, y, {}),
        (_classifier("sparse", dict(weighted_metrics=["accuracy"])), x, y, dict(sample_weight=rng.random(20).astype(np.float32))),
        (_classifier("sparse", dict(metrics=[twice, twice])), x, y, {}),
        (_masked_sequence(dict(metrics=["accuracy"])), rng.integers(0, 20, size=(20, 5)).astype(np.int32), rng.integers(0, 4, size=(20, 5)), {}),
    ]
    for model, xs, ys, extra in cases:
        called.clear()
        history = model.fit(xs, ys, batch_size=8, epochs=1, verbose=0, **extra)
        assert len(called) == 3, model.metrics_names
        assert not any(p.all_metrics_summed for p in model._programs.values())
        assert {"loss"} < set(history.history)


def test_the_progress_bar_is_drawn_after_each_call(capsys):
    model = _mlp("rmsprop")
    x, y, _ = _data("mlp", 50)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "7/7" in out
    last = out.strip().splitlines()[-1]
    assert f"loss: {history.history['loss'][-1]:.4f}" in last


def _program_and_arrays():
    model = _mlp(keras.optimizers.RMSprop(0.01))
    x, y, _ = _data("mlp", 20)
    y = y.astype(np.int32)
    program = model._program("train", [x[:4]], [y[:4]], [None])
    return model, program, x, y


def test_train_batches_equals_train_on_each_gathered_batch():
    model, program, x, y = _program_and_arrays()
    ref = _mlp(keras.optimizers.RMSprop(0.01))
    ref_program = ref._program("train", [x[:4]], [y[:4]], [None])
    order = np.random.default_rng(0).permutation(20).astype(np.int32)[:12]
    lrs = np.array([0.01, 0.005, 0.02], np.float32)
    log = program.step.train_batches([x, y], order, 0, lrs, [], store.core, model.optimizer.core)
    for j in range(3):
        idx = order[4 * j : 4 * j + 4]
        _, loss = ref_program.step.train([x[idx], y[idx]], store.core, ref.optimizer.core, float(lrs[j]))
        assert log[j] == np.float32(loss)
    for w, r in zip(model.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_array_equal(w, r)
    # Consecutive rows, read in place: rows 8..16 in two batches.
    log = program.step.train_batches([x, y], None, 8, lrs[:2], [], store.core, model.optimizer.core)
    for j in range(2):
        _, loss = ref_program.step.train([x[8 + 4 * j : 12 + 4 * j], y[8 + 4 * j : 12 + 4 * j]], store.core, ref.optimizer.core, float(lrs[j]))
        assert log[j] == np.float32(loss)
    for w, r in zip(model.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_array_equal(w, r)


def test_train_batches_checks_everything_before_the_first_step():
    model, program, x, y = _program_and_arrays()
    before = model.get_weights()
    iterations = model.optimizer.iterations
    lrs = np.full(2, 0.01, np.float32)
    core = (store.core, model.optimizer.core)
    with pytest.raises(IndexError, match="row index 20 at position 5 is outside the sources' 20 rows"):
        program.step.train_batches([x, y], np.array([0, 1, 2, 3, 4, 20, 6, 7], np.int32), 0, lrs, [], *core)
    with pytest.raises(ValueError, match="need 8 row indices, got 7"):
        program.step.train_batches([x, y], np.arange(7, dtype=np.int32), 0, lrs, [], *core)
    with pytest.raises(ValueError, match="from row 13 need more than the sources' 20 rows"):
        program.step.train_batches([x, y], None, 13, lrs, [], *core)
    with pytest.raises(ValueError, match=r"source 1 has shape \(19,\) \(int32\), expected 20 rows"):
        program.step.train_batches([x, y[:19]], None, 0, lrs, [], *core)
    with pytest.raises(ValueError, match=r"source 0 has shape \(20, 5\) \(float32\), expected 20 rows of the step's input \(4, 6\)"):
        program.step.train_batches([x[:, :5].copy(), y], None, 0, lrs, [], *core)
    with pytest.raises(ValueError, match="expected 2 source arrays"):
        program.step.train_batches([x], None, 0, lrs, [], *core)
    with pytest.raises(ValueError, match="output 7 does not exist"):
        program.step.train_batches([x, y], None, 0, lrs, [7], *core)
    assert model.optimizer.iterations == iterations
    for w, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)
