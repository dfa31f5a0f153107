//! `ringq pop` and `ringq peek`: items out to stdout.
//!
//! `pop` removes an item only after it was written to stdout and flushed, so a closed pipe,
//! a write error or Ctrl-C leaves every unprinted item in the queue (an item can at worst be
//! printed and still be queued: at-least-once). `--follow` opens the file, drains it, closes
//! it and sleeps, so producers get the lock between polls.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringq::{RingFile, RingOptions};

use crate::common::{
    fail, interrupt_flag, open_waiting, require_queue_file, seconds, CliError, Progress,
};
use crate::{PeekArgs, PopArgs};

/// Bytes of output gathered before one write and flush (the items then popped together).
const BATCH_BYTES: usize = 64 * 1024;

/// Runs `ringq pop`.
pub fn run_pop(args: &PopArgs) -> Result<ExitCode, CliError> {
    require_queue_file(&args.file)?;
    let stop = interrupt_flag()?;
    let sep = if args.null { 0 } else { b'\n' };
    let mut out = io::stdout().lock();
    let mut progress = Progress::new();
    let mut popped = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    let result = if args.follow {
        follow(args, &stop, sep, &mut out, &mut popped, &mut progress)
    } else {
        let options = RingOptions::default().create(false);
        let mut ring = open_waiting(&args.file, &options, seconds(args.wait))?;
        let drained = drain(&mut ring, limit, sep, &mut out, &mut popped, &stop);
        finish(ring, popped > 0, drained)
    };
    progress.finish();
    result.map(|()| ExitCode::SUCCESS)
}

/// Closes the ring (a durable commit) when anything was removed, and reports the first error.
fn finish(ring: RingFile, changed: bool, drained: Result<(), CliError>) -> Result<(), CliError> {
    let closed = if changed {
        ring.close().map(drop).map_err(CliError::from)
    } else {
        drop(ring);
        Ok(())
    };
    drained.and(closed)
}

fn follow(
    args: &PopArgs,
    stop: &AtomicBool,
    sep: u8,
    out: &mut impl Write,
    popped: &mut u64,
    progress: &mut Progress,
) -> Result<(), CliError> {
    let limit = args.count.unwrap_or(u64::MAX);
    let interval = Duration::from_millis(args.interval.max(1));
    let options = RingOptions::default().create(false);
    while !stop.load(Ordering::SeqCst) && *popped < limit {
        match RingFile::open(&args.file, &options) {
            Ok(mut ring) => {
                let before = *popped;
                let drained = drain(&mut ring, limit, sep, out, popped, stop);
                finish(ring, *popped > before, drained)?;
            }
            // A producer holds the file: try again at the next poll.
            Err(ringq::Error::Locked { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        progress.update(|| format!("ringq: {popped} popped, waiting for more (Ctrl-C stops)"));
        let until = Instant::now() + interval;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) && *popped < limit {
            std::thread::sleep(Duration::from_millis(10).min(interval));
        }
    }
    Ok(())
}

/// Writes items to `out` in batches and removes each batch once it is flushed.
fn drain(
    ring: &mut RingFile,
    limit: u64,
    sep: u8,
    out: &mut impl Write,
    popped: &mut u64,
    stop: &AtomicBool,
) -> Result<(), CliError> {
    let mut buf = Vec::with_capacity(BATCH_BYTES);
    let mut seqs = Vec::new();
    while *popped < limit && !stop.load(Ordering::SeqCst) {
        buf.clear();
        seqs.clear();
        for record in ring.records() {
            if *popped + seqs.len() as u64 >= limit
                || (buf.len() >= BATCH_BYTES && !seqs.is_empty())
            {
                break;
            }
            buf.extend_from_slice(record.payload);
            buf.push(sep);
            seqs.push(record.seq);
        }
        if seqs.is_empty() {
            return Ok(());
        }
        out.write_all(&buf)?;
        out.flush()?;
        for &want in &seqs {
            match ring.pop_with(|seq, _| seq)? {
                Some(seq) if seq == want => *popped += 1,
                got => {
                    return Err(fail(format!(
                        "internal error: printed item {want} but the queue removed {got:?}"
                    )))
                }
            }
        }
    }
    Ok(())
}

/// Runs `ringq peek`: reads a private copy of the file, so it needs no lock and changes
/// nothing.
pub fn run_peek(args: &PeekArgs) -> Result<ExitCode, CliError> {
    let ring = read_copy(&args.file)?;
    let sep = if args.null { 0 } else { b'\n' };
    let limit = usize::try_from(args.count.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
    let mut out = io::BufWriter::new(io::stdout().lock());
    for record in ring.records().take(limit) {
        out.write_all(record.payload)?;
        out.write_all(&[sep])?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The ring of a private copy of the file at `path` (recovery runs on the copy).
pub fn read_copy(path: &Path) -> Result<RingFile<ringq::MemStorage>, CliError> {
    require_queue_file(path)?;
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    ringq::inspect::open_copy(bytes).map_err(CliError::from)
}
