"""Fixed cost of eager op dispatch: pyfuncnet.ops against NumPy on small and
mid-size problems. Median of repeated timeit runs, in microseconds per call.

Run with the thread count fixed, e.g.:
    PYFUNCNET_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benches/python/eager_dispatch.py
"""

import os
import statistics
import timeit

import numpy as np

import pyfuncnet
from pyfuncnet import ops


def _us(fn, number, repeat=15):
    fn()  # warm up (per-thread buffers, caches)
    times = timeit.repeat(fn, number=number, repeat=repeat)
    return statistics.median(times) / number * 1e6


def main():
    rng = np.random.default_rng(0)
    a4, b4 = (rng.standard_normal((4, 4), dtype=np.float32) for _ in range(2))
    a64, b64 = (rng.standard_normal((64, 64), dtype=np.float32) for _ in range(2))
    b6410 = rng.standard_normal((64, 10), dtype=np.float32)
    a256 = rng.standard_normal((256, 784), dtype=np.float32)
    b784 = rng.standard_normal((784, 64), dtype=np.float32)
    cases = [
        ("add 4x4", lambda: ops.add(a4, b4), lambda: np.add(a4, b4), 20000),
        ("relu 4x4", lambda: ops.relu(a4), lambda: np.maximum(a4, 0), 20000),
        ("sum 64x64 axis=0", lambda: ops.sum(a64, axis=0), lambda: np.sum(a64, axis=0), 10000),
        ("matmul 64x64 @ 64x64", lambda: ops.matmul(a64, b64), lambda: a64 @ b64, 5000),
        ("matmul 64x64 @ 64x10", lambda: ops.matmul(a64, b6410), lambda: a64 @ b6410, 10000),
        ("matmul 256x784 @ 784x64", lambda: ops.matmul(a256, b784), lambda: a256 @ b784, 200),
    ]
    threads = os.environ.get("PYFUNCNET_NUM_THREADS", "default")
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"{pyfuncnet.__file__}: PYFUNCNET_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={blas}")
    print(f"{'case':<26}{'pyfuncnet us':>14}{'numpy us':>10}{'ratio':>8}")
    for name, ours, ref, number in cases:
        t_ours, t_ref = _us(ours, number), _us(ref, number)
        print(f"{name:<26}{t_ours:>14.2f}{t_ref:>10.2f}{t_ours / t_ref:>8.2f}")


if __name__ == "__main__":
    main()
