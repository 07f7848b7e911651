"""Convolutional reference models, written once for both Keras 3 and pyfuncnet.

Like `models.py`: each builder takes the Keras module as its only argument, so the same
code builds the model with real Keras (in `make_cnn_reference.py`) and with pyfuncnet
(`import pyfuncnet as keras`, in `tests/test_keras_cnn_parity.py`). Only public Keras 3
API is used, and every layer and model has an explicit name. Where a model comes from
the seed documents (/work/shared/seeds), the names are the ones Keras gives the seed's
code in a fresh session (`conv2d`, `conv2d_1`, ...), so the summaries read as the
user would see them after `keras.backend.clear_session()`.

`BUILDERS` maps each model's name to its builder. `INPUTS` gives, per model and in
input order, the per-sample shape used for the stored predictions and the kind of
data: `("float", low, high)` for uniform floats or `("int", vocabulary)` for token ids.

Example:
    import pyfuncnet as keras
    from reference.cnn_models import BUILDERS
    model = BUILDERS["toy_resnet"](keras)
"""


def _mnist_encoder_layers(keras, image):
    """The encoder stack of the functional API guide on `image` (None, 28, 28, 1)."""
    layers = keras.layers
    x = layers.Conv2D(16, 3, activation="relu", name="conv2d")(image)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2d_1")(x)
    x = layers.MaxPooling2D(3, name="max_pooling2d")(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2d_2")(x)
    x = layers.Conv2D(16, 3, activation="relu", name="conv2d_3")(x)
    return layers.GlobalMaxPooling2D(name="global_max_pooling2d")(x)


def _mnist_decoder_layers(keras, code):
    """The decoder stack of the functional API guide on `code` (None, 16)."""
    layers = keras.layers
    x = layers.Reshape((4, 4, 1), name="reshape")(code)
    x = layers.Conv2DTranspose(16, 3, activation="relu", name="conv2d_transpose")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu", name="conv2d_transpose_1")(x)
    x = layers.UpSampling2D(3, name="up_sampling2d")(x)
    x = layers.Conv2DTranspose(16, 3, activation="relu", name="conv2d_transpose_2")(x)
    return layers.Conv2DTranspose(1, 3, activation="relu", name="conv2d_transpose_3")(x)


def encoder(keras):
    """The MNIST encoder of the functional API guide (seed 002), 18,672 parameters.

    Input "img" (28, 28, 1) -> Conv2D(16, 3, relu) -> Conv2D(32, 3, relu) ->
    MaxPooling2D(3) -> Conv2D(32, 3, relu) -> Conv2D(16, 3, relu) -> GlobalMaxPooling2D.

    Args:
        keras: the Keras module (`keras` or `pyfuncnet`).

    Returns:
        A `keras.Model` named "encoder" with output (None, 16).

    Example:
        model = encoder(keras)
        codes = model.predict(images)   # (batch, 16)
    """
    image = keras.Input(shape=(28, 28, 1), name="img")
    return keras.Model(image, _mnist_encoder_layers(keras, image), name="encoder")


def autoencoder(keras):
    """The guide's first autoencoder: encoder and decoder in one graph, 28,241 parameters.

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "autoencoder": `encoder`'s layers, then Reshape((4, 4, 1)),
        Conv2DTranspose(16, 3, relu), Conv2DTranspose(32, 3, relu), UpSampling2D(3),
        Conv2DTranspose(16, 3, relu), Conv2DTranspose(1, 3, relu); output (None, 28, 28, 1).

    Example:
        model = autoencoder(keras)
        assert model.count_params() == 28241
    """
    image = keras.Input(shape=(28, 28, 1), name="img")
    code = _mnist_encoder_layers(keras, image)
    return keras.Model(image, _mnist_decoder_layers(keras, code), name="autoencoder")


def decoder(keras):
    """The guide's stand-alone decoder model (second example), 9,569 parameters.

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "decoder" from input "encoded_img" (None, 16) to
        (None, 28, 28, 1).

    Example:
        model = decoder(keras)
        images = model.predict(codes)
    """
    code = keras.Input(shape=(16,), name="encoded_img")
    return keras.Model(code, _mnist_decoder_layers(keras, code), name="decoder")


def autoencoder_nested(keras):
    """The guide's second autoencoder: an encoder model and a decoder model called as layers.

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "autoencoder": input "img" (28, 28, 1), then the
        `encoder` model (input "original_img", 18,672 parameters) and the `decoder`
        model (input "encoded_img", 9,569 parameters); 28,241 parameters in all.

    Example:
        model = autoencoder_nested(keras)
        model.summary(expand_nested=True)
    """
    original = keras.Input(shape=(28, 28, 1), name="original_img")
    encoder_model = keras.Model(original, _mnist_encoder_layers(keras, original), name="encoder")
    decoder_model = decoder(keras)
    image = keras.Input(shape=(28, 28, 1), name="img")
    decoded = decoder_model(encoder_model(image))
    return keras.Model(image, decoded, name="autoencoder")


def toy_resnet(keras):
    """The guide's toy ResNet for CIFAR-10 (seed 002), 223,242 parameters.

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "toy_resnet": input "img" (32, 32, 3), two valid 3x3
        convolutions, MaxPooling2D(3), two residual blocks of two 'same' 3x3
        convolutions joined by `layers.add`, a valid 3x3 convolution,
        GlobalAveragePooling2D, Dense(256, relu), Dropout(0.5), Dense(10) (logits).

    Example:
        model = toy_resnet(keras)
        logits = model.predict(images)   # (batch, 10)
    """
    layers = keras.layers
    inputs = keras.Input(shape=(32, 32, 3), name="img")
    x = layers.Conv2D(32, 3, activation="relu", name="conv2d")(inputs)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2d_1")(x)
    block_1_output = layers.MaxPooling2D(3, name="max_pooling2d")(x)

    x = layers.Conv2D(64, 3, activation="relu", padding="same", name="conv2d_2")(block_1_output)
    x = layers.Conv2D(64, 3, activation="relu", padding="same", name="conv2d_3")(x)
    block_2_output = layers.add([x, block_1_output], name="add")

    x = layers.Conv2D(64, 3, activation="relu", padding="same", name="conv2d_4")(block_2_output)
    x = layers.Conv2D(64, 3, activation="relu", padding="same", name="conv2d_5")(x)
    block_3_output = layers.add([x, block_2_output], name="add_1")

    x = layers.Conv2D(64, 3, activation="relu", name="conv2d_6")(block_3_output)
    x = layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    x = layers.Dense(256, activation="relu", name="dense")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    outputs = layers.Dense(10, name="dense_1")(x)
    return keras.Model(inputs, outputs, name="toy_resnet")


def inception_module(keras):
    """The Inception module of seed 004, on a small input and with fewer filters.

    Three towers on one input: 1x1 -> 3x3, 1x1 -> 5x5, and 3x3 max pooling (stride 1,
    'same') -> 1x1; every convolution 'same' with relu and 8 filters; the towers are
    concatenated on the channel axis. (Seed 004 concatenates on `axis=1`, a leftover
    from channels-first Keras 1/2 code; with channels_last images that axis is the
    height, so this model uses the channel axis, -1.)

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "inception_module" from "input_img" (8, 8, 4) to
        (None, 8, 8, 24).

    Example:
        model = inception_module(keras)
        features = model.predict(images)
    """
    layers = keras.layers
    image = keras.Input(shape=(8, 8, 4), name="input_img")
    tower_1 = layers.Conv2D(8, (1, 1), padding="same", activation="relu", name="tower_1_1x1")(image)
    tower_1 = layers.Conv2D(8, (3, 3), padding="same", activation="relu", name="tower_1_3x3")(tower_1)
    tower_2 = layers.Conv2D(8, (1, 1), padding="same", activation="relu", name="tower_2_1x1")(image)
    tower_2 = layers.Conv2D(8, (5, 5), padding="same", activation="relu", name="tower_2_5x5")(tower_2)
    tower_3 = layers.MaxPooling2D((3, 3), strides=(1, 1), padding="same", name="tower_3_pool")(image)
    tower_3 = layers.Conv2D(8, (1, 1), padding="same", activation="relu", name="tower_3_1x1")(tower_3)
    output = layers.concatenate([tower_1, tower_2, tower_3], axis=-1, name="towers")
    return keras.Model(image, output, name="inception_module")


def residual_projection(keras):
    """A residual block whose shortcut is a strided 1x1 convolution (seed 000).

    y = Conv2D(16, 3, relu, same) twice, then MaxPooling2D(2, strides=2); the shortcut
    is Conv2D(16, 1, strides=2, padding='same') of the input; the two are added.
    The input side is even (8): with an odd side the pooled branch (floor) and the
    strided 'same' shortcut (ceil) would differ in size.

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "residual_projection" from "x" (8, 8, 4) to (None, 4, 4, 16).

    Example:
        model = residual_projection(keras)
        y = model.predict(x)
    """
    layers = keras.layers
    x = keras.Input(shape=(8, 8, 4), name="x")
    y = layers.Conv2D(16, 3, activation="relu", padding="same", name="conv_a")(x)
    y = layers.Conv2D(16, 3, activation="relu", padding="same", name="conv_b")(y)
    y = layers.MaxPooling2D(2, strides=2, name="pool")(y)
    residual = layers.Conv2D(16, 1, strides=2, padding="same", name="projection")(x)
    y = layers.add([y, residual], name="residual_add")
    return keras.Model(x, y, name="residual_projection")


def shared_vision(keras):
    """The "shared vision model" of seed 004: one convolutional model on two digits.

    The vision model (input (27, 27, 1): Conv2D(64, 3), Conv2D(64, 3), MaxPooling2D(2),
    Flatten -> 7,744 features) is applied to "digit_a" and "digit_b"; the two feature
    vectors are concatenated and a Dense(1, sigmoid) says whether the digits match.
    53,057 parameters.

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "classification_model" with inputs [digit_a, digit_b].

    Example:
        model = shared_vision(keras)
        same = model.predict([digits_a, digits_b])   # (batch, 1)
    """
    layers = keras.layers
    digit_input = keras.Input(shape=(27, 27, 1), name="digit_input")
    x = layers.Conv2D(64, (3, 3), name="vision_conv_1")(digit_input)
    x = layers.Conv2D(64, (3, 3), name="vision_conv_2")(x)
    x = layers.MaxPooling2D((2, 2), name="vision_pool")(x)
    out = layers.Flatten(name="vision_flatten")(x)
    vision_model = keras.Model(digit_input, out, name="vision_model")

    digit_a = keras.Input(shape=(27, 27, 1), name="digit_a")
    digit_b = keras.Input(shape=(27, 27, 1), name="digit_b")
    out_a = vision_model(digit_a)
    out_b = vision_model(digit_b)
    concatenated = layers.concatenate([out_a, out_b], name="concatenated")
    out = layers.Dense(1, activation="sigmoid", name="same_digit")(concatenated)
    return keras.Model([digit_a, digit_b], out, name="classification_model")


def text_convnet(keras):
    """A 1-D convnet over embedded posts with three heads (after seed 000, made small).

    Input "posts" (None,) int32 (any length >= 13) -> Embedding(500, 16) ->
    Conv1D(32, 5, relu) -> MaxPooling1D(5) -> Conv1D(32, 5, relu) ->
    GlobalMaxPooling1D -> "age" Dense(1), "income" Dense(10, softmax),
    "gender" Dense(1, sigmoid).

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "text_convnet" with outputs [age, income, gender].

    Example:
        model = text_convnet(keras)
        age, income, gender = model.predict(token_ids)
    """
    layers = keras.layers
    posts = keras.Input(shape=(None,), dtype="int32", name="posts")
    x = layers.Embedding(500, 16, name="embedding")(posts)
    x = layers.Conv1D(32, 5, activation="relu", name="conv1d")(x)
    x = layers.MaxPooling1D(5, name="max_pooling1d")(x)
    x = layers.Conv1D(32, 5, activation="relu", name="conv1d_1")(x)
    x = layers.GlobalMaxPooling1D(name="global_max_pooling1d")(x)
    age = layers.Dense(1, name="age")(x)
    income = layers.Dense(10, activation="softmax", name="income")(x)
    gender = layers.Dense(1, activation="sigmoid", name="gender")(x)
    return keras.Model(posts, [age, income, gender], name="text_convnet")


def train_step_convnet(keras):
    """The small classifier of the one-step training check.

    Input "image" (12, 12, 3) -> Conv2D(8, 3, same, relu) -> MaxPooling2D(2) ->
    Conv2D(16, 3, strides=2, valid) -> BatchNormalization(momentum=0.9) ->
    GlobalAveragePooling2D -> Dense(5, softmax).

    Args:
        keras: the Keras module.

    Returns:
        A `keras.Model` named "train_step_convnet" with output (None, 5).

    Example:
        model = train_step_convnet(keras)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
                      loss="categorical_crossentropy")
    """
    layers = keras.layers
    image = keras.Input(shape=(12, 12, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_same")(image)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="valid", name="conv_strided")(x)
    x = layers.BatchNormalization(momentum=0.9, name="batch_norm")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, activation="softmax", name="classifier")(x)
    return keras.Model(image, outputs, name="train_step_convnet")


BUILDERS = {
    "encoder": encoder,
    "autoencoder": autoencoder,
    "decoder": decoder,
    "autoencoder_nested": autoencoder_nested,
    "toy_resnet": toy_resnet,
    "inception_module": inception_module,
    "residual_projection": residual_projection,
    "shared_vision": shared_vision,
    "text_convnet": text_convnet,
    "train_step_convnet": train_step_convnet,
}

INPUTS = {
    "encoder": [((28, 28, 1), ("float", 0.0, 1.0))],
    "autoencoder": [((28, 28, 1), ("float", 0.0, 1.0))],
    "decoder": [((16,), ("float", 0.0, 1.0))],
    "autoencoder_nested": [((28, 28, 1), ("float", 0.0, 1.0))],
    "toy_resnet": [((32, 32, 3), ("float", 0.0, 1.0))],
    "inception_module": [((8, 8, 4), ("float", -1.0, 1.0))],
    "residual_projection": [((8, 8, 4), ("float", -1.0, 1.0))],
    "shared_vision": [((27, 27, 1), ("float", 0.0, 1.0)), ((27, 27, 1), ("float", 0.0, 1.0))],
    "text_convnet": [((40,), ("int", 500))],
    "train_step_convnet": [((12, 12, 3), ("float", -1.0, 1.0))],
}
