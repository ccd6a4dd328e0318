//! Cancellation inside long phases: a raised [`Interrupt`] stops text
//! encoding, one UNet pass and the VAE part-way with `Error::Cancelled`.
//!
//! The sizes make one pass take seconds on the tiny fixtures in the test
//! profile (on a loaded two-core machine: a 768×768 UNet pass about 10 s, a
//! 1024×1024 VAE decode about 4 s, a 768×768 encode about 2 s), and the flag
//! goes up 0.2 s in, so a pass that returns `Cancelled` well under a second
//! later was stopped in the middle.

mod common;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use common::fixtures;
use sd_core::model::{
    load_unet, load_vae, Component, DiffusersFolder, LoadOptions, ModelSource, WeightVariant,
};
use sd_core::pipeline::{GenerateParams, StableDiffusion, VaeDecoder};
use sd_core::prompt::PromptSyntax;
use sd_core::prompt::TextEncoders;
use sd_core::unet::UNetConfig;
use sd_core::{Error, Interrupt};

/// The most a raised interrupt may take to stop a pass, on a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(1);

/// When the flag is raised, counted from the start of the work.
const RAISED_AFTER: Duration = Duration::from_millis(200);

fn tiny(name: &str) -> DiffusersFolder {
    DiffusersFolder::open(&fixtures().join(name), WeightVariant::Full).unwrap()
}

/// A flag another thread raises after `delay`; the thread returns the moment it did.
fn raise_after(delay: Duration) -> (Arc<AtomicBool>, JoinHandle<Instant>) {
    let flag = Arc::new(AtomicBool::new(false));
    let raiser = Arc::clone(&flag);
    let handle = std::thread::spawn(move || {
        std::thread::sleep(delay);
        raiser.store(true, Ordering::SeqCst);
        Instant::now()
    });
    (flag, handle)
}

/// Runs `work` under an interrupt raised after [`RAISED_AFTER`]; asserts it
/// ended cancelled within [`PROMPTLY`] of the raise, and returns that latency.
fn assert_stopped_promptly<T: std::fmt::Debug>(
    what: &str,
    work: impl FnOnce(Interrupt<'_>) -> sd_core::Result<T>,
) -> Duration {
    let (flag, raiser) = raise_after(RAISED_AFTER);
    let raised = || flag.load(Ordering::SeqCst);
    let result = work(Interrupt::new(&raised));
    let ended = Instant::now();
    let raised_at = raiser.join().unwrap();
    assert!(
        matches!(result, Err(Error::Cancelled)),
        "{what}: expected a cancellation, got {result:?}"
    );
    let latency = ended.saturating_duration_since(raised_at);
    eprintln!("{what}: stopped {latency:?} after the interrupt");
    assert!(
        latency < PROMPTLY,
        "{what}: stopped {latency:?} after the interrupt"
    );
    latency
}

/// Every check text encoding makes stops it: an interrupt raised from the
/// k-th check on ends the encoding cancelled, for one and for two encoders.
#[test]
fn text_encoding_stops_at_each_of_its_checks() {
    for (model, dual) in [("tiny-sd15", false), ("tiny-sdxl", true)] {
        let source = tiny(model);
        let mut text =
            TextEncoders::load(&source, dual, LoadOptions::default(), &Device::Cpu).unwrap();
        for syntax in [PromptSyntax::Plain, PromptSyntax::A1111] {
            let checks = AtomicUsize::new(0);
            let counting = || {
                checks.fetch_add(1, Ordering::SeqCst);
                false
            };
            text.encode_interruptible("a cat", syntax, Interrupt::new(&counting))
                .unwrap();
            let total = checks.load(Ordering::SeqCst);
            // Before tokenizing, and before every layer of every encoder.
            assert!(total >= if dual { 5 } else { 3 }, "{model}: {total} checks");
            for k in 0..total {
                let calls = AtomicUsize::new(0);
                let from_kth = || calls.fetch_add(1, Ordering::SeqCst) >= k;
                let result = text.encode_interruptible(
                    &format!("a cat {k}"),
                    syntax,
                    Interrupt::new(&from_kth),
                );
                assert!(
                    matches!(result, Err(Error::Cancelled)),
                    "{model} ({syntax}): raised at check {k}: {result:?}"
                );
            }
        }
    }
}

/// A generation whose interrupt is up before it starts, or goes up during
/// text encoding, ends cancelled without running a step.
#[test]
fn generate_stops_before_and_during_text_encoding() {
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).unwrap();
    let params = GenerateParams {
        prompt: "a lighthouse".into(),
        negative_prompt: Some("fog".into()),
        prompt_syntax: PromptSyntax::A1111,
        clip_skip: 0,
        steps: 2,
        guidance_scale: 7.5,
        width: 64,
        height: 64,
        seed: 1,
        scheduler: None,
        image: None,
        decoder: VaeDecoder::Full,
    };
    for raise_at in [0, 1, 3] {
        let calls = AtomicUsize::new(0);
        let raised = || calls.fetch_add(1, Ordering::SeqCst) >= raise_at;
        let mut steps = 0;
        let started = Instant::now();
        let result = model.generate(&params, Interrupt::new(&raised), &mut |_| {
            steps += 1;
            ControlFlow::Continue(())
        });
        assert!(
            matches!(result, Err(Error::Cancelled)),
            "raised at check {raise_at}: {result:?}"
        );
        assert_eq!(steps, 0, "raised at check {raise_at}");
        assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    }
    let finished = model.generate(
        &params,
        Interrupt::NEVER,
        &mut |_| ControlFlow::Continue(()),
    );
    assert!(finished.is_ok(), "{finished:?}");
}

/// A flag raised from another thread stops one long UNet pass in the middle.
#[test]
fn a_long_unet_pass_stops_mid_step() {
    let source = tiny("tiny-sd15");
    let config = UNetConfig::from_config(&source.config(Component::Unet).unwrap()).unwrap();
    let unet = load_unet(&source, &config, LoadOptions::default(), &Device::Cpu).unwrap();
    let (size, context_dim) = (96, 32);
    let sample = Tensor::randn(0f32, 1.0, (1, 4, size, size), &Device::Cpu).unwrap();
    let context = Tensor::randn(0f32, 1.0, (1, 77, context_dim), &Device::Cpu).unwrap();
    assert_stopped_promptly("UNet pass at 768x768", |interrupt| {
        unet.forward_interruptible(&sample, 500.0, &context, None, interrupt)
    });
}

/// A flag raised from another thread stops a long VAE decoding and encoding.
#[test]
fn long_vae_passes_stop_part_way() {
    let vae = load_vae(&tiny("tiny-sd15"), LoadOptions::default(), &Device::Cpu).unwrap();
    let latents = Tensor::randn(0f32, 1.0, (1, 4, 128, 128), &Device::Cpu).unwrap();
    assert_stopped_promptly("VAE decode to 1024x1024", |interrupt| {
        vae.decode_interruptible(&latents, interrupt)
    });
    let image = Tensor::rand(-1f32, 1.0, (1, 3, 768, 768), &Device::Cpu).unwrap();
    assert_stopped_promptly("VAE encode of 768x768", |interrupt| {
        vae.encode_interruptible(&image, interrupt).map(|p| p.mean)
    });
}
