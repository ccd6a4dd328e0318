//! `UNetConfig`: diffusers' `unet/config.json` with diffusers' defaults, read
//! as written. What the model builds from it, and the checks that reject
//! options this implementation does not support, are in `plan.rs`.

use std::path::Path;

use serde::Deserialize;

use crate::model::files::ConfigText;
use crate::Result;

/// A config value given once for every block or as a list with one entry per block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// One value per block.
    Each(Vec<T>),
    /// The same value for all blocks.
    Same(T),
}

impl<T: Clone> PerBlock<T> {
    /// One value per block for `n` blocks; a list of the wrong length is an error naming `field`.
    pub fn expand(&self, n: usize, field: &str) -> std::result::Result<Vec<T>, String> {
        match self {
            Self::Same(v) => Ok(vec![v.clone(); n]),
            Self::Each(vs) if vs.len() == n => Ok(vs.clone()),
            Self::Each(vs) => Err(format!("{field} has {} entries, expected {n}", vs.len())),
        }
    }
}

/// A `sample_size`: one side of a square, or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    /// A square of this side.
    Square(usize),
    /// `[height, width]`.
    HeightWidth(usize, usize),
}

impl SampleSize {
    /// `(height, width)`.
    pub fn height_width(self) -> (usize, usize) {
        match self {
            Self::Square(s) => (s, s),
            Self::HeightWidth(h, w) => (h, w),
        }
    }
}

/// diffusers' `UNet2DConditionModel` config; missing fields take diffusers' defaults.
///
/// Fields that only select features we do not implement are parsed so that
/// [`UNetConfig::validate`] can reject them with a message naming the field.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    /// Latent size the model was trained at (64 for SD 1.5, i.e. 512 px).
    pub sample_size: Option<SampleSize>,
    /// Channels of the input sample.
    pub in_channels: usize,
    /// Channels of the predicted output.
    pub out_channels: usize,
    /// Maps the input from [0, 1] to [-1, 1] first.
    pub center_input_sample: bool,
    /// Order of the sinusoidal timestep embedding: `cos, sin` when true.
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` of the timestep embedding.
    pub freq_shift: f64,
    /// `CrossAttnDownBlock2D` or `DownBlock2D`, one per resolution.
    pub down_block_types: Vec<String>,
    /// `UNetMidBlock2DCrossAttn`, or null for none.
    pub mid_block_type: Option<String>,
    /// `CrossAttnUpBlock2D` or `UpBlock2D`, one per resolution.
    pub up_block_types: Vec<String>,
    /// Transformers attend only to the encoder states (no self-attention).
    pub only_cross_attention: PerBlock<bool>,
    /// Channels of each resolution level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    pub layers_per_block: PerBlock<usize>,
    /// Padding of the down-sampling convolutions.
    pub downsample_padding: usize,
    /// `output_scale_factor` of the mid block's resnets.
    pub mid_block_scale_factor: f64,
    /// Dropout (inference ignores it).
    pub dropout: f64,
    /// Activation of resnets and the time embedding.
    pub act_fn: String,
    /// Groups of every group norm.
    pub norm_num_groups: Option<usize>,
    /// Epsilon of the resnets' and output group norms.
    pub norm_eps: f64,
    /// Width of the encoder hidden states.
    pub cross_attention_dim: PerBlock<usize>,
    /// Transformer blocks per attention layer (per block, or per block and layer).
    pub transformer_layers_per_block: PerBlock<PerBlock<usize>>,
    /// Transformer blocks per attention layer of the up blocks (asymmetric UNets).
    pub reverse_transformer_layers_per_block: Option<Vec<PerBlock<usize>>>,
    /// Projection of the encoder states (unsupported unless null).
    pub encoder_hid_dim: Option<usize>,
    /// Kind of `encoder_hid_dim` projection (unsupported unless null).
    pub encoder_hid_dim_type: Option<String>,
    /// Historically misnamed: the HEAD COUNT when `num_attention_heads` is null.
    pub attention_head_dim: PerBlock<usize>,
    /// Heads per block; defaults to `attention_head_dim`.
    pub num_attention_heads: Option<PerBlock<usize>>,
    /// Dual cross-attention (unsupported).
    pub dual_cross_attention: bool,
    /// Linear rather than 1×1-convolution `proj_in`/`proj_out` in transformers.
    pub use_linear_projection: bool,
    /// Class conditioning (unsupported unless null).
    pub class_embed_type: Option<String>,
    /// Added conditioning: null, or `text_time` (SDXL).
    pub addition_embed_type: Option<String>,
    /// Width of each sinusoidal embedding of the SDXL `time_ids`.
    pub addition_time_embed_dim: Option<usize>,
    /// Number of class embeddings (unsupported unless null).
    pub num_class_embeds: Option<usize>,
    /// Compute attention scores in f32 in half precision (null, as in SDXL's
    /// config, means false).
    #[serde(deserialize_with = "null_as_false")]
    pub upcast_attention: bool,
    /// `default` or `scale_shift`.
    pub resnet_time_scale_shift: String,
    /// Accepted for completeness; the supported block types ignore it, as in diffusers.
    pub resnet_skip_time_act: bool,
    /// Accepted for completeness; the supported block types ignore it, as in diffusers.
    pub resnet_out_scale_factor: f64,
    /// `positional` (sinusoidal); `fourier` is unsupported.
    pub time_embedding_type: String,
    /// Width of the time embedding; defaults to 4 × `block_out_channels[0]`.
    pub time_embedding_dim: Option<usize>,
    /// Activation applied to the summed time embedding.
    pub time_embedding_act_fn: Option<String>,
    /// Activation after the time embedding MLP.
    pub timestep_post_act: Option<String>,
    /// Width of an extra timestep condition (LCM); it is never passed, so unused.
    pub time_cond_proj_dim: Option<usize>,
    /// Kernel size of `conv_in`.
    pub conv_in_kernel: usize,
    /// Kernel size of `conv_out`.
    pub conv_out_kernel: usize,
    /// Input width of `add_embedding` (SDXL: text_embeds + 6 × `addition_time_embed_dim`).
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// `default`; GLIGEN's gated attention is unsupported.
    pub attention_type: String,
    /// Concatenate class embeddings (no effect without class conditioning).
    pub class_embeddings_concat: bool,
    /// Ignored by `UNetMidBlock2DCrossAttn`, as in diffusers.
    pub mid_block_only_cross_attention: Option<bool>,
    /// Norm of the cross-attention context (unsupported unless null).
    pub cross_attention_norm: Option<String>,
    /// Heads of the `text` added embedding (unused by the supported types).
    pub addition_embed_type_num_heads: usize,
}

/// A boolean that may be written as null, read as false (diffusers' `None`).
fn null_as_false<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

impl Default for UNetConfig {
    fn default() -> Self {
        let strings = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        Self {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: strings(&[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: strings(&[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]),
            only_cross_attention: PerBlock::Same(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::Same(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            dropout: 0.0,
            act_fn: "silu".into(),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::Same(1280),
            transformer_layers_per_block: PerBlock::Same(PerBlock::Same(1)),
            reverse_transformer_layers_per_block: None,
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            attention_head_dim: PerBlock::Same(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            class_embed_type: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            num_class_embeds: None,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            resnet_skip_time_act: false,
            resnet_out_scale_factor: 1.0,
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            time_cond_proj_dim: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            projection_class_embeddings_input_dim: None,
            attention_type: "default".into(),
            class_embeddings_concat: false,
            mid_block_only_cross_attention: None,
            cross_attention_norm: None,
            addition_embed_type_num_heads: 64,
        }
    }
}

impl UNetConfig {
    /// Reads and validates `unet/config.json`; errors name the file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_config(&ConfigText::read(path)?)
    }

    /// Parses and validates a config's text; errors name its origin and the field.
    pub fn from_config(config: &ConfigText) -> Result<Self> {
        config.parse_checked(Self::validate)
    }

    /// Checks that every field selects something this implementation supports.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.plan().map(|_| ())
    }

    /// Whether `forward` needs SDXL's added conditioning (`addition_embed_type: text_time`).
    pub fn needs_added_cond(&self) -> bool {
        self.addition_embed_type.as_deref() == Some("text_time")
    }

    /// How many times the blocks halve the resolution.
    pub fn num_downsamplers(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }
}
