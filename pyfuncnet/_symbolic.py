"""Symbolic tensors: what `Input(...)` and ops on it return while a model is built.

A `KerasTensor` has a shape (with `None` for the batch or other unknown dims), a
dtype and the `OpNode` that produced it. Shape and dtype come from the Rust core's
own inference (the same rules the compiled graph checks), run with unknown
dimensions replaced by two different large sentinels: a dimension that follows the
sentinel is unknown, one that does not is static. Errors raise here, at build time.
"""

import contextlib
import itertools
import json
import re
import weakref

import numpy as np

from pyfuncnet import _core

# Two sizes no real model uses; a dimension that differs between the two runs of
# inference depends on an unknown dimension and is reported as None. Both are
# multiples of lcm(1..16), so reshaping an unknown dimension by any small factor
# (e.g. (None, 6) -> (-1, 4)) divides evenly, as it would for a real batch.
_SENTINELS = (720_720 * 1009, 720_720 * 1013)
_names = itertools.count(1)


class OpNode:
    """One op application in a symbolic graph.

    Args:
        op: the op name (as in `pyfuncnet.ops` and the Rust registry).
        attrs: a dict of attributes, or a callable taking the concrete input shapes
            and returning the dict (for ops whose attributes depend on the batch size).
        inputs: the input `KerasTensor`s.
        label: the layer or op name used in error messages.
        expand: for a node that stands for a subgraph only known once shapes are
            (a recurrent layer over a user-written cell, unrolled over the steps of
            each sequence length): a function taking KerasTensors of the inputs'
            concrete shapes and whether the step trains, and returning the output
            tensors built from them. Compiling replaces the node by that subgraph.
    """

    __slots__ = ("op", "attrs", "inputs", "outputs", "label", "expand")

    def __init__(self, op, attrs, inputs, label=None, expand=None):
        self.op = op
        self.attrs = attrs
        self.inputs = list(inputs)
        self.outputs = []
        self.label = label or op
        self.expand = expand

    def resolve_attrs(self, input_shapes):
        """The attributes for concrete input shapes."""
        if callable(self.attrs):
            return self.attrs(input_shapes)
        return self.attrs


class KerasTensor:
    """A symbolic tensor.

    Args:
        shape: a tuple of ints or None.
        dtype: a dtype name ("float32", "int32", "bool").
        name: a name, unique by default.
    """

    __array_priority__ = 100  # numpy defers binary operators to us

    def __init__(self, shape, dtype="float32", name=None, node=None, index=0, const=None, variable=None):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = str(dtype)
        self.name = name or f"keras_tensor_{next(_names)}"
        self._node = node
        self._index = index
        self._const = const
        self._variable = variable

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"

    def __len__(self):
        if not self.shape or self.shape[0] is None:
            raise TypeError(f"len() of a tensor with unknown first dimension: shape {self.shape}")
        return self.shape[0]

    def __bool__(self):
        raise TypeError("A symbolic KerasTensor has no truth value; use ops.where / ops.cond.")

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"A symbolic KerasTensor ({self.name}, shape {self.shape}) cannot be converted to a "
            "numpy array: it has no value until the model runs."
        )

    # Operators delegate to pyfuncnet.ops (imported lazily: ops imports this module).
    def __add__(self, other):
        return _ops().add(self, other)

    def __radd__(self, other):
        return _ops().add(other, self)

    def __sub__(self, other):
        return _ops().subtract(self, other)

    def __rsub__(self, other):
        return _ops().subtract(other, self)

    def __mul__(self, other):
        return _ops().multiply(self, other)

    def __rmul__(self, other):
        return _ops().multiply(other, self)

    def __truediv__(self, other):
        return _ops().divide(self, other)

    def __rtruediv__(self, other):
        return _ops().divide(other, self)

    def __pow__(self, other):
        return _ops().power(self, other)

    def __rpow__(self, other):
        return _ops().power(other, self)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _ops().matmul(other, self)

    def __neg__(self):
        return _ops().negative(self)

    def __abs__(self):
        return _ops().abs(self)

    def __gt__(self, other):
        return _ops().greater(self, other)

    def __ge__(self, other):
        return _ops().greater_equal(self, other)

    def __lt__(self, other):
        return _ops().less(self, other)

    def __le__(self, other):
        return _ops().less_equal(self, other)

    def __getitem__(self, key):
        return _ops()._getitem(self, key)

    __hash__ = object.__hash__


def _ops():
    from pyfuncnet import ops

    return ops


# Masks of values that take no attributes (numpy arrays), by id; an entry goes
# when its array is freed. Keras keeps the masks of JAX arrays the same way.
_masks = {}


def get_keras_mask(x):
    """The Keras mask attached to `x` (a tensor or array), or None."""
    mask = getattr(x, "_keras_mask", None)
    if mask is None and _masks:
        mask = _masks.get(id(x))
    return mask


def set_keras_mask(x, mask):
    """Attaches `mask` to `x` (None removes it): as the attribute `_keras_mask`
    where `x` takes one, else in a table keyed by the array."""
    try:
        x._keras_mask = mask
        return
    except AttributeError:
        pass
    if mask is None:
        _masks.pop(id(x), None)
        return
    try:
        weakref.finalize(x, _masks.pop, id(x), None)
    except TypeError:
        return  # a Python number: nothing to attach to
    _masks[id(x)] = mask


def constant(value):
    """A symbolic constant holding a float32 or int32 array."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"cannot convert a value of type {type(value).__name__} (dtype {arr.dtype}) to a tensor")
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int32)
    else:
        arr = arr.astype(np.float32)
    return KerasTensor(arr.shape, str(arr.dtype), const=arr)


def _concrete(shape, sentinel):
    return [sentinel if d is None else d for d in shape]


def infer(op, attrs, inputs):
    """Output `(shape, dtype)` pairs of `op` on symbolic inputs.

    Raises the core's typed errors (ShapeError, DTypeError, ...) for invalid inputs.
    """
    results = []
    for sentinel in _SENTINELS:
        shapes = [_concrete(t.shape, sentinel) for t in inputs]
        a = attrs(shapes) if callable(attrs) else attrs
        types = [(s, t.dtype) for s, t in zip(shapes, inputs)]
        try:
            results.append(_core.infer(op, json.dumps(a), types))
        except _core.PyfuncnetError as e:
            # Report unknown dimensions as None, not as the sentinel.
            message = _unknown_as_none(str(e), op, attrs, inputs)
            raise type(e)(message) from None
        if not any(None in t.shape for t in inputs):
            break
    outputs = []
    for k, (shape, dtype) in enumerate(results[0]):
        if len(results) == 2:
            other = results[1][k][0]
            shape = [d if d == o else None for d, o in zip(shape, other)]
        outputs.append((tuple(shape), dtype))
    return outputs


def _unknown_as_none(message, op, attrs, inputs):
    """An inference error message with the sentinels, and numbers derived from them
    (element counts, products), written as None: a number that changes when the
    inference runs with the other sentinel depends on an unknown dimension."""
    shapes = [_concrete(t.shape, _SENTINELS[1]) for t in inputs]
    try:
        a = attrs(shapes) if callable(attrs) else attrs
        _core.infer(op, json.dumps(a), [(s, t.dtype) for s, t in zip(shapes, inputs)])
        other = None
    except Exception as e:  # noqa: BLE001 - only its message is used
        other = str(e)
    number = re.compile(r"\d+")
    if other is not None and number.sub("#", other) == number.sub("#", message):
        mine, theirs = number.findall(message), number.findall(other)
        parts = number.split(message)
        message = parts[0] + "".join(
            ("None" if m != t else m) + rest for m, t, rest in zip(mine, theirs, parts[1:])
        )
    for value in _SENTINELS:
        message = message.replace(str(value), "None")
    return message


def variable_ref(var):
    """A symbolic reference to a `Variable`: compiled graphs read its current value.
    One reference per Variable, so a graph sees each weight once."""
    ref = getattr(var, "_symbolic_ref", None)
    if ref is None or ref.shape != var.shape:
        ref = KerasTensor(var.shape, var.dtype, name=var.name, variable=var)
        var._symbolic_ref = ref
    return ref


def symbolic(x):
    """`x` as a KerasTensor: tensors as they are, Variables by reference, values as constants."""
    from pyfuncnet._variable import Variable

    if isinstance(x, KerasTensor):
        return x
    if isinstance(x, Variable):
        return variable_ref(x)
    return constant(x)


_labels = []
_update_scopes = []


@contextlib.contextmanager
def update_scope(layer):
    """Collects the state updates (`Variable.assign` of a symbolic tensor) recorded
    inside `layer`'s call, as a list of `(variable, tensor, layer that assigned)`."""
    updates = []
    _update_scopes.append((layer, updates))
    try:
        yield updates
    finally:
        _update_scopes.pop()
    if _update_scopes:
        _update_scopes[-1][1].extend(updates)


def building():
    """Whether a layer is being called on symbolic tensors right now."""
    return bool(_update_scopes)


def record_update(variable, tensor):
    """Records that a training step assigns `tensor` to `variable`."""
    if not _update_scopes:
        raise ValueError(
            f"Variable '{variable.name}': a symbolic value can only be assigned inside a "
            "layer's call while a model is built"
        )
    layer, updates = _update_scopes[-1]
    updates.append((variable, tensor, layer))


@contextlib.contextmanager
def label_scope(name):
    """Ops recorded inside are labelled `name` (the calling layer), so errors from the
    compiled graph name the layer."""
    _labels.append(name)
    try:
        yield
    finally:
        _labels.pop()


def expandable(name, expand, inputs, output_types, label=None):
    """Records a node that compiling expands into the subgraph `expand` builds for
    concrete shapes (see `OpNode`); `output_types` are its `(shape, dtype)` pairs.
    Returns the output KerasTensors."""
    if label is None and _labels:
        label = f"{_labels[-1]}/{name}"
    node = OpNode(name, None, [symbolic(t) for t in inputs], label, expand=expand)
    node.outputs = [KerasTensor(shape, dtype, node=node, index=k) for k, (shape, dtype) in enumerate(output_types)]
    return node.outputs


def apply(op, attrs, inputs, label=None):
    """Records `op` on symbolic inputs; returns its output KerasTensor(s) as a list."""
    if label is None and _labels:
        label = f"{_labels[-1]}/{op}"
    inputs = [symbolic(t) for t in inputs]
    types = infer(op, attrs, inputs)
    node = OpNode(op, attrs, inputs, label)
    node.outputs = [KerasTensor(shape, dtype, node=node, index=k) for k, (shape, dtype) in enumerate(types)]
    return node.outputs
