//! The one small trait the ring runs over, and the public in-memory backing.
//!
//! [`RingFile`](crate::RingFile) never touches a file directly: it reads and writes a byte
//! region through [`Storage`]. [`MappedFile`](crate::MappedFile) is the real file;
//! [`MemStorage`] is a plain heap buffer that also models the page cache (what a completed
//! flush made durable, and what a power cut could do to the rest), so tests, the fuzz
//! harness and users can run the ring in memory, snapshot it at any instant and tear writes.

use std::io;
use std::path::Path;
use std::sync::Arc;

/// A byte region the ring lives in: the whole file image, header pages included.
pub trait Storage {
    /// The whole region.
    fn bytes(&self) -> &[u8];
    /// The whole region, writable.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Makes `[offset, offset + len)` durable before returning (`msync(MS_SYNC)`).
    fn flush(&mut self, offset: usize, len: usize) -> io::Result<()>;
    /// Extends the region to `new_len` bytes, durably: the new blocks are allocated and the
    /// new length is on disk before this returns. Never shrinks.
    fn grow(&mut self, new_len: usize) -> io::Result<()>;
    /// A handle that can flush ranges while the owner keeps writing elsewhere, if the
    /// backing has one (a memory map does; the heap model flushes under its owner).
    fn concurrent_flusher(&self) -> Option<Arc<dyn ConcurrentFlush>> {
        None
    }
    /// The file behind the region, for messages.
    fn path(&self) -> Option<&Path> {
        None
    }
}

/// Flushes ranges of a region from another thread, without borrowing its owner.
pub trait ConcurrentFlush: Send + Sync {
    /// Makes `[offset, offset + len)` durable.
    fn flush(&self, offset: usize, len: usize) -> io::Result<()>;
}

/// Page size the model flushes in, as `msync` does.
const MODEL_PAGE: usize = 4096;

/// A heap-backed [`Storage`] that models the page cache.
///
/// It keeps two images: `live` (what the program sees, like the page cache) and `durable`
/// (what a completed flush put on disk). A flush copies whole 4 KiB pages from live to
/// durable, as `msync` does. [`MemStorage::crash_image`] builds what a power cut could
/// leave behind; [`MemStorage::fail_flush_at`] makes a chosen flush fail with `EIO`.
///
/// ```
/// use ringq::{MemStorage, RingFile, RingOptions};
/// let mut ring = RingFile::create_in(MemStorage::new(), &RingOptions::default())?;
/// ring.push(b"hello")?;
/// let image = ring.storage().live().to_vec(); // a kill -9 keeps everything written
/// let mut again = RingFile::open_in(MemStorage::from_bytes(image), &RingOptions::default())?;
/// assert_eq!(again.pop()?.as_deref(), Some(&b"hello"[..]));
/// # Ok::<(), ringq::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    live: Vec<u8>,
    durable: Vec<u8>,
    flushes: u64,
    fail_at: Option<u64>,
    grows: u64,
    fail_grow_at: Option<u64>,
}

impl MemStorage {
    /// An empty region (a file that does not exist yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// A region holding `bytes`, all of them durable (an existing file).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        MemStorage {
            durable: bytes.clone(),
            live: bytes,
            ..Self::default()
        }
    }

    /// What the program sees now: after `kill -9` the file holds exactly this.
    pub fn live(&self) -> &[u8] {
        &self.live
    }

    /// What completed flushes made durable.
    pub fn durable(&self) -> &[u8] {
        &self.durable
    }

    /// How many flushes completed successfully.
    pub fn flush_count(&self) -> u64 {
        self.flushes
    }

    /// Makes the `n`-th flush from now (0 = the next) fail with `EIO`, writing nothing.
    pub fn fail_flush_at(&mut self, n: u64) {
        self.fail_at = Some(n);
    }

    /// Makes the `n`-th growth from now (0 = the next) fail with `ENOSPC`.
    pub fn fail_grow_at(&mut self, n: u64) {
        self.fail_grow_at = Some(n);
    }

    /// Byte ranges (in `unit`-byte units) whose live bytes differ from the durable ones:
    /// what a power cut could lose or tear.
    pub fn dirty_units(&self, unit: usize) -> Vec<usize> {
        let unit = unit.max(1);
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.live.len() {
            let end = (start + unit).min(self.live.len());
            let durable = self.durable.get(start..end.min(self.durable.len()));
            if durable != Some(&self.live[start..end]) {
                out.push(start);
            }
            start = end;
        }
        out
    }

    /// What the disk could hold after a power cut now: durable bytes everywhere, and in
    /// every `unit`-sized piece written since its last flush, the old bytes, the new bytes or
    /// garbage, as `tear` decides. `seed` drives the random choices.
    pub fn crash_image(&self, tear: Tear, unit: usize, seed: u64) -> Vec<u8> {
        let unit = unit.max(8);
        let mut rng = SplitMix(seed);
        let mut image = self.durable.clone();
        let dirty = self.dirty_units(unit);
        let n = dirty.len();
        let prefix = if n == 0 {
            0
        } else {
            (rng.next() % (n as u64 + 1)) as usize
        };
        let torn_one = if n == 0 {
            0
        } else {
            (rng.next() % n as u64) as usize
        };
        for (i, &start) in dirty.iter().enumerate() {
            let end = (start + unit).min(self.live.len());
            let fate = match tear {
                Tear::AllLost => Fate::Lost,
                Tear::AllKept => Fate::Kept,
                Tear::SlotPagesOnly => {
                    if start < crate::format::DATA_OFFSET {
                        Fate::Kept
                    } else {
                        Fate::Lost
                    }
                }
                Tear::PrefixKept => {
                    if i < prefix {
                        Fate::Kept
                    } else {
                        Fate::Lost
                    }
                }
                Tear::SuffixKept => {
                    if i >= prefix {
                        Fate::Kept
                    } else {
                        Fate::Lost
                    }
                }
                Tear::OneTorn => {
                    if i == torn_one {
                        Fate::Garbage
                    } else {
                        Fate::Kept
                    }
                }
                Tear::Independent => match rng.next() % 3 {
                    0 => Fate::Lost,
                    1 => Fate::Kept,
                    _ => Fate::Garbage,
                },
            };
            if image.len() < end {
                image.resize(end, 0);
            }
            match fate {
                Fate::Lost => {}
                Fate::Kept => image[start..end].copy_from_slice(&self.live[start..end]),
                Fate::Garbage => {
                    for b in &mut image[start..end] {
                        *b = rng.next() as u8;
                    }
                }
            }
        }
        image
    }
}

/// How a simulated power cut treats the pieces written since their last flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tear {
    /// Every piece reverts to its durable bytes.
    AllLost,
    /// Every piece reached the disk.
    AllKept,
    /// Only the header pages reached the disk: the header-before-data bug finder.
    SlotPagesOnly,
    /// The first pieces (in file order) reached the disk, the rest did not.
    PrefixKept,
    /// The last pieces reached the disk, the first did not.
    SuffixKept,
    /// Everything reached the disk except one piece, which is garbage.
    OneTorn,
    /// Each piece independently lost, kept or garbage.
    Independent,
}

impl Tear {
    /// Every strategy, for tests that try them all.
    pub const ALL: [Tear; 7] = [
        Tear::AllLost,
        Tear::AllKept,
        Tear::SlotPagesOnly,
        Tear::PrefixKept,
        Tear::SuffixKept,
        Tear::OneTorn,
        Tear::Independent,
    ];
}

enum Fate {
    Lost,
    Kept,
    Garbage,
}

/// A tiny deterministic generator for the crash model (no dependency needed).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Storage for MemStorage {
    fn bytes(&self) -> &[u8] {
        &self.live
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.live
    }

    fn flush(&mut self, offset: usize, len: usize) -> io::Result<()> {
        if let Some(n) = self.fail_at {
            if n == 0 {
                self.fail_at = None;
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            self.fail_at = Some(n - 1);
        }
        let start = (offset / MODEL_PAGE) * MODEL_PAGE;
        let end = offset
            .saturating_add(len)
            .div_ceil(MODEL_PAGE)
            .saturating_mul(MODEL_PAGE)
            .min(self.live.len());
        if self.durable.len() < self.live.len() {
            self.durable.resize(self.live.len(), 0);
        }
        if start < end {
            self.durable[start..end].copy_from_slice(&self.live[start..end]);
        }
        self.flushes += 1;
        Ok(())
    }

    fn grow(&mut self, new_len: usize) -> io::Result<()> {
        if let Some(n) = self.fail_grow_at {
            if n == 0 {
                self.fail_grow_at = None;
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.fail_grow_at = Some(n - 1);
        }
        self.grows += 1;
        // A length the heap cannot hold is an error, as a full disk is for a file.
        let no_room = |_| io::Error::from_raw_os_error(libc::ENOMEM);
        if new_len > self.live.len() {
            self.live
                .try_reserve_exact(new_len - self.live.len())
                .map_err(no_room)?;
            self.live.resize(new_len, 0);
        }
        // The real backing makes the new length durable (fallocate + fdatasync).
        if new_len > self.durable.len() {
            self.durable
                .try_reserve_exact(new_len - self.durable.len())
                .map_err(no_room)?;
            self.durable.resize(new_len, 0);
        }
        Ok(())
    }
}
