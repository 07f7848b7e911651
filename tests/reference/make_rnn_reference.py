"""Writes the Keras 3 reference data for recurrent layers (LSTM, GRU, SimpleRNN).

Runs only with real Keras 3 on the JAX backend, in its own venv (see README.md; pyfuncnet
is never imported here). From the repository root:

    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_rnn_reference.py

It rewrites tests/reference/data/rnn/ (README.md beside this file describes the files):

- `layers.json` + `layers.npz`: one case per layer configuration in `layer_cases()`:
  class, constructor arguments, input, mask and initial state (when used), weights,
  every output, and the gradients of the scalar `sum_i sum(output_i * w_out_i)` with
  respect to the input, the initial state and every weight (`jax.grad` through
  `layer.stateless_call`, float32).
- `defaults.json`: per class, `get_config()` of the default layer, the constructor's
  defaults, and the weight names, paths and shapes.
- `masked_model.json` + `masked_model.npz`: Embedding(mask_zero=True) ->
  LSTM(return_sequences=True) -> Dense: predictions, the mask Keras attaches to the
  output, the mse loss `evaluate` and `compute_loss` give (masked), its gradient with
  respect to every weight, and one SGD step.
- `versions.json`.

Weights and inputs come from seeded NumPy generators and are rounded to multiples of
1/1024, so they are exact in float32; only Keras's outputs carry float32 rounding.
Every case is also checked against an independent float64 NumPy implementation of the
recurrences and of Keras's masking rules (outputs), and against float64 central
differences of that implementation (gradients); the script stops if one disagrees.

With `--compare-backend torch` (run with the same python; the script selects the torch
backend itself) it writes nothing: it recomputes every layer case's outputs and the
masked model's predictions with Keras on the torch backend and prints the largest
differences from the stored (JAX) data.

Example:
    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_rnn_reference.py
    /work/kvenv/bin/python tests/reference/make_rnn_reference.py --compare-backend torch
"""

import inspect
import json
import os
import sys
from pathlib import Path

COMPARE_BACKEND = None
if "--compare-backend" in sys.argv:
    COMPARE_BACKEND = sys.argv[sys.argv.index("--compare-backend") + 1]

os.environ["KERAS_BACKEND"] = COMPARE_BACKEND or "jax"

import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "rnn"

WEIGHT_SEED = 0
INPUT_SEED = 1
LOSS_SEED = 2
CHECK_SEED = 3
GRID = 1.0 / 1024

# The mask rows of the masked cases (batch 6, 7 steps): trailing padding, leading
# padding, fully masked, fully unmasked, a gap in the middle, padding on both ends.
MASK_ROWS = np.array(
    [
        [1, 1, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 0, 0, 1, 1, 1],
        [0, 1, 1, 1, 1, 1, 0],
    ],
    dtype=bool,
)

# (id prefix, class, extra constructor arguments) for every family of cases.
VARIANTS = [
    ("lstm", "LSTM", {}),
    ("gru", "GRU", {}),
    ("gru_reset_before", "GRU", {"reset_after": False}),
    ("simple_rnn", "SimpleRNN", {}),
]


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


def write_json(name, content):
    """Writes `content` as indented UTF-8 JSON to data/rnn/`name`."""
    with open(DATA / name, "w", encoding="utf-8") as handle:
        json.dump(plain(content), handle, indent=1, ensure_ascii=False)
        handle.write("\n")


def write_npz(name, arrays):
    """Writes `arrays` (a dict of NumPy arrays) to the compressed archive data/rnn/`name`."""
    np.savez_compressed(DATA / name, **arrays)


def as_list(value):
    """A layer's output(s) as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def draw_weight(rng, variable_name, shape):
    """One reference weight on the 1/1024 grid.

    Kernels and recurrent kernels: normal * sqrt(1 / rows) (rows: input features, or
    units), which keeps tanh and sigmoid away from saturation. Biases (also GRU's (2, 3u)
    bias): normal * 0.1. Embeddings: normal * 0.5.
    """
    shape = tuple(shape)
    if variable_name in ("kernel", "recurrent_kernel"):
        return on_grid(rng.normal(size=shape) * np.sqrt(1.0 / shape[0]))
    if variable_name == "bias":
        return on_grid(rng.normal(size=shape) * 0.1)
    if variable_name == "embeddings":
        return on_grid(rng.normal(size=shape) * 0.5)
    raise ValueError(f"no rule for weight {variable_name!r}")


def state_count(class_name):
    """Number of state tensors: LSTM has [h, c], the others [h]."""
    return 2 if class_name == "LSTM" else 1


def scaled_difference(got, want):
    """Largest |got - want| over max(|want|) (absolute when want is all zeros)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)) if want.size else 0.0


# ----------------------------------------------------------------------------
# Cases


def case(case_id, class_name, kwargs, shape, masked=False, initial_state=False, note=None):
    """One layer case: `shape` is (batch, time, features); `kwargs` includes `units`."""
    record = {
        "id": case_id,
        "class": class_name,
        "kwargs": kwargs,
        "input_shape": list(shape),
        "masked": masked,
        "initial_state": initial_state,
    }
    if note:
        record["note"] = note
    return record


def layer_cases():
    """Every per-layer case, in a fixed order: the same templates for each variant."""
    rs = {"return_sequences": True}
    st = {"return_state": True}
    gb = {"go_backwards": True}
    cases = []
    for prefix, class_name, base in VARIANTS:
        if class_name == "SimpleRNN":
            activation = {"activation": "relu"}
        else:
            activation = {"activation": "relu", "recurrent_activation": "hard_sigmoid"}
        templates = [
            ("default", {}, (4, 7, 3), 5, False, False, None),
            ("sequences", rs, (4, 7, 3), 5, False, False, None),
            ("state", st, (3, 7, 3), 7, False, False, None),
            ("sequences_state", {**rs, **st}, (3, 7, 17), 7, False, False, None),
            ("backwards", gb, (4, 7, 3), 5, False, False, None),
            ("backwards_sequences", {**gb, **rs}, (4, 7, 3), 5, False, False, None),
            ("backwards_sequences_state", {**gb, **rs, **st}, (4, 7, 3), 5, False, False, None),
            ("mask_sequences", rs, (6, 7, 3), 5, True, False, None),
            ("mask_last", {}, (6, 7, 3), 5, True, False, None),
            ("mask_sequences_state", {**rs, **st}, (6, 7, 3), 7, True, False, None),
            ("mask_last_state", st, (6, 7, 3), 7, True, False, None),
            ("mask_backwards_sequences_state", {**gb, **rs, **st}, (6, 7, 3), 5, True, False, None),
            ("mask_backwards_last", gb, (6, 7, 3), 5, True, False, None),
            (
                "mask_initial_state",
                {**rs, **st},
                (6, 7, 3),
                5,
                True,
                True,
                "JAX: masked steps before the first unmasked one output the initial h (torch and "
                "TensorFlow output zeros there, as the unroll=True case with the same data does)",
            ),
            (
                "mask_unroll_initial_state",
                {**rs, **st, "unroll": True},
                (6, 7, 3),
                5,
                True,
                True,
                "unroll=True: masked steps before the first unmasked one output zeros",
            ),
            (
                "mask_unroll_zero_output",
                {**rs, **st, "unroll": True, "zero_output_for_mask": True},
                (6, 7, 3),
                5,
                True,
                False,
                "JAX's unrolled loop ignores zero_output_for_mask: masked steps repeat the previous "
                "output (torch and TensorFlow output zeros)",
            ),
            (
                "mask_backwards_initial_state",
                {**gb, **rs, **st},
                (6, 7, 3),
                5,
                True,
                True,
                None,
            ),
            (
                "mask_zero_output",
                {**rs, **st, "zero_output_for_mask": True},
                (6, 7, 3),
                5,
                True,
                False,
                "zero_output_for_mask=True: masked steps output zeros",
            ),
            (
                "mask_zero_output_last",
                {"zero_output_for_mask": True},
                (6, 7, 3),
                5,
                True,
                False,
                "zero_output_for_mask=True: the last output is zeros where the last step is masked",
            ),
            ("mask_no_bias_activation", {**rs, **activation, "use_bias": False}, (6, 7, 3), 5, True, False, None),
            ("initial_state", st, (4, 7, 3), 5, False, True, None),
            ("initial_state_sequences", {**rs, **st}, (4, 7, 3), 5, False, True, None),
            ("backwards_initial_state", {**gb, **rs, **st}, (4, 7, 3), 5, False, True, None),
            ("no_bias", {**rs, "use_bias": False}, (4, 7, 3), 5, False, False, None),
            ("activation", {**rs, **st, **activation}, (4, 7, 3), 5, False, False, None),
            ("activation_last", activation, (4, 7, 17), 7, False, False, None),
            ("wide", rs, (3, 7, 17), 33, False, False, None),
            ("batch1_time1", {}, (1, 1, 1), 5, False, False, None),
            ("batch1", rs, (1, 7, 1), 7, False, False, None),
            ("time1", {**rs, **st}, (5, 1, 17), 7, False, False, None),
            ("unroll", {**rs, "unroll": True}, (4, 7, 3), 5, False, False, None),
        ]
        for suffix, extra, shape, units, masked, initial, note in templates:
            kwargs = {"units": units, **base, **extra}
            cases.append(case(f"{prefix}_{suffix}", class_name, kwargs, shape, masked, initial, note))
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


def case_inputs(record):
    """Input, mask (or None), initial states (or None) and loss weights of `record`."""
    batch, time, features = record["input_shape"]
    units = record["kwargs"]["units"]
    rng = np.random.default_rng(INPUT_SEED)
    x = on_grid(rng.uniform(-1.0, 1.0, size=(batch, time, features)))
    initial = None
    if record["initial_state"]:
        initial = [on_grid(rng.uniform(-0.5, 0.5, size=(batch, units))) for _ in range(state_count(record["class"]))]
    mask = MASK_ROWS[:batch, :time].copy() if record["masked"] else None
    return x, mask, initial


def loss_weights(output_shapes):
    """The fixed arrays w_out_i of the scalar loss sum_i sum(output_i * w_out_i)."""
    rng = np.random.default_rng(LOSS_SEED)
    return [on_grid(rng.uniform(-1.0, 1.0, size=shape)) for shape in output_shapes]


def call_kwargs(mask, initial):
    """Keyword arguments of the layer call."""
    kwargs = {}
    if mask is not None:
        kwargs["mask"] = mask
    if initial is not None:
        kwargs["initial_state"] = list(initial)
    return kwargs


def run_layer_case(record, inputs=None, weights=None, with_gradients=True):
    """Builds the layer of `record`, sets weights, calls it; returns (meta, arrays)."""
    keras.backend.clear_session()
    x, mask, initial = case_inputs(record) if inputs is None else inputs
    layer = getattr(keras.layers, record["class"])(**record["kwargs"])
    layer.build(tuple(record["input_shape"]))
    if weights is None:
        rng = np.random.default_rng(WEIGHT_SEED)
        weights = [draw_weight(rng, v.name, v.shape) for v in layer.weights]
    layer.set_weights(weights)
    called = as_list(layer(x, **call_kwargs(mask, initial)))
    outputs = [to_numpy(o) for o in called]
    arrays = {"input": x}
    if mask is not None:
        arrays["mask"] = mask
    for index, array in enumerate(initial or []):
        arrays[f"initial_state_{index}"] = array
    for index, array in enumerate(weights):
        arrays[f"weight_{index}"] = array
    for index, array in enumerate(outputs):
        arrays[f"output_{index}"] = array
    if not with_gradients:
        return None, arrays

    from keras.src.backend import get_keras_mask

    output_masks = []
    for tensor in called:
        attached = get_keras_mask(tensor)
        if attached is None:
            output_masks.append(None)
        else:
            attached = to_numpy(attached)
            assert mask is not None and np.array_equal(attached, mask), f"{record['id']}: unexpected output mask"
            output_masks.append("input_mask")

    w_out = loss_weights([o.shape for o in outputs])
    loss, gradients = layer_gradients(layer, x, mask, initial, w_out)
    for index, array in enumerate(w_out):
        arrays[f"w_out_{index}"] = array
    arrays["grad_input"] = gradients["input"]
    for index, array in enumerate(gradients["initial_state"]):
        arrays[f"grad_initial_state_{index}"] = array
    for index, array in enumerate(gradients["weights"]):
        arrays[f"grad_weight_{index}"] = array

    batch_none = (None, *record["input_shape"][1:])
    symbolic = layer.compute_output_shape(batch_none)
    symbolic = list(symbolic) if record["kwargs"].get("return_state") else [symbolic]
    meta = {
        **record,
        "weights": [{"name": v.name, "path": v.path, "shape": list(v.shape)} for v in layer.weights],
        "output_shapes": [list(o.shape) for o in outputs],
        "symbolic_output_shapes": [list(s) for s in symbolic],
        "output_masks": output_masks,
        "loss": float(loss),
    }
    return meta, arrays


def layer_gradients(layer, x, mask, initial, w_out):
    """Loss sum_i sum(out_i * w_out_i) and its float32 gradients (jax.grad of stateless_call)."""
    import jax
    import jax.numpy as jnp

    trainable = [v.value for v in layer.trainable_variables]
    assert len(trainable) == len(layer.weights), "every RNN weight is trainable"
    # The only non-trainable variable is the dropout seed generator's state.
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss_fn(weights, inputs, states):
        kwargs = {} if mask is None else {"mask": mask}
        if states is not None:
            kwargs["initial_state"] = list(states)
        out, _ = layer.stateless_call(weights, non_trainable, inputs, **kwargs)
        return sum(jnp.sum(o * w) for o, w in zip(as_list(out), w_out))

    states = None if initial is None else [jnp.asarray(s) for s in initial]
    loss = loss_fn(trainable, jnp.asarray(x), states)
    grads = jax.grad(loss_fn, argnums=(0, 1, 2))(trainable, jnp.asarray(x), states)
    return to_numpy(loss), {
        "weights": [np.asarray(g, dtype=np.float32) for g in grads[0]],
        "input": np.asarray(grads[1], dtype=np.float32),
        "initial_state": [] if grads[2] is None else [np.asarray(g, dtype=np.float32) for g in grads[2]],
    }


# ----------------------------------------------------------------------------
# Independent float64 NumPy implementation (the check)


def np_activation(name):
    """The float64 NumPy version of a Keras activation name."""
    return {
        "tanh": np.tanh,
        "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
        "relu": lambda v: np.maximum(v, 0.0),
        # Keras 3 (jax.nn.hard_sigmoid): relu6(x + 3) / 6, not Keras 2's 0.2 x + 0.5.
        "hard_sigmoid": lambda v: np.clip((v + 3.0) / 6.0, 0.0, 1.0),
        "linear": lambda v: v,
    }[name]


def np_cell(class_name, kwargs, weights, x_t, states):
    """One step of the cell; returns (output, new_states)."""
    act = np_activation(kwargs.get("activation", "tanh"))
    rec = np_activation(kwargs.get("recurrent_activation", "sigmoid"))
    use_bias = kwargs.get("use_bias", True)
    kernel, recurrent = weights[0], weights[1]
    bias = weights[2] if use_bias else None
    h = states[0]
    if class_name == "SimpleRNN":
        z = x_t @ kernel + h @ recurrent + (bias if use_bias else 0.0)
        out = act(z)
        return out, [out]
    if class_name == "LSTM":
        c = states[1]
        z = x_t @ kernel + h @ recurrent + (bias if use_bias else 0.0)
        zi, zf, zc, zo = np.split(z, 4, axis=-1)
        c_new = rec(zf) * c + rec(zi) * act(zc)
        h_new = rec(zo) * act(c_new)
        return h_new, [h_new, c_new]
    units = h.shape[-1]
    if kwargs.get("reset_after", True):
        input_bias = bias[0] if use_bias else 0.0
        recurrent_bias = bias[1] if use_bias else 0.0
        mx = x_t @ kernel + input_bias
        mh = h @ recurrent + recurrent_bias
        z = rec(mx[:, :units] + mh[:, :units])
        r = rec(mx[:, units : 2 * units] + mh[:, units : 2 * units])
        candidate = act(mx[:, 2 * units :] + r * mh[:, 2 * units :])
    else:
        mx = x_t @ kernel + (bias if use_bias else 0.0)
        mh = h @ recurrent[:, : 2 * units]
        z = rec(mx[:, :units] + mh[:, :units])
        r = rec(mx[:, units : 2 * units] + mh[:, units:])
        candidate = act(mx[:, 2 * units :] + (r * h) @ recurrent[:, 2 * units :])
    h_new = z * h + (1.0 - z) * candidate
    return h_new, [h_new]


def np_layer(record, x, mask, initial, weights):
    """Keras's recurrence and masking rules in float64; returns the list of outputs."""
    kwargs = record["kwargs"]
    class_name = record["class"]
    batch, time, _ = x.shape
    units = kwargs["units"]
    states = [np.zeros((batch, units))] * state_count(class_name) if initial is None else list(initial)
    steps = range(time - 1, -1, -1) if kwargs.get("go_backwards") else range(time)
    previous_output = np.zeros((batch, units))
    outputs = []
    for t in steps:
        out, new_states = np_cell(class_name, kwargs, weights, x[:, t], states)
        if mask is not None:
            keep = mask[:, t][:, None]
            if kwargs.get("unroll"):
                # Unrolled loop: the previous *output*, zeros before the first step.
                out = np.where(keep, out, previous_output)
            elif kwargs.get("zero_output_for_mask"):
                out = np.where(keep, out, 0.0)
            else:
                # lax.scan loop: the previous state h (states[0]), so the initial h.
                out = np.where(keep, out, states[0])
            new_states = [np.where(keep, n, s) for n, s in zip(new_states, states)]
        states = new_states
        previous_output = out
        outputs.append(out)
    result = [np.stack(outputs, axis=1) if kwargs.get("return_sequences") else outputs[-1]]
    if kwargs.get("return_state"):
        result += states
    return result


def check_layer_case(record, arrays):
    """Compares the Keras data of one case with the float64 NumPy implementation."""
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    n_weights = len([k for k in arrays if k.startswith("weight_")])
    n_states = len([k for k in arrays if k.startswith("initial_state_")])
    n_outputs = len([k for k in arrays if k.startswith("output_")])
    x = f64(arrays["input"])
    mask = arrays.get("mask")
    initial = [f64(arrays[f"initial_state_{i}"]) for i in range(n_states)] or None
    weights = [f64(arrays[f"weight_{i}"]) for i in range(n_weights)]
    w_out = [f64(arrays[f"w_out_{i}"]) for i in range(n_outputs)]

    want = np_layer(record, x, mask, initial, weights)
    assert len(want) == n_outputs, f"{record['id']}: {n_outputs} outputs, expected {len(want)}"
    worst_output = max(scaled_difference(arrays[f"output_{i}"], w) for i, w in enumerate(want))
    assert worst_output < 5e-6, f"{record['id']}: outputs differ by {worst_output:.3g}"

    def loss(x_, initial_, weights_):
        outs = np_layer(record, x_, mask, initial_, weights_)
        return sum(float(np.sum(o * w)) for o, w in zip(outs, w_out))

    worst_gradient = worst_central_difference(loss, x, initial, weights, arrays, samples=24)
    assert worst_gradient < 1e-4, f"{record['id']}: gradients differ by {worst_gradient:.3g}"
    return worst_output, worst_gradient


def worst_central_difference(loss, x, initial, weights, arrays, samples):
    """The largest scaled gap between the stored gradients (`grad_input`,
    `grad_initial_state_<i>`, `grad_weight_<i>` of `arrays`) and float64 central
    differences of `loss(x, initial, weights)`, over up to `samples` entries of
    each array (scaled by the array's largest gradient, at least 1e-3)."""
    rng = np.random.default_rng(CHECK_SEED)
    eps = 1e-6
    targets = [("input", x, arrays["grad_input"])]
    targets += [(f"initial_state_{i}", s, arrays[f"grad_initial_state_{i}"]) for i, s in enumerate(initial or [])]
    targets += [(f"weight_{i}", w, arrays[f"grad_weight_{i}"]) for i, w in enumerate(weights)]
    worst = 0.0
    for name, value, grad in targets:
        positions = np.arange(value.size)
        if value.size > samples:
            positions = rng.choice(value.size, size=samples, replace=False)
        scale = max(np.abs(grad).max(), 1e-3)
        for position in positions:
            index = np.unravel_index(position, value.shape)
            values = []
            for sign in (1.0, -1.0):
                moved = value.copy()
                moved[index] += sign * eps
                x_ = moved if name == "input" else x
                initial_ = [moved if name == f"initial_state_{i}" else s for i, s in enumerate(initial or [])] or None
                weights_ = [moved if name == f"weight_{i}" else w for i, w in enumerate(weights)]
                values.append(loss(x_, initial_, weights_))
            numeric = (values[0] - values[1]) / (2 * eps)
            worst = max(worst, abs(numeric - float(grad[index])) / scale)
    return worst


# ----------------------------------------------------------------------------
# Default configurations


def default_layers():
    """Per class: get_config() of `Class(5)` built on (None, 7, 3), constructor defaults, weights."""
    result = {}
    for key, class_name, kwargs in (
        ("LSTM", "LSTM", {}),
        ("GRU", "GRU", {}),
        ("GRU_reset_after_false", "GRU", {"reset_after": False}),
        ("SimpleRNN", "SimpleRNN", {}),
    ):
        keras.backend.clear_session()
        cls = getattr(keras.layers, class_name)
        layer = cls(5, **kwargs)
        layer.build((None, 7, 3))
        parameters = inspect.signature(cls.__init__).parameters
        defaults = {
            name: p.default
            for name, p in parameters.items()
            if p.default is not inspect.Parameter.empty and name != "self"
        }
        cell_parameters = inspect.signature(type(layer.cell).__init__).parameters
        result[key] = {
            "kwargs": {"units": 5, **kwargs},
            "build_shape": [None, 7, 3],
            "config": layer.get_config(),
            "constructor_defaults": defaults,
            "cell_class": type(layer.cell).__name__,
            "cell_constructor_defaults": {
                name: p.default
                for name, p in cell_parameters.items()
                if p.default is not inspect.Parameter.empty and name != "self"
            },
            "weights": [
                {"name": v.name, "path": v.path, "shape": list(v.shape), "trainable": v.trainable}
                for v in layer.weights
            ],
            "state_size": plain(layer.cell.state_size),
            "supports_masking": layer.supports_masking,
            "zero_output_for_mask": layer.zero_output_for_mask,
            "output_shape": list(layer.compute_output_shape((None, 7, 3))),
            "output_shape_return_state": [
                list(s) for s in cls(5, return_state=True, **kwargs).compute_output_shape((None, 7, 3))
            ],
        }
    return result


# ----------------------------------------------------------------------------
# Embedding(mask_zero=True) -> LSTM(return_sequences=True) -> Dense


MODEL_VOCAB = 12
MODEL_DIM = 4
MODEL_UNITS = 5
MODEL_OUT = 3


def build_masked_model():
    """The small functional model of `masked_model.*`, with explicit names."""
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    embedded = keras.layers.Embedding(MODEL_VOCAB, MODEL_DIM, mask_zero=True, name="embedding")(tokens)
    hidden = keras.layers.LSTM(MODEL_UNITS, return_sequences=True, name="lstm")(embedded)
    out = keras.layers.Dense(MODEL_OUT, name="dense")(hidden)
    return keras.Model(tokens, out, name="masked_lstm")


def masked_model_inputs():
    """Token ids (6, 7) with the MASK_ROWS padding pattern (0 = padding), targets, (6, 7) sample weights."""
    rng = np.random.default_rng(INPUT_SEED)
    tokens = rng.integers(1, MODEL_VOCAB, size=MASK_ROWS.shape).astype(np.int32) * MASK_ROWS
    y = on_grid(rng.uniform(-1.0, 1.0, size=(*MASK_ROWS.shape, MODEL_OUT)))
    sample_weight = on_grid(rng.uniform(0.5, 2.0, size=MASK_ROWS.shape))
    return tokens.astype(np.int32), y, sample_weight


def masked_model():
    """Predictions, masks, masked mse losses, gradients and one SGD step; returns (meta, arrays)."""
    import jax

    from keras.src.backend import get_keras_mask

    keras.backend.clear_session()
    model = build_masked_model()
    rng = np.random.default_rng(WEIGHT_SEED)
    weights = [draw_weight(rng, v.name, v.shape) for v in model.weights]
    model.set_weights(weights)
    tokens, y, sample_weight = masked_model_inputs()

    symbolic_masks = {}
    for layer in model.layers:
        tensor = layer.output
        attached = getattr(tensor, "_keras_mask", None)
        symbolic_masks[layer.name] = None if attached is None else {
            "shape": list(attached.shape),
            "dtype": str(attached.dtype),
        }

    predicted = np.asarray(model.predict(tokens, verbose=0))
    called = model(tokens)
    call_mask = get_keras_mask(called)
    call_mask = None if call_mask is None else to_numpy(call_mask)
    embedding_mask = to_numpy(model.get_layer("embedding").compute_mask(tokens))

    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    evaluate = float(model.evaluate(tokens, y, verbose=0))
    evaluate_weighted = float(model.evaluate(tokens, y, sample_weight=sample_weight, verbose=0))
    compute_loss_masked = float(to_numpy(model.compute_loss(x=tokens, y=y, y_pred=model(tokens))))
    compute_loss_plain = float(to_numpy(model.compute_loss(x=tokens, y=y, y_pred=predicted)))

    # The gradient the JAX trainer's train_step takes: value_and_grad of compute_loss_and_updates.
    model.optimizer.build(model.trainable_variables)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    metrics_variables = [v.value for v in model.metrics_variables]
    optimizer_variables = [v.value for v in model.optimizer.variables]
    grad_fn = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)
    (train_loss, _), grads = grad_fn(
        trainable, non_trainable, metrics_variables, tokens, y, None, True, optimizer_variables
    )
    grads = [np.asarray(g, dtype=np.float32) for g in grads]
    assert len(trainable) == len(model.weights)

    step_loss = float(model.train_on_batch(tokens, y))
    after = [np.asarray(w) for w in model.get_weights()]
    for before, now, grad in zip(weights, after, grads):
        update = now.astype(np.float64) - before
        assert np.abs(update + grad).max() <= 1e-6 * max(np.abs(grad).max(), 1.0) + 1e-7, "SGD step != -grad"

    # The rules, in float64.
    mask = tokens != 0
    per_step = ((predicted.astype(np.float64) - y) ** 2).mean(axis=-1)
    masked_formula = float((per_step * mask).sum() / mask.sum())
    weighted_formula = float((per_step * mask * sample_weight).sum() / mask.sum())
    plain_formula = float(per_step.mean())
    for got, want in (
        (evaluate, masked_formula),
        (compute_loss_masked, masked_formula),
        (float(train_loss), masked_formula),
        (step_loss, masked_formula),
        (evaluate_weighted, weighted_formula),
        (compute_loss_plain, plain_formula),
    ):
        assert abs(got - want) <= 1e-6 * abs(want), (got, want)
    assert call_mask is not None and np.array_equal(call_mask, mask)

    # Per-sample weights of shape (batch,) do not broadcast against the (batch, time)
    # loss values in Keras 3.15 (with or without a mask): recorded as the error. A
    # fresh model, because the failed trace leaves the first one unusable.
    keras.backend.clear_session()
    spare = build_masked_model()
    spare.set_weights(weights)
    spare.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    try:
        spare.evaluate(tokens, y, sample_weight=sample_weight[:, 0], verbose=0)
        per_sample_error = None
    except ValueError as error:
        per_sample_error = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    assert np.array_equal(embedding_mask, mask)

    meta = {
        "name": model.name,
        "layer_names": [layer.name for layer in model.layers],
        "layer_classes": [type(layer).__name__ for layer in model.layers],
        "layer_kwargs": {
            "embedding": {"input_dim": MODEL_VOCAB, "output_dim": MODEL_DIM, "mask_zero": True},
            "lstm": {"units": MODEL_UNITS, "return_sequences": True},
            "dense": {"units": MODEL_OUT},
        },
        "input_shapes": [list(t.shape) for t in model.inputs],
        "output_shapes": [list(t.shape) for t in model.outputs],
        "weights": [
            {"name": v.name, "path": v.path, "shape": list(v.shape), "trainable": v.trainable} for v in model.weights
        ],
        "symbolic_output_masks": symbolic_masks,
        "call_output_mask_is_tokens_nonzero": True,
        "compile": {"optimizer": "SGD", "optimizer_kwargs": {"learning_rate": 1.0}, "loss": "mse"},
        "evaluate": evaluate,
        "evaluate_sample_weight": evaluate_weighted,
        "evaluate_per_sample_weight_error": per_sample_error,
        "compute_loss_masked_y_pred": compute_loss_masked,
        "compute_loss_unmasked_y_pred": compute_loss_plain,
        "train_loss_for_gradient": float(train_loss),
        "train_on_batch_loss": step_loss,
        "formulas": {
            "masked": "sum(mean((y_pred - y)**2, -1) * mask) / sum(mask)",
            "masked_sample_weight": "sum(mean((y_pred - y)**2, -1) * mask * sw) / sum(mask), sw of shape (batch, time)",
            "unmasked": "mean((y_pred - y)**2)",
        },
    }
    arrays = {"tokens": tokens, "y": y, "sample_weight": sample_weight, "mask": mask}
    for index, array in enumerate(weights):
        arrays[f"weight_{index}"] = array
    arrays["predict"] = predicted
    arrays["call"] = to_numpy(called)
    arrays["call_mask"] = call_mask
    for index, array in enumerate(grads):
        arrays[f"grad_weight_{index}"] = array
    for index, array in enumerate(after):
        arrays[f"after_sgd/weight_{index}"] = array
    return meta, arrays


# ----------------------------------------------------------------------------


def generate():
    """Writes every file under data/rnn/."""
    if keras.backend.backend() != "jax":
        raise SystemExit(f"expected the JAX backend, got {keras.backend.backend()!r}")
    import jax

    DATA.mkdir(parents=True, exist_ok=True)

    index, arrays = [], {}
    worst_output = worst_gradient = 0.0
    for record in layer_cases():
        meta, case_arrays = run_layer_case(record)
        out_diff, grad_diff = check_layer_case(record, case_arrays)
        worst_output = max(worst_output, out_diff)
        worst_gradient = max(worst_gradient, grad_diff)
        index.append(meta)
        arrays.update({f"{record['id']}/{key}": value for key, value in case_arrays.items()})
    write_json("layers.json", {"mask_rows": MASK_ROWS.astype(int), "cases": index})
    write_npz("layers.npz", arrays)
    print(
        f"{len(index)} layer cases; NumPy float64 check: outputs within {worst_output:.2g}, "
        f"gradients within {worst_gradient:.2g} (scaled)"
    )

    write_json("defaults.json", default_layers())

    meta, model_arrays = masked_model()
    write_json("masked_model.json", meta)
    write_npz("masked_model.npz", model_arrays)
    print(f"masked model: evaluate {meta['evaluate']:.6f}, unmasked {meta['compute_loss_unmasked_y_pred']:.6f}")

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


def compare_backend():
    """Recomputes the stored layer cases and the masked model on this backend; prints differences."""
    with open(DATA / "layers.json", encoding="utf-8") as handle:
        index = json.load(handle)["cases"]
    stored = np.load(DATA / "layers.npz")
    worst = []
    for record in index:
        case_id = record["id"]
        prefix = f"{case_id}/"
        keys = [k[len(prefix) :] for k in stored.files if k.startswith(prefix)]
        x = stored[prefix + "input"]
        mask = stored[prefix + "mask"] if "mask" in keys else None
        n_states = len([k for k in keys if k.startswith("initial_state_")])
        initial = [stored[f"{prefix}initial_state_{i}"] for i in range(n_states)] or None
        weights = [stored[f"{prefix}weight_{i}"] for i in range(len(record["weights"]))]
        try:
            _, arrays = run_layer_case(record, inputs=(x, mask, initial), weights=weights, with_gradients=False)
        except Exception as error:  # noqa: BLE001 - report and go on
            print(f"{case_id}: {type(error).__name__}: {error}")
            continue
        for key in arrays:
            if key.startswith("output_"):
                worst.append((scaled_difference(arrays[key], stored[prefix + key]), prefix + key))
    worst.sort(reverse=True)
    print(f"layer cases on {keras.backend.backend()}: largest scaled differences")
    for diff, key in worst[:15]:
        print(f"  {diff:.3g}  {key}")

    keras.backend.clear_session()
    model = build_masked_model()
    data = np.load(DATA / "masked_model.npz")
    model.set_weights([data[f"weight_{i}"] for i in range(len(model.weights))])
    predicted = model.predict(data["tokens"], verbose=0)
    print(f"masked model predict: scaled difference {scaled_difference(predicted, data['predict']):.3g}")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    with open(DATA / "masked_model.json", encoding="utf-8") as handle:
        meta = json.load(handle)
    evaluate = float(model.evaluate(data["tokens"], data["y"], verbose=0))
    print(f"masked model evaluate: {evaluate:.7g} (stored {meta['evaluate']:.7g})")


if __name__ == "__main__":
    if COMPARE_BACKEND:
        compare_backend()
    else:
        generate()
