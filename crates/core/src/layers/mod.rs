//! Building blocks shared by the UNet and the VAE.
//!
//! Each file holds one block with the layout of its diffusers counterpart, so
//! `vb.pp(...)` paths mirror the checkpoint's tensor names.

pub mod activation;
pub mod alloc;
pub mod attention;
pub mod bf16;
pub mod conv;
pub mod kernels;
pub mod linear;
pub mod norm;
mod out_ptr;
pub mod resnet;
pub mod sampling;
mod stored;
pub mod work;

pub use activation::Activation;
pub use alloc::tune_allocator;
pub use attention::{Attention, AttentionConfig, SpatialSelfAttention};
pub use conv::{Conv2d, Padding};
pub use linear::Linear;
pub use norm::{ChannelAffine, GroupNorm, LayerNorm};
pub(crate) use resnet::norm_act_conv;
pub use resnet::{ResnetBlock2D, ResnetBlock2DConfig, TimeEmbeddingNorm};
pub use sampling::{Downsample2D, Upsample2D};

use candle_core::{DType, Result};
use candle_nn::VarBuilder;

/// Whether `dtype` is f16 or bf16, the half-precision compute dtypes.
pub fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// A square `Conv2d` with bias, as `torch.nn.Conv2d(cin, cout, k, stride, padding)`.
pub(crate) fn conv2d(
    vb: VarBuilder,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d> {
    Conv2d::new(
        vb,
        in_channels,
        out_channels,
        kernel,
        stride,
        Padding::uniform(padding),
    )
}
