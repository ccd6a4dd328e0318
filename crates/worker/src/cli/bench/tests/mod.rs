//! Tests of the benchmark as a whole: its command line, and every figure on
//! tiny models.

mod args;
mod tiny;

use super::args::BenchArgs;

/// `bench`'s arguments as a command of their own, for tests.
#[derive(Debug, clap::Parser)]
struct TestCli {
    #[command(flatten)]
    args: BenchArgs,
}

/// Parses `bench`'s arguments (without the program name), as tests need them.
pub(super) fn parse<S: AsRef<std::ffi::OsStr>>(line: &[S]) -> Result<BenchArgs, clap::Error> {
    use clap::Parser;
    let line = line.iter().map(|s| s.as_ref().to_os_string());
    TestCli::try_parse_from(std::iter::once("bench".into()).chain(line)).map(|c| c.args)
}

/// Parses a command line of whitespace-separated words.
pub(super) fn parse_line(line: &str) -> Result<BenchArgs, clap::Error> {
    parse(&line.split_whitespace().collect::<Vec<_>>())
}
