"""The GradientTape contract (TensorFlow's), with gradients worked out by hand."""

import numpy as np
import pytest

from helpers import check_grad, make_array
from pyfuncnet import GradientTape, Variable, ops


def _x():
    return np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.5]], np.float32)


def test_context_manager_returns_the_tape():
    tape = GradientTape()
    with tape as t:
        assert t is tape


def test_trainable_variables_are_watched_automatically():
    v = Variable(_x())
    with GradientTape() as tape:
        y = ops.sum(ops.square(v))
    np.testing.assert_allclose(tape.gradient(y, v), 2 * _x(), rtol=1e-6)


def test_arrays_only_through_watch():
    x = _x()
    with GradientTape(persistent=True) as tape:
        y = ops.sum(ops.exp(x))
    assert tape.gradient(y, x) is None
    with GradientTape() as tape:
        tape.watch(x)
        y = ops.sum(ops.exp(x))
    np.testing.assert_allclose(tape.gradient(y, x), np.exp(x.astype(np.float64)), rtol=1e-5)


def test_non_trainable_variable_is_not_watched_unless_asked():
    v = Variable(_x(), trainable=False)
    with GradientTape(persistent=True) as tape:
        y = ops.sum(ops.multiply(v, 3.0))
    assert tape.gradient(y, v) is None
    with GradientTape() as tape:
        tape.watch(v)
        y = ops.sum(ops.multiply(v, 3.0))
    np.testing.assert_allclose(tape.gradient(y, v), np.full((2, 3), 3.0))


def test_watch_accessed_variables_false():
    a, b = Variable(_x()), Variable(np.ones(3))
    with GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(b)
        y = ops.sum(ops.multiply(a, b))
    ga, gb = tape.gradient(y, [a, b])
    assert ga is None
    np.testing.assert_allclose(gb, _x().sum(axis=0), rtol=1e-6)


@pytest.mark.parametrize("kind", ["list", "tuple", "dict", "nested"])
def test_gradient_keeps_the_structure_of_sources(kind):
    a, b, c = Variable(np.array([1.0, 2.0])), Variable(np.array(3.0)), Variable(np.array([5.0]))
    with GradientTape() as tape:
        # y = sum(a^2) * b + c * 0  -> da = 2ab, db = sum(a^2), dc = 0
        y = ops.add(ops.multiply(ops.sum(ops.square(a)), b), ops.sum(ops.multiply(c, 0.0)))
    want = {"a": [6.0, 12.0], "b": 5.0, "c": [0.0]}
    if kind == "list":
        g = tape.gradient(y, [a, b, c])
        assert isinstance(g, list) and len(g) == 3
        got = dict(zip("abc", g))
    elif kind == "tuple":
        g = tape.gradient(y, (a, b, c))
        assert isinstance(g, tuple) and len(g) == 3
        got = dict(zip("abc", g))
    elif kind == "dict":
        g = tape.gradient(y, {"b": b, "a": a, "c": c})
        assert isinstance(g, dict) and set(g) == {"a", "b", "c"}
        got = g
    else:
        g = tape.gradient(y, {"first": [a, (b,)], "second": c})
        assert isinstance(g["first"], list) and isinstance(g["first"][1], tuple)
        got = {"a": g["first"][0], "b": g["first"][1][0], "c": g["second"]}
    for k in "abc":
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6)
    assert np.shape(got["b"]) == () and np.shape(got["a"]) == (2,)


def test_single_source_gives_a_single_gradient():
    v = Variable(np.array([1.0, 2.0]))
    with GradientTape() as tape:
        y = ops.sum(ops.square(v))
    g = tape.gradient(y, v)
    assert isinstance(g, np.ndarray) and g.dtype == np.float32
    np.testing.assert_allclose(g, [2.0, 4.0])


def test_none_for_unconnected_sources():
    a, b = Variable(np.array([1.0, 2.0])), Variable(np.array([3.0]))
    unrelated = np.ones(3, np.float32)
    with GradientTape() as tape:
        tape.watch(unrelated)
        _ = ops.exp(unrelated)
        y = ops.sum(ops.square(a))
    ga, gb, gu = tape.gradient(y, [a, b, unrelated])
    np.testing.assert_allclose(ga, [2.0, 4.0])
    assert gb is None and gu is None


def test_target_not_recorded_gives_none():
    a = Variable(np.array([1.0]))
    with GradientTape() as tape:
        pass
    assert tape.gradient(np.array(1.0, np.float32), a) is None


def test_non_persistent_tape_raises_on_second_call():
    a = Variable(np.array([1.0, 2.0]))
    with GradientTape() as tape:
        y = ops.sum(ops.square(a))
    tape.gradient(y, a)
    with pytest.raises(RuntimeError):
        tape.gradient(y, a)


def test_persistent_tape_allows_several_calls():
    a = Variable(np.array([1.0, 2.0]))
    with GradientTape(persistent=True) as tape:
        y = ops.sum(ops.square(a))
        z = ops.sum(ops.multiply(a, 3.0))
    for _ in range(2):
        np.testing.assert_allclose(tape.gradient(y, a), [2.0, 4.0])
        np.testing.assert_allclose(tape.gradient(z, a), [3.0, 3.0])


def test_stop_recording():
    a = Variable(np.array([1.0, 2.0]))
    with GradientTape() as tape:
        with tape.stop_recording():
            frozen = ops.square(a)  # a constant for the tape
        y = ops.sum(ops.multiply(frozen, a))
    # d/da sum(c * a) with c = a^2 held constant is c.
    np.testing.assert_allclose(tape.gradient(y, a), [1.0, 4.0])


def test_ops_after_exit_are_not_recorded():
    a = Variable(np.array([1.0, 2.0]))
    with GradientTape(persistent=True) as tape:
        y = ops.square(a)
    z = ops.sum(y)
    assert tape.gradient(z, a) is None
    np.testing.assert_allclose(tape.gradient(y, a), [2.0, 4.0])


def test_non_scalar_target_gives_gradient_of_its_sum():
    x = _x()
    with GradientTape() as tape:
        tape.watch(x)
        y = ops.multiply(ops.square(x), 0.5)
    np.testing.assert_allclose(tape.gradient(y, x), x, rtol=1e-6)


def test_list_target_is_summed():
    a = Variable(np.array([1.0, 2.0]))
    with GradientTape() as tape:
        y1 = ops.sum(ops.square(a))
        y2 = ops.multiply(a, 5.0)
    np.testing.assert_allclose(tape.gradient([y1, y2], a), [7.0, 9.0])


def test_nested_tapes_record_independently():
    a = Variable(np.array([1.0, 2.0]))
    with GradientTape() as outer:
        y = ops.sum(ops.multiply(a, 3.0))
        with GradientTape() as inner:
            z = ops.sum(ops.square(a))
        total = ops.add(y, z)  # recorded by the outer tape only
    np.testing.assert_allclose(inner.gradient(z, a), [2.0, 4.0])
    np.testing.assert_allclose(outer.gradient(total, a), [5.0, 7.0])


def test_reused_input_accumulates():
    x = _x()
    with GradientTape() as tape:
        tape.watch(x)
        y = ops.sum(ops.add(ops.multiply(x, x), x))
    np.testing.assert_allclose(tape.gradient(y, x), 2 * x + 1, rtol=1e-6)


def test_integer_sources_get_none():
    idx = np.array([0, 2], np.int32)
    v = Variable(np.array([1.0, 2.0, 3.0]))
    with GradientTape() as tape:
        tape.watch(idx)
        y = ops.sum(ops.take(v, idx))
    gv, gi = tape.gradient(y, [v, idx])
    np.testing.assert_allclose(gv, [1.0, 0.0, 1.0])
    assert gi is None


def test_output_gradients_is_refused():
    a = Variable(np.array([1.0]))
    with GradientTape() as tape:
        y = ops.square(a)
    with pytest.raises(NotImplementedError):
        tape.gradient(y, a, output_gradients=np.ones(1, np.float32))


def test_variable_assign_after_recording_does_not_change_gradient():
    v = Variable(np.array([1.0, 2.0]))
    with GradientTape() as tape:
        y = ops.sum(ops.square(v))
    v.assign(np.array([10.0, 20.0]))
    np.testing.assert_allclose(tape.gradient(y, v), [2.0, 4.0])


# Composite ops, by hand.


def test_gradient_of_std():
    x = np.array([1.0, 2.0, 4.0, 7.0], np.float32)
    with GradientTape() as tape:
        tape.watch(x)
        s = ops.std(x)
    x64 = x.astype(np.float64)
    # d std / dx = (x - mean) / (n * std)
    np.testing.assert_allclose(tape.gradient(s, x), (x64 - x64.mean()) / (x64.size * x64.std()), rtol=1e-5)


def test_gradient_of_moments():
    x = np.array([[1.0, 3.0], [2.0, 6.0], [0.0, 0.0]], np.float32)
    with GradientTape() as tape:
        tape.watch(x)
        mean, variance = ops.moments(x, axes=0)
        y = ops.add(ops.sum(mean), ops.sum(variance))
    x64 = x.astype(np.float64)
    n = x.shape[0]
    np.testing.assert_allclose(tape.gradient(y, x), 1 / n + 2 * (x64 - x64.mean(axis=0)) / n, rtol=1e-5)


def test_gradient_of_stack_and_slicing():
    a, b = Variable(np.array([1.0, 2.0, 3.0])), Variable(np.array([4.0, 5.0, 6.0]))
    with GradientTape() as tape:
        # Eager results are numpy arrays (whose own indexing the tape cannot see), so
        # slicing is on the Variables and the stacked result is read with ops.take.
        s = ops.stack([a[::2], b[1:]], axis=1)  # [[a0, b1], [a2, b2]]
        y = ops.sum(ops.multiply(ops.take(s, 0, axis=1), ops.take(s, 1, axis=1)))  # a0 b1 + a2 b2
    ga, gb = tape.gradient(y, [a, b])
    np.testing.assert_allclose(ga, [5.0, 0.0, 6.0])
    np.testing.assert_allclose(gb, [0.0, 1.0, 3.0])


def test_gradient_of_getitem_with_none_and_ellipsis():
    x = make_array((3, 4, 5), "t", seed=11)
    check_grad(lambda v: v[None, ..., 1:4:2], lambda a: a[None, ..., 1:4:2], [x], wrap=True)
    check_grad(lambda v: v[-1, None, :, -2], lambda a: a[-1, None, :, -2], [x], wrap=True)


def test_gradient_through_variable_operators():
    v = Variable(np.array([1.0, -2.0, 3.0]))
    with GradientTape() as tape:
        y = ops.sum(ops.power(ops.subtract(v * v, v / 2.0), 2.0))
    x = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(tape.gradient(y, v), 2 * (x * x - x / 2) * (2 * x - 0.5), rtol=1e-5)


def test_a_functional_model_called_under_a_tape_is_differentiated_through_its_layers():
    """A custom training loop's `loss = f(model(x))`: every weight gets the gradient
    central differences of the model's own predictions give (in float64)."""
    import pyfuncnet as keras

    rng = np.random.default_rng(0)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    x = rng.random((5, 3)).astype(np.float32)
    model.predict(x, verbose=0)  # a compiled step exists: the tape must not take it
    with GradientTape() as tape:
        loss = ops.sum(ops.square(model(x)))
    grads = tape.gradient(loss, model.trainable_weights)
    weights = model.get_weights()

    def loss_at(k, index, delta):
        moved = [w.copy() for w in weights]
        moved[k][index] += delta
        model.set_weights(moved)
        return float(np.sum(model.predict(x, verbose=0).astype(np.float64) ** 2))

    eps = 1e-3
    for k, w in enumerate(weights):
        for index in [tuple(i) for i in np.ndindex(w.shape)][:4]:
            numeric = (loss_at(k, index, eps) - loss_at(k, index, -eps)) / (2 * eps)
            assert grads[k][index] == pytest.approx(numeric, rel=2e-2, abs=2e-3), (k, index)
    model.set_weights(weights)
