"""`model.save_weights` / `model.load_weights` in Keras 3's `.weights.h5` format.

References: files written by real Keras 3.15 (tests/reference/data/weights, made by
tests/reference/make_weights_reference.py), the weights and predictions Keras
produced for the same models (tests/reference/data/models), and the HDF5 contents
read back with h5py. A Keras venv can also check the other direction: set
PYFUNCNET_KERAS_PYTHON to its python to have Keras load files pyfuncnet wrote.
"""

import json
import os
import subprocess
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pyfuncnet as keras
from pyfuncnet.callbacks import LambdaCallback, ModelCheckpoint
from pyfuncnet.saving import weights_h5
from reference.make_weights_reference import BUILDER_NAMES, EXTRA_BUILDERS, PREDICTED_EXTRAS, bfloat16_dense
from reference.models import BUILDERS, INPUT_SHAPES

REFERENCE = os.path.join(os.path.dirname(__file__), "reference")
DATA = os.path.join(REFERENCE, "data")
KERAS_FILES = os.path.join(DATA, "weights")
EXTRAS = np.load(os.path.join(KERAS_FILES, "extras.npz"))
# Per-sample input shapes of every model these tests build.
SHAPES = dict(INPUT_SHAPES, custom_block=[(4,)], subclassed=[(4,)], sequential_in_sequential=[(4,)], trained_adam=[(6,)])


def keras_file(name):
    return os.path.join(KERAS_FILES, f"{name}.weights.h5")


def build(name):
    keras.backend.clear_session()
    return dict(BUILDERS, **EXTRA_BUILDERS)[name](keras)


def numbered(arrays, prefix):
    keys = sorted((k for k in arrays.files if k.startswith(prefix + "_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    return [arrays[k] for k in keys]


def model_reference(name):
    return np.load(os.path.join(DATA, "models", f"{name}.npz"))


def random_weights(model, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=w.shape).astype(np.float32) * 0.3 for w in model.weights]


def random_inputs(name, seed=5, batch=4):
    rng = np.random.default_rng(seed)
    x = [rng.uniform(-1, 1, size=(batch,) + shape).astype(np.float32) for shape in SHAPES[name]]
    return x if len(x) > 1 or name == "feature_extraction" else x[0]


def as_list(outputs):
    return outputs if isinstance(outputs, list) else [outputs]


def listing(path):
    """Everything in an HDF5 file: group -> attributes, dataset -> (shape, dtype, attributes)."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = ("group", dict(f.attrs))

        def visit(name, obj):
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                out[name] = ("dataset", obj.shape, str(obj.dtype), attrs)
            else:
                out[name] = ("group", attrs)

        f.visititems(visit)
    return out


def datasets(path):
    with h5py.File(path, "r") as f:
        found = {}
        f.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return found


def same_weights(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(a, b))


def mlp(hidden=64, extra_layer=False):
    """mlp_functional's architecture, optionally with another width or one more layer."""
    keras.backend.clear_session()
    inputs = keras.Input(shape=(784,), name="digits")
    x = keras.layers.Dense(64, activation="relu", name="dense_1")(inputs)
    x = keras.layers.Dense(hidden, activation="relu", name="dense_2")(x)
    outputs = keras.layers.Dense(10, name="predictions")(x)
    if extra_layer:
        outputs = keras.layers.Dense(2, name="extra")(outputs)
    return keras.Model(inputs, outputs, name="mlp_functional")


# ----------------------------------------------------------------------------
# Round trips in pyfuncnet


@pytest.mark.parametrize("name", sorted(BUILDERS) + sorted(EXTRA_BUILDERS))
def test_round_trip_restores_every_weight_and_the_predictions(name, tmp_path):
    saved = build(name)
    saved.set_weights(random_weights(saved, seed=1))
    path = tmp_path / "m.weights.h5"
    saved.save_weights(path)
    x = random_inputs(name)
    want = as_list(saved.predict(x, verbose=0))

    loaded = build(name)
    assert not same_weights(loaded.get_weights(), saved.get_weights())
    loaded.load_weights(str(path))
    assert same_weights(loaded.get_weights(), saved.get_weights())
    for got, expected in zip(as_list(loaded.predict(x, verbose=0)), want):
        np.testing.assert_array_equal(got, expected)


def test_functional_and_sequential_files_load_into_each_other(tmp_path):
    # Both list the Dense layers as layers/dense, dense_1, dense_2; the functional
    # file's extra layers/input_layer group is ignored (as in Keras).
    for source, target in [("mlp_functional", "mlp_sequential"), ("mlp_sequential", "mlp_functional")]:
        saved = build(source)
        saved.set_weights(random_weights(saved, seed=2))
        saved.save_weights(tmp_path / f"{source}.weights.h5")
        loaded = build(target)
        loaded.load_weights(tmp_path / f"{source}.weights.h5")
        assert same_weights(loaded.get_weights(), saved.get_weights())


class Holder(keras.layers.Layer):
    """Weights of given shapes, created in the given order, trainable or not."""

    def __init__(self, specs, **kwargs):
        super().__init__(**kwargs)
        self.specs = specs

    def build(self, input_shape):
        for k, (shape, trainable) in enumerate(self.specs):
            self.add_weight(shape=shape, initializer="zeros", trainable=trainable, name=f"w{k}")

    def call(self, inputs):
        return inputs


shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
specials = st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38])


@given(specs=st.lists(st.tuples(shapes, st.booleans()), min_size=1, max_size=5), seed=st.integers(0, 2**32 - 1), special=specials)
def test_any_weight_shapes_round_trip_bit_for_bit_in_keras_order(specs, seed, special, tmp_path_factory):
    keras.backend.clear_session()
    inputs = keras.Input(shape=(2,))
    model = keras.Model(inputs, Holder(specs, name="holder")(inputs))
    layer = model.layers[1]
    rng = np.random.default_rng(seed)
    values = {}
    for k, (shape, _) in enumerate(specs):
        value = rng.normal(size=shape).astype(np.float32)
        if value.size:
            value.reshape(-1)[0] = special
        values[f"w{k}"] = value
    for variable in layer.weights:
        variable.assign(values[variable.name])
    path = tmp_path_factory.mktemp("holder") / "h.weights.h5"
    model.save_weights(path)

    # Keras's order in the file: trainable weights first, then the others, each
    # group in creation order.
    order = [k for k, (_, t) in enumerate(specs) if t] + [k for k, (_, t) in enumerate(specs) if not t]
    stored = datasets(path)
    for position, k in enumerate(order):
        got, want = stored[f"layers/holder/vars/{position}"], values[f"w{k}"]
        assert got.shape == want.shape and got.dtype == np.float32
        assert got.tobytes() == want.tobytes()

    for variable in layer.weights:
        variable.assign(np.zeros(variable.shape, np.float32))
    model.load_weights(path)
    for variable in layer.weights:
        assert variable.numpy().tobytes() == values[variable.name].tobytes()


# ----------------------------------------------------------------------------
# Files written by Keras 3


@pytest.mark.parametrize("name", BUILDER_NAMES)
def test_keras_files_load_and_predict_as_in_keras(name):
    reference = model_reference(name)
    model = build(name)
    model.load_weights(keras_file(name))
    assert same_weights(model.get_weights(), numbered(reference, "weight"))
    inputs = numbered(reference, "input")
    predicted = as_list(model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0))
    for got, want in zip(predicted, numbered(reference, "predict")):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", PREDICTED_EXTRAS)
def test_keras_files_of_custom_subclassed_and_nested_sequential_models_load(name):
    model = build(name)
    model.load_weights(keras_file(name))
    assert same_weights(model.get_weights(), numbered(EXTRAS, f"{name}/weight"))
    got = model.predict(EXTRAS[f"{name}/input"], verbose=0)
    np.testing.assert_allclose(got, EXTRAS[f"{name}/predict"], rtol=1e-5, atol=1e-6)


def test_keras_bfloat16_weights_load_as_float32():
    keras.backend.clear_session()
    model = bfloat16_dense(keras)
    model.load_weights(keras_file("bfloat16_dense"))
    assert same_weights(model.get_weights(), numbered(EXTRAS, "bfloat16_dense/weight"))


def test_keras_weights_inside_a_keras_archive_load(tmp_path):
    archive = tmp_path / "m.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("config.json", json.dumps({"class_name": "Functional"}))
        z.write(keras_file("nested"), "model.weights.h5")
    model = build("nested")
    model.load_weights(archive)
    assert same_weights(model.get_weights(), numbered(model_reference("nested"), "weight"))

    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(ValueError, match="has no `model.weights.h5`"):
        model.load_weights(tmp_path / "empty.keras")


# ----------------------------------------------------------------------------
# Files written by pyfuncnet have Keras's layout


@pytest.mark.parametrize("name", BUILDER_NAMES + PREDICTED_EXTRAS)
def test_written_files_have_exactly_the_keras_layout_and_values(name, tmp_path):
    model = build(name)
    weights = numbered(model_reference(name), "weight") if name in BUILDERS else numbered(EXTRAS, f"{name}/weight")
    model.set_weights(weights)
    path = tmp_path / f"{name}.weights.h5"
    model.save_weights(path)
    assert listing(path) == listing(keras_file(name))
    ours, theirs = datasets(path), datasets(keras_file(name))
    for key in theirs:
        assert ours[key].tobytes() == theirs[key].tobytes(), key


def test_weight_groups_lists_the_keras_paths_in_walk_order():
    model = build("nested")
    groups = weights_h5.weight_groups(model)
    assert [path for path, _ in groups] == [
        "vars",
        "layers/input_layer/vars",
        "layers/functional/vars",
        "layers/functional/layers/input_layer/vars",
        "layers/functional/layers/dense/vars",
        "layers/functional/layers/dense_1/vars",
        "layers/dense/vars",
    ]
    assert [owner.name for _, owner in groups] == [
        "nested", "features", "encoder", "encoder_input", "encoder_hidden", "encoder_code", "classifier",
    ]


# ----------------------------------------------------------------------------
# Optimizer state


def adam_model():
    keras.backend.clear_session()
    model = EXTRA_BUILDERS["trained_adam"](keras)
    model.set_weights(numbered(EXTRAS, "trained_adam/initial"))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_a_trained_model_writes_its_optimizer_state_as_keras(tmp_path):
    model = adam_model()
    model.train_on_batch(EXTRAS["trained_adam/x_1"], EXTRAS["trained_adam/y_1"])
    path = tmp_path / "adam.weights.h5"
    model.save_weights(path)
    ours, theirs = listing(path), listing(keras_file("trained_adam"))
    # The step count is an integer scalar: int32 from Keras on JAX, int64 here (as
    # Keras on TensorFlow writes it); everything else is identical.
    assert ours.pop("optimizer/vars/0")[1:3] == ((), "int64")
    assert theirs.pop("optimizer/vars/0")[1:3] == ((), "int32")
    assert ours == theirs
    ours, theirs = datasets(path), datasets(keras_file("trained_adam"))
    assert int(ours["optimizer/vars/0"]) == int(theirs["optimizer/vars/0"]) == 1
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-7, err_msg=key)


def test_keras_optimizer_state_loads_and_training_continues_as_in_keras():
    model = adam_model()
    model.optimizer.build(model.trainable_weights)
    model.load_weights(keras_file("trained_adam"))
    assert model.optimizer.iterations == 1
    after_1 = numbered(EXTRAS, "trained_adam/after_1")
    assert same_weights(model.get_weights(), after_1)
    # The second step depends on the loaded moments and step count (bias correction).
    model.train_on_batch(EXTRAS["trained_adam/x_2"], EXTRAS["trained_adam/y_2"])
    for got, want, before in zip(model.get_weights(), numbered(EXTRAS, "trained_adam/after_2"), after_1):
        np.testing.assert_allclose(got.astype(np.float64) - before, want.astype(np.float64) - before, rtol=2e-4, atol=1e-6)


def test_optimizer_state_is_skipped_with_a_warning_until_the_optimizer_is_built():
    model = adam_model()
    with pytest.warns(UserWarning, match=r"Skipping variable loading for optimizer 'adam'.*not built yet") as record:
        model.load_weights(keras_file("trained_adam"))
    assert record[0].filename == __file__
    assert same_weights(model.get_weights(), numbered(EXTRAS, "trained_adam/after_1"))
    assert model.optimizer.iterations == 0
    # Without an optimizer the group is simply not read.
    keras.backend.clear_session()
    plain = EXTRA_BUILDERS["trained_adam"](keras)
    plain.load_weights(keras_file("trained_adam"))
    assert same_weights(plain.get_weights(), numbered(EXTRAS, "trained_adam/after_1"))


# ----------------------------------------------------------------------------
# Bad files and bad arguments


def test_shape_mismatch_names_layer_weight_and_shapes_and_changes_nothing():
    model = mlp(hidden=32)
    before = model.get_weights()
    with pytest.raises(ValueError) as error:
        model.load_weights(keras_file("mlp_functional"))
    message = str(error.value)
    assert "2 object(s) do not match, so no weight was changed" in message
    assert "layer 'dense_2' (Dense, group 'layers/dense_1/vars'): weight 0 'dense_2/kernel'" in message
    assert "has shape (64, 64) in the file, the model expects (64, 32)" in message
    assert "layer 'predictions' (Dense, group 'layers/dense_2/vars')" in message
    assert "shape (64, 10) in the file, the model expects (32, 10)" in message
    # dense_1 fits the file, but it was not loaded either.
    assert same_weights(model.get_weights(), before)


def test_missing_layer_is_an_error_and_changes_nothing():
    model = mlp(extra_layer=True)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"layer 'extra' \(Dense, group 'layers/dense_3/vars'\): expects 2 weights "
                       r"\['extra/kernel', 'extra/bias'\], but the file has 0 under 'layers/dense_3/vars'"):
        model.load_weights(keras_file("mlp_functional"))
    assert same_weights(model.get_weights(), before)


def test_skip_mismatch_loads_the_layers_that_fit_and_warns_about_the_others():
    model = mlp(hidden=32)
    before = model.get_weights()
    with pytest.warns(UserWarning, match=r"skipped 2 object\(s\) that do not match \(skip_mismatch=True\)"):
        model.load_weights(keras_file("mlp_functional"), skip_mismatch=True)
    keras_weights = numbered(model_reference("mlp_functional"), "weight")
    got = model.get_weights()
    assert same_weights(got[:2], keras_weights[:2])
    assert same_weights(got[2:], before[2:])


def test_a_file_that_is_not_hdf5_is_refused_and_changes_nothing(tmp_path):
    model = build("nested")
    before = model.get_weights()
    path = tmp_path / "junk.weights.h5"
    path.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(ValueError, match=r"junk\.weights\.h5 is not an HDF5 file"):
        model.load_weights(path)
    with pytest.raises(FileNotFoundError, match=r"no such file: .*absent\.weights\.h5"):
        model.load_weights(tmp_path / "absent.weights.h5")
    assert same_weights(model.get_weights(), before)


def tampered_copy(tmp_path, change):
    """A copy of Keras's nested-model file with `change(h5file)` applied."""
    path = tmp_path / "tampered.weights.h5"
    path.write_bytes(Path(keras_file("nested")).read_bytes())
    with h5py.File(path, "a") as f:
        change(f)
    return path


def replace_with_soft_link(f):
    del f["layers/dense/vars/0"]
    f["layers/dense/vars/0"] = h5py.SoftLink("/layers/functional/layers/dense_1/vars/0")


def replace_with_external_link(f):
    del f["layers/dense/vars/0"]
    f["layers/dense/vars/0"] = h5py.ExternalLink("/etc/passwd", "/data")


def replace_with_external_data(tmp_path):
    def change(f):
        raw = tmp_path / "raw.bin"
        raw.write_bytes(np.zeros(12, np.float32).tobytes())
        del f["layers/dense/vars/0"]
        f.create_dataset("layers/dense/vars/0", shape=(4, 3), dtype="<f4", external=[(str(raw), 0, 48)])
    return change


def replace_with_strings(f):
    del f["layers/dense/vars/1"]
    f["layers/dense/vars/1"] = np.array([b"a", b"b", b"c"])


def add_a_weight(f):
    f["layers/dense/vars/2"] = np.zeros(3, np.float32)


@pytest.mark.parametrize(
    "change,message",
    [
        (replace_with_soft_link, r"'0' is a SoftLink; links are not allowed"),
        (replace_with_external_link, r"'0' is a ExternalLink; links are not allowed"),
        ("external_data", r"weight 0 'classifier/kernel' \('layers/dense/vars/0'\) refers to data outside the file"),
        (replace_with_strings, r"weight 1 'classifier/bias' \('layers/dense/vars/1'\) holds \|S1 data, not numbers"),
        (add_a_weight, r"layer 'classifier' \(Dense, group 'layers/dense/vars'\): expects 2 weights .* the file has 3"),
    ],
)
def test_tampered_files_are_refused_and_change_nothing(change, message, tmp_path):
    if change == "external_data":
        change = replace_with_external_data(tmp_path)
    path = tampered_copy(tmp_path, change)
    model = build("nested")
    before = model.get_weights()
    with pytest.raises(ValueError, match=message):
        model.load_weights(path)
    assert same_weights(model.get_weights(), before)


def test_file_names_must_have_the_keras_suffixes(tmp_path):
    model = build("nested")
    for bad in ["m.h5", "m.weights", "m.keras"]:
        with pytest.raises(ValueError, match=r"the filename must end in `\.weights\.h5`\. Received: filepath=.*" + bad):
            model.save_weights(tmp_path / bad)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"file format not supported: filepath=.*m\.txt"):
        model.load_weights(tmp_path / "m.txt")
    with pytest.raises(ValueError, match=r"legacy Keras 2 H5 file"):
        model.load_weights(tmp_path / "m.h5")
    with pytest.raises(TypeError, match=r"`filepath` must be a str or a path, got int"):
        model.save_weights(3)


def test_an_unbuilt_model_cannot_save_or_load(tmp_path):
    keras.backend.clear_session()
    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="You are saving a model that has not yet been built"):
        model.save_weights(tmp_path / "m.weights.h5")
    with pytest.raises(ValueError, match="You are loading weights into a model that has not yet been built"):
        model.load_weights(keras_file("nested"))
    assert not (tmp_path / "m.weights.h5").exists()


# ----------------------------------------------------------------------------
# Writing: atomic, overwrite


def test_saving_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    model = build("nested")
    path = tmp_path / "m.weights.h5"
    path.write_bytes(b"old contents")
    model.save_weights(str(path))
    assert listing(path) == listing(keras_file("nested"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.weights.h5"]


def test_saving_through_a_symbolic_link_writes_its_target(tmp_path):
    model = build("nested")
    (tmp_path / "real.weights.h5").write_bytes(b"old")
    (tmp_path / "link.weights.h5").symlink_to(tmp_path / "real.weights.h5")
    model.save_weights(tmp_path / "link.weights.h5")
    assert (tmp_path / "link.weights.h5").is_symlink()
    assert listing(tmp_path / "real.weights.h5") == listing(keras_file("nested"))


def test_a_failed_save_keeps_the_previous_file_intact(tmp_path, monkeypatch):
    model = build("nested")
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    good = path.read_bytes()

    def write_half_then_fail(model, h5file):
        h5file.create_group("layers")
        raise OSError("disk full")

    monkeypatch.setattr(weights_h5, "write_weights", write_half_then_fail)
    model.set_weights(random_weights(model, seed=3))
    with pytest.raises(OSError, match="disk full"):
        model.save_weights(path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.weights.h5"]


def test_overwrite_false_asks_as_keras_does(tmp_path, monkeypatch, capsys):
    model = build("nested")
    path = tmp_path / "m.weights.h5"
    path.write_bytes(b"keep me")
    prompts, answers = [], iter(["maybe", "n"])
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or next(answers))
    model.save_weights(path, overwrite=False)
    assert prompts == [f"[WARNING] {path} already exists - overwrite? [y/n]", 'Enter "y" (overwrite) or "n" (cancel).']
    assert path.read_bytes() == b"keep me"

    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    model.save_weights(path, overwrite=False)
    assert "[TIP] Next time specify overwrite=True!" in capsys.readouterr().out
    assert listing(path) == listing(keras_file("nested"))

    # Nothing to overwrite: no question.
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked without need"))
    model.save_weights(tmp_path / "new.weights.h5", overwrite=False)
    assert (tmp_path / "new.weights.h5").exists()


# ----------------------------------------------------------------------------
# ModelCheckpoint(save_weights_only=True) during fit


def checkpoint_run(tmp_path, pattern, **checkpoint_kwargs):
    """Fits trained_adam's architecture 4 epochs with SGD(lr=2) on random labels
    (the validation loss jumps around), recording the weights after each epoch."""
    keras.backend.clear_session()
    model = EXTRA_BUILDERS["trained_adam"](keras)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=2.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(32, 6)).astype(np.float32), rng.integers(0, 3, 32).astype(np.int32)
    epochs = []
    record = LambdaCallback(on_epoch_end=lambda epoch, logs: epochs.append((dict(logs), model.get_weights())))
    checkpoint = ModelCheckpoint(str(tmp_path / pattern), save_weights_only=True, **checkpoint_kwargs)
    model.fit(x, y, batch_size=8, epochs=4, validation_data=(x[:8], y[:8]), shuffle=False, verbose=0, callbacks=[record, checkpoint])
    return epochs


def load_into_fresh(path):
    keras.backend.clear_session()
    model = EXTRA_BUILDERS["trained_adam"](keras)
    model.load_weights(path)
    return model.get_weights()


def test_model_checkpoint_writes_loadable_weights_every_epoch(tmp_path):
    epochs = checkpoint_run(tmp_path, "ckpt-{epoch:02d}-{loss:.3f}.weights.h5")
    names = [f"ckpt-{k + 1:02d}-{logs['loss']:.3f}.weights.h5" for k, (logs, _) in enumerate(epochs)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for name, (_, weights) in zip(names, epochs):
        assert same_weights(load_into_fresh(tmp_path / name), weights)


def test_model_checkpoint_best_only_keeps_the_weights_of_the_best_epoch(tmp_path):
    epochs = checkpoint_run(tmp_path, "best.weights.h5", monitor="val_loss", save_best_only=True)
    losses = [logs["val_loss"] for logs, _ in epochs]
    best = int(np.argmin(losses))
    assert same_weights(load_into_fresh(tmp_path / "best.weights.h5"), epochs[best][1])
    # With the epoch in the name: one file per improvement.
    (tmp_path / "each").mkdir()
    epochs = checkpoint_run(tmp_path / "each", "{epoch}.weights.h5", monitor="val_loss", save_best_only=True)
    losses = [logs["val_loss"] for logs, _ in epochs]
    improved = [k for k in range(len(losses)) if losses[k] < min(losses[:k], default=np.inf)]
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == sorted(f"{k + 1}.weights.h5" for k in improved)
    for k in improved:
        assert same_weights(load_into_fresh(tmp_path / "each" / f"{k + 1}.weights.h5"), epochs[k][1])


# ----------------------------------------------------------------------------
# Keras reads pyfuncnet's files (needs a Keras venv)


@pytest.mark.skipif(not os.environ.get("PYFUNCNET_KERAS_PYTHON"), reason="set PYFUNCNET_KERAS_PYTHON to a python with Keras 3")
def test_keras_loads_files_written_by_pyfuncnet(tmp_path):
    for name in BUILDER_NAMES + PREDICTED_EXTRAS:
        model = build(name)
        model.set_weights(random_weights(model, seed=11))
        x = random_inputs(name)
        arrays = {f"weight_{i}": w for i, w in enumerate(model.get_weights())}
        arrays.update({f"input_{k}": a for k, a in enumerate(x if isinstance(x, list) else [x])})
        arrays.update({f"predict_{k}": p for k, p in enumerate(as_list(model.predict(x, verbose=0)))})
        model.save_weights(tmp_path / f"{name}.weights.h5")
        np.savez(tmp_path / f"{name}.npz", **arrays)
    model = adam_model()
    model.train_on_batch(EXTRAS["trained_adam/x_1"], EXTRAS["trained_adam/y_1"])
    model.save_weights(tmp_path / "trained_adam.weights.h5")
    arrays = {f"weight_{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"optimizer_{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)})
    np.savez(tmp_path / "trained_adam.npz", **arrays)

    script = os.path.join(REFERENCE, "make_weights_reference.py")
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [os.environ["PYFUNCNET_KERAS_PYTHON"], script, "--check", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Keras read every file as pyfuncnet wrote it" in result.stdout
