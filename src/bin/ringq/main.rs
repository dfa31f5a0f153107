//! The `ringq` command line (being written).
mod bench;
fn main() {
    let args = bench::BenchArgs::default();
    if let Err(e) = bench::run(&args) {
        eprintln!("ringq: {e}");
        std::process::exit(1);
    }
}
