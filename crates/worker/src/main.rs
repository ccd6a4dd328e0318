//! `sd-worker-cpu`: serve Stable Diffusion jobs over HTTP, or generate one image.

mod bench;
mod generate;

use clap::{Parser, Subcommand};

/// Command line of the worker binary.
#[derive(Debug, Parser)]
#[command(version, about = "Stable Diffusion worker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate one image from a prompt and write it as a PNG.
    Generate(generate::GenerateArgs),
    /// Time full-size architectures with random weights (UNet, VAE, text encoders, images).
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Generate(args)) => generate::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        None => anyhow::bail!("serving is not built yet; use `generate`"),
    }
}
