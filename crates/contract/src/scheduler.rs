//! The sampler names a client may ask for.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A denoising scheduler, by the name clients and the command line use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    /// DDIM with eta 0 (deterministic).
    Ddim,
    /// PNDM in its PLMS form (`skip_prk_steps`), the SD 1.5 folder default.
    Pndm,
    /// Euler (Karras et al. algorithm 2 without churn).
    Euler,
    /// Euler Ancestral: Euler with fresh noise at every step.
    EulerA,
    /// DPM-Solver++ 2M multistep.
    #[serde(rename = "dpmpp_2m")]
    Dpmpp2m,
    /// DPM-Solver++ 2M with Karras sigmas.
    #[serde(rename = "dpmpp_2m_karras")]
    Dpmpp2mKarras,
    /// UniPC (Zhao et al. 2023): second-order predictor-corrector, B(h) = e^h - 1.
    Unipc,
    /// Latent Consistency Model sampling, for LCM-distilled models (1 to 8 steps).
    Lcm,
}

impl SchedulerKind {
    /// Every scheduler, in the order help texts list them.
    pub const ALL: [SchedulerKind; 8] = [
        SchedulerKind::Ddim,
        SchedulerKind::Pndm,
        SchedulerKind::Euler,
        SchedulerKind::EulerA,
        SchedulerKind::Dpmpp2m,
        SchedulerKind::Dpmpp2mKarras,
        SchedulerKind::Unipc,
        SchedulerKind::Lcm,
    ];

    /// The name used on the wire and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Pndm => "pndm",
            SchedulerKind::Euler => "euler",
            SchedulerKind::EulerA => "euler_a",
            SchedulerKind::Dpmpp2m => "dpmpp_2m",
            SchedulerKind::Dpmpp2mKarras => "dpmpp_2m_karras",
            SchedulerKind::Unipc => "unipc",
            SchedulerKind::Lcm => "lcm",
        }
    }
}

impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_the_short_names() {
        for kind in SchedulerKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<SchedulerKind>(&json).unwrap(), kind);
        }
    }
}
