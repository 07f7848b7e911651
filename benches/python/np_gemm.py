"""NumPy (OpenBLAS) SGEMM throughput on the shapes of `benches/examples/gemm_gflops.rs`.

Prints, per shape, the median GFLOP/s of REPEATS timings (and the best one).
Set OPENBLAS_NUM_THREADS to the thread count to compare with, e.g.

    OPENBLAS_NUM_THREADS=1 python benches/python/np_gemm.py 11
"""
import sys
import time

import numpy as np


def shapes():
    """(name, m, n, k, A stored transposed, B stored transposed), as gemm_gflops.rs."""
    out = [(f"sq{n}", n, n, n, False, False) for n in (64, 128, 256, 384, 512, 1024, 2048)]
    for batch in (64, 256):
        for fan_in, fan_out in ((784, 64), (64, 64), (64, 10)):
            label = f"b{batch}_{fan_in}x{fan_out}"
            out += [
                (label + "_x.w", batch, fan_out, fan_in, False, False),
                (label + "_dy.wt", batch, fan_in, fan_out, False, True),
                (label + "_xt.dy", fan_in, fan_out, batch, True, False),
            ]
    return out


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    rng = np.random.default_rng(0)
    for name, m, n, k, ta, tb in shapes():
        a = rng.uniform(-1, 1, (k, m) if ta else (m, k)).astype(np.float32)
        b = rng.uniform(-1, 1, (n, k) if tb else (k, n)).astype(np.float32)
        lhs = a.T if ta else a
        rhs = b.T if tb else b
        out = np.empty((m, n), np.float32)
        flops = 2 * m * n * k
        inner = max(1, int(2e8 / flops))
        np.matmul(lhs, rhs, out=out)
        rates = []
        for _ in range(reps):
            t = time.perf_counter()
            for _ in range(inner):
                np.matmul(lhs, rhs, out=out)
            rates.append(flops * inner / (time.perf_counter() - t) / 1e9)
        rates.sort()
        print(f"{name:24s} {rates[len(rates) // 2]:7.1f}  (max {rates[-1]:.1f})")


if __name__ == "__main__":
    main()
