"""Callbacks, as `keras.callbacks`: code that `fit`, `evaluate` and `predict` run at
fixed points of their loops.

`fit` wraps the user's callbacks in a `CallbackList` (adding `History` and
`ProgbarLogger`) and calls its hooks: `on_train_begin`, then per epoch
`on_epoch_begin`, `on_train_batch_begin` / `on_train_batch_end` per batch, the
validation's `on_test_*` hooks, `on_epoch_end` with the epoch's logs (validation
values prefixed with "val_"), and finally `on_train_end`. A callback stops training
by setting `model.stop_training = True`.

The model a callback works with needs only what Keras's callbacks use:
`stop_training`, `get_weights()` / `set_weights()`, `save()` / `save_weights()` and
`optimizer.learning_rate` (readable with `float`, assignable with a float).
"""

import csv
import inspect
import math
import numbers
import os
import re
import sys
import warnings

import numpy as np

from pyfuncnet._progbar import Progbar

__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgbarLogger",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
]


def _print(message):
    # sys.stdout is looked up at each call so output capture and redirection apply.
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


class Callback:
    """Base class of callbacks: every hook does nothing until a subclass overrides it.

    Hooks and their `logs`:
    - `on_train_begin(logs)` / `on_train_end(logs)`: around `fit`; the end gets the
      last epoch's logs.
    - `on_epoch_begin(epoch, logs)` / `on_epoch_end(epoch, logs)`: `epoch` counts
      from 0; the end gets the epoch's metric values ("val_"-prefixed for
      validation).
    - `on_{train,test,predict}_batch_begin(batch, logs)` / `..._batch_end(batch,
      logs)`: `batch` counts from 0 within the epoch; a train or test batch end gets
      the metric values accumulated so far in the epoch.
    - `on_{test,predict}_begin(logs)` / `on_{test,predict}_end(logs)`: around
      `evaluate` (and the validation inside `fit`) and `predict`.
    - `on_batch_begin` / `on_batch_end`: older names that the default
      `on_train_batch_begin` / `on_train_batch_end` call.

    Attributes:
        model: the model the callback works with (set by `set_model`).
        params: a dict of the loop's parameters (`verbose`, `epochs`, `steps`), set
            by `set_params`.

    Example:
        >>> class PrintLoss(Callback):
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         print(epoch, logs["loss"])
        >>> model.fit(x, y, epochs=2, callbacks=[PrintLoss()])
    """

    # Class-level defaults keep subclasses that skip `super().__init__()` working.
    params = None
    _model = None

    def __init__(self):
        self.params = None
        self._model = None

    @property
    def model(self):
        """The model the callback works with, or None before `set_model`."""
        return self._model

    def set_model(self, model):
        """Sets the model the hooks work with."""
        self._model = model

    def set_params(self, params):
        """Sets the loop's parameters (a dict: `verbose`, `epochs`, `steps`)."""
        self.params = params

    def on_batch_begin(self, batch, logs=None):
        """Older name of `on_train_batch_begin` (which calls it by default)."""

    def on_batch_end(self, batch, logs=None):
        """Older name of `on_train_batch_end` (which calls it by default)."""

    def on_epoch_begin(self, epoch, logs=None):
        """Called at the start of each epoch of `fit` (`epoch` counts from 0)."""

    def on_epoch_end(self, epoch, logs=None):
        """Called at the end of each epoch of `fit` with the epoch's metric values."""

    def on_train_batch_begin(self, batch, logs=None):
        """Called before each training batch; calls `on_batch_begin` by default."""
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        """Called after each training batch with the epoch's metric values so far;
        calls `on_batch_end` by default."""
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        """Called before each batch of `evaluate` or of the validation in `fit`."""

    def on_test_batch_end(self, batch, logs=None):
        """Called after each batch of `evaluate` or of the validation in `fit`."""

    def on_predict_batch_begin(self, batch, logs=None):
        """Called before each batch of `predict`."""

    def on_predict_batch_end(self, batch, logs=None):
        """Called after each batch of `predict`."""

    def on_train_begin(self, logs=None):
        """Called when `fit` starts."""

    def on_train_end(self, logs=None):
        """Called when `fit` ends, with the last epoch's logs."""

    def on_test_begin(self, logs=None):
        """Called when `evaluate` (or the validation in `fit`) starts."""

    def on_test_end(self, logs=None):
        """Called when `evaluate` (or the validation in `fit`) ends, with its logs."""

    def on_predict_begin(self, logs=None):
        """Called when `predict` starts."""

    def on_predict_end(self, logs=None):
        """Called when `predict` ends."""


# Every hook a callback may define (what `LambdaCallback` accepts).
_HOOK_NAMES = tuple(name for name in vars(Callback) if name.startswith("on_"))


def _flatten_callbacks(callbacks):
    flat = []
    for item in callbacks:
        if isinstance(item, (list, tuple)):
            flat.extend(_flatten_callbacks(item))
        elif isinstance(item, Callback):
            flat.append(item)
        else:
            raise TypeError(f"CallbackList: `callbacks` must hold Callback instances, got {type(item).__name__}")
    return flat


def _pythonify_logs(logs):
    """Batch logs as Keras passes them on: sorted by name, nested dicts flattened,
    numbers (numpy scalars, 0-d arrays) as Python floats."""
    result = {}
    for key, value in sorted(logs.items()):
        if isinstance(value, dict):
            result.update(_pythonify_logs(value))
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            pass
        result[key] = value
    return result


class CallbackList(Callback):
    """Calls each hook of a list of callbacks, in order, as `keras.callbacks.CallbackList`.

    Args:
        callbacks: a list (nested lists are flattened) of `Callback` instances.
        add_history: append a `History` unless the list has one; it becomes
            `model.history`.
        add_progbar: append a `ProgbarLogger` unless the list has one.
        model: the model, given to every callback with `set_model`.
        **params: the loop's parameters (`verbose`, `epochs`, `steps`), given to
            every callback with `set_params` when there are any.

    Example:
        >>> callbacks = CallbackList([EarlyStopping()], add_history=True, model=model,
        ...                          verbose=1, epochs=10, steps=100)
        >>> callbacks.on_train_begin()
    """

    def __init__(self, callbacks=None, add_history=False, add_progbar=False, model=None, **params):
        super().__init__()
        self.callbacks = _flatten_callbacks(callbacks) if callbacks else []
        self._history = next((c for c in self.callbacks if isinstance(c, History)), None)
        self._progbar = next((c for c in self.callbacks if isinstance(c, ProgbarLogger)), None)
        if self._history is None and add_history:
            self._history = History()
            self.callbacks.append(self._history)
        if self._progbar is None and add_progbar:
            self._progbar = ProgbarLogger()
            self.callbacks.append(self._progbar)
        self.set_model(model)
        self.set_params(params)

    def append(self, callback):
        """Adds a callback at the end of the list."""
        self.callbacks.extend(_flatten_callbacks([callback]))

    def set_model(self, model):
        """Gives `model` to every callback (nothing happens for None)."""
        if model is None:
            return
        super().set_model(model)
        if self._history is not None:
            model.history = self._history
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params):
        """Gives `params` to every callback when it is not empty."""
        self.params = params
        if params:
            for callback in self.callbacks:
                callback.set_params(params)

    # Hooks with the calling conventions Keras uses (LambdaCallback functions rely
    # on them): batch hooks get `logs` by keyword, the others positionally.

    def on_train_begin(self, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_train_begin(logs)

    def on_train_end(self, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def on_test_begin(self, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_test_begin(logs)

    def on_test_end(self, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_test_end(logs)

    def on_predict_begin(self, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_predict_begin(logs)

    def on_predict_end(self, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_predict_end(logs)

    def on_batch_begin(self, batch, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_batch_begin(batch, logs=logs)

    def on_batch_end(self, batch, logs=None):
        logs = _pythonify_logs(logs or {})
        for callback in self.callbacks:
            callback.on_batch_end(batch, logs=logs)

    def on_train_batch_begin(self, batch, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_train_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        logs = _pythonify_logs(logs or {})
        for callback in self.callbacks:
            callback.on_train_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_test_batch_begin(batch, logs=logs)

    def on_test_batch_end(self, batch, logs=None):
        logs = _pythonify_logs(logs or {})
        for callback in self.callbacks:
            callback.on_test_batch_end(batch, logs=logs)

    def on_predict_batch_begin(self, batch, logs=None):
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_predict_batch_begin(batch, logs=logs)

    def on_predict_batch_end(self, batch, logs=None):
        # Prediction logs hold output arrays: passed on as they are.
        logs = logs or {}
        for callback in self.callbacks:
            callback.on_predict_batch_end(batch, logs=logs)


class History(Callback):
    """Records the logs of every epoch; `fit` returns it (also `model.history`).

    Attributes:
        history: a dict from each log name ("loss", "val_loss", ...) to the list of
            its values, one per epoch.
        epoch: the list of epoch indices recorded by the current `fit`.

    Example:
        >>> history = model.fit(x, y, epochs=3, validation_split=0.2)
        >>> history.history["val_loss"]  # three values
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        if self.model is not None:
            self.model.history = self


class ProgbarLogger(Callback):
    """Prints the progress of `fit`, `evaluate` and `predict` (see `utils.Progbar`).

    `verbose=1` (or "auto") in the params draws a bar per epoch, `verbose=2` one line
    per epoch; "Epoch i/N" lines come first when there is more than one epoch. The
    validation inside `fit` is silent: its values appear on the epoch's line.

    Example:
        >>> model.fit(x, y, epochs=2, callbacks=[ProgbarLogger()])
        Epoch 1/2
        32/32 ━━━━━━━━━━━━━━━━━━━━ 1s 4ms/step - loss: 0.5120
        Epoch 2/2
        32/32 ━━━━━━━━━━━━━━━━━━━━ 0s 3ms/step - loss: 0.3391
    """

    def __init__(self):
        super().__init__()
        self.seen = 0
        self.progbar = None
        self.target = None
        self.verbose = 1
        self.epochs = 1
        self._called_in_fit = False

    def set_params(self, params):
        super().set_params(params)
        verbose = params.get("verbose", 1)
        self.verbose = 1 if verbose == "auto" else verbose
        self.epochs = params.get("epochs", 1)
        self.target = params.get("steps")

    def on_train_begin(self, logs=None):
        self._called_in_fit = True

    def on_train_end(self, logs=None):
        self._called_in_fit = False

    def on_test_begin(self, logs=None):
        if not self._called_in_fit:
            self._reset_progbar()

    def on_predict_begin(self, logs=None):
        self._reset_progbar()

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_progbar()
        if self.verbose and self.epochs > 1:
            _print(f"Epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch, logs=None):
        self._update_progbar(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        if not self._called_in_fit:
            self._update_progbar(batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        # Predictions are arrays, not values to print.
        self._update_progbar(batch, None)

    def on_epoch_end(self, epoch, logs=None):
        self._finalize_progbar(logs)

    def on_test_end(self, logs=None):
        if not self._called_in_fit:
            self._finalize_progbar(logs)

    def on_predict_end(self, logs=None):
        self._finalize_progbar(logs)

    def _reset_progbar(self):
        self.seen = 0
        self.progbar = Progbar(target=self.target, verbose=self.verbose, unit_name="step")

    def _update_progbar(self, batch, logs):
        if self.progbar is None:
            self._reset_progbar()
        self.seen = batch + 1
        if self.verbose == 1:
            self.progbar.update(self.seen, list((logs or {}).items()), finalize=False)

    def _finalize_progbar(self, logs):
        if self.progbar is None:
            self._reset_progbar()
        if self.target is None:
            # An unknown number of steps is known at the end.
            self.target = self.seen
            self.progbar.target = self.seen
        self.progbar.update(self.target, list((logs or {}).items()), finalize=True)


# ----------------------------------------------------------------------------
# Monitoring a metric


# Words of metric names that are better when larger or smaller, for mode="auto"
# (Keras's built-in metrics: accuracies, AUC, precision, recall, F-scores, IoU, R2,
# cosine similarity are maximised; losses, errors, cross-entropies are minimised).
_MAX_WORDS = frozenset("acc accuracy auc precision recall f1 fbeta iou r2 similarity sensitivity specificity".split())
_MIN_WORDS = frozenset("loss error crossentropy hinge divergence kld poisson logcosh mse mae mape msle rmse".split())


def _declared_direction(model, name):
    """The `_direction` ("up" / "down") of the model's metric called `name`, if any."""
    pending = list(getattr(model, "metrics", None) or [])
    while pending:
        metric = pending.pop()
        pending.extend(getattr(metric, "metrics", None) or [])
        direction = getattr(metric, "_direction", None)
        if getattr(metric, "name", None) == name and direction in ("up", "down"):
            return "max" if direction == "up" else "min"
    return None


def _infer_mode(monitor, model):
    """"min" or "max" for a monitored name, or None when the name does not say."""
    name = monitor[4:] if monitor.startswith("val_") else monitor
    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    if "loss" in words:
        return "min"
    declared = _declared_direction(model, name)
    if declared is not None:
        return declared
    if name in ("true_positives", "true_negatives") or words & _MAX_WORDS:
        return "max"
    if name in ("false_positives", "false_negatives") or words & _MIN_WORDS:
        return "min"
    return None


def _check_mode(owner, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f'{owner}: `mode` must be "auto", "min" or "max", got {mode!r}')
    return mode


def _resolve_mode(owner, monitor, mode, model):
    """The comparison direction: `mode`, or inferred from the monitored name."""
    if mode != "auto":
        return mode
    inferred = _infer_mode(monitor, model)
    if inferred is None:
        raise ValueError(
            f"{owner}: cannot tell whether monitor={monitor!r} should be maximized or minimized; "
            "pass mode='max' or mode='min'"
        )
    return inferred


def _scalar_or_none(value):
    """A monitored log value as a float, or None when it is not a single number."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "biuf":
        return None
    return float(array.reshape(()))


def _optimizer(owner, model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "learning_rate"):
        raise ValueError(f'{owner}: the model\'s optimizer must have a "learning_rate" attribute')
    return optimizer


def _learning_rate(owner, model):
    """The optimizer's current learning rate as a float."""
    rate = _optimizer(owner, model).learning_rate
    try:
        return float(np.asarray(rate, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise TypeError(
            f"{owner}: cannot read the optimizer's learning rate as a float (got {type(rate).__name__})"
        ) from None


class EarlyStopping(Callback):
    """Stops training when a monitored metric has stopped improving.

    At each epoch end the monitored value counts as an improvement when it beats the
    best so far by more than `min_delta`; after `patience` epochs in a row without
    one, `model.stop_training` is set. With a `baseline`, an improvement over the best
    that does not also beat the baseline does not reset the patience count.

    Args:
        monitor: the log name to watch (e.g. "val_loss", "accuracy").
        min_delta: the smallest change that counts as an improvement.
        patience: the number of epochs without improvement before stopping.
        verbose: 1 prints a message when stopping and restoring weights.
        mode: "min", "max", or "auto" (inferred from the name: losses and errors are
            minimised; accuracy, AUC, precision, recall... maximised).
        baseline: a value the metric must beat; training stops after `patience`
            epochs that do not beat it.
        restore_best_weights: at the end of training, set the weights back to those
            of the best epoch (even when training ran to the end).
        start_from_epoch: the number of warm-up epochs not monitored.

    Example:
        >>> stop = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
        >>> model.fit(x, y, validation_split=0.2, epochs=100, callbacks=[stop])
    """

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        restore_best_weights=False,
        start_from_epoch=0,
    ):
        super().__init__()
        self.monitor = monitor
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.verbose = verbose
        self.mode = _check_mode("EarlyStopping", mode)
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0
        self._direction = None

    def on_train_begin(self, logs=None):
        self._reset()

    def _is_improvement(self, value, reference):
        if self._direction == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_epoch_end(self, epoch, logs=None):
        if self._direction is None:
            self._direction = _resolve_mode("EarlyStopping", self.monitor, self.mode, self.model)
            self.best = math.inf if self._direction == "min" else -math.inf
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # The first monitored epoch is the best one until another beats it.
            self.best_weights = self._copy_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self._copy_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            _print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                _print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)

    def get_monitor_value(self, logs):
        """The monitored value from `logs` as a float; warns and returns None when
        it is missing."""
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(
                f"Early stopping conditioned on metric `{self.monitor}` which is not available. "
                f"Available metrics are: {','.join(logs)}",
                stacklevel=3,
            )
            return None
        return _scalar_or_none(value)

    def _copy_weights(self):
        # Copies: a model may hand out views of buffers that later steps overwrite.
        return [np.array(w, copy=True) for w in self.model.get_weights()]


class ModelCheckpoint(Callback):
    """Saves the model or its weights during training.

    Args:
        filepath: where to save; may hold format fields filled with `epoch` (counted
            from 1), `batch` (from 1, for batch saves) and the logs' values, e.g.
            "ckpt/{epoch:02d}-{val_loss:.2f}.keras". It must end in ".weights.h5"
            with `save_weights_only=True`, in ".keras" (or the legacy ".h5")
            otherwise.
        monitor: the log value that decides the best model for `save_best_only`.
        verbose: 1 prints a message at each save decision.
        save_best_only: save only when the monitored value improves on the best so
            far (a missing value warns and saves).
        save_weights_only: call `model.save_weights(path)` instead of
            `model.save(path)`.
        mode: "min", "max" or "auto" (inferred from the monitored name).
        save_freq: "epoch", or a positive integer: save every that many batches.
        initial_value_threshold: the value the first save must beat with
            `save_best_only`.

    Example:
        >>> checkpoint = ModelCheckpoint("best.weights.h5", save_weights_only=True,
        ...                              monitor="val_accuracy", save_best_only=True)
        >>> model.fit(x, y, validation_split=0.2, epochs=10, callbacks=[checkpoint])
    """

    def __init__(
        self,
        filepath,
        monitor="val_loss",
        verbose=0,
        save_best_only=False,
        save_weights_only=False,
        mode="auto",
        save_freq="epoch",
        initial_value_threshold=None,
    ):
        super().__init__()
        try:
            self.filepath = os.fspath(filepath)
        except TypeError:
            raise TypeError(
                f"ModelCheckpoint: `filepath` must be a string or path, got {type(filepath).__name__}"
            ) from None
        if save_freq != "epoch" and (
            isinstance(save_freq, bool) or not isinstance(save_freq, numbers.Integral) or save_freq < 1
        ):
            raise ValueError(f"ModelCheckpoint: `save_freq` must be 'epoch' or a positive integer, got {save_freq!r}")
        if save_weights_only:
            if not self.filepath.endswith(".weights.h5"):
                raise ValueError(
                    "ModelCheckpoint: with `save_weights_only=True` the filepath must end in "
                    f"`.weights.h5` (Keras weights format). Received: filepath={self.filepath}"
                )
        elif not self.filepath.endswith((".keras", ".h5")):
            raise ValueError(
                "ModelCheckpoint: the filepath must end in `.keras` (Keras model format). "
                f"Received: filepath={self.filepath}"
            )
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.mode = _check_mode("ModelCheckpoint", mode)
        self.save_freq = save_freq
        self.initial_value_threshold = initial_value_threshold
        self.best = initial_value_threshold
        self._direction = None
        self._current_epoch = 0
        self._batches_since_save = 0
        self._last_batch_seen = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._due_on_batch(batch):
            self._save(self._current_epoch, batch, logs or {})

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs or {})

    def _due_on_batch(self, batch):
        if self.save_freq == "epoch":
            return False
        # A batch index that does not grow starts a new epoch.
        self._batches_since_save += batch + 1 if batch <= self._last_batch_seen else batch - self._last_batch_seen
        self._last_batch_seen = batch
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            return True
        return False

    def _file_path(self, epoch, batch, logs):
        fields = dict(logs)
        fields["epoch"] = epoch + 1
        if batch is not None and "batch" not in logs:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except KeyError as missing:
            raise KeyError(
                f"ModelCheckpoint: failed to format the filepath {self.filepath}: no value for the field "
                f"{{{missing.args[0]}}} (available: {', '.join(fields)})"
            ) from None

    def _should_save(self, epoch, logs, filepath):
        if not self.save_best_only:
            if self.verbose > 0:
                _print(f"\nEpoch {epoch + 1}: saving model to {filepath}")
            return True
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"Can save best model only with {self.monitor} available.", stacklevel=4)
            return True
        current = _scalar_or_none(value)
        if current is None:
            warnings.warn(
                f"Can save best model only when `monitor` is a scalar value. Received: {value}. "
                "Falling back to `save_best_only=False`.",
                stacklevel=4,
            )
            return True
        if self._direction is None:
            self._direction = _resolve_mode("ModelCheckpoint", self.monitor, self.mode, self.model)
            if self.best is None:
                self.best = math.inf if self._direction == "min" else -math.inf
        best_text = f"{self.best:.5f}"
        improved = current < self.best if self._direction == "min" else current > self.best
        if improved:
            if self.verbose > 0:
                _print(
                    f"\nEpoch {epoch + 1}: {self.monitor} improved from {best_text} to {current:.5f}, "
                    f"saving model to {filepath}"
                )
            self.best = current
            return True
        if self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best_text}")
        return False

    def _save(self, epoch, batch, logs):
        filepath = self._file_path(epoch, batch, logs)
        if not self._should_save(epoch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise IsADirectoryError(
                f"ModelCheckpoint: the filepath is an existing directory, give a file path instead: {filepath}"
            )
        directory = os.path.dirname(filepath)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(filepath, overwrite=True)
        else:
            self.model.save(filepath, overwrite=True)
        if self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: finished saving model to {filepath}")


def _takes_learning_rate(schedule):
    """Whether `schedule` accepts `(epoch, lr)`; if not it is called as `schedule(epoch)`."""
    try:
        parameters = inspect.signature(schedule).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): try the current API
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return True
    return sum(p.kind in positional for p in parameters) >= 2


class LearningRateScheduler(Callback):
    """Sets the optimizer's learning rate at the start of each epoch from a schedule.

    Args:
        schedule: a function `schedule(epoch, lr)` of the epoch index (from 0) and
            the current learning rate returning the new rate (a float); a function
            of the epoch alone is accepted too.
        verbose: 1 prints the new rate at each epoch.

    The rate at the end of each epoch is added to the logs as "learning_rate".

    Example:
        >>> def schedule(epoch, lr):
        ...     return lr if epoch < 10 else lr * 0.9
        >>> model.fit(x, y, epochs=15, callbacks=[LearningRateScheduler(schedule)])
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: `schedule` must be callable, got {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = verbose
        self._with_rate = _takes_learning_rate(schedule)

    def on_epoch_begin(self, epoch, logs=None):
        if self._with_rate:
            rate = self.schedule(epoch, _learning_rate("LearningRateScheduler", self.model))
        else:
            rate = self.schedule(epoch)
        if isinstance(rate, np.ndarray) and rate.ndim == 0:
            rate = rate[()]
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise ValueError(f"LearningRateScheduler: the output of `schedule` should be a float. Got: {rate!r}")
        _optimizer("LearningRateScheduler", self.model).learning_rate = float(rate)
        if self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(rate)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = _learning_rate("LearningRateScheduler", self.model)


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by `factor` when a metric stops improving.

    A value improves when it beats the best so far by more than `min_delta`. After
    `patience` epochs without improvement the rate becomes
    `max(lr * factor, min_lr)` (unless it is already at `min_lr`), then `cooldown`
    epochs pass before epochs without improvement count again. The current rate is
    added to each epoch's logs as "learning_rate".

    Args:
        monitor: the log name to watch.
        factor: the factor the rate is multiplied by, in [0, 1).
        patience: the number of epochs without improvement before a reduction.
        verbose: 1 prints a message at each reduction.
        mode: "min", "max", or "auto" (inferred from the name; unknown names are
            minimised).
        min_delta: the smallest change that counts as an improvement.
        cooldown: the number of epochs to wait after a reduction.
        min_lr: the lower bound of the rate.

    Example:
        >>> reduce_lr = ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=5, min_lr=0.001)
        >>> model.fit(x, y, validation_split=0.2, callbacks=[reduce_lr])
    """

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        verbose=0,
        mode="auto",
        min_delta=1e-4,
        cooldown=0,
        min_lr=0.0,
    ):
        super().__init__()
        if not 0.0 <= factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: `factor` must be in [0, 1) (new_lr = lr * factor), got {factor}")
        self.monitor = monitor
        self.factor = factor
        self.patience = patience
        self.verbose = verbose
        self.mode = _check_mode("ReduceLROnPlateau", mode)
        self.min_delta = min_delta
        self.cooldown = cooldown
        self.min_lr = min_lr
        self._reset()

    def _reset(self):
        self.wait = 0
        self.cooldown_counter = 0
        self.best = None
        self._direction = None

    def on_train_begin(self, logs=None):
        self._reset()

    def in_cooldown(self):
        """Whether the epochs after a reduction are still running out."""
        return self.cooldown_counter > 0

    def _improves(self, value):
        if self._direction == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = _learning_rate("ReduceLROnPlateau", self.model)
        if self._direction is None:
            # Keras falls back to minimising names it cannot classify.
            self._direction = self.mode if self.mode != "auto" else _infer_mode(self.monitor, self.model) or "min"
            self.best = math.inf if self._direction == "min" else -math.inf
        current = _scalar_or_none(logs.get(self.monitor))
        if current is None:
            warnings.warn(
                f"Learning rate reduction is conditioned on metric `{self.monitor}` which is not available. "
                f"Available metrics are: {','.join(logs)}.",
                stacklevel=2,
            )
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
        if self._improves(current):
            self.best = current
            self.wait = 0
            return
        if self.in_cooldown():
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        old_rate = logs["learning_rate"]
        # Compared in float32, the optimizer's precision: a rate stored as
        # float32(min_lr) is at the bound.
        if old_rate > np.float32(self.min_lr):
            new_rate = float(max(old_rate * self.factor, self.min_lr))
            _optimizer("ReduceLROnPlateau", self.model).learning_rate = new_rate
            if self.verbose > 0:
                _print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_rate}.")
            self.cooldown_counter = self.cooldown
            self.wait = 0


class TerminateOnNaN(Callback):
    """Stops training when a batch's loss is NaN or infinite.

    Args:
        raise_error: raise a RuntimeError at once instead of setting
            `model.stop_training` (so `on_train_end` hooks do not run).

    Example:
        >>> model.fit(x, y, callbacks=[TerminateOnNaN()])
    """

    def __init__(self, raise_error=False):
        super().__init__()
        self.raise_error = raise_error

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or np.all(np.isfinite(np.asarray(loss, dtype=np.float64))):
            return
        if self.raise_error:
            raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}.")
        _print(f"Batch {batch}: Invalid loss, terminating training")
        self.model.stop_training = True


def _csv_value(value):
    """A log value for a CSV cell: 1-d arrays and lists as "[a, b]", else itself."""
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(map(str, value)) + "]"
    return value


class CSVLogger(Callback):
    """Writes one CSV row per epoch: the epoch (from 0) and every log value.

    The columns are "epoch" then the first epoch's log names, sorted (plus any
    "val_" names in `model.metrics_names` not logged yet); a value missing from a
    later epoch is written "NA". Rows end in "\\r\\n" (the csv module's Excel
    dialect, as Keras writes them).

    Args:
        filename: the CSV file's path.
        separator: the string between values.
        append: add rows to an existing file (a header only if it is empty) instead
            of overwriting it.

    Example:
        >>> model.fit(x, y, epochs=5, callbacks=[CSVLogger("training.csv")])
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = append
        self.keys = None
        self.csv_file = None
        self._writer = None
        self._write_header = True

    def on_train_begin(self, logs=None):
        if self.append:
            self._write_header = not (os.path.exists(self.filename) and os.path.getsize(self.filename) > 0)
            mode = "a"
        else:
            self._write_header = True
            mode = "w"
        self._close()
        self.csv_file = open(self.filename, mode, newline="", encoding="utf-8")
        self.keys = None
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.csv_file is None:  # hooks driven without on_train_begin
            self.on_train_begin()
        if self.keys is None:
            self.keys = sorted(logs)
            for name in getattr(self.model, "metrics_names", None) or []:
                if name.startswith("val_") and name not in self.keys:
                    self.keys.append(name)
        if self._writer is None:
            self._writer = csv.writer(self.csv_file, delimiter=self.sep)
            if self._write_header:
                self._writer.writerow(["epoch"] + self.keys)
        self._writer.writerow([epoch] + [_csv_value(logs.get(key, "NA")) for key in self.keys])
        self.csv_file.flush()

    def on_train_end(self, logs=None):
        self._close()

    def _close(self):
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self._writer = None


class LambdaCallback(Callback):
    """A callback made of the functions given for some hooks.

    The functions are called as the hooks are: `on_epoch_begin(epoch, logs)`,
    `on_train_begin(logs)`, `on_train_batch_end(batch, logs=logs)`, and so on.

    Args:
        on_epoch_begin, on_epoch_end, on_train_begin, on_train_end,
        on_train_batch_begin, on_train_batch_end: functions for those hooks.
        **kwargs: functions for any other hook of `Callback` (e.g.
            `on_test_end=...`).

    Example:
        >>> losses = []
        >>> record = LambdaCallback(on_epoch_end=lambda epoch, logs: losses.append(logs["loss"]))
        >>> model.fit(x, y, epochs=3, callbacks=[record])
    """

    def __init__(
        self,
        on_epoch_begin=None,
        on_epoch_end=None,
        on_train_begin=None,
        on_train_end=None,
        on_train_batch_begin=None,
        on_train_batch_end=None,
        **kwargs,
    ):
        super().__init__()
        hooks = dict(
            on_epoch_begin=on_epoch_begin,
            on_epoch_end=on_epoch_end,
            on_train_begin=on_train_begin,
            on_train_end=on_train_end,
            on_train_batch_begin=on_train_batch_begin,
            on_train_batch_end=on_train_batch_end,
        )
        for name, function in kwargs.items():
            if name not in _HOOK_NAMES:
                raise TypeError(
                    f"LambdaCallback: unknown hook {name!r}; the hooks are {', '.join(sorted(_HOOK_NAMES))}"
                )
            hooks[name] = function
        for name, function in hooks.items():
            if function is None:
                continue
            if not callable(function):
                raise TypeError(f"LambdaCallback: `{name}` must be callable, got {type(function).__name__}")
            # An instance attribute replaces the method: called with the hook's arguments.
            setattr(self, name, function)
