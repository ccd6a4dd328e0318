//! Every scheduler against diffusers, on the synthetic loops in `fixtures/schedulers/`.
//!
//! tools/fixtures/make_fixtures.py (group `schedulers`) ran, for each case:
//!     s = Class.from_config(config); s.set_timesteps(steps)
//!     g = torch.Generator("cpu").manual_seed(seed)
//!     x = torch.randn([1, 4, 8, 8], generator=g) * s.init_noise_sigma
//!     for i, t in enumerate(s.timesteps):
//!         xin = s.scale_model_input(x, t); mo = 0.5 * xin + 0.05 * (float(t) / 1000)
//!         x = s.step(mo, t, x, generator=g).prev_sample   # generator only where step takes one
//! and saved `timesteps`, `init_noise_sigma`, `scaled.{i}`, `model_output.{i}` and `sample.{i}`.
//! The same loop runs here with `TorchRng` for the initial noise and the step draws (Euler
//! Ancestral draws at every step, LCM at every step but the last). `unipc` cases use
//! `from_config(config, solver_type="bh2", solver_order=2)`, as `build_scheduler` pins for that kind.

mod common;

use std::collections::BTreeMap;

use candle_core::Device;
use common::{fixtures, max_abs, max_abs_diff};
use sd_core::rng::TorchRng;
use sd_core::schedulers::SchedulerKind;
use sd_core::schedulers::{build_scheduler, SchedulerConfig};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    kind: String,
    steps: usize,
    seed: u64,
    config: serde_json::Value,
}

/// The worst errors seen in one group of cases.
#[derive(Default)]
struct Worst {
    cases: usize,
    timestep: f64,
    sigma: f64,
    scaled: f32,
    sample: f32,
}

#[test]
fn schedulers_match_diffusers() {
    let dir = fixtures().join("schedulers");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let device = Device::Cpu;
    let mut worst: BTreeMap<String, Worst> = BTreeMap::new();
    for case in &cases {
        let name = &case.name;
        let refs = candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &device)
            .unwrap();
        let config = SchedulerConfig::from_value(case.config.clone()).unwrap();
        let kind: SchedulerKind = case.kind.parse().unwrap();
        let mut scheduler = build_scheduler(Some(kind), &config, case.steps).unwrap();
        let w = worst.entry(case.kind.clone()).or_default();
        w.cases += 1;

        let timesteps = refs["timesteps"].to_vec1::<f64>().unwrap();
        assert_eq!(
            scheduler.timesteps().len(),
            timesteps.len(),
            "{name}: timestep count"
        );
        for (ours, theirs) in scheduler.timesteps().iter().zip(&timesteps) {
            let diff = (ours - theirs).abs();
            assert!(diff <= 1e-3, "{name}: timestep {ours} vs {theirs}");
            w.timestep = w.timestep.max(diff);
        }
        let sigma = refs["init_noise_sigma"].to_vec1::<f64>().unwrap()[0];
        let sigma_diff = (scheduler.init_noise_sigma() - sigma).abs();
        assert!(
            sigma_diff <= 1e-6 * sigma.max(1.0),
            "{name}: init_noise_sigma {sigma_diff}"
        );
        w.sigma = w.sigma.max(sigma_diff);

        let mut rng = TorchRng::new(case.seed);
        let noise = rng.randn_tensor(&[1, 4, 8, 8], &device).unwrap();
        let mut x = (noise * scheduler.init_noise_sigma()).unwrap();
        let timesteps = scheduler.timesteps().to_vec();
        for (i, t) in timesteps.into_iter().enumerate() {
            let xin = scheduler.scale_model_input(&x, i).unwrap();
            let scaled_ref = &refs[&format!("scaled.{i}")];
            let tol = 1e-4 * max_abs(scaled_ref).max(1.0);
            let diff = max_abs_diff(&xin, scaled_ref);
            assert!(diff <= tol, "{name}: scaled.{i} max |diff| {diff}");
            w.scaled = w.scaled.max(diff);

            let model_output = xin.affine(0.5, 0.05 * (t / 1000.0)).unwrap();
            x = scheduler.step(&model_output, i, &x, &mut rng).unwrap();
            let sample_ref = &refs[&format!("sample.{i}")];
            let tol = 1e-4 * max_abs(sample_ref).max(1.0);
            let diff = max_abs_diff(&x, sample_ref);
            assert!(diff <= tol, "{name}: sample.{i} max |diff| {diff} > {tol}");
            w.sample = w.sample.max(diff);
        }
    }
    for kind in SchedulerKind::ALL {
        assert!(
            worst.contains_key(kind.as_str()),
            "no fixture case covers {kind}"
        );
    }
    for (kind, w) in &worst {
        println!(
            "{kind:>16}: {:2} cases, max |diff| timesteps {:.1e}, init_noise_sigma {:.1e}, scaled {:.1e}, samples {:.1e}",
            w.cases, w.timestep, w.sigma, w.scaled, w.sample
        );
    }
}
