//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in ringq.
///
/// Messages are sentences that name the file involved where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The queue holds no item (`get_nowait`, `pop` on an empty ring).
    #[error("the queue is empty")]
    Empty,

    /// The queue is at its `maxsize`, or its byte limit stops it from growing.
    #[error("the queue is full")]
    Full,

    /// Another handle, in this process or another, holds the file's lock.
    #[error("{path} is locked by another queue (in this process or another)")]
    Locked {
        /// The file that is locked.
        path: PathBuf,
    },

    /// A record larger than the queue can ever hold.
    #[error(
        "a record of {size} bytes is larger than the limit of {limit} bytes{}",
        for_path(path)
    )]
    TooLarge {
        /// The size of the refused record, in bytes (payload).
        size: u64,
        /// The largest payload this queue accepts, in bytes.
        limit: u64,
        /// The file, if the queue has one.
        path: Option<PathBuf>,
    },

    /// An operating-system error, with what ringq was doing and on which file.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What ringq was doing ("cannot open", "cannot grow", …).
        context: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An earlier flush failed: durability is unknown until the file is reopened.
    ///
    /// Linux may drop dirty pages after a writeback error, and a retried flush can then
    /// report success for data that never reached the disk, so ringq refuses every later
    /// durable acknowledgement instead.
    #[error("an earlier flush of {} failed ({cause}); reopen the queue to re-verify it from disk", path.display())]
    Poisoned {
        /// The file whose flush failed.
        path: PathBuf,
        /// The first failure, as text.
        cause: String,
    },

    /// The file is not a ringq queue, or is damaged beyond what recovery accepts.
    #[error("{} is not a usable ringq file: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The file was written with another payload encoding than the one asked for.
    #[error("{} holds items encoded as {found}, but it was opened as {expected}", path.display())]
    EncodingMismatch {
        /// The file.
        path: PathBuf,
        /// The encoding stored in the file's header.
        found: String,
        /// The encoding the caller asked for.
        expected: String,
    },

    /// An item could not be encoded.
    #[error("cannot encode the item: {0}")]
    Encode(String),

    /// An item could not be decoded as the requested type. It has been removed from the
    /// queue; its raw bytes are here so nothing is lost.
    #[error("item {seq} does not decode: {reason}")]
    Decode {
        /// The item's sequence number.
        seq: u64,
        /// Why it does not decode.
        reason: String,
        /// The item's raw payload, as stored.
        raw: Vec<u8>,
    },

    /// `task_done` was called more times than items were gotten.
    #[error("task_done() called more times than there were items")]
    TaskDoneUnderflow,

    /// The guard or sequence number does not name an item currently handed out.
    #[error("item {seq} is not handed out by this queue")]
    NotInFlight {
        /// The sequence number given.
        seq: u64,
    },
}

fn for_path(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" of {}", p.display()),
        None => String::new(),
    }
}

impl Error {
    /// Wraps an I/O error with what was being done to which file.
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// True for a full disk or a file size limit (`ENOSPC`, `EFBIG`, `EDQUOT`).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT)
            ),
            _ => false,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
