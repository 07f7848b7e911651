"""Train a small MLP classifier with pyfuncnet's ops and GradientTape.

Synthetic data: 4 classes of points in 20 dimensions, each around its own random
centre. Prints the loss and accuracy after every epoch.
"""

import time

import numpy as np

import pyfuncnet as keras
from pyfuncnet import ops

rng = np.random.default_rng(0)
n_classes, n_features, n_samples = 4, 20, 4096
centres = rng.normal(0, 0.35, size=(n_classes, n_features))
labels = rng.integers(0, n_classes, size=n_samples)
x = (centres[labels] + rng.normal(0, 1.0, size=(n_samples, n_features))).astype(np.float32)
y = ops.one_hot(labels, n_classes)


def glorot(shape):
    limit = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


w1 = keras.Variable(glorot((n_features, 64)), name="dense_1/kernel")
b1 = keras.Variable(np.zeros(64, np.float32), name="dense_1/bias")
w2 = keras.Variable(glorot((64, n_classes)), name="dense_2/kernel")
b2 = keras.Variable(np.zeros(n_classes, np.float32), name="dense_2/bias")
weights = [w1, b1, w2, b2]


def forward(batch):
    hidden = ops.relu(ops.add(ops.matmul(batch, w1), b1))
    return ops.log_softmax(ops.add(ops.matmul(hidden, w2), b2))


learning_rate, batch_size, epochs = 0.05, 64, 8
print(f"pyfuncnet {keras.__version__}: {keras.config.build_info()}")
for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    order = rng.permutation(n_samples)
    total_loss = 0.0
    for i in range(0, n_samples, batch_size):
        idx = order[i : i + batch_size]
        with keras.GradientTape() as tape:
            log_probs = forward(x[idx])
            loss = ops.negative(ops.mean(ops.sum(ops.multiply(log_probs, y[idx]), axis=-1)))
        grads = tape.gradient(loss, weights)
        for w, g in zip(weights, grads):
            w.assign_sub(learning_rate * g)
        total_loss += float(loss) * len(idx)
    accuracy = float(np.mean(ops.argmax(forward(x), axis=-1) == labels))
    elapsed = time.perf_counter() - start
    print(f"Epoch {epoch}/{epochs} - {elapsed:.2f}s - loss: {total_loss / n_samples:.4f} - accuracy: {accuracy:.4f}")
