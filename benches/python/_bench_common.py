"""What the scripts that race pyfuncnet against its peers share (bench_mlp.py, bench_cnn.py).

They run the same way: the driver (any Python, no NumPy needed) starts one worker
process per (framework, thread count), which is the script itself with `--worker`,
under `taskset -c` on the first 1 or 2 CPUs and with the thread settings in its
environment before any library loads; the worker prints its report as one JSON
line behind a tag. `--rounds` interleaves the workers and the table shows each
cell's median over the rounds; `--busy N` keeps N processes spinning meanwhile;
for each worker the driver records how many cores other processes kept busy
(from /proc/stat, less the worker's own CPU time).

This module holds those parts: worker environment and launch, the /proc/stat
accounting, the spinners, combining rounds and printing the comparison tables.
What is measured, and how, stays in each script.
"""

import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

# ---------------------------------------------------------------- worker side


def timed(fn):
    """Seconds one call of `fn` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def warmup_size(n, batch, warmup_batches):
    """A slice with `warmup_batches` full batches and the full set's last, short one."""
    return min(n, warmup_batches * batch + n % batch)


# ---------------------------------------------------------------- driver: arguments


def parse_ints(text):
    """`"1,2"` -> `[1, 2]`; raises ValueError unless all are positive integers."""
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise ValueError(f"expected a comma-separated list of positive integers, got {text!r}")
    return values


def parse_frameworks(parser, text, known):
    """The `--frameworks` list, in the order given; `parser.error` on an unknown name."""
    frameworks = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in frameworks if f not in known]
    if unknown or not frameworks:
        parser.error(f"--frameworks: expected names among {','.join(known)}, got {text!r}")
    return frameworks


def usable_cpus(parser, threads_list, threads_text):
    """The CPUs this process may use, sorted; `parser.error` when taskset is
    missing or a thread count asks for more CPUs than there are."""
    if shutil.which("taskset") is None:
        parser.error("taskset (util-linux) is needed to pin each worker to its CPUs")
    cpus = sorted(os.sched_getaffinity(0))
    if max(threads_list) > len(cpus):
        parser.error(f"--threads: at most {len(cpus)} CPUs are available to this process, got {threads_text}")
    return cpus


# ---------------------------------------------------------------- driver: workers


def worker_env(threads, keras_backend=None):
    """The environment a worker starts with: thread counts fixed before libraries load.
    `keras_backend` ("jax" or "torch") is set as KERAS_BACKEND for a Keras 3 worker."""
    env = dict(os.environ)
    # As in bench_matmul.py: these two slow a current NumPy/OpenBLAS down.
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    count = str(threads)
    env.update(PYFUNCNET_NUM_THREADS=count, OMP_NUM_THREADS=count, MKL_NUM_THREADS=count, OPENBLAS_NUM_THREADS=count)
    if keras_backend == "jax":
        env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
        if threads == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
        else:
            env.pop("XLA_FLAGS", None)
    elif keras_backend is not None:
        # Keras's torch backend takes its thread count from OMP_NUM_THREADS, set above.
        env["KERAS_BACKEND"] = keras_backend
    return env


def busy_cpu_seconds():
    """CPU time spent by the whole machine (every process, also outside this one's
    view, plus time stolen by the hypervisor), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    """CPU seconds used by the finished child processes of this one."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_worker(args, script, framework, threads, cpus, worker_args, env, tag):
    """Runs `script --worker framework --threads threads *worker_args` under taskset on
    the first `threads` of `cpus`, with `args.pyfuncnet_python` for pyfuncnet and
    `args.peer_python` for the others; returns the report it printed behind `tag`
    (or an "error" entry with the end of its output), with when it ran and how busy
    the machine was."""
    python = args.pyfuncnet_python if framework == "pyfuncnet" else args.peer_python
    cpu_list = ",".join(str(c) for c in cpus[:threads])
    command = ["taskset", "-c", cpu_list, python, os.path.abspath(script), "--worker", framework]
    command += ["--threads", str(threads)] + list(worker_args)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    machine0, own0, t0 = busy_cpu_seconds(), children_cpu_seconds(), time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    # Cores kept busy by everything but the worker: the --busy spinners and whatever
    # else shares the machine. A run with much more of it than the others is disturbed.
    others = max(0.0, ((busy_cpu_seconds() - machine0) - (children_cpu_seconds() - own0)) / wall)
    print(f"[{started}] {framework:<9} threads={threads} cpus={cpu_list} {wall:4.0f} s, other load {others:.2f} cores", file=sys.stderr, flush=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(tag)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        report = {"framework": framework, "threads": threads, "error": f"worker exited with {proc.returncode}:\n{tail}"}
    else:
        report = json.loads(lines[-1][len(tag) :])
    report.update(started=started, wall_s=wall, other_load_cores=others, python=python)
    return report


def spin():
    """Burns one core until killed (the `--busy` load)."""
    x = 0
    while True:
        x += 1


@contextlib.contextmanager
def spinners(count):
    """Keeps `count` processes spinning (each burns one core) until the block ends."""
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--spin"]) for _ in range(count)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def combine_rounds(runs):
    """One report per (framework, threads): each result the median over the rounds."""
    grouped = {}
    for run in runs:
        grouped.setdefault((run["framework"], run["threads"]), []).append(run)
    combined = []
    for (framework, threads), group in grouped.items():
        report = {"framework": framework, "threads": threads, "other_load_cores": [r["other_load_cores"] for r in group]}
        measured = [r for r in group if "results" in r]
        if measured:
            keys = measured[0]["results"]
            report["results"] = {}
            for k in keys:
                per_round = [r["results"][k]["value"] for r in measured]
                report["results"][k] = {"value": statistics.median(per_round), "rounds": per_round}
        else:
            report.update({k: group[-1][k] for k in ("skipped", "error") if k in group[-1]})
        combined.append(report)
    return combined


# ---------------------------------------------------------------- driver: tables


def speedup(ours, theirs, higher_is_better):
    """How many times faster pyfuncnet is (above 1 = faster)."""
    return ours / theirs if higher_is_better else theirs / ours


def fmt(value, higher_is_better):
    """Throughputs as whole numbers, latencies with one decimal."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if higher_is_better else f"{value:.1f}"


def print_comparison(reports, frameworks, labels, rows, target):
    """All frameworks side by side, with pyfuncnet / fastest peer and the targets, then
    the other load during each worker and what was skipped or failed.

    `rows`: (result key, label, True where larger is better), printed for each thread
    count; `target(key, threads, values)` -> (text, met or None when it cannot be
    judged), `values` mapping framework -> value for that row."""
    by_run = {(r["framework"], r["threads"]): r for r in reports}
    threads_list = sorted({r["threads"] for r in reports})
    header = ["case", "threads"] + [labels[f] for f in frameworks] + ["pyfuncnet / fastest peer", "target", "met"]
    print("| " + " | ".join(header) + " |")
    print("|---|---:|" + "---:|" * len(frameworks) + "---:|---|---|")
    for threads in threads_list:
        for key, label, hib in rows:
            values = {}
            for f in frameworks:
                result = by_run.get((f, threads), {}).get("results", {}).get(key)
                if result is not None:
                    values[f] = result["value"]
            peers = [v for f, v in values.items() if f != "pyfuncnet"]
            ratio = "-"
            if "pyfuncnet" in values and peers:
                best = max(peers) if hib else min(peers)
                ratio = f"{speedup(values['pyfuncnet'], best, hib):.2f}"
            text, met = target(key, threads, values)
            verdict = {True: "yes", False: "**no**", None: "-"}[met]
            cells = [label, str(threads)] + [fmt(values.get(f), hib) for f in frameworks] + [ratio, text, verdict]
            print("| " + " | ".join(cells) + " |")
    print("\nCores kept busy by other processes during each worker, round by round:")
    for r in reports:
        print(f"- {labels[r['framework']]} at {r['threads']} thread(s): " + ", ".join(f"{c:.2f}" for c in r["other_load_cores"]))
    for r in reports:
        if "skipped" in r or "error" in r:
            print(f"\n{r['framework']} at {r['threads']} thread(s): {r.get('skipped') or r.get('error')}")


def print_thread_scaling(reports, frameworks, labels, rows, busy):
    """Each framework's speed at the most threads over the fewest (above 1 = faster with more)."""
    threads_list = sorted({r["threads"] for r in reports})
    low, high = threads_list[0], threads_list[-1]
    by_run = {(r["framework"], r["threads"]): r.get("results", {}) for r in reports}
    print(f"\n## {busy} other process(es) busy: speed at {high} threads / speed at {low} (target for pyfuncnet: >= 1.00)")
    print("| case | " + " | ".join(labels[f] for f in frameworks) + " |")
    print("|---|" + "---:|" * len(frameworks))
    for key, label, hib in rows:
        cells = []
        for f in frameworks:
            a, b = by_run.get((f, low), {}).get(key), by_run.get((f, high), {}).get(key)
            cells.append("-" if a is None or b is None else f"{speedup(b['value'], a['value'], hib):.2f}")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1:] == ["--spin"]:
        spin()
    sys.exit(f"usage: {sys.argv[0]} --spin  (the other uses of this module are imports)")
