//! The CPU kernels against candle's convolution, and half-precision weights
//! against their f32 widening.

use super::*;

fn reference(
    xs: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    p: Padding,
) -> Result<Tensor> {
    let xs = xs
        .pad_with_zeros(2, p.top, p.bottom)?
        .pad_with_zeros(3, p.left, p.right)?;
    xs.conv2d(weight, 0, stride, 1, 1)?
        .broadcast_add(&bias.reshape((1, (), 1, 1))?)
}

/// The direct kernel matches candle's convolution for the shapes the models use.
#[test]
fn matches_candle_conv() -> Result<()> {
    let dev = Device::Cpu;
    let cases = [
        (3, 1, Padding::uniform(1), 5, 7, 2, false),
        (3, 2, Padding::uniform(1), 9, 6, 1, false),
        (
            3,
            2,
            Padding {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1,
            },
            8,
            10,
            2,
            false,
        ),
        (1, 1, Padding::uniform(0), 4, 5, 2, false),
        (3, 1, Padding::uniform(1), 3, 4, 2, true),
        (1, 1, Padding::uniform(0), 70, 3, 1, false),
        // Enough tiles for the Winograd path, even and odd sizes, upsampled:
        // F(2×2) where a width is not a multiple of 4, F(4×4) where it is
        // (rows that are not, a batch of 2, and 2× upsampling included).
        (3, 1, Padding::uniform(1), 64, 66, 1, false),
        (3, 1, Padding::uniform(1), 64, 64, 1, false),
        (3, 1, Padding::uniform(1), 61, 36, 2, false),
        (3, 1, Padding::uniform(1), 32, 32, 1, true),
        (3, 1, Padding::uniform(1), 63, 70, 1, false),
        (3, 1, Padding::uniform(1), 32, 33, 1, true),
    ];
    for (k, stride, padding, h, w, b, upsample) in cases {
        let (cin, cout) = (6, 37);
        let xs = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?;
        let weight = Tensor::randn(0f32, 1.0, (cout, cin, k, k), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
        let conv = Conv2d::from_tensors(weight.clone(), Some(bias.clone()), stride, padding)?;
        let got = conv.forward_upsampled(&xs, upsample)?;
        let input = if upsample {
            xs.upsample_nearest2d(2 * h, 2 * w)?
        } else {
            xs
        };
        let want = reference(&input, &weight, &bias, stride, padding)?;
        assert_eq!(got.dims(), want.dims());
        // Relative to the output's scale: F(4×4)'s transforms (coefficients up
        // to 8) round a little more than F(2×2)'s: measured 3.2e-6 at most,
        // against 3.9e-7 for F(2×2).
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
        println!("k {k} stride {stride} {h}x{w} b {b} upsample {upsample}: {diff:.2e}");
        assert!(
            diff < 1e-5,
            "k {k} stride {stride} {padding:?} {h}x{w}: {diff}"
        );
    }
    Ok(())
}

/// Winograd on the deep layers' small maps (sums over hundreds of input
/// channels): F(2×2) at 16² batch 2 and 8² batch 2, F(4×4) at 32². The
/// rounding grows with the channels summed: measured 7.9e-7 (F(2×2)) and
/// 1.6-1.8e-5 (F(4×4)) of the output's scale over 512 channels, against 4e-6
/// over 6; bf16 weights alone would round at 4e-3.
#[test]
fn winograd_matches_candle_conv_with_many_input_channels() -> Result<()> {
    let dev = Device::Cpu;
    let padding = Padding::uniform(1);
    for (cin, cout, size, b) in [(512, 48, 16, 2), (512, 48, 32, 1), (640, 32, 8, 2)] {
        let xs = Tensor::randn(0f32, 1.0, (b, cin, size, size), &dev)?;
        let weight = Tensor::randn(0f32, 1.0, (cout, cin, 3, 3), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
        let conv = Conv2d::from_tensors(weight.clone(), Some(bias.clone()), 1, padding)?;
        let got = conv.forward(&xs)?;
        let want = reference(&xs, &weight, &bias, 1, padding)?;
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
        println!("{cin}→{cout} {size}² b {b}: {diff:.2e}");
        assert!(diff < 4e-5, "{cin}→{cout} {size}² b {b}: {diff}");
    }
    Ok(())
}

/// The on-the-fly input affine + SiLU equals normalising first.
#[test]
fn input_affine_matches_materialised() -> Result<()> {
    let dev = Device::Cpu;
    let (b, cin, cout, h, w) = (2, 5, 19, 40, 38);
    let xs = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?;
    let scale = Tensor::randn(0f32, 1.0, (b, cin, 1, 1), &dev)?;
    let offset = Tensor::randn(0f32, 1.0, (b, cin, 1, 1), &dev)?;
    let affine = crate::layers::norm::ChannelAffine {
        scale: scale.flatten_all()?.to_vec1()?,
        offset: offset.flatten_all()?.to_vec1()?,
    };
    let normed = xs.broadcast_mul(&scale)?.broadcast_add(&offset)?.silu()?;
    for (stride, padding) in [(1, Padding::uniform(1)), (2, Padding::uniform(1))] {
        let weight = Tensor::randn(0f32, 1.0, (cout, cin, 3, 3), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
        let conv = Conv2d::from_tensors(weight, Some(bias), stride, padding)?;
        let want = conv.forward(&normed)?;
        let got = conv
            .forward_affine(&xs, &affine, true)?
            .expect("f32 CPU kernel");
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "stride {stride}: {diff}");
    }
    Ok(())
}

/// Without the bf16 kernel, a convolution holding bf16 or f16 weights gives
/// exactly what the f32 layer built from the same weights widened to f32 gives, on every path
/// (1×1, direct 3×3, Winograd, stride 2, upsampled, input affine).
#[test]
fn half_weights_match_widened_f32() -> Result<()> {
    let dev = Device::Cpu;
    // (k, stride, padding, h, w, b, upsample)
    let cases = [
        (1, 1, Padding::uniform(0), 9, 7, 2, false),
        (3, 1, Padding::uniform(1), 5, 7, 2, false),
        (3, 1, Padding::uniform(1), 64, 66, 1, false),
        (3, 2, Padding::uniform(1), 9, 6, 2, false),
        (3, 1, Padding::uniform(1), 32, 33, 1, true),
    ];
    let (cin, cout) = (6, 37);
    for (k, stride, padding, h, w, b, upsample) in cases {
        let xs = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?;
        let weight = Tensor::randn(0f32, 1.0, (cout, cin, k, k), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
        let scale = Tensor::randn(0f32, 1.0, b * cin, &dev)?;
        let offset = Tensor::randn(0f32, 1.0, b * cin, &dev)?;
        let affine = crate::layers::norm::ChannelAffine {
            scale: scale.to_vec1()?,
            offset: offset.to_vec1()?,
        };
        for dtype in [DType::BF16, DType::F16] {
            let wh = weight.to_dtype(dtype)?;
            let widen = bf16::Bf16Kernel::WidenToF32;
            let half = Conv2d::with_kernel(wh.clone(), Some(bias.clone()), stride, padding, widen)?;
            let wide = Conv2d::from_tensors(
                wh.to_dtype(DType::F32)?,
                Some(bias.clone()),
                stride,
                padding,
            )?;
            assert!(matches!(half.kind, Kind::Packed { .. }));
            let mut pairs = vec![(
                half.forward_upsampled(&xs, upsample)?,
                wide.forward_upsampled(&xs, upsample)?,
            )];
            if let (Some(got), Some(want)) = (
                half.forward_affine(&xs, &affine, true)?,
                wide.forward_affine(&xs, &affine, true)?,
            ) {
                pairs.push((got, want));
            }
            for (got, want) in pairs {
                assert_eq!(
                    got.flatten_all()?.to_vec1::<f32>()?,
                    want.flatten_all()?.to_vec1::<f32>()?,
                    "{dtype:?} k {k} stride {stride} upsample {upsample}"
                );
            }
        }
    }
    Ok(())
}

/// The bf16 kernel on every path (1×1, direct 3×3, Winograd, stride 2,
/// upsampled, input affine, odd channel counts) stays within bf16's rounding
/// of the f32 layer on the same bf16-valued weights, Winograd included.
#[test]
fn bf16_kernel_stays_close_to_f32() -> Result<()> {
    if !bf16::cpu_has_avx512_bf16() {
        println!("skipped: this CPU has no AVX512-BF16");
        return Ok(());
    }
    let dev = Device::Cpu;
    // (k, stride, padding, h, w, b, upsample)
    let cases = [
        (1, 1, Padding::uniform(0), 9, 7, 2, false),
        (3, 1, Padding::uniform(1), 5, 7, 2, false),
        (3, 1, Padding::uniform(1), 64, 66, 1, false),
        (3, 1, Padding::uniform(1), 63, 70, 1, false),
        (3, 2, Padding::uniform(1), 9, 6, 2, false),
        (3, 1, Padding::uniform(1), 32, 33, 1, true),
    ];
    for (cin, cout) in [(6, 37), (33, 20)] {
        for (k, stride, padding, h, w, b, upsample) in cases {
            let xs = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?;
            let weight =
                Tensor::randn(0f32, 1.0, (cout, cin, k, k), &dev)?.to_dtype(DType::BF16)?;
            let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
            let affine = crate::layers::norm::ChannelAffine {
                scale: Tensor::randn(0f32, 1.0, b * cin, &dev)?.to_vec1()?,
                offset: Tensor::randn(0f32, 1.0, b * cin, &dev)?.to_vec1()?,
            };
            let kernel = bf16::Bf16Kernel::Avx512Bf16;
            let fast =
                Conv2d::with_kernel(weight.clone(), Some(bias.clone()), stride, padding, kernel)?;
            assert!(matches!(fast.kind, Kind::Pairs { .. }));
            let wide =
                Conv2d::from_tensors(weight.to_dtype(DType::F32)?, Some(bias), stride, padding)?;
            let mut pairs = vec![(
                fast.forward_upsampled(&xs, upsample)?,
                wide.forward_upsampled(&xs, upsample)?,
            )];
            if let (Some(got), Some(want)) = (
                fast.forward_affine(&xs, &affine, true)?,
                wide.forward_affine(&xs, &affine, true)?,
            ) {
                pairs.push((got, want));
            }
            for (got, want) in pairs {
                let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
                let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                let case =
                    format!("{cin}->{cout} k {k} stride {stride} {h}x{w} upsample {upsample}");
                // Rounding the input to 2^-9 of its values: a few 1e-3 of the
                // output's scale at most, Winograd's transforms included.
                assert!(diff < 8e-3 * scale, "{case}: {diff} of {scale}");
                assert!(diff > 0.0, "{case}: the input was not rounded");
            }
        }
    }
    Ok(())
}

/// F(4×4) takes f32 3×3 convolutions whose tiles fit its width, given enough
/// tiles and weights within the bound; bf16 weights, other widths, fewer
/// tiles and larger layers keep F(2×2) or the direct kernel.
#[test]
fn winograd_tile_choice() -> Result<()> {
    use winograd::Tile::{F2, F4};
    let tile = |kernel, channels: (usize, usize), (b, h, w), bf16| {
        let spec = ConvSpec {
            in_channels: channels.0,
            out_channels: channels.1,
            kernel,
            stride: 1,
            padding: Padding::uniform(kernel / 2),
        };
        let g = Geometry::new(spec, (b, channels.0, h, w), false)?;
        Result::Ok(winograd::tile_for(&g, bf16))
    };
    assert_eq!(tile(3, (8, 8), (1, 64, 64), false)?, Some(F4));
    assert_eq!(tile(3, (8, 8), (1, 64, 64), true)?, Some(F2));
    // A width F(4×4)'s tiles do not fit.
    assert_eq!(tile(3, (8, 8), (1, 64, 66), false)?, Some(F2));
    // A 32² map has 64 F(4×4) tiles; a 16² map at batch 2 only 32, but 128
    // F(2×2) tiles; an 8² map 32 F(2×2) tiles at batch 2 and 16 at batch 1.
    assert_eq!(tile(3, (8, 8), (1, 32, 32), false)?, Some(F4));
    assert_eq!(tile(3, (8, 8), (2, 16, 16), false)?, Some(F2));
    assert_eq!(tile(3, (8, 8), (2, 8, 8), false)?, Some(F2));
    assert_eq!(tile(3, (8, 8), (1, 8, 8), false)?, None);
    // Transformed weights within 128 MB: 1280→640 in F(4×4) (118 MB);
    // 1280→1280 in F(2×2) (105 MB, F(4×4) 236 MB); 2560→1280 not at all
    // (F(2×2) 210 MB).
    assert_eq!(tile(3, (1280, 640), (2, 32, 32), false)?, Some(F4));
    assert_eq!(tile(3, (1280, 1280), (2, 32, 32), false)?, Some(F2));
    assert_eq!(tile(3, (2560, 1280), (2, 32, 32), false)?, None);
    assert_eq!(tile(1, (8, 8), (1, 64, 64), false)?, None);
    Ok(())
}
