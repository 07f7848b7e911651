"""Writes the Keras 3 reference data for the text models of the seed documents.

Runs only with real Keras 3 on the JAX backend, in its own venv (see README.md; pyfuncnet
is never imported here). From the repository root:

    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_seed_text_reference.py

It rewrites tests/reference/data/seed_text/ (README.md beside this file describes the
files): for each model of `MODELS`, `<name>.json` and `<name>.npz`, and `versions.json`.

The four models are the functional-API text models of /work/shared/seeds (000, 001,
002), written here as the seeds write them: question answering (two inputs, one
softmax output), the headline model (an auxiliary output and an auxiliary input), ticket
routing (three inputs, two outputs) and the shared-LSTM tweet model. Each is recorded
twice:

- at the seed's sizes (vocabularies of 10,000 words, ...): structure, parameter counts
  and `summary()` texts only;
- at small sizes (vocabularies of 64 words, short sequences; every layer width as in
  the seed): also reference weights, predictions, the seed's `compile` with the
  `evaluate` results it gives on a small batch, and a few epochs of `fit` from the
  reference weights on a small learnable task (`shuffle=False`, so the run is
  deterministic).

The builders, the sizes and the training tasks live in this file, at module level and
without importing Keras, so that `tests/test_seed_text_models.py` builds the same models
with pyfuncnet from the same code (`from reference.make_seed_text_reference import
MODELS`). Keras is imported only when the script runs.

Weights and inputs come from seeded NumPy generators and are rounded to multiples of
1/1024, so they are exact in float32; only Keras's outputs carry float32 rounding.

Example:
    KERAS_BACKEND=jax /work/kvenv/bin/python tests/reference/make_seed_text_reference.py
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "seed_text"

WEIGHT_SEED = 0
INPUT_SEED = 1
TRAIN_SEED = 2
HELD_OUT_SEED = 3
HELD_OUT_SAMPLES = 256
GRID = 1.0 / 1024
PREDICT_BATCH = 6
SUMMARY_VARIANTS = {
    "default": {},
    "line_length_120": {"line_length": 120},
    "show_trainable": {"show_trainable": True},
}


# ----------------------------------------------------------------------------
# The seeds' models. Each builder takes the Keras module (`keras` or `pyfuncnet`) and the
# sizes the seed sets as constants; the defaults are the seed's values. Layers are left
# unnamed where the seed leaves them unnamed: the names are Keras's automatic ones, the
# same in both libraries after `keras.backend.clear_session()`.


def question_answering(
    keras, text_vocabulary_size=10000, question_vocabulary_size=10000, answer_vocabulary_size=500
):
    """Seed 000: the two-input question-answering model, 1,000,052 parameters at the seed's sizes.

    text (None,) int32 -> Embedding(text_vocabulary_size, 64) -> LSTM(32);
    question (None,) int32 -> Embedding(question_vocabulary_size, 32) -> LSTM(16);
    concatenate -> Dense(answer_vocabulary_size, softmax).

    Args:
        keras: the Keras module.
        text_vocabulary_size, question_vocabulary_size, answer_vocabulary_size: the
            seed's constants (10000, 10000, 500).

    Returns:
        The (uncompiled) `Model`; `compile_question_answering` compiles it as the seed.

    Example:
        model = question_answering(keras)
        assert model.count_params() == 1000052
    """
    Model = keras.models.Model
    layers = keras.layers
    Input = keras.Input
    text_input = Input(shape=(None,), dtype="int32", name="text")
    embedded_text = layers.Embedding(text_vocabulary_size, 64)(text_input)
    encoded_text = layers.LSTM(32)(embedded_text)
    question_input = Input(shape=(None,), dtype="int32", name="question")
    embedded_question = layers.Embedding(question_vocabulary_size, 32)(question_input)
    encoded_question = layers.LSTM(16)(embedded_question)
    concatenated = layers.concatenate([encoded_text, encoded_question], axis=-1)
    answer = layers.Dense(answer_vocabulary_size, activation="softmax")(concatenated)
    model = Model([text_input, question_input], answer)
    return model


def compile_question_answering(keras, model):
    """The seed's compile: rmsprop, categorical cross-entropy, metrics=['acc']."""
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["acc"])


def headline(keras, input_dim=10000, length=100):
    """Seed 001: the headline model with an auxiliary output and an auxiliary input,
    5,200,610 parameters at the seed's sizes.

    main_input (length,) int32 -> Embedding(output_dim=512, input_dim, input_length) ->
    LSTM(32) -> aux_output Dense(1, sigmoid); concatenate with aux_input (5,) ->
    3 x Dense(64, relu) -> main_output Dense(1, sigmoid).

    Args:
        keras: the Keras module.
        input_dim: the vocabulary (10000 in the seed).
        length: the headline length (100 in the seed), also `input_length`, which
            Keras 3 accepts with a deprecation warning.

    Returns:
        The (uncompiled) `Model` with outputs [main_output, aux_output].

    Example:
        model = headline(keras)
        assert model.output_names == ["main_output", "aux_output"]
    """
    Input, Embedding, LSTM, Dense = keras.layers.Input, keras.layers.Embedding, keras.layers.LSTM, keras.layers.Dense
    Model = keras.models.Model
    main_input = Input(shape=(length,), dtype="int32", name="main_input")
    x = Embedding(output_dim=512, input_dim=input_dim, input_length=length)(main_input)
    lstm_out = LSTM(32)(x)
    auxiliary_output = Dense(1, activation="sigmoid", name="aux_output")(lstm_out)
    auxiliary_input = Input(shape=(5,), name="aux_input")
    x = keras.layers.concatenate([lstm_out, auxiliary_input])
    x = Dense(64, activation="relu")(x)
    x = Dense(64, activation="relu")(x)
    x = Dense(64, activation="relu")(x)
    main_output = Dense(1, activation="sigmoid", name="main_output")(x)
    model = Model(inputs=[main_input, auxiliary_input], outputs=[main_output, auxiliary_output])
    return model


def compile_headline_lists(keras, model):
    """The seed's first compile: one loss for every output, loss_weights as a list."""
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", loss_weights=[1.0, 0.2])


def compile_headline_dicts(keras, model):
    """The seed's second compile: losses and loss_weights as dicts by output name."""
    model.compile(
        optimizer="rmsprop",
        loss={"main_output": "binary_crossentropy", "aux_output": "binary_crossentropy"},
        loss_weights={"main_output": 1.0, "aux_output": 0.2},
    )


def ticket_routing(keras, num_words=10000, num_tags=12, num_departments=4):
    """Seed 002: the ticket-routing model, 1,392,097 parameters at the seed's sizes.

    title (None,) -> Embedding(num_words, 64) -> LSTM(128); body (None,) ->
    Embedding(num_words, 64) -> LSTM(32); tags (num_tags,); concatenate ->
    priority Dense(1) and department Dense(num_departments) (logits). The title and
    body inputs are float32, as in the seed (no dtype): the Embedding casts the ids.

    Args:
        keras: the Keras module.
        num_words, num_tags, num_departments: the seed's constants (10000, 12, 4).

    Returns:
        The (uncompiled) `Model` with outputs [priority, department].

    Example:
        model = ticket_routing(keras)
        assert model.count_params() == 1392097
    """
    layers = keras.layers
    title_input = keras.Input(shape=(None,), name="title")  # Variable-length sequence of ints
    body_input = keras.Input(shape=(None,), name="body")  # Variable-length sequence of ints
    tags_input = keras.Input(shape=(num_tags,), name="tags")  # Binary vectors of size `num_tags`
    # Embed each word in the title into a 64-dimensional vector
    title_features = layers.Embedding(num_words, 64)(title_input)
    # Embed each word in the text into a 64-dimensional vector
    body_features = layers.Embedding(num_words, 64)(body_input)
    # Reduce sequence of embedded words in the title into a single 128-dimensional vector
    title_features = layers.LSTM(128)(title_features)
    # Reduce sequence of embedded words in the body into a single 32-dimensional vector
    body_features = layers.LSTM(32)(body_features)
    # Merge all available features into a single large vector via concatenation
    x = layers.concatenate([title_features, body_features, tags_input])
    # Stick a logistic regression for priority prediction on top of the features
    priority_pred = layers.Dense(1, name="priority")(x)
    # Stick a department classifier on top of the features
    department_pred = layers.Dense(num_departments, name="department")(x)
    # Instantiate an end-to-end model predicting both priority and department
    model = keras.Model(
        inputs=[title_input, body_input, tags_input],
        outputs=[priority_pred, department_pred],
    )
    return model


def compile_ticket_routing_lists(keras, model):
    """The seed's first compile: losses and loss_weights as lists."""
    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss=[
            keras.losses.BinaryCrossentropy(from_logits=True),
            keras.losses.CategoricalCrossentropy(from_logits=True),
        ],
        loss_weights=[1.0, 0.2],
    )


def compile_ticket_routing_seed(keras, model):
    """The seed's second compile, exactly: losses as a dict by output name, loss_weights
    still a list (in output order)."""
    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss={
            "priority": keras.losses.BinaryCrossentropy(from_logits=True),
            "department": keras.losses.CategoricalCrossentropy(from_logits=True),
        },
        loss_weights=[1.0, 0.2],
    )


def shared_lstm(keras, features=128):
    """Seed 000: one LSTM(32) instance applied to two tweets, 20,673 parameters.

    Two unnamed inputs (None, features) -> the same LSTM(32) -> concatenate ->
    Dense(1, sigmoid).

    Args:
        keras: the Keras module.
        features: the per-step width (128 in the seed).

    Returns:
        The (uncompiled) `Model`; the seed calls `fit` without a `compile`, so
        `compile_shared_lstm` uses the Keras guide's compile for this example.

    Example:
        model = shared_lstm(keras)
        assert len(model.layers) == 5   # two InputLayers, lstm, concatenate, dense
    """
    layers = keras.layers
    Input = keras.Input
    Model = keras.models.Model
    # 将一个 LSTM 层实例化一次
    lstm = layers.LSTM(32)
    left_input = Input(shape=(None, features))
    left_output = lstm(left_input)
    right_input = Input(shape=(None, features))
    # 调用已有的层实例,那么就会重复使用它的权重
    right_output = lstm(right_input)
    merged = layers.concatenate([left_output, right_output], axis=-1)
    predictions = layers.Dense(1, activation="sigmoid")(merged)
    model = Model([left_input, right_input], predictions)
    return model


def compile_shared_lstm(keras, model):
    """The Keras guide's compile for the shared-LSTM example (the seed leaves it out)."""
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])


# ----------------------------------------------------------------------------
# Data. Every function takes a NumPy Generator and a number of samples and returns
# (inputs, targets), lists in the model's input and output order.

SMALL_VOCABULARY = 64


def qa_predict_data(rng, n):
    """Random token ids in [1, 64) (text 10, question 6) and random one-hot answers."""
    text = rng.integers(1, SMALL_VOCABULARY, size=(n, 10)).astype(np.int32)
    question = rng.integers(1, SMALL_VOCABULARY, size=(n, 6)).astype(np.int32)
    answers = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=n)]
    return [text, question], [answers]


def qa_train_data(rng, n):
    """The answer is the text's last word modulo 10 (one-hot); the question is noise."""
    (text, question), _ = qa_predict_data(rng, n)
    return [text, question], [np.eye(10, dtype=np.float32)[text[:, -1] % 10]]


def headline_predict_data(rng, n):
    """Headlines of 10 token ids in [1, 64), auxiliary inputs uniform in [-1, 1), random labels."""
    headlines = rng.integers(1, SMALL_VOCABULARY, size=(n, 10)).astype(np.int32)
    additional = on_grid(rng.uniform(-1.0, 1.0, size=(n, 5)))
    labels = rng.integers(0, 2, size=(n, 1)).astype(np.float32)
    return [headlines, additional], [labels, labels]


def headline_train_data(rng, n):
    """The label (for both outputs, as in the seed) is 1 when the headline's last word
    is in the upper half of the vocabulary."""
    (headlines, additional), _ = headline_predict_data(rng, n)
    labels = (headlines[:, -1:] >= SMALL_VOCABULARY // 2).astype(np.float32)
    return [headlines, additional], [labels, labels]


def ticket_predict_data(rng, n):
    """As the seed's dummy data: ids in [0, 64) (title 6, body 10), 0/1 tags, priorities
    uniform in [0, 1), departments random 0/1 in each of the 4 columns."""
    title = rng.integers(0, SMALL_VOCABULARY, size=(n, 6)).astype(np.int32)
    body = rng.integers(0, SMALL_VOCABULARY, size=(n, 10)).astype(np.int32)
    tags = rng.integers(0, 2, size=(n, 12)).astype(np.float32)
    priority = on_grid(rng.random(size=(n, 1)))
    department = rng.integers(0, 2, size=(n, 4)).astype(np.float32)
    return [title, body, tags], [priority, department]


def ticket_train_data(rng, n):
    """The priority is 1 when the title's last word is in the upper half of the
    vocabulary; the department (one-hot) is the body's last word modulo 4."""
    (title, body, tags), _ = ticket_predict_data(rng, n)
    priority = (title[:, -1:] >= SMALL_VOCABULARY // 2).astype(np.float32)
    department = np.eye(4, dtype=np.float32)[body[:, -1] % 4]
    return [title, body, tags], [priority, department]


TWEET_LENGTH = 6
TWEET_ALPHABET = 16


def tweet_predict_data(rng, n):
    """Two batches of 7 steps of 128 features uniform in [-1, 1), random 0/1 targets."""
    left = on_grid(rng.uniform(-1.0, 1.0, size=(n, 7, 128)))
    right = on_grid(rng.uniform(-1.0, 1.0, size=(n, 7, 128)))
    return [left, right], [rng.integers(0, 2, size=(n, 1)).astype(np.float32)]


def tweet_train_data(rng, n):
    """Tweets of 6 one-hot characters (ids in [0, 16) of 128); the target is 1 when the
    left tweet's last character comes after the right one's."""
    left_ids = rng.integers(0, TWEET_ALPHABET, size=(n, TWEET_LENGTH))
    right_ids = rng.integers(0, TWEET_ALPHABET, size=(n, TWEET_LENGTH))
    one_hot = np.eye(128, dtype=np.float32)
    target = (left_ids[:, -1:] > right_ids[:, -1:]).astype(np.float32)
    return [one_hot[left_ids], one_hot[right_ids]], [target]


# Per model: the builder, its arguments at the seed's sizes (the defaults) and at the
# small sizes, the compiles (the first is the one `fit` uses), the data makers, the
# training run (samples, batch size, epochs) and the input names that dicts use (None:
# the inputs are unnamed, so only lists are fed).
MODELS = {
    "question_answering": {
        "builder": question_answering,
        "small": {"text_vocabulary_size": 64, "question_vocabulary_size": 64, "answer_vocabulary_size": 10},
        "compiles": {"seed": compile_question_answering},
        "predict_data": qa_predict_data,
        "train_data": qa_train_data,
        "fit": {"samples": 640, "batch_size": 32, "epochs": 10},
        "input_names": ["text", "question"],
    },
    "headline": {
        "builder": headline,
        "small": {"input_dim": 64, "length": 10},
        "compiles": {"dicts": compile_headline_dicts, "lists": compile_headline_lists},
        "predict_data": headline_predict_data,
        "train_data": headline_train_data,
        "fit": {"samples": 320, "batch_size": 32, "epochs": 6},
        "input_names": ["main_input", "aux_input"],
    },
    "ticket_routing": {
        "builder": ticket_routing,
        "small": {"num_words": 64},
        "compiles": {"seed": compile_ticket_routing_seed, "lists": compile_ticket_routing_lists},
        "predict_data": ticket_predict_data,
        "train_data": ticket_train_data,
        "fit": {"samples": 640, "batch_size": 32, "epochs": 10},
        "input_names": ["title", "body", "tags"],
    },
    "shared_lstm": {
        "builder": shared_lstm,
        "small": {},
        "compiles": {"guide": compile_shared_lstm},
        "predict_data": tweet_predict_data,
        "train_data": tweet_train_data,
        "fit": {"samples": 1024, "batch_size": 32, "epochs": 15},
        "input_names": None,
    },
}


# ----------------------------------------------------------------------------
# Helpers (NumPy only)


def on_grid(values, step=GRID):
    """`values` rounded to multiples of `step`, as float32 (exact for such steps)."""
    return (np.round(np.asarray(values) / step) * step).astype(np.float32)


def draw_weight(rng, variable_name, shape):
    """One reference weight on the 1/1024 grid: kernels and recurrent kernels
    normal * sqrt(1 / rows), biases normal * 0.1, embeddings normal * 0.5."""
    shape = tuple(shape)
    if variable_name in ("kernel", "recurrent_kernel"):
        return on_grid(rng.normal(size=shape) * np.sqrt(1.0 / shape[0]))
    if variable_name == "bias":
        return on_grid(rng.normal(size=shape) * 0.1)
    if variable_name == "embeddings":
        return on_grid(rng.normal(size=shape) * 0.5)
    raise ValueError(f"no rule for weight {variable_name!r}")


def reference_weights(model):
    """Weights for `model` in `get_weights()` order, drawn from default_rng(WEIGHT_SEED)."""
    rng = np.random.default_rng(WEIGHT_SEED)
    return [draw_weight(rng, variable.name, variable.shape) for variable in model.weights]


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
    """Writes `content` as indented UTF-8 JSON to data/seed_text/`name`."""
    with open(DATA / name, "w", encoding="utf-8") as handle:
        json.dump(plain(content), handle, indent=1, ensure_ascii=False)
        handle.write("\n")


def write_npz(name, arrays):
    """Writes `arrays` (a dict of NumPy arrays) to the compressed archive data/seed_text/`name`."""
    np.savez_compressed(DATA / name, **arrays)


def as_list(value):
    """A model's output(s) as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


# ----------------------------------------------------------------------------
# What Keras reports (run only as a script)


def capture_summary(model, **kwargs):
    """The exact text `model.summary(print_fn=...)` hands to print_fn (one call)."""
    calls = []
    model.summary(print_fn=calls.append, **kwargs)
    assert len(calls) == 1, f"summary called print_fn {len(calls)} times"
    return calls[0]


def parameter_count(variables):
    """Number of scalars in `variables`."""
    return int(sum(int(np.prod(v.shape)) for v in variables))


def structure(model):
    """Names, shapes, parameter counts (total, trainable, per layer), weights and summaries."""
    return {
        "name": model.name,
        "class": type(model).__name__,
        "layer_names": [layer.name for layer in model.layers],
        "layer_classes": [type(layer).__name__ for layer in model.layers],
        "layer_params": [layer.count_params() for layer in model.layers],
        "input_tensor_names": [tensor.name for tensor in model.inputs],
        "input_shapes": [list(tensor.shape) for tensor in model.inputs],
        "input_dtypes": [str(tensor.dtype) for tensor in model.inputs],
        "output_shapes": [list(tensor.shape) for tensor in model.outputs],
        "output_names": model.output_names,
        "count_params": model.count_params(),
        "trainable_params": parameter_count(model.trainable_weights),
        "non_trainable_params": parameter_count(model.non_trainable_weights),
        "weights": [
            {"name": v.name, "path": v.path, "shape": list(v.shape), "trainable": v.trainable} for v in model.weights
        ],
        "summary": {variant: capture_summary(model, **kwargs) for variant, kwargs in SUMMARY_VARIANTS.items()},
    }


def build(keras, name, sizes):
    """Model `name` at `sizes` ("seed" or "small") in a fresh session; with "seed" also
    the warnings its construction gave."""
    import warnings

    spec = MODELS[name]
    keras.backend.clear_session()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = spec["builder"](keras, **(spec["small"] if sizes == "small" else {}))
    return model, sorted({str(w.message) for w in caught})


def feed(values):
    """Inputs or targets as a single array (one), else a list."""
    return values[0] if len(values) == 1 else list(values)


def reference_model(keras, name):
    """Everything recorded for model `name`: (meta, arrays)."""
    spec = MODELS[name]
    seed_model, seed_warnings = build(keras, name, "seed")
    meta = {"seed_sizes": {"warnings": seed_warnings, **structure(seed_model)}}
    del seed_model

    model, _ = build(keras, name, "small")
    meta["small_sizes"] = {"kwargs": spec["small"], **structure(model)}
    weights = reference_weights(model)
    model.set_weights(weights)
    x, y = spec["predict_data"](np.random.default_rng(INPUT_SEED), PREDICT_BATCH)
    predicted = as_list(model.predict(feed(x), verbose=0))
    called = [np.asarray(keras.ops.convert_to_numpy(c)) for c in as_list(model(feed(x)))]
    arrays = {f"weight_{i}": w for i, w in enumerate(weights)}
    arrays.update({f"input_{i}": a for i, a in enumerate(x)})
    arrays.update({f"target_{i}": a for i, a in enumerate(y)})
    arrays.update({f"predict_{i}": a for i, a in enumerate(predicted)})
    arrays.update({f"call_{i}": a for i, a in enumerate(called)})

    # The seed's compiles: evaluate on the predict batch with the reference weights, each
    # on a fresh model (a failed evaluate can leave a Keras model unusable).
    meta["compiles"] = {}
    for compile_name, compile_fn in spec["compiles"].items():
        model, _ = build(keras, name, "small")
        model.set_weights(weights)
        compile_fn(keras, model)
        record = {"metrics_names_after_compile": list(model.metrics_names)}
        try:
            record["evaluate"] = model.evaluate(
                feed(x), feed(y), batch_size=PREDICT_BATCH, verbose=0, return_dict=True
            )
            record["metrics_names"] = list(model.metrics_names)
        except ValueError as error:
            record["error"] = f"{type(error).__name__}: {error}"
        meta["compiles"][compile_name] = record

    # A few epochs of fit on the learnable task, from the reference weights, with the
    # first compile; then predict and the summary (which now lists the optimizer).
    first = next(iter(spec["compiles"]))
    train_x, train_y = spec["train_data"](np.random.default_rng(TRAIN_SEED), spec["fit"]["samples"])
    held_x, held_y = spec["train_data"](np.random.default_rng(HELD_OUT_SEED), HELD_OUT_SAMPLES)
    keras.backend.clear_session()
    model, _ = build(keras, name, "small")
    model.set_weights(weights)
    spec["compiles"][first](keras, model)
    fit_kwargs = {"batch_size": spec["fit"]["batch_size"], "epochs": spec["fit"]["epochs"], "shuffle": False}
    history = model.fit(feed(train_x), feed(train_y), verbose=0, **fit_kwargs)
    meta["fit"] = {
        "compile": first,
        "samples": spec["fit"]["samples"],
        "kwargs": fit_kwargs,
        "history": history.history,
        "evaluate_after": model.evaluate(
            feed(train_x), feed(train_y), batch_size=64, verbose=0, return_dict=True
        ),
        "evaluate_held_out": model.evaluate(
            feed(held_x), feed(held_y), batch_size=64, verbose=0, return_dict=True
        ),
        "metrics_names": list(model.metrics_names),
        "summary_after": capture_summary(model),
    }
    arrays.update({f"train_input_{i}": a for i, a in enumerate(train_x)})
    arrays.update({f"train_target_{i}": a for i, a in enumerate(train_y)})
    arrays.update({f"held_out_input_{i}": a for i, a in enumerate(held_x)})
    arrays.update({f"held_out_target_{i}": a for i, a in enumerate(held_y)})
    for i, a in enumerate(as_list(model.predict(feed(x), verbose=0))):
        arrays[f"predict_after_fit_{i}"] = a
    return meta, arrays


def generate():
    """Writes every file under data/seed_text/."""
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit(f"expected the JAX backend, got {keras.backend.backend()!r}")
    DATA.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        meta, arrays = reference_model(keras, name)
        write_json(f"{name}.json", meta)
        write_npz(f"{name}.npz", arrays)
        history = meta["fit"]["history"]
        print(
            f"{name}: {meta['seed_sizes']['count_params']:,} params at the seed's sizes, "
            f"{meta['small_sizes']['count_params']:,} small; "
            + "; ".join(f"{k} {v[0]:.4f} -> {v[-1]:.4f}" for k, v in sorted(history.items()))
        )
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
    print(f"wrote {len(MODELS)} models to {DATA} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    # Set before Keras (and rich, which draws the summary) are imported: the backend, and
    # a wide terminal, because Keras narrows the default summary to the terminal's width - 4.
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["COLUMNS"] = "200"
    generate()
