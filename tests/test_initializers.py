"""Initializers: distributions (moments, bounds, shape of the distribution), fans,
orthogonality, identity, seeding and reproducibility, lookup and configs.

References are independent of the code under test: Keras's documented formulas
(variances `scale / fan`, Glorot / He / LeCun limits), and moments of the
truncated normal computed here by numerical integration.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyfuncnet import initializers, utils

# 400 * 300 = 120,000 draws: the sample standard deviation is within ~0.3% of the
# true one (one standard error), so a 2% tolerance is ~7 standard errors wide,
# while the closest wrong answer tested (fan_avg instead of fan_in) is 7% away.
BIG = (400, 300)
# A Conv2D kernel: fan_in = 3 * 3 * 20 = 180, fan_out = 3 * 3 * 50 = 450.
CONV = (3, 3, 20, 50)
STD_RTOL = 0.02


def _truncated_moments():
    """Second and fourth moments of a unit normal truncated to [-2, 2], by integration."""
    x = np.linspace(-2.0, 2.0, 400_001)
    density = np.exp(-0.5 * x * x)

    def integral(y):  # the trapezoidal rule
        return float(np.sum(y[1:] + y[:-1]) * (x[1] - x[0]) / 2)

    mass = integral(density)
    return integral(x**2 * density) / mass, integral(x**4 * density) / mass


TRUNC_M2, TRUNC_M4 = _truncated_moments()
KURTOSIS = {"uniform": 1.8, "untruncated_normal": 3.0, "truncated_normal": TRUNC_M4 / TRUNC_M2**2}


def _kurtosis(values):
    centred = values - values.mean()
    return float(np.mean(centred**4) / np.mean(centred**2) ** 2)


def test_truncation_constant_is_the_std_of_the_truncated_unit_normal():
    assert math.sqrt(TRUNC_M2) == pytest.approx(0.87962566103423978, rel=1e-7)


# ----------------------------------------------------------------------------
# Fans and variance scaling


@pytest.mark.parametrize(
    "shape, fans",
    [((), (1, 1)), ((7,), (7, 7)), ((5, 9), (5, 9)), (CONV, (180, 450)), ((4, 6, 8), (24, 32))],
)
def test_compute_fans(shape, fans):
    assert initializers.compute_fans(shape) == fans


def _expected_variance(scale, mode, shape):
    fan_in, fan_out = initializers.compute_fans(shape)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    return scale / max(1.0, n)


def _check_variance_scaling(values, variance, distribution):
    values = values.astype(np.float64)
    std = math.sqrt(variance)
    assert abs(values.mean()) < 5 * std / math.sqrt(values.size)
    assert values.std() == pytest.approx(std, rel=STD_RTOL)
    assert _kurtosis(values) == pytest.approx(KURTOSIS[distribution], abs=0.06)
    bound = {"uniform": math.sqrt(3) * std, "truncated_normal": 2 * std / math.sqrt(TRUNC_M2)}.get(distribution)
    if bound is not None:
        assert np.abs(values).max() <= bound * (1 + 1e-6)
        assert np.abs(values).max() >= 0.99 * bound


PRESETS = {
    # name: (scale, mode, distribution), from Keras's documentation of each.
    "GlorotUniform": (1.0, "fan_avg", "uniform"),
    "GlorotNormal": (1.0, "fan_avg", "truncated_normal"),
    "HeNormal": (2.0, "fan_in", "truncated_normal"),
    "HeUniform": (2.0, "fan_in", "uniform"),
    "LecunNormal": (1.0, "fan_in", "truncated_normal"),
    "LecunUniform": (1.0, "fan_in", "uniform"),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("shape", [BIG, (5, 5, 40, 100)])
def test_presets_match_their_documented_variance_scaling(name, shape):
    scale, mode, distribution = PRESETS[name]
    values = getattr(initializers, name)(seed=11)(shape)
    assert values.shape == shape and values.dtype == np.float32
    _check_variance_scaling(values, _expected_variance(scale, mode, shape), distribution)


def test_glorot_and_he_limits_by_hand():
    # Glorot uniform on (400, 300): limit sqrt(6 / 700); He uniform: sqrt(6 / 400).
    glorot = initializers.GlorotUniform(seed=1)(BIG)
    assert np.abs(glorot).max() == pytest.approx(math.sqrt(6 / 700), rel=1e-3)
    he = initializers.HeUniform(seed=1)(BIG)
    assert np.abs(he).max() == pytest.approx(math.sqrt(6 / 400), rel=1e-3)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform"])
def test_variance_scaling_modes_and_distributions(mode, distribution):
    shape = (5, 5, 40, 100)  # fans 1000 and 2500: every mode gives a different variance
    init = initializers.VarianceScaling(scale=3.0, mode=mode, distribution=distribution, seed=5)
    _check_variance_scaling(init(shape), _expected_variance(3.0, mode, shape), distribution)


def test_variance_scaling_distribution_is_case_insensitive():
    a = initializers.VarianceScaling(distribution="Uniform", seed=1)((4, 4))
    b = initializers.VarianceScaling(distribution="uniform", seed=1)((4, 4))
    np.testing.assert_array_equal(a, b)


def test_variance_scaling_of_a_scalar_weight():
    # A scalar weight has fans 1: variance `scale`, limit sqrt(3 * scale).
    values = np.array([initializers.VarianceScaling(2.0, distribution="uniform", seed=s)(()) for s in range(2000)])
    assert np.abs(values).max() <= math.sqrt(6.0) + 1e-6
    assert values.std() == pytest.approx(math.sqrt(2.0), rel=0.05)


# ----------------------------------------------------------------------------
# Plain distributions


def test_random_normal_moments():
    values = initializers.RandomNormal(mean=1.5, stddev=0.3, seed=2)(BIG).astype(np.float64)
    assert values.mean() == pytest.approx(1.5, abs=5 * 0.3 / math.sqrt(values.size))
    assert values.std() == pytest.approx(0.3, rel=STD_RTOL)
    assert _kurtosis(values) == pytest.approx(3.0, abs=0.06)


def test_random_uniform_bounds_and_moments():
    values = initializers.RandomUniform(minval=-1.0, maxval=3.0, seed=3)(BIG).astype(np.float64)
    assert values.min() >= -1.0 and values.max() <= 3.0
    assert values.min() < -0.99 and values.max() > 2.99
    assert values.mean() == pytest.approx(1.0, abs=0.02)
    assert values.std() == pytest.approx(4.0 / math.sqrt(12.0), rel=STD_RTOL)


def test_truncated_normal_bounds_and_moments():
    values = initializers.TruncatedNormal(mean=-1.0, stddev=2.0, seed=4)(BIG).astype(np.float64)
    assert values.min() >= -1.0 - 4.0 - 1e-5 and values.max() <= -1.0 + 4.0 + 1e-5
    assert values.min() < -4.95 and values.max() > 2.95
    assert values.mean() == pytest.approx(-1.0, abs=0.03)
    assert values.std() == pytest.approx(2.0 * math.sqrt(TRUNC_M2), rel=STD_RTOL)


def test_default_arguments_are_keras():
    assert initializers.RandomNormal().get_config() == {"mean": 0.0, "stddev": 0.05, "seed": None}
    assert initializers.TruncatedNormal().get_config() == {"mean": 0.0, "stddev": 0.05, "seed": None}
    assert initializers.RandomUniform().get_config() == {"minval": -0.05, "maxval": 0.05, "seed": None}
    assert initializers.VarianceScaling().get_config() == {
        "scale": 1.0,
        "mode": "fan_in",
        "distribution": "truncated_normal",
        "seed": None,
    }
    assert initializers.Orthogonal().get_config() == {"gain": 1.0, "seed": None}
    assert initializers.Identity().get_config() == {"gain": 1.0}
    assert initializers.Constant().get_config() == {"value": 0.0}


# ----------------------------------------------------------------------------
# Deterministic initializers


@given(st.lists(st.sampled_from([0, 1, 2, 5]), max_size=3).map(tuple))
def test_zeros_ones_constant(shape):
    z = initializers.Zeros()(shape)
    o = initializers.Ones()(shape)
    c = initializers.Constant(0.25)(shape)
    for arr in (z, o, c):
        assert arr.shape == shape and arr.dtype == np.float32
    assert np.all(z == 0.0) and np.all(o == 1.0) and np.all(c == 0.25)


def test_constant_dtype_and_broadcast():
    ints = initializers.Constant(3)((2, 2), dtype="int32")
    assert ints.dtype == np.int32 and np.all(ints == 3)
    rows = initializers.Constant([1.0, 2.0, 3.0])((2, 3))
    np.testing.assert_array_equal(rows, [[1, 2, 3], [1, 2, 3]])
    with pytest.raises(ValueError, match="cannot fill shape"):
        initializers.Constant([1.0, 2.0])((2, 3))
    with pytest.raises(ValueError, match="value"):
        initializers.Constant("a")


@pytest.mark.parametrize("shape, gain", [((3, 3), 1.0), ((2, 5), 2.5), ((4, 2), -1.0), ((0, 3), 1.0)])
def test_identity(shape, gain):
    values = initializers.Identity(gain=gain)(shape)
    expected = np.zeros(shape)
    for i in range(min(shape)):
        expected[i, i] = gain
    np.testing.assert_array_equal(values, expected)
    assert values.dtype == np.float32


def test_identity_needs_a_matrix():
    with pytest.raises(ValueError, match="2-D"):
        initializers.Identity()((2, 2, 2))


# ----------------------------------------------------------------------------
# Orthogonal


@given(
    st.lists(st.integers(1, 6), min_size=2, max_size=4).map(tuple),
    st.sampled_from([1.0, 0.5, 3.0]),
    st.integers(0, 2**31),
)
def test_orthogonal_rows_or_columns_are_orthonormal(shape, gain, seed):
    values = initializers.Orthogonal(gain=gain, seed=seed)(shape)
    assert values.shape == shape and values.dtype == np.float32
    matrix = values.reshape(-1, shape[-1]).astype(np.float64) / gain
    rows, cols = matrix.shape
    gram = matrix.T @ matrix if rows >= cols else matrix @ matrix.T
    np.testing.assert_allclose(gram, np.eye(min(rows, cols)), atol=1e-5)


def test_orthogonal_is_not_biased_towards_a_sign():
    # The sign correction by diag(R) makes the distribution uniform: the first
    # entry is positive about half the time (QR alone would bias it).
    firsts = [initializers.Orthogonal(seed=s)((4, 4))[0, 0] for s in range(400)]
    assert 150 < sum(f > 0 for f in firsts) < 250


@pytest.mark.parametrize("shape", [(5,), ()])
def test_orthogonal_needs_two_dimensions(shape):
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        initializers.Orthogonal(seed=0)(shape)


def test_orthogonal_empty_shapes():
    assert initializers.Orthogonal(seed=0)((0, 3)).shape == (0, 3)
    assert initializers.Orthogonal(seed=0)((3, 0)).shape == (3, 0)


# ----------------------------------------------------------------------------
# Seeds and reproducibility

RANDOM = [
    initializers.RandomNormal,
    initializers.RandomUniform,
    initializers.TruncatedNormal,
    initializers.VarianceScaling,
    initializers.GlorotUniform,
    initializers.GlorotNormal,
    initializers.HeNormal,
    initializers.HeUniform,
    initializers.LecunNormal,
    initializers.LecunUniform,
    initializers.Orthogonal,
]


@pytest.mark.parametrize("cls", RANDOM, ids=lambda c: c.__name__)
def test_seeded_initializers_repeat_and_differ_by_seed(cls):
    a, b, c = cls(seed=42), cls(seed=42), cls(seed=43)
    first = a((6, 5))
    np.testing.assert_array_equal(first, a((6, 5)))  # same values on every call, as Keras 3
    np.testing.assert_array_equal(first, b((6, 5)))
    assert not np.array_equal(first, c((6, 5)))
    assert len(np.unique(first)) == first.size


@pytest.mark.parametrize("cls", RANDOM, ids=lambda c: c.__name__)
def test_unseeded_instances_repeat_but_differ_from_each_other(cls):
    a, b = cls(), cls()
    np.testing.assert_array_equal(a((4, 4)), a((4, 4)))
    assert not np.array_equal(a((4, 4)), b((4, 4)))
    assert a.get_config()["seed"] is None


def test_negative_seeds_work_and_differ():
    a = initializers.RandomNormal(seed=-1)((5,))
    b = initializers.RandomNormal(seed=1)((5,))
    assert not np.array_equal(a, b)


def _build_weights():
    """What a model script does: a few unseeded initializers from names, then calls."""
    return [
        initializers.get("glorot_uniform")((8, 4)),
        initializers.get("he_normal")((3, 3, 2, 4)),
        initializers.RandomNormal()((5,)),
        initializers.Orthogonal()((4, 4)),
    ]


def test_set_random_seed_makes_unseeded_initializers_reproducible():
    utils.set_random_seed(123)
    first = _build_weights()
    utils.set_random_seed(123)
    second = _build_weights()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    utils.set_random_seed(124)
    third = _build_weights()
    assert not any(np.array_equal(a, c) for a, c in zip(first, third))


def test_seeded_initializers_ignore_set_random_seed():
    init = initializers.HeUniform(seed=9)
    utils.set_random_seed(1)
    a = init((3, 3))
    utils.set_random_seed(2)
    np.testing.assert_array_equal(a, init((3, 3)))


# ----------------------------------------------------------------------------
# Arguments, dtypes, errors


def test_dtypes():
    assert initializers.GlorotUniform(seed=0)((2, 2)).dtype == np.float32
    assert initializers.GlorotUniform(seed=0)((2, 2), dtype="float64").dtype == np.float64
    with pytest.raises(ValueError, match="dtype"):
        initializers.GlorotUniform(seed=0)((2, 2), dtype="int32")
    with pytest.raises(TypeError, match="dtype"):
        initializers.Zeros()((2, 2), dtype="no-such-type")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: initializers.VarianceScaling(scale=0.0), "scale"),
        (lambda: initializers.VarianceScaling(scale=-1.0), "scale"),
        (lambda: initializers.VarianceScaling(mode="fan_sum"), "mode"),
        (lambda: initializers.VarianceScaling(distribution="normal"), "distribution"),
        (lambda: initializers.RandomNormal(seed=1.5), "seed"),
        (lambda: initializers.RandomNormal(seed="1"), "seed"),
        (lambda: initializers.RandomNormal(stddev=float("nan")), "stddev"),
        (lambda: initializers.RandomUniform(minval="a"), "minval"),
        (lambda: initializers.Orthogonal(gain=None), "gain"),
    ],
)
def test_invalid_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("shape", [(2, -1), (2, 1.5), (None, 3)])
def test_invalid_shapes(shape):
    with pytest.raises(ValueError, match="shape"):
        initializers.GlorotUniform(seed=0)(shape)


def test_zero_size_shapes():
    for cls in RANDOM[:-1]:
        assert cls(seed=0)((0, 7)).shape == (0, 7)


# ----------------------------------------------------------------------------
# Lookup and configs

IDS = {
    "zeros": "Zeros",
    "ones": "Ones",
    "constant": "Constant",
    "random_normal": "RandomNormal",
    "random_uniform": "RandomUniform",
    "truncated_normal": "TruncatedNormal",
    "variance_scaling": "VarianceScaling",
    "glorot_uniform": "GlorotUniform",
    "glorot_normal": "GlorotNormal",
    "he_normal": "HeNormal",
    "he_uniform": "HeUniform",
    "lecun_normal": "LecunNormal",
    "lecun_uniform": "LecunUniform",
    "orthogonal": "Orthogonal",
    "identity": "Identity",
    "zero": "Zeros",
    "one": "Ones",
    "normal": "RandomNormal",
    "uniform": "RandomUniform",
    "OrthogonalInitializer": "Orthogonal",
    "IdentityInitializer": "Identity",
}


@pytest.mark.parametrize("name", sorted(IDS))
def test_get_by_string_id(name):
    assert type(initializers.get(name)).__name__ == IDS[name]
    assert type(initializers.get(IDS[name])).__name__ == IDS[name]


def test_get_other_identifiers():
    assert initializers.get(None) is None
    inst = initializers.HeNormal(seed=1)
    assert initializers.get(inst) is inst
    assert isinstance(initializers.get(initializers.Ones), initializers.Ones)

    def fn(shape, dtype=None):
        return np.full(shape, 7.0)

    assert initializers.get(fn) is fn
    const = initializers.get({"class_name": "Constant", "config": {"value": 0.5}})
    assert np.all(const((2,)) == 0.5)
    with pytest.raises(ValueError, match="glorot_uniform"):
        initializers.get("glorot_uniformm")
    with pytest.raises(ValueError, match="identifier"):
        initializers.get(3)


CONFIGURED = [
    initializers.Zeros(),
    initializers.Ones(),
    initializers.Constant(2.5),
    initializers.Constant([1.0, 2.0]),
    initializers.RandomNormal(0.5, 2.0, seed=3),
    initializers.RandomUniform(-2.0, 1.0, seed=4),
    initializers.TruncatedNormal(1.0, 0.5, seed=5),
    initializers.VarianceScaling(2.0, "fan_out", "uniform", seed=6),
    initializers.GlorotUniform(seed=7),
    initializers.GlorotNormal(seed=8),
    initializers.HeNormal(seed=9),
    initializers.HeUniform(seed=10),
    initializers.LecunNormal(seed=11),
    initializers.LecunUniform(seed=12),
    initializers.Orthogonal(gain=2.0, seed=13),
    initializers.Identity(gain=0.5),
]


@pytest.mark.parametrize("init", CONFIGURED, ids=lambda i: type(i).__name__)
def test_serialize_round_trip_gives_the_same_values(init):
    config = initializers.serialize(init)
    assert config["module"] == "keras.initializers"
    assert config["class_name"] == type(init).__name__
    assert config["registered_name"] is None
    again = initializers.deserialize(config)
    assert type(again) is type(init) and again.get_config() == init.get_config()
    np.testing.assert_array_equal(again((2, 2)), init((2, 2)))
    np.testing.assert_array_equal(init.clone()((2, 2)), init((2, 2)))
    # Keras 2's form, without module and registered_name.
    legacy = initializers.deserialize({"class_name": config["class_name"], "config": config["config"]})
    assert legacy.get_config() == init.get_config()


def test_preset_configs_hold_only_the_seed():
    assert initializers.GlorotUniform(seed=3).get_config() == {"seed": 3}
    assert initializers.HeNormal().get_config() == {"seed": None}


def test_custom_initializer_serialization():
    class Halves(initializers.Initializer):
        def __call__(self, shape, dtype=None):
            return np.full(shape, 0.5, dtype=np.float32)

    config = initializers.serialize(Halves())
    assert config["class_name"] == "Halves" and config["registered_name"] == "Halves"
    assert config["module"] == __name__
    with pytest.raises(ValueError, match="Halves"):
        initializers.deserialize(config)
    again = initializers.deserialize(config, custom_objects={"Halves": Halves})
    assert np.all(again((2,)) == 0.5)


def test_none_and_functions_serialize_as_keras():
    assert initializers.serialize(None) is None
    assert initializers.deserialize(None) is None

    def halves(shape, dtype=None):
        return np.full(shape, 0.5, dtype=np.float32)

    config = initializers.serialize(halves)
    assert config == {"module": __name__, "class_name": "function", "config": "halves", "registered_name": "halves"}
    assert initializers.deserialize(config, custom_objects={"halves": halves}) is halves
    with pytest.raises(ValueError, match="halves"):
        initializers.deserialize(config)
    with pytest.raises(TypeError, match="initializer"):
        initializers.serialize(3)
