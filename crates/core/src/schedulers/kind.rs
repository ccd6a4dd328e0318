//! The schedulers this crate implements, by the short names the command line uses.

/// A denoising scheduler the pipeline can run in place of a model folder's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// DDIM with eta 0 (deterministic).
    Ddim,
    /// PNDM in its PLMS form (`skip_prk_steps`).
    Pndm,
    /// Euler (Karras et al. algorithm 2 without churn).
    Euler,
    /// Euler Ancestral: Euler with fresh noise at every step.
    EulerA,
    /// DPM-Solver++ 2M multistep.
    Dpmpp2m,
    /// DPM-Solver++ 2M with Karras sigmas.
    Dpmpp2mKarras,
    /// UniPC: second-order predictor-corrector, B(h) = e^h - 1.
    Unipc,
    /// Latent Consistency Model sampling, for LCM-distilled models.
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

    /// The short name (`euler_a`, `dpmpp_2m_karras`, ...).
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

    /// The sampler name AUTOMATIC1111 writes in a PNG's `parameters` chunk,
    /// so other tools read the settings back.
    pub fn a1111_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIM",
            SchedulerKind::Pndm => "PLMS",
            SchedulerKind::Euler => "Euler",
            SchedulerKind::EulerA => "Euler a",
            SchedulerKind::Dpmpp2m => "DPM++ 2M",
            SchedulerKind::Dpmpp2mKarras => "DPM++ 2M Karras",
            SchedulerKind::Unipc => "UniPC",
            SchedulerKind::Lcm => "LCM",
        }
    }

    /// Every short name, comma-separated, for help and error texts.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scheduler `{s}` (expected one of: {})",
                    Self::names()
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for kind in SchedulerKind::ALL {
            assert_eq!(kind.as_str().parse::<SchedulerKind>(), Ok(kind));
        }
        let err = "k_lms".parse::<SchedulerKind>().unwrap_err();
        assert!(err.contains("ddim, pndm, euler"), "{err}");
    }
}
