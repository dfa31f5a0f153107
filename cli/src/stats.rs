//! `ringq stats`: depth, bytes and damage of a queue file, read from a copy of its bytes (as
//! `ringq inspect` does), so it works while another process holds the file open.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringq::inspect::open_copy;
use ringq::Stats;
use serde_json::{json, Value};

use crate::common::{fail, interrupt_flag, require_queue_file, CliError};

/// Counters only the process holding the queue open keeps: a copy of the file cannot know them.
const LIVE_ONLY: &str = "puts, gets, commits, commit latency, grows, shrinks";

/// Options of `ringq stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// The queue file.
    file: PathBuf,
    /// Print JSON instead of text (with --watch: one JSON object per line).
    #[arg(long)]
    json: bool,
    /// Refresh every second until Ctrl-C (a live view on a terminal).
    #[arg(long)]
    watch: bool,
    /// With --watch: stop after N refreshes (for tests and scripts).
    #[arg(long, value_name = "N", hide = true)]
    count: Option<u64>,
    /// With --watch: milliseconds between refreshes.
    #[arg(long, value_name = "MS", default_value_t = 1000, hide = true)]
    interval: u64,
}

/// The file's figures, from a private copy of its bytes.
fn read_stats(path: &Path) -> Result<(u64, Stats), CliError> {
    require_queue_file(path)?;
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    let len = bytes.len() as u64;
    let ring = open_copy(bytes).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    Ok((len, ring.stats()))
}

fn stats_json(path: &Path, file_len: u64, s: &Stats) -> Value {
    json!({
        "file": path.display().to_string(),
        "file_bytes": file_len,
        "items": s.items,
        "bytes_used": s.bytes_used,
        "capacity": s.capacity,
        "oldest_age_s": s.oldest_age.map(|d| d.as_secs_f64()),
        "damaged": s.damaged,
        "dropped_full": s.dropped_full,
        "dead_lettered": s.dead_lettered,
    })
}

fn write_text(out: &mut impl Write, path: &Path, file_len: u64, s: &Stats) -> io::Result<()> {
    let pct = if s.capacity > 0 {
        100.0 * s.bytes_used as f64 / s.capacity as f64
    } else {
        0.0
    };
    writeln!(out, "file           {} ({file_len} bytes)", path.display())?;
    writeln!(out, "items          {}", s.items)?;
    writeln!(
        out,
        "bytes used     {} of {} ({pct:.1}%)",
        s.bytes_used, s.capacity
    )?;
    match s.oldest_age {
        Some(d) => writeln!(out, "oldest item    {:.1}s old", d.as_secs_f64())?,
        None => writeln!(out, "oldest item    age unknown (records carry no time)")?,
    }
    writeln!(out, "damaged        {} records skipped", s.damaged)?;
    writeln!(out, "dropped full   {}", s.dropped_full)?;
    writeln!(out, "dead-lettered  {}", s.dead_lettered)?;
    writeln!(
        out,
        "not shown      {LIVE_ONLY}: only the process holding the queue knows them \
         (Queue::stats, `ringq relay --metrics`)"
    )
}

/// Runs `ringq stats`.
pub fn run(args: &StatsArgs) -> Result<ExitCode, CliError> {
    if !args.watch {
        let (len, s) = read_stats(&args.file)?;
        let mut out = io::stdout().lock();
        if args.json {
            writeln!(out, "{:#}", stats_json(&args.file, len, &s))?;
        } else {
            write_text(&mut out, &args.file, len, &s)?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let stop = interrupt_flag()?;
    let tty = io::stdout().is_terminal();
    let every = Duration::from_millis(args.interval.max(10));
    let mut shown = 0u64;
    loop {
        let started = Instant::now();
        let (len, s) = read_stats(&args.file)?;
        let mut out = io::stdout().lock();
        if args.json {
            writeln!(out, "{}", stats_json(&args.file, len, &s))?;
        } else {
            if tty {
                write!(out, "\x1b[H\x1b[2J")?; // clear and redraw in place
            } else if shown > 0 {
                writeln!(out)?;
            }
            write_text(&mut out, &args.file, len, &s)?;
        }
        out.flush()?;
        drop(out);
        shown += 1;
        if args.count.is_some_and(|n| shown >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        // Sleep in short steps so Ctrl-C stops the view at once.
        while started.elapsed() < every {
            if stop.load(Ordering::SeqCst) {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(20).min(every));
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}
