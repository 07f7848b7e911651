"""Noise layers (SpatialDropout1D/2D/3D, GaussianNoise, GaussianDropout) and Dropout's
noise_shape, with Keras 3 semantics: the identity at inference (checked against the
Keras reference cases), channel-wise masks / additive / multiplicative noise of the
right statistics in training steps, gradients through the step's noise, and noise that
depends on the seed and the step but not on the thread count."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import pyfuncnet as keras
from pyfuncnet import GradientTape, Variable, config
from pyfuncnet.layers.core import Dropout
from pyfuncnet.layers.noise import (
    GaussianDropout,
    GaussianNoise,
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
)

NOISE_CLASSES = {
    "SpatialDropout1D": SpatialDropout1D,
    "SpatialDropout2D": SpatialDropout2D,
    "SpatialDropout3D": SpatialDropout3D,
    "GaussianNoise": GaussianNoise,
    "GaussianDropout": GaussianDropout,
}
REFERENCE = os.path.join(os.path.dirname(__file__), "reference", "data", "cnn")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _uniform(shape, seed, lo=-1.0, hi=1.0):
    return _rng(seed).uniform(lo, hi, shape).astype(np.float32)


class _Capture:
    """A metric function that keeps the predictions of each step: the outputs of a
    training step, where the noise layers are active."""

    __name__ = "capture"

    def __init__(self):
        self.outputs = []

    def __call__(self, y_true, y_pred):
        self.outputs.append(np.array(y_pred))
        return 0.0


def _model(layer, input_shape):
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, layer(inputs))


def _training_output(model, x, seed_target=1):
    """One training step's output of `model` (compiled here) on `x`."""
    capture = _Capture()
    model.compile(optimizer="sgd", loss="mse", metrics=[capture])
    model.train_on_batch(x, np.zeros_like(x) + seed_target)
    return capture.outputs[-1]


def _channel_mask(y, x, rate, channel_axis, what):
    """The per-(sample, channel) keep mask of a spatial dropout output `y` of `x`,
    checking that every channel map is either all zero or all `x / (1 - rate)`."""
    y, x = np.moveaxis(y, channel_axis, -1), np.moveaxis(x, channel_axis, -1)
    n, c = y.shape[0], y.shape[-1]
    y, x = y.reshape(n, -1, c), x.reshape(n, -1, c)
    kept = np.any(y != 0, axis=1)
    np.testing.assert_allclose(y, x * kept[:, None, :] / (1 - rate), rtol=1e-6, atol=0, err_msg=what)
    return kept


# ----------------------------------------------------------------------------
# Inference is the identity (Keras reference cases)


def _reference_cases():
    with open(os.path.join(REFERENCE, "layers.json"), encoding="utf-8") as handle:
        cases = json.load(handle)["cases"]
    return {c["id"]: c for c in cases if c["id"] in ("spatial_dropout2d_inference", "gaussian_noise_inference")}


REFERENCE_CASES = _reference_cases()


@pytest.mark.parametrize("case_id", sorted(REFERENCE_CASES))
def test_reference_cases_inference_is_the_identity_as_in_keras(case_id):
    case = REFERENCE_CASES[case_id]
    with np.load(os.path.join(REFERENCE, "layers.npz")) as archive:
        x, want = archive[f"{case_id}/input"], archive[f"{case_id}/output"]
    cls = NOISE_CLASSES[case["class"]]
    # Eager call (training defaults to off), eager training=False, and a compiled predict.
    np.testing.assert_array_equal(cls(**case["kwargs"])(x), want)
    np.testing.assert_array_equal(cls(**case["kwargs"])(x, training=False), want)
    inputs = keras.Input(shape=tuple(case["input_shape"][1:]))
    outputs = cls(**case["kwargs"])(inputs)
    assert list(outputs.shape) == case["symbolic_output_shape"]
    model = keras.Model(inputs, outputs)
    np.testing.assert_array_equal(model.predict(x, verbose=0), want)
    model.compile(optimizer="sgd", loss="mse")
    assert model.evaluate(x, want, verbose=0) == 0.0


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: SpatialDropout1D(0.5), (3, 7, 4)),
        (lambda: SpatialDropout2D(0.5, data_format="channels_first"), (3, 4, 5, 6)),
        (lambda: SpatialDropout3D(0.5), (2, 3, 4, 5, 2)),
        (lambda: GaussianNoise(1.5), (4, 6)),
        (lambda: GaussianDropout(0.4), (4, 3, 6)),
        (lambda: Dropout(0.5, noise_shape=(None, 1, None)), (4, 3, 6)),
    ],
)
def test_inference_is_the_identity(make, shape):
    x = _uniform(shape, 1)
    layer = make()
    np.testing.assert_array_equal(layer(x), x)
    model = _model(layer, shape[1:])
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)
    model.compile(optimizer="sgd", loss="mse")
    assert model.evaluate(x, x, verbose=0) == 0.0
    assert layer.compute_output_shape((None,) + shape[1:]) == (None,) + shape[1:]


# ----------------------------------------------------------------------------
# Spatial dropout and Dropout(noise_shape) in training


@pytest.mark.parametrize(
    "cls,kwargs,shape,channel_axis",
    [
        (SpatialDropout1D, {}, (256, 6, 16), -1),
        (SpatialDropout2D, {}, (128, 4, 5, 16), -1),
        (SpatialDropout2D, {"data_format": "channels_first"}, (128, 16, 4, 5), 1),
        (SpatialDropout3D, {}, (128, 2, 3, 2, 16), -1),
        (SpatialDropout3D, {"data_format": "channels_first"}, (128, 16, 2, 3, 2), 1),
    ],
)
def test_spatial_dropout_training_step_drops_whole_channels(cls, kwargs, shape, channel_axis):
    rate = 0.3
    x = _uniform(shape, 2, 0.5, 1.5)  # no zeros: a zero output means dropped
    y = _training_output(_model(cls(rate, seed=7, **kwargs), shape[1:]), x)
    kept = _channel_mask(y, x, rate, channel_axis, cls.__name__)
    dropped = 1 - kept.mean()
    # 2048 Bernoulli(0.3) draws: std ~0.01.
    assert abs(dropped - rate) < 0.04, dropped
    # Samples have their own masks.
    assert len({row.tobytes() for row in kept}) > shape[0] // 2


@pytest.mark.parametrize("cls,shape", [(SpatialDropout1D, (512, 3, 8)), (SpatialDropout2D, (512, 2, 2, 8))])
def test_spatial_dropout_eager_training_call_drops_whole_channels(cls, shape):
    x = _uniform(shape, 3, 0.5, 1.5)
    layer = cls(0.25, seed=1)
    y = np.asarray(layer(x, training=True))
    kept = _channel_mask(y, x, 0.25, -1, cls.__name__)
    assert abs((1 - kept.mean()) - 0.25) < 0.04
    # Each call draws new masks.
    assert not np.array_equal(np.asarray(layer(x, training=True)), y)


def test_dropout_noise_shape_shares_the_mask_along_broadcast_axes():
    rate, shape = 0.5, (64, 5, 12)
    x = _uniform(shape, 4, 0.5, 1.5)
    for y in (
        _training_output(_model(Dropout(rate, noise_shape=(None, 1, None), seed=3), shape[1:]), x),
        np.asarray(Dropout(rate, noise_shape=(None, 1, None), seed=3)(x, training=True)),
    ):
        _channel_mask(y, x, rate, -1, "Dropout(noise_shape)")
    # An integer entry equal to the input's size counts as None; one mask for the batch.
    y = _training_output(_model(Dropout(rate, noise_shape=(1, 5, 12)), shape[1:]), x)
    kept = y != 0
    assert (kept == kept[:1]).all() and 0 < kept.mean() < 1
    np.testing.assert_allclose(y, x * kept / (1 - rate), rtol=1e-6)


def test_dropout_without_noise_shape_draws_per_element():
    x = _uniform((64, 8, 16), 5, 0.5, 1.5)
    y = _training_output(_model(Dropout(0.4, seed=2), (8, 16)), x)
    kept = y != 0
    np.testing.assert_allclose(y, x * kept / 0.6, rtol=1e-6)
    assert abs((1 - kept.mean()) - 0.4) < 0.02
    assert not (kept == kept[:, :1, :]).all()


# ----------------------------------------------------------------------------
# Gaussian noise in training


def test_gaussian_noise_training_step_adds_noise_of_stddev():
    stddev, shape = 0.5, (64, 32, 32)
    x = _uniform(shape, 6)
    y = _training_output(_model(GaussianNoise(stddev, seed=4), shape[1:]), x)
    noise = y.astype(np.float64) - x
    assert abs(noise.mean()) < 0.01, noise.mean()
    assert abs(noise.std() - stddev) < 0.01, noise.std()
    # Independent noise everywhere: neighbours are uncorrelated.
    assert abs(np.corrcoef(noise[:, :, :-1].ravel(), noise[:, :, 1:].ravel())[0, 1]) < 0.02


def test_gaussian_noise_eager_training_call():
    x = _uniform((200, 100), 7)
    noise = np.asarray(GaussianNoise(0.2, seed=1)(x, training=True)) - x.astype(np.float64)
    assert abs(noise.mean()) < 0.005 and abs(noise.std() - 0.2) < 0.005


@pytest.mark.parametrize("eager", [False, True])
def test_gaussian_dropout_multiplies_by_noise_around_one(eager):
    rate, shape = 0.2, (64, 32, 32)
    x = np.ones(shape, np.float32)
    layer = GaussianDropout(rate, seed=5)
    y = np.asarray(layer(x, training=True)) if eager else _training_output(_model(layer, shape[1:]), x)
    want_std = np.sqrt(rate / (1 - rate))
    assert abs(y.mean() - 1) < 0.01, y.mean()
    assert abs(y.std() - want_std) < 0.01, (y.std(), want_std)


# ----------------------------------------------------------------------------
# Gradients flow through the step's noise


def _dense_then(layer, shape, seed):
    """Input -> Dense(channels, no bias, positive weights) -> layer; compiled with
    SGD(0.1) and mse and a capture of the training outputs."""
    inputs = keras.Input(shape=shape[1:])
    dense = keras.layers.Dense(shape[-1], use_bias=False)
    model = keras.Model(inputs, layer(dense(inputs)))
    dense.set_weights([_uniform((shape[-1], shape[-1]), seed, 0.5, 1.5)])
    capture = _Capture()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse", metrics=[capture])
    return model, dense, capture


@pytest.mark.parametrize(
    "name,layer",
    [
        ("spatial_dropout", lambda: SpatialDropout2D(0.5, seed=1)),
        ("dropout_noise_shape", lambda: Dropout(0.5, noise_shape=(None, 1, None, None))),
        ("gaussian_noise", lambda: GaussianNoise(0.3, seed=2)),
        ("gaussian_dropout", lambda: GaussianDropout(0.3, seed=3)),
    ],
)
def test_training_step_gradient_goes_through_the_noise(name, layer):
    # loss = mean((noise(x @ W) - t)^2); the step's output y shows the noise it drew,
    # from which the gradient w.r.t. W follows by hand.
    shape = (6, 3, 4, 5)
    x, t = _uniform(shape, 10, 0.5, 1.5), _uniform(shape, 11)
    model, dense, capture = _dense_then(layer(), shape, 12)
    w0 = dense.get_weights()[0].astype(np.float64)
    model.train_on_batch(x, t)
    y = capture.outputs[-1].astype(np.float64)
    h = x.astype(np.float64) @ w0
    if name == "gaussian_noise":
        dy_dh = np.ones_like(h)  # y = h + n
    else:
        dy_dh = y / h  # y = h * mask: the mask (or the multiplicative noise) itself
    if "dropout" in name and name != "gaussian_dropout":
        assert set(np.round(np.unique(dy_dh), 5)) <= {0.0, 2.0}
    dl_dh = 2 * (y - t) / y.size * dy_dh
    grad = x.astype(np.float64).reshape(-1, shape[-1]).T @ dl_dh.reshape(-1, shape[-1])
    np.testing.assert_allclose(dense.get_weights()[0], w0 - 0.1 * grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "layer,additive",
    [
        (lambda: SpatialDropout1D(0.5, seed=1), False),
        (lambda: GaussianNoise(0.3, seed=2), True),
        (lambda: GaussianDropout(0.3, seed=3), False),
        (lambda: Dropout(0.5, noise_shape=(None, 1, None), seed=4), False),
    ],
)
def test_eager_training_call_gradient_is_the_noise_derivative(layer, additive):
    x = Variable(_uniform((4, 3, 6), 13, 0.5, 1.5))
    w = _uniform((4, 3, 6), 14)
    with GradientTape() as tape:
        y = layer()(x, training=True)
        loss = keras.ops.sum(keras.ops.multiply(y, w))
    grad = np.asarray(tape.gradient(loss, x))
    y, xv = np.asarray(y, np.float64), np.asarray(x.value, np.float64)
    # y = x + n (dy/dx = 1) or y = x * m (dy/dx = m = y / x).
    dy_dx = np.ones_like(xv) if additive else y / xv
    assert not np.allclose(y, xv)
    np.testing.assert_allclose(grad, w * dy_dx, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# Seeds, steps and threads


def _noisy_model(seed):
    """Conv features big enough (8 x 16 x 16 x 32) for the kernels to split them."""
    inputs = keras.Input(shape=(16, 16, 3))
    h = keras.layers.Conv2D(32, 3, padding="same", kernel_initializer=keras.initializers.GlorotUniform(seed=1))(inputs)
    h = SpatialDropout2D(0.3, seed=seed)(h)
    h = GaussianNoise(0.2, seed=seed)(h)
    h = GaussianDropout(0.2, seed=seed)(h)
    return keras.Model(inputs, h)


def _run_steps(model, weights, x, steps=2):
    model.set_weights(weights)
    capture = _Capture()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse", metrics=[capture])
    for _ in range(steps):
        model.train_on_batch(x, np.zeros(x.shape[:-1] + (32,), np.float32))
    return capture.outputs + model.get_weights()


def test_noise_does_not_depend_on_the_thread_count(restore_threads):
    model = _noisy_model(seed=11)
    w0 = model.get_weights()
    x = _uniform((8, 16, 16, 3), 15)
    results = []
    for threads in (1, 2, 3):
        config.set_num_threads(threads)
        results.append(_run_steps(model, w0, x))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    # The two steps drew different noise.
    assert not np.array_equal(results[0][0], results[0][1])


_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    import pyfuncnet as keras
    from pyfuncnet.layers.noise import GaussianDropout, GaussianNoise, SpatialDropout2D

    seed = int(sys.argv[1])
    inputs = keras.Input(shape=(16, 16, 32))
    h = SpatialDropout2D(0.3, seed=seed)(inputs)
    h = GaussianNoise(0.2, seed=seed)(h)
    h = GaussianDropout(0.2, seed=seed)(h)
    model = keras.Model(inputs, h)
    seen = []

    def capture(y_true, y_pred):
        seen.append(np.array(y_pred))
        return 0.0

    model.compile(optimizer="sgd", loss="mse", metrics=[capture])
    x = np.random.default_rng(0).uniform(0.5, 1.5, (8, 16, 16, 32)).astype(np.float32)
    for _ in range(2):
        model.train_on_batch(x, x)
    print(keras.config.get_num_threads(), hashlib.sha256(b"".join(s.tobytes() for s in seen)).hexdigest())
    """
)


def _run_script(seed, threads):
    env = dict(os.environ, PYFUNCNET_NUM_THREADS=str(threads))
    # Run outside the source tree, so the fresh interpreter imports the installed
    # package (a clean checkout has no compiled core in pyfuncnet/).
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run([sys.executable, "-c", _SCRIPT, str(seed)], env=env, capture_output=True, text=True, timeout=120, check=True, cwd=cwd)
    got_threads, digest = out.stdout.split()
    assert int(got_threads) == threads
    return digest


def test_same_seed_gives_the_same_noise_in_new_processes_for_any_thread_count():
    first = _run_script(seed=5, threads=1)
    assert _run_script(seed=5, threads=2) == first
    assert _run_script(seed=6, threads=1) != first


# ----------------------------------------------------------------------------
# Config, shapes and validation


@pytest.mark.parametrize(
    "layer,expected",
    [
        (SpatialDropout1D(0.2, seed=3), {"rate": 0.2, "seed": 3}),
        (SpatialDropout2D(0.2, data_format="channels_first"), {"rate": 0.2, "seed": None, "data_format": "channels_first"}),
        (SpatialDropout3D(0.1, seed=1), {"rate": 0.1, "seed": 1, "data_format": "channels_last"}),
        (GaussianNoise(0.3, seed=2), {"stddev": 0.3, "seed": 2}),
        (GaussianDropout(0.4), {"rate": 0.4, "seed": None}),
        (Dropout(0.5, noise_shape=[None, 1, 4], seed=9), {"rate": 0.5, "seed": 9, "noise_shape": (None, 1, 4)}),
    ],
)
def test_config_round_trip(layer, expected):
    cfg = layer.get_config()
    for key, value in expected.items():
        assert cfg[key] == value, key
    # Keras's spatial dropouts and Gaussian layers have no noise_shape argument.
    assert ("noise_shape" in cfg) == (type(layer) is Dropout)
    # Through JSON, as a saved model's config.json carries it.
    clone = type(layer).from_config(json.loads(json.dumps(cfg)))
    assert clone.get_config() == cfg


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: SpatialDropout2D(1.0, name="sd"), "SpatialDropout2D 'sd'"),
        (lambda: SpatialDropout1D(-0.1, name="sd1"), "SpatialDropout1D 'sd1'"),
        (lambda: SpatialDropout3D("0.5", name="sd3"), "SpatialDropout3D 'sd3'"),
        (lambda: GaussianDropout(1.5, name="gd"), "GaussianDropout 'gd'"),
        (lambda: GaussianNoise(-0.5, name="gn"), "GaussianNoise 'gn'"),
        (lambda: GaussianNoise(float("nan"), name="gn2"), "GaussianNoise 'gn2'"),
        (lambda: SpatialDropout2D(0.5, data_format="nchw"), "data_format"),
        (lambda: Dropout(0.5, noise_shape=(None, -1), name="d"), "Dropout 'd'"),
        (lambda: Dropout(0.5, noise_shape="batch", name="d2"), "Dropout 'd2'"),
    ],
)
def test_bad_arguments_raise_naming_the_layer(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_wrong_input_rank_and_noise_shape_name_the_layer():
    with pytest.raises(ValueError, match='"sd2".*ndim=4'):
        SpatialDropout2D(0.5, name="sd2")(keras.Input(shape=(4, 3)))
    with pytest.raises(ValueError, match="sd1d"):
        SpatialDropout1D(0.5, name="sd1d")(np.ones((2, 3, 4, 5), np.float32), training=True)
    with pytest.raises(ValueError, match="Dropout 'dn'.*one entry per input dimension"):
        Dropout(0.5, noise_shape=(None, 1), name="dn")(keras.Input(shape=(4, 3)))
    with pytest.raises(ValueError, match="Dropout 'dm'.*axis 2"):
        Dropout(0.5, noise_shape=(None, 1, 2), name="dm")(keras.Input(shape=(4, 3)))
    with pytest.raises(ValueError, match="Dropout 'de'"):
        Dropout(0.5, noise_shape=(None, 2), name="de")(np.ones((2, 3), np.float32), training=True)


def test_rate_zero_and_stddev_zero_are_the_identity_in_training():
    x = _uniform((4, 3, 5), 16)
    for layer in (SpatialDropout1D(0.0), GaussianNoise(0.0), GaussianDropout(0.0)):
        np.testing.assert_array_equal(np.asarray(layer(x, training=True)), x)
        np.testing.assert_array_equal(_training_output(_model(type(layer).from_config(layer.get_config()), (3, 5)), x), x)


def test_explicit_training_false_in_a_graph_is_the_identity():
    inputs = keras.Input(shape=(2, 3))
    outputs = GaussianNoise(5.0)(SpatialDropout1D(0.9)(inputs, training=False), training=False)
    outputs = GaussianDropout(0.5)(Dropout(0.9)(outputs, training=False), training=False)
    model = keras.Model(inputs, outputs)
    x = _uniform((4, 2, 3), 17)
    np.testing.assert_array_equal(_training_output(model, x), x)
