//! `ringq repair`: back up, then rebuild from every record that verifies.
//!
//! Steps, with the original file's lock held throughout (no queue can open it meanwhile):
//! 1. read the file and find its sound records on a private copy (recovery never runs in
//!    place, so the file is untouched until step 4);
//! 2. copy the bytes to `NAME.UNIXSECONDS.bak` beside it (never overwriting), fsynced;
//! 3. write the records into a fresh queue at a temporary path in the same directory, with
//!    the same encoding, and close it (durable);
//! 4. rename it over the original and fsync the directory; check that it verifies clean.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ringq::inspect::{inspect_bytes, inspect_file, open_copy};
use ringq::{RingFile, RingOptions};

use crate::common::{fail, CliError, Progress};
use crate::RepairArgs;

/// Runs `ringq repair`.
pub fn run(args: &RepairArgs) -> Result<ExitCode, CliError> {
    let path = &args.file;
    if path.is_dir() {
        return Err(fail(format!(
            "{} is a directory, not a queue file",
            path.display()
        )));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| fail(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(ringq::Error::Locked { path: path.clone() }.into())
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(fail(format!("cannot lock {}: {e}", path.display())))
        }
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    if bytes.is_empty() {
        return Err(fail(format!(
            "{} is empty: not a queue file",
            path.display()
        )));
    }
    let found = inspect_bytes(bytes.clone()).map_err(|e| match e {
        ringq::Error::Corrupt { reason, .. } => {
            fail(format!("{} is not a ringq file: {reason}", path.display()))
        }
        other => other.into(),
    })?;
    if found.is_sound() && !args.force {
        say(
            args,
            path,
            found.items,
            0,
            None,
            "the file is sound: nothing to repair (--force rebuilds anyway)",
        )?;
        return Ok(ExitCode::SUCCESS);
    }

    let backup = write_backup(path, &bytes)?;
    let source = open_copy(bytes)?;
    let tmp = temp_path(path);
    let rebuilt = rebuild(&source, &tmp, found.encoding, found.capacity);
    let kept = match rebuilt {
        Ok(kept) => kept,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(format!("cannot replace {}: {e}", path.display()))
    })?;
    sync_dir(path)?;
    drop(file); // releases the lock on the old file

    let after = inspect_file(path)?;
    if !after.is_sound() || after.items != kept {
        return Err(fail(format!(
            "the rebuilt {} does not verify ({} items, {} expected); the original is at {}",
            path.display(),
            after.items,
            kept,
            backup.display()
        )));
    }
    let dropped = found.recovery.records_dropped;
    say(args, path, kept, dropped, Some(&backup), "rebuilt")?;
    Ok(ExitCode::SUCCESS)
}

fn say(
    args: &RepairArgs,
    path: &Path,
    kept: u64,
    dropped: u64,
    backup: Option<&Path>,
    what: &str,
) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    if args.json {
        let v = serde_json::json!({
            "file": path.display().to_string(),
            "rebuilt": backup.is_some(),
            "kept": kept,
            "dropped": dropped,
            "backup": backup.map(|b| b.display().to_string()),
        });
        writeln!(out, "{v}")?;
    } else if let Some(b) = backup {
        writeln!(
            out,
            "{}: {what}: kept {kept} item(s), dropped {dropped} damaged; backup at {}",
            path.display(),
            b.display()
        )?;
    } else {
        writeln!(out, "{}: {what}", path.display())?;
    }
    out.flush()?;
    Ok(())
}

/// Writes every record of `source`, in order, into a new queue at `tmp`; returns how many.
fn rebuild(
    source: &RingFile<ringq::MemStorage>,
    tmp: &Path,
    encoding: u32,
    capacity: u64,
) -> Result<u64, CliError> {
    let options = RingOptions::default()
        .encoding(Some(encoding))
        .initial_capacity(capacity);
    let mut ring = RingFile::open(tmp, &options)?;
    let mut progress = Progress::new();
    let total = source.len();
    let mut kept = 0u64;
    for record in source.records() {
        ring.push(record.payload)?;
        kept += 1;
        progress.update(|| format!("ringq: rebuilding: {kept} of {total} items"));
    }
    ring.close()?;
    progress.finish();
    Ok(kept)
}

/// `NAME.UNIXSECONDS.bak` beside the file (`-1`, `-2` … appended when taken), fsynced.
fn write_backup(path: &Path, bytes: &[u8]) -> Result<PathBuf, CliError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = file_name(path);
    for n in 0u32.. {
        let candidate = if n == 0 {
            path.with_file_name(format!("{name}.{stamp}.bak"))
        } else {
            path.with_file_name(format!("{name}.{stamp}-{n}.bak"))
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(mut f) => {
                f.write_all(bytes)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| {
                        fail(format!(
                            "cannot write the backup {}: {e}",
                            candidate.display()
                        ))
                    })?;
                sync_dir(&candidate)?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(fail(format!(
                    "cannot create a backup of {}: {e}",
                    path.display()
                )))
            }
        }
    }
    Err(fail("no free backup name"))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "queue".into())
}

/// A fresh path beside the file for the rebuilt queue.
fn temp_path(path: &Path) -> PathBuf {
    let name = file_name(path);
    let pid = std::process::id();
    let mut n = 0u32;
    loop {
        let candidate = path.with_file_name(format!(".{name}.repair-{pid}-{n}.tmp"));
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

/// Fsyncs the directory holding `path`, so a rename or a new name in it is durable.
fn sync_dir(path: &Path) -> Result<(), CliError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(format!("cannot sync the directory {}: {e}", dir.display())))
}
