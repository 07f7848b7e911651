"""The convolutional seed models (tests/reference/cnn_models.py) build, train, evaluate
and predict.

Each model is built with pyfuncnet, its parameter count checked against the figure
real Keras gave (tests/reference/data/cnn/models/<name>.json), then fitted for a few
epochs on a small synthetic task it can learn (labels that follow the brightness of a
channel, a reconstruction, or a copy of the same architecture with other weights); the
loss must fall clearly, and `evaluate` must agree with a NumPy computation of the loss
from `predict`. A last test checks that BatchNormalization's moving statistics move in
`fit` and that `predict` then normalizes with them.
"""

import json
import os

import numpy as np
import pytest

import pyfuncnet as keras
from reference.cnn_models import BUILDERS

MODELS = os.path.join(os.path.dirname(__file__), "reference", "data", "cnn", "models")


def keras_counts(name):
    with open(os.path.join(MODELS, f"{name}.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    return record["count_params"], record["trainable_params"], record["non_trainable_params"]


def build(name, seed=0):
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    return BUILDERS[name](keras)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_parameter_counts_match_keras(name):
    model = build(name)
    total, trainable, non_trainable = keras_counts(name)
    assert model.count_params() == total
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable
    assert sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == non_trainable


# ----------------------------------------------------------------------------
# Synthetic tasks


def brightness_images(rng, n, shape, levels):
    """Images whose every pixel is `level + noise` (noise 0.1), with `level` drawn per
    sample from `levels` (a 1-D array of per-sample levels in [0, 1])."""
    noise = rng.normal(0.0, 0.1, (n,) + shape)
    return np.clip(levels.reshape((n,) + (1,) * len(shape)) + noise, 0.0, 1.0).astype(np.float32)


def smooth_patterns(size=28):
    """Two smooth 28x28 patterns in [0, 1]: a diagonal ramp and a centred bump."""
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    ramp = (i + j) / (2.0 * (size - 1))
    bump = np.exp(-(((i - size / 2) ** 2 + (j - size / 2) ** 2) / (2 * (size / 5) ** 2)))
    return ramp, bump


def mse(pred, target):
    return float(np.mean((np.asarray(pred, np.float64) - target) ** 2))


def fit_and_check(model, x, y, epochs, batch_size=16, ratio=0.7):
    """Fits; the loss `evaluate` reports after must be below `ratio` times the one before,
    and the per-epoch losses must fall. Returns (before, after, history)."""
    before = _loss(model.evaluate(x, y, verbose=0))
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    after = _loss(model.evaluate(x, y, verbose=0))
    losses = history.history["loss"]
    assert len(losses) == epochs
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses
    assert after < ratio * before, f"loss {before:.4f} -> {after:.4f} (epochs {losses})"
    return before, after, history


def _loss(result):
    return result[0] if isinstance(result, list) else result


def test_encoder_learns_the_brightness_of_an_image():
    rng = np.random.default_rng(1)
    levels = rng.uniform(0.1, 0.9, 64)
    x = brightness_images(rng, 64, (28, 28, 1), levels)
    # Each of the 16 code units should read the brightness, with its own gain.
    gains = np.linspace(0.5, 1.5, 16)
    y = (levels[:, None] * gains).astype(np.float32)
    model = build("encoder")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    fit_and_check(model, x, y, epochs=6)
    pred = model.predict(x, verbose=0)
    assert pred.shape == (64, 16) and pred.dtype == np.float32
    assert model.evaluate(x, y, verbose=0) == pytest.approx(mse(pred, y), rel=1e-4)


@pytest.mark.parametrize("name", ["autoencoder", "autoencoder_nested"])
def test_autoencoder_learns_to_reconstruct(name):
    rng = np.random.default_rng(2)
    ramp, bump = smooth_patterns()
    a, b = rng.uniform(0.2, 1.0, (2, 64, 1, 1))
    x = np.clip(a * ramp + b * bump + rng.normal(0.0, 0.02, (64, 28, 28)), 0.0, 1.0)
    x = x[..., None].astype(np.float32)
    model = build(name)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    fit_and_check(model, x, x, epochs=5)
    pred = model.predict(x, verbose=0)
    assert pred.shape == x.shape
    assert model.evaluate(x, x, verbose=0) == pytest.approx(mse(pred, x), rel=1e-4)


def test_decoder_learns_to_draw_from_a_code():
    rng = np.random.default_rng(3)
    ramp, bump = smooth_patterns()
    codes = rng.uniform(0.0, 1.0, (64, 16)).astype(np.float32)
    images = codes[:, 0, None, None] * ramp + codes[:, 1, None, None] * bump
    images = images[..., None].astype(np.float32)
    model = build("decoder")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    fit_and_check(model, codes, images, epochs=6)
    pred = model.predict(codes, verbose=0)
    assert pred.shape == (64, 28, 28, 1)
    assert model.evaluate(codes, images, verbose=0) == pytest.approx(mse(pred, images), rel=1e-4)


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def test_toy_resnet_learns_brightness_classes():
    """Three classes (out of the ten logits) by the brightness of the red channel."""
    rng = np.random.default_rng(4)
    n = 96
    labels = rng.integers(0, 3, n)
    x = rng.uniform(0.0, 1.0, (n, 32, 32, 3)).astype(np.float32)
    x[..., 0] = brightness_images(rng, n, (32, 32), np.array([0.15, 0.5, 0.85])[labels])
    y = np.eye(10, dtype=np.float32)[labels]
    model = build("toy_resnet")
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss=keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["acc"])
    _, _, history = fit_and_check(model, x, y, epochs=6)
    assert set(history.history) == {"loss", "acc"}
    loss, acc = model.evaluate(x, y, verbose=0)
    logits = model.predict(x, verbose=0)
    assert logits.shape == (n, 10)
    assert acc == pytest.approx(np.mean(np.argmax(logits, axis=1) == labels), abs=1e-6)
    # Chance is 1/3; the Dropout masks (and so the exact path) vary from run to run.
    assert acc > 0.5
    assert loss == pytest.approx(-np.mean(log_softmax(logits)[np.arange(n), labels]), rel=1e-4)


@pytest.mark.parametrize("name", ["inception_module", "residual_projection"])
def test_model_learns_to_imitate_a_copy_of_itself(name):
    """A task the architecture solves exactly: the outputs of the same model with other
    weights."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1.0, 1.0, (64, 8, 8, 4)).astype(np.float32)
    teacher = build(name, seed=10)
    target = teacher.predict(x, verbose=0)
    student = build(name, seed=11)
    student.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    fit_and_check(student, x, target, epochs=8, ratio=0.5)
    pred = student.predict(x, verbose=0)
    assert pred.shape == target.shape
    assert student.evaluate(x, target, verbose=0) == pytest.approx(mse(pred, target), rel=1e-4)


def test_shared_vision_learns_which_digit_is_brighter():
    """Two inputs through one shared vision model; label: is digit_a brighter than
    digit_b (linear in the inputs, as the model is)."""
    rng = np.random.default_rng(6)
    n = 64
    level_a, level_b = rng.uniform(0.1, 0.9, (2, n))
    a = brightness_images(rng, n, (27, 27, 1), level_a)
    b = brightness_images(rng, n, (27, 27, 1), level_b)
    y = (level_a > level_b).astype(np.float32)[:, None]
    model = build("shared_vision")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    before = model.evaluate([a, b], y, verbose=0)[0]
    history = model.fit({"digit_a": a, "digit_b": b}, y, batch_size=16, epochs=5, verbose=0)
    loss, acc = model.evaluate([a, b], y, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert loss < 0.7 * before
    prob = model.predict([a, b], verbose=0).astype(np.float64)
    assert prob.shape == (n, 1)
    assert acc == pytest.approx(np.mean((prob > 0.5) == (y > 0.5)), abs=1e-6)
    clipped = np.clip(prob, 1e-7, 1 - 1e-7)
    assert loss == pytest.approx(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)), rel=1e-4)
    # The two branches share one vision model: one set of its weights.
    assert len(model.weights) == 6


def text_data(rng, n, length=40):
    """Posts of token ids in [0, 500): income class c picks tokens from [50c, 50c + 50),
    gender the parity of every token, age = (c + 5 * gender) / 10."""
    income = rng.integers(0, 10, n)
    gender = rng.integers(0, 2, n)
    tokens = 50 * income[:, None] + 2 * rng.integers(0, 25, (n, length)) + gender[:, None]
    age = ((income + 5 * gender) / 10.0).astype(np.float32)[:, None]
    targets = {
        "age": age,
        "income": np.eye(10, dtype=np.float32)[income],
        "gender": gender.astype(np.float32)[:, None],
    }
    return tokens.astype(np.int32), targets


def test_text_convnet_trains_three_weighted_heads_fed_by_name():
    rng = np.random.default_rng(7)
    posts, targets = text_data(rng, 96)
    model = build("text_convnet")
    loss_weights = {"age": 0.25, "income": 1.0, "gender": 10.0}
    model.compile(
        optimizer=keras.optimizers.RMSprop(3e-3),
        loss={"age": "mse", "income": "categorical_crossentropy", "gender": "binary_crossentropy"},
        loss_weights=loss_weights,
    )
    before = model.evaluate({"posts": posts}, targets, verbose=0, return_dict=True)
    # The seed's weights let gender lead: income needs a dozen epochs to get going.
    epochs = 15
    history = model.fit({"posts": posts}, targets, batch_size=16, epochs=epochs, verbose=0)
    assert set(history.history) == {"loss", "age_loss", "income_loss", "gender_loss"}
    for k in range(epochs):
        total = sum(w * history.history[f"{name}_loss"][k] for name, w in loss_weights.items())
        assert history.history["loss"][k] == pytest.approx(total, rel=1e-4)
    after = model.evaluate({"posts": posts}, targets, verbose=0, return_dict=True)
    assert after["loss"] < 0.7 * before["loss"], (before, after)
    for name in ("income", "gender"):
        assert after[f"{name}_loss"] < before[f"{name}_loss"], (name, before, after)

    age, income, gender = [p.astype(np.float64) for p in model.predict(posts, verbose=0)]
    assert age.shape == (96, 1) and income.shape == (96, 10) and gender.shape == (96, 1)
    np.testing.assert_allclose(income.sum(axis=1), 1.0, rtol=1e-5)
    want = {
        "age_loss": mse(age, targets["age"]),
        "income_loss": -np.mean(np.sum(targets["income"] * np.log(np.clip(income, 1e-7, 1.0)), axis=1)),
        "gender_loss": -np.mean(targets["gender"] * np.log(np.clip(gender, 1e-7, 1 - 1e-7)) + (1 - targets["gender"]) * np.log(np.clip(1 - gender, 1e-7, 1 - 1e-7))),
    }
    for key, value in want.items():
        assert after[key] == pytest.approx(value, rel=1e-4), key
    # Posts of another length go through the same model (input (None, None)).
    longer, _ = text_data(rng, 5, length=57)
    assert [p.shape for p in model.predict(longer, verbose=0)] == [(5, 1), (5, 10), (5, 1)]


def channel_classes(rng, n, classes=3):
    """(n, 12, 12, 3) images in [-1, 1) where channel `label` is brighter by 0.6."""
    labels = rng.integers(0, classes, n)
    x = rng.uniform(-1.0, 1.0, (n, 12, 12, 3))
    x[np.arange(n), :, :, labels] += 0.6
    return x.astype(np.float32), labels


def test_train_step_convnet_learns_which_channel_is_brightest():
    rng = np.random.default_rng(8)
    x, labels = channel_classes(rng, 96)
    y = np.eye(5, dtype=np.float32)[labels]
    model = build("train_step_convnet")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy", metrics=["accuracy"])
    fit_and_check(model, x, y, epochs=6)
    loss, acc = model.evaluate(x, y, verbose=0)
    prob = model.predict(x, verbose=0).astype(np.float64)
    assert acc == pytest.approx(np.mean(np.argmax(prob, axis=1) == labels), abs=1e-6)
    assert acc > 0.6
    assert loss == pytest.approx(-np.mean(np.log(np.clip(prob[np.arange(len(labels)), labels], 1e-7, 1.0))), rel=1e-4)


# ----------------------------------------------------------------------------
# BatchNormalization's moving statistics in fit and predict


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def head_after_conv(model, features):
    """The layers after `conv_strided` of train_step_convnet in NumPy: BatchNormalization
    with its moving statistics (from `get_weights()`), global average pooling, Dense and
    softmax."""
    gamma, beta, moving_mean, moving_variance = [w.astype(np.float64) for w in model.get_layer("batch_norm").get_weights()]
    normalized = (features - moving_mean) / np.sqrt(moving_variance + 1e-3) * gamma + beta
    kernel, bias = [w.astype(np.float64) for w in model.get_layer("classifier").get_weights()]
    return softmax(normalized.mean(axis=(1, 2)) @ kernel + bias)


def test_batch_normalization_moving_statistics_move_in_fit_and_predict_uses_them():
    rng = np.random.default_rng(9)
    x, labels = channel_classes(rng, 64)
    y = np.eye(5, dtype=np.float32)[labels]
    model = build("train_step_convnet")
    norm = model.get_layer("batch_norm")
    conv = model.get_layer("conv_strided")
    features = keras.Model(model.inputs, conv.output)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="categorical_crossentropy")

    # One step: moving = moving * 0.9 + batch * 0.1, the batch statistics being those of
    # the features before the step (biased variance).
    initial_mean, initial_variance = [w.astype(np.float64) for w in norm.get_weights()[2:]]
    np.testing.assert_array_equal(initial_mean, 0.0)
    np.testing.assert_array_equal(initial_variance, 1.0)
    h = features.predict(x[:16], verbose=0).astype(np.float64)
    model.train_on_batch(x[:16], y[:16])
    moving_mean, moving_variance = norm.get_weights()[2:]
    np.testing.assert_allclose(moving_mean, 0.9 * initial_mean + 0.1 * h.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(moving_variance, 0.9 * initial_variance + 0.1 * h.var(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)

    # Some epochs: the statistics move towards the data's.
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    moving_mean, moving_variance = [w.astype(np.float64) for w in norm.get_weights()[2:]]
    assert np.abs(moving_mean - initial_mean).max() > 0.05
    assert np.abs(moving_variance - initial_variance).max() > 0.05
    assert model.optimizer.iterations == 1 + 3 * 4

    # predict (inference) normalizes with the moving statistics, not the batch's.
    h = features.predict(x, verbose=0).astype(np.float64)
    want = head_after_conv(model, h)
    got = model.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    with_batch_stats = softmax(
        ((h - h.mean(axis=(0, 1, 2))) / np.sqrt(h.var(axis=(0, 1, 2)) + 1e-3) * norm.get_weights()[0] + norm.get_weights()[1]).mean(axis=(1, 2))
        @ model.get_layer("classifier").get_weights()[0]
        + model.get_layer("classifier").get_weights()[1]
    )
    assert np.abs(with_batch_stats - want).max() > 1e-3, "the check cannot tell moving from batch statistics"
    # predict is batch-independent at inference: one sample gives the same row.
    np.testing.assert_allclose(model.predict(x[:1], verbose=0), got[:1], rtol=1e-5, atol=1e-7)
    # The eager call without `training` is inference too.
    np.testing.assert_allclose(model(x), got, rtol=1e-5, atol=1e-7)


def test_frozen_batch_normalization_keeps_its_statistics_in_fit():
    rng = np.random.default_rng(10)
    x, labels = channel_classes(rng, 32)
    y = np.eye(5, dtype=np.float32)[labels]
    model = build("train_step_convnet")
    norm = model.get_layer("batch_norm")
    norm.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="categorical_crossentropy")
    before = [w.copy() for w in norm.get_weights()]
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for a, b in zip(before, norm.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Frozen, the layer normalizes with the moving statistics in training as well.
    h = keras.Model(model.inputs, model.get_layer("conv_strided").output).predict(x, verbose=0).astype(np.float64)
    np.testing.assert_allclose(model.predict(x, verbose=0), head_after_conv(model, h), rtol=1e-4, atol=1e-6)
    assert len(model.trainable_weights) == 6 and len(model.non_trainable_weights) == 4


def test_fit_is_reproducible_after_set_random_seed():
    """As in Keras, `set_random_seed` then the same code trains the same weights.
    toy_resnet has a Dropout layer, so its masks must follow the seed too (not how many
    Dropout layers the process made before)."""
    rng = np.random.default_rng(12)
    x = rng.uniform(0.0, 1.0, (32, 32, 32, 3)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 32)]
    runs = []
    for _ in range(2):
        model = build("toy_resnet")
        model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        runs.append((model.get_weights(), history.history["loss"]))
    (first, first_loss), (second, second_loss) = runs
    assert first_loss == second_loss
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
