//! Convolution throughput on the toy ResNet's layers (CIFAR-10, batch 64): the
//! forward pass, the input gradient and the kernel gradient of each 3x3 layer.
//!
//! Throughput is declared in flops (`2 * rows * taps*cin * cout` per pass), so
//! criterion's `Gelem/s` reads as GFLOP/s. Run one thread count at a time, e.g.
//! `PYFUNCNET_NUM_THREADS=1 cargo bench -p pyfuncnet-benches --bench conv`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pyfuncnet_benches::values;
use pyfuncnet_kernels::conv::{self, ConvShape};
use pyfuncnet_kernels::gemm::Epilogue;
use pyfuncnet_kernels::window::{Padding, Window};

/// (name, input height/width, input channels, filters, padding) of each 3x3 layer.
const LAYERS: [(&str, usize, usize, usize, Padding); 4] = [
    ("32x32x3-32", 32, 3, 32, Padding::Valid),
    ("30x30x32-64", 30, 32, 64, Padding::Valid),
    ("9x9x64-64same", 9, 64, 64, Padding::Same),
    ("9x9x64-64", 9, 64, 64, Padding::Valid),
];
const BATCH: usize = 64;

fn resnet_convs(c: &mut Criterion) {
    for (name, hw, cin, cout, padding) in LAYERS {
        let window = Window::new("bench", &[hw, hw], &[3, 3], &[1, 1], &[1, 1], padding).unwrap();
        let shape = ConvShape::new("bench", BATCH, window, cin, cout, 1).unwrap();
        let x = values(shape.input_len(), 1);
        let k = values(shape.kernel_len(), 2);
        let dy = values(shape.output_len(), 3);
        let bias = values(cout, 4);
        let (mut y, mut dx, mut dk) = (
            vec![0.0; shape.output_len()],
            vec![0.0; shape.input_len()],
            vec![0.0; shape.kernel_len()],
        );
        let relu = |row: &mut [f32]| row.iter_mut().for_each(|v| *v = v.max(0.0));
        let ep = Epilogue {
            bias: Some(&bias),
            activation: Some(&relu),
        };
        let mut g = c.benchmark_group("conv_resnet_b64");
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Elements(shape.flops() as u64));
        g.bench_with_input(BenchmarkId::new("forward", name), &(), |b, _| {
            {
                b.iter(|| conv::conv_forward(&shape, black_box(&x), &k, &ep, &mut y).unwrap())
            }
        });
        g.bench_with_input(BenchmarkId::new("input_grad", name), &(), |b, _| {
            {
                b.iter(|| conv::conv_backward_input(&shape, black_box(&dy), &k, &mut dx).unwrap())
            }
        });
        g.bench_with_input(BenchmarkId::new("kernel_grad", name), &(), |b, _| {
            {
                b.iter(|| conv::conv_backward_kernel(&shape, black_box(&x), &dy, &mut dk).unwrap())
            }
        });
        g.finish();
    }
}

criterion_group!(benches, resnet_convs);
criterion_main!(benches);
