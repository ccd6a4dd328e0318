//! The zero-padded copy of a band of the input that both kernels read,
//! optionally 2× upsampled and normalised on the way, split into stride phases.

use rayon::prelude::*;

use super::geometry::{Band, Geometry};
use crate::layers::kernels;
use crate::layers::norm::ChannelAffine;

/// The padded input `band` reads, `[b, c, s·s, hq, wq]` (see [`Band`]), from
/// `input` `[b, c, h, w]` (before any upsampling). With `Some((affine, silu))`
/// each value is first mapped to `x · scale + offset` of its (batch, channel),
/// then through SiLU when `silu`.
pub(crate) fn pad(
    input: &[f32],
    g: &Geometry,
    band: Band,
    input_affine: Option<(&ChannelAffine, bool)>,
) -> Vec<f32> {
    let (p, s) = (g.spec.padding, g.spec.stride);
    let (b, c, h, w) = (g.batch, g.spec.in_channels, g.height, g.width);
    let (upsample, wq, hq) = (g.upsample, g.phase_width, band.phase_rows);
    let pr0 = s * band.y0;
    let (sh, sw) = if upsample { (h / 2, w / 2) } else { (h, w) };
    let phase = hq * wq;
    // Input rows y with padded row y + top inside the band.
    let first = pr0.saturating_sub(p.top).min(h);
    let last = (pr0 + s * hq).saturating_sub(p.top).min(h);
    let mut padded = vec![0f32; b * c * s * s * phase];
    padded
        .par_chunks_mut(s * s * phase)
        .enumerate()
        .for_each(|(plane_index, dst)| {
            let src = &input[plane_index * sh * sw..(plane_index + 1) * sh * sw];
            let mut staged = Vec::new();
            for y in first..last {
                let mut src_row = &src[(if upsample { y / 2 } else { y }) * sw..][..sw];
                let r = y + p.top - pr0;
                if let Some((affine, silu)) = input_affine {
                    if s == 1 && !upsample {
                        let row = &mut dst[r * wq + p.left..][..w];
                        kernels::affine_silu(
                            row,
                            src_row,
                            affine.scale[plane_index],
                            affine.offset[plane_index],
                            silu,
                        );
                        continue;
                    }
                    staged.resize(sw, 0.0);
                    kernels::affine_silu(
                        &mut staged,
                        src_row,
                        affine.scale[plane_index],
                        affine.offset[plane_index],
                        silu,
                    );
                    src_row = &staged;
                }
                if s == 1 {
                    let row = &mut dst[r * wq + p.left..][..w];
                    if upsample {
                        for (pair, &v) in row.chunks_exact_mut(2).zip(src_row) {
                            pair[0] = v;
                            pair[1] = v;
                        }
                    } else {
                        row.copy_from_slice(src_row);
                    }
                    continue;
                }
                let row_base = (r % s) * s * phase + (r / s) * wq;
                for x in 0..w {
                    let col = x + p.left;
                    let v = src_row[if upsample { x / 2 } else { x }];
                    dst[row_base + (col % s) * phase + col / s] = v;
                }
            }
        });
    padded
}
