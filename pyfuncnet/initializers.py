"""Weight initializers, as `keras.initializers`.

An initializer is called with a shape (and optionally a dtype) and returns a
NumPy array (float32 by default) that layers use as a variable's first value.

Randomness: every random initializer has an integer seed and draws from
`numpy.random.Generator(Philox)` keyed by it, so one instance returns the same
values on every call, as Keras 3 documents ("an initializer seeded with an integer
or None will produce the same random values across multiple calls"). An unseeded
instance takes its seed, when it is created, from one module-level generator;
`pyfuncnet.utils.set_random_seed` reseeds that generator, so a script that sets
the seed first builds identical weights on every run.

Fans follow Keras: a shape `(..., fan_in_dim, fan_out_dim)` has
`fan_in = prod(shape[:-2]) * shape[-2]` and `fan_out = prod(shape[:-2]) * shape[-1]`
(e.g. a Conv2D kernel `(kh, kw, cin, cout)` has `fan_in = kh * kw * cin`); a 1-D
shape `(n,)` has both fans `n`; a scalar has both fans 1.
"""

import math
import numbers

import numpy as np

from pyfuncnet import utils

# Keras's correction for the truncated normal of `VarianceScaling`: the standard
# deviation of a unit normal truncated to [-2, 2], so that the truncated draw has
# the intended variance.
_TRUNCATED_STDDEV = 0.87962566103423978

# Where unseeded initializers take their seeds from (reseeded by set_random_seed).
_seed_source = np.random.Generator(np.random.Philox())


def _reseed(seed):
    """Restarts the seed source from `seed` (called by `utils.set_random_seed`)."""
    global _seed_source
    _seed_source = np.random.Generator(np.random.Philox(seed))


def _generator(seed):
    # Philox keys must be non-negative; negative Python seeds map to distinct keys.
    return np.random.Generator(np.random.Philox(seed % 2**64))


def _check_shape(shape, who):
    if isinstance(shape, (numbers.Integral, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{who}: `shape` must be a tuple of ints, got {shape!r}") from None
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (numbers.Integral, np.integer)) or d < 0:
            raise ValueError(f"{who}: `shape` must hold non-negative ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def _check_dtype(dtype, who, floats_only):
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{who}: `dtype` must be a dtype name such as 'float32', got {dtype!r}") from None
    allowed = "f" if floats_only else "fiub"
    if dt.kind not in allowed:
        raise ValueError(f"{who}: `dtype` must be a {'float ' if floats_only else ''}dtype, got {dtype!r}")
    return dt


def _check_number(value, name, who, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{who}: `{name}` must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{who}: `{name}` must be positive, got {value!r}")
    return float(value)


def compute_fans(shape):
    """`(fan_in, fan_out)` of a weight shape, as Keras computes them.

    Args:
        shape: a tuple of ints.

    Example:
        >>> compute_fans((3, 3, 16, 32))
        (144, 288)
    """
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


class Initializer:
    """Base class of initializers: a callable `(shape, dtype=None) -> array`.

    Subclasses implement `__call__` and, when they take arguments, `get_config`.

    Example:
        >>> class Halves(Initializer):
        ...     def __call__(self, shape, dtype=None):
        ...         return np.full(shape, 0.5, dtype=dtype or "float32")
    """

    def __call__(self, shape, dtype=None):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(shape, dtype=None)")

    def get_config(self):
        """The constructor arguments, as a JSON-serializable dict."""
        return {}

    @classmethod
    def from_config(cls, config):
        """An initializer built from `get_config()`'s output.

        Example:
            >>> RandomUniform.from_config({"minval": -1.0, "maxval": 1.0, "seed": 3})
        """
        return cls(**config)

    def clone(self):
        """A new initializer with the same configuration (an unseeded one gets a new seed)."""
        return self.__class__.from_config(self.get_config())


class Zeros(Initializer):
    """All zeros.

    Example:
        >>> Zeros()((2, 3))
    """

    def __call__(self, shape, dtype=None):
        return np.zeros(_check_shape(shape, "Zeros"), dtype=_check_dtype(dtype, "Zeros", False))


class Ones(Initializer):
    """All ones.

    Example:
        >>> Ones()((2, 3))
    """

    def __call__(self, shape, dtype=None):
        return np.ones(_check_shape(shape, "Ones"), dtype=_check_dtype(dtype, "Ones", False))


class Constant(Initializer):
    """Every element equal to `value` (a scalar, or an array broadcast to the shape).

    Args:
        value: the constant.

    Example:
        >>> Constant(0.1)((4,))
    """

    def __init__(self, value=0.0):
        array = np.asarray(value)
        if array.dtype.kind not in "fiub":
            raise ValueError(f"Constant: `value` must be a number or an array of numbers, got {value!r}")
        self.value = value

    def __call__(self, shape, dtype=None):
        shape = _check_shape(shape, "Constant")
        value = np.asarray(self.value, dtype=_check_dtype(dtype, "Constant", False))
        try:
            return np.array(np.broadcast_to(value, shape))
        except ValueError:
            raise ValueError(f"Constant: `value` of shape {value.shape} cannot fill shape {shape}") from None

    def get_config(self):
        value = self.value
        return {"value": value.tolist() if isinstance(value, np.ndarray) else value}


class RandomInitializer(Initializer):
    """Base class of the random initializers: holds the seed.

    Args:
        seed: an int, or None to take one from the module's seed source (reseeded
            by `utils.set_random_seed`). Either way the instance returns the same
            values on every call.

    Example:
        >>> class Coin(RandomInitializer):
        ...     def __call__(self, shape, dtype=None):
        ...         return self._rng().integers(0, 2, shape).astype(dtype or "float32")
    """

    def __init__(self, seed=None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (numbers.Integral, np.integer))):
            raise ValueError(f"{type(self).__name__}: `seed` must be an int or None, got {seed!r}")
        self._init_seed = None if seed is None else int(seed)
        self.seed = self._init_seed if seed is not None else int(_seed_source.integers(0, 2**63))

    def _rng(self):
        """A fresh generator keyed by the seed: every call sees the same stream."""
        return _generator(self.seed)

    def _prepare(self, shape, dtype):
        name = type(self).__name__
        return _check_shape(shape, name), _check_dtype(dtype, name, True)

    def get_config(self):
        # The seed as given: an unseeded initializer stays unseeded when rebuilt.
        return {"seed": self._init_seed}


def _truncated_normal(rng, shape, mean, stddev):
    """Normal draws redrawn until within two standard deviations of the mean."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2.0
    return mean + stddev * values


class RandomNormal(RandomInitializer):
    """Draws from a normal distribution.

    Args:
        mean: the mean.
        stddev: the standard deviation.
        seed: an int or None (see `RandomInitializer`).

    Example:
        >>> RandomNormal(mean=0.0, stddev=1.0, seed=1)((2, 2))
    """

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = _check_number(mean, "mean", "RandomNormal")
        self.stddev = _check_number(stddev, "stddev", "RandomNormal")
        super().__init__(seed)

    def __call__(self, shape, dtype=None):
        shape, dtype = self._prepare(shape, dtype)
        return (self.mean + self.stddev * self._rng().standard_normal(shape)).astype(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class TruncatedNormal(RandomInitializer):
    """Draws from a normal distribution, redrawing values more than two standard
    deviations from the mean.

    Args:
        mean: the mean.
        stddev: the standard deviation of the normal before truncation.
        seed: an int or None (see `RandomInitializer`).

    Example:
        >>> TruncatedNormal(stddev=0.1, seed=2)((3, 4))
    """

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = _check_number(mean, "mean", "TruncatedNormal")
        self.stddev = _check_number(stddev, "stddev", "TruncatedNormal")
        super().__init__(seed)

    def __call__(self, shape, dtype=None):
        shape, dtype = self._prepare(shape, dtype)
        return _truncated_normal(self._rng(), shape, self.mean, self.stddev).astype(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class RandomUniform(RandomInitializer):
    """Draws uniformly from `[minval, maxval)`.

    Args:
        minval: the lower bound.
        maxval: the upper bound.
        seed: an int or None (see `RandomInitializer`).

    Example:
        >>> RandomUniform(minval=-1.0, maxval=1.0, seed=3)((2, 5))
    """

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval = _check_number(minval, "minval", "RandomUniform")
        self.maxval = _check_number(maxval, "maxval", "RandomUniform")
        super().__init__(seed)

    def __call__(self, shape, dtype=None):
        shape, dtype = self._prepare(shape, dtype)
        return self._rng().uniform(self.minval, self.maxval, shape).astype(dtype)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, **super().get_config()}


_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


class VarianceScaling(RandomInitializer):
    """Draws with a variance scaled to the weight's fans: `scale / n`, where `n` is
    `fan_in`, `fan_out` or their mean (`mode`).

    With `distribution="truncated_normal"` the draw is a normal truncated at two
    standard deviations, with `stddev = sqrt(scale / n) / 0.87962566103423978` so
    that the truncated values have variance `scale / n`; `"untruncated_normal"`
    uses `stddev = sqrt(scale / n)`; `"uniform"` draws from `[-limit, limit]` with
    `limit = sqrt(3 * scale / n)`. `n` is at least 1.

    Args:
        scale: the positive scaling factor.
        mode: "fan_in", "fan_out" or "fan_avg".
        distribution: "truncated_normal", "untruncated_normal" or "uniform".
        seed: an int or None (see `RandomInitializer`).

    Example:
        >>> VarianceScaling(scale=2.0, mode="fan_out", distribution="uniform", seed=0)((64, 32))
    """

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        who = type(self).__name__
        self.scale = _check_number(scale, "scale", who, positive=True)
        if mode not in _MODES:
            raise ValueError(f"{who}: `mode` must be one of {', '.join(_MODES)}, got {mode!r}")
        if not isinstance(distribution, str) or distribution.lower() not in _DISTRIBUTIONS:
            raise ValueError(f"{who}: `distribution` must be one of {', '.join(_DISTRIBUTIONS)}, got {distribution!r}")
        self.mode = mode
        self.distribution = distribution.lower()
        super().__init__(seed)

    def __call__(self, shape, dtype=None):
        shape, dtype = self._prepare(shape, dtype)
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        variance = self.scale / max(1.0, n)
        rng = self._rng()
        if self.distribution == "truncated_normal":
            values = _truncated_normal(rng, shape, 0.0, math.sqrt(variance) / _TRUNCATED_STDDEV)
        elif self.distribution == "untruncated_normal":
            values = math.sqrt(variance) * rng.standard_normal(shape)
        else:
            limit = math.sqrt(3.0 * variance)
            values = rng.uniform(-limit, limit, shape)
        return values.astype(dtype)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, **super().get_config()}


class _FixedVarianceScaling(VarianceScaling):
    """A `VarianceScaling` preset: only the seed is configurable."""

    _preset = None  # (scale, mode, distribution)

    def __init__(self, seed=None):
        scale, mode, distribution = self._preset
        super().__init__(scale=scale, mode=mode, distribution=distribution, seed=seed)

    def get_config(self):
        return {"seed": self._init_seed}


class GlorotUniform(_FixedVarianceScaling):
    """Glorot (Xavier) uniform: uniform in `[-limit, limit]`, `limit = sqrt(6 / (fan_in + fan_out))`.

    Args:
        seed: an int or None (see `RandomInitializer`).

    Example:
        >>> GlorotUniform(seed=0)((784, 64))
    """

    _preset = (1.0, "fan_avg", "uniform")


class GlorotNormal(_FixedVarianceScaling):
    """Glorot (Xavier) normal: truncated normal with variance `2 / (fan_in + fan_out)`.

    Args:
        seed: an int or None (see `RandomInitializer`).

    Example:
        >>> GlorotNormal(seed=0)((784, 64))
    """

    _preset = (1.0, "fan_avg", "truncated_normal")


class HeNormal(_FixedVarianceScaling):
    """He normal: truncated normal with variance `2 / fan_in`.

    Args:
        seed: an int or None (see `RandomInitializer`).

    Example:
        >>> HeNormal(seed=0)((3, 3, 16, 32))
    """

    _preset = (2.0, "fan_in", "truncated_normal")


class HeUniform(_FixedVarianceScaling):
    """He uniform: uniform in `[-limit, limit]`, `limit = sqrt(6 / fan_in)`.

    Args:
        seed: an int or None (see `RandomInitializer`).

    Example:
        >>> HeUniform(seed=0)((3, 3, 16, 32))
    """

    _preset = (2.0, "fan_in", "uniform")


class LecunNormal(_FixedVarianceScaling):
    """LeCun normal: truncated normal with variance `1 / fan_in`.

    Args:
        seed: an int or None (see `RandomInitializer`).

    Example:
        >>> LecunNormal(seed=0)((128, 10))
    """

    _preset = (1.0, "fan_in", "truncated_normal")


class LecunUniform(_FixedVarianceScaling):
    """LeCun uniform: uniform in `[-limit, limit]`, `limit = sqrt(3 / fan_in)`.

    Args:
        seed: an int or None (see `RandomInitializer`).

    Example:
        >>> LecunUniform(seed=0)((128, 10))
    """

    _preset = (1.0, "fan_in", "uniform")


class Orthogonal(RandomInitializer):
    """A (semi-)orthogonal matrix times `gain`.

    The shape is read as a matrix `(prod(shape[:-1]), shape[-1])`; the result has
    orthonormal columns when it has at least as many rows as columns, orthonormal
    rows otherwise. It comes from the QR decomposition of a normal draw, with the
    signs fixed by the diagonal of R so the distribution is uniform (Haar).

    Args:
        gain: the factor applied to the orthogonal matrix.
        seed: an int or None (see `RandomInitializer`).

    Example:
        >>> q = Orthogonal(seed=0)((4, 4))  # q.T @ q is the identity
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = _check_number(gain, "gain", type(self).__name__)
        super().__init__(seed)

    def __call__(self, shape, dtype=None):
        shape, dtype = self._prepare(shape, dtype)
        if len(shape) < 2:
            raise ValueError(f"{type(self).__name__}: `shape` must have at least 2 dimensions, got {shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        draw = self._rng().standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(draw)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q).reshape(shape).astype(dtype)

    def get_config(self):
        return {"gain": self.gain, **super().get_config()}


class Identity(Initializer):
    """The identity matrix times `gain` (a rectangular shape gets ones on the main diagonal).

    Args:
        gain: the factor applied to the identity.

    Example:
        >>> Identity(gain=2.0)((3, 3))
    """

    def __init__(self, gain=1.0):
        self.gain = _check_number(gain, "gain", "Identity")

    def __call__(self, shape, dtype=None):
        shape = _check_shape(shape, "Identity")
        if len(shape) != 2:
            raise ValueError(f"Identity: `shape` must be 2-D, got {shape}")
        return (self.gain * np.eye(*shape)).astype(_check_dtype(dtype, "Identity", True))

    def get_config(self):
        return {"gain": self.gain}


# Keras 3's class-name aliases.
OrthogonalInitializer = Orthogonal
IdentityInitializer = Identity

_CLASSES = (
    Zeros,
    Ones,
    Constant,
    RandomNormal,
    TruncatedNormal,
    RandomUniform,
    VarianceScaling,
    GlorotUniform,
    GlorotNormal,
    HeNormal,
    HeUniform,
    LecunNormal,
    LecunUniform,
    Orthogonal,
    Identity,
)
_IDS = {
    Zeros: "zeros",
    Ones: "ones",
    Constant: "constant",
    RandomNormal: "random_normal",
    TruncatedNormal: "truncated_normal",
    RandomUniform: "random_uniform",
    VarianceScaling: "variance_scaling",
    GlorotUniform: "glorot_uniform",
    GlorotNormal: "glorot_normal",
    HeNormal: "he_normal",
    HeUniform: "he_uniform",
    LecunNormal: "lecun_normal",
    LecunUniform: "lecun_uniform",
    Orthogonal: "orthogonal",
    Identity: "identity",
}
_REGISTRY = {
    **{cls.__name__: cls for cls in _CLASSES},
    **{name: cls for cls, name in _IDS.items()},
    "OrthogonalInitializer": Orthogonal,
    "IdentityInitializer": Identity,
    # Keras's short aliases.
    "zero": Zeros,
    "one": Ones,
    "normal": RandomNormal,
    "uniform": RandomUniform,
}


def serialize(initializer):
    """Keras 3's serialized form: `{"module", "class_name", "config", "registered_name"}`.

    Args:
        initializer: an `Initializer`, a function (written by name) or None.

    Example:
        >>> serialize(GlorotUniform(seed=1))["class_name"]
        'GlorotUniform'
    """
    return utils._serialize_object(initializer, "keras.initializers", Initializer, "initializer")


def deserialize(config, custom_objects=None):
    """The initializer a serialized config (or a name) describes.

    Args:
        config: the output of `serialize`, a Keras `{"class_name", "config"}` dict,
            or a name such as "he_normal" or "HeNormal".
        custom_objects: a dict of user initializer classes by name.

    Example:
        >>> deserialize({"class_name": "HeNormal", "config": {"seed": 3}})
    """
    return utils._deserialize_object(config, _REGISTRY, custom_objects, "initializer")


def get(identifier):
    """An initializer from a name, a config dict, an instance, a class or a callable.

    None gives None; a string id ("glorot_uniform") or class name gives a new
    instance with default arguments; a class is instantiated; a callable (an
    instance or a function `(shape, dtype=None) -> array`) is returned as is.

    Args:
        identifier: what to look up.

    Example:
        >>> get("he_uniform")
        >>> get({"class_name": "Constant", "config": {"value": 0.5}})
    """
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret initializer identifier: {identifier!r}")
