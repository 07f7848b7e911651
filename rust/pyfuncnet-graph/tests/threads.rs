//! Training results are bitwise identical for 1, 2 and 3 threads (own test binary:
//! it changes the global thread count).

mod common;

use pyfuncnet_graph::optim::{OptimizerConfig, OptimizerState};
use pyfuncnet_graph::program::{CompiledStep, Mode};
use pyfuncnet_graph::tensor::{DataRef, TensorRef};
use pyfuncnet_kernels::par;

fn train(threads: usize) -> (Vec<Vec<f32>>, Vec<f32>) {
    par::set_num_threads(threads).unwrap();
    let dims = [784, 256, 128, 10];
    let batch = 96;
    let mut step = CompiledStep::compile(&common::mlp_spec(batch, &dims), Mode::Train).unwrap();
    let mut vars = common::mlp_variables(&dims);
    let config = OptimizerConfig::from_json(&serde_json::json!({"name": "rmsprop"})).unwrap();
    let sizes: Vec<usize> = vars.values.iter().map(Vec::len).collect();
    let mut state = OptimizerState::new(&config, &sizes);
    let mut losses = Vec::new();
    for s in 0..4 {
        let (x, y) = common::mlp_batch(batch, dims[0], 20 + s);
        let (x_shape, y_shape) = ([batch, dims[0]], [batch]);
        let inputs = [
            TensorRef::new_f32(&x_shape, &x),
            TensorRef {
                shape: &y_shape,
                data: DataRef::I32(&y),
            },
        ];
        par::install(|| step.train(&inputs, &mut vars, &config, &mut state, 1e-3)).unwrap();
        losses.push(step.loss().unwrap());
    }
    (vars.values, losses)
}

#[test]
fn training_is_bitwise_identical_for_any_thread_count() {
    let (w1, l1) = train(1);
    for threads in [2, 3] {
        let (w, l) = train(threads);
        assert_eq!(l, l1, "losses differ with {threads} threads");
        for (a, b) in w.iter().zip(&w1) {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "weights differ with {threads} threads"
            );
        }
    }
}
