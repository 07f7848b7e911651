"""The 784-64-64-10 MLP in pyfuncnet against Keras 3 (JAX backend) and PyTorch eager.

Usage:
    python benches/python/bench_mlp.py \
        --pyfuncnet-python /work/main/.venv/bin/python --peer-python /work/kvenv/bin/python \
        [--threads 1,2] [--batches 64,256] [--frameworks pyfuncnet,keras,torch] \
        [--repeat 3] [--rounds 1] [--busy N] [--quick] [--profile] [--json out.json]

What is measured, for each framework at each thread count:
- training samples/s: `model.fit(x, y, batch_size=B, epochs=1, verbose=0)` over
  60,000 random samples (784 float32 features, labels 0..9, the same fixed seed in
  every worker), RMSprop(learning_rate=1e-3), sparse categorical cross-entropy from
  logits; PyTorch runs the same epoch as a plain loop that shuffles the indices
  each epoch and slices batches (no DataLoader). One warm-up epoch on a slice
  first, whose last batch is as short as the full set's, so that JAX has compiled
  both batch shapes before the clock starts. Median of `--repeat` epochs.
  PyTorch runs with `torch.set_flush_denormal(True)`, as XLA and pyfuncnet flush
  subnormals.
- single-sample latency, median of many calls: `model.predict_on_batch(x1)` and
  `model(x1)` (the output taken as a NumPy array, which waits for JAX's
  asynchronous dispatch); PyTorch `with torch.no_grad(): net(x1)` on a tensor,
  shown in both rows.
- batch-256 predict samples/s: `model.predict(x, batch_size=256, verbose=0)` on
  the 60,000 samples; PyTorch the forward pass over slices of 256 under
  `torch.no_grad()`, outputs concatenated. Median of `--repeat` runs.

Each (framework, thread count) runs in its own worker process (this file with
`--worker`), started under `taskset -c` on the first 1 or 2 CPUs, with the thread
settings in its environment before any library loads: `PYFUNCNET_NUM_THREADS`;
`OMP_NUM_THREADS`/`MKL_NUM_THREADS` plus `torch.set_num_threads`; for XLA at one
thread `XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`
(XLA sizes its pool from the CPUs it may use, so the CPU set is what really limits
it). pyfuncnet and the peers may live in different virtual environments:
`--pyfuncnet-python` and `--peer-python` name the interpreters (both default to
the one running this script). A framework that does not import is reported as
skipped.

`--rounds R` runs the whole set of workers R times, interleaved, and reports for
each cell the median over the rounds. The table gives pyfuncnet / fastest peer for
each row (for latencies, the peer's time over ours: above 1 is always "pyfuncnet
faster") and checks the issue's targets. After it come, for each worker, the
cores that other processes kept busy while it ran (from /proc/stat, less the
worker's own CPU time): the machine is shared, and a run that had much more of
that than the others is a disturbed one. `--busy N` keeps N processes spinning for the whole run (a machine
shared with another job); with two thread counts the run then ends with each
framework's speed at the larger count over the smaller. `--profile` adds a
cProfile pass to the pyfuncnet worker, after and apart from its timed runs.
"""

import argparse
import json
import os
import statistics
import sys
import time

import _bench_common as common
from _bench_common import parse_ints, timed, warmup_size

FEATURES, HIDDEN, CLASSES = 784, 64, 10
SEED = 1234
FRAMEWORKS = ("pyfuncnet", "keras", "torch")
LABELS = {"pyfuncnet": "pyfuncnet", "keras": "keras 3 (jax)", "torch": "pytorch"}
# Prefix of the worker's report line, so that whatever a library prints is ignored.
REPORT_TAG = "BENCH_MLP_REPORT "
FULL = {"samples": 60_000, "latency_calls": 2000, "warmup_batches": 10}
QUICK = {"samples": 6_000, "latency_calls": 200, "warmup_batches": 2}


def median_call_us(fn, calls):
    """Median wall time of one call of `fn`, in microseconds, after `calls // 10` warm-up calls."""
    for _ in range(max(10, calls // 10)):
        fn()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000.0


# ---------------------------------------------------------------- framework adapters
# Each adapter: build() -> model; fit(model, x, y, batch) runs one epoch;
# predict(model, x, batch) -> outputs; single_sample(model, x1) -> {row: callable};
# info() -> versions and thread settings.


class KerasAPI:
    """pyfuncnet and Keras 3 run the same Keras code; only the module differs."""

    def __init__(self, module_name):
        import importlib

        self.keras = importlib.import_module(module_name)
        self.module_name = module_name

    def build(self):
        keras = self.keras
        model = keras.Sequential(
            [
                keras.Input((FEATURES,)),
                keras.layers.Dense(HIDDEN, activation="relu"),
                keras.layers.Dense(HIDDEN, activation="relu"),
                keras.layers.Dense(CLASSES),
            ]
        )
        model.compile(
            optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    def fit(self, model, x, y, batch):
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=True, verbose=0)

    def predict(self, model, x, batch):
        return model.predict(x, batch_size=batch, verbose=0)

    def single_sample(self, model, x1):
        import numpy as np

        return {
            "predict_on_batch": lambda: model.predict_on_batch(x1),
            # JAX returns before computing: asking for the array waits for the result.
            "call": lambda: np.asarray(model(x1)),
        }

    def info(self):
        if self.module_name == "pyfuncnet":
            from pyfuncnet import config

            return {"build_info": config.build_info()}
        import jax

        return {
            "keras": self.keras.__version__,
            "backend": self.keras.backend.backend(),
            "jax": jax.__version__,
            "jax_devices": [str(d) for d in jax.devices()],
        }


class TorchAPI:
    """The same model and epoch as a plain PyTorch eager loop."""

    def __init__(self, threads):
        import torch

        self.torch = torch
        torch.set_num_threads(threads)
        # Like for like: XLA and pyfuncnet flush subnormals. Without this, the RMSprop
        # slots of units whose gradient stays 0 decay into subnormals within an epoch
        # or two and PyTorch's steps at batch 64 get about 2x slower each epoch.
        torch.set_flush_denormal(True)

    def build(self):
        nn = self.torch.nn
        net = nn.Sequential(
            nn.Linear(FEATURES, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, CLASSES),
        )
        # Keras's RMSprop defaults (rho 0.9, epsilon 1e-7), not PyTorch's (0.99, 1e-8).
        optimizer = self.torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
        return net, optimizer

    def fit(self, model, x, y, batch):
        torch = self.torch
        net, optimizer = model
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), batch):
            idx = order[start : start + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()

    def predict(self, model, x, batch):
        torch = self.torch
        net, _ = model
        xt = torch.from_numpy(x)
        with torch.no_grad():
            return torch.cat([net(xt[s : s + batch]) for s in range(0, len(xt), batch)]).numpy()

    def single_sample(self, model, x1):
        torch = self.torch
        net, _ = model
        x1t = torch.from_numpy(x1)

        def forward():
            with torch.no_grad():
                return net(x1t)

        # PyTorch has one single-sample path; it is the peer of both Keras rows.
        return {"predict_on_batch": forward, "call": forward}

    def info(self):
        torch = self.torch
        return {"torch": torch.__version__, "num_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}


def make_adapter(framework, threads):
    """The adapter of `framework`; raises ImportError when it is not installed."""
    if framework == "torch":
        return TorchAPI(threads)
    return KerasAPI("keras" if framework == "keras" else "pyfuncnet")


# ---------------------------------------------------------------- worker


def measure(adapter, sizes, batches, repeat):
    """Times training at each batch size, batch-256 predict and single-sample calls."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    n = sizes["samples"]
    x = rng.random((n, FEATURES), dtype=np.float32)
    y = rng.integers(0, CLASSES, size=n, dtype=np.int64)
    results = {}
    for batch in batches:
        model = adapter.build()
        warm = warmup_size(n, batch, sizes["warmup_batches"])
        adapter.fit(model, x[:warm], y[:warm], batch)
        times = [timed(lambda: adapter.fit(model, x, y, batch)) for _ in range(repeat)]
        results[f"train_b{batch}"] = {"value": n / statistics.median(times), "times_s": times}
    # Predict with the model trained last: built, compiled and warm in every framework.
    warm = warmup_size(n, 256, 2)
    adapter.predict(model, x[:warm], 256)
    times = [timed(lambda: adapter.predict(model, x, 256)) for _ in range(repeat)]
    results["predict_b256"] = {"value": n / statistics.median(times), "times_s": times}
    for row, fn in adapter.single_sample(model, x[:1]).items():
        results[f"latency_{row}"] = {"value": median_call_us(fn, sizes["latency_calls"])}
    return results, (model, x, y)


def profile_pyfuncnet(adapter, model, x, y, batches, calls):
    """cProfile of one epoch per batch size and of `calls` single-sample predicts."""
    import cProfile
    import io
    import pstats

    def profile(fn):
        fn()  # compiles the programs for this batch shape outside the profile
        profiler = cProfile.Profile()
        profiler.runcall(fn)
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(15)
        return stream.getvalue().strip()

    out = {f"fit b={batch}, one epoch": profile(lambda: adapter.fit(model, x, y, batch)) for batch in batches}
    x1 = x[:1]
    out[f"predict_on_batch(x1) x {calls}"] = profile(lambda: [model.predict_on_batch(x1) for _ in range(calls)])
    return out


def worker(args):
    """Measures one framework at one thread count; prints the report as one JSON line."""
    sizes = QUICK if args.quick else FULL
    batches = parse_ints(args.batches)
    report = {"framework": args.worker, "threads": args.threads, "cpus": sorted(os.sched_getaffinity(0))}
    try:
        adapter = make_adapter(args.worker, args.threads)
    except ImportError as err:
        report["skipped"] = f"{type(err).__name__}: {err}"
    else:
        report["info"] = adapter.info()
        report["results"], (model, x, y) = measure(adapter, sizes, batches, args.repeat)
        if args.profile and args.worker == "pyfuncnet":
            report["profile"] = profile_pyfuncnet(adapter, model, x, y, batches, sizes["latency_calls"])
    print(REPORT_TAG + json.dumps(report), flush=True)


# ---------------------------------------------------------------- driver
# Launching workers, the /proc/stat accounting, the spinners and the tables live in
# _bench_common.py, shared with bench_cnn.py.


def run_worker(args, framework, threads, cpus, profile):
    """Runs one worker; returns its report with when it ran and how busy the machine was."""
    worker_args = ["--batches", args.batches, "--repeat", str(args.repeat)]
    worker_args += ["--quick"] * args.quick + ["--profile"] * profile
    env = common.worker_env(threads, "jax" if framework == "keras" else None)
    return common.run_worker(args, __file__, framework, threads, cpus, worker_args, env, REPORT_TAG)


def table_rows(batches):
    """The table's rows as (result key, label, True where larger is better)."""
    rows = [(f"train_b{b}", f"train b={b} (samples/s)", True) for b in batches]
    return rows + [
        ("predict_b256", "predict b=256 (samples/s)", True),
        ("latency_predict_on_batch", "1 sample predict_on_batch (us)", False),
        ("latency_call", "1 sample model(x) (us)", False),
    ]


def target(key, threads, values):
    """The issue's target for this row as (text, met or None when it cannot be judged)."""
    ours = values.get("pyfuncnet")
    peers = {f: v for f, v in values.items() if f != "pyfuncnet"}
    if key.startswith("train"):
        need = 2.0 if threads >= 2 else 1.5
        if ours is None or not peers:
            return f">= {need}x fastest peer", None
        return f">= {need}x fastest peer", ours >= need * max(peers.values())
    if key == "predict_b256":
        if ours is None or "torch" not in peers:
            return ">= 1.2x pytorch", None
        return ">= 1.2x pytorch", ours >= 1.2 * peers["torch"]
    return "<= 20 us", None if ours is None else ours <= 20.0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--batches", default="64,256", help="comma-separated training batch sizes (default 64,256)")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="any of pyfuncnet,keras,torch")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the median is reported")
    parser.add_argument("--rounds", type=int, default=1, help="times every worker runs, interleaved; the table shows the median over rounds")
    parser.add_argument("--busy", type=int, default=0, help="processes kept spinning during the run")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['samples']} samples and {QUICK['latency_calls']} latency calls (smoke test)")
    parser.add_argument("--profile", action="store_true", help="add a cProfile pass to the pyfuncnet worker and print it")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement to this JSON file")
    parser.add_argument("--pyfuncnet-python", default=sys.executable, help="interpreter that imports pyfuncnet")
    parser.add_argument("--peer-python", default=sys.executable, help="interpreter that imports keras, jax and torch")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1 or args.rounds < 1:
        parser.error(f"--repeat and --rounds must be at least 1, got {args.repeat} and {args.rounds}")
    if args.worker:
        args.threads = int(args.threads)
        worker(args)
        return
    try:
        threads_list = parse_ints(args.threads)
        batches = parse_ints(args.batches)
    except ValueError as err:
        parser.error(str(err))
    frameworks = common.parse_frameworks(parser, args.frameworks, FRAMEWORKS)
    cpus = common.usable_cpus(parser, threads_list, args.threads)

    with common.spinners(args.busy):
        # Rounds interleave the workers, so that a slow spell on the machine
        # spreads over every framework instead of hitting one.
        runs = [run_worker(args, f, t, cpus, args.profile and r == 0) for r in range(args.rounds) for t in threads_list for f in frameworks]
    reports = common.combine_rounds(runs)
    print(f"\n## MLP {FEATURES}-{HIDDEN}-{HIDDEN}-{CLASSES}, {time.strftime('%Y-%m-%d %H:%M')}, {args.busy} spinning process(es), median of {args.rounds} round(s)")
    common.print_comparison(reports, frameworks, LABELS, table_rows(batches), target)
    if len(threads_list) > 1:
        common.print_thread_scaling(reports, frameworks, LABELS, table_rows(batches), args.busy)
    for r in runs:
        for name, text in r.get("profile", {}).items():
            print(f"\n## cProfile, pyfuncnet at {r['threads']} thread(s): {name}\n{text}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "busy": args.busy, "combined": reports, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
