"""Determinism: results are bitwise identical for 1, 2 and 3 threads (DESIGN.md §3),
and they agree with float64 NumPy (so identical results are also right ones)."""

import os
import signal
import time

import numpy as np
import pytest

from helpers import softmax_ref
from pyfuncnet import GradientTape, Variable, config, ops
from pyfuncnet._function import Function
from pyfuncnet._symbolic import KerasTensor

THREADS = (1, 2, 3)


def _rng(seed=0):
    return np.random.default_rng(seed)


def run_with_threads(fn, restore_threads):
    """fn() under each thread count; asserts the results are bitwise identical and
    returns them."""
    results = []
    for n in THREADS:
        config.set_num_threads(n)
        assert config.get_num_threads() == n
        results.append([np.asarray(r) for r in fn()])
    first = results[0]
    for n, res in zip(THREADS[1:], results[1:]):
        for k, (a, b) in enumerate(zip(first, res)):
            assert a.shape == b.shape and a.dtype == b.dtype
            bits = (a.view(np.uint32), b.view(np.uint32)) if a.dtype == np.float32 else (a, b)
            diff = np.flatnonzero(bits[0] != bits[1])
            assert diff.size == 0, f"result {k}: {n} threads differ from 1 at {diff.size} elements (first {diff[0]})"
    return first


@pytest.mark.parametrize(
    "bad,error", [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)]
)
def test_set_num_threads_validates(bad, error, restore_threads):
    with pytest.raises(error):
        config.set_num_threads(bad)
    assert config.get_num_threads() == restore_threads
    assert config.build_info()["threads"] == restore_threads


def test_restore_threads_fixture_restores(restore_threads):
    config.set_num_threads(3)
    assert config.build_info()["threads"] == 3


def test_big_matmul(restore_threads):
    a = _rng(1).uniform(-1, 1, (300, 500)).astype(np.float32)
    b = _rng(2).uniform(-1, 1, (500, 400)).astype(np.float32)
    (c,) = run_with_threads(lambda: [ops.matmul(a, b)], restore_threads)
    bound = 502 * 2.0**-24 * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))
    assert np.all(np.abs(c - a.astype(np.float64) @ b.astype(np.float64)) <= bound)


def test_big_batched_matmul_with_transposed_operand(restore_threads):
    a = _rng(3).uniform(-1, 1, (3, 130, 257)).astype(np.float32)
    b = np.swapaxes(_rng(4).uniform(-1, 1, (3, 190, 257)).astype(np.float32), -1, -2)
    (c,) = run_with_threads(lambda: [ops.matmul(a, b)], restore_threads)
    np.testing.assert_allclose(c, np.matmul(a.astype(np.float64), b.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_big_reductions(restore_threads):
    x = _rng(5).uniform(-1, 1, 1_000_003).astype(np.float32)
    y = x[:1_000_000].reshape(1000, 1000)
    res = run_with_threads(
        lambda: [ops.sum(x), ops.mean(x), ops.sum(y, axis=0), ops.mean(y, axis=1), ops.var(y), ops.max(x)],
        restore_threads,
    )
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    np.testing.assert_allclose(res[0], x64.sum(), atol=1e-6 * np.abs(x64).sum())
    np.testing.assert_allclose(res[1], x64.mean(), atol=1e-6 * np.abs(x64).mean())
    np.testing.assert_allclose(res[2], y64.sum(axis=0), atol=1e-4)
    np.testing.assert_allclose(res[3], y64.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(res[4], y64.var(), rtol=1e-5)
    assert res[5] == x.max()


def test_softmax(restore_threads):
    x = _rng(6).normal(0, 3, (2000, 257)).astype(np.float32)
    res = run_with_threads(lambda: [ops.softmax(x), ops.log_softmax(x, axis=0)], restore_threads)
    np.testing.assert_allclose(res[0], softmax_ref(x.astype(np.float64)), rtol=1e-5, atol=1e-7)


def test_elementwise(restore_threads):
    x = _rng(7).normal(size=(1000, 1003)).astype(np.float32)
    (g,) = run_with_threads(lambda: [ops.gelu(ops.add(ops.multiply(x, 1.5), x[:1]))], restore_threads)
    assert g.shape == x.shape


def _mlp_grads():
    rng = _rng(8)
    x = rng.normal(size=(512, 64)).astype(np.float32)
    labels = rng.integers(0, 10, 512)
    w1 = Variable(rng.normal(0, 0.2, (64, 128)))
    b1 = Variable(np.zeros(128))
    w2 = Variable(rng.normal(0, 0.2, (128, 10)))
    b2 = Variable(np.zeros(10))
    with GradientTape() as tape:
        h = ops.relu(ops.add(ops.matmul(x, w1), b1))
        logp = ops.log_softmax(ops.add(ops.matmul(h, w2), b2))
        loss = ops.negative(ops.mean(ops.sum(ops.multiply(logp, ops.one_hot(labels, 10)), axis=-1)))
    return [loss, *tape.gradient(loss, [w1, b1, w2, b2])]


def test_tape_gradient_of_mlp_loss(restore_threads):
    res = run_with_threads(_mlp_grads, restore_threads)
    assert all(g.dtype == np.float32 and np.all(np.isfinite(g)) for g in res)
    # The bias gradient of the output layer is mean(softmax - onehot) (by hand).
    rng = _rng(8)
    x = rng.normal(size=(512, 64))
    labels = rng.integers(0, 10, 512)
    w1 = rng.normal(0, 0.2, (64, 128)).astype(np.float32).astype(np.float64)
    w2 = rng.normal(0, 0.2, (128, 10)).astype(np.float32).astype(np.float64)
    p = softmax_ref(np.maximum(x.astype(np.float32) @ w1, 0) @ w2)
    np.testing.assert_allclose(res[4], (p - np.eye(10)[labels]).mean(axis=0), atol=1e-5)


def test_compiled_function(restore_threads):
    x = KerasTensor((None, 300))
    w = Variable(_rng(9).normal(0, 0.1, (300, 200)))
    y = ops.softmax(ops.tanh(ops.matmul(x, w)))
    f = Function(x, y)
    data = _rng(10).normal(size=(400, 300)).astype(np.float32)
    (out,) = run_with_threads(lambda: [f(data)], restore_threads)
    ref = softmax_ref(np.tanh(data.astype(np.float64) @ w.value.astype(np.float64)))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_computes_with_the_parents_thread_count(restore_threads):
    # Only the forking thread survives a fork: the child has none of the parent's
    # helper threads, yet its parallel-sized work must complete with the same bits.
    config.set_num_threads(2)
    a = _rng(3).standard_normal((300, 400)).astype(np.float32)
    b = _rng(4).standard_normal((400, 500)).astype(np.float32)
    parent = np.asarray(ops.matmul(a, b))  # the helpers run (and are warm) now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's teardown
        ok = b"0"
        try:
            child = np.asarray(ops.matmul(a, b))
            ok = b"1" if np.array_equal(child.view(np.uint32), parent.view(np.uint32)) else b"0"
        finally:
            os.write(write, ok)
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish its matmul within 60 s")
    assert os.read(read, 1) == b"1", "the forked child's matmul differs from the parent's"
    os.close(read)
    want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(parent, want, rtol=1e-4, atol=1e-3)
