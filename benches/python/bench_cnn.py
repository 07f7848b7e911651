"""Training speed of the toy CIFAR-10 ResNet in pyfuncnet against Keras 3 (JAX backend) and PyTorch eager.

Usage:
    python benches/python/bench_cnn.py \
        --pyfuncnet-python /work/main/.venv/bin/python --peer-python /work/kvenv/bin/python \
        [--threads 1,2] [--batches 64] [--samples 2048] [--frameworks pyfuncnet,keras,torch] \
        [--repeat 3] [--rounds 1] [--busy N] [--quick] [--json out.json]

The model is the toy ResNet of the Keras functional API guide, 223,242 parameters:

    inputs = keras.Input(shape=(32, 32, 3), name="img")
    x = Conv2D(32, 3, relu)(inputs); x = Conv2D(64, 3, relu)(x)
    block_1_output = MaxPooling2D(3)(x)                       # pool 3, stride 3: 28x28 -> 9x9
    x = Conv2D(64, 3, relu, padding="same") twice; block_2_output = add([x, block_1_output])
    x = Conv2D(64, 3, relu, padding="same") twice; block_3_output = add([x, block_2_output])
    x = Conv2D(64, 3, relu)(block_3_output); GlobalAveragePooling2D()
    Dense(256, relu); Dropout(0.5); Dense(10)
    compile(RMSprop(1e-3), CategoricalCrossentropy(from_logits=True), metrics=["acc"])

What is measured, for each framework at each thread count: training samples/s,
`model.fit(x, y, batch_size=B, epochs=1, shuffle=True, verbose=0)` (B = 64 unless
`--batches` says otherwise) over `--samples` random images (default 2,048; float32
in [0, 1), shape (N, 32, 32, 3)) with one-hot labels, the same fixed seed in every
worker. One warm-up epoch on a slice first, whose last batch is as short as the
full set's, so that JAX has compiled both batch shapes before the clock starts.
Median of `--repeat` epochs.

- pyfuncnet and Keras 3 (JAX) run the same Keras code; only the module differs.
  A framework that cannot import or cannot build the model (pyfuncnet before it
  has Conv2D) is reported as skipped, with the first line of the error.
- PyTorch runs an equivalent `nn.Module` (Conv2d(3,32,3), Conv2d(32,64,3),
  MaxPool2d(3), four Conv2d(64,64,3,padding=1) with the two residual adds,
  Conv2d(64,64,3), mean over H and W, Linear(64,256), Dropout(0.5),
  Linear(256,10)) in a plain loop that shuffles the indices each epoch and slices
  batches (no DataLoader), in train mode, with `cross_entropy` on class indices
  and Keras's RMSprop settings (alpha=0.9, eps=1e-7, not PyTorch's 0.99 and 1e-8);
  it also keeps the epoch's mean loss and accuracy, as Keras's metrics do. The
  images are converted to NCHW once, before any clock starts, so PyTorch trains
  on its own layout as Keras does on NHWC. `torch.set_flush_denormal(True)`, as
  XLA and pyfuncnet flush subnormals.
- `--frameworks ...,keras-torch` adds Keras 3 on its torch backend (the same Keras
  code, KERAS_BACKEND=torch, subnormals flushed as for PyTorch); not run by default.

The work per step is counted from the layer shapes: a convolution's forward pass is
2*out_h*out_w*cout*kh*kw*cin FLOPs per sample (2 per multiply-add), a dense
layer's 2*in*out; training costs 3x the forward pass (forward, input gradient,
weight gradient) except for the first convolution, whose input needs no gradient
(2x). Pooling, activations, adds, the loss and the optimizer are left out. The
table after the main one gives each framework's GFLOP/s and its fraction of the
machine's fp32 FMA peak per core in use, `--peak-gflops` (default 100, the AMD Zen 3
VM's ~99-101 GFLOP/s measured with a C loop of independent FMAs; BENCHMARKS.md).
These are the direct convolution's FLOPs: pyfuncnet's Winograd layers multiply
about half as much, so its figure can pass 100%.

Each (framework, thread count) runs in its own worker process (this file with
`--worker`), started under `taskset -c` on the first 1 or 2 CPUs, with the thread
settings in its environment before any library loads: `PYFUNCNET_NUM_THREADS`;
`OMP_NUM_THREADS`/`MKL_NUM_THREADS` plus `torch.set_num_threads`; for XLA at one
thread `XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`.
`--pyfuncnet-python` and `--peer-python` name the interpreters (both default to
the one running this script). `--rounds R` runs the whole set of workers R times,
interleaved, and reports each cell's median over the rounds. The table gives
pyfuncnet / fastest peer and checks the issue's targets (at b=64: >= 850 samples/s
on 2 threads, >= 1.5x PyTorch on 1 and on 2 threads). After it come, for each
worker, the cores that other processes kept busy while it ran (from /proc/stat,
less the worker's own CPU time): a run with much more of that than the others is a
disturbed one. `--busy N` keeps N processes spinning for the whole run; with two
thread counts the run ends with each framework's speed at the larger count over
the smaller. Worker launch, the load accounting and the tables are shared with
bench_mlp.py (_bench_common.py).
"""

import argparse
import json
import os
import statistics
import sys
import time

import _bench_common as common
from _bench_common import parse_ints, timed, warmup_size

IMAGE = (32, 32, 3)
CLASSES = 10
PARAMS = 223_242
SEED = 1234
FRAMEWORKS = ("pyfuncnet", "keras", "torch", "keras-torch")
DEFAULT_FRAMEWORKS = ("pyfuncnet", "keras", "torch")
LABELS = {"pyfuncnet": "pyfuncnet", "keras": "keras 3 (jax)", "torch": "pytorch", "keras-torch": "keras 3 (torch)"}
KERAS_BACKENDS = {"keras": "jax", "keras-torch": "torch"}
# Prefix of the worker's report line, so that whatever a library prints is ignored.
REPORT_TAG = "BENCH_CNN_REPORT "
FULL = {"samples": 2048, "warmup_batches": 4}
QUICK = {"samples": 512, "warmup_batches": 2}
# Default fp32 FMA peak of one core, GFLOP/s: the development VM's, measured with a
# C loop of independent FMAs (BENCHMARKS.md).
DEFAULT_PEAK_GFLOPS = 100.0
# The targets, at batch 64.
TARGET_BATCH = 64
TARGET_SAMPLES_2T = 850
TARGET_VS_TORCH = 1.5


# ---------------------------------------------------------------- work per step


def layer_flops():
    """Per-sample FLOPs of the model's convolutions and dense layers (2 per multiply-add),
    from the layer shapes: [(layer, output shape, forward, training)]."""
    layers = []
    h, w, c = IMAGE

    def conv(name, cout, k, padding, needs_input_grad=True):
        nonlocal h, w, c
        if padding == "valid":
            h, w = h - k + 1, w - k + 1
        forward = 2 * h * w * cout * k * k * c
        # Training: forward + weight gradient, + input gradient unless the input is the data.
        layers.append((f"{name} {k}x{k} {c}->{cout} {padding}", f"{h}x{w}x{cout}", forward, (3 if needs_input_grad else 2) * forward))
        c = cout

    def dense(name, units):
        nonlocal c
        forward = 2 * c * units
        layers.append((f"{name} {c}->{units}", f"{units}", forward, 3 * forward))
        c = units

    conv("conv2d", 32, 3, "valid", needs_input_grad=False)
    conv("conv2d_1", 64, 3, "valid")
    h, w = (h - 3) // 3 + 1, (w - 3) // 3 + 1  # MaxPooling2D(3): stride 3, valid
    for i in range(2, 6):
        conv(f"conv2d_{i}", 64, 3, "same")
    conv("conv2d_6", 64, 3, "valid")
    dense("dense", 256)  # after GlobalAveragePooling2D: 64 features
    dense("dense_1", CLASSES)
    return layers


def flops_per_sample():
    """(forward, training) FLOPs per sample."""
    layers = layer_flops()
    return sum(f for _, _, f, _ in layers), sum(t for _, _, _, t in layers)


# ---------------------------------------------------------------- framework adapters
# Each adapter: build() -> model; data(x, labels) -> the training set in the
# framework's own form (converted before any clock starts); fit(model, data, count,
# batch) runs one epoch over the first `count` samples; info() -> versions, thread
# settings and the parameter count.


class KerasAPI:
    """pyfuncnet and Keras 3 run the same Keras code; only the module differs."""

    def __init__(self, module_name):
        import importlib

        self.keras = importlib.import_module(module_name)
        self.module_name = module_name
        if module_name == "keras" and self.keras.backend.backend() == "torch":
            import torch

            # As for PyTorch itself (see TorchAPI).
            torch.set_flush_denormal(True)
        self.params = None

    def build(self):
        keras = self.keras
        layers = keras.layers
        inputs = keras.Input(shape=IMAGE, name="img")
        x = layers.Conv2D(32, 3, activation="relu")(inputs)
        x = layers.Conv2D(64, 3, activation="relu")(x)
        block_1_output = layers.MaxPooling2D(3)(x)
        x = layers.Conv2D(64, 3, activation="relu", padding="same")(block_1_output)
        x = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
        block_2_output = layers.add([x, block_1_output])
        x = layers.Conv2D(64, 3, activation="relu", padding="same")(block_2_output)
        x = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
        block_3_output = layers.add([x, block_2_output])
        x = layers.Conv2D(64, 3, activation="relu")(block_3_output)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(256, activation="relu")(x)
        x = layers.Dropout(0.5)(x)
        outputs = layers.Dense(CLASSES)(x)
        model = keras.Model(inputs, outputs, name="toy_resnet")
        model.compile(
            optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
            metrics=["acc"],
        )
        self.params = int(model.count_params())
        return model

    def data(self, x, labels):
        import numpy as np

        return x, np.eye(CLASSES, dtype=np.float32)[labels]

    def fit(self, model, data, count, batch):
        x, y = data
        model.fit(x[:count], y[:count], batch_size=batch, epochs=1, shuffle=True, verbose=0)

    def info(self):
        out = {"params": self.params}
        if self.module_name == "pyfuncnet":
            from pyfuncnet import config

            out["build_info"] = config.build_info()
            return out
        backend = self.keras.backend.backend()
        out.update(keras=self.keras.__version__, backend=backend)
        if backend == "jax":
            import jax

            out.update(jax=jax.__version__, jax_devices=[str(d) for d in jax.devices()])
        else:
            import torch

            out.update(torch=torch.__version__, num_threads=torch.get_num_threads())
        return out


class TorchAPI:
    """The same model and epoch as a plain PyTorch eager loop, on NCHW data."""

    def __init__(self, threads):
        import torch

        self.torch = torch
        torch.set_num_threads(threads)
        # Like for like: XLA and pyfuncnet flush subnormals. Without this, RMSprop
        # slots whose gradient stays 0 decay into subnormals and PyTorch slows down
        # epoch after epoch (see bench_mlp.py).
        torch.set_flush_denormal(True)
        self.params = None

    def build(self):
        torch = self.torch
        nn = torch.nn
        relu = torch.nn.functional.relu

        class ToyResNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(3, 32, 3)
                self.conv2 = nn.Conv2d(32, 64, 3)
                self.pool = nn.MaxPool2d(3)  # stride 3, like Keras's MaxPooling2D(3)
                self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
                self.conv4 = nn.Conv2d(64, 64, 3, padding=1)
                self.conv5 = nn.Conv2d(64, 64, 3, padding=1)
                self.conv6 = nn.Conv2d(64, 64, 3, padding=1)
                self.conv7 = nn.Conv2d(64, 64, 3)
                self.fc1 = nn.Linear(64, 256)
                self.dropout = nn.Dropout(0.5)
                self.fc2 = nn.Linear(256, CLASSES)

            def forward(self, x):
                x = relu(self.conv2(relu(self.conv1(x))))
                block_1 = self.pool(x)
                block_2 = relu(self.conv4(relu(self.conv3(block_1)))) + block_1
                block_3 = relu(self.conv6(relu(self.conv5(block_2)))) + block_2
                x = relu(self.conv7(block_3)).mean(dim=(2, 3))
                return self.fc2(self.dropout(relu(self.fc1(x))))

        net = ToyResNet()
        self.params = sum(p.numel() for p in net.parameters())
        # Keras's RMSprop defaults (rho 0.9, epsilon 1e-7), not PyTorch's (0.99, 1e-8).
        optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
        return net, optimizer

    def data(self, x, labels):
        import numpy as np

        # NHWC -> NCHW once, outside the timed epochs.
        return self.torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), self.torch.from_numpy(labels)

    def fit(self, model, data, count, batch):
        torch = self.torch
        net, optimizer = model
        xt, yt = data
        net.train()
        order = torch.randperm(count)
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.int64)
        for start in range(0, count, batch):
            idx = order[start : start + batch]
            xb, yb = xt[idx], yt[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = net(xb)
            loss = torch.nn.functional.cross_entropy(logits, yb)
            loss.backward()
            optimizer.step()
            # What Keras's loss tracker and "acc" metric do each step.
            with torch.no_grad():
                loss_sum += loss.detach() * len(idx)
                correct += (logits.argmax(dim=1) == yb).sum()
        return loss_sum.item() / count, correct.item() / count

    def info(self):
        torch = self.torch
        return {
            "params": self.params,
            "torch": torch.__version__,
            "num_threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "layout": "NCHW",
        }


def make_adapter(framework, threads):
    """The adapter of `framework`; raises ImportError when it is not installed."""
    if framework == "torch":
        return TorchAPI(threads)
    return KerasAPI("pyfuncnet" if framework == "pyfuncnet" else "keras")


# ---------------------------------------------------------------- worker


def measure(adapter, model, n, warmup_batches, batches, repeat):
    """Training samples/s at each batch size; `model` is the first one, already built."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    x = rng.random((n,) + IMAGE, dtype=np.float32)
    labels = rng.integers(0, CLASSES, size=n, dtype=np.int64)
    data = adapter.data(x, labels)
    results = {}
    for i, batch in enumerate(batches):
        if i:
            model = adapter.build()
        adapter.fit(model, data, warmup_size(n, batch, warmup_batches), batch)
        times = [timed(lambda: adapter.fit(model, data, n, batch)) for _ in range(repeat)]
        results[f"train_b{batch}"] = {"value": n / statistics.median(times), "times_s": times}
    return results


def worker(args):
    """Measures one framework at one thread count; prints the report as one JSON line."""
    sizes = QUICK if args.quick else FULL
    n = args.samples or sizes["samples"]
    report = {"framework": args.worker, "threads": args.threads, "cpus": sorted(os.sched_getaffinity(0)), "samples": n}
    try:
        adapter = make_adapter(args.worker, args.threads)
        # pyfuncnet fails here until it has every layer of the model.
        model = adapter.build()
    except Exception as err:
        first_line = (str(err).strip().splitlines() or [""])[0]
        report["skipped"] = f"{type(err).__name__}: {first_line}"
    else:
        report["results"] = measure(adapter, model, n, sizes["warmup_batches"], parse_ints(args.batches), args.repeat)
        report["info"] = adapter.info()
    print(REPORT_TAG + json.dumps(report), flush=True)


# ---------------------------------------------------------------- driver


def run_worker(args, framework, threads, cpus):
    """Runs one worker; returns its report with when it ran and how busy the machine was."""
    worker_args = ["--batches", args.batches, "--repeat", str(args.repeat)]
    worker_args += ["--quick"] * args.quick + (["--samples", str(args.samples)] if args.samples else [])
    env = common.worker_env(threads, KERAS_BACKENDS.get(framework))
    return common.run_worker(args, __file__, framework, threads, cpus, worker_args, env, REPORT_TAG)


def table_rows(batches):
    """The table's rows as (result key, label, True where larger is better)."""
    return [(f"train_b{b}", f"train b={b} (samples/s)", True) for b in batches]


def target(key, threads, values):
    """The issue's targets for this row as (text, met or None when it cannot be judged)."""
    if key != f"train_b{TARGET_BATCH}" or threads not in (1, 2):
        return "-", None
    ours, torch = values.get("pyfuncnet"), values.get("torch")
    parts = [(f">= {TARGET_VS_TORCH}x pytorch", None if ours is None or torch is None else ours >= TARGET_VS_TORCH * torch)]
    if threads == 2:
        parts.insert(0, (f">= {TARGET_SAMPLES_2T} samples/s", None if ours is None else ours >= TARGET_SAMPLES_2T))
    verdicts = [met for _, met in parts]
    met = False if False in verdicts else None if None in verdicts else True
    return " and ".join(text for text, _ in parts), met


def print_work(reports, frameworks, batches, peak):
    """FLOPs per step from the layer shapes, and what each framework's speed implies."""
    forward, training = flops_per_sample()
    print("\n## Work per training step, from the layer shapes (2 FLOPs per multiply-add)")
    print("| layer | output | forward MFLOP/sample | training MFLOP/sample |")
    print("|---|---|---:|---:|")
    for name, shape, fwd, train in layer_flops():
        print(f"| {name} | {shape} | {fwd / 1e6:.2f} | {train / 1e6:.2f} |")
    print(f"| total | | {forward / 1e6:.2f} | {training / 1e6:.2f} |")
    steps = ", ".join(f"b={b}: {training * b / 1e9:.2f} GFLOP" for b in batches)
    print(f"\nPer training step: {steps}. At {TARGET_SAMPLES_2T} samples/s: {TARGET_SAMPLES_2T * training / 1e9:.0f} GFLOP/s, "
          f"{TARGET_SAMPLES_2T * training / 1e9 / (2 * peak):.0%} of the 2-core peak.")
    print(f"\n## Achieved GFLOP/s and fraction of the fp32 FMA peak ({peak:.0f} GFLOP/s per core in use)")
    print("(FLOPs of the direct convolution: a framework that multiplies less, as pyfuncnet's Winograd layers do, can pass 100%)")
    print("| case | threads | " + " | ".join(LABELS[f] for f in frameworks) + " |")
    print("|---|---:|" + "---:|" * len(frameworks))
    by_run = {(r["framework"], r["threads"]): r.get("results", {}) for r in reports}
    for threads in sorted({r["threads"] for r in reports}):
        for key, label, _ in table_rows(batches):
            cells = []
            for f in frameworks:
                result = by_run.get((f, threads), {}).get(key)
                if result is None:
                    cells.append("-")
                else:
                    gflops = result["value"] * training / 1e9
                    cells.append(f"{gflops:.1f} ({gflops / (threads * peak):.1%})")
            print(f"| {label.replace('(samples/s)', '(GFLOP/s, % of peak)')} | {threads} | " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--batches", default=str(TARGET_BATCH), help=f"comma-separated training batch sizes (default {TARGET_BATCH})")
    parser.add_argument("--samples", type=int, help=f"training images per epoch (default {FULL['samples']}, {QUICK['samples']} with --quick)")
    parser.add_argument("--frameworks", default=",".join(DEFAULT_FRAMEWORKS), help="any of " + ",".join(FRAMEWORKS) + f" (default {','.join(DEFAULT_FRAMEWORKS)})")
    parser.add_argument("--repeat", type=int, default=3, help="timed epochs per measurement; the median is reported")
    parser.add_argument("--rounds", type=int, default=1, help="times every worker runs, interleaved; the table shows the median over rounds")
    parser.add_argument("--busy", type=int, default=0, help="processes kept spinning during the run")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['samples']} samples (smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement to this JSON file")
    parser.add_argument("--pyfuncnet-python", default=sys.executable, help="interpreter that imports pyfuncnet")
    parser.add_argument("--peer-python", default=sys.executable, help="interpreter that imports keras, jax and torch")
    parser.add_argument("--peak-gflops", type=float, default=DEFAULT_PEAK_GFLOPS, help=f"fp32 FMA peak of one core, GFLOP/s (default {DEFAULT_PEAK_GFLOPS:.0f})")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1 or args.rounds < 1:
        parser.error(f"--repeat and --rounds must be at least 1, got {args.repeat} and {args.rounds}")
    if args.samples is not None and args.samples < 1:
        parser.error(f"--samples must be at least 1, got {args.samples}")
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
        runs = [run_worker(args, f, t, cpus) for _ in range(args.rounds) for t in threads_list for f in frameworks]
    reports = common.combine_rounds(runs)
    samples = args.samples or (QUICK if args.quick else FULL)["samples"]
    print(f"\n## Toy ResNet (CIFAR-10 shapes, {PARAMS:,} params), {samples:,} samples per epoch, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{args.busy} spinning process(es), median of {args.repeat} epoch(s) and {args.rounds} round(s)")
    common.print_comparison(reports, frameworks, LABELS, table_rows(batches), target)
    print_work(reports, frameworks, batches, args.peak_gflops)
    if len(threads_list) > 1:
        common.print_thread_scaling(reports, frameworks, LABELS, table_rows(batches), args.busy)
    wrong = sorted({(r["framework"], r["info"].get("params")) for r in runs if r.get("info", {}).get("params") not in (None, PARAMS)})
    for framework, params in wrong:
        print(f"\n**{LABELS[framework]} built a model of {params:,} parameters, not {PARAMS:,}: not the same model.**")
    if args.json:
        forward, training = flops_per_sample()
        work = {"forward_flops_per_sample": forward, "training_flops_per_sample": training, "peak_gflops_per_core": args.peak_gflops}
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "busy": args.busy, "work": work, "combined": reports, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
