"""`Variable`: a named, mutable float32 array that models train and tapes watch.

The values of all float32 Variables live in one store in the Rust core, so compiled
training steps update weights in place and every model that shares a layer sees the
same weights without copying. Python reads a value through a cached copy that is
refreshed after the core has changed the store (`mark_store_changed`).
"""

import itertools
import weakref

import numpy as np

from pyfuncnet import _core

_ids = itertools.count(1)


class _Store:
    """The core's weight store, its free slots and a generation counter bumped each
    time compiled code writes to it (cached copies older than it are stale)."""

    def __init__(self):
        self.core = _core.Variables()
        self.free = []
        self.released = []
        self.generation = 0

    def add(self, value):
        self._reclaim()
        if self.free:
            index = self.free.pop()
            self.core.replace(index, value)
        else:
            index = self.core.add(value)
        return index

    def release(self, index):
        """Called by a dead Variable's finalizer. A garbage collection can run it in
        the middle of a core call that holds the store (a training step converting
        its inputs), so it only notes the slot; the next `add` empties it."""
        self.released.append(index)

    def _reclaim(self):
        while self.released:
            index = self.released.pop()
            self.core.replace(index, np.zeros(0, np.float32))
            self.free.append(index)


store = _Store()


def mark_store_changed():
    """Called after compiled code wrote Variables in the store."""
    store.generation += 1


class Variable:
    """A mutable tensor, as `keras.Variable`.

    Args:
        initializer: an array-like initial value (or a callable returning one given
            `shape` and `dtype`).
        shape: the shape, required when `initializer` is callable.
        dtype: "float32" (the default) or an int dtype.
        trainable: whether `GradientTape` watches it automatically and optimizers
            update it.
        name: a name for messages and saving.

    Example:
        >>> v = Variable(np.zeros((2, 3)), name="w")
        >>> v.assign(np.ones((2, 3)))
    """

    __array_priority__ = 100

    def __init__(self, initializer, shape=None, dtype=None, trainable=True, name=None):
        if callable(initializer):
            if shape is None:
                raise ValueError("Variable: `shape` is required when the initializer is callable")
            value = initializer(tuple(shape), dtype=dtype or "float32")
        else:
            value = initializer
        value = np.array(value, dtype=np.dtype(dtype) if dtype else None, copy=True)
        if value.dtype.kind == "f" or dtype is None and value.dtype.kind == "b":
            value = value.astype(np.float32)
        elif value.dtype.kind in "iu":
            value = value.astype(np.int32)
        if shape is not None and tuple(shape) != value.shape:
            raise ValueError(f"Variable: initial value has shape {value.shape}, expected {tuple(shape)}")
        self._value = np.asarray(value, order="C")  # keeps 0-d (ascontiguousarray makes it 1-d)
        self.trainable = bool(trainable)
        self.name = name or f"variable_{next(_ids)}"
        self.path = self.name
        # float32 values live in the core's store (index), cached in `_value`.
        self._index = None
        if self._value.dtype == np.float32:
            self._index = store.add(self._value)
            self._generation = store.generation
            weakref.finalize(self, store.release, self._index)

    @property
    def value(self):
        """The current value (a numpy array; do not modify it in place)."""
        if self._index is not None and self._generation != store.generation:
            self._value = store.core.get(self._index)
            self._generation = store.generation
        return self._value

    @property
    def shape(self):
        return self._value.shape

    @property
    def dtype(self):
        return str(self._value.dtype)

    @property
    def ndim(self):
        return self._value.ndim

    def numpy(self):
        """A copy of the value."""
        return self.value.copy()

    def assign(self, value):
        """Replaces the value; the shape must not change.

        Given a symbolic tensor (inside a layer's `call` while a model is built),
        records a state update instead: compiled training steps assign the
        tensor's value after each step (batch normalization's moving statistics).
        """
        from pyfuncnet import _symbolic

        if isinstance(value, _symbolic.KerasTensor):
            if len(value.shape) != self._value.ndim or any(d is not None and d != s for d, s in zip(value.shape, self._value.shape)):
                raise ValueError(
                    f"Variable '{self.name}': cannot assign a tensor of shape {value.shape} "
                    f"to a variable of shape {self._value.shape}"
                )
            _symbolic.record_update(self, value)
            return self
        new = np.asarray(value, dtype=self._value.dtype)
        if new.shape != self._value.shape:
            raise ValueError(
                f"Variable '{self.name}': cannot assign a value of shape {new.shape} "
                f"to a variable of shape {self._value.shape}"
            )
        self._value = np.array(new, order="C")
        if self._index is not None:
            store.core.set(self._index, self._value)
            self._generation = store.generation
        return self

    def assign_add(self, delta):
        return self.assign(self.value + np.asarray(delta, dtype=self._value.dtype))

    def assign_sub(self, delta):
        return self.assign(self.value - np.asarray(delta, dtype=self._value.dtype))

    def __array__(self, dtype=None, copy=None):
        value = self.value
        return value if dtype is None else value.astype(dtype)

    def __repr__(self):
        return f"<Variable path={self.path}, shape={self.shape}, dtype={self.dtype}, value={self.value}>"

    def __len__(self):
        return len(self._value)

    def _op(name):  # noqa: N805 - builds forwarding operators below
        def method(self, *args):
            from pyfuncnet import ops

            return getattr(ops, name)(self, *args)

        return method

    def _rop(name):  # noqa: N805
        def method(self, other):
            from pyfuncnet import ops

            return getattr(ops, name)(other, self)

        return method

    __add__ = _op("add")
    __radd__ = _rop("add")
    __sub__ = _op("subtract")
    __rsub__ = _rop("subtract")
    __mul__ = _op("multiply")
    __rmul__ = _rop("multiply")
    __truediv__ = _op("divide")
    __rtruediv__ = _rop("divide")
    __pow__ = _op("power")
    __rpow__ = _rop("power")
    __matmul__ = _op("matmul")
    __rmatmul__ = _rop("matmul")
    __neg__ = _op("negative")
    __abs__ = _op("abs")
    __getitem__ = _op("_getitem")
    del _op, _rop
