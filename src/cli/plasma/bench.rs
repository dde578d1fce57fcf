//! `kasane plasma bench` (docs/PLASMA.md section 10).

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct PlasmaBenchArgs {}

pub fn run(_args: PlasmaBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
