//! ringq beside the alternatives, the same work in the same run.
//!
//! `cargo bench --bench compare` (about 8 minutes on 2 cores). Groups:
//! - `fresh_default/<size>`: the default path, what a new user does: a fresh file each round,
//!   `Queue::<Vec<u8>>::create(path, 0)` (bincode codec, 256 KiB start, growth), N puts then N
//!   gets (64 B x 200 000, 4 KiB x 20 000); beside it the same pre-sized and with `Raw`, and
//!   yaque, queue-file and `VecDeque` fresh each round too. Every other group is steady state.
//! - `n_then_n/<size>`: enqueue N records, then dequeue N (N = 10 000, fewer above 4 KiB so one
//!   iteration moves at most 32 MiB). Buffered modes: every system writes its file (it
//!   survives `kill -9`), nothing waits for the disk.
//! - `durable/<size>`: the same with every operation durable before the next starts.
//! - `spsc/<size>`: one producer thread and one consumer thread running together.
//! - `sync_putters`: `Durability::Sync` with 1, 16 and 256 concurrent putters on a multi-thread
//!   runtime, and `commit_latency`: one durable commit, measured in the same run.
//!
//! Systems: `ringq_ring` ([`RingFile`]), `ringq_queue_nowait` and `ringq_queue_async`
//! (`Queue<Vec<u8>, Raw>`: the `Raw` codec stores the bytes as they are), `yaque` 0.6,
//! `queue_file` 1.4, `tokio_mpsc` (unbounded) and `vecdeque` (in-memory ceilings), and
//! `file_fdatasync` (append + `fdatasync` per record: the durable ceiling).
//!
//! Modes of the competitors: `queue_file` buffered = `set_sync_writes(false)` (its default
//! is a `sync_data` per write), durable = its default. `yaque` never calls fsync; its buffered
//! mode saves the reader state only on drop, its "durable" mode saves it after every read
//! (`save_every_nth(Some(1))`), which is as durable as yaque gets.
//!
//! Files go to a temporary directory under `RINGQ_BENCH_DIR` (default: the system temp dir).

// `criterion_group!` and `criterion_main!` generate undocumented functions.
#![allow(missing_docs)]

use std::collections::VecDeque;
use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion,
    SamplingMode, Throughput,
};
use ringq::{Durability, Queue, Raw, RingFile, RingOptions};

const SIZES: [usize; 4] = [64, 1024, 4096, 64 * 1024];
const DURABLE_SIZES: [usize; 2] = [64, 4096];
/// Records per durable iteration: each costs at least one flush.
const DURABLE_N: usize = 100;

type RawQueue = Queue<Vec<u8>, Raw>;

fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("RINGQ_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory")
}

/// Records per `n_then_n` iteration for a record size.
fn count_for(size: usize) -> usize {
    (32 * 1024 * 1024 / size).min(10_000)
}

/// Ring capacity that holds `n` records of `size` without growing.
fn capacity_for(size: usize, n: usize) -> u64 {
    (((size + 32) * n) as u64 * 5 / 4).next_power_of_two()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn open_queue(rt: &tokio::runtime::Runtime, path: &Path, cap: u64, d: Durability) -> RawQueue {
    rt.block_on(
        RawQueue::builder(path)
            .initial_capacity(cap)
            .durability(d)
            .open(),
    )
    .expect("open queue")
}

// ------------------------------------------------------------------------- one adapter each

/// One system under test: enqueue `n` copies of `payload`, then dequeue them all.
trait System {
    fn n_then_n(&mut self, payload: &[u8], n: usize);
}

struct Ring(RingFile, Vec<u8>, bool);
impl System for Ring {
    fn n_then_n(&mut self, payload: &[u8], n: usize) {
        let durable = self.2;
        for _ in 0..n {
            self.0.push(payload).expect("push");
            if durable {
                self.0.sync().expect("sync");
            }
        }
        for _ in 0..n {
            black_box(self.0.pop_into(&mut self.1).expect("pop"));
            if durable {
                self.0.sync().expect("sync");
            }
        }
    }
}

struct QueueNowait(RawQueue, tokio::runtime::Runtime);
impl System for QueueNowait {
    fn n_then_n(&mut self, payload: &[u8], n: usize) {
        let _enter = self.1.enter();
        for _ in 0..n {
            self.0.put_nowait(payload.to_vec()).expect("put");
        }
        for _ in 0..n {
            black_box(self.0.get_nowait().expect("get"));
        }
    }
}

struct QueueAsync(RawQueue, tokio::runtime::Runtime);
impl System for QueueAsync {
    fn n_then_n(&mut self, payload: &[u8], n: usize) {
        let q = &self.0;
        self.1.block_on(async {
            for _ in 0..n {
                q.put(payload.to_vec()).await.expect("put");
            }
            for _ in 0..n {
                black_box(q.get().await.expect("get"));
            }
        });
    }
}

struct Yaque(yaque::Sender, yaque::Receiver);
impl System for Yaque {
    fn n_then_n(&mut self, payload: &[u8], n: usize) {
        for _ in 0..n {
            self.0.try_send(payload).expect("send");
        }
        for _ in 0..n {
            let guard = self.1.try_recv().expect("recv");
            black_box(guard.try_into_inner().expect("commit"));
        }
    }
}

struct QFile(queue_file::QueueFile);
impl System for QFile {
    fn n_then_n(&mut self, payload: &[u8], n: usize) {
        for _ in 0..n {
            self.0.add(payload).expect("add");
        }
        for _ in 0..n {
            black_box(self.0.peek().expect("peek"));
            self.0.remove().expect("remove");
        }
    }
}

struct Mpsc(
    tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
);
impl System for Mpsc {
    fn n_then_n(&mut self, payload: &[u8], n: usize) {
        for _ in 0..n {
            self.0.send(payload.to_vec()).expect("send");
        }
        for _ in 0..n {
            black_box(self.1.try_recv().expect("recv"));
        }
    }
}

struct Deque(VecDeque<Vec<u8>>);
impl System for Deque {
    fn n_then_n(&mut self, payload: &[u8], n: usize) {
        for _ in 0..n {
            self.0.push_back(payload.to_vec());
        }
        for _ in 0..n {
            black_box(self.0.pop_front());
        }
    }
}

/// Append + `fdatasync` per record, then read them back: the durable ceiling.
struct FileSync(File, Vec<u8>);
impl System for FileSync {
    fn n_then_n(&mut self, payload: &[u8], n: usize) {
        let f = &mut self.0;
        for _ in 0..n {
            f.write_all(&(payload.len() as u32).to_le_bytes())
                .expect("write");
            f.write_all(payload).expect("write");
            f.sync_data().expect("fdatasync");
        }
        f.seek(SeekFrom::Start(0)).expect("seek");
        let mut len = [0u8; 4];
        for _ in 0..n {
            f.read_exact(&mut len).expect("read");
            self.1.resize(u32::from_le_bytes(len) as usize, 0);
            f.read_exact(&mut self.1).expect("read");
        }
        f.set_len(0).expect("truncate");
        f.seek(SeekFrom::Start(0)).expect("seek");
    }
}

fn yaque_pair(dir: &Path, durable: bool) -> Yaque {
    let tx = yaque::SenderBuilder::new().open(dir).expect("yaque sender");
    let rx = yaque::ReceiverBuilder::new()
        .save_every_nth(durable.then_some(1))
        .save_every(None)
        .open(dir)
        .expect("yaque receiver");
    Yaque(tx, rx)
}

fn queue_file(path: &Path, durable: bool) -> QFile {
    let mut q = queue_file::QueueFile::open(path).expect("queue-file");
    q.set_sync_writes(durable);
    QFile(q)
}

fn bench_system(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    size: usize,
    n: usize,
    sys: &mut dyn System,
) {
    let payload = vec![0x5au8; size];
    g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
        b.iter(|| sys.n_then_n(&payload, n))
    });
}

fn n_then_n(c: &mut Criterion) {
    for size in SIZES {
        let n = count_for(size);
        let mut g = c.benchmark_group(format!("n_then_n/{size}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2))
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(n as u64));
        let dir = tempdir();
        let cap = capacity_for(size, n);
        let opts = RingOptions::default().initial_capacity(cap);
        let ring = RingFile::open(dir.path().join("ring"), &opts).expect("ring");
        bench_system(
            &mut g,
            "ringq_ring",
            size,
            n,
            &mut Ring(ring, Vec::new(), false),
        );
        let rt = current_thread();
        let q = open_queue(&rt, &dir.path().join("qn"), cap, Durability::Buffered);
        bench_system(
            &mut g,
            "ringq_queue_nowait",
            size,
            n,
            &mut QueueNowait(q, rt),
        );
        let rt = current_thread();
        let q = open_queue(&rt, &dir.path().join("qa"), cap, Durability::Buffered);
        bench_system(&mut g, "ringq_queue_async", size, n, &mut QueueAsync(q, rt));
        let ydir = dir.path().join("yaque");
        bench_system(&mut g, "yaque", size, n, &mut yaque_pair(&ydir, false));
        let qf = dir.path().join("queue-file");
        bench_system(&mut g, "queue_file", size, n, &mut queue_file(&qf, false));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        bench_system(&mut g, "tokio_mpsc", size, n, &mut Mpsc(tx, rx));
        let mut deque = Deque(VecDeque::with_capacity(n));
        bench_system(&mut g, "vecdeque", size, n, &mut deque);
        g.finish();
    }
}

fn durable(c: &mut Criterion) {
    for size in DURABLE_SIZES {
        let n = DURABLE_N;
        let mut g = c.benchmark_group(format!("durable/{size}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(3))
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(n as u64));
        let dir = tempdir();
        let cap = capacity_for(size, n);
        let opts = RingOptions::default().initial_capacity(cap);
        let ring = RingFile::open(dir.path().join("ring"), &opts).expect("ring");
        bench_system(
            &mut g,
            "ringq_ring_sync_each",
            size,
            n,
            &mut Ring(ring, Vec::new(), true),
        );
        let rt = current_thread();
        let q = open_queue(&rt, &dir.path().join("qs"), cap, Durability::Sync);
        bench_system(
            &mut g,
            "ringq_queue_async_sync",
            size,
            n,
            &mut QueueAsync(q, rt),
        );
        let ydir = dir.path().join("yaque");
        bench_system(
            &mut g,
            "yaque_save_each",
            size,
            n,
            &mut yaque_pair(&ydir, true),
        );
        let qf = dir.path().join("queue-file");
        bench_system(
            &mut g,
            "queue_file_sync_writes",
            size,
            n,
            &mut queue_file(&qf, true),
        );
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("append"))
            .expect("file");
        bench_system(
            &mut g,
            "file_fdatasync",
            size,
            n,
            &mut FileSync(f, Vec::new()),
        );
        g.finish();
    }
}

// ------------------------------------------------------------------------- producer + consumer

/// Runs `produce` and `consume` on two threads at once and returns the elapsed time.
fn together(produce: impl FnOnce() + Send, consume: impl FnOnce() + Send) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(produce);
        s.spawn(consume);
    });
    start.elapsed()
}

/// A single-owner system shared by a mutex; the consumer spins (yielding) while it is empty.
fn spsc_locked<T: Send>(
    sys: &Mutex<T>,
    n: usize,
    push: impl Fn(&mut T) + Sync,
    pop: impl Fn(&mut T) -> bool + Sync,
) -> Duration {
    together(
        || {
            for _ in 0..n {
                push(&mut sys.lock().expect("lock"));
            }
        },
        || {
            let mut got = 0;
            while got < n {
                if pop(&mut sys.lock().expect("lock")) {
                    got += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        },
    )
}

fn spsc(c: &mut Criterion) {
    for size in SIZES {
        let n = count_for(size);
        let mut g = c.benchmark_group(format!("spsc/{size}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2))
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(n as u64));
        let payload = vec![0x5au8; size];
        let p = &payload;
        let dir = tempdir();
        let cap = capacity_for(size, n);

        let opts = RingOptions::default().initial_capacity(cap);
        let ring = Mutex::new((
            RingFile::open(dir.path().join("ring"), &opts).expect("ring"),
            Vec::new(),
        ));
        g.bench_function(BenchmarkId::new("ringq_ring_mutex", size), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        spsc_locked(
                            &ring,
                            n,
                            |(r, _)| {
                                r.push(p).expect("push");
                            },
                            |(r, buf)| r.pop_into(buf).expect("pop").is_some(),
                        )
                    })
                    .sum()
            })
        });
        drop(ring);

        let rt = current_thread();
        let q = open_queue(&rt, &dir.path().join("q"), cap, Durability::Buffered);
        g.bench_function(BenchmarkId::new("ringq_queue", size), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        together(
                            || {
                                for _ in 0..n {
                                    q.put_nowait(p.to_vec()).expect("put");
                                }
                            },
                            || {
                                current_thread().block_on(async {
                                    for _ in 0..n {
                                        black_box(q.get().await.expect("get"));
                                    }
                                })
                            },
                        )
                    })
                    .sum()
            })
        });
        drop(q);

        let Yaque(mut tx, mut rx) = yaque_pair(&dir.path().join("yaque"), false);
        g.bench_function(BenchmarkId::new("yaque", size), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        together(
                            || {
                                for _ in 0..n {
                                    tx.try_send(p).expect("send");
                                }
                            },
                            || {
                                current_thread().block_on(async {
                                    for _ in 0..n {
                                        let g = rx.recv().await.expect("recv");
                                        black_box(g.try_into_inner().expect("commit"));
                                    }
                                })
                            },
                        )
                    })
                    .sum()
            })
        });
        drop((tx, rx));

        let qf = Mutex::new(queue_file(&dir.path().join("queue-file"), false).0);
        g.bench_function(BenchmarkId::new("queue_file_mutex", size), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        spsc_locked(
                            &qf,
                            n,
                            |q| q.add(p).expect("add"),
                            |q| match q.peek().expect("peek") {
                                Some(v) => {
                                    black_box(v);
                                    q.remove().expect("remove");
                                    true
                                }
                                None => false,
                            },
                        )
                    })
                    .sum()
            })
        });
        drop(qf);

        g.bench_function(BenchmarkId::new("tokio_mpsc", size), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                        together(
                            move || {
                                for _ in 0..n {
                                    tx.send(p.to_vec()).expect("send");
                                }
                            },
                            move || {
                                for _ in 0..n {
                                    black_box(rx.blocking_recv().expect("recv"));
                                }
                            },
                        )
                    })
                    .sum()
            })
        });

        let deque = Mutex::new(VecDeque::with_capacity(n));
        g.bench_function(BenchmarkId::new("vecdeque_mutex", size), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        spsc_locked(
                            &deque,
                            n,
                            |d| d.push_back(p.to_vec()),
                            |d| d.pop_front().map(black_box).is_some(),
                        )
                    })
                    .sum()
            })
        });
        g.finish();
    }
}

// ------------------------------------------------------------------------- the default path

/// A queue and its file: dropped (closed) then deleted outside the clock.
struct Fresh<T>(Option<T>, std::path::PathBuf);
impl<T> Drop for Fresh<T> {
    fn drop(&mut self) {
        drop(self.0.take());
        let _ = std::fs::remove_file(&self.1);
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// What a new user does: a fresh file each round, N puts then N gets, nothing tuned.
/// `Queue<Vec<u8>>` through `Queue::create(path, 0)` is the default path (bincode, 256 KiB
/// start, growth); the pre-sized and `Raw` rows show what growth and the codec cost.
/// Opening is inside the clock, dropping (the clean close) and deleting are not.
fn fresh(c: &mut Criterion) {
    for (size, n) in [(64usize, 200_000usize), (4096, 20_000)] {
        let mut g = c.benchmark_group(format!("fresh_default/{size}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(4))
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(n as u64));
        let dir = tempdir();
        let payload = vec![0x5au8; size];
        let cap = capacity_for(size, n);
        let rt = current_thread();
        let round = std::cell::Cell::new(0u64);
        let fresh_path = |name: &str| {
            round.set(round.get() + 1);
            dir.path().join(format!("{name}-{}", round.get()))
        };
        macro_rules! queue_row {
            ($name:expr, $q:ty, $open:expr) => {
                g.bench_function(BenchmarkId::new($name, size), |b| {
                    b.iter_batched(
                        || fresh_path($name),
                        |path| {
                            rt.block_on(async {
                                let q: $q = $open(path.clone()).await.expect("open");
                                for _ in 0..n {
                                    q.put(payload.clone()).await.expect("put");
                                }
                                for _ in 0..n {
                                    black_box(q.get().await.expect("get"));
                                }
                                Fresh(Some(q), path)
                            })
                        },
                        BatchSize::PerIteration,
                    )
                });
            };
        }
        queue_row!("ringq_default", Queue<Vec<u8>>, |p| Queue::create(p, 0));
        queue_row!("ringq_raw_default_start", RawQueue, |p| RawQueue::builder(
            p
        )
        .open());
        queue_row!("ringq_presized", Queue<Vec<u8>>, |p| {
            Queue::<Vec<u8>>::builder(p).initial_capacity(cap).open()
        });
        queue_row!("ringq_raw_presized", RawQueue, |p| RawQueue::builder(p)
            .initial_capacity(cap)
            .open());
        g.bench_function(BenchmarkId::new("yaque", size), |b| {
            b.iter_batched(
                || fresh_path("yaque"),
                |path| {
                    let mut y = yaque_pair(&path, false);
                    y.n_then_n(&payload, n);
                    Fresh(Some(y), path)
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function(BenchmarkId::new("queue_file", size), |b| {
            b.iter_batched(
                || fresh_path("queue-file"),
                |path| {
                    let mut q = queue_file(&path, false);
                    q.n_then_n(&payload, n);
                    Fresh(Some(q), path)
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function(BenchmarkId::new("vecdeque", size), |b| {
            b.iter(|| {
                let mut d = Deque(VecDeque::new());
                d.n_then_n(&payload, n);
                d
            })
        });
        g.finish();
    }
}

// ------------------------------------------------------------------------- group commit

fn sync_putters(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync_putters");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat);
    let dir = tempdir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let payload = vec![0x5au8; 64];
    let q = open_queue(&rt, &dir.path().join("sync"), 1 << 22, Durability::Sync);
    for putters in [1usize, 16, 256] {
        // Each putter puts `each` items one after the other, each waiting for its commit.
        let each = (256 / putters).clamp(4, 64);
        let items = putters * each;
        g.throughput(Throughput::Elements(items as u64));
        g.bench_function(BenchmarkId::new("putters", putters), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    rt.block_on(async {
                        let tasks: Vec<_> = (0..putters)
                            .map(|_| {
                                let q = q.clone();
                                let p = payload.clone();
                                tokio::spawn(async move {
                                    for _ in 0..each {
                                        q.put(p.clone()).await.expect("put");
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.expect("putter");
                        }
                    });
                    total += start.elapsed();
                    // Drain outside the clock so the file stays small.
                    while q.get_nowait().is_ok() {}
                    rt.block_on(q.sync()).expect("sync");
                }
                total
            })
        });
    }

    // The latency of one durable commit of one 64 B record: ring push + sync.
    g.throughput(Throughput::Elements(1));
    let opts = RingOptions::default().initial_capacity(1 << 20);
    let mut ring = RingFile::open(dir.path().join("commit"), &opts).expect("ring");
    let mut buf = Vec::new();
    g.bench_function("commit_latency/ring_push_sync", |b| {
        b.iter(|| {
            ring.push(&payload).expect("push");
            ring.sync().expect("sync");
            ring.pop_into(&mut buf).expect("pop");
        })
    });
    g.finish();
}

criterion_group!(benches, fresh, n_then_n, durable, spsc, sync_putters);
criterion_main!(benches);
