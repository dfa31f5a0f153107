//! `ringq bench` (being written): interface fixed for main.rs.

/// Options of `ringq bench`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct BenchArgs {}

/// Runs the benchmark and prints its table.
pub fn run(_args: &BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    Ok(())
}
