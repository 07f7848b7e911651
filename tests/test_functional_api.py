"""The functional API: Input, layers called on tensors, Model, Sequential, nodes.

References are NumPy float64 forward passes written out here from the weights the
models report, and Keras's documented structure rules (layer order, weight order,
node API errors).
"""

import numpy as np
import pytest

import pyfuncnet as keras
from pyfuncnet import layers, ops


def relu(x):
    return np.maximum(x, 0.0)


def dense_ref(x, w, b, act=lambda v: v):
    return act(x.astype(np.float64) @ w.astype(np.float64) + b)


def mlp():
    inputs = keras.Input(shape=(784,), name="img")
    x = layers.Dense(64, activation="relu", name="d1")(inputs)
    x = layers.Dense(64, activation="relu", name="d2")(x)
    outputs = layers.Dense(10, name="out")(x)
    return keras.Model(inputs, outputs, name="mnist_model")


def test_mlp_structure_matches_keras():
    model = mlp()
    assert model.count_params() == 55_050
    assert [layer.name for layer in model.layers] == ["img", "d1", "d2", "out"]
    assert [w.path for w in model.weights] == ["d1/kernel", "d1/bias", "d2/kernel", "d2/bias", "out/kernel", "out/bias"]
    assert [tuple(w.shape) for w in model.weights] == [(784, 64), (64,), (64, 64), (64,), (64, 10), (10,)]
    assert model.input_names == ["img"] and model.output_names == ["out"]
    assert model.inputs[0].shape == (None, 784) and model.outputs[0].shape == (None, 10)
    assert model.get_layer("d2") is model.layers[2] and model.get_layer(index=1) is model.layers[1]
    with pytest.raises(ValueError, match="No such layer: nope"):
        model.get_layer("nope")


def test_mlp_forward_matches_numpy_eager_and_predict():
    model = mlp()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 784)).astype(np.float32)
    w = model.get_weights()
    ref = dense_ref(relu(dense_ref(relu(dense_ref(x, w[0], w[1])), w[2], w[3])), w[4], w[5])
    np.testing.assert_allclose(model(x), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.predict(x, batch_size=8, verbose=0), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.predict_on_batch(x), ref, rtol=1e-4, atol=1e-4)
    # Layers called on arrays run eagerly with the same weights.
    h = model.get_layer("d1")(x)
    np.testing.assert_allclose(h, relu(dense_ref(x, w[0], w[1])), rtol=1e-4, atol=1e-4)


def test_set_weights_checks_count_and_shapes_and_changes_nothing_on_error():
    model = mlp()
    before = model.get_weights()
    with pytest.raises(ValueError, match="expected 6 weights"):
        model.set_weights(before[:5])
    bad = list(before)
    bad[2] = np.zeros((64, 65), np.float32)
    with pytest.raises(ValueError, match=r"d2/kernel.*\(64, 64\).*\(64, 65\)"):
        model.set_weights(bad)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    new = [np.full_like(a, 0.5) for a in before]
    model.set_weights(new)
    for a, b in zip(new, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_sequential_three_ways_give_the_same_structure():
    a = keras.Sequential([keras.Input(shape=(784,)), layers.Dense(64, activation="relu"), layers.Dense(64, activation="relu"), layers.Dense(10)])
    b = keras.Sequential()
    b.add(layers.Dense(64, activation="relu", input_shape=(784,)))
    b.add(layers.Dense(64, activation="relu"))
    b.add(layers.Dense(10))
    c = keras.Sequential([layers.Dense(64, activation="relu", input_dim=784), layers.Dense(64, activation="relu"), layers.Dense(10)])
    for m in (a, b, c):
        assert m.count_params() == 55_050
        assert len(m.layers) == 3 and all(isinstance(layer, layers.Dense) for layer in m.layers)
        assert m.outputs[0].shape == (None, 10)
    # A Sequential model without an input shape builds on its first data.
    d = keras.Sequential([layers.Dense(3), layers.Dense(2)])
    assert not d.built or not d.weights
    x = np.ones((4, 5), np.float32)
    y = d(x)
    assert y.shape == (4, 2) and d.count_params() == 5 * 3 + 3 + 3 * 2 + 2
    w = d.get_weights()
    np.testing.assert_allclose(y, dense_ref(dense_ref(x, w[0], w[1]), w[2], w[3]), rtol=1e-5, atol=1e-5)


def test_sequential_rejects_duplicate_names_and_non_layers():
    m = keras.Sequential([layers.Dense(2, name="same", input_shape=(3,))])
    with pytest.raises(ValueError, match="unique names"):
        m.add(layers.Dense(2, name="same"))
    with pytest.raises(TypeError, match="only accepts layers"):
        m.add("dense")


def test_shared_layer_has_one_set_of_weights_and_two_nodes():
    a = keras.Input(shape=(8,), name="a")
    b = keras.Input(shape=(8,), name="b")
    shared = layers.Dense(4, name="shared")
    ya, yb = shared(a), shared(b)
    merged = layers.concatenate([ya, yb], name="cat")
    model = keras.Model([a, b], merged)
    assert len(shared.weights) == 2 and model.count_params() == 8 * 4 + 4
    assert shared.get_output_at(0) is ya and shared.get_output_at(1) is yb
    assert shared.get_input_at(1) is b
    assert shared.get_output_shape_at(0) == (None, 4)
    with pytest.raises(AttributeError, match="multiple inbound nodes.*get_output_at"):
        _ = shared.output
    rng = np.random.default_rng(1)
    xa, xb = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    w, bias = shared.get_weights()
    ref = np.concatenate([dense_ref(xa, w, bias), dense_ref(xb, w, bias)], axis=1)
    np.testing.assert_allclose(model([xa, xb]), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model({"a": xa, "b": xb}), ref, rtol=1e-5, atol=1e-5)


def test_graph_disconnected_names_the_missing_input():
    a = keras.Input(shape=(3,), name="first")
    b = keras.Input(shape=(3,), name="second")
    out = layers.add([a, layers.Dense(3)(b)])
    with pytest.raises(ValueError, match="second"):
        keras.Model(a, out)


def test_model_called_as_layer_and_nested_shares_weights():
    inner_in = keras.Input(shape=(6,))
    inner = keras.Model(inner_in, layers.Dense(3, activation="tanh")(inner_in), name="encoder")
    outer_in = keras.Input(shape=(6,))
    code = inner(outer_in)
    outer = keras.Model(outer_in, layers.Dense(2)(code), name="outer")
    assert [layer.name for layer in outer.layers][1] == "encoder"
    assert outer.count_params() == 6 * 3 + 3 + 3 * 2 + 2
    x = np.random.default_rng(2).normal(size=(7, 6)).astype(np.float32)
    w = outer.get_weights()
    ref = dense_ref(dense_ref(x, w[0], w[1], np.tanh), w[2], w[3])
    np.testing.assert_allclose(outer(x), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inner(x), dense_ref(x, w[0], w[1], np.tanh), rtol=1e-5, atol=1e-5)


def test_ensemble_of_three_models_averaged():
    def make(k):
        i = keras.Input(shape=(4,))
        return keras.Model(i, layers.Dense(1)(i), name=f"member_{k}")

    members = [make(k) for k in range(3)]
    inputs = keras.Input(shape=(4,))
    avg = layers.average([m(inputs) for m in members])
    ensemble = keras.Model(inputs, avg)
    x = np.random.default_rng(3).normal(size=(9, 4)).astype(np.float32)
    ref = np.mean([dense_ref(x, *m.get_weights()) for m in members], axis=0)
    np.testing.assert_allclose(ensemble(x), ref, rtol=1e-5, atol=1e-5)
    assert ensemble.count_params() == 3 * 5


def test_feature_extraction_model_returns_every_layer_output():
    model = mlp()
    features = keras.Model(inputs=model.inputs, outputs=[layer.output for layer in model.layers])
    x = np.random.default_rng(4).normal(size=(3, 784)).astype(np.float32)
    outs = features(x)
    assert [o.shape for o in outs] == [(3, 784), (3, 64), (3, 64), (3, 10)]
    np.testing.assert_array_equal(outs[0], x)
    np.testing.assert_allclose(outs[3], model(x), rtol=1e-5, atol=1e-5)


def test_dict_inputs_and_outputs_by_name():
    title = keras.Input(shape=(5,), name="title")
    body = keras.Input(shape=(3,), name="body")
    h = layers.concatenate([title, body])
    out_a = layers.Dense(1, name="priority")(h)
    out_b = layers.Dense(2, name="department")(h)
    model = keras.Model({"title": title, "body": body}, {"priority": out_a, "department": out_b})
    rng = np.random.default_rng(5)
    xt, xb = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    out = model({"title": xt, "body": xb})
    assert set(out) == {"priority", "department"}
    cat = np.concatenate([xt, xb], axis=1)
    wa = model.get_layer("priority").get_weights()
    np.testing.assert_allclose(out["priority"], dense_ref(cat, *wa), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="body"):
        model({"title": xt})


def test_merge_layers_against_numpy():
    rng = np.random.default_rng(6)
    xs = [rng.normal(size=(5, 4)).astype(np.float32) for _ in range(3)]
    ins = [keras.Input(shape=(4,)) for _ in range(3)]
    cases = [
        (layers.Add(), lambda a, b, c: a + b + c, 3),
        (layers.Subtract(), lambda a, b: a - b, 2),
        (layers.Multiply(), lambda a, b, c: a * b * c, 3),
        (layers.Average(), lambda a, b, c: (a + b + c) / 3, 3),
        (layers.Maximum(), lambda a, b, c: np.maximum(np.maximum(a, b), c), 3),
        (layers.Minimum(), lambda a, b, c: np.minimum(np.minimum(a, b), c), 3),
        (layers.Concatenate(axis=1), lambda a, b: np.concatenate([a, b], axis=1), 2),
        (layers.Dot(axes=1), lambda a, b: np.sum(a * b, axis=1, keepdims=True), 2),
        (
            layers.Dot(axes=1, normalize=True),
            lambda a, b: np.sum(a / np.linalg.norm(a, axis=1, keepdims=True) * b / np.linalg.norm(b, axis=1, keepdims=True), axis=1, keepdims=True),
            2,
        ),
    ]
    for layer, ref, n in cases:
        model = keras.Model(ins[:n], layer(ins[:n]))
        np.testing.assert_allclose(model(xs[:n]), ref(*[x.astype(np.float64) for x in xs[:n]]), rtol=1e-5, atol=1e-5, err_msg=layer.name)
    with pytest.raises(ValueError, match="exactly 2"):
        layers.Subtract()(ins)
    with pytest.raises(ValueError, match="matching shapes"):
        layers.Concatenate(axis=1)([keras.Input(shape=(2, 3)), keras.Input(shape=(4, 5))])


def test_dot_of_sequences_is_a_batched_matmul():
    rng = np.random.default_rng(7)
    a, b = keras.Input(shape=(3, 4)), keras.Input(shape=(5, 4))
    model = keras.Model([a, b], layers.Dot(axes=(2, 2))([a, b]))
    xa, xb = rng.normal(size=(2, 3, 4)).astype(np.float32), rng.normal(size=(2, 5, 4)).astype(np.float32)
    assert model.outputs[0].shape == (None, 3, 5)
    np.testing.assert_allclose(model([xa, xb]), np.einsum("bik,bjk->bij", xa, xb), rtol=1e-5, atol=1e-5)


def test_reshape_permute_repeat_flatten_activation():
    rng = np.random.default_rng(8)
    inp = keras.Input(shape=(6,))
    r = layers.Reshape((3, 2))(inp)
    p = layers.Permute((2, 1))(r)
    f = layers.Flatten()(p)
    rep = layers.RepeatVector(2)(f)
    act = layers.Activation("tanh")(rep)
    model = keras.Model(inp, [r, p, f, rep, act])
    assert [t.shape for t in model.outputs] == [(None, 3, 2), (None, 2, 3), (None, 6), (None, 2, 6), (None, 2, 6)]
    x = rng.normal(size=(4, 6)).astype(np.float32)
    outs = model(x)
    rr = x.reshape(4, 3, 2)
    pp = rr.transpose(0, 2, 1)
    ff = pp.reshape(4, 6)
    np.testing.assert_array_equal(outs[0], rr)
    np.testing.assert_array_equal(outs[1], pp)
    np.testing.assert_array_equal(outs[2], ff)
    np.testing.assert_array_equal(outs[3], np.stack([ff, ff], axis=1))
    np.testing.assert_allclose(outs[4], np.tanh(np.stack([ff, ff], axis=1)), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="reshape"):
        layers.Reshape((4, 2))(inp)


def test_lambda_layer_and_custom_layers_build_and_run():
    class Scale(layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale

    class CenterRows(layers.Layer):
        def call(self, x):
            return x - ops.mean(x, axis=-1, keepdims=True)

    inp = keras.Input(shape=(5,))
    y = Scale(name="scale")(inp)
    y = CenterRows()(y)
    y = layers.Lambda(lambda t: ops.square(t) * 2.0)(y)
    model = keras.Model(inp, y)
    assert [w.path for w in model.weights] == ["scale/scale"]
    model.get_layer("scale").set_weights([np.arange(1, 6, dtype=np.float32)])
    x = np.random.default_rng(9).normal(size=(3, 5)).astype(np.float32)
    s = x * np.arange(1, 6)
    ref = 2.0 * (s - s.mean(axis=1, keepdims=True)) ** 2
    np.testing.assert_allclose(model(x), ref, rtol=1e-5, atol=1e-5)


def test_dense_errors_name_the_layer_and_shapes():
    inp = keras.Input(shape=(8,))
    d = layers.Dense(4, name="proj")
    d(inp)
    with pytest.raises(ValueError, match=r'"proj".*axis -1.*8.*\(None, 5\)'):
        d(keras.Input(shape=(5,)))
    with pytest.raises(ValueError, match="units"):
        layers.Dense(0)
    with pytest.raises(TypeError, match="unrecognized keyword"):
        layers.Dense(3, bogus=1)


def test_automatic_names_follow_keras():
    keras.backend.clear_session()
    a, b = layers.Dense(1), layers.Dense(1)
    assert (a.name, b.name) == ("dense", "dense_1")
    c = layers.Concatenate()
    assert c.name == "concatenate"
    inp = keras.Input(shape=(2,))
    assert inp.name == "input_layer"
    m = keras.Model(inp, layers.Dense(1)(inp))
    assert m.name == "functional"


def test_sublayers_in_dicts_and_nested_lists_are_tracked():
    class Block(layers.Layer):
        def __init__(self):
            super().__init__()
            self.heads = {"a": layers.Dense(2), "b": [layers.Dense(3), (layers.Dense(1),)]}

        def call(self, x):
            return ops.concatenate([self.heads["a"](x), self.heads["b"][0](x), self.heads["b"][1][0](x)], axis=-1)

    block = Block()
    y = block(np.ones((2, 4), np.float32))
    assert y.shape == (2, 6)
    assert len(block.weights) == 6 and block.count_params() == (4 * 2 + 2) + (4 * 3 + 3) + (4 + 1)


def test_models_from_intermediate_tensors_share_the_weights():
    # Keras 3's documented use: sub-models taken out of a larger graph.
    inputs = keras.Input(shape=(8,), name="raw")
    hidden = layers.Dense(4, activation="tanh", name="encode")(inputs)
    outputs = layers.Dense(2, name="head")(hidden)
    full = keras.Model(inputs, outputs)
    head = keras.Model(hidden, outputs)
    encoder = keras.Model(inputs, hidden)
    assert [layer.name for layer in head.layers] == ["head"]
    assert head.count_params() == 4 * 2 + 2
    x = np.random.default_rng(12).normal(size=(5, 8)).astype(np.float32)
    h = encoder(x)
    np.testing.assert_allclose(h, dense_ref(x, *full.get_layer("encode").get_weights(), np.tanh), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(head(h), full(x), rtol=1e-5, atol=1e-5)
    # Training the sub-model trains the shared layer.
    head.compile(optimizer="sgd", loss="mse")
    before = full.get_layer("head").get_weights()[0].copy()
    head.fit(h, np.ones((5, 2), np.float32), epochs=1, verbose=0)
    assert not np.array_equal(before, full.get_layer("head").get_weights()[0])
    assert full.get_layer("encode").get_weights()[0].shape == (8, 4)
