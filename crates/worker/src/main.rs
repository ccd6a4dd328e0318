//! `sd-worker-cpu`: serve Stable Diffusion jobs over HTTP, or generate one image.
//!
//! The GPU binaries (`src/bin/`) include this file as a module, so all three
//! share one `main`; each knows its backend from its binary name.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sd_worker::cli::{bench, generate};
use sd_worker::config::Backend;
use sd_worker::engine::fake::FakeEngine;
use sd_worker::engine::stable_diffusion::SdEngine;
use sd_worker::engine::EngineLoader;
use sd_worker::{shutdown_signal, ServeArgs, Worker, WorkerConfig};

/// Command line of the worker binary. Without a subcommand it serves.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Stable Diffusion worker",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate one image from a prompt and write it as a PNG.
    Generate(generate::GenerateArgs),
    /// Time full-size architectures with random weights (UNet, VAE, text encoders, images).
    Bench(bench::BenchArgs),
}

/// Parses the command line and runs the command (serving by default); a failure
/// prints one line and exits with status 1.
pub fn main() {
    if let Err(err) = run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    if backend() == Backend::Cpu && !matches!(cli.command, Some(Command::Bench(_))) {
        // Large activations are reused from the heap instead of being mapped and
        // zeroed afresh for every layer (the bench decides per figure).
        sd_core::layers::tune_allocator();
    }
    match cli.command {
        Some(Command::Generate(args)) => generate::run(args, backend()),
        Some(Command::Bench(args)) => bench::run(args, backend()),
        None => serve(cli.serve),
    }
}

/// The backend this binary was built for, from its name.
fn backend() -> Backend {
    match env!("CARGO_BIN_NAME") {
        "sd-worker-cuda" => Backend::Cuda,
        "sd-worker-metal" => Backend::Metal,
        _ => Backend::Cpu,
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = WorkerConfig::from_args(&args, backend())?;
    let loader = engine_loader(&args, &config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sd-http")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async move {
        let worker = Worker::bind(config.clone())
            .await
            .with_context(|| format!("binding {}:{}", config.host, config.port))?;
        worker
            .run(loader, shutdown_signal())
            .await
            .context("serving")
    });
    // The engine thread is not the runtime's: a job still computing when the
    // shutdown deadline passed ends with the process.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

/// The fake engine when `--fake-engine` is given (a test aid), else the pipeline.
fn engine_loader(args: &ServeArgs, config: &WorkerConfig) -> EngineLoader {
    match &args.fake_engine {
        Some(fake) => {
            tracing::warn!(
                "serving the FAKE engine (a test aid): images are gradients, not generations"
            );
            FakeEngine::loader(fake.clone())
        }
        None => SdEngine::loader(config),
    }
}
