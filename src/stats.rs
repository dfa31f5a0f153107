//! The numbers an operator watches: [`Stats`] ([`crate::Queue::stats`], [`RingFile::stats`]),
//! and the counters a queue keeps for them (a fixed-size latency histogram of atomics: no
//! allocation, no lock, per commit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ring::RingFile;
use crate::storage::Storage;

/// A snapshot of a queue's state and of what it has done since it was opened.
///
/// From [`crate::Queue::stats`] every field is filled. From [`RingFile::stats`] (and
/// `ringq stats`, which reads a copy of the file without opening it as a queue) the counters
/// only a live [`crate::Queue`] keeps are zero or `None`: `puts`, `gets`, `commit_latency`;
/// `commits` and `grows` are then the ring handle's own.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ringq::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let q: ringq::Queue<u32> = ringq::Queue::create(dir.path().join("q"), 0).await?;
/// q.put(7).await?;
/// q.put(8).await?;
/// let _ = q.get().await?;
/// q.sync().await?; // one durable commit on the flusher thread, timed
/// let s = q.stats();
/// assert_eq!((s.items, s.puts, s.gets), (1, 2, 1));
/// assert_eq!(s.commit_latency.map(|l| l.count), Some(1));
/// assert_eq!(s.oldest_age, None); // records carry no time yet
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Items waiting to be gotten (not counting items handed out by a guarded get and not
    /// yet committed: see `taken`).
    pub items: u64,
    /// Items handed out by a guarded get, neither committed nor released yet (they are still
    /// in the file and come back if the guard is dropped or the process dies).
    pub taken: u64,
    /// Bytes of the ring in use: records, padding, skip records, taken items.
    pub bytes_used: u64,
    /// Ring capacity in bytes (it grows on demand, up to the byte limit if one is set).
    pub capacity: u64,
    /// Age of the oldest item. Always `None` today: records carry no time (the on-disk format
    /// stores none), and an in-memory guess would cover only items put since open. It will be
    /// filled once the format gains a per-record time.
    pub oldest_age: Option<Duration>,
    /// Items put since this queue was opened (`put`, `put_nowait`, `put_from_source`).
    pub puts: u64,
    /// Items handed out since open: by `get`, `get_nowait` and guarded gets. An item handed
    /// out again after its guard was dropped counts again; an item that did not decode counts
    /// too (it was removed and returned as an error).
    pub gets: u64,
    /// Durable commits made since open (the slot writes of `sync`, `Durability::Sync`,
    /// `Periodic`, checkpoints and growth, and the one open makes when it creates or recovers
    /// the file). Group commit makes it far smaller than the number of durable operations.
    pub commits: u64,
    /// Latency of the commits run by the queue's flusher thread since open; `None` before
    /// the first one (and from [`RingFile::stats`]).
    pub commit_latency: Option<CommitLatency>,
    /// Items dropped because the queue was full. Always 0 today: a full queue makes `put`
    /// wait (or `put_nowait` fail); no policy drops items yet.
    pub dropped_full: u64,
    /// Damaged records skipped: those recovery dropped when the file was opened plus those
    /// found damaged on read since.
    pub damaged: u64,
    /// Items moved to a dead-letter file. Always 0 today: dead letters need delivery counts,
    /// which the on-disk format does not store yet.
    pub dead_lettered: u64,
    /// Times the ring grew since open.
    pub grows: u64,
    /// Times the ring shrank since open. Always 0 today: a ring never shrinks.
    pub shrinks: u64,
}

/// Commit latency quantiles from a histogram of log-linear buckets (4 per power of two): each
/// figure is the middle of its bucket, within 12.5% of the true value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitLatency {
    /// Commits measured.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The slowest commit (exact).
    pub max: Duration,
    /// Sum of all measured commits (exact, to the nanosecond).
    pub sum: Duration,
}

impl<S: Storage> RingFile<S> {
    /// What this ring holds and what this handle has done since it was opened (see [`Stats`]
    /// for the fields only a [`crate::Queue`] fills).
    pub fn stats(&self) -> Stats {
        Stats {
            items: self.len(),
            taken: self.taken_count() as u64,
            bytes_used: self.bytes_used(),
            capacity: self.capacity(),
            oldest_age: None,
            puts: 0,
            gets: 0,
            commits: self.commit_count(),
            commit_latency: None,
            dropped_full: 0,
            damaged: self
                .recovery_report()
                .records_dropped
                .saturating_add(self.damaged_count()),
            dead_lettered: 0,
            grows: self.grow_count(),
            shrinks: 0,
        }
    }
}

/// Counters a [`crate::Queue`] keeps beside its ring, updated without its lock.
#[derive(Debug)]
pub(crate) struct QueueCounters {
    /// The ring's next sequence number at open: puts since open are `next_seq` minus this
    /// (sequence numbers are consecutive after open's jump, so no per-put counter is needed).
    seq_at_open: u64,
    gets: AtomicU64,
    latency: Histogram,
}

impl QueueCounters {
    pub(crate) fn new(seq_at_open: u64) -> Self {
        QueueCounters {
            seq_at_open,
            gets: AtomicU64::new(0),
            latency: Histogram::new(),
        }
    }

    /// Counts `n` items handed out.
    pub(crate) fn got(&self, n: u64) {
        self.gets.fetch_add(n, Ordering::Relaxed);
    }

    /// Records one commit's latency.
    pub(crate) fn commit_took(&self, d: Duration) {
        self.latency.record(d);
    }

    /// Completes the ring's own figures (`ring`, taken with its `next_seq` under one lock)
    /// with the queue's counters.
    pub(crate) fn fill(&self, ring: Stats, next_seq: u64) -> Stats {
        Stats {
            puts: next_seq.saturating_sub(self.seq_at_open),
            gets: self.gets.load(Ordering::Relaxed),
            commit_latency: self.latency.summary(),
            ..ring
        }
    }
}

/// Log-linear buckets: values below 4 ns exactly, then 4 buckets per power of two.
const BUCKETS: usize = 252;

/// A histogram of durations in nanoseconds, lock-free and fixed in size.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

fn bucket_of(ns: u64) -> usize {
    if ns < 4 {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros() as usize; // >= 2
    let sub = ((ns >> (msb - 2)) & 3) as usize;
    (msb - 1) * 4 + sub
}

/// The range `[low, high)` of nanoseconds bucket `i` holds.
fn bucket_range(i: usize) -> (u64, u64) {
    if i < 4 {
        return (i as u64, i as u64 + 1);
    }
    let msb = i / 4 + 1;
    let sub = (i % 4) as u64;
    let width = 1u64 << (msb - 2);
    let low = (4 + sub) << (msb - 2);
    (low, low.saturating_add(width))
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The middle of the bucket holding the `q`-quantile (nearest rank) of `counts`.
    fn quantile(counts: &[u64; BUCKETS], total: u64, q: f64) -> u64 {
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, high) = bucket_range(i);
                return low + (high - low) / 2;
            }
        }
        0
    }

    pub(crate) fn summary(&self) -> Option<CommitLatency> {
        // A snapshot: a commit recorded meanwhile may be in some figures and not others.
        let counts: [u64; BUCKETS] =
            std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let max = self.max_ns.load(Ordering::Relaxed);
        Some(CommitLatency {
            count: total,
            p50: Duration::from_nanos(Self::quantile(&counts, total, 0.50).min(max)),
            p99: Duration::from_nanos(Self::quantile(&counts, total, 0.99).min(max)),
            max: Duration::from_nanos(max),
            sum: Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for ns in (0..5000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b < BUCKETS, "{ns} -> {b}");
            assert!(b >= last, "buckets are monotonic");
            last = b;
            let (low, high) = bucket_range(b);
            assert!(
                low <= ns && (ns < high || high == u64::MAX),
                "{ns} in [{low},{high})"
            );
        }
        // Each bucket is at most a quarter of its lower bound wide.
        for i in 4..BUCKETS {
            let (low, high) = bucket_range(i);
            assert!(high - low <= low / 4, "bucket {i}: [{low},{high})");
        }
    }

    #[test]
    fn quantiles_are_within_an_eighth() {
        let h = Histogram::new();
        assert_eq!(h.summary(), None);
        // 1..=1000 µs: p50 = 500 µs, p99 = 990 µs.
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary().unwrap();
        assert_eq!(s.count, 1000);
        assert_eq!(s.max, Duration::from_micros(1000));
        assert_eq!(s.sum, Duration::from_micros(500_500));
        let near = |got: Duration, want: f64| {
            let got = got.as_secs_f64() * 1e6;
            assert!(
                (got - want).abs() <= want / 8.0,
                "got {got} µs, want {want} µs"
            );
        };
        near(s.p50, 500.0);
        near(s.p99, 990.0);
        assert!(s.p50 <= s.p99 && s.p99 <= s.max);
    }

    #[test]
    fn one_slow_commit_in_a_hundred_is_not_the_p99() {
        let h = Histogram::new();
        for _ in 0..99 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_secs(1));
        let s = h.summary().unwrap();
        assert!(s.p99 < Duration::from_micros(120), "{s:?}");
        assert_eq!(s.max, Duration::from_secs(1));
        h.record(Duration::from_secs(1));
        // Now 2 of 101 are slow: the 99th percentile is one of them.
        assert!(h.summary().unwrap().p99 > Duration::from_millis(800));
    }
}
