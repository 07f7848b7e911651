"""Numpy-like ops, as `keras.ops`.

Every op works three ways, by what it is given:
- on symbolic `KerasTensor`s (model building): records a node and infers the
  output shape and dtype, raising shape/dtype errors at once;
- on arrays, Python numbers or `Variable`s (eager): runs the Rust kernels at once
  and returns numpy arrays (float32 for float results, int32 for indices, bool for
  comparisons);
- inside a `GradientTape`: as eager, and recorded for differentiation.

Ops built from other ops (std, moments, stack, ...) are differentiable through
their parts.
"""

import builtins
import json
import math

import numpy as np

from pyfuncnet import _core, _symbolic, _tape, _tensor
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet._variable import Variable

_INT32 = np.iinfo(np.int32)


# ----------------------------------------------------------------------------
# Dispatch


_NDARRAY = np.ndarray
_FLOAT32 = np.dtype(np.float32)
_INT32_DTYPE = np.dtype(np.int32)


def _is_symbolic(values):
    return builtins.any(isinstance(v, KerasTensor) for v in values)


def _to_array(x, name):
    """An eager input as a contiguous float32 / int32 numpy array."""
    if isinstance(x, Variable):
        x = x.value
    if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.int32) and x.flags.c_contiguous:
        return x
    arr = np.asarray(x)
    kind = arr.dtype.kind
    if kind == "f" or kind == "b":
        return np.asarray(arr, dtype=np.float32, order="C")  # keeps 0-d (ascontiguousarray makes it 1-d)
    if kind in "iu":
        if arr.size and (arr.min() < _INT32.min or arr.max() > _INT32.max):
            raise OverflowError(f"{name}: integer values outside the int32 range")
        return np.asarray(arr, dtype=np.int32, order="C")
    raise TypeError(f"{name}: cannot convert a value of type {type(x).__name__} (dtype {arr.dtype}) to a tensor")


def _dtype_of(x):
    if isinstance(x, KerasTensor):
        return x.dtype
    if isinstance(x, Variable):
        return x.dtype
    if isinstance(x, (bool, np.bool_)):
        return "bool"
    if isinstance(x, (int, np.integer)):
        return "int32"
    if isinstance(x, (float, np.floating)):
        return "float32"
    arr = np.asarray(x)
    if arr.dtype.kind == "b":
        return "bool"
    if arr.dtype.kind in "iu":
        return "int32"
    return "float32"


def _run(op, attrs, inputs, label=None):
    """Applies a core op; returns the list of its outputs.

    `attrs` is a dict of JSON-like values (the core reads it directly), or a
    function from the input shapes to that dict.
    """
    arrays = inputs
    for x in inputs:
        # Exact float32 / int32 C-contiguous ndarrays (most eager inputs) go to the
        # core as they are; identity checks keep this test cheap.
        if not (type(x) is _NDARRAY and (x.dtype is _FLOAT32 or x.dtype is _INT32_DTYPE) and x.flags.c_contiguous):
            if _is_symbolic(inputs) or (_symbolic.building() and builtins.any(isinstance(v, Variable) for v in inputs)):
                # While a layer is called on symbolic tensors, ops on its
                # Variables alone (a kernel reshaped, say) read them by reference.
                return _symbolic.apply(op, attrs, inputs, label)
            arrays = [_to_array(v, op) for v in inputs]
            break
    a = attrs([list(arr.shape) for arr in arrays]) if callable(attrs) else attrs
    outs = _core.run_op(op, a, arrays)
    if _tape._active and _tensor._recording():
        # Results a tape can follow through Python operators (see _tensor).
        outs = [_tensor.track(o) for o in outs]
        _tape.record(op, a, inputs, arrays, outs)
    return outs


def _run1(op, attrs, *inputs):
    return _run(op, attrs, inputs)[0]


def _float(x):
    """`x` as a float tensor (bools and ints are cast, as Keras promotes them)."""
    if type(x) is _NDARRAY and x.dtype is _FLOAT32:
        return x
    if _dtype_of(x) == "float32" and not isinstance(x, (bool, int, np.integer)):
        return x
    if isinstance(x, KerasTensor) or isinstance(x, Variable):
        return cast(x, "float32")
    return np.asarray(x, dtype=np.float32)


def _int(x, name):
    """`x` as int32 indices."""
    if isinstance(x, KerasTensor):
        return x if x.dtype == "int32" else cast(x, "int32")
    arr = np.asarray(x.value if isinstance(x, Variable) else x)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.trunc(arr)):
            raise TypeError(f"{name}: indices must be integers, got non-integral float values")
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"{name}: indices must be integers, got dtype {arr.dtype}")
    return _to_array(arr.astype(np.int64), name)


def _shape(x):
    if type(x) is _NDARRAY:
        return x.shape
    if isinstance(x, (KerasTensor, Variable, np.ndarray)):
        return tuple(x.shape)
    return np.shape(x)


def _ndim(x):
    if type(x) is _NDARRAY:
        return x.ndim
    return len(_shape(x))


def _axis_list(axis):
    if axis is None:
        return None
    if isinstance(axis, (list, tuple)):
        return [int(a) for a in axis]
    return [int(axis)]


# ----------------------------------------------------------------------------
# Elementwise


def _unary(name, **attrs):
    def op(x):
        return _run(name, attrs, (_float(x),))[0]

    op.__name__ = name
    op.__doc__ = f"Elementwise `{name}`."
    return op


negative = _unary("negative")
exp = _unary("exp")
log = _unary("log")
sqrt = _unary("sqrt")
square = _unary("square")
abs = _unary("abs")  # noqa: A001 - numpy/keras name
absolute = abs
sign = _unary("sign")
reciprocal = _unary("reciprocal")
rsqrt = _unary("rsqrt")
sin = _unary("sin")
cos = _unary("cos")
floor = _unary("floor")
round = _unary("round")  # noqa: A001
log1p = _unary("log1p")
expm1 = _unary("expm1")
relu = _unary("relu")
relu6 = _unary("relu6")
sigmoid = _unary("sigmoid")
tanh = _unary("tanh")
selu = _unary("selu")
silu = _unary("silu")
swish = silu
softplus = _unary("softplus")
softsign = _unary("softsign")
hard_sigmoid = _unary("hard_sigmoid")
exponential = _unary("exponential")


def linear(x):
    """The identity activation."""
    return x


def elu(x, alpha=1.0):
    """Exponential linear unit: `x` if `x > 0` else `alpha * (exp(x) - 1)`."""
    return _run1("elu", {"alpha": float(alpha)}, _float(x))


def leaky_relu(x, negative_slope=0.2):
    """Leaky ReLU: `x` if `x > 0` else `negative_slope * x`."""
    return _run1("leaky_relu", {"alpha": float(negative_slope)}, _float(x))


def gelu(x, approximate=True):
    """Gaussian error linear unit (tanh approximation by default, as `keras.ops.gelu`)."""
    return _run1("gelu", {"approximate": bool(approximate)}, _float(x))


def softmax(x, axis=-1):
    """Softmax along `axis`."""
    return _run1("softmax", {"axis": int(axis)}, _float(x))


def log_softmax(x, axis=-1):
    """Log-softmax along `axis`."""
    return _run1("log_softmax", {"axis": int(axis)}, _float(x))


def clip(x, x_min, x_max):
    """Clips values to `[x_min, x_max]`."""
    return _run1("clip", {"min": float(x_min), "max": float(x_max)}, _float(x))


def _binary(name):
    def op(x1, x2):
        return _run(name, {}, (_float(x1), _float(x2)))[0]

    op.__name__ = name
    op.__doc__ = f"Elementwise `{name}` with NumPy broadcasting."
    return op


add = _binary("add")
subtract = _binary("subtract")
multiply = _binary("multiply")
divide = _binary("divide")
true_divide = divide
power = _binary("power")
maximum = _binary("maximum")
minimum = _binary("minimum")
greater = _binary("greater")
greater_equal = _binary("greater_equal")
less = _binary("less")
less_equal = _binary("less_equal")
equal = _binary("equal")
not_equal = _binary("not_equal")
mod = _binary("mod")
floor_divide = _binary("floor_divide")
squared_difference = _binary("squared_difference")


def where(condition, x1=None, x2=None):
    """`x1` where `condition` else `x2` (broadcast); with one argument, see numpy.nonzero (unsupported)."""
    if x1 is None or x2 is None:
        raise NotImplementedError("where(condition) without x1 and x2 is not supported")
    return _run1("where", {}, _float(condition), _float(x1), _float(x2))


def cast(x, dtype):
    """Converts to `dtype` ("float32", "int32", "int64" (computed as int32), "bool")."""
    dtype = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if isinstance(x, KerasTensor):
        if x.dtype == dtype:
            return x
        return _run1("cast", {"dtype": dtype}, x)
    # The input itself (not a converted copy), so a tape watching it sees the cast.
    return _run1("cast", {"dtype": dtype}, x)


# ----------------------------------------------------------------------------
# Reductions


def _reduce(name, x, axis, keepdims):
    attrs = {"keepdims": bool(keepdims)}
    axes = _axis_list(axis)
    if axes is not None:
        attrs["axis"] = axes
    return _run1(name, attrs, _float(x))


def sum(x, axis=None, keepdims=False):  # noqa: A001
    """Sum over `axis` (all axes when None)."""
    return _reduce("sum", x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    """Mean over `axis` (all axes when None)."""
    return _reduce("mean", x, axis, keepdims)


def max(x, axis=None, keepdims=False, initial=None):  # noqa: A001
    """Maximum over `axis`."""
    out = _reduce("max", x, axis, keepdims)
    return out if initial is None else maximum(out, initial)


def min(x, axis=None, keepdims=False, initial=None):  # noqa: A001
    """Minimum over `axis`."""
    out = _reduce("min", x, axis, keepdims)
    return out if initial is None else minimum(out, initial)


def prod(x, axis=None, keepdims=False):
    """Product over `axis`."""
    return _reduce("prod", x, axis, keepdims)


def var(x, axis=None, keepdims=False):
    """Population variance over `axis`."""
    return _reduce("var", x, axis, keepdims)


def std(x, axis=None, keepdims=False):
    """Population standard deviation over `axis`."""
    return sqrt(var(x, axis, keepdims))


def moments(x, axes, keepdims=False, synchronized=False):
    """(mean, variance) over `axes`."""
    return mean(x, axes, keepdims), var(x, axes, keepdims)


def _arg(name, x, axis, keepdims):
    x = _float(x)
    if axis is None:
        x = reshape(x, (-1,))
        axis = 0
    out = _run1(name, {"axis": int(axis), "keepdims": bool(keepdims)}, x)
    return out


def argmax(x, axis=None, keepdims=False):
    """Index of the maximum along `axis` (over the flattened array when None)."""
    return _arg("argmax", x, axis, keepdims)


def argmin(x, axis=None, keepdims=False):
    """Index of the minimum along `axis` (over the flattened array when None)."""
    return _arg("argmin", x, axis, keepdims)


# ----------------------------------------------------------------------------
# Linear algebra


# As compact JSON text, the key of the core's cache of built ops: a dict would first
# be converted to it on every call (0.9 us; a 64 x 64 x 64 product takes 5 us).
_MATMUL_ATTRS = {
    (ta, tb): json.dumps({"transpose_a": ta, "transpose_b": tb}, separators=(",", ":"))
    for ta in (False, True)
    for tb in (False, True)
}


def _gemm_operand(x):
    """`(array, transposed)` for a float32 ndarray of rank >= 2 that the GEMM reads
    as it is (C-contiguous) or as a transposed C-contiguous array; else None."""
    if type(x) is not _NDARRAY or x.dtype is not _FLOAT32 or x.ndim < 2:
        return None
    if x.flags.c_contiguous:
        return x, False
    # A transposed view (`w.T`) goes as its C-contiguous base with a transpose
    # flag: the GEMM reads it through strides, nothing is copied.
    base = np.swapaxes(x, -1, -2)
    return (base, True) if base.flags.c_contiguous else None


def matmul(x1, x2):
    """Matrix product with NumPy semantics (batch dims broadcast, 1-D operands promoted)."""
    if not _tape._active:
        # Fast path for the common eager call: two float32 matrices (or stacks);
        # anything else (a tape, 1-D operands, other dtypes) takes the general path.
        a, b = _gemm_operand(x1), _gemm_operand(x2)
        if a is not None and b is not None:
            return _core.run_op("matmul", _MATMUL_ATTRS[a[1], b[1]], [a[0], b[0]])[0]
    x1, x2 = _float(x1), _float(x2)
    n1, n2 = _ndim(x1), _ndim(x2)
    if n1 == 0 or n2 == 0:
        raise ValueError(f"matmul: operands must not be scalars, got shapes {_shape(x1)} and {_shape(x2)}")
    a = expand_dims(x1, 0) if n1 == 1 else x1
    b = expand_dims(x2, -1) if n2 == 1 else x2
    out = _run1("matmul", {}, a, b)
    if n1 == 1:
        out = squeeze(out, -2)
    if n2 == 1:
        out = squeeze(out, -1)
    return out


def dot(x1, x2):
    """`numpy.dot`: products of scalars, inner products of vectors, matrix products,
    and for N-D arrays a sum over the last axis of `x1` and the second-to-last of `x2`."""
    n1, n2 = _ndim(x1), _ndim(x2)
    if n1 == 0 or n2 == 0:
        return multiply(x1, x2)
    if n2 <= 2:
        return matmul(x1, x2)
    # N-D x2: move its contracted axis (-2) to the front and flatten the rest.
    s2 = _shape(x2)
    perm = [n2 - 2] + [i for i in range(n2) if i != n2 - 2]
    b = reshape(transpose(x2, perm), (s2[-2], -1))
    out = matmul(x1, b)
    rest = [d for i, d in enumerate(s2) if i != n2 - 2]
    lead = list(_shape(x1)[:-1])
    return reshape(out, tuple(-1 if d is None else d for d in lead + rest))


# ----------------------------------------------------------------------------
# Shapes


def _resolve_reshape(shape):
    return [-1 if d is None else int(d) for d in shape]


def reshape(x, newshape):
    """Gives `x` a new shape with the same number of elements (one -1 allowed)."""
    if isinstance(newshape, int):
        newshape = (newshape,)
    target = _resolve_reshape(newshape)
    return _run1("reshape", {"shape": target}, x if isinstance(x, KerasTensor) else _eager_value(x))


def _reshape_by(x, target_of):
    """Reshape to `target_of(concrete input shape)`: exact even when several
    dimensions are unknown at model-building time."""
    src = x if isinstance(x, KerasTensor) else _eager_value(x)
    return _run1("reshape", lambda shapes: {"shape": target_of(list(shapes[0]))}, src)


def _eager_value(x):
    return x if isinstance(x, (Variable, np.ndarray)) else np.asarray(x)


def transpose(x, axes=None):
    """Permutes the axes (reverses them when `axes` is None)."""
    n = _ndim(x)
    perm = list(range(n))[::-1] if axes is None else [int(a) % n if n else int(a) for a in axes]
    return _run1("transpose", {"perm": perm}, x if isinstance(x, KerasTensor) else _eager_value(x))


def expand_dims(x, axis):
    """Inserts size-1 axes at `axis` (an int or a tuple)."""
    axes = _axis_list(axis)
    out_rank = _ndim(x) + len(axes)
    norm = sorted(a % out_rank for a in axes)

    def target(shape):
        for a in norm:
            shape.insert(a, 1)
        return shape

    return _reshape_by(x, target)


def squeeze(x, axis=None):
    """Removes size-1 axes (all of them, or those in `axis`)."""
    shape = _shape(x)
    if axis is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    else:
        axes = [a % len(shape) for a in _axis_list(axis)]
        for a in axes:
            if shape[a] is not None and shape[a] != 1:
                raise ValueError(f"squeeze: cannot squeeze axis {a} of size {shape[a]} in shape {shape}")
    return _reshape_by(x, lambda s: [d for i, d in enumerate(s) if i not in axes])


def concatenate(xs, axis=0):
    """Joins tensors along an existing axis."""
    xs = list(xs)
    if not xs:
        raise ValueError("concatenate: needs at least one tensor")
    if builtins.any(_dtype_of(x) == "float32" for x in xs):
        xs = [_float(x) for x in xs]
    return _run("concatenate", {"axis": int(axis)}, xs)[0]


def stack(x, axis=0):
    """Joins tensors of one shape along a new axis."""
    x = list(x)
    return concatenate([expand_dims(t, axis) for t in x], axis=axis)


def split(x, indices_or_sections, axis=0):
    """Splits into equal sections (an int) or at the given indices (a list)."""
    shape = _shape(x)
    axis = int(axis) % len(shape)
    n = shape[axis]
    if n is None:
        raise ValueError("split: cannot split along an axis of unknown size")
    if isinstance(indices_or_sections, int):
        k = indices_or_sections
        if k <= 0 or n % k:
            raise ValueError(f"split: axis {axis} of size {n} cannot be split into {k} equal sections")
        sizes = [n // k] * k
    else:
        bounds = [0] + [builtins.min(builtins.max(int(i), 0), n) for i in indices_or_sections] + [n]
        sizes = [builtins.max(b - a, 0) for a, b in zip(bounds[:-1], bounds[1:])]
    return list(_run("split", {"axis": axis, "sizes": sizes}, [x if isinstance(x, KerasTensor) else _eager_value(x)]))


def take(x, indices, axis=None):
    """`numpy.take`: elements of `x` at `indices` along `axis` (flattened `x` when None).

    Negative indices count from the end, as in NumPy; any index outside `[-n, n)`
    raises `OutOfRangeError` naming its position and value.
    """
    if axis is None:
        x = reshape(x, (-1,))
        axis = 0
    idx = _int(indices, "take")
    if not isinstance(idx, KerasTensor):
        n = _shape(x)[int(axis)]
        if n is not None and idx.size and idx.min() < 0:
            idx = np.where((idx < 0) & (idx >= -n), idx + n, idx).astype(np.int32)
    return _run1("take", {"axis": int(axis)}, x if isinstance(x, KerasTensor) else _eager_value(x), idx)


def one_hot(x, num_classes, axis=-1, dtype=None):
    """One-hot encoding with a new axis of size `num_classes` (appended by default)."""
    out = _run1("one_hot", {"depth": int(num_classes)}, _int(x, "one_hot"))
    if axis != -1:
        n = _ndim(out)
        a = int(axis) % n
        perm = list(range(n - 1))
        perm.insert(a, n - 1)
        out = transpose(out, perm)
    if dtype is not None and dtype != "float32":
        out = cast(out, dtype)
    return out


def _getitem(x, key):
    """Basic NumPy indexing: ints, slices (positive steps), `...` and `None`."""
    if not isinstance(key, tuple):
        key = (key,)
    shape = _shape(x)
    n_real = builtins.sum(1 for k in key if k is not None and k is not Ellipsis)
    if n_real > len(shape):
        raise IndexError(f"too many indices ({n_real}) for a tensor of rank {len(shape)}")
    expanded = []
    for k in key:
        if k is Ellipsis:
            expanded.extend([slice(None)] * (len(shape) - n_real))
        else:
            expanded.append(k)
    if Ellipsis not in key:
        expanded.extend([slice(None)] * (len(shape) - n_real))
    # Per real axis: a slice, or an int index (an axis to drop).
    plan = [k for k in expanded if k is not None]

    def attrs(shapes):
        s = shapes[0]
        begin, step, size = [], [], []
        for d, k in zip(s, plan):
            if isinstance(k, slice):
                start, stop, stp = k.indices(d)
                if stp <= 0:
                    raise NotImplementedError("slicing with a negative step is not supported")
                begin.append(start)
                step.append(stp)
                size.append(builtins.max(0, math.ceil((stop - start) / stp)))
            else:
                i = int(k)
                if not -d <= i < d:
                    raise IndexError(f"index {i} is out of bounds for an axis of size {d}")
                begin.append(i % d)
                step.append(1)
                size.append(1)
        return {"begin": begin, "step": step, "shape": size}

    src = x if isinstance(x, KerasTensor) else _eager_value(x)
    out = _run1("slice", attrs, src)
    if not builtins.any(k is None or not isinstance(k, slice) for k in expanded):
        return out

    # Drop int-indexed axes and insert new axes for None.
    def target(sliced):
        final, real = [], iter(zip(sliced, plan))
        for k in expanded:
            if k is None:
                final.append(1)
            else:
                d, p = next(real)
                if isinstance(p, slice):
                    final.append(d)
        return final

    return _reshape_by(out, target)


def shape(x):
    """The shape as a tuple (None for unknown dimensions)."""
    return _shape(x)


def ndim(x):
    """The rank."""
    return _ndim(x)


def convert_to_tensor(x, dtype=None):
    """A tensor of `x` (float32 / int32 / bool): a numpy array whose Python
    operators a `GradientTape` records (as TensorFlow's `tf.constant`)."""
    arr = np.asarray(x.value if isinstance(x, Variable) else x)
    if dtype is not None:
        arr = arr.astype(dtype)
    elif arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    elif arr.dtype.kind in "iu":
        arr = arr.astype(np.int32)
    return _tensor.track(arr)


def convert_to_numpy(x):
    """A numpy array of `x`."""
    return np.asarray(x.value if isinstance(x, Variable) else x)


def zeros(shape, dtype="float32"):
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype="float32"):
    return np.ones(shape, dtype=dtype)


def zeros_like(x, dtype=None):
    return np.zeros(_shape(x), dtype=dtype or "float32")


def ones_like(x, dtype=None):
    return np.ones(_shape(x), dtype=dtype or "float32")


# ----------------------------------------------------------------------------
# Padding, broadcasting, convolution and pooling


def pad(x, pad_width, mode="constant", constant_values=None):
    """Pads with a constant: `pad_width` is one `(before, after)` pair per axis
    (or one pair, or one int, for every axis), as in NumPy."""
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported, got {mode!r}")
    n = _ndim(x)
    widths = np.asarray(pad_width, dtype=np.int64)
    widths = np.full((n, 2), int(widths)) if widths.ndim == 0 else np.broadcast_to(widths.reshape(-1, 2), (n, 2))
    if (widths < 0).any():
        raise ValueError(f"pad: widths must be non-negative, got {np.asarray(pad_width).tolist()}")
    attrs = {"before": widths[:, 0].tolist(), "after": widths[:, 1].tolist(), "value": float(constant_values or 0.0)}
    return _run1("pad", attrs, _float(x))


def broadcast_to(x, shape):
    """`x` repeated along axes of size 1 (and new leading axes) to `shape`."""
    target = [None if d is None else int(d) for d in shape]

    def attrs(shapes):
        # Unknown target dims (symbolic batch) take the input's size there.
        src = [1] * (len(target) - len(shapes[0])) + list(shapes[0])
        return {"shape": [s if d is None or d == -1 else d for d, s in zip(target, src)]}

    return _run1("broadcast_to", attrs, x if isinstance(x, KerasTensor) else _eager_value(x))


def _spatial_tuple(value, rank, name):
    """An int or a sequence as a list of `rank` positive ints."""
    values = [value] * rank if isinstance(value, (int, np.integer)) else list(value)
    if len(values) != rank or not builtins.all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(f"`{name}` must be a positive integer or a tuple of {rank} positive integers, got {value!r}")
    return [int(v) for v in values]


def _padding_name(padding, allowed=("valid", "same")):
    name = str(padding).lower()
    if name not in allowed:
        raise ValueError(f"`padding` must be one of {', '.join(repr(a) for a in allowed)}, got {padding!r}")
    return name


def _channels_first(data_format):
    fmt = (data_format or "channels_last").lower()
    if fmt not in ("channels_last", "channels_first"):
        raise ValueError(f"`data_format` must be 'channels_last' or 'channels_first', got {data_format!r}")
    return fmt == "channels_first"


def _to_channels_last(x, rank):
    return transpose(x, [0] + list(range(2, rank + 2)) + [1])


def _to_channels_first(x, rank):
    return transpose(x, [0, rank + 1] + list(range(1, rank + 1)))


def _spatial_rank(x, what):
    rank = _ndim(x) - 2
    if rank not in (1, 2, 3):
        raise ValueError(f"{what}: expected an input of rank 3, 4 or 5 (batch, 1 to 3 spatial axes, channels), got shape {_shape(x)}")
    return rank


def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """N-d convolution (1 to 3 spatial axes) of `inputs` by `kernel` of shape
    `(k..., in_channels / groups, filters)`; the groups follow from the channels."""
    rank = _spatial_rank(inputs, "conv")
    first = _channels_first(data_format)
    x = _to_channels_last(_float(inputs), rank) if first else _float(inputs)
    k_shape = _shape(kernel)
    channels = _shape(x)[-1]
    groups = 1
    if channels is not None and len(k_shape) == rank + 2 and k_shape[-2] and channels % k_shape[-2] == 0:
        groups = channels // k_shape[-2]
    attrs = {
        "strides": _spatial_tuple(strides, rank, "strides"),
        "dilation_rate": _spatial_tuple(dilation_rate, rank, "dilation_rate"),
        "padding": _padding_name(padding, ("valid", "same", "causal")),
        "groups": groups,
    }
    y = _run1("conv", attrs, x, _float(kernel))
    return _to_channels_first(y, rank) if first else y


def _pool(op, inputs, pool_size, strides, padding, data_format):
    rank = _spatial_rank(inputs, op)
    first = _channels_first(data_format)
    x = _to_channels_last(_float(inputs), rank) if first else _float(inputs)
    size = _spatial_tuple(pool_size, rank, "pool_size")
    attrs = {
        "pool_size": size,
        "strides": size if strides is None else _spatial_tuple(strides, rank, "strides"),
        "padding": _padding_name(padding),
    }
    y = _run1(op, attrs, x)
    return _to_channels_first(y, rank) if first else y


def max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """Max pooling over 1 to 3 spatial axes (strides default to the pool size)."""
    return _pool("max_pool", inputs, pool_size, strides, padding, data_format)


def average_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """Average pooling over 1 to 3 spatial axes; with 'same' padding a window's
    mean is over its taps inside the input."""
    return _pool("avg_pool", inputs, pool_size, strides, padding, data_format)


def conv_transpose(inputs, kernel, strides=1, padding="valid", output_padding=None, data_format=None, dilation_rate=1):
    """Transposed convolution (the adjoint of `conv`) with a kernel of shape
    `(k..., filters, in_channels)`; output lengths follow Keras."""
    rank = _spatial_rank(inputs, "conv_transpose")
    first = _channels_first(data_format)
    x = _to_channels_last(_float(inputs), rank) if first else _float(inputs)
    attrs = {
        "strides": _spatial_tuple(strides, rank, "strides"),
        "dilation_rate": _spatial_tuple(dilation_rate, rank, "dilation_rate"),
        "padding": _padding_name(padding),
    }
    if output_padding is not None:
        pads = [output_padding] * rank if isinstance(output_padding, (int, np.integer)) else list(output_padding)
        if len(pads) != rank or builtins.any(int(p) < 0 for p in pads):
            raise ValueError(f"`output_padding` must be a non-negative integer or a tuple of {rank}, got {output_padding!r}")
        attrs["output_padding"] = [int(p) for p in pads]
    y = _run1("conv_transpose", attrs, x, _float(kernel))
    return _to_channels_first(y, rank) if first else y


def depthwise_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """Each input channel convolved with its own `depth_multiplier` filters: kernel
    `(k..., in_channels, depth_multiplier)`, output channel `c * multiplier + m`."""
    k_shape = _shape(kernel)
    # The grouped convolution with one input channel per group has exactly this
    # kernel, read as (k..., 1, in_channels * multiplier).
    grouped = reshape(kernel, tuple(k_shape[:-2]) + (1, k_shape[-2] * k_shape[-1]))
    return conv(inputs, grouped, strides=strides, padding=padding, data_format=data_format, dilation_rate=dilation_rate)


def separable_conv(inputs, depthwise_kernel, pointwise_kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """A depthwise convolution followed by a pointwise (1x1) one."""
    x = depthwise_conv(inputs, depthwise_kernel, strides=strides, padding=padding, data_format=data_format, dilation_rate=dilation_rate)
    return conv(x, pointwise_kernel, strides=1, padding="valid", data_format=data_format)


def batch_normalization(x, mean, variance, axis, offset=None, scale=None, epsilon=1e-3):
    """`(x - mean) / sqrt(variance + epsilon) * scale + offset`, the statistics and
    parameters given along `axis` (computed as Keras does: `x * inv + (offset -
    mean * inv)`)."""
    rank = _ndim(x)
    axis = int(axis) % rank
    shape = [1] * rank
    shape[axis] = -1

    def along(v):
        return reshape(v, shape) if _ndim(v) == 1 and rank > 1 else v

    inv = rsqrt(add(along(variance), epsilon))
    if scale is not None:
        inv = multiply(inv, along(scale))
    res = multiply(negative(along(mean)), inv)
    if offset is not None:
        res = add(res, along(offset))
    return add(multiply(x, inv), res)


def _training_switch(in_training, otherwise, mode="training"):
    """`in_training` in compiled training steps, `otherwise` everywhere else;
    `mode` may be a function returning "training", "always" or "never", called
    when a step is compiled."""
    attrs = (lambda shapes: {"mode": mode()}) if callable(mode) else {"mode": mode}
    return _run1("training_switch", attrs, _float(in_training), _float(otherwise))
