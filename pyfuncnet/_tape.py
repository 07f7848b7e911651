"""`GradientTape`: records eager ops and differentiates them with the core's autodiff.

Contract as TensorFlow's: a context manager; trainable `Variable`s are watched
automatically, other arrays through `watch`; `gradient(target, sources)` returns
d(sum(target))/d(source) with the structure of `sources`, None for a source the
target does not depend on; a non-persistent tape can be asked once.
"""

import json

import numpy as np

from pyfuncnet import _core
from pyfuncnet._variable import Variable

_active = []


class _Record:
    __slots__ = ("op", "attrs", "inputs", "input_values", "outputs")

    def __init__(self, op, attrs, inputs, input_values, outputs):
        self.op = op
        self.attrs = attrs
        self.inputs = inputs
        self.input_values = input_values
        self.outputs = outputs


def record(op, attrs, inputs, input_values, outputs):
    """Called by every eager op: adds it to each recording tape."""
    for tape in _active:
        if tape._recording:
            tape._records.append(_Record(op, attrs, list(inputs), list(input_values), list(outputs)))


class GradientTape:
    """Records operations for automatic differentiation.

    Args:
        persistent: allow several `gradient` calls.
        watch_accessed_variables: watch trainable `Variable`s automatically.

    Example:
        >>> w = Variable(np.array([1.0, 2.0]))
        >>> with GradientTape() as tape:
        ...     loss = ops.sum(ops.square(w))
        >>> tape.gradient(loss, w)
        array([2., 4.], dtype=float32)
    """

    def __init__(self, persistent=False, watch_accessed_variables=True):
        self._persistent = bool(persistent)
        self._watch_variables = bool(watch_accessed_variables)
        self._records = []
        self._watched = {}
        self._recording = False
        self._used = False

    def __enter__(self):
        self._recording = True
        _active.append(self)
        return self

    def __exit__(self, *exc):
        self._recording = False
        if self in _active:
            _active.remove(self)
        return False

    def watch(self, tensor):
        """Marks a tensor (array, Variable, or a nested list of them) as a source."""
        for t in _flatten(tensor):
            self._watched[id(t)] = t

    def reset(self):
        """Forgets everything recorded so far."""
        self._records = []
        self._watched = {}

    def stop_recording(self):
        """A context manager inside which ops are not recorded."""
        tape = self

        class _Pause:
            def __enter__(self):
                tape._recording = False

            def __exit__(self, *exc):
                tape._recording = True
                return False

        return _Pause()

    def _is_watched(self, obj):
        if id(obj) in self._watched:
            return True
        return self._watch_variables and isinstance(obj, Variable) and obj.trainable

    def gradient(self, target, sources, output_gradients=None):
        """d(sum(target)) / d(source) for every source, shaped like `sources`.

        Args:
            target: an array produced by recorded ops (or a list of them, summed).
            sources: an array/Variable, or a list/tuple/dict of them.
            output_gradients: not supported (raise) — pass a weighted target instead.

        Returns:
            Arrays (float32) with the structure of `sources`; None where the target
            does not depend on the source.
        """
        if output_gradients is not None:
            raise NotImplementedError("GradientTape.gradient: output_gradients is not supported")
        if self._used and not self._persistent:
            raise RuntimeError(
                "A non-persistent GradientTape can only be used to compute one set of gradients; "
                "use GradientTape(persistent=True)"
            )
        self._used = True
        flat_sources = _flatten(sources)
        targets = _flatten(target)
        grads = self._gradient(targets, flat_sources)
        return _unflatten(sources, iter(grads))

    def _gradient(self, targets, sources):
        # Value ids: leaves (inputs) first, then op outputs, in recording order.
        producers = {}
        for ri, rec in enumerate(self._records):
            for k, out in enumerate(rec.outputs):
                producers[id(out)] = (ri, k)
        target_ids = [id(t) for t in targets]
        if not any(t in producers for t in target_ids):
            return [None] * len(sources)
        # Records needed: walk back from the targets.
        needed = set()
        stack = [t for t in target_ids if t in producers]
        while stack:
            ri, _ = producers[stack.pop()]
            if ri in needed:
                continue
            needed.add(ri)
            for inp in self._records[ri].inputs:
                if id(inp) in producers:
                    stack.append(id(inp))
        # Leaves (values no needed record produced) become spec inputs, numbered
        # first; record outputs follow in recording order.
        leaves = {}
        for ri in sorted(needed):
            rec = self._records[ri]
            for obj, val in zip(rec.inputs, rec.input_values):
                if id(obj) not in producers and id(obj) not in leaves:
                    leaves[id(obj)] = (obj, val)
        value_of = {key: n for n, key in enumerate(leaves)}
        spec_inputs = [{"shape": list(val.shape), "dtype": str(val.dtype)} for _, val in leaves.values()]
        leaf_values = [val for _, val in leaves.values()]
        next_id = len(leaves)
        spec_nodes = []
        for ri in sorted(needed):
            rec = self._records[ri]
            spec_nodes.append({"op": rec.op, "attrs": rec.attrs, "inputs": [value_of[id(obj)] for obj in rec.inputs]})
            for out in rec.outputs:
                value_of[id(out)] = next_id
                next_id += 1
        target_vals = [value_of[t] for t in target_ids if t in value_of]
        # Several targets: the sum of their sums (each reduced first, so a scalar
        # target is not broadcast against a larger one).
        if len(target_vals) > 1:
            sums = []
            for t in target_vals:
                spec_nodes.append({"op": "sum", "attrs": {"keepdims": False}, "inputs": [t]})
                sums.append(next_id)
                next_id += 1
            target_vals = sums
        target_val = target_vals[0]
        for other in target_vals[1:]:
            spec_nodes.append({"op": "add", "attrs": {}, "inputs": [target_val, other]})
            target_val = next_id
            next_id += 1
        source_ids, source_slots = [], []
        for s in sources:
            key = id(s)
            if key in leaves and self._is_watched(s) and leaves[key][1].dtype == np.float32:
                source_slots.append(len(source_ids))
                source_ids.append(value_of[key])
            else:
                source_slots.append(None)
        if not source_ids:
            return [None] * len(sources)
        spec = {"inputs": spec_inputs, "nodes": spec_nodes, "outputs": [target_val, *source_ids]}
        from pyfuncnet._core import Variables

        grads = _core.tape_gradient(json.dumps(spec), leaf_values, Variables())
        return [None if slot is None else grads[slot] for slot in source_slots]


def _flatten(x):
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in _flatten(item)]
    if isinstance(x, dict):
        return [y for k in sorted(x) for y in _flatten(x[k])]
    return [x]


def _unflatten(structure, it):
    if isinstance(structure, (list, tuple)):
        return type(structure)(_unflatten(s, it) for s in structure)
    if isinstance(structure, dict):
        return {k: _unflatten(structure[k], it) for k in sorted(structure)}
    return next(it)
