"""Callbacks and the progress bar, driven through their hooks by hand.

A small fake model stands in for `Model`: weights that the test sets per epoch,
`stop_training`, an optimizer with a plain `learning_rate` attribute, and
`save` / `save_weights` that record the call and write a file. Expected values are
worked out by hand from Keras 3's documented rules, or come from references written
here (the early-stopping epoch from the "epochs since the last improvement" rule,
metric averages from exact sums).
"""

import contextlib
import csv
import io
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyfuncnet import _progbar, callbacks
from pyfuncnet._progbar import Progbar, format_eta, format_metric, format_step_time
from pyfuncnet.callbacks import (
    Callback,
    CallbackList,
    CSVLogger,
    EarlyStopping,
    History,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgbarLogger,
    ReduceLROnPlateau,
    TerminateOnNaN,
)

BAR = "━"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ----------------------------------------------------------------------------
# Fakes


class FakeOptimizer:
    def __init__(self, learning_rate):
        self.learning_rate = learning_rate


class FakeMetric:
    def __init__(self, name, direction):
        self.name = name
        self._direction = direction


class FakeModel:
    """What callbacks use of a model; weights are set to the epoch index by `run`."""

    def __init__(self, learning_rate=0.1, metrics=(), metrics_names=()):
        self.stop_training = False
        self.optimizer = FakeOptimizer(learning_rate)
        self.metrics = list(metrics)
        self.metrics_names = list(metrics_names)
        self.weights = [np.zeros((2, 3), np.float32), np.zeros(3, np.float32)]
        self.saved = []

    def set_epoch_weights(self, epoch):
        self.weights = [np.full((2, 3), epoch, np.float32), np.full(3, -epoch, np.float32)]

    def get_weights(self):
        # A model's own buffers: callbacks must copy what they keep.
        return self.weights

    def set_weights(self, weights):
        self.weights = [np.array(w) for w in weights]

    def save_weights(self, filepath, overwrite=True):
        self.saved.append(("save_weights", filepath, overwrite))
        with open(filepath, "w") as f:
            f.write("weights")

    def save(self, filepath, overwrite=True):
        self.saved.append(("save", filepath, overwrite))
        with open(filepath, "w") as f:
            f.write("model")


def run(callback_objects, model, epoch_logs, batches=1, batch_logs=None, **params):
    """Drives `fit`'s hooks for the epochs in `epoch_logs` (a list of dicts), stopping
    when `model.stop_training` is set. Weights are overwritten in place each epoch,
    as training does. Returns the number of epochs run."""
    params = {"verbose": 0, "epochs": len(epoch_logs), "steps": batches, **params}
    cbs = CallbackList(callback_objects, model=model, **params)
    cbs.on_train_begin()
    ran = 0
    logs = {}
    for epoch, logs in enumerate(epoch_logs):
        cbs.on_epoch_begin(epoch)
        for batch in range(batches):
            cbs.on_train_batch_begin(batch)
            for w in model.weights:
                w[...] = epoch * (1 if w.ndim == 2 else -1)
            cbs.on_train_batch_end(batch, dict(batch_logs[batch]) if batch_logs else {})
        logs = dict(logs)
        cbs.on_epoch_end(epoch, logs)
        ran += 1
        if model.stop_training:
            break
    cbs.on_train_end(logs)
    return ran


def weights_of_epoch(model):
    """The epoch index the model's weights were set to (see `run`)."""
    first, second = model.weights
    assert np.all(first == first.flat[0]) and np.all(second == -first.flat[0])
    return int(first.flat[0])


class Clock:
    """Replaces the progress bar's clock; tests move `t` by hand."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(_progbar, "_now", fake)
    return fake


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@contextlib.contextmanager
def terminal():
    """Output goes to a fake terminal (set in the test body: pytest resets
    sys.stdout between a test's phases, so a fixture could not keep it)."""
    screen = FakeTerminal()
    with contextlib.redirect_stdout(screen):
        yield screen


@pytest.fixture(autouse=True)
def outside_pycharm(monkeypatch):
    # PyCharm's console counts as a terminal: keep the tests' displays as they set them.
    monkeypatch.delenv("PYCHARM_HOSTED", raising=False)


def plain(text):
    return _ANSI.sub("", text)


# ----------------------------------------------------------------------------
# Callback, CallbackList, History


class Recorder(Callback):
    def __init__(self, name, journal):
        super().__init__()
        self.name = name
        self.journal = journal

    def on_epoch_begin(self, epoch, logs=None):
        self.journal.append((self.name, "epoch_begin", epoch))

    def on_batch_end(self, batch, logs=None):
        self.journal.append((self.name, "batch_end", batch, logs))


def test_callback_base_hooks_do_nothing_and_store_model_and_params():
    cb = Callback()
    assert cb.model is None and cb.params is None
    for name in callbacks._HOOK_NAMES:
        # Hooks named on_<stage>_begin / _end take logs only; the others an index too.
        takes_index = "batch" in name or "epoch" in name
        assert getattr(cb, name)(*((0,) if takes_index else ()), logs={}) is None
    model = FakeModel()
    cb.set_model(model)
    cb.set_params({"epochs": 3})
    assert cb.model is model and cb.params == {"epochs": 3}


def test_callback_list_dispatches_in_order_and_batch_logs_become_sorted_floats():
    journal = []
    first, second = Recorder("a", journal), Recorder("b", journal)
    cbs = CallbackList([first, [second]], model=FakeModel(), epochs=1)
    cbs.on_epoch_begin(4)
    # The default on_train_batch_end calls the older on_batch_end.
    cbs.on_train_batch_end(2, {"z": np.float32(0.5), "a": np.array(2.0)})
    assert journal[:2] == [("a", "epoch_begin", 4), ("b", "epoch_begin", 4)]
    name, hook, batch, logs = journal[2]
    assert (name, hook, batch) == ("a", "batch_end", 2)
    assert list(logs) == ["a", "z"]
    assert all(type(v) is float for v in logs.values()) and logs == {"a": 2.0, "z": 0.5}


def test_callback_list_adds_history_and_progbar_once_and_sets_model_and_params():
    model = FakeModel()
    own_history = History()
    cbs = CallbackList([own_history], add_history=True, add_progbar=True, model=model, verbose=2, epochs=3, steps=7)
    assert [type(c) for c in cbs.callbacks] == [History, ProgbarLogger]
    assert cbs.callbacks[0] is own_history and model.history is own_history
    for c in cbs.callbacks:
        assert c.model is model
        assert c.params == {"verbose": 2, "epochs": 3, "steps": 7}
    plain_list = CallbackList([Callback()], model=model)
    assert len(plain_list.callbacks) == 1 and plain_list.callbacks[0].params is None


def test_callback_list_rejects_non_callbacks():
    with pytest.raises(TypeError, match="Callback instances, got int"):
        CallbackList([Callback(), 3])


def test_history_records_every_epoch_and_becomes_model_history():
    model = FakeModel()
    history = History()
    epoch_logs = [{"loss": 1.0, "val_loss": 2.0}, {"loss": 0.5, "val_loss": 1.5}, {"loss": 0.25, "val_loss": 1.25}]
    run([history], model, epoch_logs)
    assert history.history == {"loss": [1.0, 0.5, 0.25], "val_loss": [2.0, 1.5, 1.25]}
    assert history.epoch == [0, 1, 2]
    assert model.history is history and history.model is model
    # Reused for another fit: `epoch` restarts, the values are appended.
    run([history], model, epoch_logs[:1])
    assert history.epoch == [0] and history.history["loss"] == [1.0, 0.5, 0.25, 1.0]


def test_lambda_callback_calls_the_given_functions_with_the_hook_arguments():
    calls = []
    cb = LambdaCallback(
        on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch)),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, logs["loss"])),
        on_train_begin=lambda logs: calls.append(("train_begin",)),
        on_train_end=lambda logs: calls.append(("train_end",)),
        on_train_batch_begin=lambda batch, logs: calls.append(("batch_begin", batch)),
        on_train_batch_end=lambda batch, logs: calls.append(("batch_end", batch, logs["loss"])),
        on_test_end=lambda logs: calls.append(("test_end", logs["loss"])),
    )
    run([cb], FakeModel(), [{"loss": 3.0}], batches=2, batch_logs=[{"loss": 1.0}, {"loss": 2.0}])
    CallbackList([cb]).on_test_end({"loss": 4.0})
    assert calls == [
        ("train_begin",),
        ("epoch_begin", 0),
        ("batch_begin", 0),
        ("batch_end", 0, 1.0),
        ("batch_begin", 1),
        ("batch_end", 1, 2.0),
        ("epoch_end", 0, 3.0),
        ("train_end",),
        ("test_end", 4.0),
    ]


def test_lambda_callback_rejects_unknown_hooks_and_non_callables():
    with pytest.raises(TypeError, match="unknown hook 'on_epoch_ned'"):
        LambdaCallback(on_epoch_ned=print)
    with pytest.raises(TypeError, match="`on_epoch_end` must be callable"):
        LambdaCallback(on_epoch_end=3)


# ----------------------------------------------------------------------------
# EarlyStopping


def losses(*values, key="val_loss"):
    return [{"loss": 1.0, key: v} for v in values]


def test_early_stopping_patience_counts_epochs_without_improvement():
    # Improvements at epochs 0 and 1; epochs 2 and 3 do not improve: with patience 2
    # training stops after epoch 3 (four epochs).
    model = FakeModel()
    stop = EarlyStopping(patience=2)
    assert run([stop], model, losses(1.0, 0.9, 0.95, 0.91, 0.92, 0.5)) == 4
    assert model.stop_training and stop.stopped_epoch == 3 and stop.best == 0.9
    assert weights_of_epoch(model) == 3  # not restored by default


def test_early_stopping_patience_zero_stops_at_the_first_non_improvement():
    model = FakeModel()
    assert run([EarlyStopping(monitor="loss", patience=0)], model, losses(3.0, 2.0, 2.0, 1.0, key="loss")) == 3


def test_early_stopping_never_stops_at_the_first_epoch():
    # A NaN never improves, but epoch 0 cannot stop training; epoch 2 does.
    assert run([EarlyStopping(patience=0)], FakeModel(), losses(float("nan"), 1.0, 2.0, 0.5)) == 3


def test_early_stopping_min_delta_is_the_smallest_improvement():
    # 0.95 is below 1.0 but by less than 0.1: no improvement, so patience 1 stops.
    assert run([EarlyStopping(patience=1, min_delta=0.1)], FakeModel(), losses(1.0, 0.95, 0.85, 0.8)) == 2
    assert run([EarlyStopping(patience=1)], FakeModel(), losses(1.0, 0.95, 0.85, 0.8)) == 4
    # A negative min_delta means the same as its absolute value.
    assert run([EarlyStopping(patience=1, min_delta=-0.1)], FakeModel(), losses(1.0, 0.95, 0.85, 0.8)) == 2
    # Maximised: 0.55 is above 0.5 by less than 0.1.
    accuracies = losses(0.5, 0.55, 0.7, key="accuracy")
    assert run([EarlyStopping(monitor="accuracy", patience=0, min_delta=0.1)], FakeModel(), accuracies) == 2
    assert run([EarlyStopping(monitor="accuracy", patience=0)], FakeModel(), accuracies) == 3


def test_early_stopping_baseline():
    # Nothing beats the baseline 0.5: the patience count is never reset, so training
    # stops at the first epoch without improvement once 2 epochs are counted.
    stop = EarlyStopping(patience=2, baseline=0.5)
    assert run([stop], FakeModel(), losses(0.9, 0.95, 0.97, 0.1)) == 2
    # Epoch 1 beats the baseline and resets the count; epochs 2 and 3 do not improve.
    stop = EarlyStopping(patience=2, baseline=0.5)
    assert run([stop], FakeModel(), losses(0.6, 0.4, 0.45, 0.46, 0.47)) == 4
    assert stop.stopped_epoch == 3


def test_early_stopping_start_from_epoch_skips_warm_up_epochs():
    values = losses(5.0, 6.0, 7.0, 8.0, 7.5)
    assert run([EarlyStopping(patience=0)], FakeModel(), values) == 2
    # Epochs 0 and 1 are not monitored: epoch 2 is the first value, epoch 3 is worse.
    stop = EarlyStopping(patience=0, start_from_epoch=2)
    assert run([stop], FakeModel(), values) == 4 and stop.stopped_epoch == 3


def test_early_stopping_auto_mode_maximises_accuracy_like_names():
    rising = [0.5, 0.6, 0.6, 0.7]
    for name in ["val_accuracy", "acc", "val_auc", "precision", "val_top-5-accuracy", "f1_score"]:
        assert run([EarlyStopping(monitor=name, patience=0)], FakeModel(), losses(*rising, key=name)) == 3, name
    assert run([EarlyStopping(monitor="val_mse", patience=0)], FakeModel(), losses(*rising, key="val_mse")) == 2
    # A metric declaring its direction decides for a name that does not say.
    model = FakeModel(metrics=[FakeMetric("score", "up")])
    assert run([EarlyStopping(monitor="val_score", patience=0)], model, losses(*rising, key="val_score")) == 3
    for mode, epochs in [("max", 3), ("min", 2)]:
        stop = EarlyStopping(monitor="val_score", mode=mode, patience=0)
        assert run([stop], FakeModel(), losses(*rising, key="val_score")) == epochs


def test_early_stopping_rejects_unknown_direction_and_mode():
    with pytest.raises(ValueError, match="monitor='val_score'.*mode='max'"):
        run([EarlyStopping(monitor="val_score")], FakeModel(), losses(1.0, key="val_score"))
    with pytest.raises(ValueError, match="`mode` must be"):
        EarlyStopping(mode="maximum")


def test_early_stopping_restores_the_best_weights():
    # Best value at epoch 1; stops after epoch 3; weights go back to epoch 1's.
    model = FakeModel()
    stop = EarlyStopping(patience=2, restore_best_weights=True)
    run([stop], model, losses(1.0, 0.9, 0.95, 0.91, 0.5))
    assert stop.best_epoch == 1 and weights_of_epoch(model) == 1
    # Also when training runs to the end without stopping.
    model = FakeModel()
    run([EarlyStopping(patience=5, restore_best_weights=True)], model, losses(1.0, 0.5, 0.7, 0.8))
    assert not model.stop_training and weights_of_epoch(model) == 1


def test_early_stopping_restores_from_the_first_monitored_epoch_when_nothing_improves():
    # NaN never improves, so the first monitored epoch's weights are kept.
    model = FakeModel()
    stop = EarlyStopping(patience=2, restore_best_weights=True, start_from_epoch=1)
    assert run([stop], model, losses(0.1, float("nan"), float("nan"), float("nan"))) == 3
    assert weights_of_epoch(model) == 1


def test_early_stopping_warns_when_the_monitor_is_missing():
    model = FakeModel()
    with pytest.warns(UserWarning, match="`val_loss` which is not available. Available metrics are: loss"):
        assert run([EarlyStopping(patience=0)], model, [{"loss": 1.0}, {"loss": 2.0}]) == 2
    assert not model.stop_training


def test_early_stopping_verbose_messages(capsys):
    run([EarlyStopping(patience=1, restore_best_weights=True, verbose=1)], FakeModel(), losses(1.0, 0.5, 0.6, 0.7))
    assert capsys.readouterr().out == (
        "Epoch 3: early stopping\nRestoring model weights from the end of the best epoch: 2.\n"
    )


def test_early_stopping_can_be_reused():
    stop = EarlyStopping(patience=0)
    assert run([stop], FakeModel(), losses(1.0, 2.0)) == 2
    # A new fit starts from scratch: 3.0 is an improvement over nothing.
    assert run([stop], FakeModel(), losses(3.0, 2.5, 2.0)) == 3


def reference_stop_epoch(values, patience, min_delta, start):
    """The epoch where minimising training stops (None if it runs to the end):
    the first monitored epoch e > 0 that does not improve on the best by more than
    `min_delta`, when at least `patience` monitored epochs passed since the last
    improvement (or since monitoring started)."""
    best, last_improvement = None, start - 1
    for epoch, value in enumerate(values):
        if epoch < start:
            continue
        if best is None or value + min_delta < best:
            best, last_improvement = value, epoch
        elif epoch > 0 and epoch - last_improvement >= patience:
            return epoch
    return None


@given(
    st.lists(st.integers(-12, 12), min_size=1, max_size=12),
    st.integers(0, 4),
    st.sampled_from([0.0, 0.25, 1.0]),
    st.integers(0, 3),
    st.booleans(),
)
def test_early_stopping_matches_the_reference_rule(steps, patience, min_delta, start, maximise):
    # Multiples of 0.25 make every comparison exact.
    values = [s * 0.25 for s in steps]
    expected = reference_stop_epoch(values, patience, min_delta, start)
    monitor, shown = ("val_accuracy", [-v for v in values]) if maximise else ("val_loss", values)
    model = FakeModel()
    stop = EarlyStopping(monitor=monitor, patience=patience, min_delta=min_delta, start_from_epoch=start)
    ran = run([stop], model, losses(*shown, key=monitor))
    assert ran == (len(values) if expected is None else expected + 1)
    assert model.stop_training == (expected is not None)


# ----------------------------------------------------------------------------
# ModelCheckpoint


def test_model_checkpoint_checks_the_file_extension(tmp_path):
    for path in ["m.h5", "m.keras", "m.weights"]:
        with pytest.raises(ValueError, match=r"must end in `\.weights\.h5`.*filepath=" + re.escape(path)):
            ModelCheckpoint(path, save_weights_only=True)
    for path in ["m.weights", "m.txt", "m.keras.bak"]:
        with pytest.raises(ValueError, match=r"must end in `\.keras`"):
            ModelCheckpoint(path)
    ModelCheckpoint("m.keras")
    ModelCheckpoint("legacy.h5")
    ModelCheckpoint(tmp_path / "m.weights.h5", save_weights_only=True)


def test_model_checkpoint_rejects_bad_save_freq():
    for bad in ["batch", 0, -3, 1.5, True]:
        with pytest.raises(ValueError, match="`save_freq` must be 'epoch' or a positive integer"):
            ModelCheckpoint("m.keras", save_freq=bad)


def test_model_checkpoint_formats_the_path_with_epoch_and_logs(tmp_path):
    model = FakeModel()
    pattern = str(tmp_path / "ckpt" / "{epoch:02d}-{val_loss:.2f}.weights.h5")
    run([ModelCheckpoint(pattern, save_weights_only=True)], model, losses(0.5, 0.625, 0.25))
    names = ["01-0.50.weights.h5", "02-0.62.weights.h5", "03-0.25.weights.h5"]
    assert model.saved == [("save_weights", str(tmp_path / "ckpt" / n), True) for n in names]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == names


def test_model_checkpoint_saves_the_whole_model_with_save(tmp_path):
    model = FakeModel()
    run([ModelCheckpoint(str(tmp_path / "m.keras"))], model, losses(1.0, 2.0))
    assert [call[0] for call in model.saved] == ["save", "save"]
    assert (tmp_path / "m.keras").read_text() == "model"


def test_model_checkpoint_save_best_only(tmp_path, capsys):
    model = FakeModel()
    pattern = str(tmp_path / "{epoch}.keras")
    run([ModelCheckpoint(pattern, save_best_only=True, verbose=1)], model, losses(0.5, 0.6, 0.4, 0.45))
    assert [call[1] for call in model.saved] == [str(tmp_path / "1.keras"), str(tmp_path / "3.keras")]
    out = capsys.readouterr().out
    assert f"\nEpoch 1: val_loss improved from inf to 0.50000, saving model to {tmp_path / '1.keras'}\n" in out
    assert "\nEpoch 2: val_loss did not improve from 0.50000\n" in out
    assert "\nEpoch 3: val_loss improved from 0.50000 to 0.40000" in out
    # Maximised for accuracy; an initial threshold the first value must beat.
    model = FakeModel()
    checkpoint = ModelCheckpoint(pattern, monitor="val_accuracy", save_best_only=True, initial_value_threshold=0.55)
    run([checkpoint], model, losses(0.5, 0.6, 0.58, 0.7, key="val_accuracy"))
    assert [call[1] for call in model.saved] == [str(tmp_path / "2.keras"), str(tmp_path / "4.keras")]


def test_model_checkpoint_save_best_only_without_the_monitor_warns_and_saves(tmp_path):
    model = FakeModel()
    with pytest.warns(UserWarning, match="Can save best model only with val_loss available"):
        run([ModelCheckpoint(str(tmp_path / "m.keras"), save_best_only=True)], model, [{"loss": 1.0}])
    assert len(model.saved) == 1


def test_model_checkpoint_integer_save_freq_counts_batches(tmp_path):
    # Every 3 batches over 2 epochs of 4: after global batches 3 and 6, i.e. epoch 1
    # batch 3 and epoch 2 batch 2 (both counted from 1).
    model = FakeModel()
    pattern = str(tmp_path / "e{epoch}-b{batch}.weights.h5")
    checkpoint = ModelCheckpoint(pattern, save_weights_only=True, save_freq=3)
    run([checkpoint], model, losses(1.0, 1.0), batches=4)
    assert [call[1] for call in model.saved] == [str(tmp_path / "e1-b3.weights.h5"), str(tmp_path / "e2-b2.weights.h5")]


def test_model_checkpoint_missing_format_field_is_a_key_error(tmp_path):
    with pytest.raises(KeyError, match=r"no value for the field \{val_acc\} \(available: loss, val_loss, epoch\)"):
        run([ModelCheckpoint(str(tmp_path / "{val_acc}.keras"))], FakeModel(), losses(1.0))


def test_model_checkpoint_refuses_a_directory_path(tmp_path):
    (tmp_path / "dir.keras").mkdir()
    with pytest.raises(IsADirectoryError, match="existing directory"):
        run([ModelCheckpoint(str(tmp_path / "dir.keras"))], FakeModel(), losses(1.0))


# ----------------------------------------------------------------------------
# Learning rate callbacks


def test_learning_rate_scheduler_with_epoch_and_rate():
    # Halves the rate from epoch 2 on: 0.1, 0.1, 0.05, 0.025, 0.0125.
    model = FakeModel(learning_rate=0.1)
    history = History()
    scheduler = LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else lr * 0.5)
    run([scheduler, history], model, losses(1, 1, 1, 1, 1))
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.0125], rel=1e-12)
    assert model.optimizer.learning_rate == pytest.approx(0.0125, rel=1e-12)


def test_learning_rate_scheduler_with_epoch_only_and_verbose(capsys):
    def schedule(epoch):
        return 1.0 / (epoch + 1)

    model = FakeModel(learning_rate=7.0)
    history = History()
    run([LearningRateScheduler(schedule, verbose=1), history], model, losses(1, 1, 1, 1))
    assert history.history["learning_rate"] == pytest.approx([1.0, 0.5, 1 / 3, 0.25], rel=1e-12)
    assert "\nEpoch 2: LearningRateScheduler setting learning rate to 0.5.\n" in capsys.readouterr().out


def test_learning_rate_scheduler_reads_array_valued_rates():
    model = FakeModel(learning_rate=np.array(0.5, np.float32))
    run([LearningRateScheduler(lambda epoch, lr: lr * np.float32(0.5))], model, losses(1, 1))
    assert model.optimizer.learning_rate == 0.125


def test_learning_rate_scheduler_rejects_bad_schedules():
    with pytest.raises(TypeError, match="`schedule` must be callable"):
        LearningRateScheduler(0.1)
    with pytest.raises(ValueError, match="output of `schedule` should be a float. Got: 'fast'"):
        run([LearningRateScheduler(lambda epoch, lr: "fast")], FakeModel(), losses(1))


def test_reduce_lr_on_plateau_sequence():
    # Worked by hand (patience 2, cooldown 2, factor 0.5, min_lr 0.02, min_delta 0).
    # The cooldown counter goes down at the start of each epoch's check, and epochs
    # without improvement count only once it is 0:
    # - epoch 0 improves; epochs 1, 2 do not: at epoch 2 the rate 0.1 -> 0.05;
    # - epoch 3 is in cooldown; epochs 4, 5 count: at epoch 5, 0.05 -> 0.025;
    # - epoch 6 improves (0.5); epochs 7, 8 count: at 8, max(0.0125, 0.02) = 0.02.
    # Each epoch logs the rate it trained with.
    model = FakeModel(learning_rate=0.1)
    history = History()
    reduce = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=2, min_lr=0.02, min_delta=0.0)
    values = [1.0] * 6 + [0.5] * 4
    run([reduce, history], model, losses(*values))
    expected = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.02]
    assert history.history["learning_rate"] == pytest.approx(expected, rel=1e-12)
    assert model.optimizer.learning_rate == pytest.approx(0.02, rel=1e-12)


def test_reduce_lr_on_plateau_min_delta_and_max_mode(capsys):
    # 0.99995 is not 1e-4 (the default min_delta) better than 1.0: patience 1 reduces.
    model = FakeModel(learning_rate=0.5)
    run([ReduceLROnPlateau(patience=1, verbose=1)], model, losses(1.0, 0.99995))
    assert model.optimizer.learning_rate == pytest.approx(0.05, rel=1e-12)
    assert "\nEpoch 2: ReduceLROnPlateau reducing learning rate to 0.05" in capsys.readouterr().out
    # Rising accuracy improves in "auto" mode: no reduction.
    model = FakeModel(learning_rate=0.5)
    run([ReduceLROnPlateau(monitor="val_accuracy", patience=1)], model, losses(0.5, 0.6, 0.7, key="val_accuracy"))
    assert model.optimizer.learning_rate == 0.5


def test_reduce_lr_on_plateau_stops_at_min_lr(capsys):
    # A float32 rate equal to float32(min_lr) is at the bound: no reduction, no message.
    model = FakeModel(learning_rate=np.float32(0.001))
    run([ReduceLROnPlateau(factor=0.1, patience=1, min_lr=0.001, verbose=1)], model, losses(1.0, 1.0, 1.0))
    assert model.optimizer.learning_rate == np.float32(0.001)
    assert capsys.readouterr().out == ""


def test_reduce_lr_on_plateau_rejects_bad_arguments_and_warns_on_missing_monitor():
    with pytest.raises(ValueError, match=r"`factor` must be in \[0, 1\).*got 1.0"):
        ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="`mode` must be"):
        ReduceLROnPlateau(mode="lowest")
    logs = {"loss": 1.0}
    model = FakeModel(learning_rate=0.25)
    reduce = ReduceLROnPlateau()
    reduce.set_model(model)
    with pytest.warns(UserWarning, match="`val_loss` which is not available"):
        reduce.on_epoch_end(0, logs)
    assert logs["learning_rate"] == 0.25


# ----------------------------------------------------------------------------
# TerminateOnNaN, CSVLogger


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_terminate_on_nan_stops_training(bad, capsys):
    model = FakeModel()
    batch_logs = [{"loss": 1.0}, {"loss": 0.5}, {"loss": bad}]
    run([TerminateOnNaN()], model, losses(1.0), batches=3, batch_logs=batch_logs)
    assert model.stop_training
    assert capsys.readouterr().out == "Batch 2: Invalid loss, terminating training\n"


def test_terminate_on_nan_ignores_finite_losses_and_can_raise():
    model = FakeModel()
    run([TerminateOnNaN()], model, losses(1.0), batches=2, batch_logs=[{"loss": 1e30}, {"accuracy": np.nan}])
    assert not model.stop_training
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 1"):
        run([TerminateOnNaN(raise_error=True)], model, losses(1.0), 2, batch_logs=[{"loss": 1}, {"loss": np.inf}])


def read_rows(path, delimiter=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=delimiter))


def test_csv_logger_writes_sorted_columns_and_one_row_per_epoch(tmp_path):
    path = tmp_path / "log.csv"
    epoch_logs = [
        {"val_loss": 2.0, "loss": 1.5, "accuracy": 0.25},
        {"val_loss": 1.0, "loss": 0.75, "accuracy": 0.5},
        {"loss": 0.5, "accuracy": 0.75, "extra": 9.0},
    ]
    run([CSVLogger(path)], FakeModel(), epoch_logs)
    assert read_rows(path) == [
        ["epoch", "accuracy", "loss", "val_loss"],
        ["0", "0.25", "1.5", "2.0"],
        ["1", "0.5", "0.75", "1.0"],
        ["2", "0.75", "0.5", "NA"],
    ]
    assert path.read_bytes().startswith(b"epoch,accuracy,loss,val_loss\r\n0,0.25,1.5,2.0\r\n")


def test_csv_logger_separator_arrays_and_expected_validation_columns(tmp_path):
    path = tmp_path / "log.tsv"
    model = FakeModel(metrics_names=["loss", "val_loss"])
    run([CSVLogger(path, separator="\t")], model, [{"loss": 1.0, "per_class": np.array([0.5, 0.25])}])
    assert read_rows(path, "\t") == [["epoch", "loss", "per_class", "val_loss"], ["0", "1.0", "[0.5, 0.25]", "NA"]]


def test_csv_logger_append_and_overwrite(tmp_path):
    path = tmp_path / "log.csv"
    run([CSVLogger(path)], FakeModel(), [{"loss": 1.0}])
    run([CSVLogger(path, append=True)], FakeModel(), [{"loss": 0.5}, {"loss": 0.25}])
    assert read_rows(path) == [["epoch", "loss"], ["0", "1.0"], ["0", "0.5"], ["1", "0.25"]]
    run([CSVLogger(path)], FakeModel(), [{"loss": 3.0}])
    assert read_rows(path) == [["epoch", "loss"], ["0", "3.0"]]
    # Appending to an empty file writes the header.
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    run([CSVLogger(empty, append=True)], FakeModel(), [{"loss": 2.0}])
    assert read_rows(empty) == [["epoch", "loss"], ["0", "2.0"]]


# ----------------------------------------------------------------------------
# Progress bar: formats


def test_step_time_eta_and_metric_formats():
    assert format_step_time(2.4, "step") == "2s/step"
    assert format_step_time(0, "step") == "0s/step"
    assert format_step_time(0.0153, "step") == "15ms/step"
    assert format_step_time(0.00085, "sample") == "850us/sample"
    assert [format_eta(s) for s in (42.7, 60, 187.5, 3600, 3723)] == ["42s", "60s", "3:07", "60:00", "1:02:03"]
    assert format_metric(0.123456) == "0.1235"
    assert format_metric(-0.5) == "-0.5000"
    assert format_metric(2.5e-5) == "2.5000e-05"
    assert format_metric(-2e-4) == "-2.0000e-04"
    assert format_metric(0.0) == "0.0000e+00"
    assert format_metric(1234.5678) == "1234.5678"
    assert format_metric(np.array([1.0, 2.0])) == "1.5000"


def test_progbar_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`target` must be None or a non-negative integer, got -1"):
        Progbar(-1)
    with pytest.raises(ValueError, match="`verbose` must be 0, 1 or 2, got 3"):
        Progbar(5, verbose=3)
    with pytest.raises(ValueError, match="`width` must be a positive integer"):
        Progbar(5, width=0)
    with pytest.raises(ValueError, match="not both"):
        Progbar(5, stateful_metrics=["a"], stateless_metrics=["b"])


# ----------------------------------------------------------------------------
# Progress bar: output of ProgbarLogger during fit


def fit_with_progbar(clock, verbose, epochs=2):
    """Two epochs of four batches: the first batch takes 1 s, the others 0.125 s.
    Batch losses 1, 0.5, 0.25, 0.25 (and accuracy 0.5); the epoch logs show the final
    values with a validation loss."""
    cbs = CallbackList([], add_progbar=True, model=FakeModel(), verbose=verbose, epochs=epochs, steps=4)
    cbs.on_train_begin()
    for epoch in range(epochs):
        clock.t = 100.0 * epoch
        cbs.on_epoch_begin(epoch)
        for batch, (dt, loss) in enumerate([(1.0, 1.0), (0.125, 0.5), (0.125, 0.25), (0.125, 0.25)]):
            cbs.on_train_batch_begin(batch)
            clock.t += dt
            cbs.on_train_batch_end(batch, {"loss": loss, "accuracy": 0.5})
        # Validation inside fit prints nothing.
        cbs.on_test_begin()
        cbs.on_test_batch_end(0, {"loss": 5.0})
        cbs.on_test_end({"loss": 5.0})
        # As the trainer passes them (as Keras): sorted names, then validation names.
        cbs.on_epoch_end(epoch, {"accuracy": 0.625, "loss": 0.3, "val_loss": 0.0005})
    cbs.on_train_end()


def test_progbar_logger_verbose_2_prints_one_line_per_epoch(clock, capsys):
    fit_with_progbar(clock, verbose=2)
    # Elapsed 1.375 s over 4 steps: "1s" and 343.75 ms -> "344ms/step".
    line = "4/4 - 1s - 344ms/step - accuracy: 0.6250 - loss: 0.3000 - val_loss: 5.0000e-04\n"
    assert capsys.readouterr().out == "Epoch 1/2\n" + line + "Epoch 2/2\n" + line


def test_progbar_logger_verbose_1_without_a_terminal_prints_only_final_lines(clock, capsys):
    fit_with_progbar(clock, verbose=1)
    # The first step is left out of the time per step: 0.375 s / 3 steps.
    line = f"4/4 {BAR * 20} 1s 125ms/step - accuracy: 0.6250 - loss: 0.3000 - val_loss: 5.0000e-04\n"
    assert capsys.readouterr().out == "Epoch 1/2\n" + line + "Epoch 2/2\n" + line


def test_progbar_logger_single_epoch_has_no_epoch_line(clock, capsys):
    fit_with_progbar(clock, verbose="auto", epochs=1)
    out = capsys.readouterr().out
    assert out.startswith("4/4 ") and "Epoch" not in out and out.count("\n") == 1


def test_progbar_logger_verbose_1_on_a_terminal_redraws_in_place(clock):
    cbs = CallbackList([], add_progbar=True, model=FakeModel(), verbose=1, epochs=1, steps=4)
    with terminal() as screen:
        cbs.on_train_begin()
        cbs.on_epoch_begin(0)
        # Drawn at 1.0 (the first update), skipped at 1.01 (within 0.05 s), drawn at
        # 1.25 and 1.375, then the final line.
        for batch, (t, loss) in enumerate([(1.0, 1.0), (1.01, 0.5), (1.25, 0.25), (1.375, 0.25)]):
            clock.t = t
            cbs.on_train_batch_end(batch, {"loss": loss})
        cbs.on_epoch_end(0, {"loss": 0.3, "val_loss": 0.4})
    out = screen.getvalue()
    assert out.startswith("\r") and out.endswith("\n") and out.count("\n") == 1
    frames = out[1:-1].split("\r")
    # Values are averaged over the steps during the epoch (1.75 / 3, 2 / 4); the
    # per-step time leaves out the first step from step 2 on; ETA = time * steps left.
    assert [plain(f) for f in frames] == [
        f"1/4 {BAR * 20} 3s 1s/step - loss: 1.0000",
        f"3/4 {BAR * 20} 0s 125ms/step - loss: 0.5833",
        f"4/4 {BAR * 20} 0s 125ms/step - loss: 0.5000",
        f"4/4 {BAR * 20} 1s 125ms/step - loss: 0.3000 - val_loss: 0.4000",
    ]
    # The done part of the bar is green, the rest grey; counts and times are bold.
    assert f"\x1b[32m{BAR * 5}\x1b[0m\x1b[37m{BAR * 15}\x1b[0m" in frames[0]
    assert f"\x1b[32m{BAR * 15}\x1b[0m\x1b[37m{BAR * 5}\x1b[0m" in frames[1]
    assert f"\x1b[32m{BAR * 20}\x1b[0m" in frames[3] and "\x1b[37m" not in frames[3]
    assert frames[0].startswith("\x1b[1m1/4\x1b[0m ") and "\x1b[1m3s\x1b[0m" in frames[0]


def test_progbar_on_a_terminal_pads_a_shorter_line(clock):
    with terminal() as screen:
        bar = Progbar(4)
        clock.t = 100.0
        bar.update(1, [("loss", 1.0)])  # "1/4 <bar> 5:00 100s/step - loss: 1.0000"
        clock.t = 100.5
        bar.update(2, [("loss", 1.0)])  # "2/4 <bar> 1s 500ms/step - loss: 1.0000": one shorter
    first, second = screen.getvalue()[1:].split("\r")
    assert plain(first) == f"1/4 {BAR * 20} 5:00 100s/step - loss: 1.0000"
    assert plain(second) == f"2/4 {BAR * 20} 1s 500ms/step - loss: 1.0000 "


def test_progbar_rate_limit(clock):
    draws = []
    with terminal() as screen:
        bar = Progbar(10, interval=0.05)
        for t, step in [(0.0, 1), (0.01, 2), (0.04, 3), (0.06, 4), (0.09, 5), (0.2, 6), (0.21, 7)]:
            clock.t = t
            bar.update(step)
            draws.append(screen.getvalue().count("\r"))
        clock.t = 0.215
        bar.update(10)  # the final update is always drawn
    assert draws == [1, 1, 1, 2, 2, 3, 3]
    assert screen.getvalue().count("\r") == 4 and screen.getvalue().endswith("\n")


def test_progbar_without_terminal_prints_only_the_final_update(clock, capsys):
    bar = Progbar(3, interval=0)
    for step in (1, 2):
        clock.t = step
        bar.update(step, [("loss", 2.0)])
    assert capsys.readouterr().out == ""
    clock.t = 3
    bar.update(3, [("loss", 1.0)])
    assert capsys.readouterr().out == f"3/3 {BAR * 20} 3s 1s/step - loss: 1.0000\n"


def test_progbar_unknown_target_and_stateful_metrics(clock):
    with terminal() as screen:
        bar = Progbar(None, interval=0, stateful_metrics=["acc"])
        clock.t = 2.0
        bar.update(1, [("loss", 1.0), ("acc", 0.25)])
        clock.t = 3.0
        bar.update(2, [("loss", 0.0), ("acc", 0.75)])
    frames = [plain(f) for f in screen.getvalue()[1:].split("\r")]
    # "acc" is shown as given; "loss" averaged; unknown targets show elapsed time.
    assert frames == ["      1/Unknown 2s 2s/step - loss: 1.0000 - acc: 0.2500",
                      "      2/Unknown 3s 1s/step - loss: 0.5000 - acc: 0.7500"]


def test_progbar_logger_evaluate_and_predict(clock, capsys):
    cbs = CallbackList([], add_progbar=True, model=FakeModel(), verbose=2, steps=None)
    cbs.on_test_begin()
    for batch in range(3):
        clock.t += 0.25
        cbs.on_test_batch_end(batch, {"loss": 1.0})
    cbs.on_test_end({"loss": 0.75})
    # The unknown number of steps becomes the number seen.
    assert capsys.readouterr().out == "3/3 - 1s - 250ms/step - loss: 0.7500\n"
    cbs = CallbackList([], add_progbar=True, model=FakeModel(), verbose=2, steps=2)
    cbs.on_predict_begin()
    for batch in range(2):
        clock.t += 0.5
        cbs.on_predict_batch_end(batch, {"outputs": np.zeros((4, 2))})
    cbs.on_predict_end()
    assert capsys.readouterr().out == "2/2 - 1s - 500ms/step\n"


@given(st.lists(st.tuples(st.integers(-64, 64), st.integers(1, 3)), min_size=1, max_size=8))
def test_progbar_averages_values_over_the_steps_they_cover(updates):
    # Each (value, steps) pair advances the bar by `steps`; the displayed loss is the
    # step-weighted mean (values in 1/64ths, so the sums are exact).
    with terminal() as screen:
        bar = Progbar(None, interval=0)
        current = 0
        for value, steps in updates:
            current += steps
            bar.update(current, [("loss", value / 64)])
    mean = Fraction(sum(v * s for v, s in updates), 64 * sum(s for _, s in updates))
    shown = plain(screen.getvalue().split("\r")[-1]).rstrip().rsplit("loss: ", 1)[1]
    expected = f"{float(mean):.4f}" if abs(mean) > Fraction(1, 1000) else f"{float(mean):.4e}"
    assert shown == expected
