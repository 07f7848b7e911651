//! Convolution forward and both gradients are bitwise identical for 1, 2 and 3
//! threads. In its own test binary because it replaces the global thread pool.

mod common;

use pyfuncnet_kernels::conv::{self, ConvShape};
use pyfuncnet_kernels::gemm::Epilogue;
use pyfuncnet_kernels::par;
use pyfuncnet_kernels::window::{Padding, Window};

use common::values;

fn run(threads: usize, shape: &ConvShape) -> [Vec<f32>; 3] {
    par::set_num_threads(threads).unwrap();
    par::watch_machine_load(false);
    let (x, k, b, dy) = (
        values(shape.input_len(), 1),
        values(shape.kernel_len(), 2),
        values(shape.out_channels, 3),
        values(shape.output_len(), 4),
    );
    let mut y = vec![0.0; shape.output_len()];
    let ep = Epilogue {
        bias: Some(&b),
        activation: None,
    };
    conv::conv_forward(shape, &x, &k, &ep, &mut y).unwrap();
    let mut dx = vec![0.0; shape.input_len()];
    conv::conv_backward_input(shape, &dy, &k, &mut dx).unwrap();
    let mut dk = vec![0.0; shape.kernel_len()];
    conv::conv_backward_kernel(shape, &x, &dy, &mut dk).unwrap();
    [y, dx, dk]
}

#[test]
fn convolution_is_bitwise_identical_for_1_2_and_3_threads() {
    // The toy ResNet's second convolution at batch 8 (several tiles and
    // kernel-gradient chunks), one of its 9 x 9 'same' layers at batch 5 (Winograd
    // tasks of several images, the last one shorter), a strided 'same' one, and a
    // pointwise one.
    let cases = [
        (8, [30, 30], [3, 3], [1, 1], Padding::Valid, 32, 64),
        (5, [9, 9], [3, 3], [1, 1], Padding::Same, 64, 64),
        (5, [17, 16], [3, 3], [2, 2], Padding::Same, 16, 24),
        (6, [20, 20], [1, 1], [1, 1], Padding::Valid, 64, 32),
    ];
    for (batch, input, size, stride, padding, cin, cout) in cases {
        let w = Window::new("t", &input, &size, &stride, &[1, 1], padding).unwrap();
        let shape = ConvShape::new("t", batch, w, cin, cout, 1).unwrap();
        let one = run(1, &shape);
        for threads in [2, 3] {
            let many = run(threads, &shape);
            for (i, (a, b)) in one.iter().zip(&many).enumerate() {
                assert!(
                    a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
                    "result {i} of {shape:?} differs with {threads} threads"
                );
            }
        }
    }
}
