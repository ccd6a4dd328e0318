//! Image-to-image and inpainting requests the pipeline must reject, each
//! naming the parameter at fault, and the step counts it reports.

mod common;

use std::ops::ControlFlow;

use candle_core::Device;
use common::fixtures;
use sd_core::image::{ColorMode, DecodedImage};
use sd_core::pipeline::{DebugOptions, GenerateParams, ImageInput, StableDiffusion, VaeDecoder};
use sd_core::prompt::PromptSyntax;
use sd_core::schedulers::SchedulerKind;
use sd_core::{Error, Interrupt, Param};

fn grey(width: usize, height: usize, value: u8) -> DecodedImage {
    DecodedImage::from_raw(width, height, ColorMode::Luma, vec![value; width * height]).unwrap()
}

fn params(image: Option<ImageInput>) -> GenerateParams {
    GenerateParams {
        prompt: "a lighthouse".into(),
        negative_prompt: None,
        prompt_syntax: PromptSyntax::Plain,
        clip_skip: 0,
        steps: 4,
        guidance_scale: 1.0,
        width: 64,
        height: 48,
        seed: 1,
        scheduler: None,
        image,
        decoder: VaeDecoder::Full,
    }
}

fn input(mask: Option<DecodedImage>, strength: f64) -> Option<ImageInput> {
    Some(ImageInput {
        image: grey(70, 53, 90),
        mask,
        strength,
    })
}

fn rejected_param(model: &mut StableDiffusion, params: &GenerateParams) -> Param {
    assert_eq!(
        params.check(&model.profile()).map_err(|e| e.param).err(),
        Some(rejected_by_generate(model, params)),
        "check and generate reject the same parameter"
    );
    rejected_by_generate(model, params)
}

fn rejected_by_generate(model: &mut StableDiffusion, params: &GenerateParams) -> Param {
    match model.generate(params, Interrupt::NEVER, &mut |_| ControlFlow::Continue(())) {
        Err(Error::Param(e)) => e.param,
        Err(other) => panic!("expected an invalid request, got {other}"),
        Ok(_) => panic!("expected an invalid request, got an image"),
    }
}

#[test]
fn bad_image_requests_name_their_field() {
    let device = Device::Cpu;
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &device).unwrap();
    for strength in [-0.1, 1.5, f64::NAN] {
        assert_eq!(
            rejected_param(&mut model, &params(input(None, strength))),
            Param::Strength
        );
    }
    // 4 steps at 0.2 run floor(0.8) = 0 steps.
    assert_eq!(
        rejected_param(&mut model, &params(input(None, 0.2))),
        Param::Strength
    );
    let wrong_mask = input(Some(grey(64, 48, 255)), 1.0);
    assert_eq!(rejected_param(&mut model, &params(wrong_mask)), Param::Mask);

    let mut inpainting =
        StableDiffusion::load(&fixtures().join("tiny-sd15-inpaint"), &device).unwrap();
    assert!(inpainting.is_inpainting());
    assert_eq!(rejected_param(&mut inpainting, &params(None)), Param::Mask);
    assert_eq!(
        rejected_param(&mut inpainting, &params(input(None, 0.5))),
        Param::Mask
    );

    let tiny = ImageInput {
        image: grey(7, 40, 0),
        mask: None,
        strength: 0.5,
    };
    assert_eq!(tiny.default_size(8).map_err(|e| e.param), Err(Param::Image));
}

#[test]
fn progress_counts_the_steps_that_run() {
    let device = Device::Cpu;
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &device).unwrap();
    let mut request = params(input(Some(grey(70, 53, 255)), 0.5));
    request.scheduler = Some(SchedulerKind::Ddim);
    let mut seen = Vec::new();
    let debug = DebugOptions {
        init_latents: None,
        trace: true,
    };
    let image = model
        .generate_with(&request, &debug, Interrupt::NEVER, &mut |p| {
            seen.push((p.step, p.total));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen, [(1, 2), (2, 2)]);
    assert_eq!((image.width, image.height), (64, 48));
    assert_eq!(image.steps_run, 2);
    assert_eq!(image.trace.unwrap().timesteps.len(), 2);
}
