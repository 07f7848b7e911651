//! im2col convolution against the naive direct convolution, over random
//! geometries: 1 to 3 spatial axes, strides, dilations, every padding, groups, and
//! sizes of 1, odd sizes and sizes around the tile and SIMD widths.

mod common;

use proptest::prelude::*;
use pyfuncnet_kernels::conv::{self, ConvShape};
use pyfuncnet_kernels::gemm::Epilogue;
use pyfuncnet_kernels::window::{Padding, Window};

use common::values;

/// `|got - want| <= tol * (sum of |terms|)` elementwise, with the sum bounded by the
/// depth of the reduction (all values are in [-1, 1]) and the rounding of each term
/// taken `growth` times (1 for a direct product).
fn assert_close(what: &str, got: &[f32], want: &[f32], depth: usize, growth: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let tol = 4.0 * growth * f32::EPSILON * (depth.max(1) as f32) + 1e-6;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: got {g}, want {w} (tolerance {tol})"
        );
    }
}

#[derive(Debug, Clone)]
struct Case {
    batch: usize,
    input: Vec<usize>,
    size: Vec<usize>,
    stride: Vec<usize>,
    dilation: Vec<usize>,
    padding: Padding,
    group_in: usize,
    group_out: usize,
    groups: usize,
}

/// How many times a Winograd convolution may multiply the rounding error of each
/// term of the direct sum: its transforms scale values by up to 5 (the points ±1,
/// 2, 1/2 and -2) before the per-point products and cancel after them. Over every
/// 2-D 3 x 3 shape of 1-15 x 1-15 pixels, batches 1-3 and 16-64 channels, the worst
/// error was 1.9 (forward), 2.1 (input gradient) and 5.9 (kernel gradient) times
/// `eps` per term, against 4 for the direct product's bound.
const WINOGRAD_GROWTH: f32 = 4.0;

impl Case {
    /// Whether `conv` may run this case through its Winograd path (the conv
    /// module's rule: 2-D 3 x 3 windows, stride 1, no dilation, one group, at least
    /// 16 channels each side); its tolerance then allows [`WINOGRAD_GROWTH`].
    fn growth(&self) -> f32 {
        let winograd = self.size == [3, 3]
            && self.stride == [1, 1]
            && self.dilation == [1, 1]
            && self.groups == 1
            && self.group_in >= 16
            && self.group_out >= 16;
        if winograd {
            WINOGRAD_GROWTH
        } else {
            1.0
        }
    }

    fn shape(&self) -> Option<ConvShape> {
        let w = Window::new(
            "test",
            &self.input,
            &self.size,
            &self.stride,
            &self.dilation,
            self.padding,
        )
        .ok()?;
        Some(
            ConvShape::new(
                "test",
                self.batch,
                w,
                self.group_in * self.groups,
                self.group_out * self.groups,
                self.groups,
            )
            .unwrap(),
        )
    }
}

fn check_case(case: &Case, bias: bool) {
    let Some(shape) = case.shape() else { return };
    let x = values(shape.input_len(), 1);
    let k = values(shape.kernel_len(), 2);
    let b = values(shape.out_channels, 3);
    let dy = values(shape.output_len(), 4);
    let depth = shape.depth();

    let mut want = vec![0.0; shape.output_len()];
    conv::direct_forward(&shape, &x, &k, bias.then_some(&b[..]), &mut want).unwrap();
    let mut got = vec![f32::NAN; shape.output_len()];
    let ep = Epilogue {
        bias: bias.then_some(&b[..]),
        activation: None,
    };
    conv::conv_forward(&shape, &x, &k, &ep, &mut got).unwrap();
    let growth = case.growth();
    assert_close(&format!("forward {case:?}"), &got, &want, depth + 1, growth);

    let mut want = vec![0.0; shape.input_len()];
    conv::direct_backward_input(&shape, &dy, &k, &mut want).unwrap();
    let mut got = vec![f32::NAN; shape.input_len()];
    conv::conv_backward_input(&shape, &dy, &k, &mut got).unwrap();
    assert_close(
        &format!("input gradient {case:?}"),
        &got,
        &want,
        shape.window.taps() * shape.out_channels,
        growth,
    );

    let mut want = vec![0.0; shape.kernel_len()];
    conv::direct_backward_kernel(&shape, &x, &dy, &mut want).unwrap();
    let mut got = vec![f32::NAN; shape.kernel_len()];
    conv::conv_backward_kernel(&shape, &x, &dy, &mut got).unwrap();
    assert_close(
        &format!("kernel gradient {case:?}"),
        &got,
        &want,
        shape.rows(),
        growth,
    );
}

fn padding() -> impl Strategy<Value = Padding> {
    prop::sample::select(vec![Padding::Valid, Padding::Same, Padding::Causal])
}

fn case(max_input: usize) -> impl Strategy<Value = Case> {
    (1usize..=3)
        .prop_flat_map(move |rank| {
            (
                0usize..4,
                prop::collection::vec(1usize..max_input, rank),
                prop::collection::vec(1usize..5, rank),
                prop::collection::vec(1usize..4, rank),
                prop::collection::vec(1usize..3, rank),
                padding(),
                1usize..6,
                1usize..6,
                1usize..3,
            )
        })
        .prop_map(
            |(batch, input, size, stride, dilation, padding, group_in, group_out, groups)| {
                let padding = if padding == Padding::Causal && input.len() != 1 {
                    Padding::Same
                } else {
                    padding
                };
                Case {
                    batch,
                    input,
                    size,
                    stride,
                    dilation,
                    padding,
                    group_in,
                    group_out,
                    groups,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn conv_matches_direct_on_small_geometries(c in case(9), bias in any::<bool>()) {
        check_case(&c, bias);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Enough channels per group for the forward pass to read its patches in
    /// place, over every rank, padding, stride, dilation and group count.
    #[test]
    fn conv_reading_patches_in_place_matches_direct(
        c in case(7),
        group_in in prop::sample::select(vec![16usize, 17]),
        bias in any::<bool>(),
    ) {
        check_case(&Case { group_in, group_out: c.group_out.min(3), ..c }, bias);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Channel counts around the SIMD widths and enough rows for several tiles and
    /// several kernel-gradient chunks.
    #[test]
    fn conv_matches_direct_across_tiles(
        batch in 1usize..4,
        hw in 20usize..44,
        cin in prop::sample::select(vec![1usize, 3, 15, 16, 17, 33]),
        cout in prop::sample::select(vec![1usize, 8, 16, 31, 32, 33]),
        size in 1usize..4,
        stride in 1usize..3,
        same in any::<bool>(),
    ) {
        let c = Case {
            batch,
            input: vec![hw, hw + 3],
            size: vec![size, size],
            stride: vec![stride, stride],
            dilation: vec![1, 1],
            padding: if same { Padding::Same } else { Padding::Valid },
            group_in: cin,
            group_out: cout,
            groups: 1,
        };
        check_case(&c, true);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// 3 x 3 windows with stride 1 and enough channels for the Winograd path
    /// (forward and stride-1 input gradient), over image sizes that leave
    /// partial tiles, channel counts around the transform's 16 lanes, both
    /// paddings.
    #[test]
    fn winograd_shapes_match_direct(
        batch in 1usize..4,
        h in 1usize..16,
        w in 1usize..16,
        cin in prop::sample::select(vec![16usize, 17, 31, 32, 48, 64]),
        cout in prop::sample::select(vec![16usize, 17, 33, 64]),
        same in any::<bool>(),
        bias in any::<bool>(),
    ) {
        let c = Case {
            batch,
            input: vec![h, w],
            size: vec![3, 3],
            stride: vec![1, 1],
            dilation: vec![1, 1],
            padding: if same { Padding::Same } else { Padding::Valid },
            group_in: cin,
            group_out: cout,
            groups: 1,
        };
        check_case(&c, bias);
    }
}

/// A kernel gradient summed over few pixels (12) through the Winograd path: the
/// transforms' rounding is then not averaged away, and it once exceeded the direct
/// product's bound (7.8e-6 against 6.7e-6).
#[test]
fn winograd_kernel_gradient_over_few_pixels_matches_direct() {
    let c = Case {
        batch: 1,
        input: vec![5, 6],
        size: vec![3, 3],
        stride: vec![1, 1],
        dilation: vec![1, 1],
        padding: Padding::Valid,
        group_in: 48,
        group_out: 64,
        groups: 1,
    };
    check_case(&c, false);
}

#[test]
fn pointwise_and_strided_projection_match_direct() {
    for (stride, groups) in [(1, 1), (1, 2), (2, 1)] {
        let c = Case {
            batch: 3,
            input: vec![7, 6],
            size: vec![1, 1],
            stride: vec![stride, stride],
            dilation: vec![1, 1],
            padding: Padding::Valid,
            group_in: 8,
            group_out: 6,
            groups,
        };
        check_case(&c, false);
    }
}

#[test]
fn the_epilogue_applies_bias_then_activation() {
    let w = Window::new("t", &[5, 5], &[3, 3], &[1, 1], &[1, 1], Padding::Same).unwrap();
    let shape = ConvShape::new("t", 2, w, 4, 5, 1).unwrap();
    let (x, k, b) = (
        values(shape.input_len(), 5),
        values(shape.kernel_len(), 6),
        values(5, 7),
    );
    let mut want = vec![0.0; shape.output_len()];
    conv::direct_forward(&shape, &x, &k, Some(&b), &mut want).unwrap();
    let relu = |row: &mut [f32]| row.iter_mut().for_each(|v| *v = v.max(0.0));
    let mut got = vec![0.0; shape.output_len()];
    conv::conv_forward(
        &shape,
        &x,
        &k,
        &Epilogue {
            bias: Some(&b),
            activation: Some(&relu),
        },
        &mut got,
    )
    .unwrap();
    let want: Vec<f32> = want.iter().map(|v| v.max(0.0)).collect();
    assert_close("relu epilogue", &got, &want, 37, 1.0);
}

#[test]
fn wrong_lengths_and_groups_are_refused() {
    let w = Window::new("t", &[4, 4], &[3, 3], &[1, 1], &[1, 1], Padding::Valid).unwrap();
    assert!(
        ConvShape::new("t", 1, w, 4, 6, 4).is_err(),
        "groups must divide the filters"
    );
    assert!(ConvShape::new("t", 1, w, 4, 6, 0).is_err());
    let shape = ConvShape::new("t", 1, w, 2, 3, 1).unwrap();
    let (x, k) = (vec![0.0; shape.input_len()], vec![0.0; shape.kernel_len()]);
    let mut y = vec![0.0; shape.output_len()];
    assert!(conv::conv_forward(&shape, &x[1..], &k, &Epilogue::default(), &mut y).is_err());
    assert!(conv::conv_forward(&shape, &x, &k[1..], &Epilogue::default(), &mut y).is_err());
    let bias = [0.0; 2];
    let ep = Epilogue {
        bias: Some(&bias),
        activation: None,
    };
    assert!(conv::conv_forward(&shape, &x, &k, &ep, &mut y).is_err());
    let mut dx = vec![0.0; shape.input_len() + 1];
    assert!(conv::conv_backward_input(&shape, &y, &k, &mut dx).is_err());
    let mut dk = vec![0.0; shape.kernel_len() - 1];
    assert!(conv::conv_backward_kernel(&shape, &x, &y, &mut dk).is_err());
}
