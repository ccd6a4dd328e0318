//! What every benchmark run prints first: the CPU, its caches, the thread
//! count, the matrix kernel chosen, and the machine's measured multiply-add
//! peak (the roofline the figures are set against).

use std::time::Instant;

use rayon::prelude::*;
use sd_core::layers::bf16::{self, Bf16Kernel};

use super::report::Figure;
use crate::config::{Dtype, Precision};

/// Multiply-adds per second of every compute thread together, in f32 and with
/// bf16 operands (`None` where the CPU lacks the instructions).
#[derive(Debug, Clone, Copy)]
pub struct Peaks {
    /// f32 fused multiply-adds per second.
    pub f32: Option<f64>,
    /// bf16 pair dot products per second, counted as two multiply-adds each.
    pub bf16: Option<f64>,
}

impl Peaks {
    /// The fraction of the peak a figure reached: the time its counted
    /// multiply-adds take at the peaks, over its fastest time.
    pub fn fraction(&self, figure: &Figure) -> Option<f64> {
        let at_peak = |count: u64, peak: Option<f64>| -> Option<f64> {
            match (count, peak) {
                (0, _) => Some(0.0),
                (c, Some(p)) => Some(c as f64 / p),
                (_, None) => None,
            }
        };
        let ideal = at_peak(figure.f32_macs, self.f32)? + at_peak(figure.bf16_macs, self.bf16)?;
        (ideal > 0.0 && figure.min_s > 0.0).then(|| ideal / figure.min_s)
    }
}

/// The lines printed before the figures, `peaks` already measured.
pub fn header(precision: Precision, peaks: &Peaks) -> String {
    let threads = rayon::current_num_threads();
    let dtype = precision.weights;
    let kernel = match (dtype, precision.compute, bf16::kernel()) {
        (_, Dtype::F16 | Dtype::Bf16, _) => "candle's half-precision ops",
        (Dtype::Bf16, _, Bf16Kernel::Avx512Bf16) => Bf16Kernel::Avx512Bf16.as_str(),
        (Dtype::Bf16, _, Bf16Kernel::WidenToF32) => Bf16Kernel::WidenToF32.as_str(),
        (Dtype::F16, _, _) => "f32 gemm (f16 weights widened)",
        (Dtype::F32, _, _) => "f32 gemm",
    };
    let gmac = |p: Option<f64>| p.map_or("n/a".to_string(), |p| format!("{:.1}", p / 1e9));
    format!(
        "cpu: {}\ncaches: {}\nthreads: {threads}, --dtype {}, --compute-dtype {}, matrix kernel: {kernel} (f32 gemm ISA: {})\n\
         roofline: peak {} GMAC/s f32 FMA, {} GMAC/s bf16 dot ({threads} threads, tight register loops); \
         peak% = counted multiply-adds at those peaks / fastest time\n",
        cpu_model(),
        caches(),
        dtype.as_str(),
        precision.compute.as_str(),
        f32_isa(),
        gmac(peaks.f32),
        gmac(peaks.bf16),
    )
}

/// `model name` of /proc/cpuinfo, else "unknown".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// CPU 0's caches from sysfs, as `L1d 32K, L1i 32K, L2 1024K, L3 32768K`.
fn caches() -> String {
    let base = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let read = |dir: &std::path::Path, name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map(|s| s.trim().to_string())
            .ok()
    };
    let mut found = Vec::new();
    for index in 0..8 {
        let dir = base.join(format!("index{index}"));
        let (Some(level), Some(kind), Some(size)) =
            (read(&dir, "level"), read(&dir, "type"), read(&dir, "size"))
        else {
            continue;
        };
        let suffix = match kind.as_str() {
            "Data" => "d",
            "Instruction" => "i",
            _ => "",
        };
        found.push(format!("L{level}{suffix} {size}"));
    }
    if found.is_empty() {
        "unknown".to_string()
    } else {
        found.join(", ")
    }
}

/// The widest f32 vector ISA the gemm crate can use here.
fn f32_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    "baseline"
}

/// Measures both peaks on every compute thread at once (about half a second).
pub fn measure_peaks() -> Peaks {
    Peaks {
        f32: peak(simd::f32_fma),
        bf16: peak(simd::bf16_dot),
    }
}

/// Runs `run` (multiply-adds of `iters` loop turns, or `None`) on every thread
/// at once, best of three, as multiply-adds per second.
fn peak(run: fn(usize) -> Option<u64>) -> Option<f64> {
    let threads = rayon::current_num_threads().max(1);
    let iters = 2_000_000;
    run(1000)?;
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let total: u64 = (0..threads)
                .into_par_iter()
                .map(|_| run(iters).unwrap_or(0))
                .sum();
            total as f64 / started.elapsed().as_secs_f64()
        })
        .reduce(f64::max)
}

/// The tight loops: independent accumulators, so only throughput bounds them.
mod simd {
    /// `iters` turns of 16 independent 16-lane f32 FMAs (AVX-512F), or 12
    /// 8-lane ones (AVX2+FMA); the multiply-adds done.
    pub fn f32_fma(iters: usize) -> Option<u64> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                return Some(unsafe { x86::fma512(iters) });
            }
            if std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("avx") {
                // SAFETY: the CPU has AVX and FMA.
                return Some(unsafe { x86::fma256(iters) });
            }
        }
        let _ = iters;
        None
    }

    /// `iters` turns of 16 independent `vdpbf16ps` (32 bf16 products each);
    /// `None` without AVX512-BF16.
    pub fn bf16_dot(iters: usize) -> Option<u64> {
        #[cfg(target_arch = "x86_64")]
        {
            if sd_core::layers::bf16::cpu_has_avx512_bf16() {
                // SAFETY: the CPU has AVX512-BF16.
                return Some(unsafe { x86::dot512(iters) });
            }
        }
        let _ = iters;
        None
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        /// Independent chains for AVX-512's 32 vector registers; enough to
        /// hide the FMA latency on two ports.
        const ACC: usize = 16;
        /// AVX2 has 16 vector registers: 12 chains leave room for the two
        /// operands, so nothing spills to memory (16 chains did, and halved
        /// the measured peak on a Zen 3 EPYC).
        const ACC256: usize = 12;

        #[target_feature(enable = "avx512f")]
        pub unsafe fn fma512(iters: usize) -> u64 {
            let mut acc = [_mm512_set1_ps(0.0); ACC];
            let (a, b) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-4));
            for _ in 0..iters {
                for r in acc.iter_mut() {
                    *r = _mm512_fmadd_ps(*r, a, b);
                }
            }
            let sum = acc
                .iter()
                .fold(_mm512_set1_ps(0.0), |s, &r| _mm512_add_ps(s, r));
            std::hint::black_box(_mm512_reduce_add_ps(sum));
            (iters * ACC * 16) as u64
        }

        #[target_feature(enable = "avx,fma")]
        pub unsafe fn fma256(iters: usize) -> u64 {
            let mut acc = [_mm256_set1_ps(0.0); ACC256];
            let (a, b) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-4));
            for _ in 0..iters {
                for r in acc.iter_mut() {
                    *r = _mm256_fmadd_ps(*r, a, b);
                }
            }
            let sum = acc
                .iter()
                .fold(_mm256_set1_ps(0.0), |s, &r| _mm256_add_ps(s, r));
            let mut out = [0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), sum);
            std::hint::black_box(out);
            (iters * ACC256 * 8) as u64
        }

        #[target_feature(enable = "avx512f,avx512bf16")]
        pub unsafe fn dot512(iters: usize) -> u64 {
            let mut acc = [_mm512_set1_ps(0.0); ACC];
            let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3F80_3F80));
            let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3800_3800));
            for _ in 0..iters {
                for r in acc.iter_mut() {
                    *r = _mm512_dpbf16_ps(*r, a, b);
                }
            }
            let sum = acc
                .iter()
                .fold(_mm512_set1_ps(0.0), |s, &r| _mm512_add_ps(s, r));
            std::hint::black_box(_mm512_reduce_add_ps(sum));
            (iters * ACC * 32) as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench::args::BenchComponent;
    use crate::cli::bench::BenchModel;

    fn figure(f32_macs: u64, bf16_macs: u64) -> Figure {
        Figure {
            model: BenchModel::Sd15,
            component: BenchComponent::Unet,
            size: 512,
            batch: 2,
            reps: 1,
            median_s: 2.0,
            min_s: 1.0,
            max_s: 2.0,
            load_s: 0.0,
            load_peak_mib: 0.0,
            run_peak_mib: 0.0,
            finite: true,
            stages: None,
            steps: None,
            f32_macs,
            bf16_macs,
        }
    }

    #[test]
    fn the_fraction_weighs_each_arithmetic_by_its_peak() {
        let peaks = Peaks {
            f32: Some(100.0),
            bf16: Some(200.0),
        };
        // 50 f32 take 0.5 s at the peak, 100 bf16 another 0.5 s: all of 1 s.
        assert_eq!(peaks.fraction(&figure(50, 100)), Some(1.0));
        assert_eq!(peaks.fraction(&figure(25, 0)), Some(0.25));
        let no_bf16 = Peaks {
            f32: Some(100.0),
            bf16: None,
        };
        assert_eq!(no_bf16.fraction(&figure(25, 10)), None);
        assert_eq!(no_bf16.fraction(&figure(0, 0)), None);
    }

    #[test]
    fn the_header_names_the_machine_and_the_kernel() {
        let peaks = Peaks {
            f32: Some(64e9),
            bf16: None,
        };
        let header = header(Precision::default(), &peaks);
        assert!(header.starts_with("cpu: "), "{header}");
        assert!(header.contains("matrix kernel: f32 gemm"), "{header}");
        assert!(
            header.contains("peak 64.0 GMAC/s f32 FMA, n/a GMAC/s bf16"),
            "{header}"
        );
    }
}
