"""Activations against float64 NumPy formulas (eager, symbolic and compiled,
gradients of the composed ones), and `get` / `serialize` / `deserialize`."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import (
    arrays,
    check_grad,
    check_op,
    check_symbolic,
    elu_ref,
    gelu_exact,
    gelu_tanh,
    hard_sigmoid_ref,
    log_softmax_ref,
    make_array,
    selu_ref,
    sigmoid_ref,
    softmax_ref,
    softplus_ref,
)
from pyfuncnet import activations, ops


def relu_documented(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras's documented relu: `max_value` at or above it, `x` from the threshold
    up, `negative_slope * (x - threshold)` below the threshold."""
    top = np.inf if max_value is None else max_value
    return np.where(x >= top, top, np.where(x >= threshold, x, negative_slope * (x - threshold)))


def mish_ref(x):
    return x * np.tanh(np.logaddexp(0.0, x))


_KINK0 = {"avoid": (0.0,), "gap": 0.05}
_WIDE = {"low": -6.0, "high": 6.0}
_HARD = {**_WIDE, "avoid": (-3.0, 3.0), "gap": 0.05}  # away from hard_sigmoid's kinks
_SOFTMAX = {"low": -5.0, "high": 5.0, "min_side": 1, "min_dims": 1}

# name -> (activation, float64 reference, value options)
FUNCTIONS = {
    "relu": (activations.relu, lambda x: np.maximum(x, 0.0), _KINK0),
    "relu6": (
        activations.relu6,
        lambda x: np.clip(x, 0.0, 6.0),
        {"low": -8.0, "high": 8.0, "avoid": (0.0, 6.0), "gap": 0.05},
    ),
    "sigmoid": (activations.sigmoid, sigmoid_ref, _WIDE),
    "tanh": (activations.tanh, np.tanh, _WIDE),
    "softmax": (activations.softmax, softmax_ref, _SOFTMAX),
    "softmax_axis0": (lambda x: activations.softmax(x, axis=0), lambda x: softmax_ref(x, 0), _SOFTMAX),
    "log_softmax": (activations.log_softmax, log_softmax_ref, _SOFTMAX),
    "log_softmax_axis0": (lambda x: activations.log_softmax(x, axis=0), lambda x: log_softmax_ref(x, 0), _SOFTMAX),
    "elu": (activations.elu, elu_ref, _KINK0),
    "elu_alpha": (lambda x: activations.elu(x, alpha=0.3), lambda x: elu_ref(x, 0.3), _KINK0),
    "selu": (activations.selu, selu_ref, _KINK0),
    "gelu": (activations.gelu, gelu_exact, _WIDE),
    "gelu_approximate": (lambda x: activations.gelu(x, approximate=True), gelu_tanh, _WIDE),
    "silu": (activations.silu, lambda x: x * sigmoid_ref(x), _WIDE),
    "swish": (activations.swish, lambda x: x * sigmoid_ref(x), _WIDE),
    "softplus": (activations.softplus, softplus_ref, _WIDE),
    "softsign": (activations.softsign, lambda x: x / (1.0 + np.abs(x)), _KINK0),
    "leaky_relu": (activations.leaky_relu, lambda x: np.where(x > 0, x, 0.2 * x), _KINK0),
    "leaky_relu_slope": (
        lambda x: activations.leaky_relu(x, negative_slope=0.01),
        lambda x: np.where(x > 0, x, 0.01 * x),
        _KINK0,
    ),
    "hard_sigmoid": (activations.hard_sigmoid, hard_sigmoid_ref, _HARD),
    "hard_silu": (activations.hard_silu, lambda x: x * hard_sigmoid_ref(x), _HARD),
    "hard_swish": (activations.hard_swish, lambda x: x * hard_sigmoid_ref(x), _HARD),
    "exponential": (activations.exponential, np.exp, {"low": -5.0, "high": 5.0}),
    "linear": (activations.linear, lambda x: x, {}),
    "mish": (activations.mish, mish_ref, _WIDE),
}

# (negative_slope, max_value, threshold): every branch of relu's arguments.
RELU_ARGS = [
    (0.1, None, 0.0),
    (0.0, 6.0, 0.0),
    (0.0, 2.5, 0.0),
    (0.3, 4.0, 0.0),
    (0.0, None, 1.0),
    (0.2, 3.0, 1.0),
    (0.2, None, -1.0),
    (0.5, None, 2.0),
]
for _args in RELU_ARGS:
    _ns, _mv, _th = _args
    FUNCTIONS[f"relu{_args}"] = (
        lambda x, a=_args: activations.relu(x, *a),
        lambda x, a=_args: relu_documented(x, *a),
        {**_WIDE, "avoid": tuple(p for p in (0.0, _mv, _th) if p is not None), "gap": 0.05},
    )

NAMES = sorted(FUNCTIONS)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_eager(name, data):
    fn, ref, values = FUNCTIONS[name]
    check_op(fn, ref, [data.draw(arrays(**{"min_dims": 0, **values}))], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_symbolic_and_compiled(name):
    fn, ref, values = FUNCTIONS[name]
    values = {k: v for k, v in values.items() if k not in ("min_side", "min_dims")}
    check_symbolic(fn, ref, [make_array((6, 5), seed=3, **values)])


COMPOSED = ["mish", "hard_silu"] + [f"relu{a}" for a in RELU_ARGS]


@pytest.mark.parametrize("name", COMPOSED)
def test_gradients_of_composed_activations(name):
    fn, ref, values = FUNCTIONS[name]
    check_grad(fn, ref, [make_array((4, 5), seed=5, **values)])


def test_values_by_hand():
    x = np.array([-4.0, -1.0, 0.5, 5.0], dtype=np.float32)
    np.testing.assert_allclose(activations.hard_sigmoid(x), [0.0, 1 / 3, 7 / 12, 1.0], rtol=1e-6)
    np.testing.assert_allclose(activations.hard_silu(x), [0.0, -1 / 3, 7 / 24, 5.0], rtol=1e-6)
    np.testing.assert_allclose(activations.leaky_relu(x), [-0.8, -0.2, 0.5, 5.0], rtol=1e-6)
    np.testing.assert_allclose(activations.relu(x, negative_slope=0.5, max_value=2.0), [-2.0, -0.5, 0.5, 2.0])
    assert float(activations.gelu(np.float32(1.0))) == pytest.approx(0.5 * (1 + math.erf(1 / math.sqrt(2))), rel=1e-6)


def test_relu_follows_keras_where_the_documentation_is_silent():
    # Keras 3 clips to [0, max_value] after thresholding: with a negative threshold
    # and a cap, values between the threshold and 0 become 0 (the documented
    # piecewise formula would keep them); at the threshold itself the result is 0.
    x = np.array([-0.5, -1.0, 3.0], dtype=np.float32)
    np.testing.assert_allclose(activations.relu(x, threshold=-1.0, max_value=2.0), [0.0, 0.0, 2.0])
    np.testing.assert_allclose(activations.relu(np.float32(1.0), threshold=1.0), 0.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_value": -1.0}, "max_value"),
        ({"max_value": "6"}, "max_value"),
        ({"negative_slope": float("nan")}, "negative_slope"),
        ({"threshold": None}, "threshold"),
    ],
)
def test_relu_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        activations.relu(np.ones(2), **kwargs)


def test_activation_of_an_empty_tensor():
    for name in ("relu", "mish", "hard_silu", "gelu"):
        out = activations.get(name)(np.zeros((0, 3), dtype=np.float32))
        assert out.shape == (0, 3)


# ----------------------------------------------------------------------------
# get / serialize / deserialize

BUILTIN_NAMES = [
    "relu",
    "relu6",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "elu",
    "selu",
    "gelu",
    "silu",
    "softplus",
    "softsign",
    "leaky_relu",
    "hard_sigmoid",
    "hard_silu",
    "exponential",
    "linear",
    "mish",
]


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_names_round_trip(name):
    fn = activations.get(name)
    assert fn is getattr(activations, name)
    assert activations.serialize(fn) == name
    assert activations.deserialize(name) is fn
    # Keras's dict form of a built-in function.
    assert activations.deserialize({"class_name": "function", "config": name, "registered_name": name}) is fn


def test_aliases_serialize_as_keras_names():
    assert activations.get("swish") is activations.silu
    assert activations.serialize(activations.swish) == "silu"
    assert activations.get("hard_swish") is activations.hard_silu
    assert activations.serialize(activations.hard_swish) == "hard_silu"


def test_get_none_callables_and_errors():
    assert activations.get(None) is activations.linear

    def custom(x):
        return x * 2

    assert activations.get(custom) is custom
    with pytest.raises(ValueError, match="relux"):
        activations.get("relux")
    with pytest.raises(ValueError, match="identifier"):
        activations.get(3)


def test_ops_functions_with_the_same_defaults_serialize_as_builtins():
    for name in ("relu", "sigmoid", "tanh", "softmax", "silu", "leaky_relu", "hard_sigmoid", "linear"):
        assert activations.serialize(getattr(ops, name)) == name
    # ops.gelu defaults to the tanh approximation: not the "gelu" activation.
    assert activations.serialize(ops.gelu) != "gelu"


def test_custom_functions_serialize_as_dicts_even_with_a_builtin_name():
    def relu(x):  # a user function that happens to be called relu
        return x

    config = activations.serialize(relu)
    assert config == {"module": __name__, "class_name": "function", "config": "relu", "registered_name": "relu"}
    assert activations.deserialize(config, custom_objects={"relu": relu}) is relu
    with pytest.raises(TypeError):
        activations.serialize(3)
