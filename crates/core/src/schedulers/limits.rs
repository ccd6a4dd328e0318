//! [`StepLimits`]: how many inference steps each scheduler can run on one
//! model's scheduler config, known once the model is loaded so that a request
//! can be refused before it reaches the engine.

use super::config::SchedulerConfig;
use super::{lcm, SchedulerKind};
use crate::error::{Param, ParamError};

/// The most inference steps each scheduler runs on one scheduler config:
/// every scheduler at most the training timesteps, and LCM at most its
/// `original_inference_steps`, the schedule it picks its timesteps from.
/// [`super::build_scheduler`] holds every build to these, so a step count
/// that passes [`StepLimits::check`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepLimits {
    train_timesteps: usize,
    lcm_steps: usize,
}

impl StepLimits {
    /// The limits of a model whose scheduler config is `config`.
    pub fn of(config: &SchedulerConfig) -> Self {
        Self {
            train_timesteps: config.num_train_timesteps,
            lcm_steps: lcm::max_steps(config),
        }
    }

    /// The most steps `kind` runs.
    pub fn max_steps(&self, kind: SchedulerKind) -> usize {
        match kind {
            SchedulerKind::Lcm => self.lcm_steps.min(self.train_timesteps),
            _ => self.train_timesteps,
        }
    }

    /// Checks a step count for scheduler `kind` (`None`: a class that is no
    /// kind, held to the training timesteps only); the error says the limit
    /// and where it comes from.
    pub fn check(&self, kind: Option<SchedulerKind>, steps: usize) -> Result<(), ParamError> {
        let train = self.train_timesteps;
        if steps == 0 || steps > train {
            return Err(ParamError::new(
                Param::Steps,
                format!("{steps} is not between 1 and the model's {train} training timesteps"),
            ));
        }
        if kind == Some(SchedulerKind::Lcm) && steps > self.lcm_steps {
            return Err(ParamError::new(
                Param::Steps,
                format!(
                    "must be at most {} with the lcm scheduler, which picks its timesteps from \
                     the model's {} original_inference_steps; got {steps}",
                    self.lcm_steps, self.lcm_steps
                ),
            ));
        }
        Ok(())
    }
}

impl Default for StepLimits {
    /// The limits of diffusers' defaults: 1000 training timesteps, and 50
    /// original steps for LCM.
    fn default() -> Self {
        Self::of(&SchedulerConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::super::build_scheduler;
    use super::super::testing::sd15;
    use super::*;

    /// Every kind builds for exactly the step counts its limit allows.
    #[test]
    fn every_step_count_the_limits_allow_builds_and_no_other() {
        let mut short = sd15();
        short.original_inference_steps = 25;
        short.num_train_timesteps = 120;
        for config in [sd15(), short] {
            let limits = StepLimits::of(&config);
            for kind in SchedulerKind::ALL {
                let max = limits.max_steps(kind);
                for steps in [1, max, max + 1, 150] {
                    let checked = limits.check(Some(kind), steps);
                    let built = build_scheduler(Some(kind), &config, steps);
                    assert_eq!(checked.is_ok(), steps <= max, "{kind} {steps}");
                    assert_eq!(built.is_ok(), checked.is_ok(), "{kind} {steps}");
                }
            }
        }
    }

    #[test]
    fn lcm_is_held_to_its_original_steps() {
        let limits = StepLimits::default();
        assert_eq!(limits.max_steps(SchedulerKind::Lcm), 50);
        assert_eq!(limits.max_steps(SchedulerKind::Euler), 1000);
        let err = limits.check(Some(SchedulerKind::Lcm), 150).unwrap_err();
        assert_eq!(err.param, Param::Steps);
        assert!(
            err.message.contains("at most 50 with the lcm scheduler"),
            "{}",
            err.message
        );
        assert!(limits.check(Some(SchedulerKind::Lcm), 50).is_ok());
        assert!(limits.check(None, 150).is_ok());
        assert!(limits.check(None, 1001).is_err());
    }
}
