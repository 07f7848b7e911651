"""`from pyfuncnet import backend as K`: Keras-2 style functions against NumPy."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import arrays, axes, check_op, sigmoid_ref, softmax_ref
from pyfuncnet import GradientTape, Variable
from pyfuncnet import backend as K
from pyfuncnet._symbolic import KerasTensor


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "var", "std"])
@given(data=st.data())
def test_reductions(name, data):
    x = data.draw(arrays(min_dims=1, min_side=2, distinct=True, max_size=512))
    axis, keepdims = data.draw(axes(x.ndim)), data.draw(st.booleans())
    ref = getattr(np, name)
    fn = getattr(K, name)
    check_op(lambda a: fn(a, axis, keepdims), lambda a: ref(a, axis=axis, keepdims=keepdims), [x], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "name,ref",
    [
        ("square", np.square),
        ("abs", np.abs),
        ("exp", np.exp),
        ("sign", np.sign),
        ("relu", lambda a: np.maximum(a, 0)),
        ("sigmoid", sigmoid_ref),
        ("tanh", np.tanh),
        ("softsign", lambda a: a / (1 + np.abs(a))),
        ("hard_sigmoid", lambda a: np.clip(a + 3, 0, 6) / 6),
    ],
)
@given(x=arrays(min_dims=0, avoid=(0.0,), gap=0.01))
def test_elementwise(name, ref, x):
    check_op(getattr(K, name), ref, [x])


@given(x=arrays(min_dims=0, low=0.1, high=3.0))
def test_log_sqrt_pow(x):
    check_op(K.log, np.log, [x])
    check_op(K.sqrt, np.sqrt, [x])
    check_op(lambda a: K.pow(a, 1.5), lambda a: a**1.5, [x])
    check_op(lambda a: K.clip(a, 0.5, 2.0), lambda a: np.clip(a, 0.5, 2.0), [x])


@given(x=arrays(min_dims=1, min_side=1))
def test_softmax_and_argmax_default_last_axis(x):
    check_op(K.softmax, softmax_ref, [x])
    # No ties: values on a 0.1 grid plus distinct offsets below the grid step.
    untied = np.round(x, 1) + np.arange(x.shape[-1], dtype=np.float32) * 1e-3
    check_op(K.argmax, lambda a: np.argmax(a, axis=-1), [untied])
    check_op(K.argmin, lambda a: np.argmin(a, axis=-1), [untied])


@given(data=st.data())
def test_concatenate_defaults_to_last_axis(data):
    a = data.draw(arrays(min_dims=1, max_size=256))
    b = data.draw(arrays(a.shape[:-1] + (data.draw(st.sampled_from([0, 1, 3, 8])),)))
    check_op(lambda x, y: K.concatenate([x, y]), lambda x, y: np.concatenate([x, y], axis=-1), [a, b], rtol=0, atol=0)


def test_expand_dims_defaults_to_last_axis_and_squeeze():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    check_op(K.expand_dims, lambda a: a[..., None], [x], rtol=0, atol=0)
    check_op(lambda a: K.squeeze(a, 1), lambda a: a[:, 0], [x[:, :1]], rtol=0, atol=0)
    check_op(lambda a, b: K.stack([a, b]), lambda a, b: np.stack([a, b]), [x, 2 * x], rtol=0, atol=0)


def test_dot_batch_dot_gather():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 3, 5)).astype(np.float32)
    b = rng.normal(size=(4, 5, 2)).astype(np.float32)
    check_op(K.batch_dot, lambda x, y: np.einsum("bij,bjk->bik", x, y), [a, b], atol=1e-5)
    check_op(K.dot, np.dot, [a[0], b[0]], atol=1e-5)
    check_op(lambda x: K.gather(x, np.array([2, 0, 2])), lambda x: x[[2, 0, 2]], [a[0]], rtol=0, atol=0)
    with pytest.raises(NotImplementedError):
        K.batch_dot(a, b, axes=(1, 2))


def test_variable_get_set_value():
    v = K.variable([[1, 2], [3, 4]], name="kernel")
    assert isinstance(v, Variable) and v.name == "kernel"
    got = K.get_value(v)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [[1.0, 2.0], [3.0, 4.0]])
    got[0, 0] = 100.0  # a copy: the variable is not changed through it
    assert K.get_value(v)[0, 0] == 1.0
    K.set_value(v, np.array([[5, 6], [7, 8]]))
    np.testing.assert_array_equal(K.eval(v), [[5.0, 6.0], [7.0, 8.0]])
    with pytest.raises(ValueError):
        K.set_value(v, np.zeros(3))
    np.testing.assert_array_equal(K.get_value(v), [[5.0, 6.0], [7.0, 8.0]])


def test_scalar_variable_keeps_rank_zero():
    v = K.variable(3.5)
    assert K.int_shape(v) == () and K.ndim(v) == 0
    K.set_value(v, 4.0)
    assert K.get_value(v) == np.float32(4.0)


def test_variable_in_a_tape():
    v = K.variable([1.0, -2.0])
    with GradientTape() as tape:
        loss = K.mean(K.square(v))
    np.testing.assert_allclose(tape.gradient(loss, v), [1.0, -2.0])


def test_epsilon_floatx_format():
    assert K.epsilon() == 1e-7
    assert K.floatx() == "float32"
    assert K.image_data_format() == "channels_last"


def test_int_shape_ndim_is_keras_tensor():
    t = KerasTensor((None, 4, 3))
    assert K.int_shape(t) == (None, 4, 3) and K.ndim(t) == 3 and K.is_keras_tensor(t)
    assert K.int_shape(np.zeros((2, 5))) == (2, 5) and not K.is_keras_tensor(np.zeros(2))
    assert K.int_shape(K.variable(np.zeros((3, 1)))) == (3, 1)
    assert K.int_shape(K.mean(t, axis=1)) == (None, 3)
    assert K.int_shape(K.concatenate([t, t])) == (None, 4, 6)


def test_constant_zeros_ones():
    c = K.constant(2.0, shape=(2, 3))
    assert c.dtype == np.float32 and c.shape == (2, 3) and np.all(c == 2.0)
    assert K.zeros((2, 2)).dtype == np.float32 and not K.zeros((2, 2)).any()
    assert K.ones_like(np.zeros((3, 1), np.float64)).shape == (3, 1)


def test_cast_one_hot_switch():
    x = np.array([-1.5, 0.0, 2.7], np.float32)
    check_op(lambda a: K.cast(a, "int32"), lambda a: a.astype(np.int32), [x])
    check_op(lambda i: K.one_hot(i, 4), lambda i: np.eye(4)[i], [np.array([3, 0, 1], np.int32)])
    check_op(lambda a: K.switch(a > 0, a, -a), np.abs, [x])
