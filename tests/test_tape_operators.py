"""GradientTape follows Python operators, numpy ufuncs and indexing on eager
results, as TensorFlow's tape follows tensor arithmetic. References are worked
out by hand in float64."""

import numpy as np
import pytest

import pyfuncnet as keras
from pyfuncnet import ops
from pyfuncnet._tensor import TapeTensor


def test_operators_on_op_results_are_recorded():
    x0 = np.array([0.5, -1.0, 2.0, 3.0])
    x = keras.Variable(x0.astype(np.float32))
    with keras.GradientTape() as tape:
        y = ops.square(x)  # a TapeTensor while the tape records
        z = 1.0 + y * 3.0 - y / 2.0  # 1 + 2.5 x^2
        w = -z[1:]
        loss = ops.sum(w)
    g = tape.gradient(loss, x)
    want = np.where(np.arange(4) >= 1, -5.0 * x0, 0.0)
    np.testing.assert_allclose(g, want, rtol=1e-6)
    np.testing.assert_allclose(loss, -np.sum(1 + 2.5 * x0[1:] ** 2), rtol=1e-6)


def test_watched_constant_with_operators():
    x = ops.convert_to_tensor([1.0, 2.0, 3.0])
    with keras.GradientTape() as tape:
        tape.watch(x)
        y = x * x + np.exp(x) @ np.ones(3, np.float32)
    g = tape.gradient(y, x)
    x64 = np.array([1.0, 2.0, 3.0])
    # d/dx_i sum_j (x_j^2 + sum_k e^{x_k}) = 2 x_i + 3 e^{x_i}
    np.testing.assert_allclose(g, 2 * x64 + 3 * np.exp(x64), rtol=1e-5)


def test_matmul_operator_and_reflected_operators():
    a0 = np.array([[1.0, 2.0], [3.0, 4.0]])
    w0 = np.array([[0.5], [-1.0]])
    a = ops.convert_to_tensor(a0)
    w = keras.Variable(w0.astype(np.float32))
    with keras.GradientTape() as tape:
        h = ops.tanh(a @ w)  # Variable operand routes through ops too
        loss = ops.sum(2.0 ** h)
    g = tape.gradient(loss, w)
    z = a0 @ w0
    dh = np.log(2.0) * 2.0 ** np.tanh(z) * (1 - np.tanh(z) ** 2)
    np.testing.assert_allclose(g, a0.T @ dh, rtol=1e-5)


def test_results_are_plain_arrays_outside_a_tape():
    x = np.ones((2, 3), np.float32)
    assert type(ops.exp(x)) is np.ndarray
    with keras.GradientTape():
        t = ops.exp(x)
    assert isinstance(t, TapeTensor)
    # After the tape, arithmetic on a tape result is plain numpy.
    assert type(t * 2) is np.ndarray
    assert type(t[0]) is np.ndarray
    np.testing.assert_allclose(t * 2, 2 * np.e, rtol=1e-6)


def test_paused_recording_and_fancy_indexing_are_not_recorded():
    x = keras.Variable(np.array([1.0, 2.0, 3.0], np.float32))
    with keras.GradientTape(persistent=True) as tape:
        y = ops.square(x)
        with tape.stop_recording():
            paused = y * 2.0
        picked = y[[0, 2]]  # advanced indexing: plain numpy, not followed
        kept = y[::2]  # basic slicing: followed
        loss_paused = ops.sum(paused)
        loss_picked = ops.sum(picked)
        loss_kept = ops.sum(kept)
    assert tape.gradient(loss_paused, x) is None
    assert tape.gradient(loss_picked, x) is None
    np.testing.assert_allclose(tape.gradient(loss_kept, x), [2.0, 0.0, 6.0])


@pytest.mark.parametrize("ufunc, deriv", [(np.sqrt, lambda v: 0.5 / np.sqrt(v)), (np.log, lambda v: 1 / v), (np.negative, lambda v: -np.ones_like(v))])
def test_unary_ufuncs_are_recorded(ufunc, deriv):
    v = np.array([0.5, 1.5, 4.0])
    x = keras.Variable(v.astype(np.float32))
    with keras.GradientTape() as tape:
        y = ufunc(ops.multiply(x, 1.0))
    np.testing.assert_allclose(tape.gradient(y, x), deriv(v), rtol=1e-6)
