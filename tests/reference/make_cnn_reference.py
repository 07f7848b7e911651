"""Writes the Keras 3 reference data for convolutional layers and models.

Runs only with real Keras 3 on the JAX backend, in its own venv (see README.md; pyfuncnet
is never imported here). From the repository root:

    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_cnn_reference.py

It rewrites tests/reference/data/cnn/ (README.md beside this file describes the files):

- `layers.json` + `layers.npz`: one case per layer configuration in `layer_cases()`
  (class, constructor arguments, input, weights, output, and for BatchNormalization
  the training-mode output and the weights after that call).
- `models/<name>.json` + `.npz`: the builders of `cnn_models.py` (summary, parameter
  counts, weights, predictions).
- `train_step.json` + `train_step.npz`: two `train_on_batch` steps of
  `train_step_convnet` with SGD(learning_rate=0.1) and categorical cross-entropy.
- `versions.json`.

Weights and inputs come from seeded NumPy generators and are rounded to multiples of
1/1024, so they are exact in float32; only Keras's outputs carry float32 rounding.

With `--compare-backend torch` (run with the same python; the script selects the torch
backend itself) it writes nothing: it recomputes every layer case and model prediction
with Keras on the torch backend and prints the largest differences from the stored
(JAX) data, to tell backend-specific behaviour from Keras's own.

Example:
    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_cnn_reference.py
    /work/kvenv/bin/python tests/reference/make_cnn_reference.py --compare-backend torch
"""

import json
import os
import sys
from pathlib import Path

COMPARE_BACKEND = None
if "--compare-backend" in sys.argv:
    COMPARE_BACKEND = sys.argv[sys.argv.index("--compare-backend") + 1]

# Set before Keras (and rich, which draws the summary) are imported: the backend, and a
# wide terminal, because Keras narrows the default summary to the terminal's width - 4.
os.environ["KERAS_BACKEND"] = COMPARE_BACKEND or "jax"
os.environ["COLUMNS"] = "200"

import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cnn_models import BUILDERS, INPUTS  # noqa: E402

DATA = HERE / "data" / "cnn"

WEIGHT_SEED = 0
INPUT_SEED = 1
GRID = 1.0 / 1024
PREDICT_BATCH = 4
TRAIN_BATCH = 8
SUMMARY_VARIANTS = {
    "default": {},
    "line_length_120": {"line_length": 120},
    "show_trainable": {"show_trainable": True},
    "expand_nested": {"expand_nested": True},
}
# Keyword arguments whose lists stay lists; every other list in the stored kwargs is a
# tuple in Python (kernel_size=(2, 3), padding=((1, 0), (2, 3)), ...).
LIST_KWARGS = ("axis",)


# ----------------------------------------------------------------------------
# Helpers


def on_grid(values, step=GRID):
    """`values` rounded to multiples of `step`, as float32 (exact for such steps)."""
    return (np.round(np.asarray(values) / step) * step).astype(np.float32)


def to_numpy(value):
    """A backend tensor (or NumPy value) as a NumPy array."""
    return np.asarray(keras.ops.convert_to_numpy(value))


def plain(value):
    """`value` with NumPy scalars and arrays turned into JSON-ready Python values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "__array__"):
        return np.asarray(value).tolist()
    return value


def python_kwargs(stored):
    """Constructor kwargs from their JSON form: lists become tuples, except `axis`.

    The tests do the same, so Keras and pyfuncnet get identical Python arguments.
    """

    def tuples(value):
        if isinstance(value, list):
            return tuple(tuples(v) for v in value)
        return value

    return {k: (v if k in LIST_KWARGS else tuples(v)) for k, v in stored.items()}


def capture_summary(model, **kwargs):
    """The exact text `model.summary(print_fn=...)` hands to print_fn (one call)."""
    calls = []
    model.summary(print_fn=calls.append, **kwargs)
    assert len(calls) == 1, f"summary called print_fn {len(calls)} times"
    return calls[0]


def parameter_count(variables):
    """Number of scalars in `variables`."""
    return int(sum(int(np.prod(v.shape)) for v in variables))


def write_json(name, content):
    """Writes `content` as indented UTF-8 JSON to data/cnn/`name`."""
    with open(DATA / name, "w", encoding="utf-8") as handle:
        json.dump(plain(content), handle, indent=1, ensure_ascii=False)
        handle.write("\n")


def write_npz(name, arrays):
    """Writes `arrays` (a dict of NumPy arrays) to the compressed archive data/cnn/`name`."""
    np.savez_compressed(DATA / name, **arrays)


def draw_weight(rng, layer_class, variable_name, shape):
    """One reference weight, on the 1/1024 grid, scaled so activations stay moderate.

    Kernels: normal * sqrt(2 / fan_in) (fan_in: the inputs summed into one output;
    for transposed convolutions the kernel is (*k, filters, in) and fan_in is
    prod(k) * in). Biases, betas: normal * 0.1. Gammas: 1 + normal * 0.1. Moving means:
    normal * 0.3; moving variances: uniform(0.5, 2). Embeddings: normal * 0.5.
    """
    shape = tuple(shape)
    if variable_name in ("kernel", "depthwise_kernel", "pointwise_kernel"):
        if variable_name == "depthwise_kernel":
            fan_in = int(np.prod(shape[:-2]))
        elif layer_class.endswith("Transpose"):
            fan_in = int(np.prod(shape[:-2])) * shape[-1]
        else:
            fan_in = int(np.prod(shape[:-1]))
        return on_grid(rng.normal(size=shape) * np.sqrt(2.0 / fan_in))
    if variable_name == "gamma":
        return on_grid(1.0 + rng.normal(size=shape) * 0.1)
    if variable_name == "moving_mean":
        return on_grid(rng.normal(size=shape) * 0.3)
    if variable_name == "moving_variance":
        return on_grid(rng.uniform(0.5, 2.0, size=shape))
    if variable_name == "embeddings":
        return on_grid(rng.normal(size=shape) * 0.5)
    if variable_name in ("bias", "beta"):
        return on_grid(rng.normal(size=shape) * 0.1)
    raise ValueError(f"no rule for weight {variable_name!r} of {layer_class}")


def model_layer_classes(model):
    """Layer name -> class name for every layer of `model`, nested models included."""
    classes = {}
    for layer in model.layers:
        classes[layer.name] = type(layer).__name__
        if hasattr(layer, "layers"):
            classes.update(model_layer_classes(layer))
    return classes


def reference_model_weights(model):
    """Weights for `model` in `get_weights()` order, drawn from default_rng(WEIGHT_SEED)."""
    rng = np.random.default_rng(WEIGHT_SEED)
    classes = model_layer_classes(model)
    weights = []
    for variable in model.weights:
        layer_name = variable.path.split("/")[-2]
        weights.append(draw_weight(rng, classes[layer_name], variable.name, variable.shape))
    return weights


# ----------------------------------------------------------------------------
# Per-layer cases


def case(case_id, class_name, kwargs, input_shape, training=False, note=None):
    """One layer case; `training` also records layer(x, training=True) and the weights after."""
    record = {
        "id": case_id,
        "class": class_name,
        "kwargs": kwargs,
        "input_shape": list(input_shape),
        "training": training,
    }
    if note:
        record["note"] = note
    return record


def conv1d_cases():
    """Conv1D over the grid kernel x strides x padding x dilation; groups, bias and
    activation cycle through all combinations along the grid."""
    cases = []
    index = 0
    for kernel in (1, 2, 3):
        for padding in ("valid", "same", "causal"):
            for strides, dilation in ((1, 1), (2, 1), (1, 2)):
                groups = 2 if index % 2 else 1
                use_bias = (index // 2) % 2 == 0
                activation = "relu" if (index // 4) % 2 else "linear"
                index += 1
                kwargs = {
                    "filters": 6,
                    "kernel_size": kernel,
                    "strides": strides,
                    "padding": padding,
                    "dilation_rate": dilation,
                    "groups": groups,
                    "use_bias": use_bias,
                    "activation": activation,
                }
                case_id = (
                    f"conv1d_k{kernel}_s{strides}_{padding}_d{dilation}_g{groups}"
                    f"_{'bias' if use_bias else 'nobias'}_{activation}"
                )
                cases.append(case(case_id, "Conv1D", kwargs, (2, 9, 4)))
    # Even length: 'same' with stride 2 pads asymmetrically (more at the end).
    for kernel in (2, 3, 4):
        kwargs = {"filters": 3, "kernel_size": kernel, "strides": 2, "padding": "same"}
        cases.append(case(f"conv1d_k{kernel}_s2_same_len8", "Conv1D", kwargs, (2, 8, 4)))
    cases.append(
        case(
            "conv1d_k3_s3_causal_len8",
            "Conv1D",
            {"filters": 3, "kernel_size": 3, "strides": 3, "padding": "causal"},
            (2, 8, 4),
        )
    )
    cases.append(
        case(
            "conv1d_k3_s1_same_channels_first",
            "Conv1D",
            {"filters": 3, "kernel_size": 3, "padding": "same", "data_format": "channels_first"},
            (2, 4, 9),
        )
    )
    return cases


def conv2d_cases():
    """Conv2D on (2, 7, 8, 4): odd height, even width, so 'same' pads asymmetrically."""
    cases = []
    index = 0
    for kernel in ((1, 1), 3, (2, 3)):
        for strides in (1, 2, (1, 2)):
            for padding in ("valid", "same"):
                use_bias = index % 3 != 2
                activation = "relu" if index % 2 else "linear"
                index += 1
                kwargs = {
                    "filters": 6,
                    "kernel_size": kernel,
                    "strides": strides,
                    "padding": padding,
                    "use_bias": use_bias,
                    "activation": activation,
                }
                k = "x".join(map(str, kernel)) if isinstance(kernel, tuple) else str(kernel)
                s = "x".join(map(str, strides)) if isinstance(strides, tuple) else str(strides)
                case_id = f"conv2d_k{k}_s{s}_{padding}_{'bias' if use_bias else 'nobias'}_{activation}"
                cases.append(case(case_id, "Conv2D", kwargs, (2, 7, 8, 4)))
    for kernel in (3, (2, 3)):
        for padding in ("valid", "same"):
            k = "x".join(map(str, kernel)) if isinstance(kernel, tuple) else str(kernel)
            kwargs = {"filters": 5, "kernel_size": kernel, "padding": padding, "dilation_rate": 2}
            cases.append(case(f"conv2d_k{k}_d2_{padding}", "Conv2D", kwargs, (2, 7, 8, 4)))
    cases.append(
        case(
            "conv2d_k1x2_d1x3_valid",
            "Conv2D",
            {"filters": 3, "kernel_size": (1, 2), "dilation_rate": (1, 3)},
            (2, 7, 8, 4),
        )
    )
    cases.append(
        case(
            "conv2d_k3_g2_same_relu",
            "Conv2D",
            {"filters": 6, "kernel_size": 3, "padding": "same", "groups": 2, "activation": "relu"},
            (2, 7, 8, 4),
        )
    )
    cases.append(
        case(
            "conv2d_k3_s2_g4_valid", "Conv2D", {"filters": 8, "kernel_size": 3, "strides": 2, "groups": 4}, (2, 7, 8, 4)
        )
    )
    cases.append(
        case(
            "conv2d_k3_s2_same_channels_first",
            "Conv2D",
            {"filters": 5, "kernel_size": 3, "strides": 2, "padding": "same", "data_format": "channels_first"},
            (2, 4, 7, 8),
        )
    )
    cases.append(
        case(
            "conv2d_k2x3_valid_channels_first",
            "Conv2D",
            {"filters": 5, "kernel_size": (2, 3), "data_format": "channels_first", "activation": "relu"},
            (2, 4, 7, 8),
        )
    )
    cases.append(
        case(
            "conv2d_k2_s2_same_tanh",
            "Conv2D",
            {"filters": 3, "kernel_size": 2, "strides": 2, "padding": "same", "activation": "tanh"},
            (2, 7, 8, 4),
        )
    )
    return cases


def conv3d_cases():
    shape = (2, 5, 6, 4, 3)
    return [
        case("conv3d_k2_valid", "Conv3D", {"filters": 4, "kernel_size": 2}, shape),
        case(
            "conv3d_k3_s2_same_relu",
            "Conv3D",
            {"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same", "activation": "relu"},
            shape,
        ),
        case(
            "conv3d_k1x2x3_s1x2x1_same",
            "Conv3D",
            {"filters": 4, "kernel_size": (1, 2, 3), "strides": (1, 2, 1), "padding": "same"},
            shape,
        ),
        case(
            "conv3d_k2_d2_valid_nobias",
            "Conv3D",
            {"filters": 4, "kernel_size": 2, "dilation_rate": 2, "use_bias": False},
            shape,
        ),
        case("conv3d_k2_g3_same", "Conv3D", {"filters": 6, "kernel_size": 2, "padding": "same", "groups": 3}, shape),
        case(
            "conv3d_k2_same_channels_first",
            "Conv3D",
            {"filters": 4, "kernel_size": 2, "padding": "same", "data_format": "channels_first"},
            (2, 3, 5, 6, 4),
        ),
    ]


def conv_transpose_cases():
    cases = []
    shape1 = (2, 5, 4)
    specs1 = [
        ("k3_s1_valid", {"kernel_size": 3}),
        ("k3_s1_same", {"kernel_size": 3, "padding": "same"}),
        ("k2_s1_same", {"kernel_size": 2, "padding": "same"}),
        ("k3_s2_valid", {"kernel_size": 3, "strides": 2}),
        ("k3_s2_same", {"kernel_size": 3, "strides": 2, "padding": "same"}),
        ("k4_s2_same", {"kernel_size": 4, "strides": 2, "padding": "same"}),
        ("k3_s2_valid_op1", {"kernel_size": 3, "strides": 2, "output_padding": 1}),
        ("k3_s2_same_op1", {"kernel_size": 3, "strides": 2, "padding": "same", "output_padding": 1}),
        ("k3_s2_same_op0", {"kernel_size": 3, "strides": 2, "padding": "same", "output_padding": 0}),
        ("k2_s3_valid", {"kernel_size": 2, "strides": 3}),
        ("k2_s3_same", {"kernel_size": 2, "strides": 3, "padding": "same"}),
        ("k3_d2_valid", {"kernel_size": 3, "dilation_rate": 2}),
        ("k3_d2_same_relu", {"kernel_size": 3, "dilation_rate": 2, "padding": "same", "activation": "relu"}),
        ("k3_s2_valid_nobias", {"kernel_size": 3, "strides": 2, "use_bias": False}),
        (
            "k3_s2_same_channels_first",
            {"kernel_size": 3, "strides": 2, "padding": "same", "data_format": "channels_first"},
        ),
    ]
    for name, kwargs in specs1:
        shape = (2, 4, 5) if "channels_first" in name else shape1
        cases.append(case(f"conv1d_transpose_{name}", "Conv1DTranspose", {"filters": 3, **kwargs}, shape))
    shape2 = (2, 4, 5, 3)
    specs2 = [
        ("k3_s1_valid", {"kernel_size": 3}),
        ("k3_s1_same", {"kernel_size": 3, "padding": "same"}),
        ("k3_s2_valid", {"kernel_size": 3, "strides": 2}),
        ("k3_s2_same_relu", {"kernel_size": 3, "strides": 2, "padding": "same", "activation": "relu"}),
        ("k2x3_s2_same", {"kernel_size": (2, 3), "strides": 2, "padding": "same"}),
        ("k3_s2x1_same_op1x0", {"kernel_size": 3, "strides": (2, 1), "padding": "same", "output_padding": (1, 0)}),
        ("k3_s2_valid_op1", {"kernel_size": 3, "strides": 2, "output_padding": 1}),
        ("k2_s3_valid", {"kernel_size": 2, "strides": 3}),
        ("k3_d2_valid", {"kernel_size": 3, "dilation_rate": 2}),
        ("k2x3_d2_same", {"kernel_size": (2, 3), "dilation_rate": 2, "padding": "same"}),
        ("k3_s2_valid_nobias", {"kernel_size": 3, "strides": 2, "use_bias": False}),
        (
            "k3_s2_same_channels_first",
            {"kernel_size": 3, "strides": 2, "padding": "same", "data_format": "channels_first"},
        ),
    ]
    for name, kwargs in specs2:
        shape = (2, 3, 4, 5) if "channels_first" in name else shape2
        cases.append(case(f"conv2d_transpose_{name}", "Conv2DTranspose", {"filters": 4, **kwargs}, shape))
    return cases


def separable_depthwise_cases():
    shape = (2, 7, 8, 3)
    return [
        case("separable_conv2d_dm1_k3_valid", "SeparableConv2D", {"filters": 5, "kernel_size": 3}, shape),
        case(
            "separable_conv2d_dm2_k3_same_relu",
            "SeparableConv2D",
            {"filters": 5, "kernel_size": 3, "padding": "same", "depth_multiplier": 2, "activation": "relu"},
            shape,
        ),
        case(
            "separable_conv2d_dm2_k2x3_s2_same",
            "SeparableConv2D",
            {"filters": 4, "kernel_size": (2, 3), "strides": 2, "padding": "same", "depth_multiplier": 2},
            shape,
        ),
        case(
            "separable_conv2d_dm1_k3_d2_same_nobias",
            "SeparableConv2D",
            {"filters": 4, "kernel_size": 3, "dilation_rate": 2, "padding": "same", "use_bias": False},
            shape,
        ),
        case("depthwise_conv2d_dm1_k3_valid", "DepthwiseConv2D", {"kernel_size": 3}, shape),
        case(
            "depthwise_conv2d_dm2_k3_same",
            "DepthwiseConv2D",
            {"kernel_size": 3, "padding": "same", "depth_multiplier": 2},
            shape,
        ),
        case(
            "depthwise_conv2d_dm1_k3_s2_same",
            "DepthwiseConv2D",
            {"kernel_size": 3, "strides": 2, "padding": "same"},
            shape,
        ),
        case(
            "depthwise_conv2d_dm2_k2x3_s2_valid_relu",
            "DepthwiseConv2D",
            {"kernel_size": (2, 3), "strides": 2, "depth_multiplier": 2, "activation": "relu"},
            shape,
        ),
        case(
            "depthwise_conv2d_dm1_k3_d2_same_nobias",
            "DepthwiseConv2D",
            {"kernel_size": 3, "dilation_rate": 2, "padding": "same", "use_bias": False},
            shape,
        ),
        case(
            "depthwise_conv2d_dm2_k3_same_channels_first",
            "DepthwiseConv2D",
            {"kernel_size": 3, "padding": "same", "depth_multiplier": 2, "data_format": "channels_first"},
            (2, 3, 7, 8),
        ),
    ]


def pooling_cases():
    cases = []
    specs1 = [
        ("p2", {"pool_size": 2}),
        ("p2_same", {"pool_size": 2, "padding": "same"}),
        ("p3_s1_same", {"pool_size": 3, "strides": 1, "padding": "same"}),
        ("p3_s2_valid", {"pool_size": 3, "strides": 2}),
        ("p3_s2_same", {"pool_size": 3, "strides": 2, "padding": "same"}),
        ("p2_s3_valid", {"pool_size": 2, "strides": 3}),
        ("p2_s3_same", {"pool_size": 2, "strides": 3, "padding": "same"}),
        ("p4_s1_same", {"pool_size": 4, "strides": 1, "padding": "same"}),
    ]
    for kind in ("max", "average"):
        cls = "MaxPooling1D" if kind == "max" else "AveragePooling1D"
        for name, kwargs in specs1:
            cases.append(case(f"{kind}_pooling1d_{name}", cls, kwargs, (2, 9, 3)))
        cases.append(case(f"{kind}_pooling1d_p3_same_len8", cls, {"pool_size": 3, "padding": "same"}, (2, 8, 3)))
        cases.append(
            case(
                f"{kind}_pooling1d_p2_same_channels_first",
                cls,
                {"pool_size": 2, "padding": "same", "data_format": "channels_first"},
                (2, 3, 9),
            )
        )
    specs2 = [
        ("p2", {"pool_size": 2}),
        ("p3_same", {"pool_size": 3, "padding": "same"}),
        ("p2x3_s1_same", {"pool_size": (2, 3), "strides": 1, "padding": "same"}),
        ("p3_s2_valid", {"pool_size": 3, "strides": 2}),
        ("p3_s2_same", {"pool_size": 3, "strides": 2, "padding": "same"}),
        ("p2_s3_valid", {"pool_size": 2, "strides": 3}),
        ("p2_s3_same", {"pool_size": 2, "strides": 3, "padding": "same"}),
        ("p3_s1x2_same", {"pool_size": 3, "strides": (1, 2), "padding": "same"}),
        ("p2x1_valid", {"pool_size": (2, 1)}),
    ]
    for kind in ("max", "average"):
        cls = "MaxPooling2D" if kind == "max" else "AveragePooling2D"
        for name, kwargs in specs2:
            cases.append(case(f"{kind}_pooling2d_{name}", cls, kwargs, (2, 7, 8, 3)))
        cases.append(
            case(
                f"{kind}_pooling2d_p2_same_channels_first",
                cls,
                {"pool_size": 2, "padding": "same", "data_format": "channels_first"},
                (2, 3, 7, 8),
            )
        )
        cases.append(
            case(
                f"{kind}_pooling2d_p3_s2_valid_channels_first",
                cls,
                {"pool_size": 3, "strides": 2, "data_format": "channels_first"},
                (2, 3, 7, 8),
            )
        )
    specs3 = [
        ("p2", {"pool_size": 2}),
        ("p3_s2_same", {"pool_size": 3, "strides": 2, "padding": "same"}),
        ("p1x2x3_s1_same", {"pool_size": (1, 2, 3), "strides": 1, "padding": "same"}),
        ("p2_s3_valid", {"pool_size": 2, "strides": 3}),
    ]
    for kind in ("max", "average"):
        cls = "MaxPooling3D" if kind == "max" else "AveragePooling3D"
        for name, kwargs in specs3:
            cases.append(case(f"{kind}_pooling3d_{name}", cls, kwargs, (2, 5, 6, 4, 2)))
        cases.append(
            case(
                f"{kind}_pooling3d_p2_same_channels_first",
                cls,
                {"pool_size": 2, "padding": "same", "data_format": "channels_first"},
                (2, 2, 5, 6, 4),
            )
        )
    for kind, prefix in (("max", "GlobalMaxPooling"), ("average", "GlobalAveragePooling")):
        for keepdims in (False, True):
            suffix = "_keepdims" if keepdims else ""
            cases.append(case(f"global_{kind}_pooling1d{suffix}", f"{prefix}1D", {"keepdims": keepdims}, (2, 9, 3)))
            cases.append(case(f"global_{kind}_pooling2d{suffix}", f"{prefix}2D", {"keepdims": keepdims}, (2, 7, 8, 3)))
        cases.append(
            case(f"global_{kind}_pooling1d_channels_first", f"{prefix}1D", {"data_format": "channels_first"}, (2, 3, 9))
        )
        cases.append(
            case(
                f"global_{kind}_pooling2d_channels_first_keepdims",
                f"{prefix}2D",
                {"data_format": "channels_first", "keepdims": True},
                (2, 3, 7, 8),
            )
        )
    return cases


def reshaping_cases():
    cases = [
        case("up_sampling1d_2", "UpSampling1D", {"size": 2}, (2, 5, 3)),
        case("up_sampling1d_3", "UpSampling1D", {"size": 3}, (2, 5, 3)),
    ]
    for interpolation in ("nearest", "bilinear"):
        cases.append(
            case(
                f"up_sampling2d_2_{interpolation}",
                "UpSampling2D",
                {"size": 2, "interpolation": interpolation},
                (2, 4, 5, 3),
            )
        )
        cases.append(
            case(
                f"up_sampling2d_2x3_{interpolation}",
                "UpSampling2D",
                {"size": (2, 3), "interpolation": interpolation},
                (2, 4, 5, 3),
            )
        )
        cases.append(
            case(
                f"up_sampling2d_3x2_{interpolation}_channels_first",
                "UpSampling2D",
                {"size": (3, 2), "interpolation": interpolation, "data_format": "channels_first"},
                (2, 3, 4, 5),
            )
        )
    cases += [
        case("zero_padding1d_1", "ZeroPadding1D", {"padding": 1}, (2, 5, 3)),
        case("zero_padding1d_1x2", "ZeroPadding1D", {"padding": (1, 2)}, (2, 5, 3)),
        case("zero_padding2d_1", "ZeroPadding2D", {"padding": 1}, (2, 4, 5, 3)),
        case("zero_padding2d_1x2", "ZeroPadding2D", {"padding": (1, 2)}, (2, 4, 5, 3)),
        case("zero_padding2d_10x23", "ZeroPadding2D", {"padding": ((1, 0), (2, 3))}, (2, 4, 5, 3)),
        case(
            "zero_padding2d_10x23_channels_first",
            "ZeroPadding2D",
            {"padding": ((1, 0), (2, 3)), "data_format": "channels_first"},
            (2, 3, 4, 5),
        ),
        case("cropping1d_1", "Cropping1D", {"cropping": 1}, (2, 7, 3)),
        case("cropping1d_1x2", "Cropping1D", {"cropping": (1, 2)}, (2, 7, 3)),
        case("cropping2d_1", "Cropping2D", {"cropping": 1}, (2, 6, 7, 3)),
        case("cropping2d_1x2", "Cropping2D", {"cropping": (1, 2)}, (2, 6, 7, 3)),
        case("cropping2d_10x21", "Cropping2D", {"cropping": ((1, 0), (2, 1))}, (2, 6, 7, 3)),
        case(
            "cropping2d_10x21_channels_first",
            "Cropping2D",
            {"cropping": ((1, 0), (2, 1)), "data_format": "channels_first"},
            (2, 3, 6, 7),
        ),
    ]
    return cases


def normalization_cases():
    return [
        case("batch_normalization_4d", "BatchNormalization", {"momentum": 0.9}, (2, 4, 5, 3), training=True),
        case("batch_normalization_default_momentum", "BatchNormalization", {}, (2, 4, 5, 3), training=True),
        case(
            "batch_normalization_2d_epsilon",
            "BatchNormalization",
            {"momentum": 0.9, "epsilon": 0.01},
            (6, 4),
            training=True,
        ),
        case(
            "batch_normalization_axis1", "BatchNormalization", {"axis": 1, "momentum": 0.9}, (2, 3, 4, 5), training=True
        ),
        case(
            "batch_normalization_no_center",
            "BatchNormalization",
            {"momentum": 0.9, "center": False},
            (2, 5, 3),
            training=True,
        ),
        case(
            "batch_normalization_no_scale",
            "BatchNormalization",
            {"momentum": 0.9, "scale": False},
            (2, 5, 3),
            training=True,
        ),
        case(
            "batch_normalization_no_center_no_scale",
            "BatchNormalization",
            {"momentum": 0.9, "center": False, "scale": False},
            (2, 5, 3),
            training=True,
        ),
        case("layer_normalization_last", "LayerNormalization", {}, (2, 3, 4, 5)),
        case("layer_normalization_last_no_center", "LayerNormalization", {"center": False}, (2, 3, 4, 5)),
        case("layer_normalization_last_no_scale", "LayerNormalization", {"scale": False}, (2, 3, 4, 5)),
        case(
            "layer_normalization_last_no_center_no_scale",
            "LayerNormalization",
            {"center": False, "scale": False},
            (2, 3, 4, 5),
        ),
        case("layer_normalization_axes_2_3", "LayerNormalization", {"axis": [2, 3]}, (2, 3, 4, 5)),
        case("layer_normalization_axes_1_3", "LayerNormalization", {"axis": [1, 3], "epsilon": 1e-5}, (2, 3, 4, 5)),
        case(
            "layer_normalization_axes_3_1",
            "LayerNormalization",
            {"axis": [3, 1]},
            (2, 3, 4, 5),
            note="Keras sorts the axes: gamma is (3, 5)",
        ),
        case("layer_normalization_axes_neg", "LayerNormalization", {"axis": [-3, -2, -1]}, (2, 3, 4, 5)),
        case("spatial_dropout2d_inference", "SpatialDropout2D", {"rate": 0.5}, (2, 4, 5, 3)),
        case("gaussian_noise_inference", "GaussianNoise", {"stddev": 0.3}, (2, 4, 5, 3)),
    ]


def layer_cases():
    """Every per-layer case, in a fixed order."""
    cases = (
        conv1d_cases()
        + conv2d_cases()
        + conv3d_cases()
        + conv_transpose_cases()
        + separable_depthwise_cases()
        + pooling_cases()
        + reshaping_cases()
        + normalization_cases()
    )
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


# Layers whose training-mode output is random: only their inference output is recorded.
RANDOM_IN_TRAINING = ("SpatialDropout2D", "GaussianNoise")


def run_layer_case(record, x=None, weights=None):
    """Builds the layer of `record`, sets weights, runs it; returns (meta, arrays)."""
    kwargs = python_kwargs(json.loads(json.dumps(record["kwargs"])))
    layer = getattr(keras.layers, record["class"])(**kwargs)
    shape = tuple(record["input_shape"])
    if x is None:
        x = on_grid(np.random.default_rng(INPUT_SEED).uniform(-1.0, 1.0, size=shape))
    layer.build(shape)
    if weights is None:
        rng = np.random.default_rng(WEIGHT_SEED)
        weights = [draw_weight(rng, record["class"], v.name, v.shape) for v in layer.weights]
    layer.set_weights(weights)
    output = to_numpy(layer(x))
    meta = {
        **record,
        "weights": [{"name": v.name, "shape": list(v.shape), "trainable": v.trainable} for v in layer.weights],
        "output_shape": list(output.shape),
        "symbolic_output_shape": list(layer.compute_output_shape((None, *shape[1:]))),
    }
    arrays = {"input": x, "output": output}
    for index, array in enumerate(weights):
        arrays[f"weight_{index}"] = array
    if record["class"] not in RANDOM_IN_TRAINING:
        training_output = to_numpy(layer(x, training=True))
        if record["training"]:
            arrays["output_training"] = training_output
            for index, array in enumerate(layer.get_weights()):
                arrays[f"after_training/weight_{index}"] = np.asarray(array)
        else:
            assert np.array_equal(training_output, output), f"{record['id']}: training=True differs"
    return meta, arrays


# ----------------------------------------------------------------------------
# Models


def model_inputs(name):
    """The stored inputs of model `name`: PREDICT_BATCH samples per input, from default_rng(INPUT_SEED)."""
    rng = np.random.default_rng(INPUT_SEED)
    inputs = []
    for shape, kind in INPUTS[name]:
        size = (PREDICT_BATCH, *shape)
        if kind[0] == "int":
            inputs.append(rng.integers(0, kind[1], size=size).astype(np.int32))
        else:
            inputs.append(on_grid(rng.uniform(kind[1], kind[2], size=size)))
    return inputs


def reference_model(name):
    """Builds model `name` with the reference weights and records what Keras reports."""
    keras.backend.clear_session()
    model = BUILDERS[name](keras)
    weights = reference_model_weights(model)
    model.set_weights(weights)
    inputs = model_inputs(name)
    feed = inputs[0] if len(inputs) == 1 else inputs
    predicted = model.predict(feed, verbose=0)
    called = model(feed)
    predicted = [np.asarray(p) for p in (predicted if isinstance(predicted, (list, tuple)) else [predicted])]
    called = [to_numpy(c) for c in (called if isinstance(called, (list, tuple)) else [called])]
    meta = {
        "name": model.name,
        "class": type(model).__name__,
        "layer_names": [layer.name for layer in model.layers],
        "layer_classes": [type(layer).__name__ for layer in model.layers],
        "input_tensor_names": [tensor.name for tensor in model.inputs],
        "input_shapes": [list(tensor.shape) for tensor in model.inputs],
        "input_dtypes": [str(tensor.dtype) for tensor in model.inputs],
        "output_shapes": [list(tensor.shape) for tensor in model.outputs],
        "output_names": getattr(model, "output_names", None),
        "count_params": model.count_params(),
        "trainable_params": parameter_count(model.trainable_weights),
        "non_trainable_params": parameter_count(model.non_trainable_weights),
        "weights": [
            {"name": v.name, "path": v.path, "shape": list(v.shape), "trainable": v.trainable} for v in model.weights
        ],
        "summary": {variant: capture_summary(model, **kwargs) for variant, kwargs in SUMMARY_VARIANTS.items()},
    }
    arrays = {}
    for index, array in enumerate(weights):
        arrays[f"weight_{index}"] = array
    for index, array in enumerate(inputs):
        arrays[f"input_{index}"] = array
    for index, array in enumerate(predicted):
        arrays[f"predict_{index}"] = array
    for index, array in enumerate(called):
        arrays[f"call_{index}"] = array
    return meta, arrays


# ----------------------------------------------------------------------------
# One (and a second) training step


def train_step():
    """train_step_convnet, SGD(0.1), categorical cross-entropy, two train_on_batch steps."""
    keras.backend.clear_session()
    model = BUILDERS["train_step_convnet"](keras)
    initial = reference_model_weights(model)
    model.set_weights(initial)
    rng = np.random.default_rng(INPUT_SEED)
    x = on_grid(rng.uniform(-1.0, 1.0, size=(TRAIN_BATCH, 12, 12, 3)))
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, size=TRAIN_BATCH)]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="categorical_crossentropy")
    arrays = {"x": x, "y": y}
    for index, array in enumerate(initial):
        arrays[f"initial/weight_{index}"] = array
    losses = []
    for step in (1, 2):
        losses.append(float(model.train_on_batch(x, y)))
        for index, array in enumerate(model.get_weights()):
            arrays[f"after_{step}/weight_{index}"] = np.asarray(array)
        arrays[f"after_{step}/predict"] = np.asarray(model.predict(x, verbose=0))
    meta = {
        "model": "train_step_convnet",
        "compile": {"optimizer": "SGD", "optimizer_kwargs": {"learning_rate": 0.1}, "loss": "categorical_crossentropy"},
        "optimizer_config": model.optimizer.get_config(),
        "batch": TRAIN_BATCH,
        "weights": [
            {"name": v.name, "path": v.path, "shape": list(v.shape), "trainable": v.trainable} for v in model.weights
        ],
        "losses": losses,
        "iterations": int(to_numpy(model.optimizer.iterations)),
    }
    return meta, arrays


# ----------------------------------------------------------------------------


def generate():
    """Writes every file under data/cnn/."""
    if keras.backend.backend() != "jax":
        raise SystemExit(f"expected the JAX backend, got {keras.backend.backend()!r}")
    import jax

    (DATA / "models").mkdir(parents=True, exist_ok=True)

    index, arrays = [], {}
    for record in layer_cases():
        meta, case_arrays = run_layer_case(record)
        index.append(meta)
        arrays.update({f"{record['id']}/{key}": value for key, value in case_arrays.items()})
    write_json("layers.json", {"cases": index})
    write_npz("layers.npz", arrays)

    for name in BUILDERS:
        meta, model_arrays = reference_model(name)
        write_json(f"models/{name}.json", meta)
        write_npz(f"models/{name}.npz", model_arrays)
        outputs = [model_arrays[k] for k in sorted(model_arrays) if k.startswith("predict_")]
        stats = ", ".join(f"|y|max {np.abs(o).max():.3g} zeros {np.mean(o == 0):.2f}" for o in outputs)
        print(f"{name}: {meta['count_params']:,} params; {stats}")

    meta, train_arrays = train_step()
    write_json("train_step.json", meta)
    write_npz("train_step.npz", train_arrays)
    print(f"train_step losses {meta['losses']}")

    write_json(
        "versions.json",
        {
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "jax": jax.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "COLUMNS": os.environ["COLUMNS"],
        },
    )
    total = sum(path.stat().st_size for path in DATA.rglob("*") if path.is_file())
    print(f"wrote {len(index)} layer cases, {len(BUILDERS)} models to {DATA} ({total / 1e6:.2f} MB)")


def scaled_difference(got, want):
    """Largest |got - want| over max(|want|) (absolute when want is all zeros)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)) if want.size else 0.0


def compare_backend():
    """Recomputes the stored layer cases and model predictions on this backend; prints differences."""
    with open(DATA / "layers.json", encoding="utf-8") as handle:
        index = json.load(handle)["cases"]
    stored = np.load(DATA / "layers.npz")
    worst = []
    for record in index:
        case_id = record["id"]
        weights = [stored[f"{case_id}/weight_{i}"] for i in range(len(record["weights"]))]
        try:
            _, arrays = run_layer_case(record, x=stored[f"{case_id}/input"], weights=weights)
        except Exception as error:  # noqa: BLE001 - report and go on
            print(f"{case_id}: {type(error).__name__}: {error}")
            continue
        for key in arrays:
            if key.startswith("output") or key.startswith("after_training"):
                diff = scaled_difference(arrays[key], stored[f"{case_id}/{key}"])
                worst.append((diff, f"{case_id}/{key}"))
    worst.sort(reverse=True)
    print(f"layer cases on {keras.backend.backend()}: largest scaled differences")
    for diff, key in worst[:15]:
        print(f"  {diff:.3g}  {key}")
    for name in BUILDERS:
        keras.backend.clear_session()
        model = BUILDERS[name](keras)
        data = np.load(DATA / "models" / f"{name}.npz")
        model.set_weights([data[f"weight_{i}"] for i in range(len(model.weights))])
        inputs = [data[k] for k in sorted((k for k in data.files if k.startswith("input_")), key=lambda k: int(k[6:]))]
        predicted = model.predict(inputs[0] if len(inputs) == 1 else inputs, verbose=0)
        predicted = predicted if isinstance(predicted, (list, tuple)) else [predicted]
        diffs = [scaled_difference(p, data[f"predict_{i}"]) for i, p in enumerate(predicted)]
        print(f"model {name}: scaled differences {['%.3g' % d for d in diffs]}")


if __name__ == "__main__":
    if COMPARE_BACKEND:
        compare_backend()
    else:
        generate()
