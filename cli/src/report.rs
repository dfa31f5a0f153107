//! `ringq inspect` and `ringq verify`: read-only looks at a copy of the file.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use ringq::codec::encoding_name;
use ringq::inspect::{inspect_file, Inspection, SlotInfo};
use ringq::RecoveryReport;
use serde_json::{json, Value};

use crate::common::{require_queue_file, CliError};
use crate::ReportArgs;

/// Exit code of `verify` on a damaged file.
const DAMAGED: u8 = 2;

/// Runs `ringq inspect`.
pub fn run_inspect(args: &ReportArgs) -> Result<ExitCode, CliError> {
    let found = load(&args.file)?;
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{:#}", inspection_json(&args.file, &found))?;
    } else {
        write_inspection(&mut out, &args.file, &found)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `ringq verify`: exit 0 when recovery would change nothing, 2 when it would.
pub fn run_verify(args: &ReportArgs) -> Result<ExitCode, CliError> {
    let found = load(&args.file)?;
    let sound = found.is_sound();
    let mut out = io::stdout().lock();
    if args.json {
        let v = json!({
            "file": args.file.display().to_string(),
            "sound": sound,
            "items": found.items,
            "recovery": recovery_json(&found.recovery),
            "slots": found.slots.iter().map(slot_json).collect::<Vec<_>>(),
        });
        writeln!(out, "{v:#}")?;
    } else if sound {
        writeln!(
            out,
            "{}: sound, {} item{} verified",
            args.file.display(),
            found.items,
            plural(found.items)
        )?;
    } else {
        writeln!(out, "{}: DAMAGED", args.file.display())?;
        for line in recovery_lines(&found.recovery) {
            writeln!(out, "  {line}")?;
        }
        if found.slots.iter().all(|s| s.slot.is_none()) {
            writeln!(out, "  no usable header slot")?;
        }
        writeln!(
            out,
            "  run `ringq repair {}` to rebuild it from what verifies",
            args.file.display()
        )?;
    }
    out.flush()?;
    Ok(if sound {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DAMAGED)
    })
}

/// Inspects the file, refusing what is not a queue.
fn load(path: &Path) -> Result<Inspection, CliError> {
    if path.is_dir() {
        return Err(crate::common::fail(format!(
            "{} is a directory, not a queue file",
            path.display()
        )));
    }
    match inspect_file(path) {
        Ok(found) => Ok(found),
        // Say "not a queue" for a file without a header, rather than a recovery detail.
        Err(e @ ringq::Error::Corrupt { .. }) => {
            Err(require_queue_file(path).err().unwrap_or(e.into()))
        }
        Err(e) => Err(e.into()),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn seq_text(seq: Option<u64>) -> String {
    seq.map_or("-".into(), |s| s.to_string())
}

fn write_inspection(out: &mut impl Write, path: &Path, i: &Inspection) -> io::Result<()> {
    writeln!(
        out,
        "file         {} ({} bytes)",
        path.display(),
        i.file_len
    )?;
    writeln!(
        out,
        "encoding     {} (tag {})",
        encoding_name(i.encoding),
        i.encoding
    )?;
    writeln!(out, "epoch        {:#018x}", i.epoch)?;
    writeln!(out, "items        {}", i.items)?;
    writeln!(
        out,
        "bytes used   {} of {} ({:.1}%)",
        i.bytes_used,
        i.capacity,
        percent(i)
    )?;
    writeln!(out, "oldest seq   {}", seq_text(i.oldest_seq))?;
    writeln!(out, "newest seq   {}", seq_text(i.newest_seq))?;
    writeln!(out, "next seq     {}", i.next_seq)?;
    for (n, s) in i.slots.iter().enumerate() {
        match (&s.slot, &s.problem) {
            (Some(slot), _) => writeln!(
                out,
                "slot {n}       generation {}, head {} at {}, next seq {} at {}, seq limit {}, capacity {}{}",
                slot.generation,
                slot.head_seq,
                slot.head_off,
                slot.next_seq,
                slot.tail_off,
                slot.seq_limit,
                slot.capacity,
                if slot.flags & ringq::format::FLAG_CLEAN != 0 { ", closed cleanly" } else { "" }
            )?,
            (None, problem) => writeln!(
                out,
                "slot {n}       unusable: {}",
                problem.as_deref().unwrap_or("unknown")
            )?,
        }
    }
    let lines = recovery_lines(&i.recovery);
    if lines.is_empty() {
        writeln!(out, "recovery     nothing to do: the file is sound")?;
    } else {
        writeln!(out, "recovery     on the next open it would:")?;
        for l in lines {
            writeln!(out, "  {l}")?;
        }
    }
    Ok(())
}

fn percent(i: &Inspection) -> f64 {
    if i.capacity == 0 {
        0.0
    } else {
        i.bytes_used as f64 * 100.0 / i.capacity as f64
    }
}

/// What recovery would do, one sentence a line; empty when it would change nothing.
fn recovery_lines(r: &RecoveryReport) -> Vec<String> {
    let mut lines = Vec::new();
    if r.records_dropped > 0 {
        lines.push(format!(
            "drop {} damaged item{} (keeping {})",
            r.records_dropped,
            plural(r.records_dropped),
            r.records_kept
        ));
    }
    if r.bytes_skipped > 0 {
        lines.push(format!("step over {} damaged bytes", r.bytes_skipped));
    }
    if r.truncated {
        lines.push("extend the file back to the length its header names (it was truncated)".into());
    }
    if r.rebuilt {
        lines.push(
            "rebuild the file from its records, after a backup (no header slot is usable)".into(),
        );
    }
    if r.redelivery_possible {
        lines.push("possibly deliver again items that were already removed".into());
    }
    if !lines.is_empty() {
        lines.extend(r.notes.iter().cloned());
    }
    lines
}

fn recovery_json(r: &RecoveryReport) -> Value {
    json!({
        "anything_happened": r.anything_happened(),
        "records_kept": r.records_kept,
        "records_dropped": r.records_dropped,
        "bytes_skipped": r.bytes_skipped,
        "truncated": r.truncated,
        "rebuilt": r.rebuilt,
        "redelivery_possible": r.redelivery_possible,
        "notes": r.notes,
    })
}

fn slot_json(s: &SlotInfo) -> Value {
    match &s.slot {
        Some(slot) => json!({
            "valid": true,
            "generation": slot.generation,
            "version": slot.version,
            "flags": slot.flags,
            "clean": slot.flags & ringq::format::FLAG_CLEAN != 0,
            "encoding": slot.encoding,
            "epoch": slot.epoch,
            "capacity": slot.capacity,
            "head_off": slot.head_off,
            "head_seq": slot.head_seq,
            "tail_off": slot.tail_off,
            "next_seq": slot.next_seq,
            "seq_limit": slot.seq_limit,
        }),
        None => json!({ "valid": false, "problem": s.problem }),
    }
}

fn inspection_json(path: &Path, i: &Inspection) -> Value {
    json!({
        "file": path.display().to_string(),
        "file_len": i.file_len,
        "encoding": i.encoding,
        "encoding_name": encoding_name(i.encoding),
        "epoch": i.epoch,
        "items": i.items,
        "bytes_used": i.bytes_used,
        "capacity": i.capacity,
        "oldest_seq": i.oldest_seq,
        "newest_seq": i.newest_seq,
        "next_seq": i.next_seq,
        "sound": i.is_sound(),
        "slots": i.slots.iter().map(slot_json).collect::<Vec<_>>(),
        "recovery": recovery_json(&i.recovery),
    })
}
