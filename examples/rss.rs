//! Memory while 10 M small items sit in a queue: does the process grow with the queue length?
//!
//! `cargo run --release --example rss [-- ITEMS [SIZE [DIR]]]` (default 10 000 000 items of
//! 16 B, in a temporary directory under DIR or the system temp dir).
//!
//! Pushes ITEMS records into a [`RingFile`], printing at several queue lengths:
//! - `VmHWM`, the peak resident set, and `VmRSS`, the resident set now;
//! - `RssAnon`: the heap and stacks, what the process itself allocated;
//! - `RssFile`: pages of mapped files that are resident, here mostly the ring file.
//!
//! The ring's pages are the page cache of the file, mapped: they count in `RssFile` once
//! touched, and the kernel may drop them (they are clean after a flush, or written back
//! when dirty) under memory pressure; anonymous memory cannot be dropped like that. So the
//! claim to check is that `RssAnon` stays flat whatever the queue length, and `RssFile`
//! tracks the bytes the queue holds (plus record headers), not more. Then the queue is
//! drained and, finally, the same is done with the `Queue<Vec<u8>, Raw>` front end.

use std::time::Instant;

use ringq::{Durability, Queue, Raw, RingFile, RingOptions};

fn status() -> std::collections::HashMap<String, u64> {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kb = v.trim().strip_suffix(" kB")?.trim().parse().ok()?;
            Some((k.to_string(), kb))
        })
        .collect()
}

fn header() {
    println!(
        "{:<28} {:>11} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "phase", "items", "file MiB", "VmHWM MiB", "VmRSS MiB", "RssAnon", "RssFile"
    );
}

fn report(phase: &str, items: u64, file_bytes: u64) {
    let s = status();
    let mib = |k: &str| s.get(k).copied().unwrap_or(0) as f64 / 1024.0;
    println!(
        "{:<28} {:>11} {:>12.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
        phase,
        items,
        file_bytes as f64 / (1 << 20) as f64,
        mib("VmHWM"),
        mib("VmRSS"),
        mib("RssAnon"),
        mib("RssFile"),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let items: u64 = args.first().map_or(Ok(10_000_000), |s| s.parse())?;
    let size: usize = args.get(1).map_or(Ok(16), |s| s.parse())?;
    let parent = args
        .get(2)
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let dir = tempfile::tempdir_in(parent)?;
    let path = dir.path().join("rss.ring");
    let payload = vec![0x5au8; size];
    let marks: Vec<u64> = [0, 1, 10, 100, 1_000, 10_000]
        .iter()
        .map(|per| items * per / 10_000)
        .collect();

    println!(
        "{items} items of {size} B; ring file in {}; sizes in MiB",
        dir.path().display()
    );
    header();
    report("start", 0, 0);
    let t = Instant::now();
    let mut ring = RingFile::open(&path, &RingOptions::default())?;
    report("RingFile opened", 0, std::fs::metadata(&path)?.len());
    let mut pushed = 0u64;
    for &mark in &marks[1..] {
        while pushed < mark {
            ring.push(&payload)?;
            pushed += 1;
        }
        report(
            "RingFile pushed",
            ring.len(),
            std::fs::metadata(&path)?.len(),
        );
    }
    let push_secs = t.elapsed().as_secs_f64();
    ring.sync()?;
    report(
        "RingFile synced",
        ring.len(),
        std::fs::metadata(&path)?.len(),
    );
    let mut buf = Vec::with_capacity(size);
    while ring.pop_into(&mut buf)?.is_some() {}
    report(
        "RingFile drained",
        ring.len(),
        std::fs::metadata(&path)?.len(),
    );
    drop(ring);
    report("RingFile closed", 0, std::fs::metadata(&path)?.len());
    println!(
        "pushed {items} in {push_secs:.2} s ({:.1} M items/s, growth included)",
        items as f64 / push_secs / 1e6
    );
    std::fs::remove_file(&path)?;

    // The async front end: each item is a Vec<u8> handed to put_nowait and freed after the
    // copy into the map, so the heap stays flat too.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    let qpath = dir.path().join("rss.q");
    let q: Queue<Vec<u8>, Raw> = rt.block_on(
        Queue::<Vec<u8>, Raw>::builder(&qpath)
            .durability(Durability::Buffered)
            .open(),
    )?;
    report("Queue opened", 0, std::fs::metadata(&qpath)?.len());
    let mut put = 0u64;
    for &mark in &marks[1..] {
        while put < mark {
            q.put_nowait(payload.clone())?;
            put += 1;
        }
        report(
            "Queue put",
            q.qsize() as u64,
            std::fs::metadata(&qpath)?.len(),
        );
    }
    while q.get_nowait().is_ok() {}
    report(
        "Queue drained",
        q.qsize() as u64,
        std::fs::metadata(&qpath)?.len(),
    );
    Ok(())
}
