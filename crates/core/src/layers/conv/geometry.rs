//! The sizes of one convolution: the layer's, its input's and its output's,
//! and the bands of output rows the CPU kernels work through.

use candle_core::Result;

use super::Padding;

/// Largest padded input copy made at once; larger inputs are processed in
/// bands of output rows.
#[cfg(not(test))]
const BAND_BYTES: usize = 64 << 20;
/// Tiny bands in unit tests, so that every shape there runs in several bands.
#[cfg(test)]
const BAND_BYTES: usize = 4 << 10;

/// A layer's own sizes, as `torch.nn.Conv2d(in_channels, out_channels, kernel, stride, padding)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvSpec {
    /// Channels of the input.
    pub(crate) in_channels: usize,
    /// Channels of the output.
    pub(crate) out_channels: usize,
    /// Side of the square kernel.
    pub(crate) kernel: usize,
    /// Step between output pixels, in input pixels, along both axes.
    pub(crate) stride: usize,
    /// Zero padding around the input.
    pub(crate) padding: Padding,
}

impl ConvSpec {
    /// Whether each output pixel is its own input pixel times one matrix (1×1,
    /// stride 1, no padding), so that the input needs no padded copy.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == Padding::uniform(0)
    }

    /// The output channels split among work items, as `(chunk, chunks)`:
    /// runs of `chunk` channels (a multiple of 16, or all of them; the last
    /// run may be shorter), just enough of them that `parts` work items per
    /// run make `wanted` items in all, where the channels allow it.
    pub(crate) fn out_channel_chunks(&self, parts: usize, wanted: usize) -> (usize, usize) {
        let cout = self.out_channels;
        let chunks = wanted.div_ceil(parts).min(cout.div_ceil(16)).max(1);
        let chunk = cout.div_ceil(chunks).next_multiple_of(16).min(cout);
        (chunk, cout.div_ceil(chunk))
    }
}

/// The sizes of one call of a layer: its [`ConvSpec`], its input's (after any
/// upsampling) and its output's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    /// The layer's sizes.
    pub(crate) spec: ConvSpec,
    /// Images in the batch.
    pub(crate) batch: usize,
    /// Input rows, after any upsampling.
    pub(crate) height: usize,
    /// Input columns, after any upsampling.
    pub(crate) width: usize,
    /// Whether the stored input is `height / 2 × width / 2`, upsampled 2×
    /// (nearest) while it is padded.
    pub(crate) upsample: bool,
    /// Output rows.
    pub(crate) out_height: usize,
    /// Output columns.
    pub(crate) out_width: usize,
    /// Columns of each stride phase of the padded input (see [`Band`]).
    pub(crate) phase_width: usize,
}

impl Geometry {
    /// The sizes of `spec` applied to an input of shape `dims` `[B, C_in, H, W]`,
    /// which is upsampled 2× first when `upsample` is set.
    pub(crate) fn new(
        spec: ConvSpec,
        dims: (usize, usize, usize, usize),
        upsample: bool,
    ) -> Result<Self> {
        let (batch, c, h, w) = dims;
        if c != spec.in_channels {
            candle_core::bail!(
                "direct-conv2d: input has {c} channels, expected {}",
                spec.in_channels
            );
        }
        let (h, w) = if upsample { (2 * h, 2 * w) } else { (h, w) };
        let (k, s, p) = (spec.kernel, spec.stride, spec.padding);
        let (hp_real, wp_real) = (h + p.top + p.bottom, w + p.left + p.right);
        if hp_real < k || wp_real < k {
            candle_core::bail!("direct-conv2d: input {h}x{w} is smaller than the {k}x{k} kernel");
        }
        Ok(Self {
            spec,
            batch,
            height: h,
            width: w,
            upsample,
            out_height: (hp_real - k) / s + 1,
            out_width: (wp_real - k) / s + 1,
            phase_width: wp_real.div_ceil(s),
        })
    }

    /// The output's shape, `[B, C_out, H_out, W_out]`.
    pub(crate) fn out_dims(&self) -> (usize, usize, usize, usize) {
        (
            self.batch,
            self.spec.out_channels,
            self.out_height,
            self.out_width,
        )
    }

    /// Whether the kernel reads the input as it is: a pointwise layer without
    /// upsampling, whose input needs no padded copy.
    pub(crate) fn reads_input_directly(&self) -> bool {
        self.spec.is_pointwise() && !self.upsample
    }

    /// The one band that [`Geometry::reads_input_directly`] runs: every output
    /// row, over the input planes themselves as the single phase.
    pub(crate) fn whole_input(&self) -> Band {
        Band {
            y0: 0,
            rows: self.out_height,
            phase_rows: self.height,
        }
    }

    /// The bands of output rows, top to bottom, so that the padded copy of a
    /// large input never exists whole (a band re-reads `kernel − 1` rows of
    /// its neighbour).
    pub(crate) fn bands(&self) -> impl Iterator<Item = Band> {
        let (ho, k, s) = (self.out_height, self.spec.kernel, self.spec.stride);
        let band = self.band_rows();
        (0..ho).step_by(band).map(move |y0| {
            let rows = band.min(ho - y0);
            Band {
                y0,
                rows,
                phase_rows: (s * (rows - 1) + k).div_ceil(s) + k,
            }
        })
    }

    /// Output rows per band: all of them when the padded copy of the whole
    /// input fits in [`BAND_BYTES`], else about as many as fit (an even number,
    /// at least 16).
    fn band_rows(&self) -> usize {
        let (b, wq, ho) = (self.batch, self.phase_width, self.out_height);
        let ConvSpec {
            in_channels: c,
            kernel: k,
            stride: s,
            ..
        } = self.spec;
        let band_bytes = |rows: usize| b * c * s * s * ((s * rows + k).div_ceil(s) + k) * wq * 4;
        if band_bytes(ho) <= BAND_BYTES {
            ho
        } else {
            (BAND_BYTES / (b * c * s * wq * 4))
                .max(16)
                .next_multiple_of(2)
                .min(ho)
        }
    }
}

/// Output rows `y0..y0 + rows` and the padded input they read.
///
/// That input is padded rows `stride · y0` on, split into `stride × stride`
/// phase images of `phase_rows × phase_width` per image and channel: element
/// (r, c) of the padded band goes to phase (r mod s, c mod s) at (r / s, c / s).
/// Every tap (a, b) is then a stride-1 shifted view of one phase: output pixel
/// j = y·wq + x reads element j + (a / s)·wq + b / s of phase (a mod s, b mod s).
/// Each phase has `kernel` spare rows, so those views never leave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Band {
    /// First output row.
    pub(crate) y0: usize,
    /// Output rows.
    pub(crate) rows: usize,
    /// Rows of each phase image.
    pub(crate) phase_rows: usize,
}
