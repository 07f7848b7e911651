"""Writes the Keras 3 reference data for mask propagation (tests/test_masking.py).

Runs only with real Keras 3 on the JAX backend, in its own venv (see README.md). From
the repository root:

    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_masking_reference.py

The builders in this file take the Keras module as their argument, so the tests build
the same graphs with pyfuncnet (`import pyfuncnet as keras`); importing the file
imports neither framework (Keras is imported in `main`). It rewrites
tests/reference/data/masking/:

- `graphs.json` + `graphs.npz`: for each builder in GRAPHS (weights set as below), the
  outputs of an eager call `model(x)`, the mask Keras attached to each of them (none stored: no mask),
  which symbolic outputs got a mask while the graph was built, and the layers that
  warned they drop a mask.
- `training.json` + `training.npz`: for each builder in TRAINING, the predictions,
  `evaluate` results (batch size 2; with `sample_weight` where the case has one), the
  History of two epochs of `fit` (batch size 3, no shuffling, SGD at 0.1) and the
  weights after it; `history_torch` is the same History on the torch backend (run in
  a subprocess, see `torch_histories`): its training-step metrics skip the masked
  steps, which JAX's lose (the losses are the same on both).
- `supports_masking.json`: `supports_masking` of each layer in `flag_layers`.
- `versions.json`.

Inputs and weights are on the 1/1024 grid (exact in float32): inputs from
`default_rng(1)` with padding steps zeroed (`make_inputs`), weights from
`default_rng(0)` in `get_weights()` order (`reference_weights`).
"""

import json
import os
import platform
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "masking"
GRID = 1.0 / 1024

# Valid steps per sample of the (5, 5, .) sequences; step 2 of sample 0 is padding too.
LENGTHS = {"x_f": [5, 3, 2, 4, 1], "x_e": [2, 5, 1, 3, 5], "x_g": [3, 1, 2, 1, 3]}


def on_grid(values):
    return (np.round(np.asarray(values) / GRID) * GRID).astype(np.float32)


def valid_steps(name, steps):
    keep = np.arange(steps)[None, :] < np.array(LENGTHS[name])[:, None]
    if name == "x_f":
        keep[0, 2] = False
    return keep


def make_inputs():
    """The named input arrays every case draws from."""
    rng = np.random.default_rng(1)
    out = {}
    for name, steps in (("x_f", 5), ("x_e", 5), ("x_g", 3)):
        keep = valid_steps(name, steps)
        out[name] = on_grid(rng.uniform(-1, 1, (5, steps, 4))) * keep[..., None]
        out[f"{name}_mask"] = keep
    # x_f with padding steps of 0.5 (for Masking(mask_value=0.5)).
    out["x_h"] = np.where(out["x_f_mask"][..., None], out["x_f"], np.float32(0.5)).astype(np.float32)
    out["ids"] = (rng.integers(1, 7, (5, 5)) * out["x_f_mask"]).astype(np.int32)
    out["y_seq"] = on_grid(rng.uniform(-1, 1, (5, 5, 1)))
    out["y_cls"] = rng.integers(0, 3, (5, 5)).astype(np.int32)
    out["y_vec"] = on_grid(rng.uniform(-1, 1, (5, 1)))
    out["sw_seq"] = on_grid(rng.uniform(0.25, 2.0, (5, 5)))
    return out


# ----------------------------------------------------------------------------
# Custom layers, written once for both frameworks


def custom_layers(keras):
    ops = keras.ops

    class MaskedScale(keras.layers.Layer):
        """Doubles the valid steps and zeroes the masked ones; the output mask keeps
        only the valid steps that have a positive feature."""

        def call(self, inputs, mask=None):
            if mask is None:
                return inputs * 2.0
            return inputs * ops.expand_dims(ops.cast(mask, "float32"), -1) * 2.0

        def compute_mask(self, inputs, mask=None):
            positive = ops.greater(ops.max(inputs, axis=-1), 0.0)
            if mask is None:
                return positive
            return ops.not_equal(ops.multiply(ops.cast(mask, "float32"), ops.cast(positive, "float32")), 0.0)

    class MaskedSum(keras.layers.Layer):
        """Sums the valid steps; it uses the mask but has no `compute_mask`, so it
        does not support masking (Keras warns that it drops the mask)."""

        def call(self, inputs, mask=None):
            if mask is None:
                return ops.sum(inputs, axis=1)
            return ops.sum(inputs * ops.expand_dims(ops.cast(mask, "float32"), -1), axis=1)

    class TwoMasks(keras.layers.Layer):
        """Called as `layer(a, b)`: gets `a_mask` and `b_mask` (Keras's rule for
        several tensor arguments) and returns the masked sum, with `a`'s mask."""

        def call(self, a, b, a_mask=None, b_mask=None):
            wa = ops.expand_dims(ops.cast(a_mask, "float32"), -1)
            wb = ops.expand_dims(ops.cast(b_mask, "float32"), -1)
            return a * wa + b * wb * 10.0

        def compute_mask(self, a, mask=None):
            return mask

    return MaskedScale, MaskedSum, TwoMasks


# ----------------------------------------------------------------------------
# Graphs: each returns (model, names of its inputs in make_inputs())


def _inp(keras, name, steps=5):
    if name == "ids":
        return keras.Input((steps,), dtype="int32", name=name)
    return keras.Input((steps, 4), name=name)


def g_embedding(keras):
    i = _inp(keras, "ids")
    return keras.Model(i, keras.layers.Embedding(7, 3, mask_zero=True, name="emb")(i)), ["ids"]


def g_embedding_no_mask_zero(keras):
    i = _inp(keras, "ids")
    return keras.Model(i, keras.layers.Embedding(7, 3, name="emb")(i)), ["ids"]


def g_masking(keras):
    i = _inp(keras, "x_f")
    return keras.Model(i, keras.layers.Masking(name="masking")(i)), ["x_f"]


def g_masking_value(keras):
    i = _inp(keras, "x_h")
    return keras.Model(i, keras.layers.Masking(mask_value=0.5, name="masking")(i)), ["x_h"]


def g_pass_through(keras):
    L = keras.layers
    i = _inp(keras, "x_f")
    x = L.Masking(name="masking")(i)
    x = L.Dense(3, activation="tanh", name="dense")(x)
    x = L.Activation("relu", name="act")(x)
    x = L.Dropout(0.5, name="drop")(x)
    x = L.SpatialDropout1D(0.5, name="sdrop")(x)
    x = L.GaussianNoise(0.1, name="noise")(x)
    x = L.GaussianDropout(0.2, name="gdrop")(x)
    x = L.ActivityRegularization(l1=0.01, name="reg")(x)
    x = L.LayerNormalization(name="ln")(x)
    x = L.BatchNormalization(name="bn")(x)
    return keras.Model(i, x), ["x_f"]


def g_gap1d(keras):
    i = _inp(keras, "x_f")
    x = keras.layers.Masking(name="masking")(i)
    return keras.Model(i, keras.layers.GlobalAveragePooling1D(name="gap")(x)), ["x_f"]


def g_gap1d_keepdims(keras):
    i = _inp(keras, "x_f")
    x = keras.layers.Masking(name="masking")(i)
    return keras.Model(i, keras.layers.GlobalAveragePooling1D(keepdims=True, name="gap")(x)), ["x_f"]


def g_gap1d_channels_first(keras):
    i = _inp(keras, "ids")
    x = keras.layers.Embedding(7, 3, mask_zero=True, name="emb")(i)
    x = keras.layers.Lambda(lambda t: keras.ops.transpose(t, (0, 2, 1)), mask=lambda t, m: m, name="to_cf")(x)
    return keras.Model(i, keras.layers.GlobalAveragePooling1D(data_format="channels_first", name="gap")(x)), ["ids"]


def g_global_max(keras):
    i = _inp(keras, "x_f")
    x = keras.layers.Masking(name="masking")(i)
    return keras.Model(i, keras.layers.GlobalMaxPooling1D(name="gmp")(x)), ["x_f"]


def g_concat_features(keras):
    a, b = _inp(keras, "x_f"), _inp(keras, "x_e")
    x = keras.layers.Concatenate(name="cat")([keras.layers.Masking(name="ma")(a), keras.layers.Masking(name="mb")(b)])
    return keras.Model([a, b], x), ["x_f", "x_e"]


def g_concat_time(keras):
    a, b = _inp(keras, "x_f"), _inp(keras, "x_g", 3)
    x = keras.layers.Concatenate(axis=1, name="cat")([keras.layers.Masking(name="ma")(a), keras.layers.Masking(name="mb")(b)])
    return keras.Model([a, b], x), ["x_f", "x_g"]


def g_concat_time_one_mask(keras):
    a, b = _inp(keras, "x_f"), _inp(keras, "x_g", 3)
    x = keras.layers.Concatenate(axis=1, name="cat")([keras.layers.Masking(name="ma")(a), b])
    return keras.Model([a, b], x), ["x_f", "x_g"]


def g_merges(keras):
    L = keras.layers
    a, b = _inp(keras, "x_f"), _inp(keras, "x_e")
    pair = [L.Masking(name="ma")(a), L.Masking(name="mb")(b)]
    outs = [
        L.Add(name="add")(pair),
        L.Subtract(name="sub")(pair),
        L.Multiply(name="mul")(pair),
        L.Average(name="avg")(pair),
        L.Maximum(name="max")(pair),
        L.Minimum(name="min")(pair),
        L.Dot(axes=2, name="dot")(pair),
        L.Add(name="add_one_mask")([pair[0], b]),
    ]
    return keras.Model([a, b], outs), ["x_f", "x_e"]


def g_flatten(keras):
    i = _inp(keras, "x_f")
    x = keras.layers.Masking(name="masking")(i)
    return keras.Model(i, keras.layers.Flatten(name="flat")(x)), ["x_f"]


def g_reshape(keras):
    i = _inp(keras, "x_f")
    x = keras.layers.Masking(name="masking")(i)
    return keras.Model(i, keras.layers.Reshape((20,), name="reshape")(x)), ["x_f"]


def g_lambda_no_mask(keras):
    i = _inp(keras, "x_f")
    x = keras.layers.Masking(name="masking")(i)
    return keras.Model(i, keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)), ["x_f"]


def g_lambda_mask(keras):
    i = _inp(keras, "x_f")
    x = keras.layers.Masking(name="masking")(i)
    y = keras.layers.Lambda(lambda t: t * 2.0, mask=lambda t, m: m, name="double")(x)
    return keras.Model(i, y), ["x_f"]


def g_lambda_uses_mask(keras):
    ops = keras.ops
    i = _inp(keras, "x_h")
    x = keras.layers.Masking(mask_value=0.5, name="masking")(i)
    fn = lambda t, mask: t + 3.0 * ops.expand_dims(ops.cast(mask, "float32"), -1)  # noqa: E731
    y = keras.layers.Lambda(fn, output_shape=(5, 4), mask=lambda t, m: m, name="shift")(x)
    return keras.Model(i, y), ["x_h"]


def g_custom(keras):
    MaskedScale, _, _ = custom_layers(keras)
    i = _inp(keras, "x_f")
    x = keras.layers.Masking(name="masking")(i)
    return keras.Model(i, MaskedScale(name="scale")(x)), ["x_f"]


def g_custom_no_input_mask(keras):
    MaskedScale, _, _ = custom_layers(keras)
    i = _inp(keras, "x_f")
    return keras.Model(i, MaskedScale(name="scale")(i)), ["x_f"]


def g_custom_consumer(keras):
    _, MaskedSum, _ = custom_layers(keras)
    i = _inp(keras, "x_f")
    x = keras.layers.Masking(name="masking")(i)
    return keras.Model(i, MaskedSum(name="msum")(x)), ["x_f"]


def g_custom_two_args(keras):
    _, _, TwoMasks = custom_layers(keras)
    a, b = _inp(keras, "x_f"), _inp(keras, "x_e")
    ma, mb = keras.layers.Masking(name="ma")(a), keras.layers.Masking(name="mb")(b)
    return keras.Model([a, b], TwoMasks(name="two")(ma, mb)), ["x_f", "x_e"]


def g_nested(keras):
    inner_in = _inp(keras, "x_f")
    inner = keras.Model(inner_in, keras.layers.Dense(2, name="inner_dense")(inner_in), name="inner")
    i = _inp(keras, "x_f")
    x = keras.layers.Masking(name="masking")(i)
    return keras.Model(i, keras.layers.Dense(1, name="head")(inner(x))), ["x_f"]


def g_sequential(keras):
    L = keras.layers
    model = keras.Sequential([keras.Input((5, 4)), L.Masking(name="masking"), L.Dense(2, name="dense")], name="seq")
    return model, ["x_f"]


GRAPHS = {
    name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("g_") and callable(fn)
}


# ----------------------------------------------------------------------------
# Training cases: each returns (compiled model, input names, target name, sample weight name or None)


def _sgd(keras):
    return keras.optimizers.SGD(learning_rate=0.1)


def t_embedding_mse(keras):
    L = keras.layers
    i = _inp(keras, "ids")
    x = L.Embedding(7, 4, mask_zero=True, name="emb")(i)
    x = L.Dense(3, activation="tanh", name="hidden")(x)
    model = keras.Model(i, L.Dense(1, name="out")(x))
    model.compile(_sgd(keras), "mse", metrics=["mae"])
    return model, ["ids"], "y_seq", "sw_seq"


def t_embedding_sum_reduction(keras):
    L = keras.layers
    i = _inp(keras, "ids")
    x = L.Embedding(7, 4, mask_zero=True, name="emb")(i)
    model = keras.Model(i, L.Dense(1, name="out")(x))
    model.compile(_sgd(keras), keras.losses.MeanSquaredError(reduction="sum"), metrics=["mae"])
    return model, ["ids"], "y_seq", "sw_seq"


def t_masking_sparse_cce(keras):
    L = keras.layers
    model = keras.Sequential([keras.Input((5, 4)), L.Masking(name="masking"), L.Dense(3, activation="softmax", name="out")], name="seq")
    model.compile(_sgd(keras), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, ["x_f"], "y_cls", None


def t_nested(keras):
    L = keras.layers
    inner_in = _inp(keras, "ids")
    h = L.Embedding(7, 4, mask_zero=True, name="emb")(inner_in)
    inner = keras.Model(inner_in, L.Dense(3, activation="relu", name="hidden")(h), name="inner")
    i = _inp(keras, "ids")
    model = keras.Model(i, L.Dense(1, name="out")(inner(i)))
    model.compile(_sgd(keras), "mse", metrics=["mae"])
    return model, ["ids"], "y_seq", None


def t_gap1d(keras):
    L = keras.layers
    i = _inp(keras, "ids")
    x = L.Embedding(7, 4, mask_zero=True, name="emb")(i)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    model = keras.Model(i, L.Dense(1, name="out")(x))
    model.compile(_sgd(keras), "mse", metrics=["mae"])
    return model, ["ids"], "y_vec", None


def t_custom(keras):
    MaskedScale, _, _ = custom_layers(keras)
    L = keras.layers
    i = _inp(keras, "x_f")
    x = MaskedScale(name="scale")(L.Masking(name="masking")(i))
    model = keras.Model(i, L.Dense(1, name="out")(x))
    model.compile(_sgd(keras), "mse", metrics=["mae"])
    return model, ["x_f"], "y_seq", None


def t_concat(keras):
    L = keras.layers
    ids, xe = _inp(keras, "ids"), _inp(keras, "x_e")
    a = L.Embedding(7, 4, mask_zero=True, name="emb")(ids)
    b = L.Dense(4, name="proj")(L.Masking(name="masking")(xe))
    x = L.Concatenate(name="cat")([a, b])
    model = keras.Model([ids, xe], L.Dense(1, name="out")(x))
    model.compile(_sgd(keras), "mse", metrics=["mae"])
    return model, ["ids", "x_e"], "y_seq", None


def flag_layers(keras):
    """One instance of each layer class whose `supports_masking` is compared."""
    L = keras.layers
    MaskedScale, MaskedSum, TwoMasks = custom_layers(keras)
    return {
        "Activation": L.Activation("relu"),
        "ActivityRegularization": L.ActivityRegularization(),
        "Add": L.Add(),
        "Average": L.Average(),
        "AveragePooling1D": L.AveragePooling1D(2),
        "BatchNormalization": L.BatchNormalization(),
        "Concatenate": L.Concatenate(),
        "Conv1D": L.Conv1D(2, 2),
        "Conv2D": L.Conv2D(2, 2),
        "Cropping1D": L.Cropping1D(),
        "Dense": L.Dense(2),
        "DepthwiseConv1D": L.DepthwiseConv1D(2),
        "Dot": L.Dot(1),
        "Dropout": L.Dropout(0.1),
        "Embedding": L.Embedding(3, 2),
        "Embedding_mask_zero": L.Embedding(3, 2, mask_zero=True),
        "Flatten": L.Flatten(),
        "GaussianDropout": L.GaussianDropout(0.1),
        "GaussianNoise": L.GaussianNoise(0.1),
        "GlobalAveragePooling1D": L.GlobalAveragePooling1D(),
        "GlobalAveragePooling2D": L.GlobalAveragePooling2D(),
        "GlobalMaxPooling1D": L.GlobalMaxPooling1D(),
        "Lambda": L.Lambda(lambda x: x),
        "Lambda_mask": L.Lambda(lambda x: x, mask=lambda x, m: m),
        "Layer": L.Layer(),
        "LayerNormalization": L.LayerNormalization(),
        "Masking": L.Masking(),
        "MaskedScale": MaskedScale(),
        "MaskedSum": MaskedSum(),
        "MaxPooling1D": L.MaxPooling1D(2),
        "Maximum": L.Maximum(),
        "Minimum": L.Minimum(),
        "Multiply": L.Multiply(),
        "Permute": L.Permute((1,)),
        "RepeatVector": L.RepeatVector(2),
        "Reshape": L.Reshape((2,)),
        "SpatialDropout1D": L.SpatialDropout1D(0.1),
        "Subtract": L.Subtract(),
        "TwoMasks": TwoMasks(),
        "UpSampling1D": L.UpSampling1D(),
        "ZeroPadding1D": L.ZeroPadding1D(),
    }


TRAINING = {
    name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("t_") and callable(fn)
}


def reference_weights(model):
    """Weights in `get_weights()` order: `normal * 0.3`, and moving variances
    `uniform(0.5, 2)`, from default_rng(0), on the grid."""
    rng = np.random.default_rng(0)
    weights = []
    for w in model.weights:
        shape = tuple(w.shape)
        if w.name == "moving_variance":
            weights.append(on_grid(rng.uniform(0.5, 2.0, shape)))
        else:
            weights.append(on_grid(rng.normal(size=shape) * 0.3))
    return weights


# ----------------------------------------------------------------------------
# Running Keras


def _warned_layers(caught):
    """Names of the layers that warned they drop a mask."""
    names = []
    for w in caught:
        found = re.match(r"Layer '([^']+)' \(of type \w+\) was passed an input with a mask", str(w.message))
        if found:
            names.append(found.group(1))
    return names


def _build_training(keras, name):
    keras.utils.clear_session()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inputs, target, weight = TRAINING[name](keras)
    model.set_weights(reference_weights(model))
    return model, inputs, target, weight


def _fit(model, data, inputs, target):
    xs = [data[k] for k in inputs]
    return model.fit(xs if len(xs) > 1 else xs[0], data[target], batch_size=3, epochs=2, shuffle=False, verbose=0)


def torch_histories():
    """The fit() Histories on the torch backend, printed as JSON (run by `main` in a
    subprocess): there the metrics of training steps see the output masks, as on
    TensorFlow; on JAX they do not (the mask of the traced predictions does not
    come out of `jax.value_and_grad`), so they are stored from torch."""
    os.environ["KERAS_BACKEND"] = "torch"
    import keras

    assert keras.backend.backend() == "torch"
    data = make_inputs()
    histories = {}
    for name in TRAINING:
        model, inputs, target, _ = _build_training(keras, name)
        histories[name] = _fit(model, data, inputs, target).history
    print(json.dumps(histories, default=float))


def main():
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    from keras.src.backend.common.masking import get_keras_mask

    assert keras.backend.backend() == "jax"
    DATA.mkdir(parents=True, exist_ok=True)
    data = make_inputs()
    arrays = {f"input/{k}": v for k, v in data.items()}

    graphs = {}
    for name, build in GRAPHS.items():
        keras.utils.clear_session()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, inputs = build(keras)
        model.set_weights(reference_weights(model))
        symbolic = [getattr(t, "_keras_mask", None) is not None for t in model.outputs]
        xs = [data[k] for k in inputs]
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            outs = model(xs if len(xs) > 1 else xs[0])
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        masks = []
        for k, out in enumerate(outs):
            arrays[f"graph/{name}/out{k}"] = np.asarray(out)
            mask = get_keras_mask(out)
            masks.append(mask is not None)
            if mask is not None:
                arrays[f"graph/{name}/mask{k}"] = np.asarray(mask)
        graphs[name] = {"inputs": inputs, "warned": _warned_layers(caught), "symbolic_mask": symbolic, "mask": masks}

    flags = {name: bool(layer.supports_masking) for name, layer in flag_layers(keras).items()}
    torch_run = subprocess.run([sys.executable, __file__, "--torch-histories"], capture_output=True, text=True, check=True)
    on_torch = json.loads(torch_run.stdout.strip().splitlines()[-1])
    training = {}
    for name in TRAINING:
        model, inputs, target, weight = _build_training(keras, name)
        xs = [data[k] for k in inputs]
        x = xs if len(xs) > 1 else xs[0]
        y = data[target]
        record = {"inputs": inputs, "target": target, "sample_weight": weight}
        arrays[f"train/{name}/predict"] = model.predict(x, verbose=0)
        record["evaluate"] = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
        if weight is not None:
            record["evaluate_weighted"] = model.evaluate(x, y, sample_weight=data[weight], batch_size=2, verbose=0, return_dict=True)
        record["history"] = _fit(model, data, inputs, target).history
        record["history_torch"] = on_torch[name]
        for k, w in enumerate(model.get_weights()):
            arrays[f"train/{name}/weight{k}"] = w
        training[name] = record

    np.savez_compressed(DATA / "graphs.npz", **{k: v for k, v in arrays.items() if not k.startswith("train/")})
    np.savez_compressed(DATA / "training.npz", **{k: v for k, v in arrays.items() if k.startswith("train/")})
    for file_name, content in (("graphs.json", graphs), ("training.json", training), ("supports_masking.json", flags)):
        with open(DATA / file_name, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=1, sort_keys=True, default=float)
            handle.write("\n")
    import jax
    import torch

    versions = {
        "keras": keras.__version__,
        "backend": "jax (history_torch: torch)",
        "jax": jax.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    with open(DATA / "versions.json", "w", encoding="utf-8") as handle:
        json.dump(versions, handle, indent=1)
        handle.write("\n")
    print(f"wrote {len(graphs)} graphs and {len(training)} training cases to {DATA}")


if __name__ == "__main__":
    sys.exit(torch_histories() if "--torch-histories" in sys.argv else main())
