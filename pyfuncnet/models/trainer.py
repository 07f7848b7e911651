"""`compile`, `fit`, `evaluate`, `predict` and the `*_on_batch` methods of models.

A training step is one native call: the model's symbolic graph, the losses applied
to its outputs, the regularization penalties, autodiff and the optimizer update are
compiled together by the core, once per input signature (shapes and dtypes), and
run with the GIL released. Python keeps the epoch loop, batching, metrics and
callbacks: the accuracies' batch sums are computed in the step itself where they
can be (see `metrics.MeanMetricWrapper._batch_sum_in_graph`), the other metrics
with NumPy from the predictions each step returns. Where neither metrics nor
callbacks need each step's predictions, `fit` hands the core an epoch's full
batches several steps per call (`CompiledStep.train_batches`).
"""

import json
import math
import time

import numpy as np

from pyfuncnet import _core, _nest, _symbolic
from pyfuncnet._function import GraphSpec
from pyfuncnet._symbolic import KerasTensor
from pyfuncnet._variable import mark_store_changed, store
from pyfuncnet.models import data as data_utils


class _Program:
    """One compiled step and what it feeds and fetches."""

    def __init__(self, step, n_outputs, loss_outputs, constrained=(), mask_outputs=None, carried=(), targets=(), metric_sums=(), all_metrics_summed=True):
        self.step = step
        self.n_outputs = n_outputs
        # Indices, among the step's outputs, of each output's own loss (or None).
        self.loss_outputs = loss_outputs
        # Indices, among the step's outputs, of each output's mask (or None).
        self.mask_outputs = mask_outputs or [None] * n_outputs
        # (output index, loss output index) of the outputs with a loss of their own.
        self.named_losses = [(k, i) for k, i in enumerate(loss_outputs) if i is not None]
        # The trained Variables with a constraint to apply after each update.
        self.constrained = list(constrained)
        # (Variable, output index): stateful recurrent states the step's last
        # outputs carry to the next step.
        self.carried = list(carried)
        # (output index, whether its sample weight is fed): the step's target inputs
        # after the model's, in order.
        self.targets = list(targets)
        # (Mean metric, output index of its batch sum): the metrics the step computes.
        self.metric_sums = list(metric_sums)
        # Whether those are all the model's metrics (no metric needs the predictions).
        self.all_metrics_summed = all_metrics_summed

    def carry(self, outs):
        """Assigns the carried states; returns the step's other outputs."""
        for variable, k in self.carried:
            variable.assign(outs[k])
        return outs[: len(outs) - len(self.carried)]

    def feeds(self, x, ys, sws):
        """The step's inputs: the model's inputs, then for each output with a loss and
        a target, its target and its sample weight if any."""
        feeds = list(x)
        for k, weighted in self.targets:
            feeds.append(ys[k])
            if weighted:
                feeds.append(sws[k])
        return feeds


class _MeanTracker:
    """A running mean weighted by batch size (Keras's loss tracker)."""

    def __init__(self):
        self.total, self.count = 0.0, 0.0

    def update(self, value, weight):
        self.total += float(value) * weight
        self.count += weight

    def result(self):
        return self.total / self.count if self.count else 0.0


def _track_losses(trackers, program, loss, own_losses, batch):
    """Adds a step's loss and, with several outputs, each output's own loss
    (`own_losses`, in `program.named_losses` order) to the epoch's trackers."""
    trackers["loss"].update(loss, batch)
    output_names = trackers["output_names"]
    if len(output_names) > 1:
        for (k, _), value in zip(program.named_losses, own_losses):
            trackers["per_output"].setdefault(f"{output_names[k]}_loss", _MeanTracker()).update(float(value), batch)


class Trainer:
    """The training and inference methods shared by every model."""

    def __init__(self):
        self.compiled = False
        self.optimizer = None
        self.loss = None
        self.stop_training = False
        self.history = None
        self._programs = {}
        self._traced = {}
        self._compile_config = None
        self._metric_objects = None
        self._loss_objects = None

    # ------------------------------------------------------------------ compile

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None, run_eagerly=False, steps_per_execution=1, jit_compile="auto", auto_scale_loss=True, **kwargs):
        """Configures the model for training.

        Args:
            optimizer: a name ("sgd", "rmsprop", "adam", "adamw", "adagrad",
                "adadelta", "adamax", "nadam") or an optimizer object.
            loss: a loss name, function or `Loss` (applied to every output), a list
                (one per output) or a dict keyed by output name.
            loss_weights: a list or dict of scalars weighting each output's loss.
            metrics: a list of metrics (names, functions, `Metric` objects) for every
                output, a list of lists (one list per output) or a dict keyed by
                output name. "accuracy" / "acc" resolve to the binary, categorical
                or sparse variant by the loss and output shape, as in Keras.
            weighted_metrics: metrics weighted by `sample_weight`.
        """
        from pyfuncnet import optimizers

        kwargs.pop("sample_weight_mode", None)
        if kwargs:
            raise TypeError(f"compile() got unexpected keyword arguments {sorted(kwargs)}")
        self.optimizer = optimizers.get(optimizer)
        self.loss = loss
        self._compile_config = {
            "loss": loss,
            "loss_weights": loss_weights,
            "metrics": metrics,
            "weighted_metrics": weighted_metrics,
        }
        self._programs = {}
        self._metric_objects = None
        self._loss_trackers_built = False
        self._loss_objects = None
        self._trainable_snapshot = None
        self.compiled = True

    def _check_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"You must call `compile()` before using the model for {what}.")

    # ------------------------------------------------------------------ structure

    def _io_names(self):
        """Input and output names used to match dicts and name losses/metrics."""
        inputs, outputs = self._symbolic_io()
        input_names = getattr(self, "input_names", None) or [t.name for t in inputs]
        outs = _nest.flatten(outputs)
        output_names = getattr(self, "output_names", None) or (
            [f"output_{k}" for k in range(len(outs))] if len(outs) > 1 else ["output"]
        )
        return input_names, output_names

    def _symbolic_io(self, x_flat=None, x_names=None):
        """`(input tensors, output structure)` of the model's graph.

        Functional models have them; other models are traced once per input
        signature by calling them on symbolic inputs shaped like the data (a dict
        of them when `x_names` are dict keys, a list when there are several).
        """
        if hasattr(self, "_nodes_by_depth"):
            return self.inputs, self._outputs_struct
        if x_flat is None:
            if not self._traced:
                raise ValueError(f"Model '{self.name}' has not been called on data yet, so its inputs are unknown")
            return next(reversed(self._traced.values()))
        key = (tuple(x_names or ()), tuple((a.shape[1:], a.dtype.kind) for a in x_flat))
        if key not in self._traced:
            tensors = [
                KerasTensor((None,) + tuple(a.shape[1:]), "int32" if a.dtype.kind in "iu" else "float32", name=name)
                for a, name in zip(x_flat, x_names or [None] * len(x_flat))
            ]
            if self._x_kind == "dict":
                call_inputs = dict(zip(x_names, tensors))
            elif self._x_kind == "list":
                call_inputs = tensors
            else:
                call_inputs = tensors[0]
            self._traced[key] = (tensors, self(call_inputs))
        return self._traced[key]

    _x_kind = "single"

    # ------------------------------------------------------------------ losses

    def _resolved_losses(self, output_names, y_shapes=None, output_shapes=None):
        """One `(Loss or None, weight)` per output, resolved once per compile (the
        shapes decide what "crossentropy" means)."""
        from pyfuncnet import losses as losses_module

        if self._loss_objects is not None:
            return self._loss_objects
        y_shapes = y_shapes or [None] * len(output_names)
        output_shapes = output_shapes or [None] * len(output_names)
        cfg = self._compile_config
        loss, weights = cfg["loss"], cfg["loss_weights"]
        n = len(output_names)
        if loss is None:
            raise ValueError("No loss to compute: pass `loss` to `compile()`")
        if isinstance(loss, dict):
            unknown = [k for k in loss if k not in output_names]
            if unknown:
                raise ValueError(f"compile(loss=...) has keys {unknown} that match no output; the outputs are {output_names}")
            per_output = [loss.get(name) for name in output_names]
        elif isinstance(loss, (list, tuple)):
            if len(loss) != n:
                raise ValueError(f"compile(loss=...) is a list of {len(loss)} losses, but the model has {n} outputs: {output_names}")
            per_output = list(loss)
        else:
            per_output = [loss] * n
        if weights is None:
            w = [1.0] * n
        elif isinstance(weights, dict):
            unknown = [k for k in weights if k not in output_names]
            if unknown:
                raise ValueError(f"compile(loss_weights=...) has keys {unknown} that match no output; the outputs are {output_names}")
            w = [float(weights.get(name, 1.0)) for name in output_names]
        elif isinstance(weights, (list, tuple)):
            if len(weights) != n:
                raise ValueError(f"compile(loss_weights=...) has {len(weights)} entries, but the model has {n} outputs: {output_names}")
            w = [float(v) for v in weights]
        else:
            w = [float(weights)] * n
        self._loss_objects = [
            (losses_module.resolve(l, ys, os_), wk) for l, wk, ys, os_ in zip(per_output, w, y_shapes, output_shapes)
        ]
        return self._loss_objects

    def _resolved_metrics(self, output_names, ys, outputs):
        """Per output: a list of `(history name, Metric, weighted)`."""
        from pyfuncnet import metrics as metrics_module

        if self._metric_objects is not None:
            return self._metric_objects
        cfg = self._compile_config
        losses = self._resolved_losses(output_names)
        result = [[] for _ in output_names]
        for weighted, spec in ((False, cfg["metrics"]), (True, cfg["weighted_metrics"])):
            if spec is None:
                continue
            per_output = _metrics_per_output(spec, output_names)
            for k, items in enumerate(per_output):
                for item in items:
                    y_shape = ys[k].shape if ys[k] is not None else outputs[k].shape
                    metric = metrics_module.resolve(item, losses[k][0], y_shape, outputs[k].shape)
                    name = metric.name if len(output_names) == 1 else f"{output_names[k]}_{metric.name}"
                    if weighted and cfg["metrics"] is not None:
                        name = f"weighted_{name}" if any(name == r[0] for rs in result for r in rs) else name
                    result[k].append((name, metric, weighted))
        self._metric_objects = result
        return result

    @property
    def metrics_names(self):
        """Keras 3's names of the model's metric trackers: "loss"; "compile_metrics"
        once compiled with metrics; each output's loss once data has been seen."""
        names = ["loss"]
        cfg = self._compile_config
        if self._metric_objects or (cfg is not None and (cfg["metrics"] or cfg["weighted_metrics"])):
            names.append("compile_metrics")
        if getattr(self, "_loss_trackers_built", False):
            _, output_names = self._io_names()
            if len(output_names) > 1:
                names += [f"{name}_loss" for name in output_names]
        return names

    @property
    def metrics(self):
        return [m for per in (self._metric_objects or []) for _, m, _ in per]

    # ------------------------------------------------------------------ programs

    def _program(self, mode, x, ys, sws):
        key = (mode, tuple((a.shape, a.dtype.char) for a in x), tuple(None if y is None else (y.shape, y.dtype.char) for y in ys), tuple(sw is not None for sw in sws))
        program = self._programs.get(key)
        if program is None:
            program = self._programs[key] = self._build_program(mode, x, ys, sws)
        return program

    def _build_program(self, mode, x, ys, sws):
        inputs, outputs_struct = self._symbolic_io(x)
        outputs = _nest.flatten(outputs_struct)
        feeds, shapes = list(inputs), [a.shape for a in x]
        fetches = list(outputs)
        total, loss_outputs, mask_outputs = None, [None] * len(outputs), [None] * len(outputs)
        targets, target_inputs = [], {}
        metric_sums, all_metrics_summed = [], True
        if mode != "predict":
            # Keras creates the per-output loss trackers when a loss first meets data.
            self._loss_trackers_built = True
            _, output_names = self._io_names()
            terms = []
            for k, ((loss_fn, weight), out) in enumerate(zip(self._resolved_losses(output_names), outputs)):
                if loss_fn is None or ys[k] is None:
                    continue
                y = ys[k]
                # Unknown where the prediction's size is unknown (a variable-length
                # sequence), so symbolic shape checks agree; the program itself is
                # compiled for the concrete shapes.
                dims = tuple(None if i < len(out.shape) and out.shape[i] is None else d for i, d in enumerate(y.shape[1:], 1))
                # A model with a fixed batch size (stateful layers) gets targets of that size.
                batch = out.shape[0] if out.shape else None
                y_ph = KerasTensor((batch,) + dims, "int32" if y.dtype == np.int32 else "float32", name=f"{output_names[k]}_target")
                feeds.append(y_ph)
                target_inputs[k] = y_ph
                shapes.append(y.shape)
                sw_ph = None
                targets.append((k, sws[k] is not None))
                if sws[k] is not None:
                    sw_ph = KerasTensor((batch,) + sws[k].shape[1:], "float32", name=f"{output_names[k]}_sample_weight")
                    feeds.append(sw_ph)
                    shapes.append(sws[k].shape)
                with _symbolic.label_scope(f"{output_names[k]}_loss"):
                    value = loss_fn(y_ph, out, sample_weight=sw_ph)
                    if not isinstance(value, KerasTensor):
                        raise TypeError(f"The loss of output {output_names[k]!r} does not depend on the model's output")
                    loss_outputs[k] = len(fetches)
                    fetches.append(value)
                    terms.append(value if weight == 1.0 else value * weight)
            if not terms:
                raise ValueError("No output has both a loss and target data (`y`)")
            with _symbolic.label_scope("regularization"):
                terms += self._penalties()
            total = terms[0]
            for t in terms[1:]:
                total = total + t
            # The output masks come back with the predictions: metrics skip the
            # masked entries, as Keras's do.
            for k, out in enumerate(outputs):
                mask = _symbolic.get_keras_mask(out)
                if isinstance(mask, KerasTensor):
                    mask_outputs[k] = len(fetches)
                    fetches.append(mask)
            summed, all_metrics_summed = self._metric_sums_in_graph(outputs, ys, sws, target_inputs, mask_outputs)
            for metric, value in summed:
                metric_sums.append((metric, len(fetches)))
                fetches.append(value)
        trainable = self._trainable_for_program() if mode == "train" else ()
        updates = self._state_updates() if mode == "train" else ()
        carried = []
        for variable, tensor in self._carried_states():
            if x and x[0].shape[0] != variable.shape[0]:
                raise ValueError(
                    "If an RNN is stateful, the batch size of the input sequences must be the same as the batch size of the initial state. \n"
                    f"- Expected batch size: {variable.shape[0]}\n- Received batch size: {x[0].shape[0]}"
                )
            carried.append((variable, len(fetches)))
            fetches.append(tensor)
        from pyfuncnet import utils

        spec = GraphSpec(feeds, fetches, shapes, loss=total, trainable=trainable, updates=updates, seed=utils.get_random_seed() or 0, training=mode == "train")
        step = _core.CompiledStep(json.dumps(spec.spec), mode)
        constrained = [v for v in trainable if getattr(v, "constraint", None) is not None]
        return _Program(step, len(outputs), loss_outputs, constrained, mask_outputs, carried, targets, metric_sums, all_metrics_summed)

    def _metric_sums_in_graph(self, outputs, ys, sws, target_inputs, mask_outputs):
        """`(metric, symbolic batch sum)` of the metrics a step can compute (see
        `MeanMetricWrapper._batch_sum_in_graph`): those of an output with a target
        input, no mask and no sample weights they would read. Also whether every
        metric that a batch updates is among them."""
        cfg = self._compile_config
        if cfg["metrics"] is None and cfg["weighted_metrics"] is None:
            return [], True
        if self._metric_objects is None and any(not out.shape or out.shape[-1] is None for out in outputs):
            # "accuracy" resolves by the predictions' last axis: left to the first batch's.
            return [], False
        _, output_names = self._io_names()
        per_output = self._resolved_metrics(output_names, ys, outputs)
        # A metric object listed twice gets two updates a batch: left to NumPy.
        listed = [id(metric) for items in per_output for _, metric, _ in items]
        sums, every = [], True
        for k, items in enumerate(per_output):
            if ys[k] is None:
                continue
            for _, metric, weighted in items:
                value = None
                in_graph = getattr(metric, "_batch_sum_in_graph", None)
                once = listed.count(id(metric)) == 1
                if in_graph is not None and once and k in target_inputs and mask_outputs[k] is None and not (weighted and sws[k] is not None):
                    with _symbolic.label_scope(f"{output_names[k]}_{metric.name}"):
                        value = in_graph(target_inputs[k], outputs[k])
                if value is None:
                    every = False
                else:
                    sums.append((metric, value))
        return sums, every

    def _graph_nodes(self):
        if hasattr(self, "_nodes_by_depth"):
            return [n for ns in self._nodes_by_depth.values() for n in ns]
        return list(self._inbound_nodes)

    def _penalties(self):
        """Weight regularization and activity penalties, as symbolic scalars."""
        out = self._regularization_losses(eager=False)
        for node in self._graph_nodes():
            out.extend(node.activity_losses)
        return out

    def _state_updates(self):
        """`(variable, tensor)` assignments a training step makes after its update
        (moving statistics) for the layers trainable now; the last one recorded wins
        for a variable updated twice."""
        latest = {}
        for node in self._graph_nodes():
            for variable, tensor, layer in node.state_updates:
                if layer.trainable and not getattr(variable, "_rnn_state", False):
                    latest[id(variable)] = (variable, tensor)
        return list(latest.values())

    def _carried_states(self):
        """`(variable, tensor)`: the final states of stateful recurrent layers, which
        every step (training, test and predict) keeps for the next batch."""
        latest = {}
        for node in self._graph_nodes():
            for variable, tensor, _ in node.state_updates:
                if getattr(variable, "_rnn_state", False):
                    latest[id(variable)] = (variable, tensor)
        return list(latest.values())

    def _trainable_for_program(self):
        if self._trainable_snapshot is None:
            self._trainable_snapshot = [v for v in self.trainable_weights if v._index is not None]
            self.optimizer.build(self._trainable_snapshot)
        return self._trainable_snapshot

    # ------------------------------------------------------------------ data

    def _prepare(self, x, y=None, sample_weight=None, class_weight=None, training=False):
        """Arrays in the model's input/output order, checked and cast (for training,
        also free of NaN and Inf)."""
        if hasattr(self, "_nodes_by_depth"):
            input_names = self.input_names
            inputs, outputs = self._symbolic_io()
            x_arrays = data_utils.match_structure(x, input_names, "x")
        else:
            if isinstance(x, dict):
                self._x_kind, input_names = "dict", sorted(x)
            elif isinstance(x, (list, tuple)) and not data_utils._is_plain_numbers(x):
                self._x_kind, input_names = "list", [f"input_{k}" for k in range(len(x))]
            else:
                self._x_kind, input_names = "single", ["input"]
            x_arrays = data_utils.match_structure(x, input_names, "x")
            inputs, outputs = self._symbolic_io(x_arrays, input_names)
        _, output_names = self._io_names()
        x_arrays = data_utils.check_inputs(x_arrays, inputs, input_names, self.name, finite=training)
        outputs = _nest.flatten(outputs)
        ys = [None] * len(outputs)
        sws = [None] * len(outputs)
        if y is not None:
            ys = data_utils.match_structure(y, output_names, "y")
            if self._compile_config is not None and self._compile_config["loss"] is not None:
                self._resolved_losses(output_names, [(None,) + a.shape[1:] for a in ys], [t.shape for t in outputs])
            ys = [self._cast_target(yk, out, name, k) for k, (yk, out, name) in enumerate(zip(ys, outputs, output_names))]
        if sample_weight is not None:
            sws = data_utils.match_structure(sample_weight, output_names, "sample_weight") if (isinstance(sample_weight, dict) or len(output_names) > 1 and isinstance(sample_weight, (list, tuple))) else [np.asarray(sample_weight)] * len(outputs)
            sws = [np.ascontiguousarray(s, dtype=np.float32) for s in sws]
            for s, name in zip(sws, output_names):
                if not np.all(np.isfinite(s)):
                    raise ValueError(f"sample_weight for output {name!r} contains NaN or Inf")
        if class_weight is not None:
            if y is None:
                raise ValueError("class_weight needs targets `y`")
            if len(outputs) > 1 and not isinstance(class_weight, dict):
                raise ValueError("class_weight must be a dict")
            for k, yk in enumerate(ys):
                cw = class_weight.get(output_names[k], class_weight) if len(outputs) > 1 else class_weight
                w = data_utils.class_weights_to_sample_weights(yk, cw, output_names[k])
                sws[k] = w if sws[k] is None else (sws[k] * w).astype(np.float32)
        arrays = x_arrays + [a for a in ys if a is not None] + [s for s in sws if s is not None]
        labels = [f"x:{n}" for n in input_names] + [f"y:{n}" for n, a in zip(output_names, ys) if a is not None] + [f"sample_weight:{n}" for n, s in zip(output_names, sws) if s is not None]
        n = data_utils.check_count(arrays, labels)
        return x_arrays, ys, sws, n

    def _cast_target(self, y, out, name, k):
        loss_fn = None
        if self._loss_objects is not None:
            loss_fn = self._loss_objects[k][0]
        sparse = _is_sparse_loss(loss_fn)
        if not np.all(np.isfinite(y)):
            bad = np.argwhere(~np.isfinite(y))[0]
            raise ValueError(f"Target data `y` for output {name!r} contains NaN or Inf (first at index {tuple(int(i) for i in bad)})")
        if sparse:
            classes = out.shape[-1]
            if np.any(y != np.round(y)):
                raise ValueError(f"Targets for output {name!r} must be integer class indices for {type(loss_fn).__name__}")
            if y.size and (y.min() < 0 or (classes is not None and y.max() >= classes)):
                bad = y.min() if y.min() < 0 else y.max()
                raise ValueError(
                    f"Received a label value of {int(bad)} for output {name!r}, which is outside the valid range of [0, {classes}). "
                    f"Label values must be class indices for {type(loss_fn).__name__}"
                )
            return np.ascontiguousarray(y, dtype=np.int32)
        return np.ascontiguousarray(y, dtype=np.float32)

    # ------------------------------------------------------------------ steps

    def _run_train_batch(self, x, ys, sws):
        program = self._program("train", x, ys, sws)
        lr = float(self.optimizer.current_learning_rate())
        try:
            outs, loss = program.step.train(program.feeds(x, ys, sws), store.core, self.optimizer.core, lr)
        finally:
            mark_store_changed()
        for v in program.constrained:
            v.assign(v.constraint(v.value))
        return program, program.carry(outs), loss

    def _run_test_batch(self, x, ys, sws):
        program = self._program("test", x, ys, sws)
        outs, loss = program.step.run(program.feeds(x, ys, sws), store.core)
        return program, program.carry(outs), loss

    def _run_predict_batch(self, x):
        program = self._program("predict", x, [], [])
        outs, _ = program.step.run(x, store.core)
        return program.carry(outs)

    # ------------------------------------------------------------------ fit

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1):
        """Trains the model for `epochs` epochs; returns a `History`.

        Args:
            x, y: arrays, lists of arrays, dicts keyed by input/output names, or a
                generator yielding `(x, y)` / `(x, y, sample_weight)` batches.
            batch_size: samples per step (32 by default).
            epochs: the epoch to stop after (counting from 0, after `initial_epoch`).
            verbose: 0 silent, 1 progress bar, 2 one line per epoch; "auto" is 1.
            callbacks: a list of `Callback`s.
            validation_split: the fraction of the (unshuffled) data kept for validation.
            validation_data: `(x_val, y_val)` or `(x_val, y_val, sample_weight)`.
            shuffle: shuffle the training samples before each epoch.
            class_weight: `{class index: weight}` scaling each sample's loss.
            sample_weight: per-sample loss weights.
            steps_per_epoch: batches per epoch (required for endless generators).
        """
        from pyfuncnet import callbacks as callbacks_module

        self._check_compiled("training")
        verbose = 1 if verbose == "auto" else int(verbose)
        if batch_size is None:
            batch_size = 32
        _check_positive("batch_size", batch_size)
        iterator = data_utils.is_iterator_data(x)
        if iterator:
            if y is not None:
                raise ValueError("`y` must not be given when `x` is a generator: the generator yields the targets")
            train_data = _GeneratorBatches(self, x, class_weight, training=True)
            steps = steps_per_epoch
        else:
            x_arr, ys, sws, n = self._prepare(x, y, sample_weight, class_weight, training=True)
            if validation_split and validation_data is None:
                k, m = len(x_arr), len(ys)
                head, tail = data_utils.split_validation(x_arr + ys + sws, n, validation_split)
                x_arr, ys, sws = head[:k], head[k : k + m], head[k + m :]
                validation_data = _Prepared(tail[:k], tail[k : k + m], tail[k + m :])
                n = len(x_arr[0])
            train_data = _ArrayBatches(x_arr, ys, sws, n, batch_size, shuffle)
            steps = math.ceil(n / batch_size)
            if steps_per_epoch is not None:
                steps = min(steps, steps_per_epoch)
        if validation_data is not None and not isinstance(validation_data, _Prepared) and not data_utils.is_iterator_data(validation_data):
            vx, vy, vsw = data_utils.unpack_batch(tuple(validation_data))
            validation_data = _Prepared(*self._prepare(vx, vy, vsw)[:3])
        cbs = callbacks_module.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=self, verbose=verbose, epochs=epochs, steps=steps)
        self.stop_training = False
        cbs.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            self._reset_metrics()
            cbs.on_epoch_begin(epoch)
            if isinstance(train_data, _ArrayBatches) and self._steps_run_in_core(cbs):
                logs = self._fit_array_epoch(train_data, steps_per_epoch, cbs) or logs
            else:
                trackers = None
                for step, batch in enumerate(train_data.epoch(steps_per_epoch)):
                    trackers, logs = self._fit_batch(cbs, step, batch, trackers)
                    if self.stop_training:
                        break
            epoch_logs = dict(logs)
            if validation_data is not None and (epoch + 1) % validation_freq == 0:
                val_logs = self._evaluate_prepared(validation_data, validation_batch_size or batch_size, validation_steps)
                epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            logs = epoch_logs
            if self.stop_training:
                break
        cbs.on_train_end(logs)
        self.history = next(c for c in cbs.callbacks if isinstance(c, callbacks_module.History))
        return self.history

    def _fit_batch(self, cbs, step, batch, trackers):
        """Training step `step` of an epoch of `fit` on `batch` = (x, ys, sws), with its
        callbacks; returns the updated trackers and the epoch's logs so far."""
        bx, bys, bsws = batch
        cbs.on_train_batch_begin(step)
        program, outs, loss = self._run_train_batch(bx, bys, bsws)
        trackers = self._update_trackers(trackers, program, outs, loss, bys, bsws, len(bx[0]))
        logs = self._logs(trackers)
        cbs.on_train_batch_end(step, logs)
        return trackers, logs

    def _steps_run_in_core(self, cbs):
        """Whether `fit` may run several steps per call into the core: a learning rate
        that is a number or a schedule of the step, and no callback with a hook per
        batch (the progress bar is drawn after each call instead). The step itself
        must also compute every metric (see `_fit_array_epoch`)."""
        from pyfuncnet.callbacks import Callback, ProgbarLogger
        from pyfuncnet.optimizers import Optimizer

        optimizer = self.optimizer
        if type(optimizer).current_learning_rate is not Optimizer.current_learning_rate:
            return False
        if optimizer._next_learning_rates(0) is None:
            return False
        hooks = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")
        # A hook is the base class's no-op unless a subclass or the instance (as
        # LambdaCallback's) replaces it.
        return all(isinstance(c, ProgbarLogger) or all(getattr(getattr(c, h), "__func__", None) is getattr(Callback, h) for h in hooks) for c in cbs.callbacks)

    def _fit_array_epoch(self, data, steps_per_epoch, cbs):
        """One epoch of `fit` over in-memory arrays when `_steps_run_in_core`: the full
        batches run in the core, a growing number of steps per call (from 4, doubled
        while a call takes under 50 ms, so the progress bar, drawn after each call,
        and Ctrl-C stay responsive), then the last, partial batch as usual. The same
        steps on the same batches as one call per batch. Returns the epoch's logs."""
        order, steps, size = data.order(), data.steps(steps_per_epoch), data.batch_size
        full = min(steps, data.n // size)
        trackers, logs = self._new_trackers(), {}
        head = data.batch(None, 0)
        program = self._program("train", *head) if full else None
        if program is None or program.carried or program.constrained or not program.all_metrics_summed:
            full = 0
        record = [i for _, i in program.named_losses] + [i for _, i in program.metric_sums] if full else []
        n_losses = len(program.named_losses) if full else 0
        done, chunk, stopped = 0, 4, False
        while done < full and not stopped:
            # As per batch, a flag set before the epoch stops it after one step.
            k = 1 if self.stop_training else min(chunk, full - done)
            lrs = self.optimizer._next_learning_rates(k)
            rows = None if order is None else order[done * size : (done + k) * size]
            started = time.perf_counter()
            try:
                log = program.step.train_batches(program.feeds(data.x, data.ys, data.sws), rows, done * size, lrs, record, store.core, self.optimizer.core)
            finally:
                mark_store_changed()
            for values in log.reshape(k, 1 + len(record)):
                _track_losses(trackers, program, float(values[0]), values[1 : 1 + n_losses], size)
                for (metric, _), total in zip(program.metric_sums, values[1 + n_losses :]):
                    metric._add_batch_sum(float(total), size)
            done += k
            logs = self._logs(trackers)
            cbs.on_train_batch_end(done - 1, logs)
            if time.perf_counter() - started < 0.05:
                chunk = min(2 * chunk, 1024)
            stopped = self.stop_training
        for step in range(full, steps if not stopped else full):
            trackers, logs = self._fit_batch(cbs, step, data.batch(order, step), trackers)
            if self.stop_training:
                break
        return logs

    def _reset_metrics(self):
        for per in self._metric_objects or []:
            for _, metric, _ in per:
                metric.reset_state()

    def _new_trackers(self):
        return {"loss": _MeanTracker(), "per_output": {}, "output_names": self._io_names()[1]}

    def _update_trackers(self, trackers, program, outs, loss, ys, sws, batch):
        if trackers is None:
            trackers = self._new_trackers()
        _track_losses(trackers, program, loss, [outs[i] for _, i in program.named_losses], batch)
        output_names = trackers["output_names"]
        preds = outs[: program.n_outputs]
        for pred, i in zip(preds, program.mask_outputs):
            if i is not None:
                _symbolic.set_keras_mask(pred, outs[i])
        if self._compile_config["metrics"] is not None or self._compile_config["weighted_metrics"] is not None:
            summed = {id(metric): float(outs[i]) for metric, i in program.metric_sums}
            per_output = self._resolved_metrics(output_names, ys, preds)
            for k, items in enumerate(per_output):
                for _, metric, weighted in items:
                    if ys[k] is None:
                        continue
                    if id(metric) in summed:
                        metric._add_batch_sum(summed[id(metric)], batch)
                    else:
                        metric.update_state(ys[k], preds[k], sample_weight=sws[k] if weighted else None)
        return trackers

    def _logs(self, trackers):
        """The running results, keys sorted as Keras sorts them."""
        logs = {"loss": trackers["loss"].result()}
        for name, t in trackers["per_output"].items():
            logs[name] = t.result()
        for per in self._metric_objects or []:
            for name, metric, _ in per:
                logs[name] = float(np.asarray(metric.result()))
        return dict(sorted(logs.items()))

    # ------------------------------------------------------------------ evaluate / predict

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None, callbacks=None, return_dict=False, **kwargs):
        """The loss (and metrics) on the given data.

        Returns:
            The loss if there are no metrics, else `[loss, *metrics]` in
            `metrics_names` order; with `return_dict`, a dict of them.
        """
        from pyfuncnet import callbacks as callbacks_module

        self._check_compiled("evaluation")
        verbose = 1 if verbose == "auto" else int(verbose)
        batch_size = batch_size or 32
        _check_positive("batch_size", batch_size)
        if data_utils.is_iterator_data(x):
            prepared = x
        else:
            prepared = _Prepared(*self._prepare(x, y, sample_weight)[:3])
        n_steps = None if not isinstance(prepared, _Prepared) else math.ceil(prepared.count / batch_size)
        cbs = callbacks_module.CallbackList(callbacks, add_progbar=verbose != 0, model=self, verbose=verbose, epochs=1, steps=steps or n_steps)
        cbs.on_test_begin()
        logs = self._evaluate_prepared(prepared, batch_size, steps, cbs)
        cbs.on_test_end(logs)
        if return_dict:
            return logs
        return self._flatten_logs(logs)

    def _flatten_logs(self, logs):
        """Keras's order for list results: the loss, each output's loss (in output
        order), then the other entries sorted by name."""
        first = ["loss"] + [f"{name}_loss" for name in self._io_names()[1]]
        values = [logs[k] for k in first if k in logs] + [logs[k] for k in sorted(logs) if k not in first]
        return values[0] if len(values) == 1 else values

    def _evaluate_prepared(self, prepared, batch_size, steps=None, cbs=None):
        self._reset_metrics()
        trackers = None
        logs = {}
        if isinstance(prepared, _Prepared):
            batches = _ArrayBatches(prepared.x, prepared.ys, prepared.sws, prepared.count, batch_size, False).epoch(steps)
        else:
            batches = _GeneratorBatches(self, prepared, None).epoch(steps)
        for step, (bx, bys, bsws) in enumerate(batches):
            if cbs is not None:
                cbs.on_test_batch_begin(step)
            program, outs, loss = self._run_test_batch(bx, bys, bsws)
            trackers = self._update_trackers(trackers, program, outs, loss, bys, bsws, len(bx[0]))
            logs = self._logs(trackers)
            if cbs is not None:
                cbs.on_test_batch_end(step, logs)
        return logs

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The model's outputs on `x`, computed in batches (32 samples by default)."""
        from pyfuncnet import callbacks as callbacks_module

        verbose = 1 if verbose == "auto" else int(verbose)
        batch_size = batch_size or 32
        _check_positive("batch_size", batch_size)
        if data_utils.is_iterator_data(x):
            chunks = [self._predict_arrays(self._prepare(data_utils.unpack_batch(item)[0])[0]) for item in _take(x, steps)]
        else:
            x_arr, _, _, n = self._prepare(x)
            n_steps = math.ceil(n / batch_size) if steps is None else steps
            cbs = callbacks_module.CallbackList(callbacks, add_progbar=verbose != 0, model=self, verbose=verbose, epochs=1, steps=n_steps)
            cbs.on_predict_begin()
            chunks = []
            for step in range(n_steps):
                cbs.on_predict_batch_begin(step)
                sl = slice(step * batch_size, min((step + 1) * batch_size, n))
                chunks.append(self._predict_arrays([a[sl] for a in x_arr]))
                cbs.on_predict_batch_end(step, {"outputs": chunks[-1]})
            cbs.on_predict_end()
        if not chunks:
            raise ValueError("predict() received no data")
        outs = [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
        return self._pack_outputs(outs)

    def _predict_arrays(self, x_arr):
        return [np.asarray(o) for o in self._run_predict_batch(x_arr)]

    def _pack_outputs(self, outs):
        _, structure = self._symbolic_io()
        return _nest.pack_like(structure, outs) if _nest.is_nested(structure) else outs[0]

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One training step on one batch; returns the loss (and metrics) of that batch."""
        self._check_compiled("training")
        x_arr, ys, sws, _ = self._prepare(x, y, sample_weight, class_weight, training=True)
        self._reset_metrics()
        program, outs, loss = self._run_train_batch(x_arr, ys, sws)
        logs = self._logs(self._update_trackers(None, program, outs, loss, ys, sws, len(x_arr[0])))
        return logs if return_dict else self._flatten_logs(logs)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """The loss (and metrics) of one batch, without training."""
        self._check_compiled("evaluation")
        x_arr, ys, sws, _ = self._prepare(x, y, sample_weight)
        self._reset_metrics()
        program, outs, loss = self._run_test_batch(x_arr, ys, sws)
        logs = self._logs(self._update_trackers(None, program, outs, loss, ys, sws, len(x_arr[0])))
        return logs if return_dict else self._flatten_logs(logs)

    def predict_on_batch(self, x):
        """The model's outputs on one batch."""
        if _is_plain_batch(x):
            # One float32 array for a one-input model: straight to the compiled step,
            # found by the array's shape once the first call has checked it (a latency
            # path: single samples served one by one).
            key = ("predict_on_batch", x.shape)
            found = self._programs.get(key)
            if found is None and hasattr(self, "_nodes_by_depth") and len(self.inputs) == 1 and _fits(x, self.inputs[0]):
                found = self._programs[key] = (self._program("predict", [x], [], []), _nest.is_nested(self._symbolic_io()[1]))
            if found is not None:
                program, nested = found
                outs, _ = program.step.run([x], store.core)
                outs = program.carry(outs)
                return self._pack_outputs(outs) if nested else outs[0]
        x_arr, _, _, _ = self._prepare(x)
        return self._pack_outputs(self._predict_arrays(x_arr))


class _Prepared:
    """Checked arrays for evaluation."""

    def __init__(self, x, ys, sws):
        self.x, self.ys, self.sws = x, ys, sws
        self.count = len(x[0]) if x else 0


class _ArrayBatches:
    """Batches of in-memory arrays, shuffled per epoch when asked."""

    def __init__(self, x, ys, sws, n, batch_size, shuffle):
        self.x, self.ys, self.sws, self.n = x, ys, sws, n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))

    def order(self):
        """An epoch's order of the samples: a new permutation (int32) when shuffling,
        else None (in order)."""
        return self.rng.permutation(self.n).astype(np.int32) if self.shuffle else None

    def steps(self, limit=None):
        """Batches per epoch, at most `limit`."""
        steps = math.ceil(self.n / self.batch_size)
        return steps if limit is None else min(steps, limit)

    def batch(self, order, step):
        """Batch `step` of an epoch in `order`: (x, ys, sws)."""
        lo, hi = step * self.batch_size, min((step + 1) * self.batch_size, self.n)

        def take(a):
            return a[lo:hi] if order is None else data_utils.take_rows(a, order[lo:hi])

        return (
            [take(a) for a in self.x],
            [None if y is None else take(y) for y in self.ys],
            [None if s is None else take(s) for s in self.sws],
        )

    def epoch(self, steps=None):
        order = self.order()
        for step in range(self.steps(steps)):
            yield self.batch(order, step)


class _GeneratorBatches:
    """Batches from a generator: each item is checked like array data."""

    def __init__(self, model, source, class_weight, training=False):
        self.model = model
        self.iterator = iter(source)
        self.class_weight = class_weight
        self.training = training

    def epoch(self, steps=None):
        count = 0
        while steps is None or count < steps:
            try:
                item = next(self.iterator)
            except StopIteration:
                return
            bx, by, bsw = data_utils.unpack_batch(item)
            x_arr, ys, sws, _ = self.model._prepare(bx, by, bsw, self.class_weight, self.training)
            yield x_arr, ys, sws
            count += 1


def _is_plain_batch(x):
    return type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous and x.ndim > 0


def _fits(x, tensor):
    """Whether array `x` matches the shape and float dtype of input `tensor`."""
    shape = tensor.shape
    return tensor.dtype == "float32" and x.ndim == len(shape) and all(d is None or d == g for d, g in zip(shape, x.shape))


def _take(iterable, steps):
    for k, item in enumerate(iterable):
        if steps is not None and k >= steps:
            return
        yield item


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


def _is_sparse_loss(loss_fn):
    if loss_fn is None:
        return False
    target = getattr(loss_fn, "fn", loss_fn)
    name = getattr(target, "__name__", "") or getattr(loss_fn, "name", "")
    return "sparse_categorical" in name or type(loss_fn).__name__ == "SparseCategoricalCrossentropy"


def _metrics_per_output(spec, output_names):
    """The compile(metrics=...) argument as one list of metrics per output."""
    n = len(output_names)
    if isinstance(spec, dict):
        unknown = [k for k in spec if k not in output_names]
        if unknown:
            raise ValueError(f"compile(metrics=...) has keys {unknown} that match no output; the outputs are {output_names}")
        return [_as_list(spec.get(name)) for name in output_names]
    if not isinstance(spec, (list, tuple)):
        spec = [spec]
    if n > 1 and len(spec) == n and any(isinstance(m, (list, tuple)) or m is None for m in spec):
        return [_as_list(m) for m in spec]
    return [list(spec) for _ in range(n)]


def _as_list(m):
    if m is None:
        return []
    return list(m) if isinstance(m, (list, tuple)) else [m]
