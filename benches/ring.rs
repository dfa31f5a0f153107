//! The ring file alone: push + pop of 64 B, 1 KiB and 64 KiB records on a file ring, beside a
//! `VecDeque<Vec<u8>>` doing the same work in memory; and the durable commit (`sync`) after 1,
//! 16 and 256 pushes. `memcpy_once` is the bandwidth reference: one plain copy per record
//! (the ring makes two: into the map on push, out of it on pop).
//!
//! `cargo bench --bench ring`. The files live in a temporary directory under
//! `RINGQ_BENCH_DIR` (default: the system temp dir; it must be a real disk for `sync`).

// `criterion_group!` and `criterion_main!` generate undocumented functions.
#![allow(missing_docs)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringq::{RingFile, RingOptions};

/// Records pushed, then popped, per iteration.
const BATCH: usize = 256;
const SIZES: [usize; 3] = [64, 1024, 64 * 1024];

fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("RINGQ_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory")
}

/// A ring big enough for one batch, already grown and touched, so the loop measures the
/// steady state (no growth, no first-touch page faults).
fn warmed_ring(dir: &tempfile::TempDir, size: usize) -> RingFile {
    let cap = ((size + 64) * BATCH * 2).next_power_of_two() as u64;
    let opts = RingOptions::default().initial_capacity(cap);
    let mut ring = RingFile::open(dir.path().join("bench.ring"), &opts).expect("open ring");
    let payload = vec![7u8; size];
    let mut buf = Vec::with_capacity(size);
    for _ in 0..4 {
        for _ in 0..BATCH {
            ring.push(&payload).expect("push");
        }
        while ring.pop_into(&mut buf).expect("pop").is_some() {}
    }
    ring
}

fn push_pop(c: &mut Criterion) {
    let mut g = c.benchmark_group("push_pop");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for size in SIZES {
        g.throughput(Throughput::Bytes((size * BATCH) as u64));
        let payload = vec![7u8; size];

        let dir = tempdir();
        let mut ring = warmed_ring(&dir, size);
        let mut buf = Vec::with_capacity(size);
        g.bench_with_input(BenchmarkId::new("ring_pop_into", size), &size, |b, _| {
            b.iter(|| {
                for _ in 0..BATCH {
                    ring.push(&payload).expect("push");
                }
                for _ in 0..BATCH {
                    black_box(ring.pop_into(&mut buf).expect("pop"));
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("ring_pop_with", size), &size, |b, _| {
            b.iter(|| {
                for _ in 0..BATCH {
                    ring.push(&payload).expect("push");
                }
                for _ in 0..BATCH {
                    // Read the payload where it lies (zero copy): sum a byte per cache line.
                    let r =
                        ring.pop_with(|_, p| p.iter().step_by(64).map(|&b| b as u64).sum::<u64>());
                    black_box(r.expect("pop"));
                }
            })
        });
        drop(ring);

        // The bandwidth reference: one plain copy per record into a region as big as the
        // batch (a push + pop through the ring is two copies of each record).
        let mut region = vec![0u8; size * BATCH];
        g.bench_with_input(BenchmarkId::new("memcpy_once", size), &size, |b, _| {
            b.iter(|| {
                for chunk in region.chunks_exact_mut(size) {
                    chunk.copy_from_slice(&payload);
                }
                black_box(&mut region);
            })
        });
        drop(region);

        let mut deque: VecDeque<Vec<u8>> = VecDeque::with_capacity(BATCH);
        g.bench_with_input(BenchmarkId::new("vecdeque", size), &size, |b, _| {
            b.iter(|| {
                for _ in 0..BATCH {
                    deque.push_back(payload.to_vec());
                }
                for _ in 0..BATCH {
                    black_box(deque.pop_front());
                }
            })
        });
    }
    g.finish();
}

fn sync_after(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync_after");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let payload = [7u8; 64];
    for pushes in [1usize, 16, 256] {
        g.throughput(Throughput::Elements(pushes as u64));
        let dir = tempdir();
        let mut ring = warmed_ring(&dir, 64);
        let mut buf = Vec::with_capacity(64);
        g.bench_with_input(BenchmarkId::new("pushes", pushes), &pushes, |b, &n| {
            b.iter(|| {
                for _ in 0..n {
                    ring.push(&payload).expect("push");
                }
                ring.sync().expect("sync");
                // Keep the ring from growing; the pops are committed by the next sync.
                for _ in 0..n {
                    ring.pop_into(&mut buf).expect("pop");
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, push_pop, sync_after);
criterion_main!(benches);
