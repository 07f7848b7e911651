"""Training speed of two text models (embeddings + LSTMs) in pyfuncnet against Keras 3 (JAX backend) and PyTorch eager.

Usage:
    python benches/python/bench_text.py \
        [--pyfuncnet-python /work/main/.venv/bin/python] [--peer-python /work/kvenv/bin/python] \
        [--threads 1,2] [--models qa,ticket] [--samples N[,N]] [--frameworks pyfuncnet,keras,torch] \
        [--repeat 3] [--rounds 1] [--busy N] [--quick] [--json out.json]

The two multi-input models of the Keras functional API guide, 10,000-word vocabulary:

- qa, question answering, 1,000,052 parameters, batch 128:
      text = Input(shape=(None,), dtype="int32", name="text")          # 100 tokens
      Embedding(10000, 64) -> LSTM(32)
      question = Input(shape=(None,), dtype="int32", name="question")  # 100 tokens
      Embedding(10000, 32) -> LSTM(16)
      concatenate -> Dense(500, activation="softmax")
      compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["acc"])
  Token indices uniform in [1, 10000), one-hot answers over 500 classes.
- ticket, ticket routing, 1,392,097 parameters, batch 32:
      title = Input(shape=(None,), name="title")   # 10 tokens  -> Embedding(10000, 64) -> LSTM(128)
      body = Input(shape=(None,), name="body")     # 100 tokens -> Embedding(10000, 64) -> LSTM(32)
      tags = Input(shape=(12,), name="tags")       # 0/1 floats
      x = concatenate([title, body, tags])
      priority = Dense(1, name="priority")(x); department = Dense(4, name="department")(x)
      compile(RMSprop(1e-3),
              loss={"priority": BinaryCrossentropy(from_logits=True),
                    "department": CategoricalCrossentropy(from_logits=True)},
              loss_weights={"priority": 1.0, "department": 0.2})
  Token indices uniform in [1, 10000) (title and body are float inputs, as in the
  guide: Keras casts them, the Embedding casts back); priority targets uniform in
  [0, 1), department targets random 0/1 in each of the 4 columns, as in the guide.

The inputs are fed as a dict by input name, the ticket targets as a dict by output name.

What is measured, for each framework at each thread count and for each model:
training samples/s, `model.fit(inputs, targets, batch_size=B, epochs=1, shuffle=True,
verbose=0)` over `--samples` random samples (defaults in `MODELS`, chosen so that an
epoch takes a few seconds; one count for every model or one per model, in the order
of `--models`), generated with the same fixed seed in every worker. One warm-up
epoch on a slice first, whose last batch is as short as the full set's, so that JAX
has compiled both batch shapes before the clock starts. Median of `--repeat` epochs.

- pyfuncnet and Keras 3 (JAX) run the same Keras code; only the module differs.
  A framework that cannot import, or a model that a framework cannot build
  (pyfuncnet before it has LSTM), is reported as skipped with the first line of the
  error; a model whose training fails is reported as failed, and the other model
  is still measured.
- PyTorch runs equivalent `nn.Module`s (`nn.Embedding`, `nn.LSTM(batch_first=True)`
  whose last hidden state is the encoding, `torch.cat`, `nn.Linear` heads) in a plain
  loop that shuffles the indices each epoch and slices batches (no DataLoader), in
  train mode, with Keras's RMSprop settings (alpha=0.9, eps=1e-7, lr 1e-3, not
  PyTorch's 0.99 and 1e-8). qa: `cross_entropy` on the logits and the class indices
  (Keras: softmax, then the cross-entropy of the probabilities), plus the epoch's
  mean loss and accuracy as Keras's loss tracker and "acc" do. ticket:
  `binary_cross_entropy_with_logits` + 0.2 x `cross_entropy` with the department
  targets as class probabilities (-sum(y * log_softmax), Keras's formula), plus the
  epoch's mean total and per-output losses as Keras tracks them. Token indices are
  converted to int64 tensors once, before any clock starts. PyTorch's LSTM has two
  bias vectors where Keras has one: 4 x units more parameters per LSTM (qa +192,
  ticket +640). `torch.set_flush_denormal(True)`, as XLA and pyfuncnet flush
  subnormals.
- `--frameworks ...,keras-torch` adds Keras 3 on its torch backend (the same Keras
  code, KERAS_BACKEND=torch, subnormals flushed as for PyTorch); not run by default.

Each (framework, thread count) runs in its own worker process (this file with
`--worker`), which trains the models one after the other; it is started under
`taskset -c` on the first 1 or 2 CPUs, with the thread settings in its environment
before any library loads: `PYFUNCNET_NUM_THREADS`; `OMP_NUM_THREADS`/`MKL_NUM_THREADS`
plus `torch.set_num_threads`; for XLA at one thread
`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`.
`--pyfuncnet-python` and `--peer-python` name the interpreters (defaults: the
repository's .venv and /work/kvenv). `--rounds R` runs the whole set of workers R
times, interleaved, and reports each cell's median over the rounds. The table gives
pyfuncnet / fastest peer (there are no targets for these models yet). After it come,
for each worker, the cores that other processes kept busy while it ran (from
/proc/stat, less the worker's own CPU time): a run with much more of that than the
others is a disturbed one. `--busy N` keeps N processes spinning for the whole run;
with two thread counts the run ends with each framework's speed at the larger count
over the smaller. Worker launch, the load accounting and the tables are shared with
bench_mlp.py and bench_cnn.py (_bench_common.py).
"""

import argparse
import json
import os
import statistics
import sys
import time
import traceback

import _bench_common as common
from _bench_common import parse_ints, timed, warmup_size

VOCAB = 10_000
SEED = 1234
QA_TEXT_LEN = QA_QUESTION_LEN = 100
QA_ANSWERS = 500
TICKET_TITLE_LEN, TICKET_BODY_LEN = 10, 100
TICKET_TAGS, TICKET_DEPARTMENTS = 12, 4
# Per model: what the table calls it, its batch size, samples per epoch (full run and
# --quick), warm-up batches, the Keras parameter count and what PyTorch's second LSTM
# bias adds to it (4 x units per LSTM).
MODELS = {
    "qa": {
        "title": "question answering",
        "batch": 128,
        "samples": 8192,
        "quick_samples": 512,
        "warmup_batches": 2,
        "params": 1_000_052,
        "torch_extra_params": 4 * 32 + 4 * 16,
    },
    "ticket": {
        "title": "ticket routing",
        "batch": 32,
        "samples": 6144,
        "quick_samples": 512,
        "warmup_batches": 4,
        "params": 1_392_097,
        "torch_extra_params": 4 * 128 + 4 * 32,
    },
}
FRAMEWORKS = ("pyfuncnet", "keras", "torch", "keras-torch")
DEFAULT_FRAMEWORKS = ("pyfuncnet", "keras", "torch")
LABELS = {"pyfuncnet": "pyfuncnet", "keras": "keras 3 (jax)", "torch": "pytorch", "keras-torch": "keras 3 (torch)"}
KERAS_BACKENDS = {"keras": "jax", "keras-torch": "torch"}
# Prefix of the worker's report line, so that whatever a library prints is ignored.
REPORT_TAG = "BENCH_TEXT_REPORT "
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_PYFUNCNET_PYTHON = os.path.join(REPO, ".venv", "bin", "python")
DEFAULT_PEER_PYTHON = "/work/kvenv/bin/python"


# ---------------------------------------------------------------- data


def make_data(name, n):
    """The training set of model `name` as NumPy arrays: (inputs, targets), each a dict
    by input / output name (qa's single output is called "answer" here)."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    if name == "qa":
        inputs = {
            "text": rng.integers(1, VOCAB, size=(n, QA_TEXT_LEN), dtype=np.int32),
            "question": rng.integers(1, VOCAB, size=(n, QA_QUESTION_LEN), dtype=np.int32),
        }
        answers = rng.integers(0, QA_ANSWERS, size=n)
        return inputs, {"answer": np.eye(QA_ANSWERS, dtype=np.float32)[answers]}
    inputs = {
        "title": rng.integers(1, VOCAB, size=(n, TICKET_TITLE_LEN), dtype=np.int32),
        "body": rng.integers(1, VOCAB, size=(n, TICKET_BODY_LEN), dtype=np.int32),
        "tags": rng.integers(0, 2, size=(n, TICKET_TAGS)).astype(np.float32),
    }
    targets = {
        "priority": rng.random((n, 1), dtype=np.float32),
        "department": rng.integers(0, 2, size=(n, TICKET_DEPARTMENTS)).astype(np.float32),
    }
    return inputs, targets


# ---------------------------------------------------------------- framework adapters
# Each adapter: build(name) -> model; data(name, inputs, targets) -> the training set
# in the framework's own form (converted before any clock starts); fit(model, data,
# count, batch) runs one epoch over the first `count` samples; params(model) -> its
# parameter count; info() -> versions and thread settings.


def build_keras_qa(keras):
    """The question-answering model of the functional API guide, compiled."""
    layers = keras.layers
    text_input = keras.Input(shape=(None,), dtype="int32", name="text")
    embedded_text = layers.Embedding(VOCAB, 64)(text_input)
    encoded_text = layers.LSTM(32)(embedded_text)
    question_input = keras.Input(shape=(None,), dtype="int32", name="question")
    embedded_question = layers.Embedding(VOCAB, 32)(question_input)
    encoded_question = layers.LSTM(16)(embedded_question)
    concatenated = layers.concatenate([encoded_text, encoded_question], axis=-1)
    answer = layers.Dense(QA_ANSWERS, activation="softmax")(concatenated)
    model = keras.Model([text_input, question_input], answer)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["acc"])
    return model


def build_keras_ticket(keras):
    """The ticket-routing model of the functional API guide, compiled."""
    layers = keras.layers
    title_input = keras.Input(shape=(None,), name="title")
    body_input = keras.Input(shape=(None,), name="body")
    tags_input = keras.Input(shape=(TICKET_TAGS,), name="tags")
    title_features = layers.LSTM(128)(layers.Embedding(VOCAB, 64)(title_input))
    body_features = layers.LSTM(32)(layers.Embedding(VOCAB, 64)(body_input))
    x = layers.concatenate([title_features, body_features, tags_input])
    priority_pred = layers.Dense(1, name="priority")(x)
    department_pred = layers.Dense(TICKET_DEPARTMENTS, name="department")(x)
    model = keras.Model(inputs=[title_input, body_input, tags_input], outputs=[priority_pred, department_pred])
    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss={
            "priority": keras.losses.BinaryCrossentropy(from_logits=True),
            "department": keras.losses.CategoricalCrossentropy(from_logits=True),
        },
        loss_weights={"priority": 1.0, "department": 0.2},
    )
    return model


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

    def build(self, name):
        return build_keras_qa(self.keras) if name == "qa" else build_keras_ticket(self.keras)

    def data(self, name, inputs, targets):
        # qa has one output: its targets are the bare array.
        return inputs, targets["answer"] if name == "qa" else targets

    def fit(self, model, data, count, batch):
        inputs, targets = data
        x = {k: v[:count] for k, v in inputs.items()}
        y = {k: v[:count] for k, v in targets.items()} if isinstance(targets, dict) else targets[:count]
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=True, verbose=0)

    def params(self, model):
        return int(model.count_params())

    def info(self):
        if self.module_name == "pyfuncnet":
            from pyfuncnet import config

            return {"build_info": config.build_info()}
        backend = self.keras.backend.backend()
        out = {"keras": self.keras.__version__, "backend": backend}
        if backend == "jax":
            import jax

            out.update(jax=jax.__version__, jax_devices=[str(d) for d in jax.devices()])
        else:
            import torch

            out.update(torch=torch.__version__, num_threads=torch.get_num_threads())
        return out


class TorchAPI:
    """The same models and epoch as a plain PyTorch eager loop."""

    def __init__(self, threads):
        import torch

        self.torch = torch
        torch.set_num_threads(threads)
        # Like for like: XLA and pyfuncnet flush subnormals. Without this, RMSprop
        # slots whose gradient stays 0 (embedding rows not seen lately) decay into
        # subnormals and PyTorch slows down epoch after epoch (see bench_mlp.py).
        torch.set_flush_denormal(True)

    def build(self, name):
        torch = self.torch
        nn = torch.nn
        functional = torch.nn.functional

        def last_hidden(lstm, x):
            # The final hidden state of the (single-layer) LSTM: what Keras's LSTM
            # returns without return_sequences.
            _, (h, _) = lstm(x)
            return h[-1]

        class QuestionAnswering(nn.Module):
            def __init__(self):
                super().__init__()
                self.text_embedding = nn.Embedding(VOCAB, 64)
                self.text_lstm = nn.LSTM(64, 32, batch_first=True)
                self.question_embedding = nn.Embedding(VOCAB, 32)
                self.question_lstm = nn.LSTM(32, 16, batch_first=True)
                self.answer = nn.Linear(32 + 16, QA_ANSWERS)

            def forward(self, text, question):
                encoded_text = last_hidden(self.text_lstm, self.text_embedding(text))
                encoded_question = last_hidden(self.question_lstm, self.question_embedding(question))
                return {"answer": self.answer(torch.cat([encoded_text, encoded_question], dim=1))}

        class TicketRouting(nn.Module):
            def __init__(self):
                super().__init__()
                self.title_embedding = nn.Embedding(VOCAB, 64)
                self.title_lstm = nn.LSTM(64, 128, batch_first=True)
                self.body_embedding = nn.Embedding(VOCAB, 64)
                self.body_lstm = nn.LSTM(64, 32, batch_first=True)
                features = 128 + 32 + TICKET_TAGS
                self.priority = nn.Linear(features, 1)
                self.department = nn.Linear(features, TICKET_DEPARTMENTS)

            def forward(self, title, body, tags):
                title_features = last_hidden(self.title_lstm, self.title_embedding(title))
                body_features = last_hidden(self.body_lstm, self.body_embedding(body))
                x = torch.cat([title_features, body_features, tags], dim=1)
                return {"priority": self.priority(x), "department": self.department(x)}

        def qa_objective(outputs, targets):
            """The loss and the sums the epoch tracks: loss and correct answers."""
            logits, labels = outputs["answer"], targets["answer"]
            loss = functional.cross_entropy(logits, labels)
            return loss, {"loss": loss.detach() * len(labels), "acc": (logits.detach().argmax(dim=1) == labels).sum()}

        def ticket_objective(outputs, targets):
            """The weighted loss and the sums the epoch tracks: the total and each output's loss."""
            priority = functional.binary_cross_entropy_with_logits(outputs["priority"], targets["priority"])
            # Float targets are class probabilities: -sum(y * log_softmax(logits)), batch mean.
            department = functional.cross_entropy(outputs["department"], targets["department"])
            loss = 1.0 * priority + 0.2 * department
            count = len(targets["priority"])
            tracked = {"loss": loss.detach() * count, "priority_loss": priority.detach() * count, "department_loss": department.detach() * count}
            return loss, tracked

        net = QuestionAnswering() if name == "qa" else TicketRouting()
        # Keras's RMSprop defaults (rho 0.9, epsilon 1e-7), not PyTorch's (0.99, 1e-8).
        optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
        return net, optimizer, qa_objective if name == "qa" else ticket_objective

    def data(self, name, inputs, targets):
        import numpy as np

        torch = self.torch

        def tensor(a):
            # Token indices as int64 (nn.Embedding's usual index type), once, outside the clock.
            return torch.from_numpy(a.astype(np.int64) if a.dtype.kind == "i" else a)

        if name == "qa":
            # Class indices for cross_entropy, from the one-hot answers.
            targets = {"answer": targets["answer"].argmax(axis=1)}
        return {k: tensor(v) for k, v in inputs.items()}, {k: tensor(v) for k, v in targets.items()}

    def fit(self, model, data, count, batch):
        torch = self.torch
        net, optimizer, objective = model
        inputs, targets = data
        net.train()
        order = torch.randperm(count)
        sums = {}
        for start in range(0, count, batch):
            idx = order[start : start + batch]
            xb = {k: v[idx] for k, v in inputs.items()}
            yb = {k: v[idx] for k, v in targets.items()}
            optimizer.zero_grad(set_to_none=True)
            loss, tracked = objective(net(**xb), yb)
            loss.backward()
            optimizer.step()
            # What Keras's loss trackers and metrics do each step.
            for k, v in tracked.items():
                sums[k] = sums[k] + v if k in sums else v
        return {k: v.item() / count for k, v in sums.items()}

    def params(self, model):
        return sum(p.numel() for p in model[0].parameters())

    def info(self):
        torch = self.torch
        return {"torch": torch.__version__, "num_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}


def make_adapter(framework, threads):
    """The adapter of `framework`; raises ImportError when it is not installed."""
    if framework == "torch":
        return TorchAPI(threads)
    return KerasAPI("pyfuncnet" if framework == "pyfuncnet" else "keras")


# ---------------------------------------------------------------- worker


def first_line(err):
    """`Type: first line of the message`."""
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"


def samples_per_model(models, samples_text, quick):
    """{model: samples per epoch}: `--samples` (one count for all, or one per model),
    else the model's default."""
    key = "quick_samples" if quick else "samples"
    if not samples_text:
        return {m: MODELS[m][key] for m in models}
    counts = parse_ints(samples_text)
    if len(counts) == 1:
        counts = counts * len(models)
    if len(counts) != len(models):
        raise ValueError(f"--samples: expected one count or one per model ({len(models)}), got {samples_text!r}")
    return dict(zip(models, counts))


def measure(adapter, name, model, n, repeat):
    """Training samples/s of model `name` (already built) over `n` samples."""
    spec = MODELS[name]
    batch = spec["batch"]
    data = adapter.data(name, *make_data(name, n))
    adapter.fit(model, data, warmup_size(n, batch, spec["warmup_batches"]), batch)
    times = [timed(lambda: adapter.fit(model, data, n, batch)) for _ in range(repeat)]
    return {"value": n / statistics.median(times), "times_s": times, "batch": batch, "samples": n}


def worker(args):
    """Measures one framework at one thread count on each model; prints the report as one JSON line."""
    models = args.models.split(",")
    samples = samples_per_model(models, args.samples, args.quick)
    report = {"framework": args.worker, "threads": args.threads, "cpus": sorted(os.sched_getaffinity(0)), "samples": samples}
    try:
        adapter = make_adapter(args.worker, args.threads)
    except Exception as err:
        report["skipped"] = first_line(err)
        print(REPORT_TAG + json.dumps(report), flush=True)
        return
    results, params, skipped, failed = {}, {}, {}, {}
    for name in models:
        try:
            # pyfuncnet fails here until it has every layer of the model.
            model = adapter.build(name)
        except Exception as err:
            skipped[name] = first_line(err)
            continue
        params[name] = adapter.params(model)
        try:
            results[f"train_{name}"] = measure(adapter, name, model, samples[name], args.repeat)
        except Exception as err:
            failed[name] = first_line(err)
            report.setdefault("tracebacks", {})[name] = traceback.format_exc()
    notes = [f"{m}: skipped, {text}" for m, text in skipped.items()] + [f"{m}: failed in training, {text}" for m, text in failed.items()]
    if results:
        report["results"] = results
        report["info"] = dict(adapter.info(), params=params)
        if notes:
            report["model_notes"] = notes
    elif failed:
        report["error"] = "; ".join(notes)
    else:
        report["skipped"] = "; ".join(notes)
    print(REPORT_TAG + json.dumps(report), flush=True)


# ---------------------------------------------------------------- driver


def run_worker(args, framework, threads, cpus):
    """Runs one worker; returns its report with when it ran and how busy the machine was."""
    worker_args = ["--models", args.models, "--repeat", str(args.repeat)]
    worker_args += ["--quick"] * args.quick + (["--samples", args.samples] if args.samples else [])
    env = common.worker_env(threads, KERAS_BACKENDS.get(framework))
    return common.run_worker(args, __file__, framework, threads, cpus, worker_args, env, REPORT_TAG)


def table_rows(models):
    """The table's rows as (result key, label, True where larger is better)."""
    return [(f"train_{m}", f"{m} ({MODELS[m]['title']}) train b={MODELS[m]['batch']} (samples/s)", True) for m in models]


def no_target(key, threads, values):
    """No targets have been set for these models yet."""
    return "-", None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--models", default=",".join(MODELS), help="any of " + ",".join(MODELS) + " (default both)")
    defaults = ", ".join(f"{m} {s['samples']} ({s['quick_samples']} with --quick)" for m, s in MODELS.items())
    parser.add_argument("--samples", help=f"training samples per epoch: one count for every model or one per model, in --models order (default {defaults})")
    parser.add_argument("--frameworks", default=",".join(DEFAULT_FRAMEWORKS), help="any of " + ",".join(FRAMEWORKS) + f" (default {','.join(DEFAULT_FRAMEWORKS)})")
    parser.add_argument("--repeat", type=int, default=3, help="timed epochs per measurement; the median is reported")
    parser.add_argument("--rounds", type=int, default=1, help="times every worker runs, interleaved; the table shows the median over rounds")
    parser.add_argument("--busy", type=int, default=0, help="processes kept spinning during the run")
    parser.add_argument("--quick", action="store_true", help="the smaller sample counts (smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement to this JSON file")
    parser.add_argument("--pyfuncnet-python", default=DEFAULT_PYFUNCNET_PYTHON, help=f"interpreter that imports pyfuncnet (default {DEFAULT_PYFUNCNET_PYTHON})")
    parser.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON, help=f"interpreter that imports keras, jax and torch (default {DEFAULT_PEER_PYTHON})")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1 or args.rounds < 1:
        parser.error(f"--repeat and --rounds must be at least 1, got {args.repeat} and {args.rounds}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models) or len(set(models)) != len(models):
        parser.error(f"--models: expected distinct names among {','.join(MODELS)}, got {args.models!r}")
    args.models = ",".join(models)
    try:
        samples = samples_per_model(models, args.samples, args.quick)
    except ValueError as err:
        parser.error(str(err))
    if args.worker:
        args.threads = int(args.threads)
        worker(args)
        return
    try:
        threads_list = parse_ints(args.threads)
    except ValueError as err:
        parser.error(str(err))
    frameworks = common.parse_frameworks(parser, args.frameworks, FRAMEWORKS)
    cpus = common.usable_cpus(parser, threads_list, args.threads)
    pythons = {"pyfuncnet": ("--pyfuncnet-python", args.pyfuncnet_python)}
    for framework in frameworks:
        option, python = pythons.get(framework, ("--peer-python", args.peer_python))
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            parser.error(f"{option}: {python} is not an executable file (needed for {framework})")

    with common.spinners(args.busy):
        # Rounds interleave the workers, so that a slow spell on the machine
        # spreads over every framework instead of hitting one.
        runs = [run_worker(args, f, t, cpus) for _ in range(args.rounds) for t in threads_list for f in frameworks]
    reports = common.combine_rounds(runs)
    per_model = ", ".join(f"{m} {MODELS[m]['params']:,} params, {samples[m]:,} samples" for m in models)
    print(f"\n## Text models ({per_model} per epoch), {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{args.busy} spinning process(es), median of {args.repeat} epoch(s) and {args.rounds} round(s)")
    common.print_comparison(reports, frameworks, LABELS, table_rows(models), no_target)
    if len(threads_list) > 1:
        common.print_thread_scaling(reports, frameworks, LABELS, table_rows(models), args.busy)
    # What combine_rounds keeps only for workers that measured nothing: models a
    # framework skipped or failed while it measured the others.
    notes = sorted({(r["framework"], r["threads"], note) for r in runs for note in r.get("model_notes", [])})
    for framework, threads, note in notes:
        print(f"\n{framework} at {threads} thread(s): {note}")
    wrong = set()
    for r in runs:
        for name, params in r.get("info", {}).get("params", {}).items():
            expected = MODELS[name]["params"] + (MODELS[name]["torch_extra_params"] if r["framework"] == "torch" else 0)
            if params != expected:
                wrong.add((r["framework"], name, params, expected))
    for framework, name, params, expected in sorted(wrong):
        print(f"\n**{LABELS[framework]} built {name} with {params:,} parameters, not {expected:,}: not the same model.**")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "busy": args.busy, "samples": samples, "combined": reports, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
