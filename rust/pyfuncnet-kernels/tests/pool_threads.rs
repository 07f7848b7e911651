//! Pooling and its gradients give bitwise-identical results for any thread count.
//!
//! In its own test binary because it replaces the global thread pool.

mod common;

use pyfuncnet_kernels::par;
use pyfuncnet_kernels::pool::{avg_pool, avg_pool_grad, max_pool, max_pool_grad, PoolShape};
use pyfuncnet_kernels::window::{Padding, Window};

use common::values;

/// Every output of the four kernels at the given thread count, as bits.
fn outputs(threads: usize, shape: &PoolShape) -> Vec<Vec<u32>> {
    par::set_num_threads(threads).unwrap();
    par::watch_machine_load(false);
    assert_eq!(par::num_threads(), threads);
    let w = &shape.window;
    let nx = shape.batch * w.input_pixels() * shape.channels;
    let ny = shape.batch * w.output_pixels() * shape.channels;
    // Coarse values, so that windows hold ties and overlapping windows add up.
    let x: Vec<f32> = values(nx, 1).iter().map(|v| (v * 8.0).round()).collect();
    let dy = values(ny, 2);
    let mut max_y = vec![0.0; ny];
    max_pool(shape, &x, &mut max_y).unwrap();
    let mut max_dx = vec![0.0; nx];
    max_pool_grad(shape, &x, &max_y, &dy, &mut max_dx).unwrap();
    let mut avg_y = vec![0.0; ny];
    avg_pool(shape, &x, &mut avg_y).unwrap();
    let mut avg_dx = vec![0.0; nx];
    avg_pool_grad(shape, &dy, &mut avg_dx).unwrap();
    [max_y, max_dx, avg_y, avg_dx]
        .iter()
        .map(|v| v.iter().map(|f| f.to_bits()).collect())
        .collect()
}

/// `batch` images of `channels` channels under a window of dilation 1.
fn shape(
    batch: usize,
    channels: usize,
    input: &[usize],
    size: &[usize],
    stride: &[usize],
    padding: Padding,
) -> PoolShape {
    let dilation = vec![1; input.len()];
    PoolShape {
        batch,
        channels,
        window: Window::new("test", input, size, stride, &dilation, padding).unwrap(),
    }
}

#[test]
fn pooling_is_bitwise_identical_for_1_2_and_3_threads() {
    let cases = [
        shape(8, 16, &[32, 32], &[3, 3], &[2, 2], Padding::Same),
        shape(16, 24, &[200], &[4], &[1], Padding::Valid),
        shape(4, 8, &[10, 12, 9], &[3, 2, 3], &[2, 1, 2], Padding::Same),
    ];
    for shape in cases {
        let input = shape.window.input;
        assert!(
            shape.forward_tasks() > 1 && shape.grad_tasks() > 1,
            "{input:?}: the case must split into several tasks"
        );
        let one = outputs(1, &shape);
        for threads in [2, 3] {
            let many = outputs(threads, &shape);
            for (k, (a, b)) in one.iter().zip(&many).enumerate() {
                assert!(
                    a == b,
                    "output {k} of {input:?} differs between 1 and {threads} threads"
                );
            }
        }
    }
}
