"""Keras-2 style backend functions (`from pyfuncnet import backend as K`).

Thin aliases of `pyfuncnet.ops` with the argument names and defaults Keras 2's
`keras.backend` used (e.g. `K.concatenate` joins along the last axis by default).
"""

import numpy as np

from pyfuncnet import config, ops
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet._variable import Variable

epsilon = config.epsilon
floatx = config.floatx
image_data_format = config.image_data_format

abs = ops.abs  # noqa: A001
exp = ops.exp
log = ops.log
sqrt = ops.sqrt
square = ops.square
sign = ops.sign
relu = ops.relu
sigmoid = ops.sigmoid
tanh = ops.tanh
softplus = ops.softplus
softsign = ops.softsign
hard_sigmoid = ops.hard_sigmoid
elu = ops.elu
maximum = ops.maximum
minimum = ops.minimum
equal = ops.equal
not_equal = ops.not_equal
greater = ops.greater
greater_equal = ops.greater_equal
less = ops.less
less_equal = ops.less_equal
cast = ops.cast
reshape = ops.reshape
transpose = ops.transpose
one_hot = ops.one_hot
shape = ops.shape
ndim = ops.ndim
switch = ops.where
zeros = ops.zeros
ones = ops.ones
zeros_like = ops.zeros_like
ones_like = ops.ones_like


def _reducer(fn):
    def reduce(x, axis=None, keepdims=False):
        return fn(x, axis=axis, keepdims=keepdims)

    reduce.__name__ = fn.__name__
    reduce.__doc__ = fn.__doc__
    return reduce


sum = _reducer(ops.sum)  # noqa: A001
mean = _reducer(ops.mean)
max = _reducer(ops.max)  # noqa: A001
min = _reducer(ops.min)  # noqa: A001
prod = _reducer(ops.prod)
var = _reducer(ops.var)
std = _reducer(ops.std)


def argmax(x, axis=-1):
    return ops.argmax(x, axis=axis)


def argmin(x, axis=-1):
    return ops.argmin(x, axis=axis)


def pow(x, a):  # noqa: A001 - Keras 2 name
    return ops.power(x, a)


def clip(x, min_value, max_value):
    return ops.clip(x, min_value, max_value)


def dot(x, y):
    return ops.dot(x, y)


def batch_dot(x, y, axes=None):
    """Batched matrix product of rank-3 tensors (`axes` None or (2, 1))."""
    if axes not in (None, (2, 1), [2, 1]):
        raise NotImplementedError("batch_dot: only axes=(2, 1) is supported")
    return ops.matmul(x, y)


def softmax(x, axis=-1):
    return ops.softmax(x, axis=axis)


def concatenate(tensors, axis=-1):
    return ops.concatenate(tensors, axis=axis)


def stack(x, axis=0):
    return ops.stack(x, axis=axis)


def expand_dims(x, axis=-1):
    return ops.expand_dims(x, axis)


def squeeze(x, axis):
    return ops.squeeze(x, axis)


def gather(reference, indices):
    """Rows of `reference` at `indices` (along axis 0)."""
    return ops.take(reference, indices, axis=0)


def int_shape(x):
    """The shape as a tuple of ints / None."""
    return tuple(ops.shape(x))


def variable(value, dtype=None, name=None):
    """A `Variable` holding `value`."""
    return Variable(np.asarray(value), dtype=dtype or "float32", name=name)


def constant(value, dtype=None, shape=None, name=None):
    """A constant array (broadcast to `shape` if given)."""
    arr = np.asarray(value, dtype=dtype or "float32")
    return np.broadcast_to(arr, shape).copy() if shape is not None else arr


def get_value(x):
    """The value of a Variable or array, as numpy."""
    return np.asarray(x.value if isinstance(x, Variable) else x).copy()


def set_value(x, value):
    """Assigns `value` to a Variable."""
    x.assign(value)


def eval(x):  # noqa: A001 - Keras 2 name
    return get_value(x)


def is_keras_tensor(x):
    return isinstance(x, KerasTensor)


def clear_session():
    """Resets the automatic layer, loss and metric names (the next Dense is "dense" again), as Keras."""
    from pyfuncnet import losses
    from pyfuncnet.layers.layer import clear_session as reset_names

    reset_names()
    losses._clear_auto_names()  # also the metrics' names, which share its counter
