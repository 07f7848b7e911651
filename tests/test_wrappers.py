"""Bidirectional and TimeDistributed against real Keras 3 (reference data from
tests/reference/make_wrappers_reference.py): outputs, the masks attached to them and
the gradients of a fixed scalar loss with respect to the input, the initial states
and every weight; weight paths, configs and output shapes; the same numbers from
compiled models with unknown batch and time; the video question-answering model of
the functional-API guide, a masked tagger and a stacked masked encoder (parameter
counts, summaries, predictions, losses, one SGD step); and properties checkable by
hand (merges of two plain layers sharing the weights, folding time into the batch)."""

import json
from pathlib import Path

import numpy as np
import pytest

import pyfuncnet as keras
from helpers import assert_close_to_reference, numbered
from pyfuncnet import layers, ops

DATA = Path(__file__).parent / "reference" / "data" / "wrappers"
BI = json.loads((DATA / "bidirectional.json").read_text())
BI_ARRAYS = np.load(DATA / "bidirectional.npz")
TD = json.loads((DATA / "time_distributed.json").read_text())
TD_ARRAYS = np.load(DATA / "time_distributed.npz")
MODELS = json.loads((DATA / "models.json").read_text())
MODEL_ARRAYS = np.load(DATA / "models.npz")
DEFAULTS = json.loads((DATA / "defaults.json").read_text())
ERRORS = json.loads((DATA / "errors.json").read_text())


def _arrays(store, prefix, name):
    return numbered(store, f"{prefix}/{name}")


def _as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _check_gradients(store, case_id, grads, names):
    for name, g in zip(names, grads):
        assert_close_to_reference(g, store[f"{case_id}/grad_{name}"], f"gradient of {name}")


# ----------------------------------------------------------------------------
# Bidirectional against Keras


def _bidirectional(case):
    keras.backend.clear_session()
    cls = getattr(layers, case["class"])
    inner = cls(**case["kwargs"])
    backward = cls(**case["backward_kwargs"]) if case["backward_kwargs"] else None
    return layers.Bidirectional(inner, merge_mode=case["merge_mode"], backward_layer=backward)


def _built_bidirectional(case):
    layer = _bidirectional(case)
    layer.build(tuple(case["input_shape"]))
    layer.set_weights(_arrays(BI_ARRAYS, case["id"], "weight_"))
    return layer


@pytest.mark.parametrize("case", BI["cases"], ids=[c["id"] for c in BI["cases"]])
def test_bidirectional_outputs_masks_and_gradients_match_keras(case):
    layer = _built_bidirectional(case)
    assert [(w.name, w.path, list(w.shape)) for w in layer.weights] == [(w["name"], w["path"], w["shape"]) for w in case["weights"]]
    assert (layer.name, layer.forward_layer.name, layer.backward_layer.name) == (case["layer_name"], case["forward_name"], case["backward_name"])
    assert layer.forward_layer.zero_output_for_mask == case["forward_zero_output_for_mask"]
    assert layer.backward_layer.zero_output_for_mask == case["backward_zero_output_for_mask"]
    x = keras.Variable(BI_ARRAYS[f"{case['id']}/input"])
    states = [keras.Variable(s) for s in _arrays(BI_ARRAYS, case["id"], "initial_state_")]
    kwargs = {}
    mask = BI_ARRAYS[f"{case['id']}/mask"] if case["masked"] else None
    if mask is not None:
        kwargs["mask"] = mask
    if states:
        kwargs["initial_state"] = states
    with keras.GradientTape() as tape:
        tape.watch(x)
        for s in states:
            tape.watch(s)
        outs = _as_list(layer(x, **kwargs))
        loss = sum(keras.ops.sum(o * w) for o, w in zip(outs, _arrays(BI_ARRAYS, case["id"], "w_out_")))
    want = _arrays(BI_ARRAYS, case["id"], "output_")
    assert len(outs) == len(want)
    for i, (o, w) in enumerate(zip(outs, want)):
        assert_close_to_reference(o, w, f"output {i}")
    for o, expected in zip(outs, case["output_masks"]):
        attached = _mask_of(o)
        if expected is None:
            assert attached is None
        else:
            np.testing.assert_array_equal(np.asarray(attached), mask)
    assert float(loss) == pytest.approx(case["loss"], rel=1e-5, abs=1e-5)
    grads = tape.gradient(loss, [x, *states, *layer.trainable_weights])
    names = ["input"] + [f"initial_state_{i}" for i in range(len(states))] + [f"weight_{i}" for i in range(len(layer.weights))]
    _check_gradients(BI_ARRAYS, case["id"], grads, names)


def _mask_of(x):
    from pyfuncnet._symbolic import get_keras_mask

    return get_keras_mask(x)


def _with_unknown_time(shape):
    return [None if i == 1 else d for i, d in enumerate(shape)]


@pytest.mark.parametrize("case", BI["cases"], ids=[c["id"] for c in BI["cases"]])
@pytest.mark.parametrize("time", ["known", "unknown"])
def test_bidirectional_compiled_model_matches_keras(case, time):
    # A compiled model with unknown batch (and time): the masks come from Masking on
    # the input with its masked steps zeroed (Keras's RNNs skip masked steps, so the
    # values there do not matter), the initial states are model inputs.
    layer = _built_bidirectional(case)
    steps, features = case["input_shape"][1:]
    x_value = BI_ARRAYS[f"{case['id']}/input"]
    x = keras.Input((steps if time == "known" else None, features))
    feed = [x_value]
    h = x
    if case["masked"]:
        mask = BI_ARRAYS[f"{case['id']}/mask"]
        assert np.all(np.any(x_value != 0, axis=-1)), "an unmasked step would look masked"
        feed = [x_value * mask[..., None]]
        h = layers.Masking(0.0)(x)
    states = _arrays(BI_ARRAYS, case["id"], "initial_state_")
    state_inputs = [keras.Input((s.shape[1],)) for s in states]
    mask_inputs = []
    if states and case["masked"]:
        # With two tensor arguments the mask is not filled in from the input (Keras's
        # rule, see the next test): it is given as the eager call gave it.
        mask_inputs = [keras.Input((x.shape[1],))]
        feed.append(BI_ARRAYS[f"{case['id']}/mask"].astype(np.float32))
        mask = layers.Lambda(lambda m: ops.cast(m, "bool"))(mask_inputs[0])
        out = layer(h, initial_state=state_inputs, mask=mask)
    elif states:
        out = layer(h, initial_state=state_inputs)
    else:
        out = layer(h)
    outs = _as_list(out)
    symbolic = [list(s) for s in case["symbolic_output_shapes"]]
    if time == "unknown":
        symbolic = [_with_unknown_time(s) if len(s) == 3 else s for s in symbolic]
    assert [list(o.shape) for o in outs] == symbolic
    for o, expected in zip(outs, case["output_masks"]):
        assert (_mask_of(o) is not None) == (expected is not None)
    model = keras.Model([x, *mask_inputs, *state_inputs], outs)
    got = model.predict(feed + states, verbose=0)
    for i, (o, w) in enumerate(zip(_as_list(got), _arrays(BI_ARRAYS, case["id"], "output_"))):
        assert_close_to_reference(o, w, f"output {i}")


def test_an_attached_mask_is_not_used_when_initial_states_are_given():
    # Keras fills `mask` from the input's mask only when the input is the call's one
    # tensor argument; with `initial_state` the layers run unmasked, while the output
    # still gets the input's mask (from compute_mask).
    rng = np.random.default_rng(10)
    x_value = rng.uniform(-1, 1, (2, 5, 3)).astype(np.float32)
    x_value[0, 3:] = 0.0
    states = [rng.uniform(-0.5, 0.5, (2, 4)).astype(np.float32) for _ in range(2)]
    bi = layers.Bidirectional(layers.GRU(4, return_sequences=True))
    x, h0, h1 = keras.Input((None, 3)), keras.Input((4,)), keras.Input((4,))
    masked = bi(layers.Masking(0.0)(x), initial_state=[h0, h1])
    plain = bi(x, initial_state=[h0, h1])
    assert _mask_of(masked) is not None and _mask_of(plain) is None
    a = keras.Model([x, h0, h1], masked).predict([x_value, *states], verbose=0)
    b = keras.Model([x, h0, h1], plain).predict([x_value, *states], verbose=0)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("key", [k for k in DEFAULTS if k.startswith("Bidirectional_")])
def test_bidirectional_config_weights_and_shapes_match_keras(key):
    ref = DEFAULTS[key]
    keras.backend.clear_session()
    cls = getattr(layers, key.split("_", 1)[1])
    layer = layers.Bidirectional(cls(5))
    layer.build(tuple(ref["build_shape"]))
    assert [(w.name, w.path, list(w.shape)) for w in layer.weights] == [(w["name"], w["path"], w["shape"]) for w in ref["weights"]]
    assert layer.count_params() == ref["count_params"]
    assert (layer.forward_layer.name, layer.backward_layer.name) == (ref["forward_name"], ref["backward_name"])
    config, want = layer.get_config(), ref["config"]
    assert set(config) == set(want)
    assert config["merge_mode"] == want["merge_mode"]
    for side in ("layer", "backward_layer"):
        got, expected = config[side], want[side]
        assert set(got) == set(expected)
        assert (got["module"], got["class_name"], got["registered_name"]) == (expected["module"], expected["class_name"], expected["registered_name"])
        assert list(got["build_config"]["input_shape"]) == expected["build_config"]["input_shape"]
        assert set(got["config"]) == set(expected["config"])
        for name, value in expected["config"].items():
            if name != "dtype" and not isinstance(value, dict):
                assert got["config"][name] == value, (side, name)
    for variant in ref["output_shapes"].values():
        probe = layers.Bidirectional(cls(5, **variant["kwargs"]), merge_mode=variant["merge_mode"])
        shapes = probe.compute_output_shape((None, 7, 3))
        many = bool(variant["kwargs"].get("return_state")) or variant["merge_mode"] is None
        assert [list(s) for s in (shapes if many else [shapes])] == variant["shapes"]
    # from_config rebuilds the same layer (names, directions, merge mode).
    clone = layers.Bidirectional.from_config(config)
    clone.build(tuple(ref["build_shape"]))
    assert clone.get_config() == config


def test_bidirectional_names_follow_keras_for_a_forward_prefixed_layer():
    ref = DEFAULTS["names_of_a_forward_prefixed_layer"]
    layer = layers.Bidirectional(layers.LSTM(3, name=ref["layer_name"]))
    assert (layer.forward_layer.name, layer.backward_layer.name) == (ref["forward_name"], ref["backward_name"])


# ----------------------------------------------------------------------------
# TimeDistributed against Keras


def _vision_model(kind, side, channels):
    stack = [
        layers.Conv2D(3, 3, activation="relu", name="conv"),
        layers.MaxPooling2D(name="pool"),
        layers.Flatten(name="flatten"),
        layers.Dense(4, name="features"),
    ]
    if kind == "sequential":
        return keras.Sequential([keras.Input((side, side, channels)), *stack], name="vision")
    image = keras.Input((side, side, channels), name="image")
    out = image
    for layer in stack:
        out = layer(out)
    return keras.Model(image, out, name="vision")


def _time_distributed(case):
    keras.backend.clear_session()
    shape = case["input_shape"]
    if case["inner"] == "vision_model":
        inner = _vision_model(case["inner_kwargs"]["kind"], shape[2], shape[-1])
    else:
        inner = getattr(layers, case["inner"])(**case["inner_kwargs"])
    layer = layers.TimeDistributed(inner)
    layer.build(tuple(shape))
    layer.set_weights(_arrays(TD_ARRAYS, case["id"], "weight_"))
    return layer


@pytest.mark.parametrize("case", TD["cases"], ids=[c["id"] for c in TD["cases"]])
def test_time_distributed_outputs_masks_and_gradients_match_keras(case):
    layer = _time_distributed(case)
    assert [(w.name, w.path, list(w.shape)) for w in layer.weights] == [(w["name"], w["path"], w["shape"]) for w in case["weights"]]
    assert (layer.name, layer.layer.name) == (case["layer_name"], case["inner_name"])
    assert layer.count_params() == case["count_params"]
    x = keras.Variable(TD_ARRAYS[f"{case['id']}/input"])
    mask = TD_ARRAYS[f"{case['id']}/mask"] if case["masked"] else None
    with keras.GradientTape() as tape:
        tape.watch(x)
        outs = _as_list(layer(x) if mask is None else layer(x, mask=mask))
        loss = sum(keras.ops.sum(o * w) for o, w in zip(outs, _arrays(TD_ARRAYS, case["id"], "w_out_")))
    for i, (o, w) in enumerate(zip(outs, _arrays(TD_ARRAYS, case["id"], "output_"))):
        assert_close_to_reference(o, w, f"output {i}")
    for o, expected in zip(outs, case["output_masks"]):
        if expected is None:
            assert _mask_of(o) is None
        else:
            np.testing.assert_array_equal(np.asarray(_mask_of(o)), mask)
    assert float(loss) == pytest.approx(case["loss"], rel=1e-5, abs=1e-5)
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    names = [f"weight_{i}" for i in range(len(layer.weights))]
    _check_gradients(TD_ARRAYS, case["id"], grads[1:], names)
    shape = case["input_shape"]
    assert list(layer.compute_output_shape((None, *shape[1:]))) == case["symbolic_output_shape"]
    assert list(layer.compute_output_shape((None, None, *shape[2:]))) == case["symbolic_output_shape_unknown_time"]
    _check_gradients(TD_ARRAYS, case["id"], grads[:1], ["input"])


@pytest.mark.parametrize("case", TD["cases"], ids=[c["id"] for c in TD["cases"]])
@pytest.mark.parametrize("batch,time", [(None, "known"), (None, None), ("known", None), ("known", "known")])
def test_time_distributed_compiled_model_matches_keras(case, batch, time):
    layer = _time_distributed(case)
    shape = case["input_shape"]
    batch_shape = (shape[0] if batch else None, shape[1] if time else None, *shape[2:])
    x = keras.Input(batch_shape=batch_shape)
    out = layer(x)
    want_shape = list(case["symbolic_output_shape"] if time else case["symbolic_output_shape_unknown_time"])
    want_shape[0] = shape[0] if batch else None
    assert list(out.shape) == want_shape
    got = keras.Model(x, out).predict(TD_ARRAYS[f"{case['id']}/input"], verbose=0, batch_size=shape[0])
    assert_close_to_reference(got, TD_ARRAYS[f"{case['id']}/output_0"], "output")


def test_time_distributed_config_weights_and_shapes_match_keras():
    ref = DEFAULTS["TimeDistributed_Dense"]
    keras.backend.clear_session()
    layer = layers.TimeDistributed(layers.Dense(3))
    layer.build(tuple(ref["build_shape"]))
    assert [(w.name, w.path, list(w.shape)) for w in layer.weights] == [(w["name"], w["path"], w["shape"]) for w in ref["weights"]]
    assert layer.count_params() == ref["count_params"]
    config, want = layer.get_config(), ref["config"]
    assert set(config) == set(want)
    assert set(config["layer"]) == set(want["layer"])
    assert config["layer"]["class_name"] == "Dense" and config["layer"]["module"] == "keras.layers"
    assert list(config["layer"]["build_config"]["input_shape"]) == want["layer"]["build_config"]["input_shape"]
    assert list(layer.compute_output_shape((None, 7, 4))) == ref["output_shape"]
    assert list(layer.compute_output_shape((None, None, 4))) == ref["output_shape_unknown_time"]
    clone = layers.TimeDistributed.from_config(config)
    assert clone.name == layer.name and clone.layer.units == 3
    clone.build((None, 7, 4))
    assert clone.get_config() == config


# ----------------------------------------------------------------------------
# Models against Keras


def _video_qa():
    image = keras.Input((12, 12, 3), name="image")
    h = layers.Conv2D(4, (3, 3), activation="relu", padding="same", name="conv_1")(image)
    h = layers.Conv2D(4, (3, 3), activation="relu", name="conv_2")(h)
    h = layers.MaxPooling2D((2, 2), name="pool_1")(h)
    h = layers.Conv2D(8, (3, 3), activation="relu", padding="same", name="conv_3")(h)
    h = layers.Conv2D(8, (3, 3), activation="relu", name="conv_4")(h)
    h = layers.MaxPooling2D((2, 2), name="pool_2")(h)
    h = layers.Flatten(name="flatten")(h)
    vision = keras.Model(image, h, name="vision_model")
    video = keras.Input((4, 12, 12, 3), name="video")
    frames = layers.TimeDistributed(vision, name="frames")(video)
    encoded_video = layers.LSTM(8, name="video_lstm")(frames)
    question = keras.Input((5,), dtype="int32", name="question")
    embedded = layers.Embedding(20, 6, name="embedding")(question)
    encoded_question = layers.LSTM(8, name="question_lstm")(embedded)
    merged = layers.concatenate([encoded_video, encoded_question], name="merged")
    answer = layers.Dense(10, activation="softmax", name="answer")(merged)
    return keras.Model([video, question], answer, name="video_qa")


def _tagger():
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    h = layers.Embedding(12, 4, mask_zero=True, name="embedding")(tokens)
    h = layers.Bidirectional(layers.LSTM(5, return_sequences=True), name="encoder")(h)
    out = layers.TimeDistributed(layers.Dense(3, activation="softmax"), name="tagger")(h)
    return keras.Model(tokens, out, name="tagger")


def _stacked():
    x = keras.Input((None, 3), name="frames")
    h = layers.Masking(0.0, name="masking")(x)
    h = layers.Bidirectional(layers.GRU(4, return_sequences=True), merge_mode="sum", name="bi_gru")(h)
    h = layers.Bidirectional(layers.SimpleRNN(3), name="bi_rnn")(h)
    out = layers.Dense(2, name="dense")(h)
    return keras.Model(x, out, name="stacked")


BUILDERS = {"video_qa": _video_qa, "tagger": _tagger, "stacked": _stacked}


def _model(name):
    keras.backend.clear_session()
    model = BUILDERS[name]()
    meta = MODELS[name]
    model.set_weights([MODEL_ARRAYS[f"{name}/weight_{i}"] for i in range(len(meta["weights"]))])
    inputs = [MODEL_ARRAYS[f"{name}/input_{i}"] for i in range(len(meta["input_shapes"]))]
    return model, meta, (inputs if len(inputs) > 1 else inputs[0]), MODEL_ARRAYS[f"{name}/y"]


# Keras records the ops that compute masks from the inputs (Embedding's
# `tokens != 0`, Masking's `any`) as op layers of a functional model, which its
# summary lists (with a "Connected to" column); pyfuncnet computes masks inside the
# layers, so for those models the rows of the real layers are compared.
MASK_OP_LAYERS = ("NotEqual", "Any")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_structure_and_summary_match_keras(name, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    model, meta, _, _ = _model(name)
    assert model.count_params() == meta["count_params"]
    assert [(w.path, list(w.shape)) for w in model.weights] == [(w["path"], w["shape"]) for w in meta["weights"]]
    want_layers = [w for w in meta["layers"] if w["class"] not in MASK_OP_LAYERS]
    assert len(model.layers) == len(want_layers)
    for layer, want in zip(model.layers, want_layers):
        assert (layer.name, type(layer).__name__, layer.count_params()) == (want["name"], want["class"], want["params"])
        assert list(layer.output.shape) == want["output_shape"]
        attached = _mask_of(layer.output)
        if want["output_mask"] is None:
            assert attached is None, layer.name
        else:
            assert list(attached.shape) == want["output_mask"]["shape"] and attached.dtype == "bool", layer.name
    printed = []
    model.summary(print_fn=printed.append)
    if not any(f"({op})" in meta["summary"] for op in MASK_OP_LAYERS):
        assert printed == [meta["summary"]]
    else:
        for want in want_layers:
            assert f"{want['name']} ({want['class']})" in printed[0]
            row = next(line for line in printed[0].splitlines() if f"{want['name']} ({want['class']})" in line)
            assert row.split("│")[-2].strip() == str(want["params"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_predictions_loss_and_sgd_step_match_keras(name):
    model, meta, x, y = _model(name)
    loss_name = meta["compile"]["loss"]
    if loss_name == "sparse_categorical_crossentropy":
        # The same loss on one-hot targets (see the next test).
        loss_name, y = "categorical_crossentropy", np.eye(model.outputs[0].shape[-1], dtype=np.float32)[y]
    assert_close_to_reference(model.predict(x, verbose=0), MODEL_ARRAYS[f"{name}/predict"], "predict")
    called = model(x)
    assert_close_to_reference(called, MODEL_ARRAYS[f"{name}/call"], "call")
    if meta["call_output_mask"]:
        np.testing.assert_array_equal(np.asarray(_mask_of(called)), MODEL_ARRAYS[f"{name}/call_mask"])
    else:
        assert _mask_of(called) is None
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=meta["compile"]["learning_rate"]), loss=loss_name)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(meta["evaluate"], rel=1e-5)
    loss = model.train_on_batch(x, y)
    loss = loss[0] if isinstance(loss, list) else loss
    assert loss == pytest.approx(meta["train_on_batch_loss"], rel=1e-5)
    for i, w in enumerate(model.get_weights()):
        assert_close_to_reference(w, MODEL_ARRAYS[f"{name}/after_sgd/weight_{i}"], f"weight {i} after one SGD step")
    assert_close_to_reference(model.predict(x, verbose=0), MODEL_ARRAYS[f"{name}/after_sgd/predict"], "predict after the step")


def test_tagger_trains_on_sparse_targets_as_keras():
    model, meta, x, y = _model("tagger")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=meta["compile"]["learning_rate"]), loss=meta["compile"]["loss"])
    assert model.evaluate(x, y, verbose=0) == pytest.approx(meta["evaluate"], rel=1e-5)
    loss = model.train_on_batch(x, y)
    loss = loss[0] if isinstance(loss, list) else loss
    assert loss == pytest.approx(meta["train_on_batch_loss"], rel=1e-5)


# ----------------------------------------------------------------------------
# Errors


def _raises_like_keras(key, make, *fragments):
    """`make()` raises the exception type Keras raised, with `fragments` in its message."""
    kind, _ = ERRORS[key]
    with pytest.raises(Exception) as info:
        make()
    assert type(info.value).__name__ == kind, info.value
    for fragment in fragments:
        assert fragment in str(info.value)


def test_wrong_rank_raises_at_model_building_naming_the_layer():
    keras.backend.clear_session()
    bi = layers.Bidirectional(layers.LSTM(3), name="encoder")
    _raises_like_keras("bidirectional_rank2_input", lambda: bi(keras.Input((5,))), "encoder", "ndim=3", "ndim=2")
    _raises_like_keras("bidirectional_rank4_input", lambda: bi(keras.Input((5, 4, 2))), "encoder", "ndim=3", "ndim=4")
    td = layers.TimeDistributed(layers.Dense(3), name="per_step")
    _raises_like_keras("time_distributed_rank2_input", lambda: td(keras.Input((5,))), "per_step", "at least 3 dimensions")
    # Eagerly too.
    with pytest.raises(ValueError, match="per_step"):
        td(np.zeros((2, 5), np.float32))


def test_bad_wrapper_arguments_raise_as_in_keras():
    _raises_like_keras("bidirectional_not_a_layer", lambda: layers.Bidirectional("lstm"), "keras.layers.Layer")
    _raises_like_keras("bidirectional_bad_merge_mode", lambda: layers.Bidirectional(layers.LSTM(3), merge_mode="max"), "Invalid merge mode")
    _raises_like_keras("bidirectional_go_backwards_layer", lambda: layers.Bidirectional(layers.LSTM(3, go_backwards=True)), "go_backwards")
    _raises_like_keras(
        "bidirectional_backward_layer_same_direction",
        lambda: layers.Bidirectional(layers.LSTM(3), backward_layer=layers.LSTM(3)),
        "go_backwards",
    )
    _raises_like_keras(
        "bidirectional_backward_layer_other_sequences",
        lambda: layers.Bidirectional(layers.LSTM(3, return_sequences=True), backward_layer=layers.LSTM(3, go_backwards=True)),
        "return_sequences",
    )
    _raises_like_keras("time_distributed_not_a_layer", lambda: layers.TimeDistributed("dense"), "keras.layers.Layer")


def test_a_mask_that_does_not_fit_the_input_is_refused():
    td = layers.TimeDistributed(layers.Dense(2))
    x = np.ones((2, 4, 3), np.float32)
    with pytest.raises(ValueError, match="at least 2D"):
        td(x, mask=np.ones((2,), bool))
    with pytest.raises(ValueError, match="incompatible"):
        td(x, mask=np.ones((2, 5), bool))


# ----------------------------------------------------------------------------
# Properties checkable by hand


def _plain_pair(bi, cls, units, **kwargs):
    """Two plain layers with the forward and backward weights of `bi`."""
    forward = cls(units, return_sequences=True, zero_output_for_mask=True, **kwargs)
    backward = cls(units, return_sequences=True, go_backwards=True, zero_output_for_mask=True, **kwargs)
    for plain, source in ((forward, bi.forward_layer), (backward, bi.backward_layer)):
        plain.build(bi._inner_input_shape)
        plain.set_weights(source.get_weights())
    return forward, backward


@pytest.mark.parametrize("cls", [layers.LSTM, layers.GRU, layers.SimpleRNN], ids=lambda c: c.__name__)
def test_merges_are_the_forward_and_the_reversed_backward_outputs(cls):
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (3, 6, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0]], bool)
    merged, weights = {}, None
    for mode in ("concat", "sum", "mul", "ave", None):
        bi = layers.Bidirectional(cls(3, return_sequences=True), merge_mode=mode)
        bi.build((None, 6, 4))
        weights = weights or bi.get_weights()
        bi.set_weights(weights)
        merged[mode] = _as_list(bi(x, mask=mask))
    forward, backward = _plain_pair(bi, cls, 3)
    f = np.asarray(forward(x, mask=mask))
    b = np.asarray(backward(x, mask=mask))[:, ::-1]
    np.testing.assert_array_equal(merged["concat"][0], np.concatenate([f, b], axis=-1))
    np.testing.assert_array_equal(merged["sum"][0], f + b)
    np.testing.assert_array_equal(merged["mul"][0], f * b)
    np.testing.assert_array_equal(merged["ave"][0], (f + b) / 2)
    np.testing.assert_array_equal(merged[None][0], f)
    np.testing.assert_array_equal(merged[None][1], b)
    # Masked steps output zeros in both directions (zero_output_for_mask).
    assert not np.any(merged["concat"][0][~mask])


def test_swapping_the_directions_reverses_the_output_in_time():
    # With the forward and backward weights exchanged, the reversed sequence gives
    # the reversed output with its two halves exchanged.
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (2, 5, 3)).astype(np.float32)
    bi = layers.Bidirectional(layers.GRU(4, return_sequences=True))
    y = np.asarray(bi(x))
    swapped = layers.Bidirectional(layers.GRU(4, return_sequences=True))
    swapped.build((None, 5, 3))
    swapped.forward_layer.set_weights(bi.backward_layer.get_weights())
    swapped.backward_layer.set_weights(bi.forward_layer.get_weights())
    z = np.asarray(swapped(np.ascontiguousarray(x[:, ::-1])))[:, ::-1]
    np.testing.assert_allclose(z, np.concatenate([y[..., 4:], y[..., :4]], axis=-1), atol=1e-6)


def test_last_output_merges_the_final_states_of_both_directions():
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (2, 5, 3)).astype(np.float32)
    bi = layers.Bidirectional(layers.LSTM(3, return_state=True))
    out, fh, fc, bh, bc = bi(x)
    np.testing.assert_array_equal(out, np.concatenate([fh, bh], axis=-1))
    forward, backward = _plain_pair(bi, layers.LSTM, 3)
    np.testing.assert_array_equal(fh, np.asarray(forward(x))[:, -1])
    np.testing.assert_array_equal(bh, np.asarray(backward(x))[:, -1])


def test_initial_state_is_split_between_the_directions():
    rng = np.random.default_rng(9)
    x = rng.uniform(-1, 1, (2, 5, 3)).astype(np.float32)
    h0 = [rng.uniform(-0.5, 0.5, (2, 4)).astype(np.float32) for _ in range(2)]
    bi = layers.Bidirectional(layers.GRU(4, return_sequences=True), merge_mode=None)
    y, y_rev = bi(x, initial_state=h0)
    forward, backward = _plain_pair(bi, layers.GRU, 4)
    np.testing.assert_array_equal(y, forward(x, initial_state=[h0[0]]))
    np.testing.assert_array_equal(y_rev, np.asarray(backward(x, initial_state=[h0[1]]))[:, ::-1])


def test_weights_argument_sets_the_weights_at_build():
    rng = np.random.default_rng(11)
    source = layers.Bidirectional(layers.SimpleRNN(2))
    source.build((None, 4, 3))
    values = [rng.normal(size=w.shape).astype(np.float32) for w in source.weights]
    bi = layers.Bidirectional(layers.SimpleRNN(2), weights=values)
    bi(keras.Input((4, 3)))
    for got, want in zip(bi.get_weights(), values):
        np.testing.assert_array_equal(got, want)


def test_the_wrapped_layer_is_copied_not_used():
    lstm = layers.LSTM(3, return_sequences=True)
    bi = layers.Bidirectional(lstm)
    bi.build((None, 4, 2))
    assert not lstm.built and lstm not in bi._layers
    assert [l.name for l in bi._layers] == [bi.forward_layer.name, bi.backward_layer.name]
    assert bi.backward_layer.go_backwards and not bi.forward_layer.go_backwards


def test_bidirectional_over_a_generic_rnn_with_a_cell():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (2, 5, 3)).astype(np.float32)
    bi = layers.Bidirectional(layers.RNN(layers.LSTMCell(3), return_sequences=True))
    y = np.asarray(bi(x))
    assert [w.path for w in bi.weights][0] == f"{bi.name}/{bi.forward_layer.name}/lstm_cell/kernel"
    plain = layers.Bidirectional(layers.LSTM(3, return_sequences=True))
    plain.build((None, 5, 3))
    plain.set_weights(bi.get_weights())
    np.testing.assert_array_equal(y, plain(x))


def test_bidirectional_trains_in_a_compiled_model_with_unknown_time_as_under_a_tape():
    # The compiled train step (time reversal computed in the graph) and an eager
    # GradientTape step give the same SGD update.
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (4, 6, 3)).astype(np.float32)
    y = rng.uniform(-1, 1, (4, 6, 2)).astype(np.float32)

    def build():
        keras.backend.clear_session()
        inp = keras.Input((None, 3))
        h = layers.Bidirectional(layers.GRU(3, return_sequences=True), merge_mode="mul")(inp)
        return keras.Model(inp, layers.TimeDistributed(layers.Dense(2))(h))

    model = build()
    weights = model.get_weights()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="mse")
    loss = model.train_on_batch(x, y)
    loss = loss[0] if isinstance(loss, list) else loss

    eager = build()
    eager.set_weights(weights)
    with keras.GradientTape() as tape:
        pred = eager(x)
        value = ops.mean((pred - y) * (pred - y))
    grads = tape.gradient(value, eager.trainable_weights)
    assert loss == pytest.approx(float(value), rel=1e-6)
    for got, w, g in zip(model.get_weights(), weights, grads):
        np.testing.assert_allclose(got, w - 0.5 * np.asarray(g), atol=1e-6)


def test_time_distributed_dense_equals_dense_over_the_last_axis():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (3, 5, 4)).astype(np.float32)
    dense = layers.Dense(2, activation="tanh")
    td = layers.TimeDistributed(dense)
    np.testing.assert_array_equal(td(x), dense(x))
    assert td.weights == dense.weights


def test_time_distributed_conv_equals_a_loop_over_the_frames():
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (2, 3, 5, 5, 2)).astype(np.float32)
    conv = layers.Conv2D(3, 3, padding="same")
    td = layers.TimeDistributed(conv)
    y = np.asarray(td(x))
    for t in range(3):
        np.testing.assert_allclose(y[:, t], conv(np.ascontiguousarray(x[:, t])), atol=1e-6)


def test_time_distributed_embedding_with_unknown_batch_and_time():
    # Integer inputs, both leading sizes unknown: the unfolding positions come from
    # the graph; a shared layer is reused, not copied.
    rng = np.random.default_rng(8)
    tokens = rng.integers(0, 10, (3, 4, 5)).astype(np.int32)
    embedding = layers.Embedding(10, 2)
    inp = keras.Input((None, 5), dtype="int32")
    out = layers.TimeDistributed(embedding)(inp)
    assert out.shape == (None, None, 5, 2)
    got = keras.Model(inp, out).predict(tokens, verbose=0)
    np.testing.assert_array_equal(got, embedding(tokens))
    for shape in [(1, 7, 5), (5, 1, 5), (2, 3, 5)]:
        more = rng.integers(0, 10, shape).astype(np.int32)
        np.testing.assert_array_equal(keras.Model(inp, out).predict(more, verbose=0), embedding(more))


def test_time_distributed_keeps_the_mask_and_passes_it_folded_to_the_layer():
    rng = np.random.default_rng(12)
    x = rng.uniform(-1, 1, (2, 3, 4, 2)).astype(np.float32)
    mask = np.array([[1, 0, 1], [1, 1, 0]], bool)
    seen = {}

    class Probe(layers.Layer):
        def call(self, inputs, mask=None):
            seen["mask"] = None if mask is None else np.asarray(mask)
            return inputs

    out = layers.TimeDistributed(Probe())(x, mask=mask)
    np.testing.assert_array_equal(seen["mask"], mask.reshape(-1))
    np.testing.assert_array_equal(_mask_of(out), mask)
    inp = keras.Input((None, 3))
    h = layers.TimeDistributed(layers.Dense(2))(layers.Masking(0.0)(inp))
    assert _mask_of(h) is not None and _mask_of(h).shape == (None, None)


def test_time_distributed_summary_counts_the_wrapped_model():
    inner = keras.Sequential([keras.Input((4,)), layers.Dense(3), layers.Dense(2)])
    inp = keras.Input((None, 4))
    model = keras.Model(inp, layers.TimeDistributed(inner, name="steps")(inp))
    printed = []
    model.summary(print_fn=printed.append)
    assert "steps (TimeDistributed)" in printed[0] and "(None, None, 2)" in printed[0]
    assert model.count_params() == 4 * 3 + 3 + 3 * 2 + 2


def test_wrappers_round_trip_their_weights_through_a_keras_weights_file(tmp_path):
    pytest.importorskip("h5py")
    model, _, x, _ = _model("tagger")
    path = tmp_path / "tagger.weights.h5"
    model.save_weights(path)
    fresh = _tagger()
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), model.predict(x, verbose=0))
