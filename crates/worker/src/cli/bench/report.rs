//! What a figure reports, and how figures are printed: a table, or one JSON
//! object a line (what child processes hand their parent).

use serde::{Deserialize, Serialize};

use super::args::{name_of, BenchComponent, BenchModel};
use super::machine::Peaks;

/// One measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// The architecture.
    pub model: BenchModel,
    /// What was timed.
    pub component: BenchComponent,
    /// Image side in pixels (0 for text encoding).
    pub size: usize,
    /// UNet batch (1 for the other components; 2 for a guided image).
    pub batch: usize,
    /// Timed repetitions.
    pub reps: usize,
    /// Median seconds per repetition.
    pub median_s: f64,
    /// Fastest repetition.
    pub min_s: f64,
    /// Slowest repetition.
    pub max_s: f64,
    /// Seconds to build or load the weights.
    pub load_s: f64,
    /// Peak resident memory while building or loading the weights, MiB.
    pub load_peak_mib: f64,
    /// Peak resident memory during the timed runs (weights included), MiB.
    pub run_peak_mib: f64,
    /// Whether every output value was finite.
    pub finite: bool,
    /// For `image`: median seconds of text encoding, denoising and decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<[f64; 3]>,
    /// For `image`: the denoising steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Multiply-adds per timed run in f32, as the CPU kernels count them.
    #[serde(default)]
    pub f32_macs: u64,
    /// Multiply-adds per timed run with bf16 operands.
    #[serde(default)]
    pub bf16_macs: u64,
}

/// The median of `xs` (the mean of the middle two for an even count; NaN when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The smallest and largest of `xs` (NaN for both when empty).
pub fn min_max(xs: &[f64]) -> (f64, f64) {
    let fold = |pick: fn(f64, f64) -> f64| xs.iter().copied().reduce(pick).unwrap_or(f64::NAN);
    (fold(f64::min), fold(f64::max))
}

/// Prints the figures: one JSON object a line, or the table (with each
/// figure's share of `peaks` when given).
pub fn print(figures: &[Figure], json: bool, peaks: Option<&Peaks>) -> anyhow::Result<()> {
    if json {
        for figure in figures {
            println!("{}", serde_json::to_string(figure)?);
        }
    } else {
        print!("{}", table(figures, peaks));
    }
    Ok(())
}

/// The figures as a table with a header line, one figure a line: times,
/// memory, and the counted multiply-adds (GMAC per run) with their share of
/// the measured `peaks` at the fastest time.
pub fn table(figures: &[Figure], peaks: Option<&Peaks>) -> String {
    let mut out = format!(
        "{:<9} {:<11} {:>5} {:>3} {:>9} {:>9} {:>9} {:>8} {:>10} {:>10} {:>8} {:>6}  note\n",
        "model",
        "component",
        "size",
        "b",
        "median_s",
        "min_s",
        "max_s",
        "load_s",
        "peak_MiB",
        "load_MiB",
        "GMAC",
        "peak%"
    );
    for f in figures {
        let gmac = (f.f32_macs + f.bf16_macs) as f64 / 1e9;
        let share = peaks
            .and_then(|p| p.fraction(f))
            .map_or("-".to_string(), |x| format!("{:.0}", 100.0 * x));
        out.push_str(&format!(
            "{:<9} {:<11} {:>5} {:>3} {:>9.3} {:>9.3} {:>9.3} {:>8.2} {:>10.0} {:>10.0} {:>8.1} {:>6}  {}\n",
            name_of(f.model),
            name_of(f.component),
            f.size,
            f.batch,
            f.median_s,
            f.min_s,
            f.max_s,
            f.load_s,
            f.run_peak_mib,
            f.load_peak_mib,
            gmac,
            share,
            note(f)
        ));
    }
    out
}

/// An image's stages with their shares, and a warning for non-finite output.
fn note(f: &Figure) -> String {
    let mut note = String::new();
    if let (Some([text, denoise, decode]), Some(steps)) = (f.stages, f.steps) {
        let total = text + denoise + decode;
        let share = |s: f64| 100.0 * s / total;
        note = format!(
            "{steps} steps: text {text:.2}s ({:.0}%), denoise {denoise:.2}s ({:.0}%), decode {decode:.2}s ({:.0}%)",
            share(text),
            share(denoise),
            share(decode)
        );
    }
    if !f.finite {
        note.push_str(" NON-FINITE OUTPUT");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(component: BenchComponent) -> Figure {
        Figure {
            model: BenchModel::SdTurbo,
            component,
            size: 512,
            batch: 1,
            reps: 2,
            median_s: 1.5,
            min_s: 1.25,
            max_s: 1.75,
            load_s: 3.0,
            load_peak_mib: 2048.0,
            run_peak_mib: 4096.0,
            finite: true,
            stages: None,
            steps: None,
            f32_macs: 3_000_000_000,
            bf16_macs: 0,
        }
    }

    #[test]
    fn median_and_extremes() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
        assert_eq!(min_max(&[2.0, 0.5, 9.0]), (0.5, 9.0));
        assert!(min_max(&[]).0.is_nan());
    }

    #[test]
    fn the_table_has_a_line_per_figure_and_image_stages() {
        let mut image = figure(BenchComponent::Image);
        image.stages = Some([0.25, 1.0, 0.25]);
        image.steps = Some(1);
        let mut broken = figure(BenchComponent::VaeDecode);
        broken.finite = false;
        let peaks = Peaks {
            f32: Some(4e9),
            bf16: None,
        };
        let table = table(&[figure(BenchComponent::Unet), image, broken], Some(&peaks));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("model     component"));
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "sd-turbo", "unet", "512", "1", "1.500", "1.250", "1.750", "3.00", "4096", "2048",
                "3.0", "60"
            ]
        );
        assert!(lines[2]
            .ends_with("1 steps: text 0.25s (17%), denoise 1.00s (67%), decode 0.25s (17%)"));
        assert!(lines[3].ends_with("NON-FINITE OUTPUT"));
    }

    #[test]
    fn figures_round_trip_through_json_without_empty_stages() {
        let line = serde_json::to_string(&figure(BenchComponent::VaeDecode)).unwrap();
        assert!(line.contains(r#""model":"sd-turbo","component":"vae-decode""#));
        assert!(!line.contains("stages"));
        let back: Figure = serde_json::from_str(&line).unwrap();
        assert_eq!((back.size, back.median_s), (512, 1.5));
    }
}
