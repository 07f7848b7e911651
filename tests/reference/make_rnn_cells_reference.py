"""Writes the Keras 3 reference data for `RNN` over user-written and stacked cells.

Runs only with real Keras 3 on the JAX backend, in its own venv (see README.md; pyfuncnet
is never imported here). From the repository root:

    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_rnn_cells_reference.py

It rewrites tests/reference/data/rnn/cells.json and cells.npz: per case in `CASES`, the
cell (a spec for `rnn_cells.make_cell`), the RNN's arguments, input, mask and initial
states (when used), weights (names, paths, values), every output (flattened: Keras
returns stacked cells' states as one list per cell), and the gradients of the scalar
`sum_i sum(output_i * w_out_i)` with respect to the input, the initial states and every
weight (`jax.grad` through `layer.stateless_call`).

Weights, inputs and loss weights follow make_rnn_reference.py's rules (seeded, on the
1/1024 grid). Every case is also checked against an independent float64 NumPy
recurrence (outputs) and float64 central differences of it (gradients); the script
stops if one disagrees.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_rnn_reference as base  # noqa: E402 - sets the backend, then imports keras
import numpy as np  # noqa: E402
from rnn_cells import make_cell  # noqa: E402

keras = base.keras
SHAPE = (6, 7, 3)

LSTM_GRU = ["stacked", [["LSTMCell", 4], ["GRUCell", 3]]]

# (id, cell spec, RNN keyword arguments, masked, initial_state)
CASES = [
    ("minimal_last", ["minimal", 4], {}, False, False),
    ("minimal_seq_state_backwards", ["minimal", 4], {"return_sequences": True, "return_state": True, "go_backwards": True}, False, False),
    ("minimal_mask_seq", ["minimal", 4], {"return_sequences": True}, True, False),
    ("minimal_mask_seq_zero_output", ["minimal", 4], {"return_sequences": True, "zero_output_for_mask": True}, True, False),
    ("minimal_mask_initial_state", ["minimal", 4], {"return_state": True}, True, True),
    ("two_state_seq_state", ["two_state", 4], {"return_sequences": True, "return_state": True}, False, False),
    ("two_state_mask_initial_state_backwards", ["two_state", 4], {"return_sequences": True, "return_state": True, "go_backwards": True}, True, True),
    ("stacked_lstm_gru_seq_state", LSTM_GRU, {"return_sequences": True, "return_state": True}, False, False),
    ("stacked_lstm_gru_mask_backwards", LSTM_GRU, {"return_sequences": True, "return_state": True, "go_backwards": True}, True, False),
    ("stacked_lstm_gru_mask_initial_state", LSTM_GRU, {"return_state": True}, True, True),
    ("stacked_two_state_simple_mask_seq", ["stacked", [["two_state", 3], ["SimpleRNNCell", 2]]], {"return_sequences": True}, True, False),
    ("stacked_minimal_lstm_backwards_state", ["stacked", [["minimal", 3], ["LSTMCell", 2]]], {"return_state": True, "go_backwards": True}, False, False),
]


def cell_states(spec):
    """Per state: its width, grouped as Keras passes initial states (a list per
    stacked cell)."""
    kind, arg = spec
    if kind == "stacked":
        return [cell_states(s) for s in arg]
    if kind == "two_state":
        return [arg, 2]
    if kind == "LSTMCell":
        return [arg, arg]
    return [arg]


def flat(structure):
    return [leaf for item in structure for leaf in flat(item)] if isinstance(structure, (list, tuple)) else [structure]


def pack(structure, leaves):
    leaves = iter(leaves)

    def rebuild(s):
        return [rebuild(item) for item in s] if isinstance(s, list) else next(leaves)

    return rebuild(structure)


def draw(rng, name, shape):
    """make_rnn_reference's weight rule; `memory_kernel` counts as a kernel."""
    return base.draw_weight(rng, "kernel" if name.endswith("kernel") else name, shape)


def inputs_of(case_id, spec, masked, initial_state):
    rng = np.random.default_rng(base.INPUT_SEED)
    x = base.on_grid(rng.uniform(-1.0, 1.0, size=SHAPE))
    initial = None
    if initial_state:
        initial = [base.on_grid(rng.uniform(-0.5, 0.5, size=(SHAPE[0], d))) for d in flat(cell_states(spec))]
    mask = base.MASK_ROWS[: SHAPE[0], : SHAPE[1]].copy() if masked else None
    return x, mask, initial


def run_case(case):
    case_id, spec, kwargs, masked, initial_state = case
    keras.backend.clear_session()
    x, mask, initial = inputs_of(case_id, spec, masked, initial_state)
    layer = keras.layers.RNN(make_cell(keras, spec), **kwargs)
    layer.build(SHAPE)
    rng = np.random.default_rng(base.WEIGHT_SEED)
    weights = [draw(rng, v.name, v.shape) for v in layer.weights]
    layer.set_weights(weights)
    structure = cell_states(spec)
    call_kwargs = {}
    if mask is not None:
        call_kwargs["mask"] = mask
    if initial is not None:
        call_kwargs["initial_state"] = pack(structure, initial) if spec[0] == "stacked" else initial
    outputs = [base.to_numpy(o) for o in keras.tree.flatten(layer(x, **call_kwargs))]
    w_out = base.loss_weights([o.shape for o in outputs])

    import jax
    import jax.numpy as jnp

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss_fn(ws, inputs, states):
        kw = {} if mask is None else {"mask": mask}
        if states is not None:
            kw["initial_state"] = pack(structure, states) if spec[0] == "stacked" else list(states)
        out, _ = layer.stateless_call(ws, non_trainable, inputs, **kw)
        return sum(jnp.sum(o * w) for o, w in zip(keras.tree.flatten(out), w_out))

    states = None if initial is None else [jnp.asarray(s) for s in initial]
    loss = loss_fn(trainable, jnp.asarray(x), states)
    grads = jax.grad(loss_fn, argnums=(0, 1, 2))(trainable, jnp.asarray(x), states)

    arrays = {"input": x}
    if mask is not None:
        arrays["mask"] = mask
    for i, a in enumerate(initial or []):
        arrays[f"initial_state_{i}"] = a
    for i, a in enumerate(weights):
        arrays[f"weight_{i}"] = a
    for i, a in enumerate(outputs):
        arrays[f"output_{i}"] = a
    for i, a in enumerate(w_out):
        arrays[f"w_out_{i}"] = a
    arrays["grad_input"] = np.asarray(grads[1], np.float32)
    for i, g in enumerate(grads[2] or []):
        arrays[f"grad_initial_state_{i}"] = np.asarray(g, np.float32)
    for i, g in enumerate(grads[0]):
        arrays[f"grad_weight_{i}"] = np.asarray(g, np.float32)
    meta = {
        "id": case_id,
        "cell": spec,
        "kwargs": kwargs,
        "input_shape": list(SHAPE),
        "masked": masked,
        "initial_state": initial_state,
        "layer_name": layer.name,
        "weights": [{"name": v.name, "path": v.path, "shape": list(v.shape)} for v in layer.weights],
        "output_shapes": [list(o.shape) for o in outputs],
        "loss": float(loss),
    }
    return meta, arrays


# ----------------------------------------------------------------------------
# Independent float64 NumPy recurrence (the check)


def np_cell_count(spec):
    """Number of weights of a cell spec."""
    kind, arg = spec
    if kind == "stacked":
        return sum(np_cell_count(s) for s in arg)
    return {"minimal": 2, "two_state": 4}.get(kind, 3)


def np_step(spec, weights, x_t, states):
    """One step of the cell `spec`; returns (output, new flat states)."""
    kind, arg = spec
    if kind == "stacked":
        new, w_at, s_at = [], 0, 0
        for sub in arg:
            n_w, n_s = np_cell_count(sub), len(flat(cell_states(sub)))
            x_t, sub_new = np_step(sub, weights[w_at : w_at + n_w], x_t, states[s_at : s_at + n_s])
            new += sub_new
            w_at, s_at = w_at + n_w, s_at + n_s
        return x_t, new
    if kind == "minimal":
        out = x_t @ weights[0] + states[0] @ weights[1]
        return out, [out]
    if kind == "two_state":
        kernel, recurrent, bias, memory = weights
        h = np.tanh(x_t @ kernel + states[0] @ recurrent + bias)
        m = 0.5 * states[1] + 1.0 / (1.0 + np.exp(-(h @ memory)))
        return h, [h, m]
    class_name = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}[kind]
    return base.np_cell(class_name, {"units": arg}, weights, x_t, states)


def np_rnn(spec, kwargs, x, mask, initial, weights):
    """Keras's recurrence with lax.scan's masking rules; the flat list of outputs."""
    batch, time, _ = x.shape
    sizes = flat(cell_states(spec))
    states = [np.zeros((batch, d)) for d in sizes] if initial is None else list(initial)
    # A masked step outputs the previous output: the first state, or the last
    # stacked cell's first state.
    previous = 0 if spec[0] != "stacked" else len(sizes) - len(flat(cell_states(spec[1][-1])))
    outputs = []
    for t in range(time - 1, -1, -1) if kwargs.get("go_backwards") else range(time):
        out, new = np_step(spec, weights, x[:, t], states)
        if mask is not None:
            keep = mask[:, t][:, None]
            out = np.where(keep, out, 0.0 if kwargs.get("zero_output_for_mask") else states[previous])
            new = [np.where(keep, n, s) for n, s in zip(new, states)]
        states = new
        outputs.append(out)
    result = [np.stack(outputs, axis=1) if kwargs.get("return_sequences") else outputs[-1]]
    if kwargs.get("return_state"):
        result += states
    return result


def check_case(case, arrays):
    case_id, spec, kwargs = case[:3]
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    count = lambda prefix: len([k for k in arrays if k.startswith(prefix)])  # noqa: E731
    x = f64(arrays["input"])
    mask = arrays.get("mask")
    initial = [f64(arrays[f"initial_state_{i}"]) for i in range(count("initial_state_"))] or None
    weights = [f64(arrays[f"weight_{i}"]) for i in range(count("weight_"))]
    w_out = [f64(arrays[f"w_out_{i}"]) for i in range(count("output_"))]
    want = np_rnn(spec, kwargs, x, mask, initial, weights)
    assert len(want) == len(w_out), f"{case_id}: {len(w_out)} outputs, expected {len(want)}"
    worst_output = max(base.scaled_difference(arrays[f"output_{i}"], w) for i, w in enumerate(want))
    assert worst_output < 5e-6, f"{case_id}: outputs differ by {worst_output:.3g}"

    def loss(x_, initial_, weights_):
        return sum(float(np.sum(o * w)) for o, w in zip(np_rnn(spec, kwargs, x_, mask, initial_, weights_), w_out))

    worst_gradient = base.worst_central_difference(loss, x, initial, weights, arrays, samples=24)
    assert worst_gradient < 1e-4, f"{case_id}: gradients differ by {worst_gradient:.3g}"
    return worst_output, worst_gradient


def generate():
    if keras.backend.backend() != "jax":
        raise SystemExit(f"expected the JAX backend, got {keras.backend.backend()!r}")
    index, arrays = [], {}
    worst_output = worst_gradient = 0.0
    for case in CASES:
        meta, case_arrays = run_case(case)
        out_diff, grad_diff = check_case(case, case_arrays)
        worst_output, worst_gradient = max(worst_output, out_diff), max(worst_gradient, grad_diff)
        index.append(meta)
        arrays.update({f"{case[0]}/{k}": v for k, v in case_arrays.items()})
    base.DATA.mkdir(parents=True, exist_ok=True)
    base.write_json("cells.json", {"cases": index})
    base.write_npz("cells.npz", arrays)
    print(f"{len(index)} cell cases; NumPy float64 check: outputs within {worst_output:.2g}, gradients within {worst_gradient:.2g} (scaled)")


if __name__ == "__main__":
    generate()
