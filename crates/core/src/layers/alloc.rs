//! Allocator settings for large-tensor workloads.

/// Keeps freed tensor buffers inside the process for reuse (glibc on Linux).
///
/// By default glibc serves every allocation above 32 MiB with a fresh `mmap`
/// and unmaps it on free, so each large activation pays page faults and kernel
/// zeroing again (about a tenth of a VAE decode's time). This disables those
/// per-allocation maps and only returns memory to the system when more than
/// 1 GiB sits free at the top of the heap. Peak memory is essentially
/// unchanged; resident memory stays near its peak between generations. It
/// changes process-wide state, so it is for binaries to call once at start;
/// elsewhere it does nothing. Returns whether the settings were applied.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only adjusts glibc's allocator parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
