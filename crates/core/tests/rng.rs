//! `TorchRng` against `torch.randn` draws recorded in `fixtures/rng/`.
//!
//! Each case seeds one `torch.Generator("cpu")` and draws the listed shapes in
//! sequence (tools/fixtures/make_fixtures.py, group `rng`):
//!     g = torch.Generator("cpu").manual_seed(seed)
//!     tensors[f"{name}.{k}"] = torch.randn(shape, generator=g, dtype=torch.float32)

use std::path::PathBuf;

use candle_core::Device;
use sd_core::rng::TorchRng;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    seed: u64,
    shapes: Vec<Vec<usize>>,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/rng")
}

#[test]
fn randn_matches_torch() {
    let dir = fixtures();
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let refs = candle_core::safetensors::load(dir.join("randn.safetensors"), &Device::Cpu).unwrap();
    let mut max_diff = 0f32;
    let mut draws = 0;
    for case in &cases {
        let mut rng = TorchRng::new(case.seed);
        for (k, shape) in case.shapes.iter().enumerate() {
            let key = format!("{}.{k}", case.name);
            let expected = &refs[&key];
            assert_eq!(expected.dims(), shape.as_slice(), "{key}");
            let ours = rng.randn_tensor(shape, &Device::Cpu).unwrap();
            let expected = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let diff = ours
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff <= 1e-5, "{key}: max |diff| {diff}");
            max_diff = max_diff.max(diff);
            draws += 1;
        }
    }
    println!(
        "rng: {draws} draws in {} cases, max |diff| {max_diff:e}",
        cases.len()
    );
}
