"""Writes `.weights.h5` files with real Keras 3, for pyfuncnet's weights-file tests.

Runs only with Keras 3 on the JAX backend, in its own venv (pyfuncnet is never
imported here). From the repository root:

    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_weights_reference.py

(the venv is made as in README.md: `pip install keras==3.15.1 "jax[cpu]" h5py numpy`).
It rewrites tests/reference/data/weights/ (about 0.75 MB, a few seconds); README.md
lists the files. The builder models get the weights stored in data/models/<name>.npz
(written by make_keras_reference.py), so the predictions stored there are the
predictions of these files' weights. The extra models below are defined here, as
builders taking the Keras module, so that the tests build the same models with
pyfuncnet (`from reference.make_weights_reference import EXTRA_BUILDERS`; importing
this module does not import Keras).

With `--check DIR` it writes nothing and instead loads, with Keras, the files that
pyfuncnet wrote into DIR (tests/test_save_weights.py does this when the environment
variable PYFUNCNET_KERAS_PYTHON names this venv's python): for each
`<name>.weights.h5` there, it builds the model, loads the file, and compares the
weights and the predictions for the inputs with those stored in `<name>.npz`
(`weight_<i>`, `input_<k>`, `predict_<k>`; for trained_adam also `optimizer_<i>`). It exits
with status 1 if any differ.

Example:
    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_weights_reference.py
    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_weights_reference.py --check /tmp/files
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
OUT = DATA / "weights"

# Builders of reference/models.py saved here. feature_extraction is left out: its
# file would repeat mlp_functional's 55,050 weights under another root name.
BUILDER_NAMES = ("mlp_functional", "mlp_sequential", "multi_io", "shared_layers", "nested", "ensemble", "merge_zoo")
WEIGHT_SEED = 0
INPUT_SEED = 1
GRID = 1.0 / 1024
# bfloat16 keeps 8 significant bits: multiples of 1/8 below 4 are exact in it.
BFLOAT16_GRID = 1.0 / 8


def custom_block(keras):
    """A functional model around a custom layer with weights of its own and sub-layers.

    The layer "block" creates `scale` (4,), a non-trainable `count` () and `offset`
    (4,), in that order (Keras saves trainable ones first: scale, offset, count);
    it holds Dense layers in attributes `zdense` and `adense` (walked in sorted
    order: adense, stack, zdense) and a list `stack` of two Dense layers.

    Args:
        keras: the Keras module (`keras` or `pyfuncnet`).

    Returns:
        A `keras.Model` named "custom_block": input "x" (None, 4), output (None, 2).

    Example:
        model = custom_block(keras)
    """

    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.zdense = keras.layers.Dense(3, name="zd")
            self.adense = keras.layers.Dense(3, name="ad")
            self.stack = [keras.layers.Dense(2, activation="tanh", name="s0"), keras.layers.Dense(2, name="s1")]

        def build(self, input_shape):
            size = input_shape[-1]
            self.scale = self.add_weight(shape=(size,), initializer="ones", name="scale")
            self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")
            self.offset = self.add_weight(shape=(size,), initializer="zeros", name="offset")

        def call(self, inputs):
            x = keras.ops.add(keras.ops.multiply(inputs, self.scale), self.offset)
            y = keras.ops.add(self.zdense(x), self.adense(x))
            y = keras.ops.add(y, self.count)
            for layer in self.stack:
                y = layer(y)
            return y

    inputs = keras.Input(shape=(4,), name="x")
    outputs = Block(name="blk")(inputs)
    return keras.Model(inputs=inputs, outputs=outputs, name="custom_block")


def subclassed(keras):
    """A subclassed model whose layers sit in attributes on both sides of "layers".

    Keras walks the attributes in sorted order and a subclassed model has a `layers`
    attribute too: `alpha` and the list `blocks` come before it and are saved under
    their own names; `mlp` and `_hidden` come after it and are saved under
    `layers/dense_<i>`, numbered by their place in `model.layers`.

    Args:
        keras: the Keras module.

    Returns:
        A built subclassed `keras.Model` named "subclassed": (None, 4) -> (None, 2).

    Example:
        model = subclassed(keras)
    """

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.alpha = keras.layers.Dense(5, activation="relu", name="alpha")
            self.mlp = keras.layers.Dense(4, activation="tanh", name="mlp")
            self._hidden = keras.layers.Dense(3, name="hidden")
            self.blocks = [keras.layers.Dense(3, activation="relu", name="block_0"), keras.layers.Dense(2, name="block_1")]

        def call(self, inputs):
            x = self._hidden(self.mlp(self.alpha(inputs)))
            for layer in self.blocks:
                x = layer(x)
            return x

    model = Subclassed()
    model(np.zeros((1, 4), np.float32))
    return model


def sequential_in_sequential(keras):
    """A Sequential model used as a layer of another Sequential model.

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Sequential` named "sequential_in_sequential": (None, 4) -> the
        Sequential "inner" (Dense(3, relu) "inner_dense") -> Dense(2) "outer_dense".

    Example:
        model = sequential_in_sequential(keras)
    """
    inner = keras.Sequential([keras.layers.Dense(3, activation="relu", name="inner_dense")], name="inner")
    return keras.Sequential(
        [keras.Input(shape=(4,)), inner, keras.layers.Dense(2, name="outer_dense")], name="sequential_in_sequential"
    )


def trained_adam(keras):
    """A small functional classifier (6 -> 5 relu -> 3 logits) for optimizer state.

    Args:
        keras: the Keras module.

    Returns:
        An uncompiled `keras.Model` named "trained_adam" with input "features".

    Example:
        model = trained_adam(keras)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=...)
    """
    inputs = keras.Input(shape=(6,), name="features")
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")(inputs)
    logits = keras.layers.Dense(3, name="logits")(hidden)
    return keras.Model(inputs=inputs, outputs=logits, name="trained_adam")


def bfloat16_dense(keras, dtype=None):
    """One Dense(3) layer on (None, 2) inputs in a Sequential model.

    Args:
        keras: the Keras module.
        dtype: the Dense layer's dtype (Keras writes bfloat16 weights with
            `dtype="bfloat16"`; pyfuncnet builds it in float32).

    Returns:
        A `keras.Sequential` named "bfloat16_dense".

    Example:
        model = bfloat16_dense(keras, dtype="bfloat16")
    """
    kwargs = {} if dtype is None else {"dtype": dtype}
    return keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(3, name="dense", **kwargs)], name="bfloat16_dense")


EXTRA_BUILDERS = {
    "custom_block": custom_block,
    "subclassed": subclassed,
    "sequential_in_sequential": sequential_in_sequential,
    "trained_adam": trained_adam,
}
# The extra models saved with seeded weights, (6, 4) inputs and their predictions.
PREDICTED_EXTRAS = ("custom_block", "subclassed", "sequential_in_sequential")

# trained_adam's training: Adam's learning rate and the size of its two batches.
ADAM_LEARNING_RATE = 0.01
TRAIN_BATCH = 8


def _grid(values, step):
    return (np.round(values / step) * step).astype(np.float32)


def _weights_for(model, seed):
    """Keras's reference convention: normal * 0.1 in `get_weights()` order, on the 1/1024 grid."""
    rng = np.random.default_rng(seed)
    return [_grid(rng.normal(size=w.shape) * 0.1, GRID) for w in model.weights]


def main():
    os.environ["KERAS_BACKEND"] = "jax"
    import h5py
    import jax
    import keras

    sys.path.insert(0, str(HERE))
    from models import BUILDERS

    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    arrays = {}

    # The builders of models.py with the weights of data/models/<name>.npz.
    for name in BUILDER_NAMES:
        keras.backend.clear_session()
        model = BUILDERS[name](keras)
        stored = np.load(DATA / "models" / f"{name}.npz")
        weights = [stored[f"weight_{i}"] for i in range(len(model.weights))]
        model.set_weights(weights)
        model.save_weights(OUT / f"{name}.weights.h5")

    # Seeded weights, inputs and Keras's predictions.
    for name in PREDICTED_EXTRAS:
        keras.backend.clear_session()
        model = EXTRA_BUILDERS[name](keras)
        weights = _weights_for(model, WEIGHT_SEED)
        model.set_weights(weights)
        x = _grid(np.random.default_rng(INPUT_SEED).uniform(-1, 1, size=(6, 4)), GRID)
        model.save_weights(OUT / f"{name}.weights.h5")
        for i, w in enumerate(weights):
            arrays[f"{name}/weight_{i}"] = w
        arrays[f"{name}/input"] = x
        arrays[f"{name}/predict"] = np.asarray(model.predict(x, verbose=0))

    # trained_adam: one Adam step, saved (optimizer state included), then a second
    # step whose resulting weights the tests reproduce after loading the file.
    keras.backend.clear_session()
    model = trained_adam(keras)
    initial = _weights_for(model, WEIGHT_SEED)
    model.set_weights(initial)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=ADAM_LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(INPUT_SEED)
    batches = [(_grid(rng.uniform(-1, 1, size=(TRAIN_BATCH, 6)), GRID), (np.arange(TRAIN_BATCH) * (k + 1) % 3).astype(np.int32)) for k in range(2)]
    for i, w in enumerate(initial):
        arrays[f"trained_adam/initial_{i}"] = w
    for k, (x, y) in enumerate(batches, start=1):
        arrays[f"trained_adam/x_{k}"] = x
        arrays[f"trained_adam/y_{k}"] = y
    model.train_on_batch(*batches[0])
    model.save_weights(OUT / "trained_adam.weights.h5")
    for i, w in enumerate(model.get_weights()):
        arrays[f"trained_adam/after_1_{i}"] = w
    model.train_on_batch(*batches[1])
    for i, w in enumerate(model.get_weights()):
        arrays[f"trained_adam/after_2_{i}"] = w

    # bfloat16_dense: Keras stores bfloat16 weights as tagged 2-byte opaque data.
    keras.backend.clear_session()
    model = bfloat16_dense(keras, dtype="bfloat16")
    rng = np.random.default_rng(WEIGHT_SEED)
    weights = [_grid(rng.normal(size=w.shape), BFLOAT16_GRID) for w in model.weights]
    model.set_weights(weights)
    model.save_weights(OUT / "bfloat16_dense.weights.h5")
    for i, w in enumerate(weights):
        arrays[f"bfloat16_dense/weight_{i}"] = w

    np.savez_compressed(OUT / "extras.npz", **arrays)
    versions = {
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "adam_learning_rate": ADAM_LEARNING_RATE,
    }
    (OUT / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")


def check(directory):
    """Loads pyfuncnet-written files from `directory` with Keras and compares.

    Args:
        directory: holds `<name>.weights.h5` and `<name>.npz` per model.

    Returns:
        The list of failure messages (empty when Keras reads every file as written).
    """
    os.environ["KERAS_BACKEND"] = "jax"
    import keras

    sys.path.insert(0, str(HERE))
    from models import BUILDERS

    builders = dict(BUILDERS, **EXTRA_BUILDERS, bfloat16_dense=bfloat16_dense)
    failures = []
    for path in sorted(Path(directory).glob("*.weights.h5")):
        name = path.name[: -len(".weights.h5")]
        expected = np.load(path.with_name(f"{name}.npz"))
        keras.backend.clear_session()
        model = builders[name](keras)
        if name == "trained_adam":
            model.compile(optimizer=keras.optimizers.Adam(learning_rate=ADAM_LEARNING_RATE), loss="mse")
            model.optimizer.build(model.trainable_variables)
        model.load_weights(path)
        for i, got in enumerate(model.get_weights()):
            if not np.array_equal(got, expected[f"weight_{i}"]):
                failures.append(f"{name}: weight {i} differs from the one pyfuncnet saved")
        inputs = [expected[f"input_{k}"] for k in range(len(expected.files)) if f"input_{k}" in expected.files]
        if inputs:
            predicted = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
            predicted = predicted if isinstance(predicted, list) else [predicted]
            for k, got in enumerate(predicted):
                want = expected[f"predict_{k}"]
                if not np.allclose(got, want, rtol=1e-5, atol=1e-6):
                    failures.append(f"{name}: prediction {k} differs by {np.abs(got - want).max()}")
        if name == "trained_adam":
            for i, variable in enumerate(model.optimizer.variables):
                if not np.array_equal(np.asarray(variable), expected[f"optimizer_{i}"]):
                    failures.append(f"{name}: optimizer variable {i} ({variable.path}) differs")
        print(f"{name}: checked")
    return failures


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        problems = check(sys.argv[2])
        print("\n".join(problems) or "Keras read every file as pyfuncnet wrote it")
        sys.exit(1 if problems else 0)
    main()
