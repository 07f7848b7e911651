"""LayerNormalization.

- Parity with real Keras 3: the LayerNormalization cases of tests/reference/data/cnn
  (weights listing, outputs with Keras's weights, symbolic shapes).
- A float64 NumPy reference of the formula on random shapes, axes, flags and weights.
- Gradients of the input, gamma and beta against central finite differences; one
  compiled SGD step against the eager GradientTape gradients.
- Unknown batch and other dimensions, errors, regularizers, configs.
"""

import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pyfuncnet as keras
from helpers import finite_differences, make_array
from pyfuncnet import GradientTape, ops
from pyfuncnet.layers.layer_normalization import LayerNormalization

DATA = os.path.join(os.path.dirname(__file__), "reference", "data", "cnn")
RTOL = 1e-5


# ----------------------------------------------------------------------------
# Parity with Keras 3


def _reference_cases():
    with open(os.path.join(DATA, "layers.json"), encoding="utf-8") as handle:
        cases = json.load(handle)["cases"]
    return {c["id"]: c for c in cases if c["class"] == "LayerNormalization"}


CASES = _reference_cases()
_arrays = None


def reference_arrays():
    global _arrays
    if _arrays is None:
        with np.load(os.path.join(DATA, "layers.npz")) as archive:
            _arrays = {k: archive[k] for k in archive.files if k.split("/")[0] in CASES}
    return _arrays


def reference_layer(case_id):
    record = CASES[case_id]
    layer = LayerNormalization(**record["kwargs"])
    layer.build(tuple(record["input_shape"]))
    return layer


def assert_close(got, want, rtol=RTOL, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    scale = float(np.abs(want).max()) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-6), err_msg=what)


def test_reference_cases_exist():
    assert len(CASES) >= 8


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_weights_match_keras(case_id):
    layer = reference_layer(case_id)
    got = [{"name": w.name, "shape": list(w.shape), "trainable": w.trainable} for w in layer.weights]
    assert got == CASES[case_id]["weights"]
    assert [w.path for w in layer.weights] == [f"{layer.name}/{w['name']}" for w in CASES[case_id]["weights"]]


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_output_matches_keras(case_id):
    layer = reference_layer(case_id)
    arrays = reference_arrays()
    layer.set_weights([arrays[f"{case_id}/weight_{i}"] for i in range(len(layer.weights))])
    x = arrays[f"{case_id}/input"]
    assert_close(layer(x), arrays[f"{case_id}/output"], what=case_id)
    assert_close(layer(x, training=True), arrays[f"{case_id}/output"], what=f"{case_id} training")


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_symbolic_shape_and_compiled_output_match_keras(case_id):
    record = CASES[case_id]
    inputs = keras.Input(shape=tuple(record["input_shape"][1:]))
    layer = LayerNormalization(**record["kwargs"])
    out = layer(inputs)
    assert list(out.shape) == record["symbolic_output_shape"]
    assert list(layer.compute_output_shape((None, *record["input_shape"][1:]))) == record["symbolic_output_shape"]
    arrays = reference_arrays()
    layer.set_weights([arrays[f"{case_id}/weight_{i}"] for i in range(len(layer.weights))])
    model = keras.Model(inputs, out)
    assert_close(model.predict(arrays[f"{case_id}/input"], verbose=0), arrays[f"{case_id}/output"], what=case_id)


# ----------------------------------------------------------------------------
# The formula in float64


def layer_norm_ref(x, axes, gamma=None, beta=None, epsilon=1e-3):
    """(x - mean) / sqrt(var + eps) * gamma + beta over `axes` (sorted, non-negative),
    with gamma / beta of the sizes of those axes."""
    mean = x.mean(axis=tuple(axes), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=tuple(axes), keepdims=True)
    out = (x - mean) / np.sqrt(var + epsilon)
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    if gamma is not None:
        out = out * np.reshape(gamma, shape)
    if beta is not None:
        out = out + np.reshape(beta, shape)
    return out


@st.composite
def layer_cases(draw):
    rank = draw(st.integers(2, 4))
    shape = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    chosen = draw(st.lists(st.integers(1, rank - 1), min_size=1, max_size=rank - 1, unique=True))
    given_axes = [a - rank if draw(st.booleans()) else a for a in chosen]
    axis = given_axes[0] if len(given_axes) == 1 and draw(st.booleans()) else given_axes
    flags = {"center": draw(st.booleans()), "scale": draw(st.booleans()), "epsilon": draw(st.sampled_from([1e-3, 1e-5, 0.1]))}
    seed = draw(st.integers(0, 2**31))
    layout = draw(st.sampled_from(["c", "t", "s"]))
    return shape, axis, sorted(chosen), flags, seed, layout


@given(layer_cases())
def test_matches_the_formula(case):
    shape, axis, axes, flags, seed, layout = case
    x = make_array(shape, layout, seed, low=-3.0, high=3.0)
    layer = LayerNormalization(axis=axis, **flags)
    layer.build(shape)
    rng = np.random.default_rng(seed)
    weights = [rng.uniform(-2.0, 2.0, w.shape).astype(np.float32) for w in layer.weights]
    layer.set_weights(weights)
    gamma = weights[0] if flags["scale"] else None
    beta = weights[-1] if flags["center"] else None
    want = layer_norm_ref(x.astype(np.float64), axes, gamma, beta, flags["epsilon"])
    np.testing.assert_allclose(layer(x), want, rtol=1e-4, atol=1e-4)
    assert all(tuple(w.shape) == tuple(shape[a] for a in axes) for w in layer.weights)


def test_default_normalises_the_last_axis_to_zero_mean_unit_variance():
    x = make_array((3, 4, 64), seed=1, low=-5.0, high=9.0)
    out = LayerNormalization(epsilon=0.0)(x).astype(np.float64)
    np.testing.assert_allclose(out.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=-1), 1.0, rtol=1e-4)


def test_variance_is_biased():
    x = np.array([[0.0, 2.0]], np.float32)  # mean 1, biased variance 1
    out = LayerNormalization(epsilon=0.0)(x)
    np.testing.assert_allclose(out, [[-1.0, 1.0]], rtol=1e-6)


def test_gamma_and_beta_broadcast_on_non_trailing_axes():
    x = make_array((2, 3, 4, 5), seed=2)
    layer = LayerNormalization(axis=[3, 1])
    layer.build(x.shape)
    assert layer.gamma.shape == (3, 5) and layer.beta.shape == (3, 5)
    gamma = np.arange(15, dtype=np.float32).reshape(3, 5) / 7.0
    beta = -np.arange(15, dtype=np.float32).reshape(3, 5) / 5.0
    layer.set_weights([gamma, beta])
    np.testing.assert_allclose(layer(x), layer_norm_ref(x.astype(np.float64), [1, 3], gamma, beta), rtol=1e-5, atol=1e-5)


def test_rms_scaling_is_deprecated_and_scales_by_the_variance():
    with pytest.warns(UserWarning, match="rms_scaling"):
        layer = LayerNormalization(rms_scaling=True, center=True)
    x = make_array((2, 3, 6), seed=4)
    layer.build(x.shape)
    assert [w.name for w in layer.weights] == ["gamma"]
    gamma = np.linspace(0.5, 2.0, 6).astype(np.float32)
    layer.set_weights([gamma])
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt(x64.var(axis=-1, keepdims=True) + 1e-3) * gamma
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# Gradients


def _set_random_weights(layer, seed):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.weights])


@pytest.mark.parametrize(
    "kwargs,shape,axes",
    [
        ({}, (2, 3, 4), [2]),
        ({"axis": [1, 2]}, (2, 3, 4), [1, 2]),
        ({"axis": [3, 1], "epsilon": 0.05}, (2, 3, 2, 4), [1, 3]),
        ({"axis": 1, "center": False}, (2, 4, 3), [1]),
        ({"axis": -2, "scale": False}, (2, 4, 3), [1]),
    ],
    ids=["last", "trailing_pair", "non_trailing", "middle_no_center", "middle_no_scale"],
)
def test_gradients_match_finite_differences(kwargs, shape, axes):
    layer = LayerNormalization(**kwargs)
    layer.build(shape)
    _set_random_weights(layer, 3)
    x = make_array(shape, seed=6, low=-2.0, high=2.0)
    names = [w.name for w in layer.weights]
    epsilon = kwargs.get("epsilon", 1e-3)

    def ref(x, *weights):
        by_name = dict(zip(names, weights))
        return layer_norm_ref(x, axes, by_name.get("gamma"), by_name.get("beta"), epsilon)

    values = [x.astype(np.float64)] + [w.numpy().astype(np.float64) for w in layer.weights]
    w_out = np.random.default_rng(0).uniform(-1.0, 1.0, shape)
    with GradientTape() as tape:
        tape.watch(x)
        loss = ops.sum(ops.multiply(layer(x), w_out.astype(np.float32)))
    grads = tape.gradient(loss, [x] + list(layer.weights))
    for index, grad in enumerate(grads):
        what = "input" if index == 0 else names[index - 1]
        assert grad is not None, f"gradient of {what} is None"
        fd = finite_differences(ref, values, [w_out], index)
        np.testing.assert_allclose(grad, fd, rtol=2e-3, atol=2e-3, err_msg=f"gradient of {what}")


@pytest.mark.parametrize("axis", [-1, [1, 3], [2, 3]])
def test_compiled_sgd_step_matches_the_tape(axis):
    keras.backend.clear_session()
    inputs = keras.Input(shape=(3, 4, 5))
    hidden = keras.layers.Dense(5)(inputs)
    norm = LayerNormalization(axis=axis)
    outputs = norm(hidden)
    model = keras.Model(inputs, outputs)
    _set_random_weights(norm, 1)
    rng = np.random.default_rng(2)
    data = rng.normal(size=(4, 3, 4, 5)).astype(np.float32)
    target = rng.normal(size=(4, 3, 4, 5)).astype(np.float32)
    before = [w.copy() for w in model.get_weights()]
    with GradientTape() as tape:
        pred = norm(model.layers[1](data))
        loss = ops.mean(ops.square(ops.subtract(pred, target)))
    grads = tape.gradient(loss, model.trainable_weights)
    lr = 0.5
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    np.testing.assert_allclose(model.train_on_batch(data, target), float(loss), rtol=1e-5)
    after = model.get_weights()
    assert [w.path for w in model.weights][-2:] == [f"{norm.name}/gamma", f"{norm.name}/beta"]
    for start, end, grad in zip(before, after, grads):
        assert np.abs(grad).max() > 0
        np.testing.assert_allclose((start - end) / lr, grad, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------
# Symbolic use with unknown dimensions


def test_unknown_batch_and_steps():
    inputs = keras.Input(shape=(None, 6))
    layer = LayerNormalization()
    out = layer(inputs)
    assert out.shape == (None, None, 6)
    _set_random_weights(layer, 5)
    model = keras.Model(inputs, out)
    gamma, beta = layer.get_weights()
    for steps in (2, 7):
        x = make_array((3, steps, 6), seed=steps)
        np.testing.assert_allclose(model.predict(x, verbose=0), layer_norm_ref(x.astype(np.float64), [2], gamma, beta), rtol=1e-4, atol=1e-5)


def test_normalising_an_unknown_axis_is_refused():
    layer = LayerNormalization(axis=1, name="ln")
    with pytest.raises(ValueError, match=r"LayerNormalization 'ln'.*must be known.*\(None, None, 6\)"):
        layer(keras.Input(shape=(None, 6)))


def test_compute_output_shape_keeps_unknown_dims():
    assert LayerNormalization(axis=[1, 2]).compute_output_shape((None, None, 4, 5)) == (None, None, 4, 5)


# ----------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("axis", ["last", 1.0, None, [1, "2"], [], (True,)])
def test_bad_axis_type_is_a_type_error(axis):
    with pytest.raises(TypeError, match="LayerNormalization 'ln'.*'axis'"):
        LayerNormalization(axis=axis, name="ln")


@pytest.mark.parametrize("epsilon", [-1e-3, float("nan"), "small", None])
def test_bad_epsilon_is_refused(epsilon):
    with pytest.raises(ValueError, match="LayerNormalization 'ln'.*`epsilon`"):
        LayerNormalization(epsilon=epsilon, name="ln")


@pytest.mark.parametrize("axis", [3, -4, [1, 5]])
def test_axis_out_of_bounds_names_the_layer_and_shape(axis):
    with pytest.raises(ValueError, match=r"LayerNormalization 'ln'.*out of bounds.*rank 3"):
        LayerNormalization(axis=axis, name="ln")(keras.Input(shape=(4, 5)))
    with pytest.raises(ValueError, match=r"LayerNormalization 'ln2'.*out of bounds.*\(2, 4, 5\)"):
        LayerNormalization(axis=axis, name="ln2").build((2, 4, 5))
    with pytest.raises(ValueError, match="out of bounds"):
        LayerNormalization(axis=axis).compute_output_shape((2, 4, 5))


def test_the_same_axis_twice_is_refused():
    with pytest.raises(ValueError, match="LayerNormalization 'ln'.*same axis twice"):
        LayerNormalization(axis=[2, -1], name="ln").build((2, 4, 5))


def test_inputs_with_other_sizes_on_the_normalised_axes_are_refused():
    layer = LayerNormalization(name="ln")
    layer(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r'layer "ln".*axis -1.*value 5.*\(2, 6\)'):
        layer(np.zeros((2, 6), np.float32))
    # Another rank with the same last axis is fine (gamma and beta broadcast).
    assert layer(np.ones((2, 3, 5), np.float32)).shape == (2, 3, 5)


# ----------------------------------------------------------------------------
# Regularizers, constraints, configs


def test_regularizers_and_constraints_reach_the_weights():
    layer = LayerNormalization(gamma_regularizer=keras.regularizers.L2(0.5), beta_regularizer="l1", gamma_constraint="non_neg")
    layer.build((2, 3))
    layer.set_weights([np.array([1.0, -2.0, 3.0], np.float32), np.array([0.5, -0.5, 1.0], np.float32)])
    penalties = [float(np.asarray(p)) for p in layer.losses]
    np.testing.assert_allclose(sorted(penalties), sorted([0.5 * 14.0, 0.01 * 2.0]), rtol=1e-6)
    assert layer.gamma.constraint is not None and layer.beta.constraint is None


def test_config_matches_keras_and_round_trips():
    layer = LayerNormalization(axis=[3, 1], epsilon=1e-5, center=False, gamma_initializer="zeros", name="ln")
    config = layer.get_config()
    assert config == {
        "name": "ln",
        "trainable": True,
        "dtype": "float32",
        "axis": [3, 1],
        "epsilon": 1e-5,
        "center": False,
        "scale": True,
        "rms_scaling": False,
        "beta_initializer": keras.initializers.serialize(keras.initializers.get("zeros")),
        "gamma_initializer": keras.initializers.serialize(keras.initializers.get("zeros")),
        "beta_regularizer": None,
        "gamma_regularizer": None,
        "beta_constraint": None,
        "gamma_constraint": None,
    }
    clone = LayerNormalization.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config
    x = make_array((2, 3, 4, 5), seed=8)
    clone.build(x.shape)
    layer.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x), layer(x))


def test_int_axis_becomes_a_list_once_built_as_in_keras():
    layer = LayerNormalization()
    assert layer.get_config()["axis"] == -1
    layer.build((2, 3))
    assert layer.get_config()["axis"] == [-1]
    assert LayerNormalization.from_config(layer.get_config()).axis == [-1]


def test_regularizer_config_round_trips():
    layer = LayerNormalization(gamma_regularizer=keras.regularizers.L2(0.25), beta_constraint=keras.constraints.MaxNorm(2.0))
    clone = LayerNormalization.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
