"""Writes the Keras 3 reference data that pyfuncnet's tests compare against.

This script runs only with real Keras 3 on the JAX backend, installed in its own venv
outside the repository (Keras is never a dependency of pyfuncnet, and pyfuncnet is not
imported here). From the repository root:

    python3 -m venv /work/kvenv
    /work/kvenv/bin/pip install keras==3.15.1 "jax[cpu]" h5py numpy
    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_keras_reference.py

It rewrites every file under tests/reference/data/; README.md beside this file lists
what each file holds. All weights and inputs are drawn from seeded NumPy generators and
rounded to multiples of 1/1024 (or coarser), so they are exact in float32 and the same
on any machine; only the Keras outputs carry float32 rounding.

Example:
    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_keras_reference.py
"""

import json
import os
import sys
from pathlib import Path

# Set before Keras (and rich, which draws the summary) are imported: the JAX backend,
# and a wide terminal, because Keras narrows the default summary to the terminal's
# width minus 4 and rich wraps at the terminal's width.
os.environ["KERAS_BACKEND"] = "jax"
os.environ["COLUMNS"] = "200"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from models import BUILDERS, INPUT_SHAPES, mlp_functional  # noqa: E402

DATA = HERE / "data"

WEIGHT_SEED = 0
INPUT_SEED = 1
GRID = 1.0 / 1024
PREDICT_BATCH = 6
SUMMARY_VARIANTS = {
    "default": {},
    "line_length_120": {"line_length": 120},
    "show_trainable": {"show_trainable": True},
    "expand_nested": {"expand_nested": True},
}

# Optimizer runs: (Keras class, constructor arguments). Adadelta gets learning_rate=1.0
# (its default 0.001 moves weights by ~1e-7, below what a float32 test can see). The
# clipped SGD runs show clipping plainly; Adam's step is nearly invariant to the scale of
# the gradient, so clipnorm barely changes Adam's weights.
OPTIMIZERS = {
    "sgd": ("SGD", {}),
    "sgd_nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "rmsprop": ("RMSprop", {}),
    "rmsprop_centered_momentum": ("RMSprop", {"centered": True, "momentum": 0.9}),
    "adam": ("Adam", {}),
    "adam_amsgrad": ("Adam", {"amsgrad": True}),
    "adamw": ("AdamW", {}),
    "adagrad": ("Adagrad", {}),
    "adadelta": ("Adadelta", {"learning_rate": 1.0}),
    "adamax": ("Adamax", {}),
    "nadam": ("Nadam", {}),
    "adam_clipnorm": ("Adam", {"clipnorm": 1.0}),
    "adam_clipvalue": ("Adam", {"clipvalue": 0.1}),
    "adam_global_clipnorm": ("Adam", {"global_clipnorm": 1.0}),
    "sgd_clipnorm": ("SGD", {"clipnorm": 1.0}),
    "sgd_clipvalue": ("SGD", {"clipvalue": 0.1}),
    "sgd_global_clipnorm": ("SGD", {"global_clipnorm": 1.0}),
}
OPTIMIZER_BATCH = 32
# The first kernel (784 x 64) is the bulk of the MLP: optimizer snapshots keep these
# rows of it (plus sums over all of it) to stay small; every other weight is kept whole.
KERNEL_ROWS = np.linspace(0, 783, 16).round().astype(np.int64)

# Loss cases: name -> (Keras class, constructor arguments, input set from loss_inputs).
LOSSES = {
    "mean_squared_error": ("MeanSquaredError", {}, "signed"),
    "mean_absolute_error": ("MeanAbsoluteError", {}, "signed"),
    "mean_absolute_percentage_error": ("MeanAbsolutePercentageError", {}, "positive"),
    "mean_squared_logarithmic_error": ("MeanSquaredLogarithmicError", {}, "positive"),
    "binary_crossentropy": ("BinaryCrossentropy", {}, "binary_probabilities"),
    "binary_crossentropy_logits": ("BinaryCrossentropy", {"from_logits": True}, "binary_logits"),
    "binary_crossentropy_smoothing": ("BinaryCrossentropy", {"label_smoothing": 0.2}, "binary_probabilities"),
    "binary_crossentropy_logits_smoothing": (
        "BinaryCrossentropy",
        {"from_logits": True, "label_smoothing": 0.2},
        "binary_logits",
    ),
    "categorical_crossentropy": ("CategoricalCrossentropy", {}, "categorical_probabilities"),
    "categorical_crossentropy_logits": ("CategoricalCrossentropy", {"from_logits": True}, "categorical_logits"),
    "categorical_crossentropy_smoothing": (
        "CategoricalCrossentropy",
        {"label_smoothing": 0.2},
        "categorical_probabilities",
    ),
    "categorical_crossentropy_logits_smoothing": (
        "CategoricalCrossentropy",
        {"from_logits": True, "label_smoothing": 0.2},
        "categorical_logits",
    ),
    "sparse_categorical_crossentropy": ("SparseCategoricalCrossentropy", {}, "sparse_probabilities"),
    "sparse_categorical_crossentropy_logits": (
        "SparseCategoricalCrossentropy",
        {"from_logits": True},
        "sparse_logits",
    ),
    "sparse_categorical_crossentropy_ignore_class": (
        "SparseCategoricalCrossentropy",
        {"from_logits": True, "ignore_class": 0},
        "sparse_logits",
    ),
    "huber": ("Huber", {}, "signed"),
    "huber_delta_0.5": ("Huber", {"delta": 0.5}, "signed"),
    "log_cosh": ("LogCosh", {}, "signed"),
    "kl_divergence": ("KLDivergence", {}, "distributions"),
    "poisson": ("Poisson", {}, "positive"),
    "hinge": ("Hinge", {}, "binary_logits"),
    "hinge_plus_minus_one": ("Hinge", {}, "signed_labels"),
    "squared_hinge": ("SquaredHinge", {}, "binary_logits"),
    "categorical_hinge": ("CategoricalHinge", {}, "categorical_logits"),
    "cosine_similarity": ("CosineSimilarity", {}, "signed"),
}
LOSS_REDUCTIONS = ("sum_over_batch_size", "sum", "none")
LOSS_SAMPLE_WEIGHT = [1.0, 0.5, 0.0, 2.0, 1.5, 0.25]

# Metric cases: name -> (Keras class, constructor arguments, input set from metric_inputs).
METRICS = {
    "accuracy": ("Accuracy", {}, "labels"),
    "binary_accuracy": ("BinaryAccuracy", {}, "binary"),
    "binary_accuracy_threshold_0.7": ("BinaryAccuracy", {"threshold": 0.7}, "binary"),
    "categorical_accuracy": ("CategoricalAccuracy", {}, "categorical"),
    "sparse_categorical_accuracy": ("SparseCategoricalAccuracy", {}, "sparse"),
    "top_k_categorical_accuracy": ("TopKCategoricalAccuracy", {"k": 2}, "categorical"),
    "sparse_top_k_categorical_accuracy": ("SparseTopKCategoricalAccuracy", {"k": 2}, "sparse"),
    "auc_roc": ("AUC", {}, "binary"),
    "auc_pr": ("AUC", {"curve": "PR"}, "binary"),
    "precision": ("Precision", {}, "binary"),
    "precision_threshold_0.7": ("Precision", {"thresholds": 0.7}, "binary"),
    "precision_top_k_2": ("Precision", {"top_k": 2}, "categorical"),
    "recall": ("Recall", {}, "binary"),
    "recall_thresholds_0.3_0.7": ("Recall", {"thresholds": [0.3, 0.7]}, "binary"),
}
METRIC_BATCH = 8
METRIC_SAMPLE_WEIGHT = [1.0, 0.0, 2.0, 0.5, 1.0, 1.5, 0.25, 1.0]


# ----------------------------------------------------------------------------
# Helpers


def on_grid(values, step=GRID):
    """`values` rounded to multiples of `step`, as float32 (exact for such steps)."""
    return (np.round(np.asarray(values) / step) * step).astype(np.float32)


def reference_weights(model, seed=WEIGHT_SEED):
    """Weights in `get_weights()` order: normal * 0.1 on the 1/1024 grid."""
    rng = np.random.default_rng(seed)
    return [on_grid(rng.normal(size=w.shape) * 0.1) for w in model.get_weights()]


def as_list(outputs):
    """A model's output(s) as a list of float32 NumPy arrays."""
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(o, dtype=np.float32) for o in outputs]
    return [np.asarray(outputs, dtype=np.float32)]


def plain(value):
    """`value` with NumPy scalars and arrays turned into JSON-ready Python values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "__array__"):  # NumPy and JAX arrays and scalars
        return np.asarray(value).tolist()
    return value


def capture_summary(model, **kwargs):
    """The exact text `model.summary(print_fn=...)` hands to print_fn (one call)."""
    calls = []
    model.summary(print_fn=calls.append, **kwargs)
    assert len(calls) == 1, f"summary called print_fn {len(calls)} times"
    return calls[0]


def parameter_count(variables):
    """Number of scalars in `variables`."""
    return int(sum(int(np.prod(v.shape)) for v in variables))


def write_json(name, content):
    """Writes `content` as indented UTF-8 JSON to data/`name`."""
    with open(DATA / name, "w", encoding="utf-8") as handle:
        json.dump(plain(content), handle, indent=1, ensure_ascii=False)
        handle.write("\n")


def write_npz(name, arrays):
    """Writes `arrays` (a dict of NumPy arrays) to the compressed archive data/`name`."""
    np.savez_compressed(DATA / name, **arrays)


# ----------------------------------------------------------------------------
# Models: weights, outputs, counts, names, summaries


def reference_model(name):
    """Builds model `name` with the reference weights and records what Keras reports."""
    keras.backend.clear_session()  # fresh name counters, as in a new program
    model = BUILDERS[name](keras)
    weights = reference_weights(model)
    model.set_weights(weights)

    rng = np.random.default_rng(INPUT_SEED)
    inputs = [on_grid(rng.uniform(-1.0, 1.0, size=(PREDICT_BATCH, *shape))) for shape in INPUT_SHAPES[name]]
    # feature_extraction was built from `mlp.inputs`, a list, so it takes a list.
    feed = inputs[0] if len(inputs) == 1 and name != "feature_extraction" else inputs
    predicted = as_list(model.predict(feed, verbose=0))
    called = as_list(model(feed))

    meta = {
        "name": model.name,
        "class": type(model).__name__,
        "layer_names": [layer.name for layer in model.layers],
        "layer_classes": [type(layer).__name__ for layer in model.layers],
        "input_tensor_names": [tensor.name for tensor in model.inputs],
        "input_shapes": [list(tensor.shape) for tensor in model.inputs],
        "output_shapes": [list(tensor.shape) for tensor in model.outputs],
        "output_names": getattr(model, "output_names", None),
        "has_input_names_attribute": hasattr(model, "input_names"),
        "count_params": model.count_params(),
        "trainable_params": parameter_count(model.trainable_weights),
        "non_trainable_params": parameter_count(model.non_trainable_weights),
        "weights": [
            {"name": v.name, "path": v.path, "shape": list(v.shape), "trainable": v.trainable} for v in model.weights
        ],
        "summary": {variant: capture_summary(model, **kwargs) for variant, kwargs in SUMMARY_VARIANTS.items()},
    }
    arrays = {}
    for index, array in enumerate(weights):
        arrays[f"weight_{index}"] = array
    for index, array in enumerate(inputs):
        arrays[f"input_{index}"] = array
    for index, array in enumerate(predicted):
        arrays[f"predict_{index}"] = array
    for index, array in enumerate(called):
        arrays[f"call_{index}"] = array
    return meta, arrays


# ----------------------------------------------------------------------------
# Optimizers: the MLP after one and after three train_on_batch calls


def optimizer_runs():
    """Trains a fresh MLP per optimizer on one fixed batch; snapshots after 1 and 3 steps."""
    model = mlp_functional(keras)
    initial = reference_weights(model)
    rng = np.random.default_rng(INPUT_SEED)
    x = on_grid(rng.uniform(0.0, 1.0, size=(OPTIMIZER_BATCH, 784)))
    y = rng.integers(0, 10, size=OPTIMIZER_BATCH).astype(np.int32)

    arrays = {"x": x, "y": y, "kernel_rows": KERNEL_ROWS}
    for index, array in enumerate(initial):
        arrays[f"initial/weight_{index}"] = array
    meta = {}
    for run, (class_name, kwargs) in OPTIMIZERS.items():
        keras.backend.clear_session()
        model = mlp_functional(keras)
        model.set_weights(initial)
        optimizer = getattr(keras.optimizers, class_name)(**kwargs)
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        losses = []
        record = {"class": class_name, "kwargs": kwargs, "config": optimizer.get_config()}
        for steps in (1, 3):
            while len(losses) < steps:
                losses.append(float(model.train_on_batch(x, y)))
            after = model.get_weights()
            update = after[0].astype(np.float64) - initial[0].astype(np.float64)
            record[f"after_{steps}"] = {
                "kernel_0_update_sum": float(update.sum()),
                "kernel_0_update_abs_sum": float(np.abs(update).sum()),
            }
            arrays[f"{run}/after_{steps}/weight_0_rows"] = after[0][KERNEL_ROWS]
            for index in range(1, len(after)):
                arrays[f"{run}/after_{steps}/weight_{index}"] = after[index]
        record["losses"] = losses
        record["iterations"] = int(optimizer.iterations.numpy())
        record["variables"] = [{"path": v.path, "shape": list(v.shape)} for v in optimizer.variables]
        if run == "adam":
            # A compiled model whose optimizer is built adds "Optimizer params" to the summary.
            record["summary_after_training"] = capture_summary(model)
        meta[run] = record
    return meta, arrays


# ----------------------------------------------------------------------------
# Losses


def loss_inputs():
    """The input sets the loss cases use: batch 6, 3 outputs or 5 classes."""
    rng = np.random.default_rng(INPUT_SEED)
    binary_labels = rng.integers(0, 2, size=(6, 3)).astype(np.float32)
    labels = np.array([0, 3, 1, 4, 2, 0], dtype=np.int32)
    one_hot = np.eye(5, dtype=np.float32)[labels]
    logits = on_grid(rng.uniform(-3.0, 3.0, size=(6, 5)))
    exp = np.exp(logits.astype(np.float64))
    probabilities = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    raw_targets = rng.uniform(0.05, 1.0, size=(6, 5))
    distributions = (raw_targets / raw_targets.sum(axis=1, keepdims=True)).astype(np.float32)
    binary_logits = on_grid(rng.uniform(-3.0, 3.0, size=(6, 3)))
    return {
        "signed": (on_grid(rng.uniform(-2, 2, (6, 3))), on_grid(rng.uniform(-2, 2, (6, 3)))),
        "positive": (on_grid(rng.uniform(0.1, 2, (6, 3))), on_grid(rng.uniform(0.1, 2, (6, 3)))),
        "binary_probabilities": (binary_labels, on_grid(rng.uniform(0.02, 0.98, (6, 3)))),
        "binary_logits": (binary_labels, binary_logits),
        "signed_labels": (binary_labels * 2 - 1, binary_logits),
        "categorical_probabilities": (one_hot, probabilities),
        "categorical_logits": (one_hot, logits),
        "sparse_probabilities": (labels, probabilities),
        "sparse_logits": (labels, logits),
        "distributions": (distributions, probabilities),
    }


def loss_values():
    """Every loss case with each reduction, without and with sample weights."""
    inputs = loss_inputs()
    sample_weight = np.array(LOSS_SAMPLE_WEIGHT, dtype=np.float32)
    cases = {}
    for case, (class_name, kwargs, input_set) in LOSSES.items():
        y_true, y_pred = inputs[input_set]
        values = {}
        for reduction in LOSS_REDUCTIONS:
            loss = getattr(keras.losses, class_name)(reduction=reduction, **kwargs)
            values[reduction] = loss(y_true, y_pred)
            values[f"{reduction}_weighted"] = loss(y_true, y_pred, sample_weight=sample_weight)
        cases[case] = {
            "class": class_name,
            "kwargs": kwargs,
            "inputs": input_set,
            "default_name": getattr(keras.losses, class_name)(**kwargs).name,
            "values": values,
        }
    return {
        "inputs": {name: {"y_true": pair[0], "y_pred": pair[1]} for name, pair in inputs.items()},
        "sample_weight": sample_weight,
        "cases": cases,
    }


# ----------------------------------------------------------------------------
# Metrics: result after one update_state and after a second (weighted) one


def metric_inputs():
    """Two batches of 8 per input set; the second is used with sample weights."""
    rng = np.random.default_rng(INPUT_SEED)
    batches = {"labels": [], "binary": [], "categorical": [], "sparse": []}
    for _ in range(2):
        labels = rng.integers(0, 5, size=METRIC_BATCH).astype(np.int32)
        guesses = np.where(rng.random(METRIC_BATCH) < 0.5, labels, rng.integers(0, 5, size=METRIC_BATCH))
        batches["labels"].append((labels.astype(np.float32), guesses.astype(np.float32)))
        binary = rng.integers(0, 2, size=(METRIC_BATCH, 3)).astype(np.float32)
        batches["binary"].append((binary, on_grid(rng.uniform(0, 1, (METRIC_BATCH, 3)))))
        exp = np.exp(rng.uniform(-2, 2, (METRIC_BATCH, 5)))
        probabilities = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        batches["categorical"].append((np.eye(5, dtype=np.float32)[labels], probabilities))
        batches["sparse"].append((labels, probabilities))
    return batches


def metric_values():
    """Every metric case: result() after an unweighted and then a weighted update_state."""
    batches = metric_inputs()
    sample_weight = np.array(METRIC_SAMPLE_WEIGHT, dtype=np.float32)
    cases = {}
    for case, (class_name, kwargs, input_set) in METRICS.items():
        keras.backend.clear_session()  # default names without counters ("auc", not "auc_1")
        metric = getattr(keras.metrics, class_name)(**kwargs)
        (y_true_1, y_pred_1), (y_true_2, y_pred_2) = batches[input_set]
        metric.update_state(y_true_1, y_pred_1)
        after_first = metric.result()
        metric.update_state(y_true_2, y_pred_2, sample_weight=sample_weight)
        cases[case] = {
            "class": class_name,
            "kwargs": kwargs,
            "inputs": input_set,
            "default_name": metric.name,
            "after_first": after_first,
            "after_second": metric.result(),
        }
    return {
        "inputs": {
            name: [{"y_true": y_true, "y_pred": y_pred} for y_true, y_pred in pairs] for name, pairs in batches.items()
        },
        "second_sample_weight": sample_weight,
        "cases": cases,
    }


# ----------------------------------------------------------------------------
# fit: History of the MLP (RMSprop, "accuracy") and of the two-output model


def fit_histories():
    """`fit` History, metrics_names and evaluate() of the MLP and of multi_io."""
    rng = np.random.default_rng(INPUT_SEED)
    # Sparse "images": most pixels 0, the rest multiples of 1/16; labels from a fixed
    # linear teacher, so accuracy can move.
    pixels = rng.integers(1, 16, size=(256, 784)) / 16.0
    x = np.where(rng.random((256, 784)) < 0.7, 0.0, pixels).astype(np.float32)
    teacher = rng.normal(size=(784, 10))
    y = np.argmax(x @ teacher, axis=1).astype(np.int32)

    keras.backend.clear_session()
    model = mlp_functional(keras)
    model.set_weights(reference_weights(model))
    model.compile(
        optimizer=keras.optimizers.RMSprop(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, validation_split=0.25, verbose=0)
    mlp = {
        "fit_kwargs": {"batch_size": 32, "epochs": 2, "shuffle": False, "validation_split": 0.25, "verbose": 0},
        "optimizer_config": model.optimizer.get_config(),
        "history_keys": list(history.history.keys()),
        "history": history.history,
        "epoch": history.epoch,
        "params": history.params,
        "metrics_names": model.metrics_names,
        "evaluate_validation": model.evaluate(x[192:], y[192:], batch_size=32, verbose=0, return_dict=True),
    }
    arrays = {"mlp/x": x, "mlp/y": y, "mlp/predict_after_fit": as_list(model.predict(x[:8], verbose=0))[0]}

    keras.backend.clear_session()
    model = BUILDERS["multi_io"](keras)
    model.set_weights(reference_weights(model))
    title = on_grid(rng.uniform(-1, 1, (64, 32)))
    body = on_grid(rng.uniform(-1, 1, (64, 64)))
    priority = rng.integers(0, 2, size=(64, 1)).astype(np.float32)
    department = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=64)]
    model.compile(
        optimizer="adam",
        loss={"priority": "binary_crossentropy", "department": "categorical_crossentropy"},
        loss_weights={"priority": 1.0, "department": 0.2},
        metrics={"priority": ["accuracy"], "department": ["accuracy"]},
    )
    history = model.fit(
        {"title": title, "body": body},
        {"priority": priority, "department": department},
        batch_size=16,
        epochs=2,
        shuffle=False,
        validation_split=0.25,
        verbose=0,
    )
    multi = {
        "compile": {
            "optimizer": "adam",
            "loss": {"priority": "binary_crossentropy", "department": "categorical_crossentropy"},
            "loss_weights": {"priority": 1.0, "department": 0.2},
            "metrics": {"priority": ["accuracy"], "department": ["accuracy"]},
        },
        "fit_kwargs": {"batch_size": 16, "epochs": 2, "shuffle": False, "validation_split": 0.25, "verbose": 0},
        "history_keys": list(history.history.keys()),
        "history": history.history,
        "metrics_names": model.metrics_names,
        "evaluate_validation": model.evaluate(
            {"title": title[48:], "body": body[48:]},
            {"priority": priority[48:], "department": department[48:]},
            batch_size=16,
            verbose=0,
            return_dict=True,
        ),
    }
    arrays.update(
        {
            "multi_io/title": title,
            "multi_io/body": body,
            "multi_io/priority": priority,
            "multi_io/department": department,
        }
    )
    return {"mlp": mlp, "multi_io": multi}, arrays


# ----------------------------------------------------------------------------


def main():
    """Writes every reference file under data/."""
    if keras.backend.backend() != "jax":
        raise SystemExit(f"expected the JAX backend, got {keras.backend.backend()!r}")
    (DATA / "models").mkdir(parents=True, exist_ok=True)

    for name in BUILDERS:
        meta, arrays = reference_model(name)
        write_json(f"models/{name}.json", meta)
        write_npz(f"models/{name}.npz", arrays)

    meta, arrays = optimizer_runs()
    write_json("optimizers.json", {"kernel_rows": KERNEL_ROWS, "runs": meta})
    write_npz("optimizers.npz", arrays)

    write_json("losses.json", loss_values())
    write_json("metrics.json", metric_values())

    meta, arrays = fit_histories()
    write_json("history.json", meta)
    write_npz("history.npz", arrays)

    write_json(
        "versions.json",
        {
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "jax": jax.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "COLUMNS": os.environ["COLUMNS"],
        },
    )
    total = sum(path.stat().st_size for path in DATA.rglob("*") if path.is_file())
    print(f"wrote {DATA} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
