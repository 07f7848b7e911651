"""Regularizers (penalties, eager / symbolic / differentiated) and constraints
(projections), against float64 NumPy references written from Keras's formulas."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import arrays, check_op, check_symbolic, make_array
from pyfuncnet import GradientTape, Variable, constraints, regularizers
from pyfuncnet._function import Function
from pyfuncnet._symbolic import KerasTensor

EPS = 1e-7  # keras.config.epsilon()


def _sum_tol(x):
    """float32 accumulation error bound for a sum: relative to the sum of magnitudes."""
    return 1e-6 * (1.0 + float(np.sum(np.abs(x)) + np.sum(x * x)))


# ----------------------------------------------------------------------------
# Regularizers

PENALTIES = {
    "l1": (regularizers.L1(0.3), lambda x: 0.3 * np.sum(np.abs(x))),
    "l2": (regularizers.L2(0.05), lambda x: 0.05 * np.sum(x * x)),
    "l1l2": (regularizers.L1L2(l1=0.2, l2=0.7), lambda x: 0.2 * np.sum(np.abs(x)) + 0.7 * np.sum(x * x)),
    "l1l2_l1_only": (regularizers.L1L2(l1=0.2), lambda x: 0.2 * np.sum(np.abs(x))),
    "l1l2_l2_only": (regularizers.L1L2(l2=0.2), lambda x: 0.2 * np.sum(x * x)),
    "l1l2_zero": (regularizers.L1L2(), lambda x: np.float64(0.0)),
}


@pytest.mark.parametrize("name", sorted(PENALTIES))
@given(x=arrays(min_dims=0, max_dims=3))
def test_penalties_eager(name, x):
    reg, ref = PENALTIES[name]
    out = check_op(reg, ref, [x], rtol=1e-5, atol=_sum_tol)
    assert out.shape == () and out.dtype == np.float32


@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_penalties_on_variables_and_symbolic(name):
    reg, ref = PENALTIES[name]
    w = make_array((4, 3), seed=1)
    want = ref(w.astype(np.float64))
    np.testing.assert_allclose(reg(Variable(w)), want, rtol=1e-5, atol=1e-6)
    # A symbolic weight, compiled: as the trainer adds penalties to the loss.
    t = KerasTensor((4, 3))
    penalty = reg(t)
    assert isinstance(penalty, KerasTensor) and penalty.shape == ()
    (got,) = Function([t], [penalty])(w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_penalty_of_a_variable_reference_in_a_graph():
    # The trainer's case: the penalty reads the weight through its symbolic reference.
    from pyfuncnet._symbolic import variable_ref

    w = Variable(make_array((3, 5), seed=2))
    penalty = regularizers.L2(0.1)(variable_ref(w))
    (got,) = Function([], [penalty])()
    np.testing.assert_allclose(got, 0.1 * np.sum(w.value.astype(np.float64) ** 2), rtol=1e-5)


@pytest.mark.parametrize(
    "reg, grad",
    [
        (regularizers.L2(0.05), lambda w: 0.1 * w),
        (regularizers.L1L2(l1=0.2, l2=0.5), lambda w: 0.2 * np.sign(w) + 1.0 * w),
    ],
)
def test_penalty_gradients(reg, grad):
    w = Variable(make_array((3, 4), seed=3, avoid=(0.0,), gap=0.1))
    with GradientTape() as tape:
        penalty = reg(w)
    (g,) = tape.gradient(penalty, [w])
    np.testing.assert_allclose(g, grad(w.value.astype(np.float64)), rtol=1e-5, atol=1e-6)


def _orthogonal_ref(x, factor, mode):
    """Keras's OrthogonalRegularizer in float64: unit rows (or columns), mean |cosine|
    over distinct pairs, times factor (the 0.5 halves the double-counted pairs)."""
    vectors = x if mode == "rows" else x.T
    norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), EPS)
    unit = vectors / norms
    n = unit.shape[0]
    cosines = [abs(float(unit[i] @ unit[j])) for i in range(n) for j in range(n) if i != j]
    return factor * 0.5 * sum(cosines) / (n * (n - 1) / 2)


def test_orthogonal_regularizer_by_hand():
    # Rows [1, 0] and [1, 1]: one pair with |cos| = 1/sqrt(2); the sum over both
    # orderings is sqrt(2), halved, over 1 pair.
    x = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    assert float(regularizers.OrthogonalRegularizer(factor=1.0)(x)) == pytest.approx(math.sqrt(0.5), rel=1e-6)
    # Orthogonal rows cost nothing.
    assert float(regularizers.OrthogonalRegularizer()(np.eye(3, dtype=np.float32))) == 0.0


@pytest.mark.parametrize("mode", ["rows", "columns"])
@given(
    shape=st.tuples(st.integers(2, 7), st.integers(2, 7)),
    factor=st.sampled_from([0.01, 1.0, 3.0]),
    seed=st.integers(0, 2**31),
)
def test_orthogonal_regularizer(mode, shape, factor, seed):
    x = make_array(shape, seed=seed)
    reg = regularizers.OrthogonalRegularizer(factor=factor, mode=mode)
    check_op(reg, lambda a: _orthogonal_ref(a, factor, mode), [x], rtol=1e-4, atol=1e-6)
    t = KerasTensor(shape)
    (got,) = Function([t], [reg(t)])(x)
    np.testing.assert_allclose(got, _orthogonal_ref(x.astype(np.float64), factor, mode), rtol=1e-4, atol=1e-6)


def test_orthogonal_regularizer_zero_rows_and_single_vectors():
    # An all-zero row has no direction: it counts as orthogonal to every other.
    x = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 1.0]], dtype=np.float32)
    want = _orthogonal_ref(x.astype(np.float64), 1.0, "rows")
    assert float(regularizers.OrthogonalRegularizer(1.0)(x)) == pytest.approx(want, rel=1e-5)
    # One column: no pairs, no penalty.
    assert float(regularizers.OrthogonalRegularizer(1.0, mode="columns")(np.ones((4, 1)))) == 0.0


def test_orthogonal_regularizer_gradient_is_finite_at_a_zero_row():
    w = Variable(np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 1.0]], dtype=np.float32))
    with GradientTape() as tape:
        penalty = regularizers.OrthogonalRegularizer(1.0)(w)
    (g,) = tape.gradient(penalty, [w])
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: regularizers.L1(-0.1), ValueError, "l1"),
        (lambda: regularizers.L2(float("nan")), ValueError, "l2"),
        (lambda: regularizers.L2("0.1"), ValueError, "l2"),
        (lambda: regularizers.L1L2(l2=-1.0), ValueError, "l2"),
        (lambda: regularizers.OrthogonalRegularizer(factor=-1.0), ValueError, "factor"),
        (lambda: regularizers.OrthogonalRegularizer(mode="diagonal"), ValueError, "mode"),
        (lambda: regularizers.OrthogonalRegularizer()(np.ones((2, 2, 2))), ValueError, "2-D"),
    ],
)
def test_regularizer_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_regularizer_defaults_are_keras():
    assert regularizers.L1().get_config() == {"l1": 0.01}
    assert regularizers.L2().get_config() == {"l2": 0.01}
    assert regularizers.L1(None).get_config() == {"l1": 0.01}
    assert regularizers.L1L2().get_config() == {"l1": 0.0, "l2": 0.0}
    assert regularizers.OrthogonalRegularizer().get_config() == {"factor": 0.01, "mode": "rows"}


@pytest.mark.parametrize(
    "name, cls",
    [
        ("l1", regularizers.L1),
        ("l2", regularizers.L2),
        ("l1_l2", regularizers.L1L2),
        ("l1l2", regularizers.L1L2),
        ("L1L2", regularizers.L1L2),
        ("orthogonal_regularizer", regularizers.OrthogonalRegularizer),
        ("OrthogonalRegularizer", regularizers.OrthogonalRegularizer),
    ],
)
def test_regularizer_get(name, cls):
    assert type(regularizers.get(name)) is cls


def test_regularizer_get_other_identifiers_and_round_trip():
    assert regularizers.get(None) is None
    reg = regularizers.L1L2(l1=0.1, l2=0.2)
    assert regularizers.get(reg) is reg
    assert type(regularizers.get(regularizers.L2)) is regularizers.L2
    with pytest.raises(ValueError, match="l3"):
        regularizers.get("l3")
    for r in (reg, regularizers.L1(0.5), regularizers.L2(0.25), regularizers.OrthogonalRegularizer(0.3, "columns")):
        config = regularizers.serialize(r)
        assert config["module"] == "keras.regularizers" and config["class_name"] == type(r).__name__
        again = regularizers.deserialize(config)
        assert type(again) is type(r) and again.get_config() == r.get_config()


# ----------------------------------------------------------------------------
# Constraints


def _norms(w, axis):
    axis = tuple(axis) if isinstance(axis, list) else axis
    return np.sqrt(np.sum(w * w, axis=axis, keepdims=True))


def max_norm_ref(w, max_value, axis):
    n = _norms(w, axis)
    return w * (np.clip(n, 0, max_value) / (EPS + n))


def unit_norm_ref(w, axis):
    return w / (EPS + _norms(w, axis))


def min_max_norm_ref(w, lo, hi, rate, axis):
    n = _norms(w, axis)
    desired = rate * np.clip(n, lo, hi) + (1 - rate) * n
    return w * (desired / (EPS + n))


@st.composite
def weight_and_axis(draw):
    w = draw(arrays(min_dims=1, max_dims=4, max_size=512))
    axis = draw(
        st.one_of(
            st.integers(-w.ndim, w.ndim - 1),
            st.lists(st.integers(0, w.ndim - 1), min_size=1, max_size=w.ndim, unique=True).map(sorted),
        )
    )
    return w, axis


@given(weight_and_axis(), st.sampled_from([0.5, 1.0, 2.0]))
def test_max_norm(case, max_value):
    w, axis = case
    out = check_op(constraints.MaxNorm(max_value, axis=axis), lambda x: max_norm_ref(x, max_value, axis), [w])
    # The point of the constraint: no slice is longer than max_value.
    assert np.all(_norms(out.astype(np.float64), axis) <= max_value * (1 + 1e-5))


@given(weight_and_axis())
def test_unit_norm(case):
    w, axis = case
    check_op(constraints.UnitNorm(axis=axis), lambda x: unit_norm_ref(x, axis), [w])


@given(
    weight_and_axis(),
    st.sampled_from([(0.0, 1.0), (0.5, 1.5), (2.0, 3.0)]),
    st.sampled_from([1.0, 0.5, 0.0]),
)
def test_min_max_norm(case, bounds, rate):
    w, axis = case
    lo, hi = bounds
    check_op(
        constraints.MinMaxNorm(lo, hi, rate=rate, axis=axis), lambda x: min_max_norm_ref(x, lo, hi, rate, axis), [w]
    )


@given(arrays(min_dims=0, max_dims=3))
def test_non_neg(w):
    check_op(constraints.NonNeg(), lambda x: np.where(x >= 0, x, 0.0), [w])


def test_constraints_by_hand():
    column = np.array([[3.0], [4.0]], dtype=np.float32)  # norm 5
    np.testing.assert_allclose(constraints.MaxNorm(1.0)(column), [[0.6], [0.8]], rtol=1e-6)
    np.testing.assert_allclose(constraints.MaxNorm(10.0)(column), column, rtol=1e-6)
    np.testing.assert_allclose(constraints.UnitNorm()(column), [[0.6], [0.8]], rtol=1e-6)
    # Norm 5 pulled halfway to the interval [1, 2]: desired norm 0.5 * 2 + 0.5 * 5 = 3.5.
    np.testing.assert_allclose(constraints.MinMaxNorm(1.0, 2.0, rate=0.5)(column), [[2.1], [2.8]], rtol=1e-6)
    # Axis 1 normalises rows: a Dense kernel (in, out) with axis=0 normalises columns.
    rows = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(constraints.UnitNorm(axis=1)(rows), [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)
    # All-zero slices stay zero (epsilon keeps the division finite).
    for c in (constraints.UnitNorm(), constraints.MaxNorm(), constraints.MinMaxNorm(0.5, 1.0)):
        np.testing.assert_array_equal(c(np.zeros((2, 3))), np.zeros((2, 3)))
    # Where epsilon sits: a slice of norm 1e-7 = epsilon is divided by 2e-7.
    tiny = np.array([[6e-8], [8e-8]], dtype=np.float32)
    np.testing.assert_allclose(constraints.UnitNorm()(tiny), [[0.3], [0.4]], rtol=1e-5)
    np.testing.assert_allclose(constraints.MaxNorm()(tiny), tiny / 2, rtol=1e-5)
    np.testing.assert_allclose(constraints.MinMaxNorm(0.0, 1.0)(tiny), tiny / 2, rtol=1e-5)


@pytest.mark.parametrize(
    "constraint, ref",
    [
        (constraints.MaxNorm(1.5, axis=0), lambda x: max_norm_ref(x, 1.5, 0)),
        (constraints.UnitNorm(axis=-1), lambda x: unit_norm_ref(x, -1)),
        (constraints.MinMaxNorm(0.5, 1.0, 0.7, axis=[0]), lambda x: min_max_norm_ref(x, 0.5, 1.0, 0.7, 0)),
        (constraints.NonNeg(), lambda x: np.where(x >= 0, x, 0.0)),
    ],
    ids=["max_norm", "unit_norm", "min_max_norm", "non_neg"],
)
def test_constraints_on_variables_and_symbolic(constraint, ref):
    w = make_array((5, 4), seed=7)
    check_op(constraint, ref, [w], wrap=True)
    # Symbolic: axis 0 runs over the unknown dimension, so use a static shape.
    check_symbolic(constraint, ref, [w], dynamic=[False])


def test_constraint_defaults_are_keras():
    assert constraints.MaxNorm().get_config() == {"max_value": 2, "axis": 0}
    assert constraints.UnitNorm().get_config() == {"axis": 0}
    assert constraints.MinMaxNorm().get_config() == {"min_value": 0.0, "max_value": 1.0, "rate": 1.0, "axis": 0}
    assert constraints.NonNeg().get_config() == {}


@pytest.mark.parametrize(
    "name, cls",
    [
        ("max_norm", constraints.MaxNorm),
        ("MaxNorm", constraints.MaxNorm),
        ("non_neg", constraints.NonNeg),
        ("NonNeg", constraints.NonNeg),
        ("unit_norm", constraints.UnitNorm),
        ("min_max_norm", constraints.MinMaxNorm),
    ],
)
def test_constraint_get(name, cls):
    assert type(constraints.get(name)) is cls


def test_constraint_get_other_identifiers_and_round_trip():
    assert constraints.get(None) is None
    c = constraints.MaxNorm(3.0, axis=[0, 1, 2])
    assert constraints.get(c) is c
    with pytest.raises(ValueError, match="max_norms"):
        constraints.get("max_norms")
    for c in (c, constraints.NonNeg(), constraints.UnitNorm(1), constraints.MinMaxNorm(0.1, 0.9, 0.5, -1)):
        config = constraints.serialize(c)
        assert config["module"] == "keras.constraints" and config["class_name"] == type(c).__name__
        again = constraints.deserialize(config)
        assert type(again) is type(c) and again.get_config() == c.get_config()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: constraints.MaxNorm("2"), "max_value"),
        (lambda: constraints.MaxNorm(axis=1.5), "axis"),
        (lambda: constraints.UnitNorm(axis=[0, "a"]), "axis"),
        (lambda: constraints.MinMaxNorm(rate=float("inf")), "rate"),
    ],
)
def test_constraint_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("module", [regularizers, constraints], ids=["regularizers", "constraints"])
def test_none_and_functions_serialize_as_keras(module):
    assert module.serialize(None) is None
    assert module.deserialize(None) is None

    def custom(w):
        return w

    config = module.serialize(custom)
    assert config["class_name"] == "function" and config["config"] == "custom"
    assert module.deserialize(config, custom_objects={"custom": custom}) is custom
