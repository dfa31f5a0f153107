//! The memory-mapped file: lock, create, map, grow, remap, flush. The only module with
//! `unsafe` code.
//!
//! Soundness boundary: the map is shared with the file, so bytes can change under us only if
//! another program writes the file without taking its lock, and a store or load can raise
//! `SIGBUS` only if another program truncates it. ringq takes an exclusive `flock` on open
//! and grows with `fallocate`, so its own users are safe; a program that ignores the lock is
//! outside what any memory-mapped store can defend against.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
use crate::storage::{ConcurrentFlush, Storage};

/// A queue file, locked and mapped into memory.
#[derive(Debug)]
pub struct MappedFile {
    file: File,
    path: PathBuf,
    /// `None` while the file is empty (a zero-length map is not allowed).
    region: Option<Arc<Region>>,
}

/// One mapping of the file. Shared with flusher threads, which only ever call `msync` on it.
#[derive(Debug)]
struct Region {
    raw: MmapRaw,
}

impl ConcurrentFlush for Region {
    fn flush(&self, offset: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.raw.flush_range(offset, len)
    }
}

/// What [`MappedFile::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The file was created by this open.
    Created,
    /// The file existed.
    Existing,
}

impl MappedFile {
    /// Opens (or, with `create`, creates) the file at `path`, takes its exclusive lock and maps
    /// it. Fails with [`Error::Locked`] at once when another handle holds the lock.
    pub fn open(path: &Path, create: bool) -> Result<(MappedFile, Opened)> {
        if path.is_dir() {
            return Err(Error::io(
                "cannot open",
                path,
                io::Error::new(io::ErrorKind::IsADirectory, "the path is a directory"),
            ));
        }
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io("cannot open", path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: path.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("cannot lock", path, e)),
        }
        if !existed {
            sync_parent_dir(path)?;
        }
        warn_if_fallocate_cannot_protect(&file, path);
        let mut mapped = MappedFile {
            file,
            path: path.to_path_buf(),
            region: None,
        };
        mapped
            .allocate_existing()
            .map_err(|e| Error::io("cannot allocate the blocks of", path, e))?;
        mapped.remap()?;
        let opened = if existed {
            Opened::Existing
        } else {
            Opened::Created
        };
        Ok((mapped, opened))
    }

    /// The file's path.
    pub fn file_path(&self) -> &Path {
        &self.path
    }

    fn file_len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io("cannot stat", &self.path, e))
    }

    /// Maps the file at its current length, replacing any earlier mapping.
    fn remap(&mut self) -> Result<()> {
        let len = self.file_len()?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| isize::try_from(*l).is_ok())
            .ok_or_else(|| Error::Corrupt {
                path: self.path.clone(),
                reason: format!("the file is {len} bytes long, more than this machine can map"),
            })?;
        if len == 0 {
            self.region = None;
            return Ok(());
        }
        let raw = MmapOptions::new()
            .len(len)
            .map_raw(&self.file)
            .map_err(|e| Error::io("cannot map", &self.path, e))?;
        self.region = Some(Arc::new(Region { raw }));
        Ok(())
    }

    /// Gives every block of the file as it is real storage: a file copied sparse (`cp
    /// --sparse`, `rsync -S`, a restored backup) has holes, and a store into a hole through
    /// the map on a full disk raises `SIGBUS`. `fallocate` mode 0 fills the holes and leaves
    /// allocated blocks and the length alone; on a full disk it fails here with `ENOSPC`.
    fn allocate_existing(&mut self) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        if len == 0 {
            return Ok(());
        }
        let len = to_off(len)?;
        // SAFETY: `fallocate` only reads its integer arguments; the descriptor is open and
        // owned by `self.file` for the whole call.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, len) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                // Not supported here (warned about above): nothing better to do.
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
                _ => Err(err),
            };
        }
        Ok(())
    }

    /// Extends the file to `new_len` with real blocks (`grow` makes the length durable).
    fn extend(&mut self, new_len: u64) -> io::Result<()> {
        let old_len = self.file.metadata()?.len();
        if new_len <= old_len {
            return Ok(());
        }
        let add = new_len - old_len;
        let (off, add) = (to_off(old_len)?, to_off(add)?);
        // SAFETY: `fallocate` only reads its integer arguments; the descriptor is open and
        // owned by `self.file` for the whole call.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, off, add) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                    self.extend_with_zeros(old_len, new_len)?
                }
                _ => return Err(err),
            }
        }
        Ok(())
    }

    /// Where `fallocate` is not supported: write real zeros (never `set_len`, which leaves a
    /// hole that turns a full disk into `SIGBUS`).
    fn extend_with_zeros(&self, from: u64, to: u64) -> io::Result<()> {
        const CHUNK: usize = 1 << 16;
        let zeros = vec![0u8; CHUNK];
        let mut at = from;
        while at < to {
            let n = usize::try_from((to - at).min(CHUNK as u64)).unwrap_or(CHUNK);
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}

fn to_off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))
}

impl Storage for MappedFile {
    fn bytes(&self) -> &[u8] {
        match &self.region {
            // SAFETY: the mapping is `len()` bytes long and lives as long as `self.region`,
            // which the returned borrow of `self` keeps. The file is locked exclusively and was
            // extended with `fallocate`, so every mapped page has blocks behind it (see the
            // module docs for what an outside program could still do).
            Some(r) => unsafe { std::slice::from_raw_parts(r.raw.as_ptr(), r.raw.len()) },
            None => &[],
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match &self.region {
            // SAFETY: as in `bytes`; the `&mut self` borrow makes this the only slice into the
            // mapping. Flusher threads hold the region only to call `msync`, which does not
            // access the bytes through Rust.
            Some(r) => unsafe { std::slice::from_raw_parts_mut(r.raw.as_mut_ptr(), r.raw.len()) },
            None => &mut [],
        }
    }

    fn flush(&mut self, offset: usize, len: usize) -> io::Result<()> {
        match &self.region {
            Some(r) => r.flush(offset, len),
            None => Ok(()),
        }
    }

    fn grow(&mut self, new_len: usize) -> io::Result<()> {
        let old_len = self.bytes().len();
        self.extend(new_len as u64)?;
        self.remap().map_err(|e| match e {
            Error::Io { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })?;
        // The new length must be durable before any slot names it. `fdatasync` would also
        // write back every page dirtied through the map (all unflushed records); `msync` of
        // the new range is a ranged `fdatasync`: it writes only that range (clean after
        // `fallocate`, the zeros after the `pwrite` fallback) and still commits the size.
        let start = old_len.min(new_len) / 4096 * 4096;
        self.flush(start, new_len - start)
    }

    fn concurrent_flusher(&self) -> Option<Arc<dyn ConcurrentFlush>> {
        self.region
            .as_ref()
            .map(|r| Arc::clone(r) as Arc<dyn ConcurrentFlush>)
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

/// `fsync` the directory holding `path`, so a new file's directory entry is durable.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync the directory of", path, e))
}

/// Filesystems on which `fallocate` guarantees later stores into the map find blocks.
const EXT4_MAGIC: i64 = 0xEF53;
const XFS_MAGIC: i64 = 0x5846_5342;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Logs a warning when the file lives on a filesystem (btrfs, zfs, NFS, …) where a full
/// disk can still surface as `SIGBUS` on a store into the map.
fn warn_if_fallocate_cannot_protect(file: &File, path: &Path) {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `fstatfs` writes at most one `statfs` into the pointer, which points at a
    // properly sized and aligned `MaybeUninit<statfs>` that lives across the call.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return;
    }
    // SAFETY: `fstatfs` returned 0, so it initialised the struct (and it was zeroed before).
    let st = unsafe { st.assume_init() };
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs by platform"
    )]
    let fs = st.f_type as i64;
    if ![EXT4_MAGIC, XFS_MAGIC, TMPFS_MAGIC].contains(&fs) {
        log::warn!(
            "{}: this filesystem (type {fs:#x}) may not reserve blocks with fallocate; \
             a full disk could then stop the process with SIGBUS (safe on ext4, xfs, tmpfs)",
            path.display()
        );
    }
}
