//! `ringq bench`: a representative subset of the benchmarks, in a temporary directory, in
//! well under a minute. The full side-by-side comparison with other queues is
//! `cargo bench` (benches/compare.rs); this command needs nothing but the binary.
//!
//! Work per system and item size: enqueue N items, then dequeue N, several rounds; items/s
//! is the median round (one item = one put and one get). Latencies come from a separate
//! round that times every operation on its own (the clock read is included; its cost is
//! printed). The `Sync` rows run concurrent putters for a fixed time, each put waiting for
//! its group commit, and are set against the latency of one durable commit measured here.
//!
//! Every row but one is steady state: one file, pre-sized, reused across rounds, `Raw` codec.
//! The "fresh file, default builder" row is the default path a new user takes: a new file
//! each round through `Queue::<Vec<u8>>::create(path, 0)` (bincode codec, growth from 256 KiB),
//! always `Buffered` whatever `--durability` says.

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringq::{Durability, Queue, Raw, RingFile, RingOptions};

/// Options of `ringq bench`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct BenchArgs {
    /// Item size in bytes (suffixes k/KiB, m/MiB); repeat or give a comma list
    /// [default: 64,4096,65536].
    #[arg(long = "size", value_name = "BYTES", value_delimiter = ',', value_parser = parse_size)]
    pub sizes: Vec<usize>,
    /// Items per round [default: 100000, fewer for big items so a round moves at most
    /// 64 MiB; 500 under --durability sync].
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
    /// Durability of the `Queue` rows.
    #[arg(long, value_enum, default_value_t = BenchDurability::Buffered)]
    pub durability: BenchDurability,
    /// Concurrent putters for the `Sync` group-commit rows; repeat or give a comma list
    /// [default: 1,64].
    #[arg(long, value_name = "PUTTERS", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Print a JSON array of rows instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Directory for the temporary files [default: the system temp dir]. Put it on the
    /// disk you want measured: fsync figures depend on it.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `--durability` values.
#[derive(clap::ValueEnum, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum BenchDurability {
    /// In the page cache on return (survives kill -9).
    #[default]
    Buffered,
    /// As buffered, plus a flush every 100 ms on a background thread.
    Periodic,
    /// Every put and get waits for its (group) commit.
    Sync,
}

impl BenchDurability {
    fn policy(self) -> Durability {
        match self {
            BenchDurability::Buffered => Durability::Buffered,
            BenchDurability::Periodic => Durability::Periodic(Duration::from_millis(100)),
            BenchDurability::Sync => Durability::Sync,
        }
    }

    fn name(self) -> &'static str {
        match self {
            BenchDurability::Buffered => "buffered",
            BenchDurability::Periodic => "periodic",
            BenchDurability::Sync => "sync",
        }
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (digits, mult) = [("kib", 1024), ("k", 1024), ("mib", 1 << 20), ("m", 1 << 20)]
        .iter()
        .find_map(|(suffix, m)| lower.strip_suffix(suffix).map(|d| (d.to_string(), *m)))
        .unwrap_or((lower.trim_end_matches('b').to_string(), 1));
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size in bytes"))?;
    n.checked_mul(mult)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{s}`: the size must be at least 1 byte"))
}

/// Throughput rounds per measurement (the median is reported).
const ROUNDS: usize = 5;
/// How long each `Sync` group-commit row runs.
const SYNC_RUN: Duration = Duration::from_secs(3);
/// fdatasync samples for the disk latency.
const FSYNC_SAMPLES: usize = 50;

/// One line of the result.
#[derive(serde::Serialize, Debug, Clone)]
struct Row {
    system: String,
    size: usize,
    items_per_sec: f64,
    mb_per_sec: f64,
    put_p50_ns: Option<u64>,
    put_p99_ns: Option<u64>,
    get_p50_ns: Option<u64>,
    get_p99_ns: Option<u64>,
    /// items/s over the in-memory ceiling (`VecDeque`) at the same size.
    ratio_to_ceiling: Option<f64>,
}

impl Row {
    fn new(system: &str, size: usize, items_per_sec: f64) -> Row {
        Row {
            system: system.to_string(),
            size,
            items_per_sec,
            mb_per_sec: items_per_sec * size as f64 / 1e6,
            put_p50_ns: None,
            put_p99_ns: None,
            get_p50_ns: None,
            get_p99_ns: None,
            ratio_to_ceiling: None,
        }
    }

    fn puts(mut self, lat: &mut [u64]) -> Row {
        (self.put_p50_ns, self.put_p99_ns) = percentiles(lat);
        self
    }

    fn gets(mut self, lat: &mut [u64]) -> Row {
        (self.get_p50_ns, self.get_p99_ns) = percentiles(lat);
        self
    }
}

fn percentiles(v: &mut [u64]) -> (Option<u64>, Option<u64>) {
    if v.is_empty() {
        return (None, None);
    }
    v.sort_unstable();
    let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
    (Some(at(50)), Some(at(99)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Progress on stderr when it is a terminal; silent when piped.
struct Progress {
    on: bool,
    step: usize,
    total: usize,
}

impl Progress {
    fn tick(&mut self, what: &str) {
        self.step += 1;
        if self.on {
            let width = 30;
            let done = width * (self.step - 1) / self.total.max(1);
            eprint!(
                "\r\x1b[K[{}{}] {}/{} {what}",
                "#".repeat(done),
                " ".repeat(width - done),
                self.step,
                self.total
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn finish(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

// ------------------------------------------------------------------------- the systems

/// One system: a round of `n` puts then `n` gets, optionally timing each operation.
trait System {
    fn round(&mut self, payload: &[u8], n: usize, lat: Option<&mut Latencies>) -> Res<()>;
    /// Work between rounds, outside the clock.
    fn after_round(&mut self) -> Res<()> {
        Ok(())
    }
}

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Default)]
struct Latencies {
    put: Vec<u64>,
    get: Vec<u64>,
}

/// Runs `op` `n` times, timing each call when `lat` is given.
fn timed(n: usize, lat: Option<&mut Vec<u64>>, mut op: impl FnMut() -> Res<()>) -> Res<()> {
    match lat {
        None => (0..n).try_for_each(|_| op()),
        Some(lat) => {
            lat.reserve(n);
            for _ in 0..n {
                let t = Instant::now();
                op()?;
                lat.push(ns(t.elapsed()));
            }
            Ok(())
        }
    }
}

struct Ring(RingFile, Vec<u8>);
impl System for Ring {
    fn round(&mut self, p: &[u8], n: usize, mut lat: Option<&mut Latencies>) -> Res<()> {
        let (ring, buf) = (&mut self.0, &mut self.1);
        timed(n, lat.as_mut().map(|l| &mut l.put), || {
            ring.push(p)?;
            Ok(())
        })?;
        timed(n, lat.map(|l| &mut l.get), || {
            black_box(ring.pop_into(buf)?.ok_or("ring empty too early")?);
            Ok(())
        })
    }
}

type RawQueue = Queue<Vec<u8>, Raw>;

struct QueueNowait(RawQueue, Arc<tokio::runtime::Runtime>);
impl System for QueueNowait {
    fn round(&mut self, p: &[u8], n: usize, mut lat: Option<&mut Latencies>) -> Res<()> {
        let _rt = self.1.enter();
        let q = &self.0;
        timed(n, lat.as_mut().map(|l| &mut l.put), || {
            q.put_nowait(p.to_vec())?;
            Ok(())
        })?;
        timed(n, lat.map(|l| &mut l.get), || {
            black_box(q.get_nowait()?);
            Ok(())
        })?;
        Ok(())
    }
}

struct QueueAsync(RawQueue, Arc<tokio::runtime::Runtime>);
impl System for QueueAsync {
    fn round(&mut self, p: &[u8], n: usize, lat: Option<&mut Latencies>) -> Res<()> {
        let q = &self.0;
        self.1.block_on(async {
            match lat {
                None => {
                    for _ in 0..n {
                        q.put(p.to_vec()).await?;
                    }
                    for _ in 0..n {
                        black_box(q.get().await?);
                    }
                }
                Some(lat) => {
                    for _ in 0..n {
                        let t = Instant::now();
                        q.put(p.to_vec()).await?;
                        lat.put.push(ns(t.elapsed()));
                    }
                    for _ in 0..n {
                        let t = Instant::now();
                        black_box(q.get().await?);
                        lat.get.push(ns(t.elapsed()));
                    }
                }
            }
            Ok(())
        })
    }
}

/// The default path: each round opens a fresh file with `Queue::<Vec<u8>>::create(path, 0)`
/// (bincode, 256 KiB start, growth), puts `n`, gets `n`. Opening is inside the clock; the
/// clean close (which flushes the file) and the deletion are not.
struct FreshDefault {
    dir: PathBuf,
    rt: Arc<tokio::runtime::Runtime>,
    rounds: u64,
    last: Option<(Queue<Vec<u8>>, PathBuf)>,
}
impl System for FreshDefault {
    fn round(&mut self, p: &[u8], n: usize, lat: Option<&mut Latencies>) -> Res<()> {
        self.rounds += 1;
        let path = self.dir.join(format!("fresh-{}", self.rounds));
        let q = self.rt.block_on(async {
            let q: Queue<Vec<u8>> = Queue::create(&path, 0).await?;
            let (mut puts, mut gets) = (Vec::new(), Vec::new());
            let timing = lat.is_some();
            for _ in 0..n {
                let t = timing.then(Instant::now);
                q.put(p.to_vec()).await?;
                puts.extend(t.map(|t| ns(t.elapsed())));
            }
            for _ in 0..n {
                let t = timing.then(Instant::now);
                black_box(q.get().await?);
                gets.extend(t.map(|t| ns(t.elapsed())));
            }
            if let Some(lat) = lat {
                (lat.put, lat.get) = (puts, gets);
            }
            Ok::<_, ringq::Error>(q)
        })?;
        self.last = Some((q, path));
        Ok(())
    }

    fn after_round(&mut self) -> Res<()> {
        if let Some((q, path)) = self.last.take() {
            drop(q);
            std::fs::remove_file(path)?;
        }
        Ok(())
    }
}

struct Deque(VecDeque<Vec<u8>>);
impl System for Deque {
    fn round(&mut self, p: &[u8], n: usize, mut lat: Option<&mut Latencies>) -> Res<()> {
        let d = &mut self.0;
        timed(n, lat.as_mut().map(|l| &mut l.put), || {
            d.push_back(p.to_vec());
            Ok(())
        })?;
        timed(n, lat.map(|l| &mut l.get), || {
            black_box(d.pop_front().ok_or("deque empty too early")?);
            Ok(())
        })
    }
}

/// Rounds of `n` then `n` (after one warm-up round), then one timed-per-operation round.
fn measure(name: &str, sys: &mut dyn System, size: usize, n: usize) -> Res<Row> {
    let payload = vec![0x5au8; size];
    sys.round(&payload, n, None)?;
    sys.after_round()?;
    let mut rates = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        sys.round(&payload, n, None)?;
        rates.push(n as f64 / t.elapsed().as_secs_f64());
        sys.after_round()?;
    }
    let mut lat = Latencies::default();
    sys.round(&payload, n, Some(&mut lat))?;
    sys.after_round()?;
    Ok(Row::new(name, size, median(rates))
        .puts(&mut lat.put)
        .gets(&mut lat.get))
}

/// Ring capacity that holds `n` records of `size` without growing.
fn capacity_for(size: usize, n: usize) -> u64 {
    (((size + 32) * n) as u64 * 5 / 4).next_power_of_two()
}

fn open_queue(rt: &tokio::runtime::Runtime, path: &Path, cap: u64, d: Durability) -> Res<RawQueue> {
    Ok(rt.block_on(
        RawQueue::builder(path)
            .initial_capacity(cap)
            .durability(d)
            .open(),
    )?)
}

// ------------------------------------------------------------------------- durability

/// Appends `size` bytes and `fdatasync`s, `FSYNC_SAMPLES` times: the disk's commit latency.
fn fsync_latency(dir: &Path, size: usize) -> Res<Vec<u64>> {
    let path = dir.join("fsync.probe");
    let mut f = std::fs::File::create(&path)?;
    let buf = vec![0x5au8; size];
    f.write_all(&buf)?;
    f.sync_all()?;
    let mut lat = Vec::with_capacity(FSYNC_SAMPLES);
    for _ in 0..FSYNC_SAMPLES {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(ns(t.elapsed()));
    }
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(lat)
}

/// One durable commit of one record: ring push + sync, `FSYNC_SAMPLES` times.
fn commit_latency(dir: &Path, size: usize) -> Res<Vec<u64>> {
    let path = dir.join("commit.ring");
    let opts = RingOptions::default().initial_capacity(capacity_for(size, 4 * FSYNC_SAMPLES));
    let mut ring = RingFile::open(&path, &opts)?;
    let payload = vec![0x5au8; size];
    let mut buf = Vec::new();
    // First touch of fresh (unwritten) blocks costs more; steady state is what a queue sees.
    for _ in 0..FSYNC_SAMPLES {
        ring.push(&payload)?;
        ring.sync()?;
        ring.pop_into(&mut buf)?;
    }
    let mut lat = Vec::with_capacity(FSYNC_SAMPLES);
    for _ in 0..FSYNC_SAMPLES {
        let t = Instant::now();
        ring.push(&payload)?;
        ring.sync()?;
        lat.push(ns(t.elapsed()));
        ring.pop_into(&mut buf)?;
    }
    drop(ring);
    std::fs::remove_file(&path)?;
    Ok(lat)
}

/// `putters` tasks on a multi-thread runtime put for `SYNC_RUN`, each put waiting for its
/// commit. Returns items/s and every put's latency.
fn sync_putters(dir: &Path, size: usize, putters: usize) -> Res<(f64, Vec<u64>)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let path = dir.join(format!("sync-{putters}.q"));
    // Room for the whole run without growing (fallocated, touched only as written).
    let q = open_queue(&rt, &path, 64 << 20, Durability::Sync)?;
    let payload = vec![0x5au8; size];
    let (items, lat, elapsed) = rt.block_on(async {
        let start = Instant::now();
        let deadline = start + SYNC_RUN;
        let tasks: Vec<_> = (0..putters)
            .map(|_| {
                let (q, p) = (q.clone(), payload.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        q.put(p.clone()).await?;
                        lat.push(ns(t.elapsed()));
                    }
                    Ok::<_, ringq::Error>(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        let elapsed = start.elapsed();
        Ok::<_, Box<dyn std::error::Error>>((all.len(), all, elapsed))
    })?;
    drop(q);
    drop(rt);
    std::fs::remove_file(&path)?;
    Ok((items as f64 / elapsed.as_secs_f64(), lat))
}

// ------------------------------------------------------------------------- run

/// A fresh directory, removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: PathBuf) -> Res<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!("ringq-bench-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the benchmark and prints its table.
pub fn run(args: &BenchArgs) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let sizes = if args.sizes.is_empty() {
        vec![64, 4096, 64 * 1024]
    } else {
        args.sizes.clone()
    };
    let concurrency = if args.concurrency.is_empty() {
        vec![1, 64]
    } else {
        args.concurrency.clone()
    };
    if concurrency.contains(&0) {
        return Err("--concurrency: at least one putter".into());
    }
    let count_for = |size: usize| -> usize {
        let default = if args.durability == BenchDurability::Sync {
            500
        } else {
            (64 << 20) / size
        };
        args.count.unwrap_or(default.clamp(1, 100_000)).max(1)
    };
    let tmp = TempDir::new(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let dir = tmp.0.as_path();
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    );
    let policy = args.durability.policy();
    let sync_size = sizes.iter().copied().min().unwrap_or(64);

    let mut progress = Progress {
        on: std::io::stderr().is_terminal(),
        step: 0,
        total: sizes.len() * 5 + concurrency.len() + 2,
    };
    let mut rows = Vec::new();
    for &size in &sizes {
        let n = count_for(size);
        let cap = capacity_for(size, n);
        let mut group = Vec::new();

        progress.tick(&format!("VecDeque, {size} B"));
        let ceiling = measure("VecDeque (in memory)", &mut Deque(VecDeque::new()), size, n)?;

        progress.tick(&format!("RingFile, {size} B"));
        let opts = RingOptions::default().initial_capacity(cap);
        let ring = RingFile::open(dir.join(format!("ring-{size}")), &opts)?;
        group.push(measure(
            "ringq RingFile",
            &mut Ring(ring, Vec::new()),
            size,
            n,
        )?);

        let d = args.durability.name();
        progress.tick(&format!("Queue nowait, {size} B"));
        let q = open_queue(&rt, &dir.join(format!("nowait-{size}")), cap, policy)?;
        let name = format!("ringq Queue nowait ({d})");
        group.push(measure(
            &name,
            &mut QueueNowait(q, Arc::clone(&rt)),
            size,
            n,
        )?);

        progress.tick(&format!("Queue async, {size} B"));
        let q = open_queue(&rt, &dir.join(format!("async-{size}")), cap, policy)?;
        let name = format!("ringq Queue async ({d})");
        group.push(measure(
            &name,
            &mut QueueAsync(q, Arc::clone(&rt)),
            size,
            n,
        )?);

        progress.tick(&format!("Queue fresh default, {size} B"));
        let mut fresh = FreshDefault {
            dir: dir.to_path_buf(),
            rt: Arc::clone(&rt),
            rounds: 0,
            last: None,
        };
        group.push(measure(
            "ringq Queue<Vec<u8>>, fresh file, default builder",
            &mut fresh,
            size,
            n,
        )?);

        group.push(ceiling);
        let top = group.last().map(|r| r.items_per_sec).unwrap_or(0.0);
        for mut r in group {
            r.ratio_to_ceiling = (top > 0.0).then(|| r.items_per_sec / top);
            rows.push(r);
        }
    }

    progress.tick("fdatasync latency");
    let mut fsync = fsync_latency(dir, sync_size)?;
    let (fsync_p50, fsync_p99) = percentiles(&mut fsync);
    let mut disk = Row::new("File append + fdatasync", sync_size, 0.0).puts(&mut fsync);
    disk.items_per_sec = fsync_p50.map_or(0.0, |p| 1e9 / p.max(1) as f64);
    disk.mb_per_sec = disk.items_per_sec * sync_size as f64 / 1e6;

    progress.tick("durable commit latency");
    let mut commit = commit_latency(dir, sync_size)?;
    // Throughput follows the mean (the disk's latency has a long tail), so the group-commit
    // ideal uses it; the p50 is printed beside it.
    let commit_mean = commit.iter().sum::<u64>() / commit.len().max(1) as u64;
    let (commit_p50, _) = percentiles(&mut commit);
    let commit_row = {
        let mut r = Row::new("ringq RingFile push + sync", sync_size, 0.0).puts(&mut commit);
        r.items_per_sec = commit_p50.map_or(0.0, |p| 1e9 / p.max(1) as f64);
        r.mb_per_sec = r.items_per_sec * sync_size as f64 / 1e6;
        r
    };

    let mut group_rows = Vec::new();
    for &p in &concurrency {
        progress.tick(&format!("Sync, {p} putters"));
        let (rate, mut lat) = sync_putters(dir, sync_size, p)?;
        let name = format!(
            "ringq Queue Sync, {p} putter{}",
            if p == 1 { "" } else { "s" }
        );
        group_rows.push((p, Row::new(&name, sync_size, rate).puts(&mut lat)));
    }
    progress.finish();

    let ceiling_small = rows
        .iter()
        .find(|r| r.size == sync_size && r.system.starts_with("VecDeque"))
        .map(|r| r.items_per_sec);
    let mut durable = vec![disk, commit_row];
    durable.extend(group_rows.iter().map(|(_, r)| r.clone()));
    for r in &mut durable {
        r.ratio_to_ceiling = ceiling_small.map(|c| r.items_per_sec / c);
    }
    rows.extend(durable);

    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }

    let clock = clock_cost();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ringq bench: {} CPU(s), files in {}, durability of the Queue rows: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        dir.display(),
        args.durability.name()
    )?;
    writeln!(
        out,
        "items/s: median of {ROUNDS} rounds of N puts then N gets (one item = one put + one get)"
    )?;
    writeln!(
        out,
        "latencies: every operation timed on its own (clock read ~{clock} ns included)\n"
    )?;
    print_table(&mut out, &rows, &count_for)?;

    writeln!(out)?;
    if let (Some(f50), Some(f99)) = (fsync_p50, fsync_p99) {
        writeln!(
            out,
            "disk: {sync_size} B append + fdatasync in {}: p50 {}, p99 {} ({FSYNC_SAMPLES} runs)",
            dir.display(),
            fmt_ns(f50),
            fmt_ns(f99)
        )?;
    }
    if let Some(c50) = commit_p50 {
        writeln!(
            out,
            "one durable commit (RingFile push + sync, {sync_size} B): p50 {}, mean {}",
            fmt_ns(c50),
            fmt_ns(commit_mean)
        )?;
        let one = group_rows
            .iter()
            .find(|(p, _)| *p == 1)
            .map(|(_, r)| r.items_per_sec);
        for (p, r) in &group_rows {
            let ideal = *p as f64 * 1e9 / commit_mean.max(1) as f64;
            let mut line = format!(
                "group commit, {p} putter(s): {} items/s = {:.2} of putters / mean commit ({})",
                fmt_rate(r.items_per_sec),
                r.items_per_sec / ideal,
                fmt_rate(ideal)
            );
            if let Some(one) = one.filter(|_| *p > 1) {
                line += &format!(", {:.1}x one putter", r.items_per_sec / one);
            }
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

fn print_table(
    out: &mut impl Write,
    rows: &[Row],
    count_for: &dyn Fn(usize) -> usize,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<34} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "system",
        "size",
        "N",
        "items/s",
        "MB/s",
        "put p50",
        "put p99",
        "get p50",
        "get p99",
        "vs mem"
    )?;
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), fmt_ns);
    for r in rows {
        let n = if r.system.starts_with("ringq Queue Sync") {
            "3 s".to_string()
        } else if r.system.ends_with("+ sync") || r.system.ends_with("fdatasync") {
            FSYNC_SAMPLES.to_string()
        } else {
            count_for(r.size).to_string()
        };
        writeln!(
            out,
            "{:<34} {:>7} {:>7} {:>9} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>8}",
            r.system,
            fmt_size(r.size),
            n,
            fmt_rate(r.items_per_sec),
            r.mb_per_sec,
            opt(r.put_p50_ns),
            opt(r.put_p99_ns),
            opt(r.get_p50_ns),
            opt(r.get_p99_ns),
            r.ratio_to_ceiling
                .map_or_else(|| "-".to_string(), |x| format!("{x:.3}")),
        )?;
    }
    Ok(())
}

/// What one `Instant::now()` + `elapsed()` pair costs here, in ns.
fn clock_cost() -> u64 {
    let n = 10_000u32;
    let t = Instant::now();
    let mut sink = 0u64;
    for _ in 0..n {
        let s = Instant::now();
        sink = sink.wrapping_add(ns(s.elapsed()));
    }
    black_box(sink);
    ns(t.elapsed()) / u64::from(n)
}

fn fmt_ns(v: u64) -> String {
    match v {
        0..=9_999 => format!("{v} ns"),
        10_000..=999_999 => format!("{:.1} us", v as f64 / 1e3),
        _ => format!("{:.2} ms", v as f64 / 1e6),
    }
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn fmt_size(v: usize) -> String {
    if v >= 1 << 20 && v.is_multiple_of(1 << 20) {
        format!("{} MiB", v >> 20)
    } else if v >= 1024 && v.is_multiple_of(1024) {
        format!("{} KiB", v >> 10)
    } else {
        format!("{v} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("64B"), Ok(64));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn percentiles_of_a_small_sample() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentiles(&mut v), (Some(51), Some(100)));
        assert_eq!(percentiles(&mut []), (None, None));
    }
}
