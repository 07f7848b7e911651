"""Train a Keras functional model on scikit-learn's bundled handwritten digits.

The digits (1,797 images of 8x8 pixels, shipped with scikit-learn, so no download)
are split into training and test sets; a 64-128-64-10 functional model trains with
Keras's `fit` (progress bar, validation each epoch), then reports its test accuracy.

    pip install . scikit-learn && python examples/train_digits.py
"""

import numpy as np
from sklearn.datasets import load_digits

import pyfuncnet as keras
from pyfuncnet import layers

keras.utils.set_random_seed(0)

digits = load_digits()
x = (digits.data / 16.0).astype("float32")
y = digits.target.astype("int32")
order = np.random.default_rng(0).permutation(len(x))
x, y = x[order], y[order]
split = int(0.8 * len(x))
x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]

inputs = keras.Input(shape=(64,), name="pixels")
h = layers.Dense(128, activation="relu", name="dense_1")(inputs)
h = layers.Dropout(0.1)(h)
h = layers.Dense(64, activation="relu", name="dense_2")(h)
outputs = layers.Dense(10, name="logits")(h)
model = keras.Model(inputs, outputs, name="digits_classifier")
model.summary()

model.compile(
    optimizer=keras.optimizers.Adam(learning_rate=1e-3),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
model.fit(x_train, y_train, batch_size=32, epochs=30, validation_split=0.1)

loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
print(f"Test loss: {loss:.4f} - test accuracy: {accuracy:.4f} ({len(x_test)} images)")
