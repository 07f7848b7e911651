"""Merge layers: combine a list of tensors into one (Add, Subtract, Multiply,
Average, Maximum, Minimum, Concatenate, Dot) and their functional forms."""

import functools

from pyfuncnet import ops
from pyfuncnet.layers.layer import Layer


def _broadcast_shape(layer, shapes):
    """The elementwise result shape of `shapes` (batch included), or a clear error."""
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        dims = [s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ValueError(
                f"{type(layer).__name__} '{layer.name}': inputs with shapes {[tuple(s) for s in shapes]} "
                "cannot be merged: their sizes differ along an axis"
            )
        out.append(known.pop() if known else (1 if all(d == 1 for d in dims) else None))
    return tuple(out)


class _Merge(Layer):
    """Elementwise merge of two or more tensors of compatible shapes."""

    min_inputs = 2
    max_inputs = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def _check_list(self, inputs):
        name = type(self).__name__
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(f"{name} '{self.name}' must be called on a list of tensors, got {type(inputs).__name__}")
        n = len(inputs)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = f"exactly {self.max_inputs}" if self.max_inputs == self.min_inputs else f"at least {self.min_inputs}"
            raise ValueError(f"{name} '{self.name}' must be called on a list of {want} tensors, got {n}")

    def build(self, input_shape):
        self._check_list(input_shape)
        _broadcast_shape(self, input_shape)
        self.built = True

    def call(self, inputs):
        self._check_list(inputs)
        return self._merge(list(inputs))

    def compute_output_shape(self, input_shape):
        return _broadcast_shape(self, input_shape)


class Add(_Merge):
    """The elementwise sum of its inputs."""

    def _merge(self, xs):
        return functools.reduce(ops.add, xs)


class Subtract(_Merge):
    """`inputs[0] - inputs[1]` (exactly two inputs)."""

    min_inputs = max_inputs = 2

    def _merge(self, xs):
        return ops.subtract(xs[0], xs[1])


class Multiply(_Merge):
    """The elementwise product of its inputs."""

    def _merge(self, xs):
        return functools.reduce(ops.multiply, xs)


class Average(_Merge):
    """The elementwise mean of its inputs."""

    def _merge(self, xs):
        return ops.multiply(functools.reduce(ops.add, xs), 1.0 / len(xs))


class Maximum(_Merge):
    """The elementwise maximum of its inputs."""

    def _merge(self, xs):
        return functools.reduce(ops.maximum, xs)


class Minimum(_Merge):
    """The elementwise minimum of its inputs."""

    def _merge(self, xs):
        return functools.reduce(ops.minimum, xs)


class Concatenate(_Merge):
    """Joins its inputs along `axis` (the last by default); other axes must match.

    Args:
        axis: the axis to join along.
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def _output_shape(self, shapes):
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ValueError(
                f"Concatenate '{self.name}': inputs must have the same rank, got shapes {[tuple(s) for s in shapes]}"
            )
        rank = ranks.pop()
        axis = self.axis % rank if -rank <= self.axis < rank else None
        if axis is None:
            raise ValueError(f"Concatenate '{self.name}': axis {self.axis} is out of range for inputs of rank {rank}")
        out = []
        for k in range(rank):
            dims = [s[k] for s in shapes]
            if k == axis:
                out.append(None if any(d is None for d in dims) else sum(dims))
                continue
            known = {d for d in dims if d is not None}
            if len(known) > 1:
                raise ValueError(
                    f"Concatenate '{self.name}' requires inputs with matching shapes except for the "
                    f"concatenation axis {self.axis}. Received: input_shape={[tuple(s) for s in shapes]}"
                )
            out.append(known.pop() if known else None)
        return tuple(out)

    def build(self, input_shape):
        self._check_list(input_shape)
        self._output_shape(input_shape)
        self.built = True

    def _merge(self, xs):
        return ops.concatenate(xs, axis=self.axis)

    def compute_output_shape(self, input_shape):
        return self._output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config["axis"] = self.axis
        return config


class Dot(_Merge):
    """Dot products between samples of two tensors along `axes`.

    Args:
        axes: an axis or a pair of axes (one per input) to contract.
        normalize: L2-normalise the samples along the axes first (cosine proximity).

    Example:
        >>> Dot(axes=1)([a, b])  # (batch, n) and (batch, n) -> (batch, 1)
    """

    min_inputs = max_inputs = 2

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axes, int):
            axes = (axes, axes)
        axes = tuple(int(a) for a in axes)
        if len(axes) != 2:
            raise ValueError(f"Dot '{self.name}': `axes` must be an int or a pair of ints, got {axes}")
        self.axes = axes
        self.normalize = bool(normalize)

    def _axes_for(self, shapes):
        out = []
        for a, s in zip(self.axes, shapes):
            rank = len(s)
            if not -rank <= a < rank or a % rank == 0:
                raise ValueError(f"Dot '{self.name}': axis {a} is invalid for an input of shape {tuple(s)} (the batch axis cannot be contracted)")
            out.append(a % rank)
        return out

    def build(self, input_shape):
        self._check_list(input_shape)
        (a0, a1), (s0, s1) = self._axes_for(input_shape), input_shape
        if len(s0) > 3 or len(s1) > 3:
            raise ValueError(f"Dot '{self.name}': inputs of rank above 3 are not supported, got {tuple(s0)} and {tuple(s1)}")
        if s0[a0] is not None and s1[a1] is not None and s0[a0] != s1[a1]:
            raise ValueError(
                f"Dot '{self.name}': incompatible input shapes: axis {a0} of {tuple(s0)} has size {s0[a0]} "
                f"but axis {a1} of {tuple(s1)} has size {s1[a1]}"
            )
        self.built = True

    def _merge(self, xs):
        x, y = xs
        a0, a1 = self._axes_for([x.shape, y.shape])
        if self.normalize:
            x = _l2_normalize(x, a0)
            y = _l2_normalize(y, a1)
        if x.ndim == 2 and y.ndim == 2:
            return ops.sum(ops.multiply(x, y), axis=1, keepdims=True)
        # Batched matmul: x's contracted axis last, y's first after the batch.
        if x.ndim == 2:
            x = ops.expand_dims(x, 1)
            a0 = 2
        if y.ndim == 2:
            y = ops.expand_dims(y, 2)
            a1 = 1
        if a0 != 2:
            x = ops.transpose(x, (0, 2, 1))
        if a1 != 1:
            y = ops.transpose(y, (0, 2, 1))
        out = ops.matmul(x, y)
        if xs[0].ndim == 2:
            out = ops.squeeze(out, 1)
        elif xs[1].ndim == 2:
            out = ops.squeeze(out, 2)
        return out

    def compute_output_shape(self, input_shape):
        s0, s1 = input_shape
        a0, a1 = self._axes_for(input_shape)
        rest = [d for k, d in enumerate(s0) if k not in (0, a0)] + [d for k, d in enumerate(s1) if k not in (0, a1)]
        return (s0[0],) + tuple(rest) if rest else (s0[0], 1)

    def get_config(self):
        config = super().get_config()
        config.update(axes=self.axes, normalize=self.normalize)
        return config


def _l2_normalize(x, axis):
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), 1e-12))
    return ops.divide(x, norm)


def _functional(cls):
    def merge(inputs, **kwargs):
        return cls(**kwargs)(inputs)

    merge.__name__ = cls.__name__.lower()
    merge.__doc__ = f"Functional form of `{cls.__name__}`: `{cls.__name__}(**kwargs)(inputs)`."
    return merge


add = _functional(Add)
subtract = _functional(Subtract)
multiply = _functional(Multiply)
average = _functional(Average)
maximum = _functional(Maximum)
minimum = _functional(Minimum)


def concatenate(inputs, axis=-1, **kwargs):
    """Functional form of `Concatenate`."""
    return Concatenate(axis=axis, **kwargs)(inputs)


def dot(inputs, axes=-1, normalize=False, **kwargs):
    """Functional form of `Dot`."""
    return Dot(axes=axes, normalize=normalize, **kwargs)(inputs)
