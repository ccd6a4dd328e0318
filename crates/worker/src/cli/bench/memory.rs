//! Peak resident memory of this process, from Linux's `/proc/self`.

/// Resets the kernel's peak-RSS counter (`VmHWM`) to the current RSS.
pub fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM (Linux ≥ 4.0); elsewhere the peak
    // simply stays the process-wide one.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `VmHWM` of this process in MiB (0 where /proc is unavailable).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| vm_hwm_kib(&status))
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The `VmHWM:` value of a `/proc/<pid>/status` text, in KiB.
fn vm_hwm_kib(status: &str) -> Option<f64> {
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_peak_from_a_status_text() {
        let status = "Name:\tsd-worker\nVmPeak:\t  900 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(2048.0));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_a_peak() {
        reset_peak_rss();
        if cfg!(target_os = "linux") {
            assert!(peak_rss_mib() > 0.0);
        }
    }
}
