//! A steady-state training step makes no heap allocation (its own test binary:
//! the counting allocator is process-wide).

mod common;

use pyfuncnet_graph::optim::{OptimizerConfig, OptimizerState};
use pyfuncnet_graph::program::{CompiledStep, Mode, Variables};
use pyfuncnet_graph::tensor::{DataRef, TensorRef};
use pyfuncnet_kernels::alloc_count::{allocations, CountingAllocator};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Trains `spec` for 10 steps, then counts the allocations of 10 more.
fn steady_state_allocations(
    spec: &str,
    mut vars: Variables,
    batch: usize,
    features: usize,
) -> usize {
    let mut step = CompiledStep::compile(spec, Mode::Train).unwrap();
    let config = OptimizerConfig::from_json(&serde_json::json!({"name": "adam"})).unwrap();
    let sizes: Vec<usize> = vars.values.iter().map(Vec::len).collect();
    let mut state = OptimizerState::new(&config, &sizes);
    let (x, y) = common::mlp_batch(batch, features, 11);
    let (x_shape, y_shape) = ([batch, features], [batch]);
    let inputs = [
        TensorRef::new_f32(&x_shape, &x),
        TensorRef {
            shape: &y_shape,
            data: DataRef::I32(&y),
        },
    ];
    // One-time set-up (each thread's scratch buffers, reached by the first
    // sections) is not steady state: run a few steps first.
    for _ in 0..10 {
        step.train(&inputs, &mut vars, &config, &mut state, 1e-3)
            .unwrap();
    }
    let before = allocations();
    for _ in 0..10 {
        step.train(&inputs, &mut vars, &config, &mut state, 1e-3)
            .unwrap();
    }
    allocations() - before
}

#[test]
fn steady_state_train_step_does_not_allocate() {
    let dims = [784, 64, 64, 10];
    for batch in [64, 256] {
        let made = steady_state_allocations(
            &common::mlp_spec(batch, &dims),
            common::mlp_variables(&dims),
            batch,
            dims[0],
        );
        assert_eq!(
            made, 0,
            "MLP batch {batch}: 10 steady-state steps made {made} heap allocations"
        );
    }
    // Independent towers: stages of small nodes run side by side.
    let made = steady_state_allocations(
        &common::towers_spec(32, 128, 64, 6),
        common::towers_variables(128, 64, 6),
        32,
        128,
    );
    assert_eq!(
        made, 0,
        "towers: 10 steady-state steps made {made} heap allocations"
    );
}
