"""Eager results a `GradientTape` can follow through Python operators.

While a tape records, eager ops return `TapeTensor`s: numpy arrays whose
arithmetic operators, common numpy ufuncs (`np.exp(t)`, `t * 2`, `-t`, `t @ w`)
and indexing run through `pyfuncnet.ops`, so the tape records them as it records
TensorFlow tensor arithmetic. Outside a recording tape they behave as plain
numpy arrays, and eager ops return plain arrays.
"""

import numpy as np

from pyfuncnet import _tape


def _ops():
    from pyfuncnet import ops

    return ops


# numpy ufunc -> name of the `pyfuncnet.ops` function that computes it.
_UFUNC_OPS = {
    np.add: "add",
    np.subtract: "subtract",
    np.multiply: "multiply",
    np.true_divide: "divide",
    np.power: "power",
    np.negative: "negative",
    np.absolute: "abs",
    np.matmul: "matmul",
    np.square: "square",
    np.sqrt: "sqrt",
    np.exp: "exp",
    np.log: "log",
    np.tanh: "tanh",
    np.maximum: "maximum",
    np.minimum: "minimum",
    np.sign: "sign",
}


def _recording():
    return any(t._recording for t in _tape._active)


def _plain(x):
    return x.view(np.ndarray) if isinstance(x, TapeTensor) else x


class TapeTensor(np.ndarray):
    """A numpy array produced by an op under a recording `GradientTape`."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = _UFUNC_OPS.get(ufunc) if method == "__call__" and not kwargs else None
        if name is not None and _recording():
            return getattr(_ops(), name)(*inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(_plain(o) for o in kwargs["out"])
        return getattr(ufunc, method)(*(_plain(x) for x in inputs), **kwargs)

    def __getitem__(self, key):
        if _recording() and _is_basic_index(key):
            return _ops()._getitem(self, key)
        return _plain(self)[key]

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # numpy functions that are not ufuncs (sum, reshape, ...) return plain arrays.
        if return_scalar and array.ndim == 0:
            return array[()]
        return array.view(np.ndarray)


def _is_basic_index(key):
    """Ints, forward slices, `None` and `...`: the indexing `ops` differentiates."""
    keys = key if isinstance(key, tuple) else (key,)
    for k in keys:
        if isinstance(k, slice):
            if k.step is not None and k.step <= 0:
                return False
        elif not (k is None or k is Ellipsis or isinstance(k, (int, np.integer))) or isinstance(k, bool):
            return False
    return True


def track(array):
    """`array` (a numpy array an op returned) as a `TapeTensor` sharing its data."""
    return array.view(TapeTensor) if isinstance(array, np.ndarray) else array
