"""`ops.matmul` against float64 NumPy within the K-scaled float32 error bound, over
shapes around the GEMM tile sizes, all transpose combinations, batch broadcasting,
1-D operands, and under each SIMD level (forced with PYFUNCNET_SIMD in a subprocess)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import make_array, shapes
from pyfuncnet import config, ops

U32 = 2.0**-24  # float32 unit roundoff

# Around the micro-tiles (scalar 4x8, AVX2 6x16), the small-path cutoff (64) and the
# cache blocks (KC 256, MC 192).
EDGE_DIMS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 191, 192, 193, 255, 256, 257)


def assert_matmul_close(got, a, b):
    """|got - a@b| <= (K + 2) u (|a| @ |b|) elementwise, the classical bound for a
    float32 dot product of length K (any summation order, with or without FMA)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = np.matmul(a64, b64)
    k = a.shape[-1] if a.ndim else 1
    bound = (k + 2) * U32 * np.matmul(np.abs(a64), np.abs(b64)) + 1e-30
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    err = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else None
    assert np.all(err <= bound), f"error {err[worst]} > bound {bound[worst]} at {worst} (K={k})"


def operand(shape, transposed, seed):
    """An array of `shape`, as a transposed view of a (.., n, m) array when asked."""
    if transposed and len(shape) >= 2:
        base = make_array(shape[:-2] + (shape[-1], shape[-2]), "c", seed)
        return np.swapaxes(base, -1, -2)
    return make_array(shape, "c", seed)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@given(
    m=st.sampled_from(EDGE_DIMS),
    k=st.sampled_from(EDGE_DIMS),
    n=st.sampled_from(EDGE_DIMS),
    seed=st.integers(0, 2**32 - 1),
)
def test_2d_all_transpose_combinations(ta, tb, m, k, n, seed):
    a, b = operand((m, k), ta, seed), operand((k, n), tb, seed + 1)
    assert_matmul_close(ops.matmul(a, b), a, b)


@pytest.mark.parametrize(
    "m,k,n",
    [
        (0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0), (1, 1, 1),  # empty and trivial
        (65, 65, 65), (193, 257, 65), (200, 300, 150), (257, 129, 191),  # past the small-path cutoff
    ],
)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_edge_shapes(m, k, n, ta, tb):
    # K = 0 gives zeros; the larger ones take the packed (blocked) path.
    a, b = operand((m, k), ta, m * 7 + k), operand((k, n), tb, n * 3 + 1)
    assert_matmul_close(ops.matmul(a, b), a, b)


@given(
    data=st.data(),
    layouts=st.tuples(st.sampled_from(["c", "s"]), st.sampled_from(["c", "s"])),
)
def test_strided_operands(data, layouts):
    m, k, n = (data.draw(st.sampled_from(EDGE_DIMS[:18])) for _ in range(3))
    a = make_array((m, k), layouts[0], data.draw(st.integers(0, 1000)))
    b = make_array((k, n), layouts[1], data.draw(st.integers(0, 1000)))
    sub = a[::2] if m > 1 and data.draw(st.booleans()) else a
    assert_matmul_close(ops.matmul(sub, b), sub, b)


@given(data=st.data())
def test_batch_broadcasting(data):
    batch = data.draw(shapes(min_dims=1, max_dims=3, max_size=24, dims=(1, 2, 3, 4)))
    m, k, n = (data.draw(st.sampled_from([1, 2, 5, 8, 9, 17, 33])) for _ in range(3))
    ba = tuple(d if data.draw(st.booleans()) else 1 for d in batch)
    bb = tuple(d if data.draw(st.booleans()) else 1 for d in batch)
    ba = ba[data.draw(st.integers(0, len(ba))):]
    bb = bb[data.draw(st.integers(0, len(bb))):]
    seed = data.draw(st.integers(0, 2**31))
    a = operand(ba + (m, k), data.draw(st.booleans()), seed)
    b = operand(bb + (k, n), data.draw(st.booleans()), seed + 1)
    assert_matmul_close(ops.matmul(a, b), a, b)


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((5,), (5,)), ((1,), (1,)), ((0,), (0,)), ((7,), (7, 3)),
        ((4, 9), (9,)), ((3, 2, 17), (17,)), ((17,), (4, 17, 6)), ((33,), (2, 3, 33, 1)),
    ],
)
def test_1d_operands(sa, sb):
    a, b = make_array(sa, "c", 1), make_array(sb, "c", 2)
    assert_matmul_close(ops.matmul(a, b), a, b)


def test_scalar_operands_are_rejected():
    with pytest.raises(ValueError):
        ops.matmul(np.float32(2.0), np.ones((2, 2), np.float32))


_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import pyfuncnet
    from pyfuncnet import ops

    rng = np.random.default_rng(0)
    shapes = [((37, 129), (129, 45)), ((200, 300), (300, 150))]
    arrays = [tuple(rng.uniform(-1, 1, s).astype(np.float32) for s in pair) for pair in shapes]
    np.savez(sys.argv[1], **{f"p{i}": ops.matmul(a, b) for i, (a, b) in enumerate(arrays)},
             **{f"a{i}": a for i, (a, _) in enumerate(arrays)}, **{f"b{i}": b for i, (_, b) in enumerate(arrays)})
    sys.stdout.write("simd=" + pyfuncnet.config.build_info()["simd"] + "\\n")
    """
)


def _run_with_simd(level, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYFUNCNET_SIMD"}
    if level is not None:
        env["PYFUNCNET_SIMD"] = level
    out = tmp_path / "products.npz"
    cmd = [sys.executable, "-c", _SCRIPT, str(out)]
    # Run outside the source tree, so the child imports the installed package.
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, np.load(out)


@pytest.mark.parametrize("level", ["scalar", "detected"])
def test_simd_level_runs_and_matches(level, tmp_path):
    detected = config.build_info()["simd_detected"]
    forced = detected if level == "detected" else level
    stdout, res = _run_with_simd(None if level == "detected" else forced, tmp_path)
    assert f"simd={forced}\n" in stdout, f"expected the {forced} kernels to run, subprocess printed {stdout!r}"
    for i in range(2):
        try:
            assert_matmul_close(res[f"p{i}"], res[f"a{i}"], res[f"b{i}"])
        except AssertionError as e:
            raise AssertionError(f"SIMD level {forced}, product {i}: {e}") from None


def test_unknown_simd_value_falls_back_to_detected(tmp_path):
    detected = config.build_info()["simd_detected"]
    stdout, res = _run_with_simd("no-such-level", tmp_path)
    assert f"simd={detected}\n" in stdout, stdout
    assert_matmul_close(res["p0"], res["a0"], res["b0"])
