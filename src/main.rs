//! `kasane`: the command-line entry point. See README.md and ARCHITECTURE.md.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kasane",
    version,
    about = "A Byzantine-fault-tolerant consensus research node"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Builds a chain of signed transfers into a fresh store, reopens it, and replays it into
    /// the world state fast and strict, reporting what each step did.
    Demo(cli::demo::DemoArgs),
    /// Runs seeds of the deterministic simulator and checks every invariant.
    Sim(cli::sim::SimArgs),
    /// Block store tools: generate, inspect, verify.
    #[command(subcommand)]
    Kura(cli::kura::KuraCommand),
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KASANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let result = match args.command {
        Command::Demo(args) => cli::demo::run(args),
        Command::Kura(command) => cli::kura::run(command),
        Command::Sim(args) => cli::sim::run_sim(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
