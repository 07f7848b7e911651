//! The test oracle: a naive triple loop accumulating in f64.

use super::{check_shapes, Epilogue, MatMut, MatRef};
use crate::error::Result;

/// `C <- epilogue(alpha * A * B + beta * C)` by the textbook loop, accumulating each
/// dot product in `f64` (so it is more accurate than any fast kernel).
///
/// Same semantics as [`super::sgemm`]: `beta == 0` never reads C, the bias is added
/// and the activation applied to each full row once the row is computed. Slow:
/// meant for tests, including those of other crates.
///
/// # Errors
/// The shape and buffer errors of [`super::sgemm`].
pub fn sgemm_reference(
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: MatMut,
    epilogue: &Epilogue,
) -> Result<()> {
    let (m, n, k) = check_shapes(&a, &b, &c, epilogue)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    for i in 0..m {
        let row = &mut c.data[i * c.ldc..i * c.ldc + n];
        for (j, x) in row.iter_mut().enumerate() {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += f64::from(a.at(i, p)) * f64::from(b.at(p, j));
            }
            let mut v = f64::from(alpha) * acc;
            if beta != 0.0 {
                v += f64::from(beta) * f64::from(*x);
            }
            *x = v as f32;
        }
        epilogue.apply(row, 0);
    }
    Ok(())
}
