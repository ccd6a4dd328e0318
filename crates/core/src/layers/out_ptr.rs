//! A raw output pointer shared by the work items of a parallel loop.

/// A `*mut f32` into an output buffer, `Send` and `Sync` so that the work
/// items of a rayon loop can each write their own part of the buffer without
/// a lock or a split borrow.
///
/// Safety contract for every use: the buffer outlives the loop and nothing
/// else reads or writes it meanwhile, every offset added to [`OutPtr::get`]
/// stays inside it, and no element is written by more than one work item.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(*mut f32);

// SAFETY: under the contract above the work items touch disjoint elements of
// a buffer that outlives them, so the pointer may cross threads.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A pointer to the start of `out`.
    pub(crate) fn new(out: &mut [f32]) -> Self {
        Self(out.as_mut_ptr())
    }

    /// The pointer (a method, so closures capture the `Send` wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
