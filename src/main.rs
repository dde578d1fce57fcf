//! `kasane`: the command-line entry point. See README.md and ARCHITECTURE.md.

use clap::{Parser, Subcommand};
use kasane::cli;

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
    /// The main job: a local cluster under load. Runs genesis, up, load, status and down on
    /// defaults and reports what happened.
    Demo(cli::demo::DemoArgs),
    /// Prints a new ed25519 key pair as JSON.
    Keys,
    /// Writes a cluster directory: genesis block, manifest and one config per node.
    Genesis(cli::genesis::GenesisArgs),
    /// Runs one node in the foreground until SIGINT or SIGTERM.
    Node(cli::cluster::NodeArgs),
    /// Starts every node of a cluster directory in the background and waits until all are healthy.
    Up(cli::cluster::UpArgs),
    /// Stops the nodes `up` started.
    Down(cli::cluster::DownArgs),
    /// Talks to one node's API: submit, status, tx, block, proof, query.
    Client(cli::client::ClientArgs),
    /// Sends signed transfers at an open-loop rate and checks each accepted one committed once.
    Load(cli::load::LoadArgs),
    /// Measures a fresh local cluster's throughput and latency under an offered load.
    Bench(cli::bench::BenchArgs),
    /// Runs seeds of the deterministic simulator and checks every invariant.
    Sim(cli::sim::SimArgs),
    /// Fault injection on a real local cluster: load, a timeline of perturbations, checks.
    Testnet(cli::testnet::TestnetArgs),
    /// The plasma Layer 2: settlement agent, wallet, benchmark (docs/PLASMA.md).
    #[command(subcommand)]
    Plasma(cli::plasma::PlasmaCommand),
    /// Block store tools: demo, generate, inspect, verify.
    #[command(subcommand)]
    Kura(cli::kura::KuraCommand),
}

fn main() -> std::process::ExitCode {
    kasane_node::allocator::limit_arenas();
    let args = Args::parse();
    // A node logs what it does at info level; the tools only warn unless asked.
    let default_filter = match args.command {
        Command::Node(_) => "info,quinn=warn,rustls=warn",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KASANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let result = match args.command {
        Command::Demo(args) => cli::demo::run(args),
        Command::Keys => cli::genesis::run_keys(),
        Command::Genesis(args) => cli::genesis::run_genesis(args),
        Command::Node(args) => cli::cluster::run_node(args),
        Command::Up(args) => cli::cluster::run_up(args),
        Command::Down(args) => cli::cluster::run_down(args),
        Command::Client(args) => cli::client::run_client(args),
        Command::Load(args) => cli::load::run_load(args),
        Command::Bench(args) => cli::bench::run_bench(args),
        Command::Kura(command) => cli::kura::run(command),
        Command::Plasma(command) => cli::plasma::run(command),
        Command::Sim(args) => cli::sim::run_sim(args),
        Command::Testnet(args) => cli::testnet::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
