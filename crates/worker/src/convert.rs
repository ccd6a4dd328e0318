//! The one place wire types and model-core types meet: scheduler names, the
//! request field a core parameter stands for, and the defaults and precision
//! `/v1/info` shows.

use candle_core::DType;
use sd_contract::{
    ComputeInfo, GenerationDefaults, PromptSyntax as WireSyntax, SchedulerKind as WireScheduler,
};
use sd_core::model::Precision;
use sd_core::pipeline::Defaults;
use sd_core::prompt::PromptSyntax;
use sd_core::schedulers::SchedulerKind;
use sd_core::Param;

/// The core scheduler a wire name asks for.
pub fn scheduler_from_wire(kind: WireScheduler) -> SchedulerKind {
    match kind {
        WireScheduler::Ddim => SchedulerKind::Ddim,
        WireScheduler::Pndm => SchedulerKind::Pndm,
        WireScheduler::Euler => SchedulerKind::Euler,
        WireScheduler::EulerA => SchedulerKind::EulerA,
        WireScheduler::Dpmpp2m => SchedulerKind::Dpmpp2m,
        WireScheduler::Dpmpp2mKarras => SchedulerKind::Dpmpp2mKarras,
        WireScheduler::Unipc => SchedulerKind::Unipc,
        WireScheduler::Lcm => SchedulerKind::Lcm,
    }
}

/// The wire name of a core scheduler.
pub fn scheduler_to_wire(kind: SchedulerKind) -> WireScheduler {
    match kind {
        SchedulerKind::Ddim => WireScheduler::Ddim,
        SchedulerKind::Pndm => WireScheduler::Pndm,
        SchedulerKind::Euler => WireScheduler::Euler,
        SchedulerKind::EulerA => WireScheduler::EulerA,
        SchedulerKind::Dpmpp2m => WireScheduler::Dpmpp2m,
        SchedulerKind::Dpmpp2mKarras => WireScheduler::Dpmpp2mKarras,
        SchedulerKind::Unipc => WireScheduler::Unipc,
        SchedulerKind::Lcm => WireScheduler::Lcm,
    }
}

/// The core prompt syntax a wire name asks for.
pub fn syntax_from_wire(syntax: WireSyntax) -> PromptSyntax {
    match syntax {
        WireSyntax::A1111 => PromptSyntax::A1111,
        WireSyntax::Plain => PromptSyntax::Plain,
    }
}

/// The wire name of a core prompt syntax.
pub fn syntax_to_wire(syntax: PromptSyntax) -> WireSyntax {
    match syntax {
        PromptSyntax::A1111 => WireSyntax::A1111,
        PromptSyntax::Plain => WireSyntax::Plain,
    }
}

/// The request field a core parameter stands for; `image_field` is the
/// operation's name for its input picture (`input_image` or `init_image`).
pub fn field_of(param: Param, image_field: &'static str) -> &'static str {
    match param {
        Param::Image => image_field,
        Param::Mask => "mask_image",
        Param::Decoder => "fast_decode",
        other => other.as_str(),
    }
}

/// What computes in which dtype, as `/v1/info` shows it.
pub fn compute_info(precision: &Precision) -> ComputeInfo {
    let name = |dtype: DType| match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    };
    ComputeInfo {
        unet: name(precision.unet).to_string(),
        text_encoders: name(precision.text_encoders).to_string(),
        vae: name(precision.vae).to_string(),
        attention: precision.attention.to_string(),
    }
}

/// The defaults as `/v1/info` shows them.
pub fn defaults_to_wire(defaults: &Defaults) -> GenerationDefaults {
    let wide = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    GenerationDefaults {
        width: wide(defaults.width),
        height: wide(defaults.height),
        steps: wide(defaults.steps),
        guidance_scale: defaults.guidance_scale,
        scheduler: scheduler_to_wire(defaults.scheduler),
        prompt_syntax: syntax_to_wire(defaults.prompt_syntax),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheduler_round_trips_by_name() {
        assert_eq!(WireScheduler::ALL.len(), SchedulerKind::ALL.len());
        for wire in WireScheduler::ALL {
            let core = scheduler_from_wire(wire);
            assert_eq!(core.as_str(), wire.as_str());
            assert_eq!(scheduler_to_wire(core), wire);
        }
    }
}
