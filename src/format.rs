//! The on-disk byte layout: offsets, header slots, cursor cells and record frames. No I/O.
//!
//! Everything on disk is little-endian and fixed width. See `ARCHITECTURE.md` for the
//! diagrams; the constants below are the single source of truth for them.

use bytemuck::{Pod, Zeroable};

/// Page size the layout is built around: each header slot owns one page.
pub const PAGE: usize = 4096;
/// Offset of header slot 0.
pub const SLOT0_OFFSET: usize = 0;
/// Offset of header slot 1, one page after slot 0.
pub const SLOT1_OFFSET: usize = SLOT0_OFFSET + PAGE;
/// Offsets of both slots, by slot index.
pub const SLOT_OFFSETS: [usize; 2] = [SLOT0_OFFSET, SLOT1_OFFSET];
/// Offset of the cursor cells inside each slot page, in a different sector from the slot.
pub const CURSOR_IN_PAGE: usize = 2048;
/// Size of one cursor cell on disk; two cells sit side by side in each slot page.
pub const CURSOR_CELL: usize = 32;
/// Offset of the first byte of the ring: records start here.
pub const DATA_OFFSET: usize = SLOT1_OFFSET + PAGE;

/// Slot magic: `RINGQSLT` read as little-endian bytes.
pub const SLOT_MAGIC: u64 = u64::from_le_bytes(*b"RINGQSLT");
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Slot flag: the file was closed cleanly after a durable commit.
pub const FLAG_CLEAN: u32 = 1;
/// Slot flag: `source_seq` holds a relay's upstream position (see `RingFile::source_mark`).
pub const FLAG_SOURCE: u32 = 2;

/// Records start on multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Size of a record header.
pub const RECORD_HEADER: usize = 24;
/// Kind byte of a data record.
pub const KIND_DATA: u8 = 0xA7;
/// Kind byte of a skip record, which covers unused bytes up to the ring's end.
pub const KIND_SKIP: u8 = 0x5C;
/// What [`read_frame`] reports for a data record removed out of order (while an older item
/// was still taken). Never stored: such a record keeps [`KIND_DATA`] and flips its CRC by
/// [`DONE_XOR`].
pub const KIND_DONE: u8 = 0xA6;
/// Sequence numbers are 56 bits wide (the top byte of the first word is the kind).
pub const MAX_SEQ: u64 = (1 << 56) - 1;
/// The smallest ring capacity a file may have.
pub const MIN_CAPACITY: u64 = 4096;
/// How many sequence numbers a durable commit reserves ahead: a push past the reservation
/// forces a commit, so sequence numbers are never handed out twice, even after power loss.
pub const SEQ_RESERVATION: u64 = 1 << 20;

/// One header slot: a checkpoint written only by a durable commit.
///
/// Stored little-endian at [`SLOT0_OFFSET`] or [`SLOT1_OFFSET`]. The valid slot with the
/// higher generation wins.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Slot {
    /// [`SLOT_MAGIC`].
    pub magic: u64,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Bit set of `FLAG_*`.
    pub flags: u32,
    /// Payload encoding tag (see `codec::Encoding`).
    pub encoding: u32,
    /// Explicit padding, always zero.
    pub _pad0: u32,
    /// Random file identity fixed at creation; every record and cursor carries it.
    pub epoch: u64,
    /// Strictly increasing commit counter.
    pub generation: u64,
    /// Ring size in bytes (the file is at least `DATA_OFFSET + capacity` long).
    pub capacity: u64,
    /// Ring offset of the oldest record not durably removed.
    pub head_off: u64,
    /// Sequence number of that record.
    pub head_seq: u64,
    /// Ring offset just past the last committed record.
    pub tail_off: u64,
    /// Sequence number the next record gets; `[head_seq, next_seq)` is committed.
    pub next_seq: u64,
    /// No record at or above this sequence number exists until a later commit.
    pub seq_limit: u64,
    /// With [`FLAG_SOURCE`]: the upstream sequence number of the last record up to
    /// `next_seq` that a relay filled in from a log.
    pub source_seq: u64,
    /// Reserved, zero.
    pub _reserved: [u64; 3],
    /// CRC32 of the slot's bytes before this field.
    pub crc: u32,
    /// Explicit padding, always zero.
    pub _pad1: u32,
}

/// Size of a slot on disk.
pub const SLOT_SIZE: usize = std::mem::size_of::<Slot>();
const _: () = assert!(SLOT_SIZE == 128);
const _: () = assert!(SLOT_SIZE <= CURSOR_IN_PAGE);
const _: () = assert!(CURSOR_IN_PAGE + 2 * CURSOR_CELL <= PAGE);

impl Slot {
    /// Converts every field between host order and little-endian (its own inverse).
    fn swap_le(mut self) -> Self {
        self.magic = self.magic.to_le();
        self.version = self.version.to_le();
        self.flags = self.flags.to_le();
        self.encoding = self.encoding.to_le();
        self.epoch = self.epoch.to_le();
        self.generation = self.generation.to_le();
        self.capacity = self.capacity.to_le();
        self.head_off = self.head_off.to_le();
        self.head_seq = self.head_seq.to_le();
        self.tail_off = self.tail_off.to_le();
        self.next_seq = self.next_seq.to_le();
        self.seq_limit = self.seq_limit.to_le();
        self.source_seq = self.source_seq.to_le();
        self.crc = self.crc.to_le();
        self
    }

    /// The bytes to write to disk, with the CRC filled in.
    pub fn encode(&self) -> [u8; SLOT_SIZE] {
        let mut disk = self.swap_le();
        disk.crc = 0;
        let crc = crc32fast::hash(&bytemuck::bytes_of(&disk)[..SLOT_SIZE - 8]);
        disk.crc = crc.to_le();
        let mut out = [0u8; SLOT_SIZE];
        out.copy_from_slice(bytemuck::bytes_of(&disk));
        out
    }

    /// Reads a slot from its on-disk bytes, whatever they hold. Check with [`Slot::check`].
    pub fn decode(bytes: &[u8]) -> Option<Slot> {
        let raw = bytes.get(..SLOT_SIZE)?;
        let disk: Slot = bytemuck::pod_read_unaligned(raw);
        Some(disk.swap_le())
    }

    /// Why this slot cannot be used, or `Ok` when its magic, version, CRC and fields hold.
    /// `file_len` bounds the capacity unless `None`.
    pub fn check(&self, raw: &[u8]) -> Result<(), SlotProblem> {
        if self.magic != SLOT_MAGIC {
            return Err(SlotProblem::Magic);
        }
        let computed = crc32fast::hash(&raw[..SLOT_SIZE - 8]);
        if computed != self.crc {
            return Err(SlotProblem::Checksum);
        }
        if self.version != FORMAT_VERSION {
            return Err(SlotProblem::Version(self.version));
        }
        let fields_ok = self._pad0 == 0
            && self._pad1 == 0
            && self.capacity >= MIN_CAPACITY
            && self.capacity.is_multiple_of(RECORD_ALIGN as u64)
            && self.head_off < self.capacity
            && self.tail_off < self.capacity
            && self.head_off.is_multiple_of(RECORD_ALIGN as u64)
            && self.tail_off.is_multiple_of(RECORD_ALIGN as u64)
            && self.head_seq <= self.next_seq
            && self.next_seq <= self.seq_limit
            && self.seq_limit <= MAX_SEQ;
        if !fields_ok {
            return Err(SlotProblem::Fields);
        }
        Ok(())
    }
}

/// Why a slot was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotProblem {
    /// Not a ringq slot.
    Magic,
    /// The CRC does not match.
    Checksum,
    /// Written by a format version this build does not know.
    Version(u32),
    /// The fields contradict each other.
    Fields,
}

/// The head cursor: where the oldest not-yet-removed record is. Written by every pop, in
/// the page of the *inactive* slot, alternating between two cells so a torn write of one
/// leaves the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Sequence number of the head record.
    pub head_seq: u64,
    /// Ring offset of the head record.
    pub head_off: u64,
}

impl Cursor {
    /// Encodes the cell for the file with this epoch: `head_seq`, `head_off`, then each of
    /// them inverted and xored with the epoch. Every pop writes one, so it is four stores and
    /// no checksum; a torn or foreign cell fails the check words (a 2^-128 chance otherwise).
    pub fn encode(&self, epoch: u64) -> [u8; CURSOR_CELL] {
        let mut out = [0u8; CURSOR_CELL];
        out[0..8].copy_from_slice(&self.head_seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.head_off.to_le_bytes());
        out[16..24].copy_from_slice(&(!self.head_seq ^ epoch).to_le_bytes());
        out[24..32].copy_from_slice(&(!self.head_off ^ epoch).to_le_bytes());
        out
    }

    /// Decodes a cell, `None` unless both check words hold under this epoch.
    pub fn decode(bytes: &[u8], epoch: u64) -> Option<Cursor> {
        let cell = bytes.get(..CURSOR_CELL)?;
        let (head_seq, head_off) = (read_u64(cell, 0)?, read_u64(cell, 8)?);
        let sound =
            read_u64(cell, 16)? == !head_seq ^ epoch && read_u64(cell, 24)? == !head_off ^ epoch;
        sound.then_some(Cursor { head_seq, head_off })
    }
}

/// CRC32 (IEEE, as `crc32fast`) of `bytes`, from a hasher set up once: building a hasher
/// probes the CPU, which costs more than checksumming a small record.
pub fn crc32(bytes: &[u8]) -> u32 {
    static TEMPLATE: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    let mut h = TEMPLATE.get_or_init(crc32fast::Hasher::new).clone();
    h.update(bytes);
    h.finalize()
}

/// Offset in the file of cursor cell `cell` (0 or 1) in slot page `page` (0 or 1).
pub const fn cursor_offset(page: usize, cell: usize) -> usize {
    SLOT_OFFSETS[page] + CURSOR_IN_PAGE + cell * CURSOR_CELL
}

/// Bytes a record with `len` payload bytes occupies in the ring, or `None` on overflow.
pub fn record_size(len: usize) -> Option<usize> {
    let padded = len.checked_add(RECORD_ALIGN - 1)? & !(RECORD_ALIGN - 1);
    padded.checked_add(RECORD_HEADER)
}

/// The largest payload a ring of `capacity` bytes can hold in one record.
pub fn max_payload(capacity: u64) -> u64 {
    capacity
        .saturating_sub(RECORD_HEADER as u64)
        .min(u32::MAX as u64)
}

/// Writes the header of the record in `rec` (header and payload, the payload already in
/// place at [`RECORD_HEADER`]).
///
/// Layout: `[0..4] crc`, `[4..8] len`, `[8] kind`, `[9..16] seq (56 bits)`, `[16..24] epoch`.
/// The CRC covers bytes `4..24` and the payload in one contiguous run (a skip record covers its
/// header only). A record removed out of order stores its CRC xor [`DONE_XOR`]: one aligned
/// four-byte store marks it, and the kind byte stays [`KIND_DATA`] on disk.
pub fn write_header(rec: &mut [u8], kind: u8, seq: u64, len: u32, epoch: u64) {
    debug_assert!(seq <= MAX_SEQ);
    let tag = (seq << 8) | kind as u64;
    rec[4..8].copy_from_slice(&len.to_le_bytes());
    rec[8..16].copy_from_slice(&tag.to_le_bytes());
    rec[16..24].copy_from_slice(&epoch.to_le_bytes());
    let covered = if kind == KIND_SKIP { 0 } else { len as usize };
    let crc = crc32(&rec[4..RECORD_HEADER + covered]);
    rec[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Makes the record whose header is `hdr` fail every check (its kind byte becomes zero).
pub fn invalidate_header(hdr: &mut [u8]) {
    hdr[8] = 0;
}

/// What the stored CRC of a data record is xored with once it is removed out of order.
pub const DONE_XOR: u32 = 0xD0E5_5EED;

/// Marks the data record at `off` done (or, with `done == false`, present again) in place.
/// Returns false when no valid data record is there.
pub fn set_done(ring: &mut [u8], off: usize, epoch: u64, done: bool) -> bool {
    let Ok(f) = read_frame(ring, off, Some(epoch)) else {
        return false;
    };
    if f.kind == KIND_SKIP {
        return false;
    }
    if (f.kind == KIND_DONE) != done {
        let stored = read_u32(ring, off).unwrap_or(0) ^ DONE_XOR;
        ring[off..off + 4].copy_from_slice(&stored.to_le_bytes());
    }
    true
}

/// A record frame found in the ring, already checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// [`KIND_DATA`], [`KIND_DONE`] or [`KIND_SKIP`].
    pub kind: u8,
    /// Sequence number (a skip record carries the number of the record after it).
    pub seq: u64,
    /// Payload length (for a skip record, the bytes it covers after its header).
    pub len: u32,
    /// The file epoch the record was written under.
    pub epoch: u64,
    /// Total bytes the record occupies, header and padding included.
    pub size: usize,
}

/// Why the bytes at an offset are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameProblem {
    /// Not even a header fits before the end of the ring.
    NoRoom,
    /// The kind byte is neither data nor skip (zeros, garbage).
    Kind,
    /// The length runs past the end of the ring.
    Length,
    /// The record belongs to another file (another epoch).
    Epoch,
    /// The header is plausible but the CRC fails: damage or a torn write.
    Checksum,
}

impl Frame {
    /// The payload bytes of a data record inside `ring`, at `off`.
    pub fn payload<'a>(&self, ring: &'a [u8], off: usize) -> &'a [u8] {
        let start = off + RECORD_HEADER;
        &ring[start..start + self.len as usize]
    }
}

/// A record header that passed every check but its CRC (see [`read_header`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// [`KIND_DATA`] or [`KIND_SKIP`], as stored (a done data record reads as data here).
    pub kind: u8,
    /// Sequence number.
    pub seq: u64,
    /// Payload length (for a skip record, the bytes it covers after its header).
    pub len: u32,
    /// The file epoch the record claims.
    pub epoch: u64,
    /// Total bytes the record occupies, header and padding included.
    pub size: usize,
    stored: u32,
}

impl Header {
    /// How many bytes checking its CRC reads: what [`Header::verify`] costs.
    pub fn crc_len(&self) -> usize {
        RECORD_HEADER - 4
            + if self.kind == KIND_SKIP {
                0
            } else {
                self.len as usize
            }
    }

    /// Checks the CRC of the record this header starts at `off` in `ring`.
    pub fn verify(&self, ring: &[u8], off: usize) -> Result<Frame, FrameProblem> {
        let covered = off
            .checked_add(4)
            .zip(off.checked_add(4 + self.crc_len()))
            .and_then(|(a, b)| ring.get(a..b))
            .ok_or(FrameProblem::Length)?;
        let crc = crc32(covered);
        let mut kind = self.kind;
        if crc != self.stored {
            if kind == KIND_DATA && crc ^ DONE_XOR == self.stored {
                kind = KIND_DONE;
            } else {
                return Err(FrameProblem::Checksum);
            }
        }
        Ok(Frame {
            kind,
            seq: self.seq,
            len: self.len,
            epoch: self.epoch,
            size: self.size,
        })
    }
}

/// Reads the header at `off` in `ring` and checks everything but the CRC: kind, length
/// within the ring, epoch (with `epoch == None` any epoch is accepted). Cheap: recovery
/// checks sequence numbers on it before paying for the CRC.
pub fn read_header(ring: &[u8], off: usize, epoch: Option<u64>) -> Result<Header, FrameProblem> {
    // One bounds check for the whole header; the fields are then fixed-size reads.
    let hdr: &[u8; RECORD_HEADER] = off
        .checked_add(RECORD_HEADER)
        .and_then(|end| ring.get(off..end))
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameProblem::NoRoom)?;
    let field = |at: usize| u64::from_le_bytes(hdr[at..at + 8].try_into().unwrap_or([0; 8]));
    let stored = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let len = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let tag = field(8);
    let kind = (tag & 0xff) as u8;
    if kind != KIND_DATA && kind != KIND_SKIP {
        return Err(FrameProblem::Kind);
    }
    let seq = tag >> 8;
    let rec_epoch = field(16);
    let size = record_size(len as usize).ok_or(FrameProblem::Length)?;
    let end = off.checked_add(size).ok_or(FrameProblem::Length)?;
    if end > ring.len() {
        return Err(FrameProblem::Length);
    }
    if epoch.is_some_and(|e| e != rec_epoch) {
        return Err(FrameProblem::Epoch);
    }
    Ok(Header {
        kind,
        seq,
        len,
        epoch: rec_epoch,
        size,
        stored,
    })
}

/// Reads and fully checks the record at `off` in `ring`. With `epoch == None` any epoch is
/// accepted (salvage of a file whose slots are gone).
pub fn read_frame(ring: &[u8], off: usize, epoch: Option<u64>) -> Result<Frame, FrameProblem> {
    read_header(ring, off, epoch)?.verify(ring, off)
}

/// Reads the sequence number and size a header claims, without checking its CRC, when the
/// header looks plausible for this epoch. Recovery uses it to step over a damaged record.
pub fn plausible_header(ring: &[u8], off: usize, epoch: u64) -> Option<(u64, usize)> {
    let hdr = ring.get(off..off.checked_add(RECORD_HEADER)?)?;
    let tag = read_u64(hdr, 8)?;
    let kind = (tag & 0xff) as u8;
    if kind != KIND_DATA && kind != KIND_SKIP {
        return None;
    }
    if read_u64(hdr, 16)? != epoch {
        return None;
    }
    let size = record_size(read_u32(hdr, 4)? as usize)?;
    (off.checked_add(size)? <= ring.len()).then_some((tag >> 8, size))
}

/// Little-endian `u64` at `at`, `None` when out of bounds.
pub fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Little-endian `u32` at `at`, `None` when out of bounds.
pub fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
