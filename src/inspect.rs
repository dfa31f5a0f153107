//! Read-only analysis of a queue file's bytes: header slots, contents, and what recovery
//! would do. Works on a copy, so the file itself is never changed (and need not be unlocked).

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{Slot, SLOT_OFFSETS, SLOT_SIZE};
use crate::recovery::RecoveryReport;
use crate::ring::{RingFile, RingOptions};
use crate::storage::MemStorage;

/// One header slot as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    /// The slot's fields, if its magic, checksum and fields hold.
    pub slot: Option<Slot>,
    /// Why it is not usable, if it is not.
    pub problem: Option<String>,
}

/// What a queue file holds.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Inspection {
    /// File length in bytes.
    pub file_len: u64,
    /// Both header slots.
    pub slots: [SlotInfo; 2],
    /// The file's epoch (random identity).
    pub epoch: u64,
    /// Payload encoding tag.
    pub encoding: u32,
    /// Ring capacity in bytes.
    pub capacity: u64,
    /// Bytes of the ring in use.
    pub bytes_used: u64,
    /// Items in the queue.
    pub items: u64,
    /// Oldest and newest sequence numbers in the queue.
    pub oldest_seq: Option<u64>,
    /// Newest sequence number in the queue.
    pub newest_seq: Option<u64>,
    /// The sequence number the next item would get.
    pub next_seq: u64,
    /// What recovery would do on open.
    pub recovery: RecoveryReport,
}

impl Inspection {
    /// True when recovery would keep everything as it is.
    pub fn is_sound(&self) -> bool {
        !self.recovery.anything_happened() && self.slots.iter().any(|s| s.slot.is_some())
    }
}

/// Reads the file at `path` and inspects a copy of it.
pub fn inspect_file(path: &Path) -> Result<Inspection> {
    if path.is_dir() {
        return Err(Error::io(
            "cannot read",
            path,
            std::io::Error::new(std::io::ErrorKind::IsADirectory, "the path is a directory"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
    if bytes.is_empty() {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: "the file is empty".into(),
        });
    }
    inspect_bytes(bytes).map_err(|e| match e {
        Error::Corrupt { reason, .. } => Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        },
        other => other,
    })
}

/// Inspects a file image; with the payloads, through [`RingFile::records`] on the result of
/// [`open_copy`].
pub fn inspect_bytes(bytes: Vec<u8>) -> Result<Inspection> {
    let file_len = bytes.len() as u64;
    let slots = [0, 1].map(|i| slot_info(&bytes, SLOT_OFFSETS[i]));
    if slots.iter().all(|s| s.slot.is_none()) && !looks_like_ringq(&bytes) {
        return Err(Error::Corrupt {
            path: "<bytes>".into(),
            reason: "no ringq header and no ringq records: not a queue file".into(),
        });
    }
    let ring = open_copy(bytes)?;
    let mut records = ring.records();
    let oldest = records.next().map(|r| r.seq);
    let newest = records.last().map(|r| r.seq).or(oldest);
    Ok(Inspection {
        file_len,
        slots,
        epoch: ring.epoch(),
        encoding: ring.encoding(),
        capacity: ring.capacity(),
        bytes_used: ring.bytes_used(),
        items: ring.len(),
        oldest_seq: oldest,
        newest_seq: newest,
        next_seq: ring.next_seq(),
        recovery: ring.recovery_report().clone(),
    })
}

/// Opens a ring over a private copy of a file's bytes (recovery runs on the copy).
pub fn open_copy(bytes: Vec<u8>) -> Result<RingFile<MemStorage>> {
    RingFile::open_in(
        MemStorage::from_bytes(bytes),
        &RingOptions::default().create(false),
    )
}

fn slot_info(bytes: &[u8], at: usize) -> SlotInfo {
    let Some(raw) = bytes.get(at..at + SLOT_SIZE) else {
        return SlotInfo {
            slot: None,
            problem: Some("the file is too short".into()),
        };
    };
    let slot = Slot::decode(raw).unwrap_or_default();
    match slot.check(raw) {
        Ok(()) => SlotInfo {
            slot: Some(slot),
            problem: None,
        },
        Err(p) => SlotInfo {
            slot: None,
            problem: Some(format!("{p:?}")),
        },
    }
}

/// True when some bytes carry the slot magic or a record that verifies.
fn looks_like_ringq(bytes: &[u8]) -> bool {
    let magic = crate::format::SLOT_MAGIC.to_le_bytes();
    if SLOT_OFFSETS
        .iter()
        .any(|&at| bytes.get(at..at + 8) == Some(&magic[..]))
    {
        return true;
    }
    let ring = bytes.get(crate::format::DATA_OFFSET..).unwrap_or(&[]);
    // Under recovery's checksum budget: claims nested in each other cost linear time.
    let mut chk = crate::recovery::Checker::new(bytes.len());
    (0..ring.len())
        .step_by(crate::format::RECORD_ALIGN)
        .any(|off| chk.frame(ring, off, None, |_| true).is_some())
}
