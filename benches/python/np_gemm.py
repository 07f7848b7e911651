"""NumPy (OpenBLAS) SGEMM throughput on the shapes of `benches/examples/gemm_gflops.rs`.

Prints, per shape, the median GFLOP/s of REPEATS timings (and the best one).
Set OPENBLAS_NUM_THREADS to the thread count to compare with, e.g.

    OPENBLAS_NUM_THREADS=1 python benches/python/np_gemm.py 11
"""
import sys, time, numpy as np
reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
shapes = [(f"sq{n}", n, n, n, False, False) for n in (64, 128, 256, 384, 512, 1024, 2048)]
for b in (64, 256):
    for fi, fo in ((784, 64), (64, 64), (64, 10)):
        l = f"b{b}_{fi}x{fo}"
        shapes += [(l + "_x.w", b, fo, fi, False, False), (l + "_dy.wt", b, fi, fo, False, True), (l + "_xt.dy", fi, fo, b, True, False)]
rng = np.random.default_rng(0)
for name, m, n, k, ta, tb in shapes:
    a = rng.uniform(-1, 1, (k, m) if ta else (m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (n, k) if tb else (k, n)).astype(np.float32)
    A = a.T if ta else a
    B = b.T if tb else b
    out = np.empty((m, n), np.float32)
    flops = 2 * m * n * k
    inner = max(1, int(2e8 / flops))
    np.matmul(A, B, out=out)
    res = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            np.matmul(A, B, out=out)
        res.append(flops * inner / (time.perf_counter() - t) / 1e9)
    res.sort()
    print(f"{name:24s} {res[len(res)//2]:7.1f}  (max {res[-1]:.1f})")
