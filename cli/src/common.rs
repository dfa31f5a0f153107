//! What the commands share: the error type, opening a file that must already be a queue,
//! waiting out a lock, progress on a terminal, and the Ctrl-C flag.

use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringq::format::{SLOT_MAGIC, SLOT_OFFSETS};
use ringq::{RingFile, RingOptions};

/// Why a command stopped early.
#[derive(Debug)]
pub enum CliError {
    /// Stdout was closed by its reader: not an error for a command line tool.
    BrokenPipe,
    /// A one-line message for stderr (exit code 1).
    Message(String),
}

impl From<ringq::Error> for CliError {
    fn from(e: ringq::Error) -> Self {
        CliError::Message(e.to_string())
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Message(format!("cannot write the output: {e}"))
        }
    }
}

/// A message error.
pub fn fail(msg: impl Into<String>) -> CliError {
    CliError::Message(msg.into())
}

/// Checks that `path` is an existing regular file that carries a ringq header, without
/// changing it. Opening a file that is not a queue would rebuild it as one (recovery
/// salvages what it can), which a command line must never do to a file given by mistake.
pub fn require_queue_file(path: &Path) -> Result<(), CliError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot open {}: {e}", path.display())))?;
    if meta.is_dir() {
        return Err(fail(format!(
            "{} is a directory, not a queue file",
            path.display()
        )));
    }
    let mut head = Vec::with_capacity(SLOT_OFFSETS[1] + 8);
    std::fs::File::open(path)
        .and_then(|f| f.take((SLOT_OFFSETS[1] + 8) as u64).read_to_end(&mut head))
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    if has_header_magic(&head) {
        Ok(())
    } else if head.is_empty() {
        Err(fail(format!(
            "{} is empty: not a queue file",
            path.display()
        )))
    } else {
        Err(fail(format!(
            "{} is not a ringq queue file (no header); if it is a damaged one, see `ringq repair`",
            path.display()
        )))
    }
}

/// True when either header slot starts with the slot magic.
pub fn has_header_magic(bytes: &[u8]) -> bool {
    let magic = SLOT_MAGIC.to_le_bytes();
    SLOT_OFFSETS
        .iter()
        .any(|&at| bytes.get(at..at + magic.len()) == Some(&magic[..]))
}

/// Opens the ring at `path`, retrying for up to `wait` while another process holds its lock.
pub fn open_waiting(path: &Path, options: &RingOptions, wait: Duration) -> ringq::Result<RingFile> {
    let deadline = Instant::now() + wait;
    loop {
        match RingFile::open(path, options) {
            Err(ringq::Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Seconds from the command line as a duration (negative or NaN: none).
pub fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

/// A one-line progress display on stderr, shown only when stderr is a terminal.
pub struct Progress {
    enabled: bool,
    shown: bool,
    last: Option<Instant>,
    text: String,
}

impl Progress {
    /// A display that is quiet unless stderr is a terminal.
    pub fn new() -> Self {
        Progress {
            enabled: io::stderr().is_terminal(),
            shown: false,
            last: None,
            text: String::new(),
        }
    }

    /// Shows `msg` when it changed, at most ten times a second.
    pub fn update(&mut self, msg: impl FnOnce() -> String) {
        if !self.enabled
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(Instant::now());
        let text = msg();
        if text != self.text {
            self.shown = true;
            let _ = write!(io::stderr(), "\r{text}\x1b[K");
            self.text = text;
        }
    }

    /// Ends the progress line, if one was shown.
    pub fn finish(&mut self) {
        if self.shown {
            let _ = writeln!(io::stderr());
            self.shown = false;
        }
    }
}

/// Set once SIGINT or SIGTERM arrives; installing it replaces the default (kill the process)
/// so a command can finish the item in hand and close the file cleanly.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the signal handler: {e}")))?;
    // Registering inside the runtime installs the handlers now, before any item is popped.
    let (mut int, mut term) = {
        let _guard = rt.enter();
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        match (int, term) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(e), _) | (_, Err(e)) => return Err(fail(format!("cannot handle signals: {e}"))),
        }
    };
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        set.store(true, Ordering::SeqCst);
        // Keep the handlers installed: a second Ctrl-C must not kill the process mid-write.
        rt.block_on(std::future::pending::<()>());
    });
    Ok(flag)
}
