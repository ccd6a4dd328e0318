//! Stopping a generation part-way from another thread.
//!
//! An [`Interrupt`] wraps the caller's cheap "should I stop?" check (an atomic
//! load, typically). The pipeline and the models run it between their blocks:
//! before and between the text encoders' layers, between the UNet's and the
//! VAE's blocks, and between the row blocks of every attention, so that a
//! raised interrupt ends even one long UNet pass within a fraction of a block.
//! Work stopped this way ends in [`crate::Error::Cancelled`].

/// A caller's request to stop, checked between blocks of work.
///
/// It borrows the check, so it is `Copy` and can be handed to every layer;
/// the check may run on any thread (attention row blocks run on rayon's), so
/// it must be `Sync`, and it should cost no more than an atomic load.
#[derive(Clone, Copy, Default)]
pub struct Interrupt<'a> {
    raised: Option<&'a (dyn Fn() -> bool + Sync)>,
}

impl<'a> Interrupt<'a> {
    /// An interrupt that is never raised: the work runs to its end.
    pub const NEVER: Interrupt<'static> = Interrupt { raised: None };

    /// An interrupt raised whenever `raised` returns true.
    pub fn new(raised: &'a (dyn Fn() -> bool + Sync)) -> Self {
        Self {
            raised: Some(raised),
        }
    }

    /// Whether the caller has asked to stop.
    pub fn is_raised(&self) -> bool {
        self.raised.is_some_and(|raised| raised())
    }

    /// `Ok` while the work may go on; once raised, an error that
    /// [`crate::Error`] turns into [`crate::Error::Cancelled`]. For layers
    /// whose results are `candle_core::Result`.
    pub fn check(&self) -> candle_core::Result<()> {
        if self.is_raised() {
            Err(interrupted())
        } else {
            Ok(())
        }
    }

    /// [`Interrupt::check`] with the core's error type.
    pub fn check_cancelled(&self) -> crate::Result<()> {
        if self.is_raised() {
            Err(crate::Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Debug for Interrupt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupt")
            .field("raised", &self.is_raised())
            .finish()
    }
}

/// The marker a raised [`Interrupt`] travels as inside a candle error.
#[derive(Debug, thiserror::Error)]
#[error("generation cancelled")]
struct Interrupted;

/// The candle error a raised interrupt stops a layer with.
pub(crate) fn interrupted() -> candle_core::Error {
    candle_core::Error::WrappedContext {
        wrapped: Box::new(Interrupted),
        context: "interrupted".into(),
    }
}

/// Whether `err` is (or wraps) the error of a raised interrupt.
pub(crate) fn is_interruption(err: &candle_core::Error) -> bool {
    use candle_core::Error as E;
    match err {
        E::WrappedContext { wrapped, .. } => wrapped.is::<Interrupted>(),
        E::Context { inner, .. } | E::WithPath { inner, .. } | E::WithBacktrace { inner, .. } => {
            is_interruption(inner)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn a_raised_interrupt_becomes_the_cancelled_error() {
        let flag = AtomicBool::new(false);
        let check = || flag.load(Ordering::Relaxed);
        let interrupt = Interrupt::new(&check);
        assert!(interrupt.check().is_ok());
        assert!(!Interrupt::NEVER.is_raised());
        flag.store(true, Ordering::Relaxed);
        let err = interrupt.check().unwrap_err().context("in a layer").bt();
        assert!(matches!(crate::Error::from(err), crate::Error::Cancelled));
        assert!(matches!(
            interrupt.check_cancelled(),
            Err(crate::Error::Cancelled)
        ));
        let other = candle_core::Error::Msg("shape".into());
        assert!(matches!(crate::Error::from(other), crate::Error::Candle(_)));
    }
}
