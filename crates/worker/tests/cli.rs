//! The `generate` and `bench` commands: their arguments, a tiny-model run of
//! each, and the defaults a model folder gives the command line and the worker
//! alike.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use candle_core::Device;
use clap::Parser;
use common::{get, stream, submit, WorkerProcess};
use sd_contract::JobEvent;
use sd_worker::cli::bench::{self, BenchArgs, BenchComponent, Figure};
use sd_worker::cli::generate::{self, GenerateArgs};
use sd_worker::config::{Backend, Dtype};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A command line of its own for a subcommand's arguments.
#[derive(Debug, Parser)]
struct Cli<T: clap::Args> {
    #[command(flatten)]
    args: T,
}

fn parse<T: clap::Args>(line: &[&str]) -> Result<T, clap::Error> {
    Cli::<T>::try_parse_from(std::iter::once("sd-worker-cpu").chain(line.iter().copied()))
        .map(|cli| cli.args)
}

/// Parses a command line of whitespace-separated words.
fn parse_line<T: clap::Args>(line: &str) -> Result<T, clap::Error> {
    parse(&line.split_whitespace().collect::<Vec<_>>())
}

/// A PNG's size and its AUTOMATIC1111 `parameters` text.
fn png_parameters(bytes: &[u8]) -> ((u32, u32), String) {
    let reader = png::Decoder::new(bytes).read_info().unwrap();
    let info = reader.info();
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|chunk| chunk.keyword == "parameters")
        .expect("a parameters chunk")
        .text
        .clone();
    ((info.width, info.height), text)
}

/// A PNG's 8-bit RGB pixels.
fn png_pixels(bytes: &[u8]) -> Vec<u8> {
    let mut reader = png::Decoder::new(bytes).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(frame.buffer_size());
    pixels
}

/// The `Key: value` settings of a `parameters` text.
fn setting<'a>(parameters: &'a str, key: &str) -> &'a str {
    let settings = parameters.lines().last().unwrap();
    settings
        .split(", ")
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {key} in {settings:?}"))
}

/// Runs `generate` with `line` (plus `--output`) and returns the PNG's size and parameters.
fn generate_png(line: &[&str], output: &Path) -> ((u32, u32), String) {
    let mut line = line.to_vec();
    line.extend(["--output", output.to_str().unwrap()]);
    generate::run(parse(&line).unwrap(), Backend::Cpu).unwrap();
    png_parameters(&std::fs::read(output).unwrap())
}

#[test]
fn generate_arguments_parse_with_their_defaults() {
    let args: GenerateArgs = parse_line("--model m --prompt p --output o.png").unwrap();
    assert_eq!(args.model.as_deref(), Some("m"));
    assert_eq!(
        (args.steps, args.width, args.seed, args.scheduler),
        (None, None, None, None)
    );
    assert_eq!(
        (args.precision.dtype, args.device, args.fp16_weights),
        (None, 0, false)
    );
    let cpu = args.precision.resolve(Backend::Cpu).unwrap();
    assert_eq!((cpu.weights, cpu.compute), (Dtype::F32, Dtype::F32));
    let cuda = args.precision.resolve(Backend::Cuda).unwrap();
    assert_eq!((cuda.weights, cuda.compute), (Dtype::F16, Dtype::F16));
    let args: GenerateArgs = parse_line(
        "--sd-version sd-turbo --prompt p --output o.png --steps 3 --scheduler \
         euler_a --width 96 --dtype bf16",
    )
    .unwrap();
    assert_eq!(args.sd_version.unwrap().name, "sd-turbo");
    assert_eq!((args.steps, args.width), (Some(3), Some(96)));
    assert_eq!(args.scheduler.map(|s| s.as_str()), Some("euler_a"));
    // On the CPU bf16 weights compute in f32 (the bf16 kernel aside); on a GPU in bf16.
    let cpu = args.precision.resolve(Backend::Cpu).unwrap();
    assert_eq!((cpu.weights, cpu.compute), (Dtype::Bf16, Dtype::F32));
    let cuda = args.precision.resolve(Backend::Cuda).unwrap();
    assert_eq!((cuda.weights, cuda.compute), (Dtype::Bf16, Dtype::Bf16));
}

#[test]
fn compute_dtype_sets_the_weights_or_must_match_them() {
    let base = "--model m --prompt p --output o.png";
    let resolve = |extra: &str, backend| {
        let args: GenerateArgs = parse_line(&format!("{base} {extra}")).unwrap();
        args.precision.resolve(backend)
    };
    let half = resolve("--compute-dtype f16", Backend::Cpu).unwrap();
    assert_eq!((half.weights, half.compute), (Dtype::F16, Dtype::F16));
    let wide = resolve("--compute-dtype f32", Backend::Cuda).unwrap();
    assert_eq!((wide.weights, wide.compute), (Dtype::F16, Dtype::F32));
    let error = resolve("--compute-dtype bf16 --dtype f16", Backend::Cuda).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("--compute-dtype bf16") && message.contains("--dtype bf16"));
    let error = resolve("--compute-dtype f16 --dtype f32", Backend::Cpu).unwrap_err();
    assert!(error.to_string().contains("not f32"), "{error}");
}

/// `--compute-dtype` runs the whole pipeline in half precision on the CPU
/// (SDXL with its `force_upcast` VAE in f32 under f16).
#[test]
fn generate_computes_in_half_precision() {
    let dir = scratch("generate-half");
    for (model, dtype) in [("tiny-sdxl", "f16"), ("tiny-sd15", "bf16")] {
        let model = fixtures().join(model);
        let line = [
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a red boat",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--compute-dtype",
            dtype,
        ];
        let (size, parameters) = generate_png(&line, &dir.join(format!("{dtype}.png")));
        assert_eq!(size, (64, 64), "{dtype}");
        assert_eq!(setting(&parameters, "Steps"), "2");
    }
}

#[test]
fn generate_rejects_incomplete_and_unknown_arguments() {
    let base = ["--model", "m", "--prompt", "p", "--output", "o.png"];
    let with = |extra: &[&'static str]| [&base[..], extra].concat();
    let rejected: [(Vec<&str>, &str); 6] = [
        (vec!["--prompt", "p", "--output", "o.png"], "--model"),
        (vec!["--model", "m", "--output", "o.png"], "--prompt"),
        (with(&["--sd-version", "v9"]), "unknown preset `v9`"),
        (with(&["--scheduler", "heun"]), "heun"),
        (with(&["--mask-image", "m.png"]), "--init-image"),
        (with(&["--steps", "many"]), "--steps"),
    ];
    for (line, needle) in rejected {
        let error = parse::<GenerateArgs>(&line).unwrap_err().to_string();
        assert!(error.contains(needle), "{line:?}: {error}");
    }
}

#[test]
fn generate_writes_a_png_with_its_parameters() {
    let dir = scratch("generate");
    let model = fixtures().join("tiny-sd15");
    let line = [
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a red boat",
        "--steps",
        "2",
        "--seed",
        "42",
    ];
    let (size, parameters) = generate_png(&line, &dir.join("boat.png"));
    assert_eq!(size, (64, 64), "the folder's native size");
    assert!(parameters.starts_with("a red boat\n"), "{parameters}");
    assert_eq!(setting(&parameters, "Steps"), "2");
    assert_eq!(setting(&parameters, "Sampler"), "PLMS", "the folder's PNDM");
    assert_eq!(setting(&parameters, "Seed"), "42");
    assert_eq!(setting(&parameters, "Size"), "64x64");
    assert_eq!(setting(&parameters, "CFG scale"), "7.5", "SD 1.5's preset");
    assert_eq!(
        setting(&parameters, "Model"),
        "tiny-sd15",
        "the folder's name"
    );
    let hash = setting(&parameters, "Model hash");
    assert!(
        hash.len() == 10 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{parameters}"
    );
    assert!(
        !parameters.contains(model.to_str().unwrap()),
        "{parameters}"
    );
    assert!(!parameters.contains("Clip skip"), "{parameters}");
    let mut skipped = line.to_vec();
    skipped.extend(["--clip-skip", "1"]);
    let (_, parameters) = generate_png(&skipped, &dir.join("skipped.png"));
    assert_eq!(setting(&parameters, "Clip skip"), "2", "A1111's count");
    assert_ne!(
        png_pixels(&std::fs::read(dir.join("skipped.png")).unwrap()),
        png_pixels(&std::fs::read(dir.join("boat.png")).unwrap()),
    );
}

#[test]
fn generate_names_the_flag_of_a_bad_value() {
    let dir = scratch("bad-width");
    let model = fixtures().join("tiny-sd15");
    let output = dir.join("never.png");
    let line = [
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "p",
        "--width",
        "60",
        "--output",
        output.to_str().unwrap(),
    ];
    let error = generate::run(parse(&line).unwrap(), Backend::Cpu)
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("--width: "), "{error}");
    assert!(error.contains("60"), "{error}");
    assert!(!output.exists());
    let mut skip = line.to_vec();
    skip.retain(|arg| *arg != "--width" && *arg != "60");
    skip.extend(["--clip-skip", "3"]);
    let error = generate::run(parse(&skip).unwrap(), Backend::Cpu)
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("--clip-skip: "), "{error}");
    assert!(!output.exists());
}

/// fixtures/tiny-sdxl, copied, with Euler Ancestral as its own scheduler: only
/// `_class_name` changes. The Euler keys Euler Ancestral does not take
/// (`interpolation_type`, `use_karras_sigmas`, `sigma_min`, `timestep_type`,
/// `final_sigmas_type`, ...) stay at their defaults, as in a folder switched
/// by hand; diffusers ignores them, and so does sd-core.
fn euler_a_sdxl_folder() -> PathBuf {
    let dir = scratch("euler-a-sdxl");
    copy_dir(&fixtures().join("tiny-sdxl"), &dir);
    let path = dir.join("scheduler/scheduler_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["_class_name"] = "EulerAncestralDiscreteScheduler".into();
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The defaults-precedence bug: `generate` on an SDXL folder whose scheduler is
/// Euler Ancestral ran plain Euler while the worker ran Euler a. Both now take
/// the folder's scheduler and native size, and SDXL's steps and guidance.
#[test]
fn generate_and_the_worker_take_the_same_defaults_from_a_folder() {
    let folder = euler_a_sdxl_folder();
    let model = folder.to_str().unwrap();
    let prompt = "a lighthouse at dusk";
    let cli_png = folder.join("cli.png");
    let (size, cli) = generate_png(
        &["--model", model, "--prompt", prompt, "--seed", "3"],
        &cli_png,
    );
    assert_eq!(setting(&cli, "Sampler"), "Euler a", "{cli}");
    assert_eq!(size, (128, 128), "the folder's native size");
    assert_eq!(
        (setting(&cli, "Steps"), setting(&cli, "CFG scale")),
        ("30", "5")
    );

    let worker = WorkerProcess::spawn(&["--model", model], &[]);
    worker.wait_ready();
    let defaults = get(&worker.url, "/v1/info").value()["defaults"].clone();
    let expected = serde_json::json!({
        "width": 128, "height": 128, "steps": 30, "guidance_scale": 5.0, "scheduler": "euler_a",
        "prompt_syntax": "a1111",
    });
    assert_eq!(defaults, expected);
    let body = serde_json::json!({"operation": "image_generation", "prompt": prompt, "seed": 3});
    let created = submit(&worker.url, &body.to_string());
    let events = stream(&worker.url, &created.sse_url, &[]).events();
    let Some(JobEvent::Complete(result)) = events.last() else {
        panic!("no image: {events:?}")
    };
    let job_png = base64::engine::general_purpose::STANDARD
        .decode(&result.image)
        .unwrap();
    let (job_size, job) = png_parameters(&job_png);
    assert_eq!(setting(&job, "Sampler"), "Euler a", "{job}");
    assert_eq!((job_size, job.as_str()), (size, cli.as_str()));
    let cli_pixels = png_pixels(&std::fs::read(&cli_png).unwrap());
    assert!(
        png_pixels(&job_png) == cli_pixels,
        "the same settings give the same image"
    );
}

#[test]
fn bench_times_the_production_image_on_a_tiny_model() {
    let weights = fixtures().join("tiny-sd15");
    let args: BenchArgs = parse_line(&format!(
        "--weights {} --components image,unet --sizes 64 --batches 2 --reps 2 \
         --warmup 0 --steps 2 --seed 5",
        weights.display()
    ))
    .unwrap();
    let figures = bench::run_in_process(&args, &Device::Cpu).unwrap();
    assert_eq!(figures.len(), 2);
    let image = &figures[0];
    assert_eq!(image.component, BenchComponent::Image);
    assert!(image.finite);
    assert_eq!(
        (image.size, image.batch, image.steps, image.reps),
        (64, 2, Some(2), 2)
    );
    let stages = image.stages.expect("stage timings");
    assert!(
        stages.iter().all(|s| s.is_finite() && *s > 0.0),
        "{stages:?}"
    );
    assert!(stages.iter().sum::<f64>() <= image.max_s);
    assert!(image.load_s > 0.0 && image.run_peak_mib > 0.0);
    assert_eq!(
        (figures[1].component, figures[1].batch),
        (BenchComponent::Unet, 2)
    );
    assert!(figures[1].finite);
}

#[test]
fn bench_measures_each_figure_in_a_child_process() {
    let weights = fixtures().join("tiny-sd15");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sd-worker-cpu"))
        .args([
            "bench",
            "--weights",
            weights.to_str().unwrap(),
            "--components",
        ])
        .args([
            "vae-decode,image",
            "--sizes",
            "64",
            "--reps",
            "1",
            "--warmup",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let figures: Vec<Figure> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let components: Vec<_> = figures.iter().map(|f| f.component).collect();
    assert_eq!(
        components,
        [BenchComponent::VaeDecode, BenchComponent::Image]
    );
    assert!(figures.iter().all(|f| f.finite && f.load_peak_mib > 0.0));
    assert_eq!(figures[1].steps, Some(4), "four steps by default");
}

/// A single-file checkpoint runs through `generate` and the worker: the same
/// image as its folder, A1111's name and hash in the PNG, and `--vae` shown
/// in `/v1/info`.
#[test]
fn a_single_file_checkpoint_serves_and_generates() {
    use sha2::{Digest, Sha256};
    let dir = scratch("single-file");
    let folder = fixtures().join("tiny-sd15");
    let file = fixtures().join("single-file/tiny-sd15.safetensors");
    let vae = fixtures().join("single-file/tiny-sd15-vae.safetensors");
    let (file, folder, vae) = (
        file.to_str().unwrap(),
        folder.to_str().unwrap(),
        vae.to_str().unwrap(),
    );
    let line = ["--prompt", "a red boat", "--steps", "2", "--seed", "42"];
    let from_file = [&["--model", file, "--config", folder][..], &line[..]].concat();
    let (_, parameters) = generate_png(&from_file, &dir.join("file.png"));
    let from_folder = [&["--model", folder][..], &line[..]].concat();
    generate_png(&from_folder, &dir.join("folder.png"));
    let pixels = |name: &str| png_pixels(&std::fs::read(dir.join(name)).unwrap());
    assert!(
        pixels("file.png") == pixels("folder.png"),
        "the file's image is the folder's"
    );
    assert_eq!(
        setting(&parameters, "Model"),
        "tiny-sd15",
        "the file's stem"
    );
    let digest = Sha256::digest(std::fs::read(file).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        setting(&parameters, "Model hash"),
        &hex[..10],
        "A1111's sha256 short hash"
    );

    let output = ["--output", "unused.png"];
    let bad = [
        &["--model", folder, "--config", folder][..],
        &line[..],
        &output[..],
    ]
    .concat();
    let err = generate::run(parse(&bad).unwrap(), Backend::Cpu).unwrap_err();
    assert!(
        format!("{err:#}").contains("--config applies to single-file checkpoints"),
        "{err:#}"
    );
    let ckpt = dir.join("model.ckpt");
    std::fs::write(&ckpt, b"PK\x03\x04").unwrap();
    let pickle = [
        &["--model", ckpt.to_str().unwrap()][..],
        &line[..],
        &output[..],
    ]
    .concat();
    let err = generate::run(parse(&pickle).unwrap(), Backend::Cpu).unwrap_err();
    assert!(format!("{err:#}").contains("pickle"), "{err:#}");

    let worker = WorkerProcess::spawn(&["--model", file, "--config", folder, "--vae", vae], &[]);
    worker.wait_ready();
    let info = get(&worker.url, "/v1/info").value().clone();
    assert_eq!(info["vae"], vae);
    assert_eq!(info["family"], "sd1");
    let body = serde_json::json!({"operation": "image_generation", "prompt": "a red boat", "steps": 2, "seed": 42});
    let created = submit(&worker.url, &body.to_string());
    let events = stream(&worker.url, &created.sse_url, &[]).events();
    let Some(JobEvent::Complete(result)) = events.last() else {
        panic!("no image: {events:?}")
    };
    let job_png = base64::engine::general_purpose::STANDARD
        .decode(&result.image)
        .unwrap();
    assert!(
        png_pixels(&job_png) != pixels("file.png"),
        "--vae changed the decoder"
    );
}
