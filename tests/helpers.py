"""Test helpers: input strategies and one checker per level.

- `check_op`: the eager forward of an op against a float64 NumPy reference.
- `check_grad`: `GradientTape` gradients of `sum(fn(x) * w)` against central finite
  differences of the float64 reference.
- `check_symbolic`: the op on `KerasTensor`s (None batch dim) infers the shape and
  dtype the reference implies, and `Function(inputs, out)` reproduces it on arrays.

Every reference is independent of pyfuncnet: NumPy in float64 (or `math`).
"""

import math

import numpy as np
from hypothesis import strategies as st

from pyfuncnet import GradientTape, Variable, ops
from pyfuncnet._function import Function
from pyfuncnet._symbolic import KerasTensor

# Sizes that exercise empty tensors, singletons, odd sizes and the edges of SIMD
# widths (8 float32 lanes per AVX2 register, tiles of 16 and 32).
DIMS = (0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33)

# Memory layouts of the arrays handed to ops: C-contiguous, a transposed view, and a
# view taking every other element of the last axis.
LAYOUTS = ("c", "t", "s")

# Batch sizes used to tell a batch-dependent output dimension from a static one:
# larger than any slice bound the tests use (|bound| <= 35), and far enough apart that
# strided slices (steps <= 5) give different sizes.
_BATCHES = (101, 163)


# ----------------------------------------------------------------------------
# Inputs


@st.composite
def shapes(draw, min_dims=1, max_dims=3, min_side=0, max_size=2048, dims=DIMS):
    """A shape with dims from `dims` and at most `max_size` elements."""
    n = draw(st.integers(min_dims, max_dims))
    shape, size = [], 1
    for _ in range(n):
        allowed = [d for d in dims if d >= min_side and (size == 0 or d * size <= max_size)]
        if not allowed:
            break
        d = draw(st.sampled_from(allowed))
        shape.append(d)
        size *= d
    return tuple(shape)


def _values(rng, shape, low, high, avoid, gap, distinct, grid):
    n = int(np.prod(shape, dtype=np.int64))
    if grid is not None:
        # Values near `offset + k * step`: two arrays with offsets differing by half a
        # step never come closer than 0.3 steps (no ties for maximum / minimum).
        step, offset = grid
        k = np.round(rng.uniform(low, high, n) / step)
        return (k * step + offset + rng.uniform(-0.1, 0.1, n) * step).reshape(shape)
    if distinct:
        # A shuffled ladder with steps of 0.05 plus noise far below the step: all
        # values differ by at least 0.04.
        x = (rng.permutation(n) - n / 2) * 0.05 + rng.uniform(-0.005, 0.005, n)
        return x.reshape(shape)
    x = rng.uniform(low, high, n)
    for p in avoid:
        near = np.abs(x - p) < gap
        x = np.where(near, p + np.where(x >= p, gap, -gap) + (x - p), x)
    return x.reshape(shape)


def make_array(
    shape, layout="c", seed=0, low=-2.0, high=2.0, avoid=(), gap=0.0, distinct=False, grid=None, dtype=np.float32
):
    """A float32 array of `shape` in the given layout ("c", "t" transposed view,
    "s" strided view). Values are uniform in [low, high]; values within `gap` of a
    point in `avoid` are pushed `gap` away; `distinct` gives well separated values;
    `grid=(step, offset)` puts values near `offset + k * step`."""
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    if layout == "t" and len(shape) >= 2:
        return _values(rng, shape[::-1], low, high, avoid, gap, distinct, grid).astype(dtype).T
    if layout == "s" and len(shape) >= 1:
        wide = shape[:-1] + (2 * shape[-1],)
        return _values(rng, wide, low, high, avoid, gap, distinct, grid).astype(dtype)[..., ::2]
    return _values(rng, shape, low, high, avoid, gap, distinct, grid).astype(dtype)


@st.composite
def arrays(draw, shape=None, **kwargs):
    """A float32 array in a random layout; `shape` is a tuple or a shape strategy.
    Keyword arguments of `shapes` pick the shape, those of `make_array` the values."""
    value_keys = ("low", "high", "avoid", "gap", "distinct", "grid", "dtype")
    value_kwargs = {k: kwargs.pop(k) for k in value_keys if k in kwargs}
    if shape is None:
        shape = draw(shapes(**kwargs))
    elif not isinstance(shape, tuple):
        shape = draw(shape)
    layout = draw(st.sampled_from(LAYOUTS))
    seed = draw(st.integers(0, 2**32 - 1))
    return make_array(shape, layout, seed, **value_kwargs)


@st.composite
def broadcast_shapes(draw, n=2, **kwargs):
    """`n` shapes that broadcast together: each drops some leading dims of a base shape
    and sets some of the rest to 1."""
    base = draw(shapes(**kwargs))
    out = []
    for _ in range(n):
        drop = draw(st.integers(0, len(base)))
        shape = [1 if draw(st.booleans()) and draw(st.booleans()) else d for d in base[drop:]]
        out.append(tuple(shape))
    # At least one operand keeps the full rank and every dimension.
    out[draw(st.integers(0, n - 1))] = base
    return out


@st.composite
def axes(draw, ndim, allow_none=True):
    """An axis argument for rank `ndim`: None, an int (maybe negative) or a tuple."""
    choices = [st.integers(-ndim, ndim - 1)] if ndim else []
    if ndim:
        choices.append(
            st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(
                lambda a: tuple(sorted(a))
            )
        )
    if allow_none or not ndim:
        choices.append(st.none())
    return draw(st.one_of(*choices))


# ----------------------------------------------------------------------------
# Checks


def same_call(name, *args, **kwargs):
    """`(ops.<name>, numpy.<name>)`, each called as `f(x, *args, **kwargs)`: an op and its
    reference when NumPy has the same function and arguments."""
    op, ref = getattr(ops, name), getattr(np, name)
    return (lambda x: op(x, *args, **kwargs)), (lambda x: ref(x, *args, **kwargs))


def _as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _f64(a):
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype.kind == "f" else a


def _expected_dtype(ref_out):
    kind = np.asarray(ref_out).dtype.kind
    return {"f": "float32", "i": "int32", "u": "int32", "b": "bool"}[kind]


def _tol(tol, arrays64):
    return tol(*arrays64) if callable(tol) else tol


def _compare(got, want, rtol, atol, what):
    got_l, want_l = _as_list(got), _as_list(want)
    assert len(got_l) == len(want_l), f"{what}: {len(got_l)} outputs, expected {len(want_l)}"
    for k, (g, w) in enumerate(zip(got_l, want_l)):
        w = np.asarray(w)
        assert isinstance(g, np.ndarray), f"{what} output {k}: got {type(g).__name__}, expected a numpy array"
        assert g.shape == w.shape, f"{what} output {k}: shape {g.shape}, expected {w.shape}"
        assert str(g.dtype) == _expected_dtype(w), f"{what} output {k}: dtype {g.dtype}, expected {_expected_dtype(w)}"
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g.astype(np.float64), w, rtol=rtol, atol=atol, err_msg=f"{what} output {k}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{what} output {k}")


def check_op(fn, ref, arrays, *, rtol=1e-5, atol=1e-6, wrap=False):
    """Eager `fn(*arrays)` equals `ref(*arrays in float64)` within tolerance.

    Args:
        fn: the op under test, called with the arrays (as `Variable`s if `wrap`).
        ref: the NumPy reference, called with float64 copies (int arrays as they are).
        arrays: the inputs (any layout).
        rtol, atol: tolerances; `atol` may be a callable of the float64 inputs.
        wrap: pass float inputs as `Variable`s (for `x[...]`, which arrays do natively).

    Also checks that the inputs are not modified.
    """
    before = [np.array(a, copy=True) for a in arrays]
    x64 = [_f64(a) for a in arrays]
    inputs = [Variable(a) if wrap and a.dtype.kind == "f" else a for a in arrays]
    got = fn(*inputs)
    want = ref(*x64)
    _compare(got, want, rtol, _tol(atol, x64), "eager")
    for k, (a, b) in enumerate(zip(arrays, before)):
        np.testing.assert_array_equal(a, b, err_msg=f"input {k} was modified")
    return got


def _loss64(ref, x64, ws):
    return sum(float(np.sum(np.asarray(o, dtype=np.float64) * w)) for o, w in zip(_as_list(ref(*x64)), ws))


def finite_differences(ref, x64, ws, i, step=1e-3):
    """Central differences of `sum(ref(x) * w)` with respect to input `i`."""
    x = x64[i]
    grad = np.zeros(x.shape)
    for j in np.ndindex(*x.shape):
        h = step * max(abs(float(x[j])), 0.1)
        xs = list(x64)
        plus, minus = x.copy(), x.copy()
        plus[j] += h
        minus[j] -= h
        xs[i] = plus
        f_plus = _loss64(ref, xs, ws)
        xs[i] = minus
        f_minus = _loss64(ref, xs, ws)
        grad[j] = (f_plus - f_minus) / (2 * h)
    return grad


def check_grad(fn, ref, arrays, *, rtol=2e-3, atol=2e-3, wrap=False, seed=0, step=1e-3):
    """`GradientTape` gradients of `sum(fn(x) * w)` equal central finite differences of
    `sum(ref(x) * w)` (float64) for every float input.

    Args:
        fn: the op under test.
        ref: its NumPy reference (float64).
        arrays: the inputs; float ones are differentiated.
        wrap: pass float inputs as trainable `Variable`s (watched automatically)
            instead of arrays watched with `tape.watch`.
        seed: seeds the fixed random weights `w` (one per output element).
    """
    rng = np.random.default_rng(seed)
    x64 = [_f64(a) for a in arrays]
    ws = [rng.uniform(-1.0, 1.0, np.shape(o)) for o in _as_list(ref(*x64))]
    sources = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    inputs = [Variable(a) if wrap and i in sources else a for i, a in enumerate(arrays)]
    with GradientTape() as tape:
        if not wrap:
            for i in sources:
                tape.watch(inputs[i])
        outs = _as_list(fn(*inputs))
        loss = None
        for o, w in zip(outs, ws):
            term = ops.sum(ops.multiply(o, w.astype(np.float32)))
            loss = term if loss is None else ops.add(loss, term)
    grads = tape.gradient(loss, [inputs[i] for i in sources])
    assert isinstance(grads, list) and len(grads) == len(sources)
    for i, g in zip(sources, grads):
        fd = finite_differences(ref, x64, ws, i, step)
        assert g is not None, f"gradient of input {i} is None"
        assert isinstance(g, np.ndarray) and g.dtype == np.float32, f"gradient of input {i}: {type(g)}"
        assert g.shape == arrays[i].shape, f"gradient of input {i}: shape {g.shape}, expected {arrays[i].shape}"
        np.testing.assert_allclose(g.astype(np.float64), fd, rtol=rtol, atol=atol, err_msg=f"gradient of input {i}")


def _default_dynamic(arrays):
    """Which inputs get a None batch dim: those of the highest rank, except the ones
    that broadcast along axis 0 (size 1) against a larger one."""
    top = max((a.ndim for a in arrays), default=0)
    if top == 0:
        return [False] * len(arrays)
    firsts = [a.shape[0] for a in arrays if a.ndim == top]
    broadcast = any(f != 1 for f in firsts)
    return [a.ndim == top and (not broadcast or a.shape[0] != 1) for a in arrays]


def _dtype_name(a):
    return {"f": "float32", "i": "int32", "u": "int32", "b": "bool"}[a.dtype.kind]


def _expected_symbolic(ref, arrays, dynamic):
    """Output (shape, dtype) of `ref` with None for dims that change with the batch."""
    results = []
    for b in _BATCHES:
        resized = [np.resize(_f64(a), (b,) + a.shape[1:]) if d else _f64(a) for a, d in zip(arrays, dynamic)]
        with np.errstate(all="ignore"):
            results.append([np.asarray(o) for o in _as_list(ref(*resized))])
    out = []
    for o1, o2 in zip(*results):
        assert o1.ndim == o2.ndim
        shape = tuple(d1 if d1 == d2 else None for d1, d2 in zip(o1.shape, o2.shape))
        out.append((shape, _expected_dtype(o1)))
    return out


def check_symbolic(fn, ref, arrays, *, dynamic=None, rtol=1e-5, atol=1e-6, wrap=False):
    """`fn` on `KerasTensor`s infers the shapes/dtypes `ref` implies, and the compiled
    `Function` equals the reference and the eager result on `arrays`.

    Args:
        dynamic: per input, whether its first dim is None (default: see
            `_default_dynamic`).
        wrap: the eager run passes float inputs as `Variable`s.
    """
    if dynamic is None:
        dynamic = _default_dynamic(arrays)
    tensors = [
        KerasTensor(((None,) + a.shape[1:]) if d else a.shape, dtype=_dtype_name(a)) for a, d in zip(arrays, dynamic)
    ]
    out = fn(*tensors)
    outs = _as_list(out)
    expected = _expected_symbolic(ref, arrays, dynamic)
    assert len(outs) == len(expected)
    for k, (o, (shape, dtype)) in enumerate(zip(outs, expected)):
        assert isinstance(o, KerasTensor), f"output {k}: got {type(o).__name__}, expected a KerasTensor"
        assert o.shape == shape, f"output {k}: inferred shape {o.shape}, expected {shape}"
        assert o.dtype == dtype, f"output {k}: inferred dtype {o.dtype}, expected {dtype}"
    compiled = Function(tensors, outs)(*arrays)
    x64 = [_f64(a) for a in arrays]
    _compare(compiled, _as_list(ref(*x64)), rtol, _tol(atol, x64), "compiled")
    inputs = [Variable(a) if wrap and a.dtype.kind == "f" else a for a in arrays]
    eager = _as_list(fn(*inputs))
    for k, (c, e) in enumerate(zip(compiled, eager)):
        np.testing.assert_allclose(
            np.asarray(c, np.float64), np.asarray(e, np.float64), rtol=1e-6, atol=1e-6, err_msg=f"compiled vs eager {k}"
        )


# ----------------------------------------------------------------------------
# References not in NumPy


def gelu_exact(x):
    """x * Phi(x) with the normal CDF from `math.erf`."""
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    """The tanh approximation of GELU (keras.ops.gelu(approximate=True))."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def softmax_ref(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax_ref(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def selu_ref(x):
    return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))


def elu_ref(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def sigmoid_ref(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softplus_ref(x):
    return np.logaddexp(0.0, x)


def hard_sigmoid_ref(x):
    """Keras 3: relu6(x + 3) / 6."""
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


# ----------------------------------------------------------------------------
# Elementwise op tables shared by the eager, gradient and symbolic tests:
# name -> (op, float64 reference, value options keeping inputs in the domain and
# away from kinks, so finite differences are meaningful).

_KINK0 = {"avoid": (0.0,), "gap": 0.1}
# The NumPy softmax references need a non-empty class axis.
_SOFTMAX_VALUES = {"low": -5.0, "high": 5.0, "min_side": 1, "min_dims": 1}

UNARY = {
    "negative": (ops.negative, np.negative, {}),
    "square": (ops.square, np.square, {}),
    "sqrt": (ops.sqrt, np.sqrt, {"low": 0.05, "high": 4.0}),
    "exp": (ops.exp, np.exp, {"low": -5.0, "high": 5.0}),
    "log": (ops.log, np.log, {"low": 0.05, "high": 5.0}),
    "abs": (ops.abs, np.abs, _KINK0),
    "sign": (ops.sign, np.sign, _KINK0),
    "relu": (ops.relu, lambda x: np.maximum(x, 0.0), _KINK0),
    "sigmoid": (ops.sigmoid, sigmoid_ref, {"low": -8.0, "high": 8.0}),
    "tanh": (ops.tanh, np.tanh, {"low": -4.0, "high": 4.0}),
    "softplus": (ops.softplus, softplus_ref, {"low": -8.0, "high": 8.0}),
    "softsign": (ops.softsign, lambda x: x / (1.0 + np.abs(x)), _KINK0),
    "elu": (ops.elu, elu_ref, _KINK0),
    "elu_alpha": (lambda x: ops.elu(x, alpha=0.5), lambda x: elu_ref(x, 0.5), _KINK0),
    "selu": (ops.selu, selu_ref, _KINK0),
    "gelu_tanh": (ops.gelu, gelu_tanh, {"low": -4.0, "high": 4.0}),
    "gelu_tanh_explicit": (lambda x: ops.gelu(x, approximate=True), gelu_tanh, {"low": -4.0, "high": 4.0}),
    "gelu_exact": (lambda x: ops.gelu(x, approximate=False), gelu_exact, {"low": -4.0, "high": 4.0}),
    "silu": (ops.silu, lambda x: x * sigmoid_ref(x), {"low": -6.0, "high": 6.0}),
    "swish": (ops.swish, lambda x: x * sigmoid_ref(x), {"low": -6.0, "high": 6.0}),
    "leaky_relu": (ops.leaky_relu, lambda x: np.where(x > 0, x, 0.2 * x), _KINK0),
    "leaky_relu_slope": (
        lambda x: ops.leaky_relu(x, negative_slope=0.05),
        lambda x: np.where(x > 0, x, 0.05 * x),
        _KINK0,
    ),
    "hard_sigmoid": (ops.hard_sigmoid, hard_sigmoid_ref, {"low": -5.0, "high": 5.0, "avoid": (-3.0, 3.0), "gap": 0.1}),
    "exponential": (ops.exponential, np.exp, {"low": -5.0, "high": 5.0}),
    "linear": (ops.linear, lambda x: x, {}),
    "clip": (
        lambda x: ops.clip(x, -0.5, 0.75),
        lambda x: np.clip(x, -0.5, 0.75),
        {"avoid": (-0.5, 0.75), "gap": 0.05},
    ),
    "cast_float32": (lambda x: ops.cast(x, "float32"), lambda x: x, {}),
    "softmax": (ops.softmax, softmax_ref, _SOFTMAX_VALUES),
    "softmax_axis0": (lambda x: ops.softmax(x, axis=0), lambda x: softmax_ref(x, 0), _SOFTMAX_VALUES),
    "log_softmax": (ops.log_softmax, log_softmax_ref, _SOFTMAX_VALUES),
    "log_softmax_axis0": (
        lambda x: ops.log_softmax(x, axis=0),
        lambda x: log_softmax_ref(x, 0),
        _SOFTMAX_VALUES,
    ),
}

UNARY_NAMES = sorted(UNARY)

BINARY = {
    "add": (ops.add, np.add, {}, {}),
    "subtract": (ops.subtract, np.subtract, {}, {}),
    "multiply": (ops.multiply, np.multiply, {}, {}),
    "divide": (ops.divide, np.divide, {}, {"avoid": (0.0,), "gap": 0.25}),
    "power": (ops.power, np.power, {"low": 0.2, "high": 3.0}, {"low": -2.0, "high": 2.0}),
    "maximum": (ops.maximum, np.maximum, {"grid": (0.2, 0.0)}, {"grid": (0.2, 0.1)}),
    "minimum": (ops.minimum, np.minimum, {"grid": (0.2, 0.0)}, {"grid": (0.2, 0.1)}),
}

BINARY_NAMES = sorted(BINARY)


@st.composite
def indices(draw, low, high, shape):
    """int32 indices uniform in [low, high) of `shape` (a tuple or a shape strategy)."""
    if not isinstance(shape, tuple):
        shape = draw(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.integers(low, high, shape).astype(np.int32)


def split_specs(n, bound=0):
    """`indices_or_sections` for splitting an axis of size `n`: a number of equal
    sections, or sorted split points in [0, n + bound]."""
    sections = [k for k in range(1, 5) if n % k == 0] if n else [1, 2, 3]
    points = st.lists(st.integers(0, n + bound), max_size=4).map(sorted)
    return st.one_of(st.sampled_from(sections), points)


@st.composite
def index_keys(draw, shape):
    """A basic NumPy index for `shape`: ints (maybe negative), slices with positive
    steps and out-of-range bounds, `None` and at most one `...`."""
    parts = []
    for d in shape:
        if d > 0 and draw(st.integers(0, 3)) == 0:
            parts.append(draw(st.integers(-d, d - 1)))
        else:
            bound = st.one_of(st.none(), st.integers(-d - 2, d + 2))
            parts.append(slice(draw(bound), draw(bound), draw(st.sampled_from([None, 1, 2, 3]))))
    for _ in range(draw(st.integers(0, 2))):
        parts.insert(draw(st.integers(0, len(parts))), None)
    if draw(st.booleans()):
        i = draw(st.integers(0, len(parts)))
        j = draw(st.integers(i, len(parts)))
        parts[i:j] = [Ellipsis]
    if len(parts) == 1 and draw(st.booleans()):
        return parts[0]
    return tuple(parts)


def numbered(store, prefix):
    """`store[f"{prefix}0"]`, `store[f"{prefix}1"]`, ... while present (the
    reference NPZ files number each case's weights, outputs and gradients)."""
    out = []
    while f"{prefix}{len(out)}" in store:
        out.append(store[f"{prefix}{len(out)}"])
    return out


def assert_close_to_reference(got, want, what):
    """Within 2e-6 of the reference's largest magnitude (at least 1): Keras's
    float32 results against pyfuncnet's."""
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-6 * scale, err_msg=what)
