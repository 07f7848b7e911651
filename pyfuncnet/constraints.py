"""Weight constraints, as `keras.constraints`.

A constraint maps a weight to its projection onto the allowed set; the trainer
applies it to the new value after each optimizer update. Each is written with
`pyfuncnet.ops`: on an array or a `Variable` it returns a float32 NumPy array,
on a symbolic tensor it records graph nodes.

The norm-based constraints use Keras 3's formulas, with `epsilon` added to the
norm in the denominator: `w * (desired / (epsilon + norm))`.
"""

import math
import numbers

from pyfuncnet import config, ops, utils


def _norms(w, axis):
    """L2 norms of `w` over `axis`, keeping the reduced axes for broadcasting."""
    return ops.sqrt(ops.sum(ops.square(w), axis=axis, keepdims=True))


def _check_axis(axis, who):
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise ValueError(f"{who}: `axis` must be an int or a list of ints, got {axis!r}")
    return list(axis) if isinstance(axis, (list, tuple)) else int(axis)


def _check_number(value, name, who):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{who}: `{name}` must be a finite number, got {value!r}")
    return value


class Constraint:
    """Base class of constraints: a callable from a weight to the constrained weight.

    Subclasses implement `__call__` with `pyfuncnet.ops` and, when they take
    arguments, `get_config`.

    Example:
        >>> class Clip(Constraint):
        ...     def __call__(self, w):
        ...         return ops.clip(w, -1.0, 1.0)
    """

    def __call__(self, w):
        return w

    def get_config(self):
        """The constructor arguments, as a JSON-serializable dict."""
        return {}

    @classmethod
    def from_config(cls, config):
        """A constraint built from `get_config()`'s output.

        Example:
            >>> MaxNorm.from_config({"max_value": 3, "axis": 0})
        """
        return cls(**config)


class MaxNorm(Constraint):
    """Scales the slices of `w` along `axis` whose L2 norm exceeds `max_value` down
    to norm `max_value`: `w * clip(norm, 0, max_value) / (epsilon + norm)`.

    Args:
        max_value: the largest norm allowed.
        axis: the axis (or list of axes) the norms run over; 0 for a Dense kernel
            constrains each unit's incoming weights, `[0, 1, 2]` a Conv2D kernel's
            filters.

    Example:
        >>> MaxNorm(1.0)(np.array([[3.0], [4.0]]))  # [[0.6], [0.8]] (up to epsilon)
    """

    def __init__(self, max_value=2, axis=0):
        self.max_value = _check_number(max_value, "max_value", "MaxNorm")
        self.axis = _check_axis(axis, "MaxNorm")

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = ops.clip(norms, 0.0, self.max_value)
        return ops.multiply(w, ops.divide(desired, ops.add(config.epsilon(), norms)))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class NonNeg(Constraint):
    """Sets negative weights to zero: `w * (w >= 0)`.

    Example:
        >>> NonNeg()(np.array([-1.0, 2.0]))  # [0.0, 2.0]
    """

    def __call__(self, w):
        return ops.multiply(w, ops.cast(ops.greater_equal(w, 0.0), "float32"))


class UnitNorm(Constraint):
    """Scales the slices of `w` along `axis` to unit L2 norm: `w / (epsilon + norm)`.

    Args:
        axis: the axis (or list of axes) the norms run over.

    Example:
        >>> UnitNorm()(np.array([[3.0], [4.0]]))  # [[0.6], [0.8]] (up to epsilon)
    """

    def __init__(self, axis=0):
        self.axis = _check_axis(axis, "UnitNorm")

    def __call__(self, w):
        return ops.divide(w, ops.add(config.epsilon(), _norms(w, self.axis)))

    def get_config(self):
        return {"axis": self.axis}


class MinMaxNorm(Constraint):
    """Moves the L2 norms of the slices of `w` along `axis` into `[min_value, max_value]`.

    `desired = rate * clip(norm, min_value, max_value) + (1 - rate) * norm` and the
    result is `w * desired / (epsilon + norm)`; `rate=1` projects at once, a smaller
    rate moves part of the way.

    Args:
        min_value: the smallest norm allowed.
        max_value: the largest norm allowed.
        rate: the fraction of the way to the allowed interval, in [0, 1].
        axis: the axis (or list of axes) the norms run over.

    Example:
        >>> MinMaxNorm(1.0, 2.0)(np.array([[0.3], [0.4]]))  # [[0.6], [0.8]] (up to epsilon)
    """

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value = _check_number(min_value, "min_value", "MinMaxNorm")
        self.max_value = _check_number(max_value, "max_value", "MinMaxNorm")
        self.rate = _check_number(rate, "rate", "MinMaxNorm")
        self.axis = _check_axis(axis, "MinMaxNorm")

    def __call__(self, w):
        norms = _norms(w, self.axis)
        clipped = ops.multiply(self.rate, ops.clip(norms, self.min_value, self.max_value))
        desired = ops.add(clipped, ops.multiply(1.0 - self.rate, norms))
        return ops.multiply(w, ops.divide(desired, ops.add(config.epsilon(), norms)))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate, "axis": self.axis}


_CLASSES = (Constraint, MaxNorm, NonNeg, UnitNorm, MinMaxNorm)
_REGISTRY = {
    **{cls.__name__: cls for cls in _CLASSES},
    "constraint": Constraint,
    "max_norm": MaxNorm,
    "non_neg": NonNeg,
    "unit_norm": UnitNorm,
    "min_max_norm": MinMaxNorm,
}


def serialize(constraint):
    """Keras 3's serialized form: `{"module", "class_name", "config", "registered_name"}`.

    Args:
        constraint: a `Constraint`, a function (written by name) or None.

    Example:
        >>> serialize(MaxNorm(3))["config"]
        {'max_value': 3, 'axis': 0}
    """
    return utils._serialize_object(constraint, "keras.constraints", Constraint, "constraint")


def deserialize(config, custom_objects=None):
    """The constraint a serialized config (or a name) describes.

    Args:
        config: the output of `serialize`, a Keras `{"class_name", "config"}` dict,
            or a name such as "max_norm" or "NonNeg".
        custom_objects: a dict of user constraint classes by name.

    Example:
        >>> deserialize({"class_name": "UnitNorm", "config": {"axis": 1}})
    """
    return utils._deserialize_object(config, _REGISTRY, custom_objects, "constraint")


def get(identifier):
    """A constraint from a name, a config dict, an instance, a class or a callable.

    None gives None; a string id ("non_neg") or class name gives a new instance with
    default arguments; a class is instantiated; a callable is returned as is.

    Args:
        identifier: what to look up.

    Example:
        >>> get("non_neg")
    """
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Constraint):
        return identifier()
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret constraint identifier: {identifier!r}")
