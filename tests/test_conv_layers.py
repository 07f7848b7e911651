"""Convolution, pooling and BatchNormalization layers against float64 NumPy references.

Every reference here is written from the rules Keras documents (and that
tests/reference/README.md records from real Keras), independently of pyfuncnet:

- convolution is cross-correlation over an explicitly padded input; 'same' follows
  TensorFlow (`out = ceil(n / s)`, total padding
  `max((out - 1) * s + (k - 1) * d + 1 - n, 0)`, `total // 2` before, the rest after);
  'causal' pads `(k - 1) * d` before only; groups split the channels into contiguous
  blocks;
- the transposed convolution is the adjoint: each input position scatters itself times
  the kernel into the full output (length `(n - 1) * s + K`, `K = (k - 1) * d + 1`),
  read from Keras's offset and cut or zero-extended to Keras's length;
- depthwise: output channel `c * multiplier + m`; separable: depthwise, then 1x1;
- max pooling ignores the padding; average pooling 'same' divides by the number of real
  elements in each window;
- BatchNormalization in training uses the batch mean and the biased batch variance and
  moves the moving statistics by `momentum`; at inference it uses the moving ones.

Forward results are checked over hypothesis grids (rank, kernel, strides, padding,
dilation, groups, channels_first, odd and tiny sizes), eagerly and in a compiled model;
gradients (GradientTape and a compiled SGD step) against central finite differences of
the references; bad configurations against the error messages; and a conv model's
training step for bitwise identity across thread counts.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pyfuncnet as keras
from helpers import finite_differences
from pyfuncnet import GradientTape, config, layers, ops

# ----------------------------------------------------------------------------
# References (float64, channels_last: (batch, *spatial, channels))


def same_padding(n, k, s, d=1):
    """TensorFlow's 'same' padding of one axis: (before, after)."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def pad_input(x, kernel_size, strides, dilation, padding, value=0.0):
    """`x` padded on its spatial axes as `padding` asks."""
    widths = [(0, 0)]
    for n, k, s, d in zip(x.shape[1:-1], kernel_size, strides, dilation):
        if padding == "valid":
            widths.append((0, 0))
        elif padding == "same":
            widths.append(same_padding(n, k, s, d))
        elif padding == "causal":
            widths.append(((k - 1) * d, 0))
        else:
            raise AssertionError(padding)
    widths.append((0, 0))
    return np.pad(x, widths, constant_values=value)


def taps(xp, kernel_size, strides, dilation):
    """For each kernel position `tap`, the input values it meets at every output
    position: a strided view of the padded input of shape (batch, *out, channels)."""
    out = [(n - (k - 1) * d - 1) // s + 1 for n, k, s, d in zip(xp.shape[1:-1], kernel_size, strides, dilation)]
    for tap in np.ndindex(*kernel_size):
        index = tuple(slice(t * d, t * d + (o - 1) * s + 1, s) for t, o, s, d in zip(tap, out, strides, dilation))
        yield tap, xp[(slice(None),) + index + (slice(None),)]


def activate(y, activation):
    return np.maximum(y, 0.0) if activation == "relu" else y


def conv_ref(x, kernel, bias=None, strides=1, padding="valid", dilation=1, groups=1, activation=None):
    """Grouped N-d cross-correlation; kernel (*k, in / groups, filters)."""
    rank = x.ndim - 2
    ksize = kernel.shape[:rank]
    strides, dilation = _tuple(strides, rank), _tuple(dilation, rank)
    per_group_in, filters = kernel.shape[-2:]
    per_group_out = filters // groups
    assert x.shape[-1] == per_group_in * groups
    out = 0.0
    for tap, window in taps(pad_input(x, ksize, strides, dilation, padding), ksize, strides, dilation):
        w = kernel[tap]
        blocks = [
            window[..., g * per_group_in : (g + 1) * per_group_in] @ w[:, g * per_group_out : (g + 1) * per_group_out]
            for g in range(groups)
        ]
        out = out + np.concatenate(blocks, axis=-1)
    if bias is not None:
        out = out + bias
    return activate(out, activation)


def depthwise_ref(x, kernel, bias=None, strides=1, padding="valid", dilation=1, activation=None):
    """Each channel c convolved with kernel[..., c, m] into output channel c * M + m."""
    rank = x.ndim - 2
    ksize = kernel.shape[:rank]
    strides, dilation = _tuple(strides, rank), _tuple(dilation, rank)
    channels, multiplier = kernel.shape[-2:]
    out = 0.0
    for tap, window in taps(pad_input(x, ksize, strides, dilation, padding), ksize, strides, dilation):
        term = window[..., :, None] * kernel[tap]
        out = out + term.reshape(term.shape[:-2] + (channels * multiplier,))
    if bias is not None:
        out = out + bias
    return activate(out, activation)


def separable_ref(x, depthwise, pointwise, bias=None, strides=1, padding="valid", dilation=1, activation=None):
    """Depthwise (no bias), then the 1x1 pointwise kernel, then the bias."""
    rank = x.ndim - 2
    y = depthwise_ref(x, depthwise, None, strides, padding, dilation)
    y = y @ pointwise.reshape(pointwise.shape[rank:])
    if bias is not None:
        y = y + bias
    return activate(y, activation)


def transpose_length_and_offset(n, k, s, d, padding, output_padding):
    """Keras's output length of a transposed convolution along one axis, and the
    offset in the full (adjoint) result where it starts."""
    extent = (k - 1) * d + 1
    if padding == "valid":
        pad = max(extent, s) - extent if output_padding is None else output_padding
        return (n - 1) * s + extent + pad, 0
    if output_padding is None:
        length, p = n * s, s + extent - 2
    else:
        length, p = (n - 1) * s + extent % 2 + output_padding, extent + extent % 2 - 2 + output_padding
    return length, extent - 1 - min(math.ceil(p / 2), extent - 1)


def conv_transpose_ref(x, kernel, bias=None, strides=1, padding="valid", output_padding=None, dilation=1, activation=None):
    """The adjoint of the convolution: input position i scatters x[i] @ kernel[t].T to
    full-output position i * s + t * d; kernel (*k, filters, in)."""
    rank = x.ndim - 2
    ksize = kernel.shape[:rank]
    strides, dilation = _tuple(strides, rank), _tuple(dilation, rank)
    pads = (None,) * rank if output_padding is None else _tuple(output_padding, rank)
    n = x.shape[1:-1]
    filters = kernel.shape[-2]
    full_shape = tuple((ni - 1) * s + (k - 1) * d + 1 for ni, k, s, d in zip(n, ksize, strides, dilation))
    full = np.zeros((x.shape[0],) + full_shape + (filters,))
    for tap in np.ndindex(*ksize):
        index = tuple(slice(t * d, t * d + (ni - 1) * s + 1, s) for t, ni, s, d in zip(tap, n, strides, dilation))
        full[(slice(None),) + index + (slice(None),)] += x @ kernel[tap].T
    lengths, src, dst = [], [], []
    for ni, k, s, d, p, f in zip(n, ksize, strides, dilation, pads, full_shape):
        length, offset = transpose_length_and_offset(ni, k, s, d, padding, p)
        take = max(min(length, f - offset), 0)
        lengths.append(length)
        src.append(slice(offset, offset + take))
        dst.append(slice(0, take))
    out = np.zeros((x.shape[0],) + tuple(lengths) + (filters,))
    out[(slice(None),) + tuple(dst) + (slice(None),)] = full[(slice(None),) + tuple(src) + (slice(None),)]
    if bias is not None:
        out = out + bias
    return activate(out, activation)


def max_pool_ref(x, pool_size, strides=None, padding="valid"):
    rank = x.ndim - 2
    pool_size = _tuple(pool_size, rank)
    strides = pool_size if strides is None else _tuple(strides, rank)
    ones = (1,) * rank
    out = -np.inf
    for _, window in taps(pad_input(x, pool_size, strides, ones, padding, -np.inf), pool_size, strides, ones):
        out = np.maximum(out, window)
    return out


def average_pool_ref(x, pool_size, strides=None, padding="valid"):
    """Window sums divided by the number of real (unpadded) elements in the window."""
    rank = x.ndim - 2
    pool_size = _tuple(pool_size, rank)
    strides = pool_size if strides is None else _tuple(strides, rank)
    ones = (1,) * rank
    real = np.ones((1,) + x.shape[1:-1] + (1,))
    total, count = 0.0, 0.0
    padded_x = pad_input(x, pool_size, strides, ones, padding)
    padded_real = pad_input(real, pool_size, strides, ones, padding)
    for (_, wx), (_, wr) in zip(taps(padded_x, pool_size, strides, ones), taps(padded_real, pool_size, strides, ones)):
        total, count = total + wx, count + wr
    return total / count


def batch_norm_ref(x, axis, gamma, beta, mean, variance, epsilon=1e-3):
    shape = [1] * x.ndim
    shape[axis] = -1
    y = (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + epsilon)
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


def batch_stats(x, axis):
    """Batch mean and biased variance over every axis but `axis`."""
    axes = tuple(a for a in range(x.ndim) if a != axis)
    return x.mean(axis=axes), x.var(axis=axes)


def _tuple(value, rank):
    return (value,) * rank if isinstance(value, int) else tuple(value)


def to_first(x):
    """channels_last -> channels_first."""
    return np.moveaxis(x, -1, 1)


def to_last(x):
    return np.moveaxis(x, 1, -1)


# ----------------------------------------------------------------------------
# Comparison helpers


def assert_matches(got, want, what, rtol=1e-5):
    """`got` (float32) equals the float64 `want` within rtol of the output's scale."""
    got = np.asarray(got)
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, reference {want.shape}"
    scale = max(float(np.abs(want).max()) if want.size else 0.0, 1.0)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=rtol * scale, err_msg=what)


def random_weights(layer, seed):
    """Uniform weights in [-1, 1) for every variable (variances in [0.5, 2))."""
    rng = np.random.default_rng(seed)
    values = []
    for w in layer.weights:
        low, high = (0.5, 2.0) if w.name == "moving_variance" else (-1.0, 1.0)
        values.append(rng.uniform(low, high, tuple(w.shape)).astype(np.float32))
    layer.set_weights(values)
    return [v.astype(np.float64) for v in values]


def model_of(layer, x):
    """A one-layer model on inputs shaped like `x` (batch None); builds the layer."""
    inputs = keras.Input(shape=x.shape[1:])
    return keras.Model(inputs, layer(inputs))


def check_forward(layer, model, x, want, what):
    """Eager call, symbolic shape and compiled `Model.predict` all equal `want`.

    The weights are set after the model is built, as when a user loads them, so the
    compiled model must read the weights' current values.
    """
    assert_matches(layer(x), want, f"{what} eager")
    assert tuple(model.outputs[0].shape) == (None,) + want.shape[1:], f"{what}: symbolic shape {model.outputs[0].shape}"
    assert_matches(model.predict(x, verbose=0), want, f"{what} compiled")


def describe(**kwargs):
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


# ----------------------------------------------------------------------------
# The references reproduce real Keras (tests/reference/data/cnn, made by Keras 3.15)

KERAS_DATA = os.path.join(os.path.dirname(__file__), "reference", "data", "cnn")
_REF_CLASSES = (
    "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "BatchNormalization",
)


def _keras_cases():
    with open(os.path.join(KERAS_DATA, "layers.json"), encoding="utf-8") as handle:
        cases = json.load(handle)["cases"]
    return [c for c in cases if c["class"] in _REF_CLASSES]


KERAS_CASES = _keras_cases()


def _activation(y, name):
    return {"linear": y, "relu": np.maximum(y, 0.0), "tanh": np.tanh(y)}[name]


def reference_for_keras_case(record, x, weights):
    """The reference's output for one stored Keras case (channels_last or first)."""
    cls, kw = record["class"], dict(record["kwargs"])
    first = kw.get("data_format") == "channels_first"
    if first:
        x = to_last(x)
    rank = x.ndim - 2
    window = {"strides": _tuple(_listed(kw.get("strides", 1)), rank), "padding": kw.get("padding", "valid")}
    bias = weights[-1] if kw.get("use_bias", True) and "Pooling" not in cls and cls != "BatchNormalization" else None
    if cls.startswith("Conv") and "Transpose" not in cls:
        y = conv_ref(x, weights[0], bias, dilation=_tuple(_listed(kw.get("dilation_rate", 1)), rank), groups=kw.get("groups", 1), **window)
    elif "Transpose" in cls:
        pads = kw.get("output_padding")
        y = conv_transpose_ref(x, weights[0], bias, output_padding=None if pads is None else _listed(pads), dilation=_listed(kw.get("dilation_rate", 1)), **window)
    elif cls.startswith("Depthwise"):
        y = depthwise_ref(x, weights[0], bias, dilation=_listed(kw.get("dilation_rate", 1)), **window)
    elif cls.startswith("Separable"):
        y = separable_ref(x, weights[0], weights[1], bias, dilation=_listed(kw.get("dilation_rate", 1)), **window)
    elif cls.startswith("Global"):
        reduce = np.max if "Max" in cls else np.mean
        y = reduce(x, axis=tuple(range(1, rank + 1)), keepdims=kw.get("keepdims", False))
        if not kw.get("keepdims", False):
            return y
    elif "Pooling" in cls:
        pool = _listed(kw["pool_size"])
        strides = kw.get("strides")
        y = (max_pool_ref if cls.startswith("Max") else average_pool_ref)(x, pool, None if strides is None else _listed(strides), kw.get("padding", "valid"))
    else:
        raise AssertionError(cls)
    y = _activation(y, kw.get("activation") or "linear")
    return to_first(y) if first else y


def _listed(value):
    return tuple(value) if isinstance(value, list) else value


def _keras_bn_weights(record, weights):
    names = [w["name"] for w in record["weights"]]
    return dict(zip(names, weights))


@pytest.mark.parametrize("record", KERAS_CASES, ids=[c["id"] for c in KERAS_CASES])
def test_references_reproduce_keras(record):
    """The NumPy references here give real Keras's stored outputs (so agreeing with
    them means agreeing with Keras)."""
    case = record["id"]
    with np.load(os.path.join(KERAS_DATA, "layers.npz")) as archive:
        x = archive[f"{case}/input"].astype(np.float64)
        weights = [archive[f"{case}/weight_{i}"].astype(np.float64) for i in range(len(record["weights"]))]
        output = archive[f"{case}/output"]
        training_output = archive.get(f"{case}/output_training")
    if record["class"] == "BatchNormalization":
        kw = record["kwargs"]
        w = _keras_bn_weights(record, weights)
        axis = kw.get("axis", -1) % x.ndim
        epsilon = kw.get("epsilon", 1e-3)
        want = batch_norm_ref(x, axis, w.get("gamma"), w.get("beta"), w["moving_mean"], w["moving_variance"], epsilon)
        assert_matches(output, want, f"{case} inference")
        mean, variance = batch_stats(x, axis)
        want = batch_norm_ref(x, axis, w.get("gamma"), w.get("beta"), mean, variance, epsilon)
        assert_matches(training_output, want, f"{case} training")
        return
    assert_matches(output, reference_for_keras_case(record, x, weights), case)


# ----------------------------------------------------------------------------
# Hypothesis grids

CONV_CLASSES = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}
TRANSPOSE_CLASSES = {1: layers.Conv1DTranspose, 2: layers.Conv2DTranspose, 3: layers.Conv3DTranspose}
DEPTHWISE_CLASSES = {1: layers.DepthwiseConv1D, 2: layers.DepthwiseConv2D}
SEPARABLE_CLASSES = {1: layers.SeparableConv1D, 2: layers.SeparableConv2D}
MAX_POOL_CLASSES = {1: layers.MaxPooling1D, 2: layers.MaxPooling2D, 3: layers.MaxPooling3D}
AVG_POOL_CLASSES = {1: layers.AveragePooling1D, 2: layers.AveragePooling2D, 3: layers.AveragePooling3D}


@st.composite
def windows(draw, ranks=(1, 2, 3), causal=False, dilation=True, max_stride=3):
    """Rank, kernel size, strides, dilation, padding and spatial sizes of one case.

    Strides and dilation are never both above 1 (Keras refuses that). Sides are small
    and odd or even, down to 1, and never smaller than the dilated kernel with 'valid'
    padding; 'same' with a stride over an odd or even side gives asymmetric padding.
    """
    rank = draw(st.sampled_from(ranks))
    max_k, max_extra = (3, 3) if rank == 3 else (4, 5)
    ksize = tuple(draw(st.integers(1, max_k)) for _ in range(rank))
    mode = draw(st.sampled_from(["strides", "dilation"] if dilation else ["strides"]))
    if mode == "strides":
        strides, dil = tuple(draw(st.integers(1, max_stride)) for _ in range(rank)), (1,) * rank
    else:
        strides, dil = (1,) * rank, tuple(draw(st.integers(1, 3)) for _ in range(rank))
    paddings = ["valid", "same"] + (["causal"] if causal and rank == 1 else [])
    padding = draw(st.sampled_from(paddings))
    sides = []
    for k, d in zip(ksize, dil):
        low = (k - 1) * d + 1 if padding == "valid" else 1
        sides.append(draw(st.integers(low, low + max_extra)))
    return rank, ksize, strides, dil, padding, tuple(sides)


def draw_common(draw, channels_first=True):
    return {
        "batch": draw(st.integers(1, 3)),
        "channels_first": channels_first and draw(st.integers(0, 3)) == 0,
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def layer_input(rng, batch, sides, channels, channels_first):
    """Inputs in [-1, 1): the channels_last array the reference uses and the one the layer gets."""
    x = rng.uniform(-1.0, 1.0, (batch,) + sides + (channels,)).astype(np.float32)
    return x, (np.ascontiguousarray(to_first(x)) if channels_first else x)


def layer_output(want, channels_first):
    return to_first(want) if channels_first else want


@st.composite
def conv_cases(draw):
    rank, ksize, strides, dil, padding, sides = draw(windows(causal=True))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    channels = groups * draw(st.integers(1, 2))
    filters = groups * draw(st.integers(1, 2))
    common = draw_common(draw, channels_first=padding != "causal")
    return dict(
        rank=rank, ksize=ksize, strides=strides, dilation=dil, padding=padding, sides=sides, groups=groups,
        channels=channels, filters=filters, use_bias=draw(st.booleans()),
        activation=draw(st.sampled_from([None, "relu"])), **common,
    )


@given(case=conv_cases())
def test_conv_forward_matches_reference(case):
    c = case
    rng = np.random.default_rng(c["seed"])
    fmt = "channels_first" if c["channels_first"] else "channels_last"
    layer = CONV_CLASSES[c["rank"]](
        c["filters"], c["ksize"], strides=c["strides"], padding=c["padding"], dilation_rate=c["dilation"],
        groups=c["groups"], use_bias=c["use_bias"], activation=c["activation"], data_format=fmt,
    )
    x, x_in = layer_input(rng, c["batch"], c["sides"], c["channels"], c["channels_first"])
    model = model_of(layer, x_in)
    weights = random_weights(layer, c["seed"] + 1)
    bias = weights[1] if c["use_bias"] else None
    want = conv_ref(x.astype(np.float64), weights[0], bias, c["strides"], c["padding"], c["dilation"], c["groups"], c["activation"])
    check_forward(layer, model, x_in, layer_output(want, c["channels_first"]), describe(**c))


@st.composite
def transpose_cases(draw):
    rank, ksize, strides, dil, padding, sides = draw(windows(ranks=(1, 2, 3)))
    # Sides from 1 (a transposed convolution never refuses a small input).
    sides = tuple(draw(st.integers(1, 4 if rank == 3 else 5)) for _ in range(rank))
    output_padding = None
    if draw(st.booleans()):
        output_padding = tuple(draw(st.integers(0, s - 1)) for s in strides)
    return dict(
        rank=rank, ksize=ksize, strides=strides, dilation=dil, padding=padding, sides=sides,
        output_padding=output_padding, channels=draw(st.integers(1, 3)), filters=draw(st.integers(1, 3)),
        use_bias=draw(st.booleans()), **draw_common(draw),
    )


@given(case=transpose_cases())
def test_conv_transpose_forward_matches_reference(case):
    c = case
    rng = np.random.default_rng(c["seed"])
    fmt = "channels_first" if c["channels_first"] else "channels_last"
    layer = TRANSPOSE_CLASSES[c["rank"]](
        c["filters"], c["ksize"], strides=c["strides"], padding=c["padding"], output_padding=c["output_padding"],
        dilation_rate=c["dilation"], use_bias=c["use_bias"], data_format=fmt,
    )
    x, x_in = layer_input(rng, c["batch"], c["sides"], c["channels"], c["channels_first"])
    model = model_of(layer, x_in)
    weights = random_weights(layer, c["seed"] + 1)
    bias = weights[1] if c["use_bias"] else None
    want = conv_transpose_ref(x.astype(np.float64), weights[0], bias, c["strides"], c["padding"], c["output_padding"], c["dilation"])
    check_forward(layer, model, x_in, layer_output(want, c["channels_first"]), describe(**c))


@st.composite
def depthwise_cases(draw):
    rank, ksize, strides, dil, padding, sides = draw(windows(ranks=(1, 2), causal=True))
    return dict(
        rank=rank, ksize=ksize, strides=strides, dilation=dil, padding=padding, sides=sides,
        channels=draw(st.integers(1, 3)), depth_multiplier=draw(st.integers(1, 3)), use_bias=draw(st.booleans()),
        filters=draw(st.integers(1, 3)), **draw_common(draw, channels_first=padding != "causal"),
    )


@given(case=depthwise_cases())
def test_depthwise_conv_forward_matches_reference(case):
    c = case
    rng = np.random.default_rng(c["seed"])
    fmt = "channels_first" if c["channels_first"] else "channels_last"
    layer = DEPTHWISE_CLASSES[c["rank"]](
        c["ksize"], strides=c["strides"], padding=c["padding"], depth_multiplier=c["depth_multiplier"],
        dilation_rate=c["dilation"], use_bias=c["use_bias"], data_format=fmt,
    )
    x, x_in = layer_input(rng, c["batch"], c["sides"], c["channels"], c["channels_first"])
    model = model_of(layer, x_in)
    weights = random_weights(layer, c["seed"] + 1)
    bias = weights[1] if c["use_bias"] else None
    want = depthwise_ref(x.astype(np.float64), weights[0], bias, c["strides"], c["padding"], c["dilation"])
    check_forward(layer, model, x_in, layer_output(want, c["channels_first"]), describe(**c))


@given(case=depthwise_cases())
def test_separable_conv_forward_matches_reference(case):
    c = case
    rng = np.random.default_rng(c["seed"])
    fmt = "channels_first" if c["channels_first"] else "channels_last"
    layer = SEPARABLE_CLASSES[c["rank"]](
        c["filters"], c["ksize"], strides=c["strides"], padding=c["padding"], depth_multiplier=c["depth_multiplier"],
        dilation_rate=c["dilation"], use_bias=c["use_bias"], activation="relu", data_format=fmt,
    )
    x, x_in = layer_input(rng, c["batch"], c["sides"], c["channels"], c["channels_first"])
    model = model_of(layer, x_in)
    weights = random_weights(layer, c["seed"] + 1)
    bias = weights[2] if c["use_bias"] else None
    want = separable_ref(x.astype(np.float64), weights[0], weights[1], bias, c["strides"], c["padding"], c["dilation"], "relu")
    check_forward(layer, model, x_in, layer_output(want, c["channels_first"]), describe(**c))


@st.composite
def pool_cases(draw):
    rank, ksize, strides, _, padding, sides = draw(windows(dilation=False, max_stride=4))
    if draw(st.booleans()):
        strides = None
    return dict(
        rank=rank, pool_size=ksize, strides=strides, padding=padding, sides=sides, channels=draw(st.integers(1, 3)),
        kind=draw(st.sampled_from(["max", "average"])), **draw_common(draw),
    )


@given(case=pool_cases())
def test_pooling_forward_matches_reference(case):
    c = case
    rng = np.random.default_rng(c["seed"])
    fmt = "channels_first" if c["channels_first"] else "channels_last"
    classes, ref = (MAX_POOL_CLASSES, max_pool_ref) if c["kind"] == "max" else (AVG_POOL_CLASSES, average_pool_ref)
    layer = classes[c["rank"]](c["pool_size"], strides=c["strides"], padding=c["padding"], data_format=fmt)
    x, x_in = layer_input(rng, c["batch"], c["sides"], c["channels"], c["channels_first"])
    model = model_of(layer, x_in)
    want = ref(x.astype(np.float64), c["pool_size"], c["strides"], c["padding"])
    check_forward(layer, model, x_in, layer_output(want, c["channels_first"]), describe(**c))


GLOBAL_CLASSES = {
    ("max", 1): layers.GlobalMaxPooling1D,
    ("max", 2): layers.GlobalMaxPooling2D,
    ("max", 3): layers.GlobalMaxPooling3D,
    ("average", 1): layers.GlobalAveragePooling1D,
    ("average", 2): layers.GlobalAveragePooling2D,
    ("average", 3): layers.GlobalAveragePooling3D,
}


@given(
    kind=st.sampled_from(["max", "average"]),
    rank=st.integers(1, 3),
    sides=st.lists(st.integers(1, 5), min_size=3, max_size=3),
    channels=st.integers(1, 4),
    batch=st.integers(1, 3),
    keepdims=st.booleans(),
    channels_first=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_global_pooling_forward_matches_reference(kind, rank, sides, channels, batch, keepdims, channels_first, seed):
    rng = np.random.default_rng(seed)
    layer = GLOBAL_CLASSES[(kind, rank)](keepdims=keepdims, data_format="channels_first" if channels_first else "channels_last")
    x, x_in = layer_input(rng, batch, tuple(sides[:rank]), channels, channels_first)
    model = model_of(layer, x_in)
    axes = tuple(range(1, rank + 1))
    reduce = np.max if kind == "max" else np.mean
    want = reduce(x.astype(np.float64), axis=axes, keepdims=keepdims)
    if keepdims:
        want = layer_output(want, channels_first)
    check_forward(layer, model, x_in, want, describe(kind=kind, rank=rank, sides=sides[:rank], keepdims=keepdims, channels_first=channels_first))


def test_same_padding_puts_the_odd_row_at_the_end():
    """The asymmetric 'same' edge by hand: n=4, k=2, s=2 needs no padding; n=5, k=2,
    s=2 one row, at the end; n=4, k=3, s=2 one row, at the end. A kernel that only
    reads its first tap shows where each window starts."""
    layer = layers.Conv1D(1, 3, strides=2, padding="same", use_bias=False)
    layer.build((1, 4, 1))
    layer.set_weights([np.array([1.0, 0.0, 0.0], np.float32).reshape(3, 1, 1)])
    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 4, 1)
    # Total padding (2-1)*2 + 3 - 4 = 1, all after: windows start at 0 and 2.
    np.testing.assert_array_equal(layer(x).ravel(), [1.0, 3.0])
    pool = layers.AveragePooling1D(2, strides=2, padding="same")
    x5 = np.arange(1.0, 6.0, dtype=np.float32).reshape(1, 5, 1)
    # The last window holds only x[4] (the padding is after it and is not counted).
    np.testing.assert_allclose(pool(x5).ravel(), [1.5, 3.5, 5.0])
    assert same_padding(4, 3, 2) == (0, 1) and same_padding(5, 2, 2) == (0, 1) and same_padding(6, 4, 1) == (1, 2)


@pytest.mark.parametrize(
    "n,k,s,padding,output_padding,length",
    [(3, 3, 2, "same", None, 6), (3, 3, 2, "same", 0, 5), (3, 3, 2, "valid", None, 7), (3, 2, 3, "valid", None, 9), (3, 4, 2, "same", 1, 5), (4, 5, 3, "same", 2, 12)],
)
def test_conv_transpose_output_length_follows_keras(n, k, s, padding, output_padding, length):
    assert transpose_length_and_offset(n, k, s, 1, padding, output_padding)[0] == length
    layer = layers.Conv1DTranspose(2, k, strides=s, padding=padding, output_padding=output_padding)
    assert layer.compute_output_shape((None, n, 3)) == (None, length, 2)


# ----------------------------------------------------------------------------
# BatchNormalization


@pytest.mark.parametrize(
    "shape,kwargs",
    [
        ((4, 3, 5, 2), {}),
        ((3, 2, 5, 5), {"axis": 1, "momentum": 0.8}),
        ((7, 3), {"epsilon": 0.1}),
        ((1, 3, 3, 4), {"center": False}),
        ((2, 5, 3), {"scale": False, "axis": -2}),
        ((2, 3, 2, 2, 3), {"momentum": 0.5}),
    ],
    ids=["4d", "channels_first", "2d", "no_center", "no_scale_middle_axis", "5d"],
)
def test_batch_normalization_training_inference_and_moving_update(shape, kwargs):
    layer = layers.BatchNormalization(**kwargs)
    inputs = keras.Input(shape=shape[1:])
    model = keras.Model(inputs, layer(inputs))
    weights = dict(zip([w.name for w in layer.weights], random_weights(layer, 3)))
    axis = kwargs.get("axis", -1) % len(shape)
    momentum, epsilon = kwargs.get("momentum", 0.99), kwargs.get("epsilon", 1e-3)
    x = np.random.default_rng(4).normal(1.0, 2.0, shape).astype(np.float32)
    x64 = x.astype(np.float64)
    gamma, beta = weights.get("gamma"), weights.get("beta")
    moving_mean, moving_variance = weights["moving_mean"], weights["moving_variance"]

    # Inference (the default of an eager call) uses the moving statistics.
    assert_matches(layer(x), batch_norm_ref(x64, axis, gamma, beta, moving_mean, moving_variance, epsilon), "inference")
    assert_matches(layer(x, training=False), batch_norm_ref(x64, axis, gamma, beta, moving_mean, moving_variance, epsilon), "training=False")
    assert_matches(model.predict(x, verbose=0), batch_norm_ref(x64, axis, gamma, beta, moving_mean, moving_variance, epsilon), "predict")
    got = {w.name: w.numpy() for w in layer.weights}
    np.testing.assert_array_equal(got["moving_mean"], moving_mean.astype(np.float32))

    # Training: batch mean and biased variance; the moving statistics move.
    mean, variance = batch_stats(x64, axis)
    assert_matches(layer(x, training=True), batch_norm_ref(x64, axis, gamma, beta, mean, variance, epsilon), "training=True")
    got = {w.name: w.numpy() for w in layer.weights}
    np.testing.assert_allclose(got["moving_mean"], moving_mean * momentum + mean * (1 - momentum), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["moving_variance"], moving_variance * momentum + variance * (1 - momentum), rtol=1e-5, atol=1e-6)
    # And inference afterwards uses the moved statistics.
    new_mean, new_variance = got["moving_mean"].astype(np.float64), got["moving_variance"].astype(np.float64)
    assert_matches(layer(x), batch_norm_ref(x64, axis, gamma, beta, new_mean, new_variance, epsilon), "inference after update")


def test_batch_normalization_that_is_not_trainable_uses_moving_statistics_in_training():
    layer = layers.BatchNormalization()
    layer.build((4, 3))
    w = random_weights(layer, 5)
    layer.trainable = False
    x = np.random.default_rng(6).normal(size=(4, 3)).astype(np.float32)
    assert_matches(layer(x, training=True), batch_norm_ref(x.astype(np.float64), 1, w[0], w[1], w[2], w[3]), "frozen")
    np.testing.assert_array_equal(layer.get_weights()[2], w[2].astype(np.float32))


# ----------------------------------------------------------------------------
# Gradients: GradientTape against central finite differences of the references


def _from_layer_kwargs(kwargs, rank):
    return {
        "strides": _tuple(kwargs.get("strides", 1), rank),
        "padding": kwargs.get("padding", "valid"),
        "dilation": _tuple(kwargs.get("dilation_rate", 1), rank),
    }


def _channels_first_ref(ref):
    """A channels_first version of a channels_last reference (first argument the input)."""

    def wrapped(x, *weights):
        return to_first(ref(to_last(x), *weights))

    return wrapped


def gradient_case(kind, rank, kwargs):
    """(layer class, reference(x, *trainable weights)) of one gradient case."""
    fmt_first = kwargs.get("data_format") == "channels_first"
    window = _from_layer_kwargs(kwargs, rank)
    if kind == "conv":
        groups = kwargs.get("groups", 1)
        cls = CONV_CLASSES[rank]

        def ref(x, kernel, bias):
            return conv_ref(x, kernel, bias, groups=groups, **window)

    elif kind == "transpose":
        cls = TRANSPOSE_CLASSES[rank]

        def ref(x, kernel, bias):
            return conv_transpose_ref(x, kernel, bias, output_padding=kwargs.get("output_padding"), **window)

    elif kind == "depthwise":
        cls = DEPTHWISE_CLASSES[rank]

        def ref(x, kernel, bias):
            return depthwise_ref(x, kernel, bias, **window)

    elif kind == "separable":
        cls = SEPARABLE_CLASSES[rank]

        def ref(x, depthwise, pointwise, bias):
            return separable_ref(x, depthwise, pointwise, bias, **window)

    else:
        raise AssertionError(kind)
    return cls, (_channels_first_ref(ref) if fmt_first else ref)


GRADIENT_CASES = [
    ("conv", 1, {"filters": 3, "kernel_size": 3}, (2, 6, 2)),
    ("conv", 1, {"filters": 2, "kernel_size": 2, "padding": "causal", "dilation_rate": 2}, (2, 5, 3)),
    ("conv", 1, {"filters": 4, "kernel_size": 3, "groups": 2, "strides": 2, "padding": "same"}, (1, 7, 4)),
    ("conv", 2, {"filters": 3, "kernel_size": (2, 3), "strides": (2, 1), "padding": "same"}, (2, 5, 4, 2)),
    ("conv", 2, {"filters": 2, "kernel_size": 3, "dilation_rate": (2, 1), "padding": "same"}, (1, 5, 5, 1)),
    ("conv", 2, {"filters": 2, "kernel_size": 2, "strides": 2, "data_format": "channels_first"}, (2, 3, 5, 4)),
    ("conv", 3, {"filters": 2, "kernel_size": 2, "strides": (1, 2, 1), "padding": "same"}, (1, 3, 4, 3, 2)),
    ("transpose", 1, {"filters": 2, "kernel_size": 3, "strides": 2}, (2, 4, 3)),
    ("transpose", 1, {"filters": 2, "kernel_size": 2, "strides": 3, "padding": "valid"}, (1, 3, 2)),
    ("transpose", 2, {"filters": 2, "kernel_size": 3, "strides": 2, "padding": "same"}, (2, 3, 3, 2)),
    ("transpose", 2, {"filters": 3, "kernel_size": (4, 3), "strides": 2, "padding": "same", "output_padding": 1}, (1, 3, 2, 2)),
    ("transpose", 2, {"filters": 2, "kernel_size": 2, "dilation_rate": 2, "data_format": "channels_first"}, (1, 2, 3, 3)),
    ("transpose", 3, {"filters": 2, "kernel_size": 2, "strides": (2, 1, 2)}, (1, 2, 2, 2, 2)),
    ("depthwise", 1, {"kernel_size": 3, "depth_multiplier": 2, "padding": "causal"}, (2, 5, 2)),
    ("depthwise", 2, {"kernel_size": (3, 2), "strides": 2, "padding": "same", "depth_multiplier": 2}, (2, 5, 4, 3)),
    ("depthwise", 2, {"kernel_size": 2, "dilation_rate": 2, "data_format": "channels_first"}, (1, 2, 5, 4)),
    ("separable", 1, {"filters": 3, "kernel_size": 3, "strides": 2, "padding": "same"}, (2, 6, 2)),
    ("separable", 2, {"filters": 2, "kernel_size": 3, "depth_multiplier": 2, "padding": "same"}, (1, 4, 3, 2)),
    ("separable", 2, {"filters": 3, "kernel_size": 2, "dilation_rate": 2, "data_format": "channels_first"}, (2, 2, 4, 5)),
]


def _case_id(case):
    kind, rank, kwargs, shape = case
    return f"{kind}{rank}d-" + "-".join(f"{k}={v}" for k, v in kwargs.items() if k not in ("filters",)) + f"-{shape}"


def check_layer_gradients(layer, x, ref, seed=0, training=None):
    """Tape gradients of sum(layer(x) * w) for x and every trainable weight, against
    central differences of the reference."""
    weights = [x.astype(np.float64)] + [w.numpy().astype(np.float64) for w in layer.trainable_weights]
    w_out = np.random.default_rng(seed).uniform(-1.0, 1.0, ref(*weights).shape)
    with GradientTape() as tape:
        tape.watch(x)
        y = layer(x) if training is None else layer(x, training=training)
        loss = ops.sum(ops.multiply(y, w_out.astype(np.float32)))
    sources = [x] + list(layer.trainable_weights)
    grads = tape.gradient(loss, sources)
    names = ["input"] + [w.name for w in layer.trainable_weights]
    for index, (grad, name) in enumerate(zip(grads, names)):
        assert grad is not None, f"gradient of {name} is None"
        assert grad.shape == weights[index].shape, f"gradient of {name}: shape {grad.shape}"
        fd = finite_differences(ref, weights, [w_out], index)
        np.testing.assert_allclose(grad, fd, rtol=2e-3, atol=2e-3, err_msg=f"gradient of {name}")


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=[_case_id(c) for c in GRADIENT_CASES])
def test_conv_gradients_match_finite_differences(case):
    kind, rank, kwargs, x_shape = case
    cls, ref = gradient_case(kind, rank, kwargs)
    layer = cls(**kwargs)
    layer.build(x_shape)
    random_weights(layer, 7)
    x = np.random.default_rng(8).uniform(-1.0, 1.0, x_shape).astype(np.float32)
    check_layer_gradients(layer, x, ref)


def _distinct(shape, seed):
    """Values at least 0.04 apart (so the maximum of any window is unique)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * 0.05 + rng.uniform(-0.005, 0.005, n)).reshape(shape).astype(np.float32)


POOL_GRADIENT_CASES = [
    ("max", 1, {"pool_size": 3, "strides": 2, "padding": "same"}, (2, 6, 2)),
    ("max", 2, {"pool_size": (2, 3), "strides": 1}, (1, 4, 5, 2)),
    ("max", 2, {"pool_size": 3, "strides": 2, "padding": "same", "data_format": "channels_first"}, (2, 2, 5, 4)),
    ("max", 3, {"pool_size": 2, "padding": "same"}, (1, 3, 3, 2, 2)),
    ("average", 1, {"pool_size": 2, "strides": 1}, (2, 5, 3)),
    ("average", 2, {"pool_size": 3, "strides": 2, "padding": "same"}, (2, 4, 5, 2)),
    ("average", 2, {"pool_size": 2, "padding": "same", "data_format": "channels_first"}, (1, 2, 5, 3)),
    ("average", 3, {"pool_size": (2, 2, 3), "strides": (1, 2, 2), "padding": "same"}, (1, 3, 3, 4, 1)),
]


@pytest.mark.parametrize("case", POOL_GRADIENT_CASES, ids=[_case_id(c) for c in POOL_GRADIENT_CASES])
def test_pooling_gradients_match_finite_differences(case):
    kind, rank, kwargs, x_shape = case
    classes, base = (MAX_POOL_CLASSES, max_pool_ref) if kind == "max" else (AVG_POOL_CLASSES, average_pool_ref)
    layer = classes[rank](**kwargs)
    ref_kwargs = {k: v for k, v in kwargs.items() if k != "data_format"}

    def ref(x):
        return base(x, **ref_kwargs)

    if kwargs.get("data_format") == "channels_first":
        ref = _channels_first_ref(ref)
    check_layer_gradients(layer, _distinct(x_shape, 9), ref)


@pytest.mark.parametrize("kind", ["max", "average"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_global_pooling_gradients_match_finite_differences(kind, rank):
    layer = GLOBAL_CLASSES[(kind, rank)](keepdims=rank == 2)
    x = _distinct((2,) + (3,) * rank + (2,), 10)
    axes = tuple(range(1, rank + 1))

    def ref(x):
        return (np.max if kind == "max" else np.mean)(x, axis=axes, keepdims=rank == 2)

    check_layer_gradients(layer, x, ref)


@pytest.mark.parametrize(
    "shape,kwargs",
    [((5, 3), {}), ((3, 2, 3, 2), {}), ((2, 3, 4), {"axis": 1, "center": False}), ((4, 2, 2, 3), {"scale": False})],
    ids=["2d", "4d", "axis1_no_center", "no_scale"],
)
def test_batch_normalization_training_gradients_match_finite_differences(shape, kwargs):
    layer = layers.BatchNormalization(**kwargs)
    layer.build(shape)
    random_weights(layer, 11)
    axis = kwargs.get("axis", -1) % len(shape)
    names = [w.name for w in layer.trainable_weights]

    def ref(x, *params):
        by_name = dict(zip(names, params))
        mean, variance = batch_stats(x, axis)
        return batch_norm_ref(x, axis, by_name.get("gamma"), by_name.get("beta"), mean, variance)

    x = np.random.default_rng(12).normal(0.5, 1.5, shape).astype(np.float32)
    check_layer_gradients(layer, x, ref, training=True)


def test_batch_normalization_inference_gradients_match_finite_differences():
    layer = layers.BatchNormalization()
    layer.build((3, 4))
    w = random_weights(layer, 13)

    def ref(x, gamma, beta):
        return batch_norm_ref(x, 1, gamma, beta, w[2], w[3])

    check_layer_gradients(layer, np.random.default_rng(14).normal(size=(3, 4)).astype(np.float32), ref)


# ----------------------------------------------------------------------------
# A compiled SGD step against finite differences of the reference's loss

SGD_CASES = [
    ("conv", 2, {"filters": 3, "kernel_size": 3, "strides": 2, "padding": "same", "groups": 1}, (3, 5, 4, 2)),
    ("conv", 1, {"filters": 4, "kernel_size": 2, "groups": 2, "padding": "causal", "dilation_rate": 2}, (2, 6, 2)),
    ("transpose", 2, {"filters": 2, "kernel_size": 3, "strides": 2, "padding": "same"}, (2, 3, 2, 2)),
    ("depthwise", 2, {"kernel_size": 2, "depth_multiplier": 2, "padding": "same", "data_format": "channels_first"}, (2, 2, 3, 3)),
    ("separable", 1, {"filters": 2, "kernel_size": 3, "strides": 2}, (3, 7, 2)),
]


@pytest.mark.parametrize("case", SGD_CASES, ids=[_case_id(c) for c in SGD_CASES])
def test_compiled_sgd_step_matches_finite_differences(case):
    """`train_on_batch` with SGD(lr) and mse moves each weight by -lr * dLoss/dw, with
    the gradient from finite differences of the float64 reference."""
    kind, rank, kwargs, x_shape = case
    cls, ref = gradient_case(kind, rank, kwargs)
    layer = cls(**kwargs)
    inputs = keras.Input(shape=x_shape[1:])
    model = keras.Model(inputs, layer(inputs))
    before = random_weights(layer, 15)
    rng = np.random.default_rng(16)
    x = rng.uniform(-1.0, 1.0, x_shape).astype(np.float32)
    x64 = x.astype(np.float64)
    target = rng.uniform(-1.0, 1.0, ref(x64, *before).shape)

    def loss_ref(*weights):
        return np.mean((ref(x64, *weights) - target) ** 2)

    lr = 0.1
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    loss = model.train_on_batch(x, target.astype(np.float32))
    assert loss == pytest.approx(loss_ref(*before), rel=1e-5)
    after = [w.astype(np.float64) for w in model.get_weights()]
    for index, (w0, w1, var) in enumerate(zip(before, after, layer.weights)):
        fd = finite_differences(loss_ref, before, [np.ones(())], index)
        np.testing.assert_allclose((w0 - w1) / lr, fd, rtol=2e-3, atol=1e-4, err_msg=f"update of {var.path}")


def test_compiled_step_through_batch_normalization_matches_finite_differences():
    """Conv2D -> BatchNormalization: the compiled step trains with the batch statistics
    (gradients flow through them) and moves the moving statistics."""
    inputs = keras.Input(shape=(4, 4, 2))
    conv = layers.Conv2D(3, 2, name="conv")
    norm = layers.BatchNormalization(momentum=0.7, name="norm")
    model = keras.Model(inputs, norm(conv(inputs)))
    before = random_weights(conv, 17) + random_weights(norm, 18)
    rng = np.random.default_rng(19)
    x = rng.uniform(-1.0, 1.0, (3, 4, 4, 2)).astype(np.float32)
    x64 = x.astype(np.float64)
    target = rng.uniform(-1.0, 1.0, (3, 3, 3, 3))

    def forward(kernel, bias, gamma, beta):
        h = conv_ref(x64, kernel, bias)
        mean, variance = batch_stats(h, 3)
        return h, batch_norm_ref(h, 3, gamma, beta, mean, variance)

    def loss_ref(*trainable):
        return np.mean((forward(*trainable)[1] - target) ** 2)

    lr = 0.05
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    trainable = before[:4]
    assert model.train_on_batch(x, target.astype(np.float32)) == pytest.approx(loss_ref(*trainable), rel=1e-5)
    after = [w.astype(np.float64) for w in model.get_weights()]
    for index in range(4):
        fd = finite_differences(loss_ref, trainable, [np.ones(())], index)
        np.testing.assert_allclose((before[index] - after[index]) / lr, fd, rtol=2e-3, atol=1e-4, err_msg=f"update {index}")
    mean, variance = batch_stats(forward(*trainable)[0], 3)
    np.testing.assert_allclose(after[4], before[4] * 0.7 + mean * 0.3, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after[5], before[5] * 0.7 + variance * 0.3, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# Bad configurations: ValueErrors that name the layer and show the values


def build_on(layer, shape):
    """Calls `layer` on a symbolic input of per-sample `shape` (model building)."""
    return layer(keras.Input(shape=shape))


@pytest.mark.parametrize(
    "make,shape,fragments",
    [
        (lambda: layers.Conv1D(2, 4, name="c1"), (3, 2), ["Conv1D", "c1", "(4,)", "(3,)", "valid"]),
        (lambda: layers.Conv2D(2, (3, 6), name="c2"), (7, 5, 1), ["Conv2D", "c2", "(3, 6)", "(7, 5)", "valid"]),
        (lambda: layers.Conv3D(2, 2, name="c3"), (3, 1, 3, 2), ["Conv3D", "c3", "(2, 2, 2)", "(3, 1, 3)", "valid"]),
        (lambda: layers.Conv1D(2, 3, dilation_rate=3, name="dil"), (6, 2), ["Conv1D", "dil", "(3,)", "(6,)", "dilation"]),
        (lambda: layers.DepthwiseConv2D(3, name="dw"), (2, 4, 3), ["DepthwiseConv2D", "dw", "(3, 3)", "(2, 4)"]),
        (lambda: layers.SeparableConv1D(2, 5, name="sep"), (4, 3), ["SeparableConv1D", "sep", "(5,)", "(4,)"]),
        (lambda: layers.MaxPooling2D(3, name="mp"), (2, 5, 1), ["MaxPooling2D", "mp", "3", "(None, 2, 5, 1)", "valid"]),
        (lambda: layers.AveragePooling1D(4, name="ap"), (3, 2), ["AveragePooling1D", "ap", "4", "(None, 3, 2)", "valid"]),
    ],
    ids=["conv1d", "conv2d", "conv3d", "dilated", "depthwise", "separable", "max_pool", "avg_pool"],
)
def test_window_larger_than_input_with_valid_padding_is_refused(make, shape, fragments):
    layer = make()
    with pytest.raises(ValueError) as info:
        build_on(layer, shape)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_window_larger_than_input_with_same_padding_is_fine():
    assert build_on(layers.Conv2D(2, 5, padding="same"), (3, 2, 1)).shape == (None, 3, 2, 2)
    assert build_on(layers.MaxPooling1D(4, padding="same"), (3, 2)).shape == (None, 1, 2)
    # A transposed convolution grows its input: a large kernel is never refused.
    assert build_on(layers.Conv1DTranspose(2, 5), (2, 3)).shape == (None, 6, 2)


@pytest.mark.parametrize(
    "make,fragments",
    [
        (lambda: layers.Conv2D(0, 3, name="bad"), ["Conv2D", "bad", "filters", "0"]),
        (lambda: layers.Conv1D(-2, 3, name="bad"), ["Conv1D", "bad", "filters", "-2"]),
        (lambda: layers.Conv2DTranspose(0, 3, name="bad"), ["Conv2DTranspose", "bad", "filters", "0"]),
        (lambda: layers.SeparableConv2D(0, 3, name="bad"), ["SeparableConv2D", "bad", "filters", "0"]),
        (lambda: layers.Conv2D(2, 0, name="bad"), ["Conv2D", "bad", "kernel_size", "0"]),
        (lambda: layers.Conv2D(2, (3, -1), name="bad"), ["Conv2D", "bad", "kernel_size", "(3, -1)"]),
        (lambda: layers.Conv3D(2, (1, 2), name="bad"), ["Conv3D", "bad", "kernel_size", "3", "(1, 2)"]),
        (lambda: layers.Conv1D(2, 3, strides=0, name="bad"), ["Conv1D", "bad", "strides", "0"]),
        (lambda: layers.Conv2D(2, 3, strides=(1, -2), name="bad"), ["Conv2D", "bad", "strides", "(1, -2)"]),
        (lambda: layers.Conv2D(2, 3, dilation_rate=0, name="bad"), ["Conv2D", "bad", "dilation_rate", "0"]),
        (lambda: layers.Conv2D(2, 3, groups=0, name="bad"), ["Conv2D", "bad", "groups", "0"]),
        (lambda: layers.Conv2D(3, 3, groups=2, name="bad"), ["Conv2D", "bad", "groups=2", "filters=3"]),
        (lambda: layers.DepthwiseConv2D(3, depth_multiplier=0, name="bad"), ["DepthwiseConv2D", "bad", "depth_multiplier", "0"]),
        (lambda: layers.MaxPooling2D(0, name="bad"), ["MaxPooling2D", "bad", "pool_size", "0"]),
        (lambda: layers.AveragePooling1D(2, strides=-1, name="bad"), ["AveragePooling1D", "bad", "strides", "-1"]),
        (lambda: layers.Conv2D(2, 3, padding="full", name="bad"), ["Conv2D", "bad", "padding", "full"]),
        (lambda: layers.Conv2D(2, 3, padding="causal", name="bad"), ["Conv2D", "bad", "padding", "causal"]),
        (lambda: layers.Conv2D(2, 3, strides=2, dilation_rate=2, name="bad"), ["Conv2D", "bad", "strides", "dilation_rate", "(2, 2)"]),
        (lambda: layers.Conv1DTranspose(2, 3, strides=2, dilation_rate=2, name="bad"), ["Conv1DTranspose", "bad", "(2,)"]),
        (lambda: layers.Conv2DTranspose(2, 3, strides=2, output_padding=2, name="bad"), ["Conv2DTranspose", "bad", "output_padding", "(2, 2)", "strides"]),
        (lambda: layers.Conv1DTranspose(2, 3, strides=1, output_padding=1, name="bad"), ["Conv1DTranspose", "bad", "output_padding", "(1,)"]),
        (lambda: layers.Conv2D(2, 3, data_format="channels_middle", name="bad"), ["data_format", "channels_middle"]),
    ],
    ids=[
        "zero_filters", "negative_filters", "transpose_zero_filters", "separable_zero_filters", "zero_kernel",
        "negative_kernel", "kernel_wrong_length", "zero_stride", "negative_stride", "zero_dilation", "zero_groups",
        "groups_not_dividing_filters", "zero_depth_multiplier", "zero_pool", "negative_pool_stride", "unknown_padding",
        "causal_2d", "strides_with_dilation", "transpose_strides_with_dilation", "output_padding_equal_stride",
        "output_padding_above_stride", "bad_data_format",
    ],
)
def test_bad_arguments_are_refused_with_clear_messages(make, fragments):
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize(
    "make,shape,fragments",
    [
        (lambda: layers.Conv2D(2, 3, name="r2"), (5, 3), ["r2", "ndim=4", "ndim=3", "(None, 5, 3)"]),
        (lambda: layers.Conv2D(2, 1, name="r2big"), (3, 3, 3, 2), ["r2big", "4", "(None, 3, 3, 3, 2)"]),
        (lambda: layers.Conv1D(2, 1, name="r1"), (4,), ["r1", "ndim=3", "(None, 4)"]),
        (lambda: layers.Conv3DTranspose(2, 1, name="t3"), (4, 4, 2), ["t3", "ndim=5", "(None, 4, 4, 2)"]),
        (lambda: layers.DepthwiseConv2D(1, name="dw"), (4, 2), ["dw", "(None, 4, 2)"]),
        (lambda: layers.MaxPooling2D(2, name="mp"), (4, 4, 4, 2), ["mp", "ndim=4", "ndim=5", "(None, 4, 4, 4, 2)"]),
        (lambda: layers.GlobalAveragePooling1D(name="gap"), (4, 4, 2), ["gap", "ndim=3", "ndim=4"]),
        (lambda: layers.BatchNormalization(axis=3, name="bn"), (4, 2), ["bn", "3", "(None, 4, 2)"]),
        (lambda: layers.Conv2D(4, 3, groups=2, name="g"), (5, 5, 3), ["g", "groups=2", "3 channels", "(None, 5, 5, 3)"]),
        (lambda: layers.Conv1D(4, 3, groups=4, data_format="channels_first", name="gf"), (6, 5), ["gf", "groups=4", "6 channels", "(None, 6, 5)"]),
    ],
    ids=["conv2d_rank3", "conv2d_rank5", "conv1d_rank2", "conv3d_transpose_rank4", "depthwise_rank3", "pool_rank5", "global_rank4", "bn_axis", "groups_channels", "groups_channels_first"],
)
def test_wrong_inputs_are_refused_when_the_model_is_built(make, shape, fragments):
    with pytest.raises(ValueError) as info:
        build_on(make(), shape)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_unknown_channels_are_refused():
    with pytest.raises(ValueError, match=r"conv_unknown.*channel.*\(None, 5, None\)"):
        build_on(layers.Conv1D(2, 3, name="conv_unknown"), (5, None))


def test_a_built_layer_refuses_other_channel_counts():
    layer = layers.Conv2D(2, 3, name="fixed")
    build_on(layer, (5, 5, 3))
    with pytest.raises(ValueError, match=r"fixed.*axis -1.*3.*\(None, 5, 5, 4\)"):
        build_on(layer, (5, 5, 4))


# ----------------------------------------------------------------------------
# Determinism across thread counts


def _determinism_model(kind):
    """A conv net over (16, 16, 3) with BatchNormalization: "plain" uses Conv2D (also
    grouped), Conv2DTranspose and both poolings; "depthwise" adds DepthwiseConv2D and
    SeparableConv2D."""
    inputs = keras.Input(shape=(16, 16, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    if kind == "depthwise":
        x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    x = layers.MaxPooling2D(2)(x)
    if kind == "depthwise":
        x = layers.SeparableConv2D(16, 3, activation="relu")(x)
    else:
        x = layers.Conv2D(16, 3, activation="relu")(x)
    x = layers.Conv2DTranspose(8, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.AveragePooling2D(3, strides=2, padding="same")(x)
    x = layers.Conv2D(8, 3, groups=2, strides=2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(5)(x))


def _determinism_run(kind="plain"):
    """Two Adam steps on a fixed conv model; returns the weights and predictions, and
    the losses."""
    model = _determinism_model(kind)
    rng = np.random.default_rng(20)
    model.set_weights([rng.normal(0.0, 0.3, tuple(w.shape)).astype(np.float32) + (1.0 if w.name == "moving_variance" else 0.0) for w in model.weights])
    x = rng.uniform(-1.0, 1.0, (32, 16, 16, 3)).astype(np.float32)
    y = rng.integers(0, 5, 32).astype(np.int32)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = [model.train_on_batch(x, y) for _ in range(2)]
    return model.get_weights() + [model.predict(x, verbose=0)], losses


def _assert_bitwise_equal(first, other, what):
    for k, (a, b) in enumerate(zip(first, other)):
        assert a.shape == b.shape
        differ = np.flatnonzero(a.view(np.uint32) != b.view(np.uint32))
        assert differ.size == 0, f"{what}: array {k} differs at {differ.size} elements"


@pytest.mark.parametrize("kind", ["plain", "depthwise"])
def test_train_step_is_bitwise_identical_for_any_thread_count(kind, restore_threads):
    results = []
    for n in (1, 2, 3):
        config.set_num_threads(n)
        results.append(_determinism_run(kind))
    (first, first_losses), *others = results
    for n, (arrays, losses) in zip((2, 3), others):
        assert losses == first_losses, f"{n} threads: losses {losses} vs {first_losses}"
        _assert_bitwise_equal(first, arrays, f"{n} threads vs 1")


def test_thread_count_from_the_environment_gives_identical_training(tmp_path):
    """PYFUNCNET_NUM_THREADS in fresh processes: 1 and 2 threads train identically."""
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from pyfuncnet import config
        from test_conv_layers import _determinism_run
        arrays, losses = _determinism_run()
        np.savez(sys.argv[1], threads=config.get_num_threads(), *arrays)
        """
    )
    outputs = []
    for n in (1, 2):
        path = tmp_path / f"threads_{n}.npz"
        env = dict(os.environ, PYFUNCNET_NUM_THREADS=str(n))
        # Run outside the source tree, so the fresh interpreter imports the
        # installed package (a clean checkout has no compiled core in pyfuncnet/).
        subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True, timeout=120, cwd=tmp_path)
        with np.load(path) as archive:
            assert int(archive["threads"]) == n
            outputs.append([archive[f"arr_{k}"] for k in range(len(archive.files) - 1)])
    _assert_bitwise_equal(outputs[0], outputs[1], "2 threads vs 1 (environment)")
