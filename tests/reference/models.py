"""Reference models, written once for both Keras 3 and pyfuncnet.

Each builder takes the Keras module as its only argument, so the same code builds the
model with real Keras (`import keras`, in `make_keras_reference.py`) and with pyfuncnet
(`import pyfuncnet as keras`, in the tests that compare against the saved data). Only the
public Keras 3 API that both share is used, and every layer and model gets an explicit
name so that summaries, weight paths and output names do not depend on name counters.

`BUILDERS` maps each model's name to its builder and `INPUT_SHAPES` gives, for each
model, the per-sample shape of every input (batch dimension left out) in input order.

Example:
    import pyfuncnet as keras
    from tests.reference.models import BUILDERS
    model = BUILDERS["mlp_functional"](keras)
"""


def mlp_functional(keras):
    """784-64-64-10 perceptron as a functional model (55,050 parameters).

    Args:
        keras: the Keras module (`keras` or `pyfuncnet`).

    Returns:
        A `keras.Model` named "mlp_functional" with input "digits" and output
        layer "predictions" (logits, no activation).

    Example:
        model = mlp_functional(keras)
        logits = model.predict(np.zeros((2, 784), "float32"))
    """
    inputs = keras.Input(shape=(784,), name="digits")
    x = keras.layers.Dense(64, activation="relu", name="dense_1")(inputs)
    x = keras.layers.Dense(64, activation="relu", name="dense_2")(x)
    outputs = keras.layers.Dense(10, name="predictions")(x)
    return keras.Model(inputs=inputs, outputs=outputs, name="mlp_functional")


def mlp_sequential(keras):
    """The perceptron of `mlp_functional` as a `Sequential` model started by an Input.

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Sequential` named "mlp_sequential" with the same layers, names and
        weight shapes as `mlp_functional`.

    Example:
        model = mlp_sequential(keras)
        assert model.count_params() == 55050
    """
    return keras.Sequential(
        [
            keras.Input(shape=(784,), name="digits"),
            keras.layers.Dense(64, activation="relu", name="dense_1"),
            keras.layers.Dense(64, activation="relu", name="dense_2"),
            keras.layers.Dense(10, name="predictions"),
        ],
        name="mlp_sequential",
    )


def multi_io(keras):
    """Two inputs, one tower each, concatenated, and two outputs.

    Inputs "title" (None, 32) and "body" (None, 64); outputs "priority" (Dense 1,
    sigmoid) and "department" (Dense 4, softmax).

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "multi_io" with inputs [title, body] and outputs
        [priority, department].

    Example:
        model = multi_io(keras)
        priority, department = model.predict([title_batch, body_batch])
    """
    title = keras.Input(shape=(32,), name="title")
    body = keras.Input(shape=(64,), name="body")
    title_features = keras.layers.Dense(16, activation="relu", name="title_tower")(title)
    body_features = keras.layers.Dense(16, activation="relu", name="body_tower")(body)
    merged = keras.layers.concatenate([title_features, body_features], name="merged")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(merged)
    priority = keras.layers.Dense(1, activation="sigmoid", name="priority")(hidden)
    department = keras.layers.Dense(4, activation="softmax", name="department")(hidden)
    return keras.Model(inputs=[title, body], outputs=[priority, department], name="multi_io")


def shared_layers(keras):
    """One Dense layer applied to two inputs; the two results merged two ways.

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "shared_layers" with inputs "left" and "right" (None, 8)
        and outputs `Add` (None, 4) and `Dot(axes=1)` (None, 1) of the shared
        layer's two results.

    Example:
        model = shared_layers(keras)
        total, similarity = model.predict([left_batch, right_batch])
    """
    left = keras.Input(shape=(8,), name="left")
    right = keras.Input(shape=(8,), name="right")
    shared = keras.layers.Dense(4, activation="tanh", name="shared_dense")
    left_code = shared(left)
    right_code = shared(right)
    total = keras.layers.Add(name="sum")([left_code, right_code])
    similarity = keras.layers.Dot(axes=1, name="similarity")([left_code, right_code])
    return keras.Model(inputs=[left, right], outputs=[total, similarity], name="shared_layers")


def nested(keras):
    """A functional "encoder" model called as a layer inside an outer model.

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "nested": input "features" (None, 16), the encoder
        (16 -> 8 relu -> 4), then a Dense(3, softmax) "classifier".

    Example:
        model = nested(keras)
        encoder = model.get_layer("encoder")
    """
    encoder_input = keras.Input(shape=(16,), name="encoder_input")
    hidden = keras.layers.Dense(8, activation="relu", name="encoder_hidden")(encoder_input)
    code = keras.layers.Dense(4, name="encoder_code")(hidden)
    encoder = keras.Model(inputs=encoder_input, outputs=code, name="encoder")

    features = keras.Input(shape=(16,), name="features")
    encoded = encoder(features)
    probabilities = keras.layers.Dense(3, activation="softmax", name="classifier")(encoded)
    return keras.Model(inputs=features, outputs=probabilities, name="nested")


def ensemble(keras):
    """Three small models on one input, their outputs averaged.

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "ensemble": input "features" (None, 10), members
        "member_1".."member_3" (each 10 -> 6 relu -> 3 softmax), combined with
        `keras.layers.average`.

    Example:
        model = ensemble(keras)
        probabilities = model.predict(feature_batch)
    """
    features = keras.Input(shape=(10,), name="features")
    member_outputs = []
    for index in (1, 2, 3):
        member_input = keras.Input(shape=(10,), name=f"member_{index}_input")
        hidden = keras.layers.Dense(6, activation="relu", name=f"member_{index}_hidden")(member_input)
        probabilities = keras.layers.Dense(3, activation="softmax", name=f"member_{index}_output")(hidden)
        member = keras.Model(inputs=member_input, outputs=probabilities, name=f"member_{index}")
        member_outputs.append(member(features))
    averaged = keras.layers.average(member_outputs, name="ensemble_average")
    return keras.Model(inputs=features, outputs=averaged, name="ensemble")


def merge_zoo(keras):
    """Every merge and reshaping layer in one graph over two (None, 6) inputs.

    Subtract, Multiply, Maximum and Minimum of the inputs are concatenated on axis 1
    (None, 24), reshaped to (4, 6), permuted to (6, 4) and flattened; the cosine
    similarity `Dot(axes=1, normalize=True)` is repeated 3 times and flattened; both
    are concatenated, passed through Dropout (identity at inference), a Lambda
    (`keras.ops.square`), a Dense(5) and a tanh Activation.

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "merge_zoo" with inputs "a", "b" and output "tanh".

    Example:
        model = merge_zoo(keras)
        y = model.predict([a_batch, b_batch])   # shape (batch, 5)
    """
    a = keras.Input(shape=(6,), name="a")
    b = keras.Input(shape=(6,), name="b")
    difference = keras.layers.Subtract(name="subtract")([a, b])
    product = keras.layers.Multiply(name="multiply")([a, b])
    larger = keras.layers.Maximum(name="maximum")([a, b])
    smaller = keras.layers.Minimum(name="minimum")([a, b])
    stacked = keras.layers.Concatenate(axis=1, name="stack")([difference, product, larger, smaller])
    grid = keras.layers.Reshape((4, 6), name="reshape")(stacked)
    transposed = keras.layers.Permute((2, 1), name="permute")(grid)
    flat_grid = keras.layers.Flatten(name="flatten_grid")(transposed)
    cosine = keras.layers.Dot(axes=1, normalize=True, name="cosine")([a, b])
    repeated = keras.layers.RepeatVector(3, name="repeat")(cosine)
    flat_repeated = keras.layers.Flatten(name="flatten_repeated")(repeated)
    joined = keras.layers.Concatenate(axis=1, name="join")([flat_grid, flat_repeated])
    dropped = keras.layers.Dropout(0.5, name="dropout")(joined)
    squared = keras.layers.Lambda(keras.ops.square, name="square")(dropped)
    projected = keras.layers.Dense(5, name="projection")(squared)
    outputs = keras.layers.Activation("tanh", name="tanh")(projected)
    return keras.Model(inputs=[a, b], outputs=outputs, name="merge_zoo")


def feature_extraction(keras):
    """The output of every layer of `mlp_functional` (its InputLayer included).

    Args:
        keras: the Keras module.

    Returns:
        `keras.Model(mlp.inputs, [layer.output for layer in mlp.layers])` named
        "feature_extraction"; in Keras 3 `mlp.layers` starts with the InputLayer,
        so the first output is the input itself.

    Example:
        model = feature_extraction(keras)
        features = model.predict(digit_batch)   # one array per layer
    """
    mlp = mlp_functional(keras)
    return keras.Model(
        inputs=mlp.inputs,
        outputs=[layer.output for layer in mlp.layers],
        name="feature_extraction",
    )


BUILDERS = {
    "mlp_functional": mlp_functional,
    "mlp_sequential": mlp_sequential,
    "multi_io": multi_io,
    "shared_layers": shared_layers,
    "nested": nested,
    "ensemble": ensemble,
    "merge_zoo": merge_zoo,
    "feature_extraction": feature_extraction,
}

INPUT_SHAPES = {
    "mlp_functional": [(784,)],
    "mlp_sequential": [(784,)],
    "multi_io": [(32,), (64,)],
    "shared_layers": [(8,), (8,)],
    "nested": [(16,)],
    "ensemble": [(10,)],
    "merge_zoo": [(6,), (6,)],
    "feature_extraction": [(784,)],
}
