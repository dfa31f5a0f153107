//! `ringq`, the command line over a queue file: feed it, drain it, look inside, check and
//! repair it after a crash.
//!
//! The binary is thin over the library: argument parsing and exit codes live here, each
//! command in its own module. Exit codes: 0 success, 1 error, 2 `verify` found damage.
//! A closed stdout (`ringq pop q | head -1`) is success, and the item that could not be
//! written stays in the queue.

mod bench;
mod common;
mod pop;
mod push;
#[cfg(any(feature = "nats", feature = "kafka"))]
mod relay_cmd;
mod repair;
mod report;
mod stats;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::common::CliError;

const EXIT_CODES: &str = "\
Exit codes: 0 success, 1 error (a locked, missing or damaged file, bad arguments), \
2 `verify` found damage.

Items are raw bytes. Files created by `ringq push` carry the raw-bytes encoding tag.";

/// A persistent FIFO queue in one memory-mapped ring file.
#[derive(Parser, Debug)]
#[command(name = "ringq", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enqueue each line of stdin (or each NUL-separated item, or each argument after `--`).
    ///
    /// Creates FILE when it does not exist (raw-bytes encoding). Every push is made durable
    /// (fsync) before the count is printed. While stdin is idle the file's lock is released,
    /// so `tail -f log | ringq push q` and `ringq pop --follow q` can run side by side.
    #[command(after_help = EXIT_CODES)]
    Push(PushArgs),
    /// Dequeue items and print them, one per line (or NUL-terminated with -0).
    ///
    /// An item is removed only after it was written to stdout and flushed: a closed pipe or
    /// Ctrl-C never loses one (an item can at worst be printed and still be in the queue).
    /// `--follow` keeps waiting for new items like `tail -f`, taking the file's lock only
    /// while it drains, until Ctrl-C or SIGTERM (then it exits 0).
    #[command(after_help = EXIT_CODES)]
    Pop(PopArgs),
    /// Print items without removing them.
    ///
    /// Reads a copy of the file without taking its lock, so it works while another process
    /// holds the queue open (it shows the file as last written to the page cache).
    #[command(after_help = EXIT_CODES)]
    Peek(PeekArgs),
    /// Show the header slots, counts, sizes, sequence numbers, encoding and what recovery
    /// would do on the next open. Read-only.
    #[command(after_help = EXIT_CODES)]
    Inspect(ReportArgs),
    /// Show the numbers an operator watches: items, bytes used and capacity, damaged records
    /// skipped; `--watch` refreshes every second until Ctrl-C.
    ///
    /// Reads a copy of the file without taking its lock, so it works while another process
    /// holds the queue open. Counters only that process knows (puts, gets, commits, commit
    /// latency) are not shown: see `Queue::stats` and `ringq relay --metrics`.
    #[command(after_help = EXIT_CODES)]
    Stats(stats::StatsArgs),
    /// Check every record; exit 0 when the file is sound, 2 (with a report) when it is not.
    /// Read-only.
    #[command(after_help = EXIT_CODES)]
    Verify(ReportArgs),
    /// Back the file up beside itself (`NAME.UNIXSECONDS.bak`), then rebuild it from every
    /// record that verifies.
    ///
    /// The rebuilt file keeps the items in order and the file's encoding; it gets a new
    /// epoch and sequence numbers that start again at 0. It is written beside the original,
    /// flushed, then renamed over it, while the original's lock is held.
    #[command(after_help = EXIT_CODES)]
    Repair(RepairArgs),
    /// Measure ringq against other queues and print a table.
    Bench(bench::BenchArgs),
    /// Relay the queue into NATS JetStream or Kafka (--to), or fill it from a stream (--from).
    #[cfg(any(feature = "nats", feature = "kafka"))]
    Relay(relay_cmd::RelayArgs),
}

/// Options of `ringq push`.
#[derive(Args, Debug)]
struct PushArgs {
    /// The queue file (created when missing).
    file: PathBuf,
    /// Items on stdin are separated by NUL bytes instead of newlines.
    #[arg(short = '0', long = "null")]
    null: bool,
    /// Print `{"added": N}` on stdout instead of a sentence on stderr.
    #[arg(long)]
    json: bool,
    /// Seconds to keep retrying while another process holds the file's lock.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    wait: f64,
    /// Ring capacity of a new file, in bytes (it grows on demand).
    #[arg(long, value_name = "BYTES")]
    capacity: Option<u64>,
    /// Push even into a file whose items use another encoding (bincode, pickle …); its
    /// typed readers will fail to decode these items.
    #[arg(long)]
    any_encoding: bool,
    /// Items to push instead of reading stdin (after `--`).
    #[arg(last = true, value_name = "ITEM")]
    items: Vec<OsString>,
}

/// Options of `ringq pop`.
#[derive(Args, Debug)]
struct PopArgs {
    /// The queue file (never created).
    file: PathBuf,
    /// Pop at most N items (default: all; with --follow, stop after N).
    #[arg(short = 'n', long = "count", value_name = "N")]
    count: Option<u64>,
    /// Keep waiting for new items until interrupted (Ctrl-C or SIGTERM).
    #[arg(short, long)]
    follow: bool,
    /// Terminate each item with a NUL byte instead of a newline.
    #[arg(short = '0', long = "null")]
    null: bool,
    /// Seconds to keep retrying while another process holds the file's lock (without
    /// --follow; --follow always waits).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    wait: f64,
    /// Milliseconds between polls with --follow.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    interval: u64,
}

/// Options of `ringq peek`.
#[derive(Args, Debug)]
struct PeekArgs {
    /// The queue file.
    file: PathBuf,
    /// Print at most N items (default: all).
    #[arg(short = 'n', long = "count", value_name = "N")]
    count: Option<u64>,
    /// Terminate each item with a NUL byte instead of a newline.
    #[arg(short = '0', long = "null")]
    null: bool,
}

/// Options of `ringq inspect` and `ringq verify`.
#[derive(Args, Debug)]
struct ReportArgs {
    /// The queue file.
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Options of `ringq repair`.
#[derive(Args, Debug)]
struct RepairArgs {
    /// The queue file.
    file: PathBuf,
    /// Rebuild even a file that verifies clean.
    #[arg(long)]
    force: bool,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Library warnings (recovery, relay retries) go to stderr; `RINGQ_LOG=info` (or `debug`)
/// shows more, `RINGQ_LOG=off` nothing.
struct StderrLog(log::LevelFilter);

impl log::Log for StderrLog {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= self.0
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let level = record.level().as_str().to_ascii_lowercase();
            eprintln!("ringq: {level}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

fn init_log() {
    let level = std::env::var("RINGQ_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    let logger: &'static StderrLog = Box::leak(Box::new(StderrLog(level)));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

fn main() -> ExitCode {
    init_log();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(CliError::Message(msg)) => {
            eprintln!("ringq: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Push(a) => push::run(&a),
        Command::Pop(a) => pop::run_pop(&a),
        Command::Peek(a) => pop::run_peek(&a),
        Command::Inspect(a) => report::run_inspect(&a),
        Command::Verify(a) => report::run_verify(&a),
        Command::Stats(a) => stats::run(&a),
        Command::Repair(a) => repair::run(&a),
        Command::Bench(a) => {
            bench::run(&a).map_err(|e| CliError::Message(e.to_string()))?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(any(feature = "nats", feature = "kafka"))]
        Command::Relay(a) => {
            relay_cmd::run(a).map_err(|e| CliError::Message(e.to_string()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
