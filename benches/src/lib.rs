//! What the GEMM benchmarks share (the criterion bench `benches/gemm.rs` and the
//! quick `examples/gemm_gflops.rs`): the benchmarked shapes and their operands.

use pyfuncnet_kernels::gemm::MatRef;

/// Deterministic values in [-1, 1).
pub fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// One benchmarked product: `C (m x n) = op(A) · op(B)`, with A or B stored
/// transposed when `ta` / `tb` (read through a `.t()` view, as backward passes do).
#[derive(Debug, Clone)]
pub struct Shape {
    pub name: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ta: bool,
    pub tb: bool,
}

impl Shape {
    /// `n x n` times `n x n`, named `name`.
    pub fn square(name: String, n: usize) -> Shape {
        Shape {
            name,
            m: n,
            n,
            k: n,
            ta: false,
            tb: false,
        }
    }

    /// Floating-point operations of the product.
    pub fn flops(&self) -> usize {
        2 * self.m * self.n * self.k
    }
}

/// The training products of a 784-64-64-10 MLP at batch 64 and 256, per layer:
/// forward X·W (`_x.w`), input gradient dY·Wᵀ (`_dy.wt`) and weight gradient
/// Xᵀ·dY (`_xt.dy`), named `b{batch}_{in}x{out}_...`.
pub fn mlp_shapes() -> Vec<Shape> {
    let mut out = Vec::new();
    for batch in [64, 256] {
        for (fan_in, fan_out) in [(784, 64), (64, 64), (64, 10)] {
            let layer = format!("b{batch}_{fan_in}x{fan_out}");
            let shape = |what: &str, m, n, k, ta, tb| Shape {
                name: format!("{layer}_{what}"),
                m,
                n,
                k,
                ta,
                tb,
            };
            out.push(shape("x.w", batch, fan_out, fan_in, false, false));
            out.push(shape("dy.wt", batch, fan_in, fan_out, false, true));
            out.push(shape("xt.dy", fan_in, fan_out, batch, true, false));
        }
    }
    out
}

/// The operands of a shape, stored as the shape says.
pub struct Operands {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Operands {
    pub fn new(s: &Shape) -> Operands {
        Operands {
            a: values(s.m * s.k, 1),
            b: values(s.k * s.n, 2),
        }
    }

    /// `op(A)`, `m x k`.
    pub fn a(&self, s: &Shape) -> MatRef<'_> {
        if s.ta {
            MatRef::row_major(&self.a, s.k, s.m).unwrap().t()
        } else {
            MatRef::row_major(&self.a, s.m, s.k).unwrap()
        }
    }

    /// `op(B)`, `k x n`.
    pub fn b(&self, s: &Shape) -> MatRef<'_> {
        if s.tb {
            MatRef::row_major(&self.b, s.n, s.k).unwrap().t()
        } else {
            MatRef::row_major(&self.b, s.k, s.n).unwrap()
        }
    }
}
