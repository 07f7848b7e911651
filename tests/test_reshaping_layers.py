"""ZeroPadding1D/2D/3D, Cropping1D/2D/3D and UpSampling1D/2D/3D.

- Parity with real Keras 3: the cases of tests/reference/data/cnn whose classes live in
  pyfuncnet.layers.reshaping (outputs, symbolic shapes, compute_output_shape).
- Independent float64 NumPy references (np.pad, slicing, np.repeat, a hand-written
  bilinear resize with half-pixel centres clamped at the edges, and a loop over the
  taps of the other resize kernels) on random shapes, arguments and data formats.
- Gradients against central finite differences, unknown batch and spatial sizes with
  `Input`, compiled models (predict and one SGD step), errors and configs.
"""

import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pyfuncnet as keras
from helpers import check_grad, make_array
from pyfuncnet import GradientTape, ops
from pyfuncnet.layers import reshaping
from pyfuncnet.layers.reshaping import (
    Cropping1D,
    Cropping2D,
    Cropping3D,
    UpSampling1D,
    UpSampling2D,
    UpSampling3D,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
)

DATA = os.path.join(os.path.dirname(__file__), "reference", "data", "cnn")
RTOL = 1e-5


# ----------------------------------------------------------------------------
# Parity with Keras 3 (the reference cases of the classes in this module)


def _reference_cases():
    with open(os.path.join(DATA, "layers.json"), encoding="utf-8") as handle:
        cases = json.load(handle)["cases"]
    return {c["id"]: c for c in cases if hasattr(reshaping, c["class"]) and not c["class"].startswith("_")}


CASES = _reference_cases()
_arrays = None


def reference_arrays():
    global _arrays
    if _arrays is None:
        with np.load(os.path.join(DATA, "layers.npz")) as archive:
            _arrays = {k: archive[k] for k in archive.files if k.split("/")[0] in CASES}
    return _arrays


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def reference_layer(case_id):
    record = CASES[case_id]
    return getattr(reshaping, record["class"])(**{k: _tuples(v) for k, v in record["kwargs"].items()})


def assert_close(got, want, rtol=RTOL, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    scale = float(np.abs(want).max()) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-6), err_msg=what)


def test_reference_covers_every_family():
    classes = {c["class"] for c in CASES.values()}
    assert {"ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D"} <= classes


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_output_matches_keras(case_id):
    record = CASES[case_id]
    layer = reference_layer(case_id)
    layer.build(tuple(record["input_shape"]))
    assert layer.weights == []
    arrays = reference_arrays()
    assert_close(layer(arrays[f"{case_id}/input"]), arrays[f"{case_id}/output"], what=case_id)


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_symbolic_output_shape_matches_keras(case_id):
    record = CASES[case_id]
    out = reference_layer(case_id)(keras.Input(shape=tuple(record["input_shape"][1:])))
    assert list(out.shape) == record["symbolic_output_shape"]
    shape = reference_layer(case_id).compute_output_shape((None, *record["input_shape"][1:]))
    assert list(shape) == record["symbolic_output_shape"]


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_compiled_model_matches_keras(case_id):
    record = CASES[case_id]
    inputs = keras.Input(shape=tuple(record["input_shape"][1:]))
    model = keras.Model(inputs, reference_layer(case_id)(inputs))
    arrays = reference_arrays()
    assert_close(model.predict(arrays[f"{case_id}/input"], verbose=0), arrays[f"{case_id}/output"], what=case_id)


# ----------------------------------------------------------------------------
# NumPy references


def spatial_axes(rank, data_format):
    first = 2 if data_format == "channels_first" else 1
    return list(range(first, first + rank))


def pad_ref(x, pairs, data_format):
    widths = [(0, 0)] * x.ndim
    for axis, pair in zip(spatial_axes(len(pairs), data_format), pairs):
        widths[axis] = pair
    return np.pad(x, widths)


def crop_ref(x, pairs, data_format):
    key = [slice(None)] * x.ndim
    for axis, (before, after) in zip(spatial_axes(len(pairs), data_format), pairs):
        key[axis] = slice(before, x.shape[axis] - after)
    return x[tuple(key)]


def repeat_ref(x, factors, data_format):
    for axis, factor in zip(spatial_axes(len(factors), data_format), factors):
        x = np.repeat(x, factor, axis=axis)
    return x


def bilinear_axis_ref(x, axis, factor):
    """Linear interpolation along `axis` at half-pixel centres, clamped at the edges."""
    n = x.shape[axis]
    src = np.clip((np.arange(n * factor) + 0.5) / factor - 0.5, 0.0, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    t = (src - lo).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, lo, axis=axis) * (1.0 - t) + np.take(x, hi, axis=axis) * t


def cubic_kernel(d):
    """Keys' cubic convolution kernel, a = -0.5."""
    d = abs(d)
    if d < 1:
        return 1.5 * d**3 - 2.5 * d**2 + 1.0
    if d < 2:
        return -0.5 * d**3 + 2.5 * d**2 - 4.0 * d + 2.0
    return 0.0


def lanczos_kernel(radius):
    return lambda d: float(np.sinc(d) * np.sinc(d / radius)) if abs(d) < radius else 0.0


KERNELS = {"bicubic": cubic_kernel, "lanczos3": lanczos_kernel(3), "lanczos5": lanczos_kernel(5)}


def kernel_axis_ref(x, axis, factor, kernel):
    """Each output sample: the kernel's weights of every input sample at its
    half-pixel centre, divided by their sum (jax.image.resize, no antialiasing)."""
    n = x.shape[axis]
    moved = np.moveaxis(x, axis, 0)
    out = []
    for i in range(n * factor):
        centre = (i + 0.5) / factor - 0.5
        w = np.array([kernel(centre - j) for j in range(n)])
        w /= w.sum()
        out.append(np.tensordot(w, moved, axes=(0, 0)))
    return np.moveaxis(np.stack(out), 0, axis)


def resize_ref(x, factors, data_format, interpolation):
    for axis, factor in zip(spatial_axes(2, data_format), factors):
        if interpolation == "bilinear":
            x = bilinear_axis_ref(x, axis, factor)
        else:
            x = kernel_axis_ref(x, axis, factor, KERNELS[interpolation])
    return x


FORMATS = st.sampled_from(["channels_last", "channels_first"])
LAYOUTS = st.sampled_from(["c", "t", "s"])


@st.composite
def spatial_case(draw, rank, max_side=6, min_side=1, formats=FORMATS):
    data_format = draw(formats)
    spatial = [draw(st.integers(min_side, max_side)) for _ in range(rank)]
    batch, channels = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    shape = [batch] + (spatial + [channels] if data_format == "channels_last" else [channels] + spatial)
    x = make_array(tuple(shape), draw(LAYOUTS), draw(st.integers(0, 2**31)))
    return x, spatial, data_format


def pair_strategy(limit=3):
    return st.tuples(st.integers(0, limit), st.integers(0, limit))


@given(spatial_case(1), pair_strategy(), st.booleans())
def test_zero_padding1d_matches_np_pad(case, pair, as_int):
    x, _, data_format = case
    padding = pair[0] if as_int else pair
    pairs = [(padding, padding)] if as_int else [pair]
    layer = ZeroPadding1D(padding, data_format=data_format)
    np.testing.assert_array_equal(layer(x), pad_ref(x, pairs, data_format))


@pytest.mark.parametrize("rank", [2, 3])
@given(data=st.data())
def test_zero_padding_nd_matches_np_pad(rank, data):
    x, _, data_format = data.draw(spatial_case(rank, max_side=4))
    form = data.draw(st.sampled_from(["int", "ints", "pairs", "mixed"]))
    pairs = [data.draw(pair_strategy()) for _ in range(rank)]
    if form == "int":
        padding = pairs[0][0]
        pairs = [(padding, padding)] * rank
    elif form == "ints":
        padding = tuple(p[0] for p in pairs)
        pairs = [(p, p) for p in padding]
    elif form == "pairs":
        padding = tuple(pairs)
    else:
        padding = (pairs[0][0],) + tuple(pairs[1:])
        pairs[0] = (pairs[0][0], pairs[0][0])
    cls = {2: ZeroPadding2D, 3: ZeroPadding3D}[rank]
    layer = cls(padding, data_format=data_format)
    want = pad_ref(x, pairs, data_format)
    np.testing.assert_array_equal(layer(x), want)
    assert layer.compute_output_shape(x.shape) == want.shape


@pytest.mark.parametrize("rank", [1, 2, 3])
@given(data=st.data())
def test_cropping_matches_slicing(rank, data):
    # Cropping1D has no data_format: always channels_last.
    formats = st.just("channels_last") if rank == 1 else FORMATS
    x, spatial, data_format = data.draw(spatial_case(rank, max_side=7, formats=formats))
    pairs = []
    for n in spatial:
        before = data.draw(st.integers(0, n - 1))
        pairs.append((before, data.draw(st.integers(0, n - 1 - before))))
    if rank == 1:
        layer = Cropping1D(pairs[0])
    else:
        layer = {2: Cropping2D, 3: Cropping3D}[rank](tuple(pairs), data_format=data_format)
    want = crop_ref(x, pairs, data_format)
    np.testing.assert_array_equal(layer(x), want)
    assert layer.compute_output_shape(x.shape) == want.shape


@pytest.mark.parametrize("rank", [1, 2, 3])
@given(data=st.data())
def test_nearest_upsampling_matches_np_repeat(rank, data):
    formats = st.just("channels_last") if rank == 1 else FORMATS  # UpSampling1D: channels_last only
    x, _, data_format = data.draw(spatial_case(rank, max_side=4, formats=formats))
    factors = [data.draw(st.integers(1, 3)) for _ in range(rank)]
    if rank == 1:
        layer = UpSampling1D(factors[0])
    elif rank == 2:
        layer = UpSampling2D(tuple(factors), data_format=data_format)
    else:
        layer = UpSampling3D(tuple(factors), data_format=data_format)
    want = repeat_ref(x, factors, data_format)
    np.testing.assert_array_equal(layer(x), want)
    assert layer.compute_output_shape(x.shape) == want.shape


@given(spatial_case(2, max_side=7), st.tuples(st.integers(1, 4), st.integers(1, 4)))
def test_bilinear_upsampling_matches_clamped_interpolation(case, factors):
    x, _, data_format = case
    layer = UpSampling2D(factors, data_format=data_format, interpolation="bilinear")
    want = resize_ref(x.astype(np.float64), factors, data_format, "bilinear")
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("interpolation", ["bicubic", "lanczos3", "lanczos5"])
@given(case=spatial_case(2, max_side=6), factors=st.tuples(st.integers(1, 3), st.integers(1, 3)))
def test_kernel_upsampling_matches_tap_loop(interpolation, case, factors):
    x, _, data_format = case
    layer = UpSampling2D(factors, data_format=data_format, interpolation=interpolation)
    want = resize_ref(x.astype(np.float64), factors, data_format, interpolation)
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos3", "lanczos5"])
def test_interpolating_upsampling_keeps_constant_images(interpolation):
    x = np.full((2, 5, 3, 4), 0.75, np.float32)
    out = UpSampling2D((3, 2), interpolation=interpolation)(x)
    assert out.shape == (2, 15, 6, 4)
    np.testing.assert_allclose(out, 0.75, rtol=1e-6)


def test_bilinear_upsampling_known_values():
    # A 1x2 image [0, 1] upsampled by 2 along the width: samples at -0.25 (clamped
    # to 0), 0.25, 0.75 and 1.25 (clamped to 1).
    x = np.array([0.0, 1.0], np.float32).reshape(1, 1, 2, 1)
    out = UpSampling2D((1, 2), interpolation="bilinear")(x)
    np.testing.assert_allclose(out.reshape(-1), [0.0, 0.25, 0.75, 1.0], rtol=1e-6)


def test_interpolation_name_is_case_insensitive():
    assert UpSampling2D(interpolation="BiLinear").interpolation == "bilinear"


# ----------------------------------------------------------------------------
# Gradients (central finite differences of the float64 references)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize(
    "make,ref",
    [
        (lambda f: ZeroPadding1D((1, 2), data_format=f), lambda x, f: pad_ref(x, [(1, 2)], f)),
        (lambda f: ZeroPadding2D(((1, 0), (2, 1)), data_format=f), lambda x, f: pad_ref(x, [(1, 0), (2, 1)], f)),
        (lambda f: Cropping2D(((1, 0), (0, 2)), data_format=f), lambda x, f: crop_ref(x, [(1, 0), (0, 2)], f)),
        (lambda f: UpSampling2D((2, 3), data_format=f), lambda x, f: repeat_ref(x, (2, 3), f)),
        (
            lambda f: UpSampling2D((3, 2), data_format=f, interpolation="bilinear"),
            lambda x, f: resize_ref(x, (3, 2), f, "bilinear"),
        ),
        (
            lambda f: UpSampling2D((2, 2), data_format=f, interpolation="bicubic"),
            lambda x, f: resize_ref(x, (2, 2), f, "bicubic"),
        ),
    ],
    ids=["zero_padding1d", "zero_padding2d", "cropping2d", "up_sampling2d_nearest", "up_sampling2d_bilinear", "up_sampling2d_bicubic"],
)
def test_gradient_2d_matches_finite_differences(make, ref, data_format):
    shape = (2, 3, 4, 2) if data_format == "channels_last" else (2, 2, 3, 4)
    if isinstance(make(data_format), ZeroPadding1D):
        shape = shape[:3]
    layer = make(data_format)
    check_grad(layer, lambda x: ref(x, data_format), [make_array(shape, seed=3)])


@pytest.mark.parametrize(
    "layer,ref",
    [
        (Cropping1D((2, 1)), lambda x: crop_ref(x, [(2, 1)], "channels_last")),
        (UpSampling1D(3), lambda x: repeat_ref(x, (3,), "channels_last")),
        (ZeroPadding3D((1, (0, 2), 1)), lambda x: pad_ref(x, [(1, 1), (0, 2), (1, 1)], "channels_last")),
        (Cropping3D(((1, 0), (0, 1), (1, 1))), lambda x: crop_ref(x, [(1, 0), (0, 1), (1, 1)], "channels_last")),
        (UpSampling3D((2, 1, 3)), lambda x: repeat_ref(x, (2, 1, 3), "channels_last")),
    ],
    ids=["cropping1d", "up_sampling1d", "zero_padding3d", "cropping3d", "up_sampling3d"],
)
def test_gradient_1d_3d_matches_finite_differences(layer, ref):
    shape = (2, 5, 3) if layer.rank == 1 else (1, 3, 2, 3, 2)
    check_grad(layer, ref, [make_array(shape, seed=5)])


# ----------------------------------------------------------------------------
# Symbolic use: unknown batch and spatial sizes, compiled models


# Symbolic shape inference runs the core's rules with two huge sentinel sizes in place
# of unknown dimensions; a reshape of a tensor with two unknown dimensions and more
# than ~34 elements in the others overflows their product (pyfuncnet._symbolic, not
# these layers: `ops.reshape(Input(shape=(None, 35)), (-1, 35))` fails the same way).
# Nearest upsampling reshapes, so the tests with unknown spatial sizes keep the other
# dimensions small, and the strict xfail below records the limitation.
SENTINEL_OVERFLOW = pytest.mark.xfail(
    strict=True,
    raises=ValueError,
    reason="pyfuncnet._symbolic's sentinel sizes overflow the element count of reshapes with two or more "
    "unknown dimensions",
)


@pytest.mark.parametrize(
    "layer,ref,expected",
    [
        (ZeroPadding2D(((1, 0), (2, 3))), lambda x: pad_ref(x, [(1, 0), (2, 3)], "channels_last"), (None, None, None, 3)),
        (Cropping2D(((1, 0), (2, 1))), lambda x: crop_ref(x, [(1, 0), (2, 1)], "channels_last"), (None, None, None, 3)),
        pytest.param(
            UpSampling2D((2, 3)),
            lambda x: repeat_ref(x, (2, 3), "channels_last"),
            (None, None, None, 3),
            marks=SENTINEL_OVERFLOW,
        ),
    ],
    ids=["zero_padding2d", "cropping2d", "up_sampling2d"],
)
def test_unknown_spatial_sizes(layer, ref, expected):
    inputs = keras.Input(shape=(None, None, 3))
    out = layer(inputs)
    assert out.shape == expected
    assert layer.compute_output_shape((None, None, None, 3)) == expected
    model = keras.Model(inputs, out)
    for shape in [(2, 5, 6, 3), (3, 4, 7, 3)]:
        x = make_array(shape, seed=sum(shape))
        np.testing.assert_array_equal(model.predict(x, verbose=0), ref(x))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_nearest_upsampling2d_with_an_unknown_height(data_format):
    shape = (None, 2, 2) if data_format == "channels_last" else (2, None, 2)
    inputs = keras.Input(shape=shape)
    layer = UpSampling2D((2, 2), data_format=data_format)
    out = layer(inputs)
    expected = (None, None, 4, 2) if data_format == "channels_last" else (None, 2, None, 4)
    assert out.shape == expected
    assert layer.compute_output_shape((None,) + shape) == expected
    model = keras.Model(inputs, out)
    for height in (2, 5):
        x = make_array((2,) + tuple(height if d is None else d for d in shape), seed=height)
        np.testing.assert_array_equal(model.predict(x, verbose=0), repeat_ref(x, (2, 2), data_format))


@SENTINEL_OVERFLOW
def test_nearest_upsampling2d_with_an_unknown_height_and_many_channels():
    out = UpSampling2D((2, 3))(keras.Input(shape=(None, 5, 16)))
    assert out.shape == (None, None, 15, 16)


def test_unknown_steps_1d():
    inputs = keras.Input(shape=(None, 2))
    x = Cropping1D((1, 2))(ZeroPadding1D(3)(UpSampling1D(2)(inputs)))
    assert x.shape == (None, None, 2)
    model = keras.Model(inputs, x)
    for steps in (3, 6):
        data = make_array((2, steps, 2), seed=steps)
        want = crop_ref(pad_ref(repeat_ref(data, (2,), "channels_last"), [(3, 3)], "channels_last"), [(1, 2)], "channels_last")
        np.testing.assert_array_equal(model.predict(data, verbose=0), want)


def test_upsampling3d_channels_first_with_an_unknown_depth():
    inputs = keras.Input(shape=(1, None, 2, 1))
    layer = UpSampling3D((2, 3, 1), data_format="channels_first")
    out = layer(inputs)
    assert out.shape == (None, 1, None, 6, 1)
    x = make_array((2, 1, 3, 2, 1), seed=1)
    np.testing.assert_array_equal(keras.Model(inputs, out).predict(x, verbose=0), repeat_ref(x, (2, 3, 1), "channels_first"))


def test_bilinear_upsampling_with_unknown_channels():
    inputs = keras.Input(shape=(3, 4, None))
    out = UpSampling2D((2, 2), interpolation="bilinear")(inputs)
    assert out.shape == (None, 6, 8, None)
    model = keras.Model(inputs, out)
    for channels in (1, 3):
        x = make_array((2, 3, 4, channels), seed=channels)
        np.testing.assert_allclose(model.predict(x, verbose=0), resize_ref(x, (2, 2), "channels_last", "bilinear"), rtol=1e-5, atol=1e-5)


def test_one_sgd_step_through_every_layer_matches_the_tape():
    # Dense layers around the reshaping layers: the compiled step's update of each
    # weight equals the learning rate times the eager GradientTape gradient.
    keras.backend.clear_session()
    inputs = keras.Input(shape=(4, 5, 3))
    x = keras.layers.Dense(2)(inputs)
    x = UpSampling2D((2, 3), interpolation="bilinear")(x)
    x = Cropping2D(((1, 2), (3, 0)))(x)
    x = ZeroPadding2D((1, (0, 2)))(x)
    x = UpSampling2D((1, 2))(x)
    x = keras.layers.Reshape((-1, 2))(x)
    x = ZeroPadding1D((2, 1))(x)
    x = Cropping1D((0, 3))(x)
    x = UpSampling1D(2)(x)
    outputs = keras.layers.Dense(1)(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 4, 5, 3)).astype(np.float32)
    target = rng.normal(size=(3,) + outputs.shape[1:]).astype(np.float32)
    before = [w.copy() for w in model.get_weights()]
    with GradientTape() as tape:
        pred = data
        for layer in model.layers[1:]:
            pred = layer(pred)
        loss = ops.mean(ops.square(ops.subtract(pred, target)))
    grads = tape.gradient(loss, model.trainable_weights)
    lr = 0.1
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    np.testing.assert_allclose(model.train_on_batch(data, target), float(loss), rtol=1e-5)
    for after, start, grad in zip(model.get_weights(), before, grads):
        np.testing.assert_allclose((start - after) / lr, grad, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------
# Errors


def test_cropping_larger_than_the_input_is_refused_at_build_time():
    layer = Cropping2D(((2, 2), (0, 0)), name="crop")
    with pytest.raises(ValueError, match=r"Cropping2D 'crop'.*input_shape=\(None, 4, 5, 3\).*cropping=\(\(2, 2\), \(0, 0\)\)"):
        layer(keras.Input(shape=(4, 5, 3)))
    with pytest.raises(ValueError, match=r"Cropping1D 'c1'.*input_shape=\(2, 3, 1\)"):
        Cropping1D((2, 1), name="c1").build((2, 3, 1))
    with pytest.raises(ValueError, match="Cropping3D 'c3'"):
        Cropping3D(1, data_format="channels_first", name="c3")(np.zeros((1, 2, 3, 2, 3), np.float32))
    # A crop that leaves one element is fine.
    assert Cropping2D(((1, 2), (0, 0)))(np.zeros((1, 4, 5, 3), np.float32)).shape == (1, 1, 5, 3)


def test_cropping_checks_each_eager_call():
    layer = Cropping1D((1, 1), name="crop1")
    assert layer(np.zeros((2, 5, 1), np.float32)).shape == (2, 3, 1)
    with pytest.raises(ValueError, match=r"Cropping1D 'crop1'.*input_shape=\(2, 2, 1\)"):
        layer(np.zeros((2, 2, 1), np.float32))


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: ZeroPadding1D(-1, name="p"), r"ZeroPadding1D 'p'.*`padding`.*negative"),
        (lambda: ZeroPadding1D((1, 2, 3), name="p"), r"ZeroPadding1D 'p'.*`padding`.*tuple of 2 integers"),
        (lambda: ZeroPadding1D(1.5, name="p"), r"ZeroPadding1D 'p'.*`padding`"),
        (lambda: ZeroPadding2D((1, 2, 3), name="p"), r"ZeroPadding2D 'p'.*`padding` should have 2 elements"),
        (lambda: ZeroPadding2D(((1, -1), 2), name="p"), r"ZeroPadding2D 'p'.*1st entry of padding.*negative"),
        (lambda: ZeroPadding2D("same", name="p"), r"ZeroPadding2D 'p'.*`padding` should be either an int"),
        (lambda: ZeroPadding3D((1, 1), name="p"), r"ZeroPadding3D 'p'.*`padding` should have 3 elements"),
        (lambda: ZeroPadding3D((1, 1, (1, 2, 3)), name="p"), r"ZeroPadding3D 'p'.*3rd entry of padding"),
        (lambda: ZeroPadding2D(1, data_format="nhwc", name="p"), r"ZeroPadding2D 'p'.*data_format"),
        (lambda: Cropping1D(-2, name="c"), r"Cropping1D 'c'.*`cropping`.*negative"),
        (lambda: Cropping2D((1, (2, True)), name="c"), r"Cropping2D 'c'.*2nd entry of cropping"),
        (lambda: Cropping3D(None, name="c"), r"Cropping3D 'c'.*`cropping` should be either an int"),
        (lambda: UpSampling1D(0, name="u"), r"UpSampling1D 'u'.*`size` should be a positive integer"),
        (lambda: UpSampling1D((2,), name="u"), r"UpSampling1D 'u'.*`size`"),
        (lambda: UpSampling2D((2, 0), name="u"), r"UpSampling2D 'u'.*`size`"),
        (lambda: UpSampling2D((2, 2, 2), name="u"), r"UpSampling2D 'u'.*`size`"),
        (lambda: UpSampling3D(-1, name="u"), r"UpSampling3D 'u'.*`size`"),
        (lambda: UpSampling2D(interpolation="area", name="u"), r"UpSampling2D 'u'.*`interpolation`.*'bilinear'.*'area'"),
    ],
)
def test_bad_arguments_name_the_layer(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_unknown_keyword_is_refused():
    with pytest.raises(TypeError, match="padding_mode"):
        ZeroPadding2D(1, padding_mode="reflect")
    with pytest.raises(TypeError, match="data_format"):
        Cropping1D(1, data_format="channels_first")


@pytest.mark.parametrize(
    "layer,shape",
    [(ZeroPadding2D(1), (2, 3, 4)), (Cropping1D(1), (2, 3, 4, 5)), (UpSampling3D(2), (2, 3, 4, 5)), (UpSampling1D(2), (3, 4))],
)
def test_wrong_rank_is_refused(layer, shape):
    with pytest.raises(ValueError, match=f'layer "{layer.name}".*expected ndim={layer.rank + 2}'):
        layer(keras.Input(shape=shape[1:]))
    with pytest.raises(ValueError, match=f'layer "{layer.name}".*expected ndim={layer.rank + 2}'):
        layer(np.zeros(shape, np.float32))


def test_interpolating_upsampling_needs_known_height_and_width():
    layer = UpSampling2D(interpolation="bilinear", name="up")
    with pytest.raises(ValueError, match=r"UpSampling2D 'up'.*height and width.*\(None, None, 4, 3\)"):
        layer(keras.Input(shape=(None, 4, 3)))


# ----------------------------------------------------------------------------
# Configs


CONFIG_CASES = [
    (ZeroPadding1D, {"padding": (1, 2)}, {"padding": (1, 2), "data_format": "channels_last"}),
    (ZeroPadding1D, {"padding": 2, "data_format": "channels_first"}, {"padding": (2, 2), "data_format": "channels_first"}),
    (ZeroPadding2D, {}, {"padding": ((1, 1), (1, 1)), "data_format": "channels_last"}),
    (ZeroPadding2D, {"padding": (1, 2)}, {"padding": ((1, 1), (2, 2)), "data_format": "channels_last"}),
    (ZeroPadding3D, {"padding": 2}, {"padding": ((2, 2), (2, 2), (2, 2)), "data_format": "channels_last"}),
    (Cropping1D, {}, {"cropping": (1, 1)}),
    (Cropping2D, {}, {"cropping": ((0, 0), (0, 0)), "data_format": "channels_last"}),
    (Cropping2D, {"cropping": ((1, 0), 2), "data_format": "channels_first"}, {"cropping": ((1, 0), (2, 2)), "data_format": "channels_first"}),
    (Cropping3D, {}, {"cropping": ((1, 1), (1, 1), (1, 1)), "data_format": "channels_last"}),
    (UpSampling1D, {}, {"size": 2}),
    (UpSampling2D, {}, {"size": (2, 2), "data_format": "channels_last", "interpolation": "nearest"}),
    (UpSampling2D, {"size": 3, "interpolation": "bilinear"}, {"size": (3, 3), "data_format": "channels_last", "interpolation": "bilinear"}),
    (UpSampling3D, {"size": (1, 2, 3)}, {"size": (1, 2, 3), "data_format": "channels_last"}),
]


@pytest.mark.parametrize("cls,kwargs,expected", CONFIG_CASES)
def test_config_matches_keras_and_round_trips(cls, kwargs, expected):
    layer = cls(name="layer_under_test", **kwargs)
    config = layer.get_config()
    assert config == {"name": "layer_under_test", "trainable": True, "dtype": "float32", **expected}
    clone = cls.from_config(config)
    assert clone.get_config() == config
    shape = (2,) + (6,) * (layer.rank + 1)
    x = make_array(shape, seed=7)
    np.testing.assert_array_equal(clone(x), layer(x))


def test_config_survives_json():
    layer = UpSampling2D((2, 3), data_format="channels_first", interpolation="bilinear")
    config = json.loads(json.dumps(layer.get_config()))
    clone = UpSampling2D.from_config(config)
    assert clone.size == (2, 3) and clone.data_format == "channels_first" and clone.interpolation == "bilinear"
    padding = ZeroPadding2D.from_config(json.loads(json.dumps(ZeroPadding2D(((1, 0), (2, 3))).get_config())))
    assert padding.padding == ((1, 0), (2, 3))
