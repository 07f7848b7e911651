"""Merge layers: combine a list of tensors into one (Add, Subtract, Multiply,
Average, Maximum, Minimum, Concatenate, Dot) and their functional forms."""

import functools

from pyfuncnet import ops
from pyfuncnet._symbolic import get_keras_mask, set_keras_mask
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

    def compute_mask(self, inputs, mask=None):
        """Keras's rule for elementwise merges: a step is valid where it is valid
        in any input; if some input has no mask, the output has none."""
        if mask is None:
            return None
        _check_masks(inputs, mask)
        if any(m is None for m in mask):
            return None
        out = mask[0]
        for m in mask[1:]:
            out = ops.not_equal(ops.maximum(out, m), 0.0)
        return out


def _check_masks(inputs, mask):
    if not isinstance(mask, (tuple, list)):
        raise ValueError(f"`mask` should be a list. Received: mask={mask}")
    if not isinstance(inputs, (tuple, list)):
        raise ValueError(f"`inputs` should be a list. Received: inputs={inputs}")
    if len(mask) != len(inputs):
        raise ValueError(
            "The lists `inputs` and `mask` should have the same length. "
            f"Received: inputs={inputs} of length {len(inputs)}, and mask={mask} of length {len(mask)}"
        )


def _mask_like(x, m):
    """Mask `m` of input `x` as floats for concatenation: all ones for no mask, and
    a mask of lower rank broadcast over `x`'s last axis."""
    if m is not None and ops.ndim(m) >= ops.ndim(x):
        return ops.cast(m, "float32")
    zeros = ops.where(x, 0.0, 0.0)  # zeros of x's shape, whatever its values (NaN too)
    if m is None:
        return ops.add(zeros, 1.0)
    return ops.add(zeros, ops.expand_dims(ops.cast(m, "float32"), -1))


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
    """The elementwise product of its inputs. As in Keras, masked entries of an
    input count as 1; when every input has a mask, entries masked in all of them
    are 0 and the output gets the union of the masks."""

    def _merge(self, xs):
        masks = [_broadcast_mask(x) for x in xs]
        if all(m is None for m in masks):
            return functools.reduce(ops.multiply, xs)
        out = out_mask = None
        for x, m in zip(xs, masks):
            if m is not None:
                x = ops.where(m, x, 1.0)
                out_mask = m if out_mask is None else ops.maximum(out_mask, m)
            out = x if out is None else ops.multiply(out, x)
        if all(m is not None for m in masks):
            out = ops.where(out_mask, out, 0.0)
            set_keras_mask(out, ops.greater(ops.max(out_mask, axis=-1), 0.0))
        return out


class Average(_Merge):
    """The elementwise mean of its inputs."""

    def _merge(self, xs):
        return ops.multiply(functools.reduce(ops.add, xs), 1.0 / len(xs))


class Maximum(_Merge):
    """The elementwise maximum of its inputs (masked entries left out, as in Keras)."""

    def _merge(self, xs):
        return _merge_skipping_masked(ops.maximum, xs)


class Minimum(_Merge):
    """The elementwise minimum of its inputs (masked entries left out, as in Keras)."""

    def _merge(self, xs):
        return _merge_skipping_masked(ops.minimum, xs)


def _broadcast_mask(x):
    """The mask attached to `x` as 0/1 floats of `x`'s shape, or None."""
    mask = get_keras_mask(x)
    if mask is None:
        return None
    return ops.add(ops.where(x, 0.0, 0.0), ops.expand_dims(ops.cast(mask, "float32"), -1))


def _merge_skipping_masked(op, xs):
    """Keras's merge for ops without an identity (max, min): an input's masked
    entries take the running result's value and the other way round, so they do
    not take part; with masks on every input, the output gets their union."""
    out = out_mask = None
    for x in xs:
        m = _broadcast_mask(x)
        if out is None:
            out, out_mask = x, m
            continue
        if m is not None:
            x = ops.where(m, x, out)
        if out_mask is not None:
            out = ops.where(out_mask, out, x)
        out_mask = ops.maximum(out_mask, m) if m is not None and out_mask is not None else None
        out = op(out, x)
    if out_mask is not None:
        set_keras_mask(out, ops.greater(ops.max(out_mask, axis=-1), 0.0))
    return out


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

    def compute_mask(self, inputs, mask=None):
        """Keras's rule: the inputs' masks (all True for an input without one)
        broadcast to the inputs' shapes, joined along `axis`, then reduced with
        `any` over the last axis."""
        if mask is None:
            return None
        _check_masks(inputs, mask)
        if all(m is None for m in mask):
            return None
        joined = ops.concatenate([_mask_like(x, m) for x, m in zip(inputs, mask)], axis=self.axis)
        return ops.greater(ops.max(joined, axis=-1), 0.0)

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

    def compute_mask(self, inputs, mask=None):
        # The contracted axes are gone, so no mask carries over (as in Keras).
        return None

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
