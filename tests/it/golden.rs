//! The on-disk format is a contract: queue files written by format v1 (`tests/golden/v1/`),
//! each beside a `.expect` manifest of the items it must yield, in order, and nothing more.
//!
//! Every test copies the golden file into a temporary directory first: opening a queue may
//! write to it (recovery, the clean-close commit), and the checked-in bytes must never change.
//!
//! The files were written once by `write_golden_files` (ignored; run it only to add a case:
//! `RINGQ_GOLDEN_WRITE=1 cargo test --test it golden::write_golden_files -- --ignored`). It
//! never overwrites an existing file: a later format must open these, not replace them.
//!
//! Manifest lines: `codec raw|bincode|pod`, `dropped N` (items recovery reports lost to
//! damage), then one `item HEX [VALUE...]` per item: the stored payload in hex and, for
//! bincode and pod, the typed value it decodes to (checked through `Queue`).

use std::path::{Path, PathBuf};

use ringq::codec::{TAG_BINCODE, TAG_POD, TAG_RAW};
use ringq::format::{Slot, DATA_OFFSET, SLOT_OFFSETS, SLOT_SIZE};
use ringq::{Error, Pod, Queue, RingFile, RingOptions};
use serde::{Deserialize, Serialize};

/// The bincode item of the golden files.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Job {
    id: u64,
    name: String,
}

fn job(id: u64) -> Job {
    Job {
        id,
        name: format!("job-{id}"),
    }
}

/// The plain-old-data item of the golden files.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
struct Point {
    id: u64,
    x: u32,
    y: u32,
}

fn point(id: u64) -> Point {
    Point {
        id,
        x: id as u32 * 10,
        y: id as u32 * 100 + 1,
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1")
}

/// One golden file's manifest.
#[derive(Debug, Default)]
struct Manifest {
    codec: String,
    dropped: u64,
    /// (payload, typed value words)
    items: Vec<(Vec<u8>, Vec<String>)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn read_manifest(path: &Path) -> Manifest {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut m = Manifest::default();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("codec") => m.codec = words.next().unwrap().to_string(),
            Some("dropped") => m.dropped = words.next().unwrap().parse().unwrap(),
            Some("item") => {
                let payload = unhex(words.next().unwrap_or(""));
                m.items.push((payload, words.map(String::from).collect()));
            }
            other => panic!("{path:?}: unknown manifest line {other:?}"),
        }
    }
    m
}

/// The golden cases: (file stem, what it holds).
const CASES: &[(&str, &str)] = &[
    ("raw-empty", "created and closed"),
    ("raw-few", "three items, closed cleanly"),
    (
        "raw-wrapped",
        "fixed 4 KiB ring, head past the front, tail wrapped",
    ),
    ("raw-grown", "4 KiB ring grown while wrapped"),
    (
        "raw-guards",
        "items taken and not committed, others committed out of order; kill -9 image",
    ),
    (
        "raw-kill9",
        "pushes and pops after the last commit; kill -9 image",
    ),
    ("raw-damaged", "one record's payload byte flipped"),
    (
        "bincode-few",
        "Queue<Job>: gets and a released guard, closed cleanly",
    ),
    (
        "bincode-guards-kill9",
        "Queue<Job>: guards out, one committed, a get behind them; kill -9 image",
    ),
    ("pod-few", "Queue<Point, Pod>, closed cleanly"),
];

/// Copies golden file `stem` into `dir` and returns the copy's path.
fn copy_golden(stem: &str, dir: &Path) -> PathBuf {
    let src = golden_dir().join(format!("{stem}.ringq"));
    let dst = dir.join(format!("{stem}.ringq"));
    std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    dst
}

fn tag_of(codec: &str) -> u32 {
    match codec {
        "raw" => TAG_RAW,
        "bincode" => TAG_BINCODE,
        "pod" => TAG_POD,
        other => panic!("unknown codec {other}"),
    }
}

/// Every stored payload, in order, through `RingFile` (pop until empty).
fn ring_payloads(path: &Path, tag: u32) -> (Vec<Vec<u8>>, u64) {
    let opts = RingOptions::default().create(false).encoding(Some(tag));
    let mut ring = RingFile::open(path, &opts).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let dropped = ring.recovery_report().records_dropped;
    let mut out = Vec::new();
    while let Some(p) = ring.pop().unwrap() {
        out.push(p);
    }
    ring.close().unwrap();
    (out, dropped)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every item, in order, through `Queue<T, C>` (get_nowait until empty).
fn queue_items<T, C>(path: &Path) -> Vec<T>
where
    T: Send + 'static,
    C: ringq::Codec<T>,
{
    rt().block_on(async {
        let q: Queue<T, C> = Queue::builder(path).open().await.unwrap();
        let mut out = Vec::new();
        loop {
            match q.get_nowait() {
                Ok(item) => out.push(item),
                Err(Error::Empty) => break,
                Err(e) => panic!("{path:?}: {e}"),
            }
        }
        out
    })
}

#[test]
fn every_golden_file_yields_its_items() {
    for (stem, what) in CASES {
        let m = read_manifest(&golden_dir().join(format!("{stem}.expect")));
        let tag = tag_of(&m.codec);
        let dir = tempfile::tempdir().unwrap();

        let copy = copy_golden(stem, dir.path());
        let (payloads, dropped) = ring_payloads(&copy, tag);
        let want: Vec<Vec<u8>> = m.items.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(payloads, want, "{stem} ({what}): payloads through RingFile");
        assert_eq!(dropped, m.dropped, "{stem}: items reported lost to damage");

        // The typed view through Queue, on a fresh copy.
        let dir2 = tempfile::tempdir().unwrap();
        let copy = copy_golden(stem, dir2.path());
        match m.codec.as_str() {
            "raw" => {
                let got = queue_items::<Vec<u8>, ringq::Raw>(&copy);
                assert_eq!(got, want, "{stem}: items through Queue<Vec<u8>, Raw>");
            }
            "bincode" => {
                let got = queue_items::<Job, ringq::Bincode>(&copy);
                let want: Vec<Job> = m
                    .items
                    .iter()
                    .map(|(_, v)| Job {
                        id: v[0].parse().unwrap(),
                        name: v[1].clone(),
                    })
                    .collect();
                assert_eq!(got, want, "{stem}: items through Queue<Job>");
            }
            "pod" => {
                let got = queue_items::<Point, Pod>(&copy);
                let want: Vec<Point> = m
                    .items
                    .iter()
                    .map(|(_, v)| Point {
                        id: v[0].parse().unwrap(),
                        x: v[1].parse().unwrap(),
                        y: v[2].parse().unwrap(),
                    })
                    .collect();
                assert_eq!(got, want, "{stem}: items through Queue<Point, Pod>");
            }
            other => panic!("{other}"),
        }
    }
}

#[test]
fn golden_files_are_small_and_listed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".ringq"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|(s, _)| format!("{s}.ringq")).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "every golden file is tested, every case has a file"
    );
    for name in on_disk {
        let len = std::fs::metadata(golden_dir().join(&name)).unwrap().len();
        assert!(len <= 64 * 1024, "{name} is {len} bytes");
    }
}

/// Rewrites the version of every slot that verifies (or of the newest one only) with a
/// correct CRC: what a later ringq would leave.
fn bump_version(path: &Path, newest_only: bool, version: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    let valid: Vec<(usize, Slot)> = SLOT_OFFSETS
        .iter()
        .filter_map(|&at| {
            let raw = &bytes[at..at + SLOT_SIZE];
            let slot = Slot::decode(raw)?;
            slot.check(raw).ok().map(|()| (at, slot))
        })
        .collect();
    assert!(!valid.is_empty());
    let newest = valid.iter().map(|(_, s)| s.generation).max().unwrap();
    for (at, mut slot) in valid {
        if newest_only && slot.generation != newest {
            continue;
        }
        slot.version = version;
        bytes[at..at + SLOT_SIZE].copy_from_slice(&slot.encode());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_newer_format_version_is_refused_untouched() {
    for newest_only in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let copy = copy_golden("raw-few", dir.path());
        bump_version(&copy, newest_only, 2);
        let before = std::fs::read(&copy).unwrap();

        let opts = RingOptions::default().create(false);
        match RingFile::open(&copy, &opts) {
            Err(Error::Corrupt { reason, .. }) => {
                assert!(reason.contains("version 2"), "unclear reason: {reason}");
                assert!(reason.contains("newer"), "unclear reason: {reason}");
            }
            Err(e) => panic!("newest_only={newest_only}: wrong error: {e}"),
            Ok(ring) => panic!(
                "newest_only={newest_only}: a v2 file was opened as v1 ({} items)",
                ring.len()
            ),
        }
        match rt().block_on(Queue::<Vec<u8>, ringq::Raw>::builder(&copy).open()) {
            Err(e) => assert!(e.to_string().contains("version 2"), "{e}"),
            Ok(_) => panic!("Queue opened a v2 file"),
        }

        assert_eq!(
            std::fs::read(&copy).unwrap(),
            before,
            "the file is unchanged"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no backup, no other file: {names:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The generator (run once per new case; never overwrites).

fn raw_item(i: u64) -> Vec<u8> {
    let len = 40 + (i * 37 % 90) as usize;
    let mut v = format!("item-{i:04}:").into_bytes();
    v.extend((0..len).map(|k| (i as usize * 7 + k) as u8));
    v
}

fn ring_opts(cap: u64, max: Option<u64>, tag: u32) -> RingOptions {
    RingOptions::default()
        .initial_capacity(cap)
        .max_capacity(max)
        .encoding(Some(tag))
        .create(true)
}

/// The newest slot that verifies in a file image.
fn newest_slot(bytes: &[u8]) -> Slot {
    SLOT_OFFSETS
        .iter()
        .filter_map(|&at| {
            let raw = &bytes[at..at + SLOT_SIZE];
            let s = Slot::decode(raw)?;
            s.check(raw).ok().map(|()| s)
        })
        .max_by_key(|s| s.generation)
        .expect("a valid slot")
}

struct Writer {
    out: PathBuf,
    scratch: tempfile::TempDir,
}

impl Writer {
    fn path(&self, stem: &str) -> PathBuf {
        self.scratch.path().join(format!("{stem}.ringq"))
    }

    /// Stores the file image and its manifest; `items` are (payload, typed value text).
    fn save(
        &self,
        stem: &str,
        image: &[u8],
        codec: &str,
        dropped: u64,
        items: &[(Vec<u8>, String)],
    ) {
        let file = self.out.join(format!("{stem}.ringq"));
        let expect = self.out.join(format!("{stem}.expect"));
        assert!(
            !file.exists() && !expect.exists(),
            "{file:?} exists: golden files are never rewritten"
        );
        let what = CASES
            .iter()
            .find(|(s, _)| *s == stem)
            .expect("listed in CASES")
            .1;
        let mut text = format!(
            "# {stem}: {what}\n# written by ringq {} (format v{})\ncodec {codec}\ndropped {dropped}\n",
            env!("CARGO_PKG_VERSION"),
            ringq::format::FORMAT_VERSION
        );
        for (payload, value) in items {
            text.push_str(&format!("item {} {value}\n", hex(payload)).replace(" \n", "\n"));
        }
        std::fs::write(&file, image).unwrap();
        std::fs::write(&expect, text).unwrap();
    }

    fn save_raw(&self, stem: &str, image: &[u8], dropped: u64, ids: impl IntoIterator<Item = u64>) {
        let items: Vec<_> = ids
            .into_iter()
            .map(|i| (raw_item(i), String::new()))
            .collect();
        self.save(stem, image, "raw", dropped, &items);
    }
}

#[test]
#[ignore = "writes tests/golden/v1; run once to add a case"]
fn write_golden_files() {
    if std::env::var_os("RINGQ_GOLDEN_WRITE").is_none() {
        panic!("set RINGQ_GOLDEN_WRITE=1 to write the golden files");
    }
    let w = Writer {
        out: golden_dir(),
        scratch: tempfile::tempdir().unwrap(),
    };
    std::fs::create_dir_all(&w.out).unwrap();
    let raw = |cap, max| ring_opts(cap, max, TAG_RAW);

    // Empty.
    let p = w.path("raw-empty");
    RingFile::open(&p, &raw(4096, None))
        .unwrap()
        .close()
        .unwrap();
    w.save_raw("raw-empty", &std::fs::read(&p).unwrap(), 0, []);

    // A few items.
    let p = w.path("raw-few");
    let mut r = RingFile::open(&p, &raw(4096, None)).unwrap();
    for i in 1..=3 {
        r.push(&raw_item(i)).unwrap();
    }
    r.close().unwrap();
    w.save_raw("raw-few", &std::fs::read(&p).unwrap(), 0, 1..=3);

    // Wrapped: a fixed 4 KiB ring whose tail has gone round past the front.
    let p = w.path("raw-wrapped");
    let mut r = RingFile::open(&p, &raw(4096, Some(4096))).unwrap();
    for i in 1..=30 {
        r.push(&raw_item(i)).unwrap();
    }
    for _ in 1..=24 {
        r.pop().unwrap().unwrap();
    }
    for i in 31..=50 {
        r.push(&raw_item(i)).unwrap();
    }
    assert_eq!(r.grow_count(), 0);
    r.close().unwrap();
    let image = std::fs::read(&p).unwrap();
    let s = newest_slot(&image);
    assert!(s.tail_off < s.head_off && s.tail_off > 0, "wrapped: {s:?}");
    w.save_raw("raw-wrapped", &image, 0, 25..=50);

    // Grown: wrapped first, then grown (the front segment is copied behind the old end).
    let p = w.path("raw-grown");
    let mut r = RingFile::open(&p, &raw(4096, None)).unwrap();
    for i in 1..=30 {
        r.push(&raw_item(i)).unwrap();
    }
    for _ in 1..=24 {
        r.pop().unwrap().unwrap();
    }
    for i in 31..=80 {
        r.push(&raw_item(i)).unwrap();
    }
    assert!(r.grow_count() >= 1);
    r.close().unwrap();
    let image = std::fs::read(&p).unwrap();
    assert!(newest_slot(&image).capacity > 4096);
    w.save_raw("raw-grown", &image, 0, 25..=80);

    // Guards: 1..=4 taken; 2 and 4 committed out of order (marked done in place); 5 popped
    // behind the taken ones; then the process dies (the image is the page cache's bytes).
    let p = w.path("raw-guards");
    let mut r = RingFile::open(&p, &raw(4096, None)).unwrap();
    for i in 1..=6 {
        r.push(&raw_item(i)).unwrap();
    }
    r.sync().unwrap();
    let taken: Vec<u64> = (0..4).map(|_| r.take().unwrap().unwrap().seq).collect();
    r.commit_taken(taken[1]).unwrap();
    r.commit_taken(taken[3]).unwrap();
    assert_eq!(r.pop().unwrap().unwrap(), raw_item(5));
    let image = std::fs::read(&p).unwrap();
    drop(r);
    w.save_raw("raw-guards", &image, 0, [1, 3, 6]);

    // kill -9: pushes and pops after the last commit, so the slot's tail is older than the
    // map's. Reading the file while the map is live gives exactly what kill -9 leaves.
    let p = w.path("raw-kill9");
    let mut r = RingFile::open(&p, &raw(4096, None)).unwrap();
    for i in 1..=8 {
        r.push(&raw_item(i)).unwrap();
    }
    r.sync().unwrap();
    r.pop().unwrap().unwrap();
    r.pop().unwrap().unwrap();
    for i in 9..=12 {
        r.push(&raw_item(i)).unwrap();
    }
    let image = std::fs::read(&p).unwrap();
    drop(r);
    let s = newest_slot(&image);
    assert_eq!(
        (s.head_seq, s.next_seq),
        (0, 8),
        "last commit older than the tail"
    );
    w.save_raw("raw-kill9", &image, 0, 3..=12);

    // Damaged: one byte of the third record's payload flipped after a clean close.
    let p = w.path("raw-damaged");
    let mut r = RingFile::open(&p, &raw(4096, None)).unwrap();
    for i in 1..=6 {
        r.push(&raw_item(i)).unwrap();
    }
    r.close().unwrap();
    let mut image = std::fs::read(&p).unwrap();
    let rec = |i: u64| 24 + raw_item(i).len().div_ceil(8) * 8;
    let third = DATA_OFFSET + rec(1) + rec(2);
    assert_eq!(&image[third + 24..third + 34], b"item-0003:");
    image[third + 24 + 5] ^= 0x01;
    w.save_raw("raw-damaged", &image, 1, [1, 2, 4, 5, 6]);

    let rt = rt();
    let jobs = |ids: &[u64]| -> Vec<(Vec<u8>, String)> {
        ids.iter()
            .map(|&i| {
                let j = job(i);
                let bytes = bincode::serde::encode_to_vec(&j, bincode::config::standard()).unwrap();
                (bytes, format!("{} {}", j.id, j.name))
            })
            .collect()
    };

    // bincode: gets and a released guard, closed cleanly.
    let p = w.path("bincode-few");
    rt.block_on(async {
        let q: Queue<Job> = Queue::builder(&p)
            .initial_capacity(4096)
            .open()
            .await
            .unwrap();
        for i in 1..=5 {
            q.put(job(i)).await.unwrap();
        }
        assert_eq!(q.get().await.unwrap(), job(1));
        q.task_done().unwrap();
        let g = q.get_guarded().await.unwrap();
        assert_eq!(g.id, 2);
        drop(g);
    });
    w.save(
        "bincode-few",
        &std::fs::read(&p).unwrap(),
        "bincode",
        0,
        &jobs(&[2, 3, 4, 5]),
    );

    // bincode: guards out at kill -9; one committed; a plain get behind them; a later put.
    let p = w.path("bincode-guards-kill9");
    let image = rt.block_on(async {
        let q: Queue<Job> = Queue::builder(&p)
            .initial_capacity(4096)
            .open()
            .await
            .unwrap();
        for i in 1..=6 {
            q.put(job(i)).await.unwrap();
        }
        q.sync().await.unwrap();
        let a = q.get_guarded().await.unwrap();
        let b = q.get_guarded().await.unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        b.commit().await.unwrap();
        assert_eq!(q.get().await.unwrap(), job(3));
        q.put(job(7)).await.unwrap();
        let image = std::fs::read(&p).unwrap();
        std::mem::forget(a); // never released: the process "died" holding it
        image
    });
    w.save(
        "bincode-guards-kill9",
        &image,
        "bincode",
        0,
        &jobs(&[1, 4, 5, 6, 7]),
    );

    // Pod.
    let p = w.path("pod-few");
    rt.block_on(async {
        let q: Queue<Point, Pod> = Queue::builder(&p)
            .initial_capacity(4096)
            .open()
            .await
            .unwrap();
        for i in 1..=4 {
            q.put(point(i)).await.unwrap();
        }
        assert_eq!(q.get().await.unwrap(), point(1));
    });
    let items: Vec<_> = (2..=4)
        .map(|i| {
            let pt = point(i);
            (
                bytemuck::bytes_of(&pt).to_vec(),
                format!("{} {} {}", pt.id, pt.x, pt.y),
            )
        })
        .collect();
    w.save("pod-few", &std::fs::read(&p).unwrap(), "pod", 0, &items);
}
