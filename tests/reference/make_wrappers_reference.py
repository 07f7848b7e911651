"""Writes the Keras 3 reference data for the wrapper layers (Bidirectional, TimeDistributed).

Runs only with real Keras 3 on the JAX backend, in its own venv (see README.md; pyfuncnet
is never imported here). From the repository root:

    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_wrappers_reference.py

It rewrites tests/reference/data/wrappers/ (README.md beside this file describes the files):

- `bidirectional.json` + `bidirectional.npz`: Bidirectional(LSTM / GRU / SimpleRNN) with
  every merge mode, return_sequences, return_state, masks, initial states and a custom
  backward layer: weights, outputs, the masks Keras attaches to them, and the gradients of
  the scalar `sum_i sum(output_i * w_out_i)` with respect to the input, the initial
  states and every weight (`jax.grad` through `layer.stateless_call`, float32).
- `time_distributed.json` + `time_distributed.npz`: TimeDistributed over Dense, Conv2D,
  LSTM, a small functional Conv2D model and a Sequential one: the same quantities.
- `models.json` + `models.npz`: the video question-answering model of the Keras
  functional-API guide at small sizes, a tagger (Embedding(mask_zero) ->
  Bidirectional(LSTM) -> TimeDistributed(Dense)) and a stacked masked Bidirectional
  encoder: parameter counts, summaries, predictions, masks, losses, one SGD step.
- `defaults.json`: configs, weight paths and output shapes of default wrappers;
  `errors.json`: what Keras raises for bad arguments and inputs; `versions.json`.

Weights and inputs come from seeded NumPy generators and are rounded to multiples of
1/1024, so they are exact in float32. Every Bidirectional case is also checked against
the float64 NumPy recurrences of make_rnn_reference.py composed by hand (outputs), and
float64 central differences of that composition (gradients); every TimeDistributed case
against Keras's wrapped layer called once on the input with time folded into the batch
(outputs and gradients). The script stops if one disagrees.
"""

import json
import os
import sys
from pathlib import Path

# Set before Keras (and rich, which draws summaries) are imported: the backend, and a
# wide terminal, because Keras narrows the default summary to the terminal's width.
os.environ["KERAS_BACKEND"] = "jax"
os.environ["COLUMNS"] = "200"

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from make_rnn_reference import (  # noqa: E402
    MASK_ROWS,
    as_list,
    np_layer,
    on_grid,
    plain,
    scaled_difference,
    state_count,
    to_numpy,
    worst_central_difference,
)

DATA = HERE / "data" / "wrappers"

WEIGHT_SEED = 0
INPUT_SEED = 1
LOSS_SEED = 2

RNN_CLASSES = [("lstm", "LSTM"), ("gru", "GRU"), ("simple_rnn", "SimpleRNN")]


# ----------------------------------------------------------------------------
# Helpers


def write_json(name, content):
    """Writes `content` as indented UTF-8 JSON to data/wrappers/`name`."""
    with open(DATA / name, "w", encoding="utf-8") as handle:
        json.dump(plain(content), handle, indent=1, ensure_ascii=False)
        handle.write("\n")


def write_npz(name, arrays):
    """Writes `arrays` (a dict of NumPy arrays) to the compressed archive data/wrappers/`name`."""
    np.savez_compressed(DATA / name, **arrays)


def draw_weight(rng, variable_name, shape):
    """One reference weight on the 1/1024 grid.

    Kernels (dense and convolution): normal * sqrt(1 / fan_in), fan_in the product of
    all but the last dimension; recurrent kernels normal * sqrt(1 / units); biases
    (also GRU's (2, 3u) one) normal * 0.1; embeddings normal * 0.5.
    """
    shape = tuple(shape)
    if variable_name == "kernel":
        return on_grid(rng.normal(size=shape) * np.sqrt(1.0 / np.prod(shape[:-1])))
    if variable_name == "recurrent_kernel":
        return on_grid(rng.normal(size=shape) * np.sqrt(1.0 / shape[0]))
    if variable_name == "bias":
        return on_grid(rng.normal(size=shape) * 0.1)
    if variable_name == "embeddings":
        return on_grid(rng.normal(size=shape) * 0.5)
    raise ValueError(f"no rule for weight {variable_name!r}")


def reference_weights(variables):
    """Reference values for `variables`, drawn in order from default_rng(WEIGHT_SEED)."""
    rng = np.random.default_rng(WEIGHT_SEED)
    return [draw_weight(rng, v.name, v.shape) for v in variables]


def loss_weights(output_shapes):
    """The fixed arrays w_out_i of the scalar loss sum_i sum(output_i * w_out_i)."""
    rng = np.random.default_rng(LOSS_SEED)
    return [on_grid(rng.uniform(-1.0, 1.0, size=shape)) for shape in output_shapes]


def weight_records(layer):
    return [{"name": v.name, "path": v.path, "shape": list(v.shape)} for v in layer.weights]


def output_mask_records(called, mask, case_id):
    """Per output: "input_mask" when Keras attached the call's mask to it, else None."""
    from keras.src.backend import get_keras_mask

    records = []
    for tensor in called:
        attached = get_keras_mask(tensor)
        if attached is None:
            records.append(None)
            continue
        attached = to_numpy(attached)
        assert mask is not None and np.array_equal(attached, mask), f"{case_id}: unexpected output mask"
        records.append("input_mask")
    return records


def stateless_gradients(layer, x, call_kwargs, states, w_out):
    """Loss sum_i sum(out_i * w_out_i) and its float32 gradients with respect to the
    trainable weights, the input and the initial states (jax.grad of stateless_call)."""
    import jax
    import jax.numpy as jnp

    trainable = [v.value for v in layer.trainable_variables]
    assert len(trainable) == len(layer.weights), "every weight is trainable"
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss_fn(weights, inputs, initial):
        kwargs = dict(call_kwargs)
        if initial is not None:
            kwargs["initial_state"] = list(initial)
        out, _ = layer.stateless_call(weights, non_trainable, inputs, **kwargs)
        return sum(jnp.sum(o * w) for o, w in zip(as_list(out), w_out))

    initial = None if states is None else [jnp.asarray(s) for s in states]
    loss = loss_fn(trainable, jnp.asarray(x), initial)
    grads = jax.grad(loss_fn, argnums=(0, 1, 2))(trainable, jnp.asarray(x), initial)
    return float(to_numpy(loss)), {
        "weights": [np.asarray(g, dtype=np.float32) for g in grads[0]],
        "input": np.asarray(grads[1], dtype=np.float32),
        "initial_state": [] if grads[2] is None else [np.asarray(g, dtype=np.float32) for g in grads[2]],
    }


def gradient_arrays(gradients):
    arrays = {"grad_input": gradients["input"]}
    for index, array in enumerate(gradients["initial_state"]):
        arrays[f"grad_initial_state_{index}"] = array
    for index, array in enumerate(gradients["weights"]):
        arrays[f"grad_weight_{index}"] = array
    return arrays


def shape_list(shapes, many):
    """compute_output_shape's result as a list of lists (one per output)."""
    if many:
        return [list(s) for s in shapes]
    return [list(shapes)]


# ----------------------------------------------------------------------------
# Bidirectional cases


def bidirectional_case(case_id, class_name, kwargs, merge_mode, shape, masked=False, initial_state=False, backward_kwargs=None, note=None):
    """One case: `kwargs` (with `units`) builds the wrapped layer, `backward_kwargs`
    (or None) a custom backward layer; `shape` is (batch, time, features)."""
    record = {
        "id": case_id,
        "class": class_name,
        "kwargs": kwargs,
        "merge_mode": merge_mode,
        "backward_kwargs": backward_kwargs,
        "input_shape": list(shape),
        "masked": masked,
        "initial_state": initial_state,
    }
    if note:
        record["note"] = note
    return record


def bidirectional_cases():
    """Every Bidirectional case, in a fixed order: the same templates for each class."""
    rs = {"return_sequences": True}
    st = {"return_state": True}
    base_shape, mask_shape = (4, 7, 3), (6, 7, 3)
    cases = []
    for prefix, class_name in RNN_CLASSES:
        if class_name == "SimpleRNN":
            backward = {"activation": "relu"}
        else:
            backward = {"activation": "relu", "recurrent_activation": "hard_sigmoid"}
        templates = [
            # (suffix, layer kwargs, merge_mode, shape, units, masked, initial_state, custom backward, note)
            ("concat", {}, "concat", base_shape, 4, False, False, None, None),
            ("sum", {}, "sum", base_shape, 4, False, False, None, None),
            ("mul", {}, "mul", base_shape, 4, False, False, None, None),
            ("ave", {}, "ave", base_shape, 4, False, False, None, None),
            ("none", {}, None, base_shape, 4, False, False, None, None),
            ("seq_concat", rs, "concat", base_shape, 4, False, False, None, None),
            ("seq_sum", rs, "sum", base_shape, 4, False, False, None, None),
            ("seq_mul", rs, "mul", base_shape, 4, False, False, None, None),
            ("seq_ave", rs, "ave", base_shape, 4, False, False, None, None),
            ("seq_none", rs, None, base_shape, 4, False, False, None, None),
            ("state_concat", st, "concat", base_shape, 4, False, False, None, None),
            ("state_none", st, None, base_shape, 4, False, False, None, None),
            ("seq_state_concat", {**rs, **st}, "concat", base_shape, 4, False, False, None, None),
            ("seq_state_ave", {**rs, **st}, "ave", base_shape, 4, False, False, None, None),
            ("seq_state_none", {**rs, **st}, None, base_shape, 4, False, False, None, None),
            ("mask_seq_concat", rs, "concat", mask_shape, 4, True, False, None, None),
            ("mask_seq_mul", rs, "mul", mask_shape, 4, True, False, None, None),
            ("mask_seq_none", rs, None, mask_shape, 4, True, False, None, None),
            ("mask_last_concat", {}, "concat", mask_shape, 4, True, False, None, None),
            ("mask_seq_state_sum", {**rs, **st}, "sum", mask_shape, 4, True, False, None, None),
            ("mask_last_state_none", st, None, mask_shape, 4, True, False, None, None),
            (
                "mask_last_zero_output",
                {"zero_output_for_mask": True},
                "concat",
                mask_shape,
                4,
                True,
                False,
                None,
                "zero_output_for_mask=True on the wrapped layer is replaced by return_sequences (False)",
            ),
            (
                "mask_seq_no_zero_output",
                {**rs, "zero_output_for_mask": False},
                "concat",
                mask_shape,
                4,
                True,
                False,
                None,
                "zero_output_for_mask=False on the wrapped layer is replaced by return_sequences (True)",
            ),
            ("initial_state_seq_concat", {**rs, **st}, "concat", base_shape, 4, False, True, None, None),
            ("initial_state_last_sum", {}, "sum", base_shape, 4, False, True, None, None),
            ("mask_initial_state_seq_state", {**rs, **st}, "concat", mask_shape, 4, True, True, None, None),
            ("backward_layer_seq_concat", rs, "concat", base_shape, 4, False, False, backward, None),
            ("backward_layer_mask_seq_state", {**rs, **st}, "ave", mask_shape, 4, True, False, backward, None),
            ("wide_seq", rs, "concat", (3, 7, 17), 9, False, False, None, None),
            ("time1_seq_state", {**rs, **st}, "concat", (5, 1, 3), 4, False, False, None, None),
        ]
        for suffix, extra, merge_mode, shape, units, masked, initial, custom, note in templates:
            kwargs = {"units": units, **extra}
            backward_kwargs = None
            if custom is not None:
                backward_kwargs = {"units": units, **extra, **custom, "go_backwards": True, "name": "reverse"}
            cases.append(
                bidirectional_case(f"{prefix}_{suffix}", class_name, kwargs, merge_mode, shape, masked, initial, backward_kwargs, note)
            )
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


def bidirectional_inputs(record):
    """Input, mask (or None) and initial states (or None: forward's, then backward's)."""
    batch, time, features = record["input_shape"]
    units = record["kwargs"]["units"]
    rng = np.random.default_rng(INPUT_SEED)
    x = on_grid(rng.uniform(-1.0, 1.0, size=(batch, time, features)))
    initial = None
    if record["initial_state"]:
        initial = [on_grid(rng.uniform(-0.5, 0.5, size=(batch, units))) for _ in range(2 * state_count(record["class"]))]
    mask = MASK_ROWS[:batch, :time].copy() if record["masked"] else None
    return x, mask, initial


def make_bidirectional(record):
    """The Bidirectional layer of `record` (after clear_session), unbuilt."""
    keras.backend.clear_session()
    cls = getattr(keras.layers, record["class"])
    inner = cls(**record["kwargs"])
    backward = cls(**record["backward_kwargs"]) if record["backward_kwargs"] else None
    return keras.layers.Bidirectional(inner, merge_mode=record["merge_mode"], backward_layer=backward)


def run_bidirectional_case(record):
    """Builds, sets weights, calls and differentiates one case; returns (meta, arrays)."""
    layer = make_bidirectional(record)
    layer.build(tuple(record["input_shape"]))
    weights = reference_weights(layer.weights)
    layer.set_weights(weights)
    x, mask, initial = bidirectional_inputs(record)
    call_kwargs = {} if mask is None else {"mask": mask}
    states_kwargs = {} if initial is None else {"initial_state": list(initial)}
    called = as_list(layer(x, **call_kwargs, **states_kwargs))
    outputs = [to_numpy(o) for o in called]
    w_out = loss_weights([o.shape for o in outputs])
    loss, gradients = stateless_gradients(layer, x, call_kwargs, initial, w_out)

    arrays = {"input": x}
    if mask is not None:
        arrays["mask"] = mask
    for index, array in enumerate(initial or []):
        arrays[f"initial_state_{index}"] = array
    for index, array in enumerate(weights):
        arrays[f"weight_{index}"] = array
    for index, array in enumerate(outputs):
        arrays[f"output_{index}"] = array
    for index, array in enumerate(w_out):
        arrays[f"w_out_{index}"] = array
    arrays.update(gradient_arrays(gradients))

    many = bool(record["kwargs"].get("return_state")) or record["merge_mode"] is None
    batch_none = (None, *record["input_shape"][1:])
    meta = {
        **record,
        "layer_name": layer.name,
        "forward_name": layer.forward_layer.name,
        "backward_name": layer.backward_layer.name,
        "forward_zero_output_for_mask": layer.forward_layer.zero_output_for_mask,
        "backward_zero_output_for_mask": layer.backward_layer.zero_output_for_mask,
        "n_forward_weights": len(layer.forward_layer.weights),
        "weights": weight_records(layer),
        "output_shapes": [list(o.shape) for o in outputs],
        "symbolic_output_shapes": shape_list(layer.compute_output_shape(batch_none), many),
        "output_masks": output_mask_records(called, mask, record["id"]),
        "loss": loss,
    }
    return meta, arrays


def np_bidirectional(record, meta, x, mask, initial, weights):
    """The case in float64: the NumPy recurrences of make_rnn_reference.py, composed
    as Keras's Bidirectional composes its layers."""
    sequences = bool(record["kwargs"].get("return_sequences"))
    n_states = state_count(record["class"])
    n_forward = meta["n_forward_weights"]
    forward_kwargs = {**record["kwargs"], "zero_output_for_mask": sequences}
    backward_kwargs = dict(record["backward_kwargs"] or {**record["kwargs"], "go_backwards": True})
    backward_kwargs["zero_output_for_mask"] = sequences
    forward = np_layer(
        {"class": record["class"], "kwargs": forward_kwargs},
        x,
        mask,
        None if initial is None else initial[:n_states],
        weights[:n_forward],
    )
    backward = np_layer(
        {"class": record["class"], "kwargs": backward_kwargs},
        x,
        mask,
        None if initial is None else initial[n_states:],
        weights[n_forward:],
    )
    y, y_rev = forward[0], backward[0]
    if sequences:
        y_rev = y_rev[:, ::-1]
    merge_mode = record["merge_mode"]
    if merge_mode == "concat":
        outputs = [np.concatenate([y, y_rev], axis=-1)]
    elif merge_mode == "sum":
        outputs = [y + y_rev]
    elif merge_mode == "ave":
        outputs = [(y + y_rev) / 2]
    elif merge_mode == "mul":
        outputs = [y * y_rev]
    else:
        outputs = [y, y_rev]
    return outputs + forward[1:] + backward[1:]


def check_bidirectional_case(record, meta, arrays):
    """Compares one case's Keras data with the float64 composition; returns the worst
    scaled output and gradient differences."""
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    n_weights = len(meta["weights"])
    n_states = len([k for k in arrays if k.startswith("initial_state_")])
    n_outputs = len([k for k in arrays if k.startswith("output_")])
    x = f64(arrays["input"])
    mask = arrays.get("mask")
    initial = [f64(arrays[f"initial_state_{i}"]) for i in range(n_states)] or None
    weights = [f64(arrays[f"weight_{i}"]) for i in range(n_weights)]
    w_out = [f64(arrays[f"w_out_{i}"]) for i in range(n_outputs)]

    want = np_bidirectional(record, meta, x, mask, initial, weights)
    assert len(want) == n_outputs, f"{record['id']}: {n_outputs} outputs, expected {len(want)}"
    worst_output = max(scaled_difference(arrays[f"output_{i}"], w) for i, w in enumerate(want))
    assert worst_output < 5e-6, f"{record['id']}: outputs differ by {worst_output:.3g}"

    def loss(x_, initial_, weights_):
        outs = np_bidirectional(record, meta, x_, mask, initial_, weights_)
        return sum(float(np.sum(o * w)) for o, w in zip(outs, w_out))

    worst_gradient = worst_central_difference(loss, x, initial, weights, arrays, samples=16)
    assert worst_gradient < 1e-4, f"{record['id']}: gradients differ by {worst_gradient:.3g}"
    return worst_output, worst_gradient


# ----------------------------------------------------------------------------
# TimeDistributed cases


def vision_model(kind="functional", side=6, channels=2):
    """A small image model: Conv2D(3, 3, relu) -> MaxPooling2D -> Flatten -> Dense(4)."""
    layers = [
        keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(4, name="features"),
    ]
    if kind == "sequential":
        return keras.Sequential([keras.Input((side, side, channels)), *layers], name="vision")
    image = keras.Input((side, side, channels), name="image")
    out = image
    for layer in layers:
        out = layer(out)
    return keras.Model(image, out, name="vision")


# (id, inner layer: (class name or builder name, kwargs), input shape, masked, note)
TD_CASES = [
    ("dense", ("Dense", {"units": 4}), (3, 5, 6), False, None),
    ("dense_tanh_rank4", ("Dense", {"units": 4, "activation": "tanh"}), (3, 5, 2, 6), False, "Dense on (batch * time, 2, 6)"),
    ("dense_masked", ("Dense", {"units": 4}), (3, 5, 6), True, "the output keeps the input's mask"),
    ("dense_time1", ("Dense", {"units": 2}), (4, 1, 3), False, None),
    ("conv2d_same", ("Conv2D", {"filters": 3, "kernel_size": 3, "padding": "same", "activation": "relu"}), (2, 3, 6, 6, 2), False, None),
    ("conv2d_strided", ("Conv2D", {"filters": 4, "kernel_size": 3, "strides": 2}), (2, 3, 7, 7, 2), False, None),
    ("lstm", ("LSTM", {"units": 3}), (2, 3, 5, 4), False, "an LSTM over the inner sequences of length 5"),
    ("vision_model", ("vision_model", {"kind": "functional"}), (2, 3, 6, 6, 2), False, "a functional model"),
    ("vision_sequential", ("vision_model", {"kind": "sequential"}), (2, 3, 6, 6, 2), False, "a Sequential model"),
]


def td_records():
    records = []
    for case_id, (inner, kwargs), shape, masked, note in TD_CASES:
        record = {"id": case_id, "inner": inner, "inner_kwargs": kwargs, "input_shape": list(shape), "masked": masked}
        if note:
            record["note"] = note
        records.append(record)
    return records


def make_inner(record):
    if record["inner"] == "vision_model":
        shape = record["input_shape"]
        return vision_model(record["inner_kwargs"]["kind"], side=shape[2], channels=shape[-1])
    return getattr(keras.layers, record["inner"])(**record["inner_kwargs"])


def run_td_case(record):
    """Builds, sets weights, calls and differentiates one TimeDistributed case."""
    keras.backend.clear_session()
    inner = make_inner(record)
    layer = keras.layers.TimeDistributed(inner)
    shape = tuple(record["input_shape"])
    layer.build(shape)
    weights = reference_weights(layer.weights)
    layer.set_weights(weights)
    rng = np.random.default_rng(INPUT_SEED)
    x = on_grid(rng.uniform(-1.0, 1.0, size=shape))
    mask = MASK_ROWS[: shape[0], : shape[1]].copy() if record["masked"] else None
    call_kwargs = {} if mask is None else {"mask": mask}
    called = as_list(layer(x, **call_kwargs))
    outputs = [to_numpy(o) for o in called]
    w_out = loss_weights([o.shape for o in outputs])
    loss, gradients = stateless_gradients(layer, x, call_kwargs, None, w_out)

    arrays = {"input": x}
    if mask is not None:
        arrays["mask"] = mask
    for index, array in enumerate(weights):
        arrays[f"weight_{index}"] = array
    for index, array in enumerate(outputs):
        arrays[f"output_{index}"] = array
    for index, array in enumerate(w_out):
        arrays[f"w_out_{index}"] = array
    arrays.update(gradient_arrays(gradients))
    meta = {
        **record,
        "layer_name": layer.name,
        "inner_name": inner.name,
        "weights": weight_records(layer),
        "count_params": layer.count_params(),
        "output_shapes": [list(o.shape) for o in outputs],
        "symbolic_output_shape": list(layer.compute_output_shape((None, *shape[1:]))),
        "symbolic_output_shape_unknown_time": list(layer.compute_output_shape((None, None, *shape[2:]))),
        "output_masks": output_mask_records(called, mask, record["id"]),
        "loss": loss,
    }
    check_td_case(layer, x, outputs, gradients, w_out, record["id"])
    return meta, arrays


def check_td_case(layer, x, outputs, gradients, w_out, case_id):
    """The wrapped layer called once on the input with time folded into the batch
    gives the same outputs and gradients (Keras's TimeDistributed loops over steps)."""
    import jax
    import jax.numpy as jnp

    inner = layer.layer
    batch, time = x.shape[:2]
    folded = x.reshape((batch * time,) + x.shape[2:])
    trainable = [v.value for v in inner.trainable_variables]
    non_trainable = [v.value for v in inner.non_trainable_variables]

    def loss_fn(weights, inputs):
        out, _ = inner.stateless_call(weights, non_trainable, inputs)
        out = out.reshape((batch, time) + out.shape[1:])
        return jnp.sum(out * w_out[0]), out

    (_, out), grads = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(trainable, jnp.asarray(folded))
    worst = scaled_difference(outputs[0], np.asarray(out))
    worst = max(worst, scaled_difference(gradients["input"], np.asarray(grads[1]).reshape(x.shape)))
    for got, want in zip(gradients["weights"], grads[0]):
        worst = max(worst, scaled_difference(got, np.asarray(want)))
    assert worst < 2e-6, f"{case_id}: the folded call differs by {worst:.3g}"
    return worst


# ----------------------------------------------------------------------------
# Models


VIDEO = {"frames": 4, "side": 12, "question_length": 5, "vocab": 20, "embedding": 6, "units": 8, "answers": 10, "batch": 3}


def build_video_qa():
    """The video QA model of the functional-API guide, small: every frame through a
    Conv2D/MaxPooling2D/Flatten vision model (TimeDistributed), an LSTM over the frame
    codes; the question through Embedding and an LSTM; concatenated; Dense softmax."""
    v = VIDEO
    image = keras.Input((v["side"], v["side"], 3), name="image")
    h = keras.layers.Conv2D(4, (3, 3), activation="relu", padding="same", name="conv_1")(image)
    h = keras.layers.Conv2D(4, (3, 3), activation="relu", name="conv_2")(h)
    h = keras.layers.MaxPooling2D((2, 2), name="pool_1")(h)
    h = keras.layers.Conv2D(8, (3, 3), activation="relu", padding="same", name="conv_3")(h)
    h = keras.layers.Conv2D(8, (3, 3), activation="relu", name="conv_4")(h)
    h = keras.layers.MaxPooling2D((2, 2), name="pool_2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    vision = keras.Model(image, h, name="vision_model")

    video = keras.Input((v["frames"], v["side"], v["side"], 3), name="video")
    frames = keras.layers.TimeDistributed(vision, name="frames")(video)
    encoded_video = keras.layers.LSTM(v["units"], name="video_lstm")(frames)
    question = keras.Input((v["question_length"],), dtype="int32", name="question")
    embedded = keras.layers.Embedding(v["vocab"], v["embedding"], name="embedding")(question)
    encoded_question = keras.layers.LSTM(v["units"], name="question_lstm")(embedded)
    merged = keras.layers.concatenate([encoded_video, encoded_question], name="merged")
    answer = keras.layers.Dense(v["answers"], activation="softmax", name="answer")(merged)
    return keras.Model([video, question], answer, name="video_qa")


def video_qa_data():
    v = VIDEO
    rng = np.random.default_rng(INPUT_SEED)
    video = on_grid(rng.uniform(0.0, 1.0, size=(v["batch"], v["frames"], v["side"], v["side"], 3)))
    question = rng.integers(1, v["vocab"], size=(v["batch"], v["question_length"])).astype(np.int32)
    labels = rng.integers(0, v["answers"], size=v["batch"])
    y = np.eye(v["answers"], dtype=np.float32)[labels]
    return video, question, y


TAGGER = {"vocab": 12, "embedding": 4, "units": 5, "tags": 3}


def build_tagger():
    """Embedding(mask_zero) -> Bidirectional(LSTM, return_sequences) -> TimeDistributed(Dense softmax)."""
    t = TAGGER
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(t["vocab"], t["embedding"], mask_zero=True, name="embedding")(tokens)
    h = keras.layers.Bidirectional(keras.layers.LSTM(t["units"], return_sequences=True), name="encoder")(h)
    out = keras.layers.TimeDistributed(keras.layers.Dense(t["tags"], activation="softmax"), name="tagger")(h)
    return keras.Model(tokens, out, name="tagger")


def tagger_data():
    t = TAGGER
    rng = np.random.default_rng(INPUT_SEED)
    tokens = (rng.integers(1, t["vocab"], size=MASK_ROWS.shape) * MASK_ROWS).astype(np.int32)
    y = rng.integers(0, t["tags"], size=MASK_ROWS.shape).astype(np.int32)
    return tokens, y


def build_stacked():
    """Masking -> Bidirectional(GRU, sum, sequences) -> Bidirectional(SimpleRNN, concat) -> Dense."""
    x = keras.Input((None, 3), name="frames")
    h = keras.layers.Masking(0.0, name="masking")(x)
    h = keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True), merge_mode="sum", name="bi_gru")(h)
    h = keras.layers.Bidirectional(keras.layers.SimpleRNN(3), name="bi_rnn")(h)
    out = keras.layers.Dense(2, name="dense")(h)
    return keras.Model(x, out, name="stacked")


def stacked_data():
    rng = np.random.default_rng(INPUT_SEED)
    x = on_grid(rng.uniform(-1.0, 1.0, size=(*MASK_ROWS.shape, 3))) * MASK_ROWS[..., None]
    y = on_grid(rng.uniform(-1.0, 1.0, size=(MASK_ROWS.shape[0], 2)))
    return x.astype(np.float32), y


MODELS = {
    "video_qa": (build_video_qa, video_qa_data, {"optimizer": "SGD", "learning_rate": 0.1, "loss": "categorical_crossentropy"}),
    "tagger": (build_tagger, tagger_data, {"optimizer": "SGD", "learning_rate": 0.5, "loss": "sparse_categorical_crossentropy"}),
    "stacked": (build_stacked, stacked_data, {"optimizer": "SGD", "learning_rate": 0.5, "loss": "mse"}),
}


def run_model(name):
    """Parameter counts, predictions, masks, losses and one SGD step of model `name`."""
    from keras.src.backend import get_keras_mask

    build, data, compile_args = MODELS[name]
    keras.backend.clear_session()
    model = build()
    weights = reference_weights(model.weights)
    model.set_weights(weights)
    *inputs, y = data()
    x = inputs if len(inputs) > 1 else inputs[0]

    layer_records = []
    for layer in model.layers:
        output = layer.output
        attached = getattr(output, "_keras_mask", None)
        layer_records.append(
            {
                "name": layer.name,
                "class": type(layer).__name__,
                "params": layer.count_params(),
                "output_shape": list(output.shape),
                "output_mask": None if attached is None else {"shape": list(attached.shape), "dtype": str(attached.dtype)},
            }
        )
    printed = []
    model.summary(print_fn=printed.append)
    assert len(printed) == 1, "summary called print_fn more than once"
    predicted = np.asarray(model.predict(x, verbose=0))
    called = model(x)
    call_mask = get_keras_mask(called)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=compile_args["learning_rate"]), loss=compile_args["loss"])
    evaluate = float(model.evaluate(x, y, verbose=0))
    step_loss = float(model.train_on_batch(x, y))
    after = [np.asarray(w) for w in model.get_weights()]
    predicted_after = np.asarray(model.predict(x, verbose=0))
    assert abs(step_loss - evaluate) <= 1e-5 * abs(evaluate), (name, step_loss, evaluate)

    meta = {
        "name": model.name,
        "input_shapes": [list(t.shape) for t in model.inputs],
        "input_dtypes": [str(t.dtype) for t in model.inputs],
        "output_shape": list(model.outputs[0].shape),
        "count_params": model.count_params(),
        "summary": printed[0],
        "layers": layer_records,
        "weights": [{"name": v.name, "path": v.path, "shape": list(v.shape)} for v in model.weights],
        "compile": compile_args,
        "evaluate": evaluate,
        "train_on_batch_loss": step_loss,
        "call_output_mask": call_mask is not None,
    }
    arrays = {f"{name}/input_{i}": a for i, a in enumerate(inputs)}
    arrays[f"{name}/y"] = y
    for index, array in enumerate(weights):
        arrays[f"{name}/weight_{index}"] = array
    arrays[f"{name}/predict"] = predicted
    arrays[f"{name}/call"] = to_numpy(called)
    if call_mask is not None:
        arrays[f"{name}/call_mask"] = to_numpy(call_mask)
    for index, array in enumerate(after):
        arrays[f"{name}/after_sgd/weight_{index}"] = array
    arrays[f"{name}/after_sgd/predict"] = predicted_after
    return meta, arrays


# ----------------------------------------------------------------------------
# Defaults and errors


def default_wrappers():
    """Configs, weights and output shapes of default wrappers, each after clear_session."""
    result = {}
    for _, class_name in RNN_CLASSES:
        keras.backend.clear_session()
        cls = getattr(keras.layers, class_name)
        layer = keras.layers.Bidirectional(cls(5))
        layer.build((None, 7, 3))
        shapes = {}
        for key, kwargs, merge_mode in (
            ("default", {}, "concat"),
            ("sequences", {"return_sequences": True}, "concat"),
            ("sequences_sum", {"return_sequences": True}, "sum"),
            ("state", {"return_state": True}, "concat"),
            ("state_none", {"return_state": True}, None),
            ("sequences_state_none", {"return_sequences": True, "return_state": True}, None),
        ):
            probe = keras.layers.Bidirectional(cls(5, **kwargs), merge_mode=merge_mode)
            out = probe.compute_output_shape((None, 7, 3))
            many = bool(kwargs.get("return_state")) or merge_mode is None
            shapes[key] = {"kwargs": kwargs, "merge_mode": merge_mode, "shapes": shape_list(out, many)}
        result[f"Bidirectional_{class_name}"] = {
            "build_shape": [None, 7, 3],
            "config": layer.get_config(),
            "weights": weight_records(layer),
            "count_params": layer.count_params(),
            "forward_name": layer.forward_layer.name,
            "backward_name": layer.backward_layer.name,
            "output_shapes": shapes,
        }
    keras.backend.clear_session()
    layer = keras.layers.TimeDistributed(keras.layers.Dense(3))
    layer.build((None, 7, 4))
    result["TimeDistributed_Dense"] = {
        "build_shape": [None, 7, 4],
        "config": layer.get_config(),
        "weights": weight_records(layer),
        "count_params": layer.count_params(),
        "output_shape": list(layer.compute_output_shape((None, 7, 4))),
        "output_shape_unknown_time": list(layer.compute_output_shape((None, None, 4))),
    }
    keras.backend.clear_session()
    named = keras.layers.Bidirectional(keras.layers.LSTM(3, name="forward_encoder"))
    result["names_of_a_forward_prefixed_layer"] = {
        "layer_name": "forward_encoder",
        "forward_name": named.forward_layer.name,
        "backward_name": named.backward_layer.name,
    }
    return result


def keras_errors():
    """What Keras raises for bad wrapper arguments and inputs: `[type, first line]`."""

    def attempt(make):
        keras.backend.clear_session()
        try:
            make()
        except Exception as error:  # noqa: BLE001 - recorded
            return [type(error).__name__, str(error).splitlines()[0]]
        return None

    L = keras.layers
    cases = {
        "bidirectional_rank2_input": lambda: L.Bidirectional(L.LSTM(3))(keras.Input((5,))),
        "bidirectional_rank4_input": lambda: L.Bidirectional(L.LSTM(3))(keras.Input((5, 4, 2))),
        "bidirectional_not_a_layer": lambda: L.Bidirectional("lstm"),
        "bidirectional_bad_merge_mode": lambda: L.Bidirectional(L.LSTM(3), merge_mode="max"),
        "bidirectional_go_backwards_layer": lambda: L.Bidirectional(L.LSTM(3, go_backwards=True)),
        "bidirectional_backward_layer_same_direction": lambda: L.Bidirectional(L.LSTM(3), backward_layer=L.LSTM(3)),
        "bidirectional_backward_layer_other_sequences": lambda: L.Bidirectional(
            L.LSTM(3, return_sequences=True), backward_layer=L.LSTM(3, go_backwards=True)
        ),
        "time_distributed_rank2_input": lambda: L.TimeDistributed(L.Dense(3))(keras.Input((5,))),
        "time_distributed_not_a_layer": lambda: L.TimeDistributed("dense"),
    }
    return {key: attempt(make) for key, make in cases.items()}


# ----------------------------------------------------------------------------


def generate():
    """Writes every file under data/wrappers/."""
    if keras.backend.backend() != "jax":
        raise SystemExit(f"expected the JAX backend, got {keras.backend.backend()!r}")
    import jax

    DATA.mkdir(parents=True, exist_ok=True)

    index, arrays = [], {}
    worst_output = worst_gradient = 0.0
    for record in bidirectional_cases():
        meta, case_arrays = run_bidirectional_case(record)
        out_diff, grad_diff = check_bidirectional_case(record, meta, case_arrays)
        worst_output, worst_gradient = max(worst_output, out_diff), max(worst_gradient, grad_diff)
        index.append(meta)
        arrays.update({f"{record['id']}/{key}": value for key, value in case_arrays.items()})
    write_json("bidirectional.json", {"mask_rows": MASK_ROWS.astype(int), "cases": index})
    write_npz("bidirectional.npz", arrays)
    print(
        f"{len(index)} Bidirectional cases; NumPy float64 check: outputs within {worst_output:.2g}, "
        f"gradients within {worst_gradient:.2g} (scaled)"
    )

    index, arrays = [], {}
    for record in td_records():
        meta, case_arrays = run_td_case(record)
        index.append(meta)
        arrays.update({f"{record['id']}/{key}": value for key, value in case_arrays.items()})
    write_json("time_distributed.json", {"mask_rows": MASK_ROWS.astype(int), "cases": index})
    write_npz("time_distributed.npz", arrays)
    print(f"{len(index)} TimeDistributed cases (each checked against the folded call)")

    models, arrays = {}, {}
    for name in MODELS:
        meta, model_arrays = run_model(name)
        models[name] = meta
        arrays.update(model_arrays)
        print(f"model {name}: {meta['count_params']} parameters, loss {meta['train_on_batch_loss']:.6f}")
    write_json("models.json", models)
    write_npz("models.npz", arrays)

    write_json("defaults.json", default_wrappers())
    write_json("errors.json", keras_errors())
    write_json(
        "versions.json",
        {
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "jax": jax.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
    )
    total = sum(path.stat().st_size for path in DATA.rglob("*") if path.is_file())
    print(f"wrote {DATA} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    generate()
