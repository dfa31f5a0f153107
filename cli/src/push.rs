//! `ringq push`: items from stdin or the arguments into the queue, durably.
//!
//! Stdin is read on its own thread. The file is opened (and locked) when an item arrives and
//! closed, with a durable commit, when stdin has been idle for a moment, after at most a
//! second of holding it, and at the end: a slow producer does not keep consumers out.

use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use ringq::codec::TAG_RAW;
use ringq::{RingFile, RingOptions, DEFAULT_INITIAL_CAPACITY};

use crate::common::{fail, open_waiting, seconds, CliError};
use crate::PushArgs;

/// How long stdin may be quiet before the file is closed and its lock released.
const IDLE: Duration = Duration::from_millis(50);
/// The longest the file stays locked while items keep arriving.
const MAX_HOLD: Duration = Duration::from_secs(1);

/// Runs `ringq push`.
pub fn run(args: &PushArgs) -> Result<ExitCode, CliError> {
    if args.file.is_dir() {
        return Err(fail(format!(
            "{} is a directory, not a queue file",
            args.file.display()
        )));
    }
    if args.file.metadata().is_ok_and(|m| m.len() > 0) {
        // Never turn a file given by mistake into a queue.
        crate::common::require_queue_file(&args.file)?;
    }
    let mut sink = Sink {
        args,
        ring: None,
        opened_at: Instant::now(),
        added: 0,
    };
    let outcome = if args.items.is_empty() {
        push_stdin(&mut sink, if args.null { 0 } else { b'\n' })
    } else {
        args.items
            .iter()
            .try_for_each(|item| sink.push(item.as_bytes()))
    };
    // Whatever happened, make what was pushed durable and say how much it was.
    let closed = sink.close();
    report(args, sink.added)?;
    outcome.and(closed)?;
    Ok(ExitCode::SUCCESS)
}

fn report(args: &PushArgs, added: u64) -> Result<(), CliError> {
    if args.json {
        let mut out = io::stdout().lock();
        writeln!(out, "{}", serde_json::json!({ "added": added }))?;
        out.flush()?;
    } else {
        eprintln!(
            "ringq: added {added} item{}",
            if added == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// The queue file, opened only while items flow.
struct Sink<'a> {
    args: &'a PushArgs,
    ring: Option<RingFile>,
    opened_at: Instant,
    added: u64,
}

impl Sink<'_> {
    fn push(&mut self, item: &[u8]) -> Result<(), CliError> {
        let ring = match &mut self.ring {
            Some(r) => r,
            None => {
                let ring = self.open()?;
                self.opened_at = Instant::now();
                self.ring.insert(ring)
            }
        };
        ring.push(item)?;
        self.added += 1;
        if self.opened_at.elapsed() >= MAX_HOLD {
            self.close()?;
        }
        Ok(())
    }

    fn open(&self) -> Result<RingFile, CliError> {
        // A new file carries the raw-bytes tag; an existing one must carry it too, unless
        // the user says otherwise (typed readers could not decode raw lines).
        let encoding = if self.args.any_encoding {
            None
        } else {
            Some(TAG_RAW)
        };
        let options = RingOptions::default()
            .encoding(encoding)
            .initial_capacity(self.args.capacity.unwrap_or(DEFAULT_INITIAL_CAPACITY));
        open_waiting(&self.args.file, &options, seconds(self.args.wait)).map_err(|e| match e {
            e @ ringq::Error::EncodingMismatch { .. } => {
                fail(format!("{e}; pass --any-encoding to push raw bytes anyway"))
            }
            other => CliError::from(other),
        })
    }

    /// Commits durably and releases the lock.
    fn close(&mut self) -> Result<(), CliError> {
        match self.ring.take() {
            Some(ring) => ring.close().map(drop).map_err(CliError::from),
            None => Ok(()),
        }
    }
}

fn push_stdin(sink: &mut Sink<'_>, sep: u8) -> Result<(), CliError> {
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(1024);
    std::thread::spawn(move || {
        let mut input = io::stdin().lock();
        loop {
            let mut item = Vec::new();
            match input.read_until(sep, &mut item) {
                Ok(0) => return,
                Ok(_) => {
                    if item.last() == Some(&sep) {
                        item.pop();
                    }
                    if tx.send(Ok(item)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    loop {
        let next = if sink.ring.is_some() {
            rx.recv_timeout(IDLE)
        } else {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match next {
            Ok(Ok(item)) => sink.push(&item)?,
            Ok(Err(e)) => return Err(fail(format!("cannot read stdin: {e}"))),
            Err(RecvTimeoutError::Timeout) => sink.close()?,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}
