"""Masks as in Keras 3: made by Embedding(mask_zero=True) and Masking, passed on by
the layers that support masking, given to `call(..., mask=...)`, combined by merge
layers, used by GlobalAveragePooling1D, and applied to losses and metrics in
`compile` / `fit` / `evaluate`.

Two kinds of reference: numbers from real Keras 3.15.1 (tests/reference/data/masking,
made by tests/reference/make_masking_reference.py, whose builders build the same graphs
here), and values worked out by hand or with NumPy in float64.

One deliberate difference: Keras drops a nested model's output mask from the symbolic
graph but keeps it when the model runs (so its losses are masked); pyfuncnet trains
from the symbolic graph, so the mask is kept there too.
"""

import json
import os
import re
import warnings

import numpy as np
import pytest

import pyfuncnet as keras
from pyfuncnet import layers, ops
from pyfuncnet._symbolic import get_keras_mask, set_keras_mask
from reference.make_masking_reference import GRAPHS, TRAINING, flag_layers, make_inputs, reference_weights

DATA = os.path.join(os.path.dirname(__file__), "reference", "data", "masking")
RTOL, ATOL = 1e-5, 1e-6


def _json(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        return json.load(handle)


def _npz(name):
    with np.load(os.path.join(DATA, name)) as archive:
        return {k: archive[k] for k in archive.files}


GRAPH_REF = _json("graphs.json")
TRAIN_REF = _json("training.json")
FLAGS_REF = _json("supports_masking.json")
GRAPH_ARRAYS = _npz("graphs.npz")
TRAIN_ARRAYS = _npz("training.npz")
INPUTS = {k[len("input/") :]: v for k, v in GRAPH_ARRAYS.items() if k.startswith("input/")}


def _dropped_mask_warnings(caught):
    """Names of the layers that warned they drop a mask, and the other warnings."""
    names, other = [], []
    for w in caught:
        found = re.match(r"Layer '([^']+)' \(of type \w+\) was passed an input with a mask", str(w.message))
        (names.append(found.group(1)) if found else other.append(str(w.message)))
    return names, other


def _record_warnings():
    catcher = warnings.catch_warnings(record=True)
    caught = catcher.__enter__()
    warnings.simplefilter("always")
    return catcher, caught


def _build_graph(name):
    catcher, caught = _record_warnings()
    try:
        model, inputs = GRAPHS[name](keras)
    finally:
        catcher.__exit__(None, None, None)
    model.set_weights(reference_weights(model))
    xs = [INPUTS[k] for k in inputs]
    return model, (xs if len(xs) > 1 else xs[0]), caught


def _as_list(outs):
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


def _check_outputs(name, outs):
    ref = GRAPH_REF[name]
    assert len(outs) == len(ref["mask"])
    for k, out in enumerate(outs):
        np.testing.assert_allclose(np.asarray(out), GRAPH_ARRAYS[f"graph/{name}/out{k}"], rtol=RTOL, atol=ATOL)
        mask = get_keras_mask(out)
        assert (mask is not None) == ref["mask"][k], f"output {k}"
        if mask is not None:
            np.testing.assert_array_equal(np.asarray(mask).astype(bool), GRAPH_ARRAYS[f"graph/{name}/mask{k}"])


# ----------------------------------------------------------------------------
# Parity with Keras


def test_stored_inputs_are_the_generators():
    for key, value in make_inputs().items():
        np.testing.assert_array_equal(INPUTS[key], value)


def test_supports_masking_flags_match_keras():
    got = {name: layer.supports_masking for name, layer in flag_layers(keras).items()}
    assert got == FLAGS_REF


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_masks_match_keras(name):
    """Building the graph: the same layers warn that they drop a mask, and the
    symbolic outputs have masks where Keras's outputs have them when it runs.
    Calling the model on arrays (compiled): Keras's outputs and masks."""
    model, x, caught = _build_graph(name)
    warned, other = _dropped_mask_warnings(caught)
    assert warned == GRAPH_REF[name]["warned"]
    assert other == []
    ref = GRAPH_REF[name]
    assert [get_keras_mask(t) is not None for t in model.outputs] == ref["mask"]
    if name != "nested":  # see the module docstring
        assert ref["symbolic_mask"] == ref["mask"]
    _check_outputs(name, _as_list(model(x)))


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_layer_by_layer_matches_keras(name):
    """Under a GradientTape every layer runs eagerly on arrays (as Keras's
    Functional runs its graph): the masks go from layer to layer with the arrays."""
    model, x, _ = _build_graph(name)
    catcher, _ = _record_warnings()
    try:
        with keras.GradientTape():
            outs = _as_list(model(x))
    finally:
        catcher.__exit__(None, None, None)
    _check_outputs(name, outs)


def _build_training(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inputs, target, weight = TRAINING[name](keras)
    model.set_weights(reference_weights(model))
    xs = [INPUTS[k] for k in inputs]
    return model, (xs if len(xs) > 1 else xs[0]), INPUTS[target], (INPUTS[weight] if weight else None)


def _assert_logs(got, want):
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=RTOL, err_msg=key)


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_training_matches_keras(name):
    """predict, evaluate (masked losses and metrics), two epochs of fit and the
    weights they leave, from Keras's weights and data."""
    ref = TRAIN_REF[name]
    model, x, y, sw = _build_training(name)
    np.testing.assert_allclose(model.predict(x, verbose=0), TRAIN_ARRAYS[f"train/{name}/predict"], rtol=RTOL, atol=ATOL)
    _assert_logs(model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True), ref["evaluate"])
    if sw is not None:
        _assert_logs(model.evaluate(x, y, sample_weight=sw, batch_size=2, verbose=0, return_dict=True), ref["evaluate_weighted"])
    history = model.fit(x, y, batch_size=3, epochs=2, shuffle=False, verbose=0).history
    # The losses are Keras's on JAX and on torch alike; the training metrics skip the
    # masked steps as on torch (JAX's lose the mask, see the generator).
    np.testing.assert_allclose(history["loss"], ref["history"]["loss"], rtol=RTOL)
    _assert_logs(history, ref["history_torch"])
    for k, w in enumerate(model.get_weights()):
        np.testing.assert_allclose(w, TRAIN_ARRAYS[f"train/{name}/weight{k}"], rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------
# Layers, checked by hand and with NumPy


def test_embedding_mask_marks_nonzero_ids():
    ids = np.array([[3, 0, 1], [0, 0, 2]])
    emb = layers.Embedding(4, 2, mask_zero=True)
    np.testing.assert_array_equal(get_keras_mask(emb(ids)), ids != 0)
    np.testing.assert_array_equal(emb.compute_mask(ids), ids != 0)
    plain = layers.Embedding(4, 2)
    assert get_keras_mask(plain(ids)) is None and plain.compute_mask(ids) is None
    t = emb(keras.Input((3,), dtype="int32"))
    assert t._keras_mask.shape == (None, 3) and t._keras_mask.dtype == "bool"


def test_masking_zeroes_and_masks_steps_equal_to_the_value():
    x = np.array([[[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]], [[0.5, 0.5], [0.0, 0.0], [-1.0, 0.5]]], np.float32)
    out = layers.Masking()(x)
    np.testing.assert_array_equal(get_keras_mask(out), [[True, False, True], [True, False, True]])
    np.testing.assert_array_equal(out, x)  # masked steps were zero already
    out = layers.Masking(mask_value=0.5)(x)
    np.testing.assert_array_equal(get_keras_mask(out), [[True, True, True], [False, True, True]])
    np.testing.assert_array_equal(out[1, 0], [0.0, 0.0])
    np.testing.assert_array_equal(out[1, 2], x[1, 2])
    assert layers.Masking(mask_value=0.5).get_config()["mask_value"] == 0.5


def _masked_mean64(x, mask, axis):
    x = x.astype(np.float64)
    keep = np.expand_dims(mask, -1 if axis == 1 else 1).astype(np.float64)
    return (x * keep).sum(axis=axis) / keep.sum(axis=axis)


def test_global_average_pooling_1d_averages_the_valid_steps():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 4, 2)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 1]], bool)
    pool = layers.GlobalAveragePooling1D()
    np.testing.assert_allclose(pool(x, mask=mask), _masked_mean64(x, mask, 1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pool(x), x.astype(np.float64).mean(axis=1), rtol=1e-6, atol=1e-6)
    keep = layers.GlobalAveragePooling1D(keepdims=True)(x, mask=mask)
    np.testing.assert_allclose(keep[:, 0, :], _masked_mean64(x, mask, 1), rtol=1e-6, atol=1e-6)
    cf = np.transpose(x, (0, 2, 1))
    got = layers.GlobalAveragePooling1D(data_format="channels_first")(cf, mask=mask)
    np.testing.assert_allclose(got, _masked_mean64(cf, mask, 2), rtol=1e-6, atol=1e-6)
    # Every step masked: 0 / 0, as in Keras.
    assert np.all(np.isnan(pool(x, mask=np.zeros((3, 4), bool))))
    assert pool.compute_mask(x, mask) is None


def test_global_average_pooling_1d_uses_the_mask_in_a_model():
    ids = keras.Input((4,), dtype="int32")
    emb = layers.Embedding(5, 2, mask_zero=True)
    out = layers.GlobalAveragePooling1D()(emb(ids))
    model = keras.Model(ids, out)
    x = np.array([[1, 2, 0, 0], [4, 0, 3, 0]], np.int32)
    table = emb.get_weights()[0].astype(np.float64)
    want = np.stack([(table[[1, 2]]).mean(0), (table[[4, 3]]).mean(0)])
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-6)
    assert getattr(out, "_keras_mask", None) is None


def _masked(x, mask):
    set_keras_mask(x, np.asarray(mask, bool))
    return x


def test_concatenate_masks_by_hand():
    a = _masked(np.ones((1, 3, 2), np.float32), [[1, 0, 1]])
    b = _masked(np.ones((1, 3, 1), np.float32), [[0, 0, 1]])
    c = np.ones((1, 2, 2), np.float32)  # no mask
    # Features joined: a step is valid where it is valid in any input.
    np.testing.assert_array_equal(get_keras_mask(layers.Concatenate()([a, b])), [[True, False, True]])
    # Steps joined: the masks are joined; an input without one counts as all valid.
    np.testing.assert_array_equal(get_keras_mask(layers.Concatenate(axis=1)([a, c])), [[True, False, True, True, True]])
    # Without any input mask, no output mask.
    assert get_keras_mask(layers.Concatenate(axis=1)([c, c])) is None


def test_elementwise_merge_masks_by_hand():
    a = _masked(np.array([[[1.0], [2.0], [3.0]]], np.float32), [[1, 0, 0]])
    b = _masked(np.array([[[10.0], [20.0], [30.0]]], np.float32), [[0, 1, 0]])
    plain = np.array([[[10.0], [20.0], [30.0]]], np.float32)
    for layer in (layers.Add(), layers.Subtract(), layers.Average()):
        np.testing.assert_array_equal(get_keras_mask(layer([a, b])), [[True, True, False]])
        assert get_keras_mask(layer([a, plain])) is None
    np.testing.assert_array_equal(layers.Add()([a, b])[0, :, 0], [11.0, 22.0, 33.0])
    # Multiply: a masked entry counts as 1; entries masked everywhere are 0.
    np.testing.assert_array_equal(layers.Multiply()([a, b])[0, :, 0], [1.0, 20.0, 0.0])
    np.testing.assert_array_equal(layers.Multiply()([a, plain])[0, :, 0], [10.0, 20.0, 30.0])
    # Maximum / Minimum leave the masked entries out (masked everywhere: the first
    # input's value).
    np.testing.assert_array_equal(layers.Maximum()([a, b])[0, :, 0], [1.0, 20.0, 3.0])
    np.testing.assert_array_equal(layers.Minimum()([a, b])[0, :, 0], [1.0, 20.0, 3.0])
    np.testing.assert_array_equal(get_keras_mask(layers.Maximum()([a, b])), [[True, True, False]])
    assert get_keras_mask(layers.Dot(axes=2)([a, b])) is None


def test_layers_that_support_masking_pass_the_mask_on():
    x = _masked(np.ones((2, 3, 4), np.float32), [[1, 1, 0], [1, 0, 0]])
    for layer in (layers.Dense(2), layers.Activation("relu"), layers.Dropout(0.5), layers.GaussianNoise(0.1), layers.LayerNormalization()):
        np.testing.assert_array_equal(get_keras_mask(layer(x)), get_keras_mask(x), err_msg=layer.name)


def test_a_layer_without_masking_warns_and_drops_the_mask():
    x = _masked(np.ones((2, 3, 4), np.float32), [[1, 1, 0], [1, 0, 0]])
    with pytest.warns(UserWarning, match="Layer 'flat_x' \\(of type Flatten\\) was passed an input with a mask"):
        out = layers.Flatten(name="flat_x")(x)
    assert get_keras_mask(out) is None
    t = layers.Masking()(keras.Input((3, 4)))
    with pytest.warns(UserWarning, match="does not support masking"):
        out = layers.Reshape((12,))(t)
    assert getattr(out, "_keras_mask", None) is None


def test_lambda_masks():
    x = _masked(np.ones((1, 3, 2), np.float32), [[1, 0, 1]])
    assert not layers.Lambda(lambda t: t).supports_masking
    with pytest.warns(UserWarning, match="does not support masking"):
        assert get_keras_mask(layers.Lambda(lambda t: t * 2.0)(x)) is None
    passing = layers.Lambda(lambda t: t * 2.0, mask=lambda t, m: m)
    np.testing.assert_array_equal(get_keras_mask(passing(x)), [[True, False, True]])
    fixed = np.array([[False, True, True]])
    np.testing.assert_array_equal(get_keras_mask(layers.Lambda(lambda t: t * 1.0, mask=fixed)(x)), fixed)
    # A layer returning its input unchanged returns it with its mask (in Keras it
    # is the very same tensor), so `mask` is not applied.
    np.testing.assert_array_equal(get_keras_mask(layers.Lambda(lambda t: t, mask=fixed)(x)), [[True, False, True]])
    # A function with a `mask` argument gets the mask.
    seen = []
    layers.Lambda(lambda t, mask: seen.append(mask) or t, mask=lambda t, m: m)(x)
    np.testing.assert_array_equal(seen[0], [[True, False, True]])


# ----------------------------------------------------------------------------
# Custom layers and the rules for filling in `mask`


class ZeroMasked(layers.Layer):
    """A user's layer: zeroes the masked steps, and its output mask also drops the
    steps whose features sum to a negative number."""

    def call(self, inputs, mask=None):
        self.seen = mask
        if mask is None:
            return inputs
        return inputs * ops.expand_dims(ops.cast(mask, "float32"), -1)

    def compute_mask(self, inputs, mask=None):
        non_negative = ops.greater_equal(ops.sum(inputs, axis=-1), 0.0)
        if mask is None:
            return non_negative
        return ops.not_equal(ops.multiply(ops.cast(mask, "float32"), ops.cast(non_negative, "float32")), 0.0)


def test_custom_layer_gets_the_mask_and_computes_its_own():
    x = np.array([[[1.0, 2.0], [3.0, -9.0], [5.0, 6.0], [0.0, 0.0]]], np.float32)
    layer = ZeroMasked()
    assert layer.supports_masking  # it defines compute_mask
    out = layer(layers.Masking()(x))
    np.testing.assert_array_equal(layer.seen, [[True, True, True, False]])
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(get_keras_mask(out), [[True, False, True, False]])
    # Symbolically, in a model, and in its compiled predict step.
    inp = keras.Input((4, 2))
    sym = ZeroMasked()(layers.Masking()(inp))
    assert sym._keras_mask is not None
    model = keras.Model(inp, sym)
    np.testing.assert_array_equal(get_keras_mask(model(x)), [[True, False, True, False]])


def test_custom_layer_without_compute_mask_consumes_the_mask():
    class Consumer(layers.Layer):
        def call(self, inputs, mask=None):
            self.seen = mask
            return inputs

    x = _masked(np.ones((1, 3, 2), np.float32), [[1, 0, 1]])
    layer = Consumer(name="consumer")
    assert not layer.supports_masking
    with pytest.warns(UserWarning, match="Layer 'consumer'"):
        layer(x)
    np.testing.assert_array_equal(layer.seen, [[True, False, True]])

    class PassThrough(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.supports_masking = True

        def call(self, inputs):
            return inputs * 2.0

    # The default compute_mask passes the input's mask on.
    np.testing.assert_array_equal(get_keras_mask(PassThrough()(x)), [[True, False, True]])


def test_an_explicit_mask_wins():
    x = _masked(np.ones((1, 3, 2), np.float32), [[1, 0, 1]])
    layer = ZeroMasked()
    out = layer(x, mask=np.array([[False, True, True]]))
    np.testing.assert_array_equal(layer.seen, [[False, True, True]])
    np.testing.assert_array_equal(out[0, :, 0], [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(get_keras_mask(out), [[False, True, True]])


def test_masks_of_several_tensor_arguments():
    class Pair(layers.Layer):
        def call(self, a, b, a_mask=None, b_mask=None):
            self.seen = (a_mask, b_mask)
            return a + b

    class PairWithMask(layers.Layer):
        def call(self, a, b, mask=None):
            self.seen = mask
            return a + b

    a = _masked(np.ones((1, 2, 1), np.float32), [[1, 0]])
    b = _masked(np.ones((1, 2, 1), np.float32), [[0, 1]])
    pair = Pair(name="pair")
    # No compute_mask, so no masking support: Keras warns about the first
    # argument's mask.
    with pytest.warns(UserWarning, match="Layer 'pair'"):
        pair(a, b)
    np.testing.assert_array_equal(pair.seen[0], [[True, False]])
    np.testing.assert_array_equal(pair.seen[1], [[False, True]])
    # With two tensor arguments Keras fills only `<argument>_mask`, not `mask`.
    with_mask = PairWithMask(name="pair_with_mask")
    with pytest.warns(UserWarning, match="Layer 'pair_with_mask'"):
        out = with_mask(a, b)
    assert with_mask.seen is None
    assert get_keras_mask(out) is None
    # A list argument is one tensor argument: `mask` gets the list of masks.
    with_list = layers.Concatenate()
    np.testing.assert_array_equal(get_keras_mask(with_list([a, b])), [[True, True]])


# ----------------------------------------------------------------------------
# Models


def _seq_model(masking_first_kwargs=None):
    if masking_first_kwargs is None:
        return keras.Sequential([keras.Input((5, 4)), layers.Masking(), layers.Dense(1)])
    return keras.Sequential([layers.Masking(**masking_first_kwargs), layers.Dense(1)])


def _masked_mse64(pred, y, mask, weights=None):
    err = np.square(pred.astype(np.float64) - y)[..., 0]
    w = mask.astype(np.float64) * (1.0 if weights is None else weights)
    return (err * w).sum() / mask.sum()


def test_sequential_with_masking_first_masks_the_loss():
    x, y, mask = INPUTS["x_f"], INPUTS["y_seq"], INPUTS["x_f_mask"]
    for model in (_seq_model(), _seq_model({"input_shape": (5, 4)})):
        model.set_weights([np.full((4, 1), 0.5, np.float32), np.array([0.25], np.float32)])
        model.compile("sgd", "mse", metrics=["mae"])
        pred = model.predict(x, verbose=0)
        logs = model.evaluate(x, y, batch_size=5, verbose=0, return_dict=True)
        np.testing.assert_allclose(logs["loss"], _masked_mse64(pred, y, mask), rtol=1e-5)
        mae = (np.abs(pred.astype(np.float64) - y)[..., 0] * mask).sum() / mask.sum()
        np.testing.assert_allclose(logs["mae"], mae, rtol=1e-5)
        # The masked steps predict the bias alone; the unmasked loss would differ.
        assert not np.isclose(logs["loss"], np.square(pred - y).mean(), rtol=1e-3)


def test_evaluate_averages_the_masked_batch_losses_by_batch_size():
    model, x, y, sw = _build_training("embedding_mse")
    mask = INPUTS["ids"] != 0
    pred = model.predict(x, verbose=0)
    batches = [slice(0, 2), slice(2, 4), slice(4, 5)]
    losses = [_masked_mse64(pred[b], y[b], mask[b]) for b in batches]
    sizes = [2, 2, 1]
    logs = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], np.dot(losses, sizes) / 5, rtol=1e-5)
    weighted = [_masked_mse64(pred[b], y[b], mask[b], sw[b]) for b in batches]
    logs = model.evaluate(x, y, sample_weight=sw, batch_size=2, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], np.dot(weighted, sizes) / 5, rtol=1e-5)
    # The metric pools every valid step of every batch.
    mae = (np.abs(pred.astype(np.float64) - y)[..., 0] * mask).sum() / mask.sum()
    np.testing.assert_allclose(logs["mae"], mae, rtol=1e-5)


def test_targets_at_masked_steps_do_not_matter():
    mask = INPUTS["ids"] != 0
    runs = []
    for noise in (0.0, 100.0):
        model, x, y, _ = _build_training("embedding_mse")
        y = np.where(mask[..., None], y, np.float32(noise))
        history = model.fit(x, y, batch_size=3, epochs=2, shuffle=False, verbose=0).history
        runs.append((history, model.get_weights()))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


def test_subclassed_model_masks_reach_the_loss():
    class Tagger(keras.Model):
        def __init__(self):
            super().__init__()
            self.emb = layers.Embedding(7, 4, mask_zero=True, name="emb")
            self.hidden = layers.Dense(3, activation="tanh", name="hidden")
            self.out = layers.Dense(1, name="out")

        def call(self, inputs):
            return self.out(self.hidden(self.emb(inputs)))

    model = Tagger()
    model.compile(keras.optimizers.SGD(learning_rate=0.1), "mse", metrics=["mae"])
    x, y = INPUTS["ids"], INPUTS["y_seq"]
    model.predict(x[:1], verbose=0)  # builds the weights
    model.set_weights(reference_weights(_build_training("embedding_mse")[0]))
    _assert_logs(model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True), TRAIN_REF["embedding_mse"]["evaluate"])


def test_nested_model_keeps_the_mask():
    inner_in = keras.Input((5, 4))
    inner = keras.Model(inner_in, layers.Dense(2)(inner_in), name="inner_model")
    outer_in = keras.Input((5, 4))
    masked = layers.Masking()(outer_in)
    with pytest.warns(UserWarning, match="of type Functional"):
        out = inner(masked)
    assert out._keras_mask is not None
    model = keras.Model(outer_in, out)
    np.testing.assert_array_equal(get_keras_mask(model(INPUTS["x_f"])), INPUTS["x_f_mask"])


def test_model_called_with_a_mask_argument():
    model = keras.Sequential([keras.Input((3, 2)), layers.Dense(1)])
    x = np.ones((2, 3, 2), np.float32)
    mask = np.array([[1, 0, 1], [0, 0, 1]], bool)
    # Keras warns (a model does not support masking) but its layers get the mask.
    with pytest.warns(UserWarning, match="of type Sequential"):
        out = model(x, mask=mask)
    np.testing.assert_array_equal(get_keras_mask(out), mask)
    assert get_keras_mask(x) is None  # the caller's array is left alone
    assert get_keras_mask(model(np.ones((2, 3, 2), np.float32))) is None  # compiled, no mask
    t = keras.Input((3, 2))
    with pytest.warns(UserWarning, match="of type Sequential"):
        sym = model(t, mask=ops.not_equal(ops.sum(t, axis=-1), 0.0))
    assert sym._keras_mask is not None


def test_multi_output_losses_use_each_outputs_mask():
    ids = keras.Input((5,), dtype="int32")
    seq = layers.Dense(1, name="seq")(layers.Embedding(7, 2, mask_zero=True)(ids))
    vec = layers.Dense(1, name="vec")(layers.Flatten()(layers.Embedding(7, 2)(ids)))
    model = keras.Model(ids, [seq, vec])
    assert seq._keras_mask is not None and getattr(vec, "_keras_mask", None) is None
    model.compile("sgd", ["mse", "mse"])
    x, y_seq, y_vec = INPUTS["ids"], INPUTS["y_seq"], INPUTS["y_vec"]
    p_seq, p_vec = model.predict(x, verbose=0)
    logs = model.evaluate(x, [y_seq, y_vec], batch_size=5, verbose=0, return_dict=True)
    want_seq = _masked_mse64(p_seq, y_seq, x != 0)
    want_vec = np.square(p_vec.astype(np.float64) - y_vec).mean()
    np.testing.assert_allclose(logs["seq_loss"], want_seq, rtol=1e-5)
    np.testing.assert_allclose(logs["vec_loss"], want_vec, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], want_seq + want_vec, rtol=1e-5)


def test_gradient_tape_loss_is_masked():
    model, x, y, _ = _build_training("embedding_mse")
    loss_fn = keras.losses.MeanSquaredError()
    with keras.GradientTape() as tape:
        loss = loss_fn(y, model(x))
    grads = tape.gradient(loss, model.trainable_weights)
    np.testing.assert_allclose(float(loss), _masked_mse64(model.predict(x, verbose=0), y, x != 0), rtol=1e-5)
    # Outside a tape the compiled call attaches the mask too, so the loss is the same.
    np.testing.assert_allclose(float(loss_fn(y, model(x))), float(loss), rtol=1e-6)
    # One SGD step by hand from the tape's gradients is the compiled training step.
    stepped = [w.numpy() - 0.1 * g for w, g in zip(model.trainable_weights, grads)]
    model.train_on_batch(x, y)
    for w, want in zip(model.trainable_weights, stepped):
        np.testing.assert_allclose(w.numpy(), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# Losses and metrics on masked predictions


def test_masked_loss_reductions():
    y = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)[..., None]
    p = np.zeros_like(y)
    mask = np.array([[1, 1, 0], [0, 1, 0]], bool)
    err = np.square(y[..., 0].astype(np.float64))
    set_keras_mask(p, mask)
    np.testing.assert_allclose(keras.losses.MeanSquaredError()(y, p), (err * mask).sum() / 3, rtol=1e-6)
    np.testing.assert_allclose(keras.losses.MeanSquaredError(reduction="sum")(y, p), (err * mask).sum(), rtol=1e-6)
    w = np.array([[0.5, 2.0, 1.0], [1.0, 3.0, 1.0]], np.float32)
    np.testing.assert_allclose(keras.losses.MeanSquaredError()(y, p, sample_weight=w), (err * mask * w).sum() / 3, rtol=1e-6)
    none = keras.losses.MeanSquaredError(reduction="none")(y, p)
    np.testing.assert_allclose(none, err * mask, rtol=1e-6)
    # Nothing valid: 0, not 0 / 0.
    set_keras_mask(p, np.zeros((2, 3), bool))
    assert float(keras.losses.MeanSquaredError()(y, p)) == 0.0
    # Plain loss functions ignore masks, as in Keras.
    set_keras_mask(p, mask)
    np.testing.assert_allclose(keras.losses.mean_squared_error(y, p), err, rtol=1e-6)


def test_masked_metric():
    y = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)[..., None]
    p = np.zeros_like(y)
    mask = np.array([[1, 1, 0], [0, 1, 0]], bool)
    set_keras_mask(p, mask)
    metric = keras.metrics.MeanAbsoluteError()
    metric.update_state(y, p)
    np.testing.assert_allclose(metric.result(), (1 + 2 + 5) / 3, rtol=1e-6)
    w = np.array([[0.5, 2.0, 1.0], [1.0, 3.0, 1.0]], np.float32)
    metric.reset_state()
    metric.update_state(y, p, sample_weight=w)
    np.testing.assert_allclose(metric.result(), (0.5 + 4 + 15) / (0.5 + 2 + 3), rtol=1e-6)
