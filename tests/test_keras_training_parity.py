"""Training parity with real Keras 3 (reference data from
tests/reference/make_keras_reference.py): one and three steps of every optimizer,
and a whole `fit` History, from the same weights and data."""

import json
import os

import numpy as np
import pytest

import pyfuncnet as keras
from reference.models import BUILDERS

DATA = os.path.join(os.path.dirname(__file__), "reference", "data")

with open(os.path.join(DATA, "optimizers.json")) as f:
    OPTIMIZERS = json.load(f)
with open(os.path.join(DATA, "history.json")) as f:
    HISTORIES = json.load(f)


def numbered(arrays, prefix):
    keys = sorted((k for k in arrays.files if k.startswith(prefix)), key=lambda k: int(k.rsplit("_", 1)[1]))
    return [arrays[k] for k in keys]


@pytest.mark.parametrize("run", sorted(OPTIMIZERS["runs"]))
def test_optimizer_steps_match_keras(run):
    meta = OPTIMIZERS["runs"][run]
    arrays = np.load(os.path.join(DATA, "optimizers.npz"))
    initial = numbered(arrays, "initial/weight_")
    rows = np.asarray(OPTIMIZERS["kernel_rows"])
    keras.backend.clear_session()
    model = BUILDERS["mlp_functional"](keras)
    model.set_weights(initial)
    optimizer = getattr(keras.optimizers, meta["class"])(**meta["kwargs"])
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = []
    for steps in (1, 3):
        while len(losses) < steps:
            losses.append(model.train_on_batch(arrays["x"], arrays["y"]))
        after = model.get_weights()
        want = [arrays[f"{run}/after_{steps}/weight_0_rows"]] + [arrays[f"{run}/after_{steps}/weight_{i}"] for i in range(1, 6)]
        got = [after[0][rows]] + after[1:]
        start = [initial[0][rows]] + initial[1:]
        for g, w, s in zip(got, want, start):
            # Compare the updates: they are small next to the weights. (Adamax and
            # Nadam divide by |g| + 1e-7: where |g| is that small, float32 rounding
            # of the gradient moves the update by up to ~1e-6.)
            np.testing.assert_allclose(g.astype(np.float64) - s, w.astype(np.float64) - s, rtol=2e-4, atol=1e-6, err_msg=f"{run} after {steps}")
        update = after[0].astype(np.float64) - initial[0]
        assert update.sum() == pytest.approx(meta[f"after_{steps}"]["kernel_0_update_sum"], rel=1e-3, abs=1e-6)
    np.testing.assert_allclose(losses, meta["losses"], rtol=1e-5)
    assert optimizer.iterations == meta["iterations"]


def test_fit_history_matches_keras():
    ref = HISTORIES["mlp"]
    arrays = np.load(os.path.join(DATA, "history.npz"))
    weights = numbered(np.load(os.path.join(DATA, "models", "mlp_functional.npz")), "weight_")
    keras.backend.clear_session()
    model = BUILDERS["mlp_functional"](keras)
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.RMSprop(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(arrays["mlp/x"], arrays["mlp/y"], **ref["fit_kwargs"])
    assert list(history.history) == ref["history_keys"]
    assert history.epoch == ref["epoch"]
    assert history.params == ref["params"]
    for key, values in ref["history"].items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-4, err_msg=key)
    assert model.metrics_names == ref["metrics_names"]
    x, y = arrays["mlp/x"], arrays["mlp/y"]
    got = model.evaluate(x[192:], y[192:], batch_size=32, verbose=0, return_dict=True)
    assert got.keys() == ref["evaluate_validation"].keys()
    for key, value in ref["evaluate_validation"].items():
        assert got[key] == pytest.approx(value, rel=1e-4)
    np.testing.assert_allclose(model.predict(x[:8], verbose=0), arrays["mlp/predict_after_fit"], rtol=1e-4, atol=1e-5)


def test_multi_output_fit_history_matches_keras():
    ref = HISTORIES["multi_io"]
    arrays = np.load(os.path.join(DATA, "history.npz"))
    weights = numbered(np.load(os.path.join(DATA, "models", "multi_io.npz")), "weight_")
    keras.backend.clear_session()
    model = BUILDERS["multi_io"](keras)
    model.set_weights(weights)
    model.compile(**ref["compile"])
    x = {"title": arrays["multi_io/title"], "body": arrays["multi_io/body"]}
    y = {"priority": arrays["multi_io/priority"], "department": arrays["multi_io/department"]}
    history = model.fit(x, y, **ref["fit_kwargs"])
    assert list(history.history) == ref["history_keys"]
    for key, values in ref["history"].items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-4, err_msg=key)
    assert model.metrics_names == ref["metrics_names"]
    got = model.evaluate({k: v[48:] for k, v in x.items()}, {k: v[48:] for k, v in y.items()}, batch_size=16, verbose=0, return_dict=True)
    for key, value in ref["evaluate_validation"].items():
        assert got[key] == pytest.approx(value, rel=1e-4), key


def test_summary_after_training_counts_optimizer_params(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    arrays = np.load(os.path.join(DATA, "optimizers.npz"))
    keras.backend.clear_session()
    model = BUILDERS["mlp_functional"](keras)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(arrays["x"], arrays["y"])
    printed = []
    model.summary(print_fn=printed.append)
    assert printed == [OPTIMIZERS["runs"]["adam"]["summary_after_training"]]
