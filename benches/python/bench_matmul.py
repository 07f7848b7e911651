"""pyfuncnet.ops.matmul against NumPy (OpenBLAS) in the same run, at 1 and 2 threads.

Usage: python benches/python/bench_matmul.py [--repeats 7] [--threads 1 2] [--busy 1]

Each thread count runs in a child process whose environment fixes both libraries'
thread counts before they load (OPENBLAS_NUM_THREADS / PYFUNCNET_NUM_THREADS).
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed for the children, since they
slow a current NumPy down. Times are the median of `--repeats` runs, each run the
mean of enough calls to last ~0.2 s. GFLOP/s = 2*m*n*k / time.

`--busy N` keeps N other processes spinning for the whole run (a machine shared
with another job): a library that splits work statically and waits at a barrier
for its slowest thread then runs far slower with 2 threads than with 1, while
dynamic work splitting should lose little. The tables then end with the
2-thread / 1-thread ratio of each library.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SQUARE = [64, 128, 256, 384, 512, 1024, 2048]
# (name, m, k, n, transpose_a, transpose_b): the training shapes of a 784-64-64-10
# MLP: X·W forward, dY·Wᵀ (input gradient) and Xᵀ·dY (weight gradient).
MLP = [
    (f"{what} b={b}", *shape)
    for b in (64, 256)
    for what, shape in [
        ("784->64 X.W", (b, 784, 64, False, False)),
        ("784->64 dY.Wt", (b, 64, 784, False, True)),
        ("784->64 Xt.dY", (784, b, 64, True, False)),
        ("64->64 X.W", (b, 64, 64, False, False)),
        ("64->10 X.W", (b, 64, 10, False, False)),
        ("64->10 Xt.dY", (64, b, 10, True, False)),
    ]
]


def timeit(fn, repeats):
    fn()
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < 0.05:
        fn()
        calls += 1
    per_run = max(1, int(calls * 0.2 / 0.05))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(per_run):
            fn()
        samples.append((time.perf_counter() - t0) / per_run)
    return statistics.median(samples)


def child(repeats):
    import numpy as np

    from pyfuncnet import config, ops

    rng = np.random.default_rng(0)
    results = []
    cases = [(f"square {n}", n, n, n, False, False) for n in SQUARE] + MLP
    for name, m, k, n, ta, tb in cases:
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        a_op, b_op = (a.T if ta else a), (b.T if tb else b)
        flops = 2.0 * m * n * k
        t_np = timeit(lambda: np.matmul(a_op, b_op), repeats)
        t_pf = timeit(lambda: ops.matmul(a_op, b_op), repeats)
        results.append({"case": name, "numpy": flops / t_np / 1e9, "pyfuncnet": flops / t_pf / 1e9})
    info = config.build_info()
    try:
        from threadpoolctl import threadpool_info

        blas = [(p.get("internal_api"), p.get("architecture"), p.get("num_threads")) for p in threadpool_info()]
    except ImportError:
        blas = "threadpoolctl not installed"
    print(json.dumps({"results": results, "build_info": info, "blas": blas}))


def spin():
    """Burns one core until killed (the `--busy` load)."""
    x = 0
    while True:
        x += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--busy", type=int, default=0, help="processes kept spinning during the run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spin", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spin:
        spin()
    if args.child:
        child(args.repeats)
        return
    spinners = [subprocess.Popen([sys.executable, __file__, "--spin"]) for _ in range(args.busy)]
    try:
        reports = run_all(args)
    finally:
        for p in spinners:
            p.kill()
    if args.busy and len(reports) > 1:
        (t1, r1), (t2, r2) = reports[0], reports[-1]
        print(f"\n## {args.busy} other process(es) busy: {t2} threads / {t1} thread, time ratio (< 1 = slower with more threads)")
        print(f"| case | numpy {t2}t/{t1}t | pyfuncnet {t2}t/{t1}t |")
        print("|---|---:|---:|")
        for a, b in zip(r1, r2):
            print(f"| {a['case']} | {b['numpy'] / a['numpy']:.2f} | {b['pyfuncnet'] / a['pyfuncnet']:.2f} |")


def run_all(args):
    """Runs each thread count in a child; prints its table; returns the results."""
    reports = []
    for threads in args.threads:
        env = dict(os.environ)
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
        env.update(
            OPENBLAS_NUM_THREADS=str(threads),
            OMP_NUM_THREADS=str(threads),
            PYFUNCNET_NUM_THREADS=str(threads),
        )
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--repeats", str(args.repeats)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        report = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"\n## {threads} thread(s) — pyfuncnet {report['build_info']} — BLAS {report['blas']}")
        print("| case | numpy GFLOP/s | pyfuncnet GFLOP/s | ratio |")
        print("|---|---:|---:|---:|")
        for r in report["results"]:
            print(f"| {r['case']} | {r['numpy']:.1f} | {r['pyfuncnet']:.1f} | {r['pyfuncnet'] / r['numpy']:.2f} |")
        reports.append((threads, report["results"]))
    return reports


if __name__ == "__main__":
    main()
