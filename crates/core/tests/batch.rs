//! Several images of one generation batched through the UNet: image `i` is
//! the image a generation of one with seed `seed + i` makes, whatever the
//! batch (noise, ancestral draws and img2img/inpainting draws per image),
//! and progress counts every image's steps once, never going back.
//!
//! The tolerance covers batched matrix products summing in another order: on
//! the tiny models the batched images came out equal to the single ones, but
//! for one pixel of one image one 8-bit level off (SD 1.5, PNDM, seed
//! 2^64 - 2), so any difference beyond one level means the batch mixed up
//! its images (different seeds differ by tens of levels).

mod common;

use std::ops::ControlFlow;

use candle_core::Device;
use common::fixtures;
use sd_core::image::{ColorMode, DecodedImage};
use sd_core::pipeline::{
    steps_at_strength, BatchBudget, BatchPlan, GenerateParams, GeneratedImage, ImageInput,
    StableDiffusion, VaeDecoder,
};
use sd_core::prompt::PromptSyntax;
use sd_core::schedulers::SchedulerKind;
use sd_core::Interrupt;

/// Most a batched image's 8-bit RGB may differ from its single-seed image.
const RGB_TOLERANCE: u8 = 1;

fn load(name: &str) -> StableDiffusion {
    StableDiffusion::load(&fixtures().join(name), &Device::Cpu).unwrap()
}

fn params(seed: u64, scheduler: Option<SchedulerKind>) -> GenerateParams {
    GenerateParams {
        prompt: "a lighthouse at dusk".into(),
        negative_prompt: Some("fog".into()),
        prompt_syntax: PromptSyntax::A1111,
        clip_skip: 0,
        steps: 3,
        guidance_scale: 7.5,
        width: 64,
        height: 64,
        seed,
        scheduler,
        decoder: VaeDecoder::Full,
        image: None,
    }
}

fn single(model: &mut StableDiffusion, params: &GenerateParams) -> GeneratedImage {
    model
        .generate(params, Interrupt::NEVER, &mut |_| ControlFlow::Continue(()))
        .unwrap()
}

/// Runs `images` images `per_pass` at a time; returns them in order with
/// every progress count reported.
fn batch(
    model: &mut StableDiffusion,
    params: &GenerateParams,
    images: usize,
    per_pass: usize,
) -> (Vec<GeneratedImage>, Vec<(usize, usize)>) {
    let mut out = Vec::new();
    let mut steps = Vec::new();
    model
        .generate_batch(
            params,
            BatchPlan { images, per_pass },
            Interrupt::NEVER,
            &mut |p| {
                steps.push((p.step, p.total));
                ControlFlow::Continue(())
            },
            &mut |index, image| {
                assert_eq!(index, out.len(), "images arrive in order");
                out.push(image);
            },
        )
        .unwrap();
    (out, steps)
}

fn max_rgb_diff(a: &GeneratedImage, b: &GeneratedImage) -> u8 {
    a.rgb
        .iter()
        .zip(&b.rgb)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap()
}

/// Each batched image against the single generation with its seed.
fn assert_each_matches_its_seed(
    model: &mut StableDiffusion,
    base: &GenerateParams,
    images: &[GeneratedImage],
) {
    for (i, image) in images.iter().enumerate() {
        let seed = base.seed.wrapping_add(i as u64);
        assert_eq!(image.seed, seed);
        let alone = single(
            model,
            &GenerateParams {
                seed,
                ..base.clone()
            },
        );
        let diff = max_rgb_diff(image, &alone);
        eprintln!("image {i} (seed {seed}): max |batched - single| = {diff} of 255");
        assert!(diff <= RGB_TOLERANCE, "image {i}: differs by {diff}");
    }
    assert!(
        max_rgb_diff(&images[0], &images[1]) > 10,
        "the images of a batch must differ (their seeds do)"
    );
}

fn assert_progress(steps: &[(usize, usize)], total: usize) {
    assert!(steps.iter().all(|&(_, t)| t == total), "{steps:?}");
    // Never backwards; a step repeats when the scheduler makes a pass more
    // than the steps asked for (PNDM), as the progress counts asked steps.
    assert!(
        steps.windows(2).all(|w| w[0].0 <= w[1].0),
        "monotonic: {steps:?}"
    );
    assert_eq!(steps.last().map(|s| s.0), Some(total), "{steps:?}");
}

/// SD 1.5, guided, with the folder's PNDM (whose history is per image) and
/// Euler Ancestral (whose per-step noise is drawn from each image's own
/// generator); three images in passes of two and one.
#[test]
fn sd15_batched_images_match_their_seeds() {
    let mut model = load("tiny-sd15");
    for scheduler in [None, Some(SchedulerKind::EulerA)] {
        let base = params(u64::MAX - 1, scheduler);
        let (images, steps) = batch(&mut model, &base, 3, 2);
        assert_eq!(images.len(), 3);
        // Progress counts the steps asked for, PNDM's extra pass aside.
        assert_progress(&steps, 3 * base.steps);
        // A pass of two advances the count by two steps.
        assert_eq!(steps[0].0, 2);
        assert_each_matches_its_seed(&mut model, &base, &images);
    }
}

/// SDXL: the pooled embeddings and size conditioning repeat per image.
#[test]
fn sdxl_batched_images_match_their_seeds() {
    let mut model = load("tiny-sdxl");
    let base = params(7, Some(SchedulerKind::Euler));
    let (images, steps) = batch(&mut model, &base, 2, 2);
    assert_progress(&steps, 2 * base.steps);
    assert_each_matches_its_seed(&mut model, &base, &images);
}

/// Unguided (the UNet batch is the images alone), image-to-image (each image
/// draws its own posterior sample) and inpainting on the 9-channel UNet (each
/// image's mask channels beside its latents).
#[test]
fn image_to_image_and_inpainting_batches_match_their_seeds() {
    let picture = DecodedImage::from_raw(
        64,
        64,
        ColorMode::Rgb,
        (0..64 * 64 * 3).map(|i| (i * 7 % 251) as u8).collect(),
    )
    .unwrap();
    let mask = DecodedImage::from_raw(
        64,
        64,
        ColorMode::Luma,
        (0..64 * 64)
            .map(|i| if i % 64 < 32 { 255 } else { 0 })
            .collect(),
    )
    .unwrap();
    let cases = [
        ("tiny-sd15", None, 0.6, 1.0),
        ("tiny-sd15", Some(mask.clone()), 0.75, 7.5),
        ("tiny-sd15-inpaint", Some(mask), 1.0, 7.5),
    ];
    for (name, mask, strength, guidance_scale) in cases {
        let mut model = load(name);
        let base = GenerateParams {
            guidance_scale,
            steps: 4,
            image: Some(ImageInput {
                image: picture.clone(),
                mask,
                strength,
            }),
            ..params(3, None)
        };
        let (images, steps) = batch(&mut model, &base, 2, 2);
        assert_progress(&steps, 2 * steps_at_strength(base.steps, strength));
        eprintln!("{name}, strength {strength}, guidance {guidance_scale}:");
        assert_each_matches_its_seed(&mut model, &base, &images);
    }
}

/// The budget sets the images per pass: none beyond the first with a zero
/// budget, all of them with room, and a share of them in between.
#[test]
fn the_memory_budget_chooses_the_images_per_pass() {
    let model = load("tiny-sd15");
    let base = GenerateParams {
        width: 512,
        height: 512,
        ..params(0, None)
    };
    let per_pass = |bytes| model.batch_plan(&base, 8, BatchBudget { bytes }).per_pass;
    assert_eq!(per_pass(0), 1);
    assert_eq!(per_pass(u64::MAX / 4), 8);
    // The tiny UNet's first blocks are a tenth as wide as SD 1.5's.
    let some = BatchBudget::mib(200);
    let guided = per_pass(some.bytes);
    assert!((2..8).contains(&guided), "{guided}");
    // Unguided images need half the rows.
    let unguided = model
        .batch_plan(
            &GenerateParams {
                guidance_scale: 1.0,
                ..base.clone()
            },
            8,
            some,
        )
        .per_pass;
    assert!(unguided > guided, "{unguided} vs {guided}");
}
