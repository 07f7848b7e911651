"""Weight regularizers, as `keras.regularizers`.

A regularizer maps a weight to a scalar penalty that training adds to the loss.
Each is written with `pyfuncnet.ops`, so it computes eagerly on arrays and
`Variable`s (returning a 0-d float32 array) and records graph nodes on symbolic
tensors (so the trainer can add the penalty to the compiled loss and
differentiate it).
"""

import math
import numbers

import numpy as np

from pyfuncnet import _symbolic, ops, utils
from pyfuncnet._symbolic import KerasTensor


def _check_factor(value, name, who):
    """Keras's rule for penalty factors: a finite float >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{who}: `{name}` must be a finite float >= 0, got {value!r}")
    return float(value)


def _zero_penalty(x):
    """A penalty of 0 in the mode of `x` (a symbolic constant or a 0-d array)."""
    if isinstance(x, KerasTensor):
        return _symbolic.constant(np.float32(0.0))
    return np.zeros((), dtype=np.float32)


class Regularizer:
    """Base class of regularizers: a callable from a weight to a scalar penalty.

    Subclasses implement `__call__` with `pyfuncnet.ops` and, when they take
    arguments, `get_config`.

    Example:
        >>> class SumSquares(Regularizer):
        ...     def __call__(self, x):
        ...         return ops.sum(ops.square(x))
    """

    def __call__(self, x):
        return _zero_penalty(x)

    def get_config(self):
        """The constructor arguments, as a JSON-serializable dict."""
        raise NotImplementedError(f"{type(self).__name__} must implement get_config() to be serializable")

    @classmethod
    def from_config(cls, config):
        """A regularizer built from `get_config()`'s output.

        Example:
            >>> L2.from_config({"l2": 0.001})
        """
        return cls(**config)


class L1(Regularizer):
    """`l1 * sum(abs(x))`.

    Args:
        l1: the factor (None means 0.01, as in Keras).

    Example:
        >>> L1(0.1)(np.array([1.0, -2.0]))  # 0.3
    """

    def __init__(self, l1=0.01):
        self.l1 = _check_factor(0.01 if l1 is None else l1, "l1", "L1")

    def __call__(self, x):
        return ops.multiply(self.l1, ops.sum(ops.abs(x)))

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """`l2 * sum(square(x))`.

    Args:
        l2: the factor (None means 0.01, as in Keras).

    Example:
        >>> L2(0.1)(np.array([1.0, -2.0]))  # 0.5
    """

    def __init__(self, l2=0.01):
        self.l2 = _check_factor(0.01 if l2 is None else l2, "l2", "L2")

    def __call__(self, x):
        return ops.multiply(self.l2, ops.sum(ops.square(x)))

    def get_config(self):
        return {"l2": self.l2}


class L1L2(Regularizer):
    """`l1 * sum(abs(x)) + l2 * sum(square(x))`; a zero factor drops its term.

    Args:
        l1: the L1 factor (None means 0).
        l2: the L2 factor (None means 0).

    Example:
        >>> L1L2(l1=0.1, l2=0.1)(np.array([1.0, -2.0]))  # 0.8
    """

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _check_factor(0.0 if l1 is None else l1, "l1", "L1L2")
        self.l2 = _check_factor(0.0 if l2 is None else l2, "l2", "L1L2")

    def __call__(self, x):
        terms = []
        if self.l1:
            terms.append(ops.multiply(self.l1, ops.sum(ops.abs(x))))
        if self.l2:
            terms.append(ops.multiply(self.l2, ops.sum(ops.square(x))))
        if not terms:
            return _zero_penalty(x)
        return terms[0] if len(terms) == 1 else ops.add(terms[0], terms[1])

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


_ORTHOGONAL_MODES = ("rows", "columns")


class OrthogonalRegularizer(Regularizer):
    """Pushes the rows (or columns) of a 2-D weight towards orthogonality.

    The rows (`mode="rows"`) or columns are scaled to unit L2 norm (a norm below
    `epsilon` counts as `epsilon`); the penalty is
    `factor * 0.5 * sum(|off-diagonal entries of their Gram matrix|) / num_pairs`
    with `num_pairs = n * (n - 1) / 2` for `n` rows (or columns). With a single row
    (or column) there is no pair and the penalty is 0.

    Args:
        factor: the penalty factor.
        mode: "rows" or "columns".

    Example:
        >>> OrthogonalRegularizer(factor=1.0)(np.array([[1.0, 0.0], [1.0, 1.0]]))  # 0.5 * sqrt(0.5)
    """

    def __init__(self, factor=0.01, mode="rows"):
        self.factor = _check_factor(factor, "factor", "OrthogonalRegularizer")
        if mode not in _ORTHOGONAL_MODES:
            raise ValueError(f"OrthogonalRegularizer: `mode` must be one of 'rows', 'columns', got {mode!r}")
        self.mode = mode

    def __call__(self, x):
        shape = ops.shape(x)
        if len(shape) != 2:
            raise ValueError(f"OrthogonalRegularizer: the weight must be 2-D, got shape {tuple(shape)}")
        axis = 1 if self.mode == "rows" else 0
        n = shape[1 - axis]
        if n is None:
            raise ValueError(
                f"OrthogonalRegularizer: the number of {self.mode} must be known, got shape {tuple(shape)}"
            )
        if n < 2:
            return _zero_penalty(x)
        # Written with ops for every input (arrays too), so tapes and graphs see it.
        unit = utils._normalize_tensor(x, axis, 2)
        gram = ops.matmul(unit, ops.transpose(unit)) if self.mode == "rows" else ops.matmul(ops.transpose(unit), unit)
        off_diagonal = ops.multiply(gram, (1.0 - np.eye(n)).astype(np.float32))
        num_pairs = n * (n - 1) / 2.0
        return ops.multiply(self.factor * 0.5 / num_pairs, ops.sum(ops.abs(off_diagonal)))

    def get_config(self):
        return {"factor": self.factor, "mode": self.mode}


_CLASSES = (Regularizer, L1, L2, L1L2, OrthogonalRegularizer)
_REGISTRY = {
    **{cls.__name__: cls for cls in _CLASSES},
    "regularizer": Regularizer,
    "l1": L1,
    "l2": L2,
    "l1l2": L1L2,
    "l1_l2": L1L2,
    "orthogonal_regularizer": OrthogonalRegularizer,
}


def serialize(regularizer):
    """Keras 3's serialized form: `{"module", "class_name", "config", "registered_name"}`.

    Args:
        regularizer: a `Regularizer`, a function (written by name) or None.

    Example:
        >>> serialize(L2(0.001))["config"]
        {'l2': 0.001}
    """
    return utils._serialize_object(regularizer, "keras.regularizers", Regularizer, "regularizer")


def deserialize(config, custom_objects=None):
    """The regularizer a serialized config (or a name) describes.

    Args:
        config: the output of `serialize`, a Keras `{"class_name", "config"}` dict,
            or a name such as "l2" or "L1L2".
        custom_objects: a dict of user regularizer classes by name.

    Example:
        >>> deserialize({"class_name": "L1", "config": {"l1": 0.1}})
    """
    return utils._deserialize_object(config, _REGISTRY, custom_objects, "regularizer")


def get(identifier):
    """A regularizer from a name, a config dict, an instance, a class or a callable.

    None gives None; "l1", "l2", "l1_l2" (or a class name) give a new instance with
    default factors; a class is instantiated; a callable is returned as is.

    Args:
        identifier: what to look up.

    Example:
        >>> get("l2")(np.ones(3))  # 0.03
    """
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Regularizer):
        return identifier()
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret regularizer identifier: {identifier!r}")
