//! Relaying a ringq file to and from a distributed log (NATS JetStream, Kafka), at least once.
//!
//! The drain direction ([`relay`]) takes a guarded batch from a `Queue<Vec<u8>, Raw>`, hands
//! it to a [`Sink`], and commits the batch in the local queue only once the sink has
//! acknowledged every item. Anything that goes wrong before that (a timeout, a broker restart,
//! Ctrl-C, `kill -9` of the relay) leaves the batch in the queue, and it is sent again with the
//! same identities (`<epoch>-<seq>`), which the broker (or the consumer) uses to drop the
//! repeats.
//!
//! At start the loop asks the sink for the last item it holds from this queue
//! ([`Sink::last_forwarded`]) and commits, without sending, every item up to it: a relay
//! restarted after the broker's duplicate window still adds no duplicate.
//!
//! The engine lives behind the [`Sink`] trait so the loop can be tested with a fake;
//! `nats` (feature `nats`) holds the JetStream sink and the reverse direction (JetStream →
//! local queue), `kafka` (feature `kafka`) the Kafka sink. See `docs/relay.md` for the
//! guarantees and the figures.

#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
#[cfg(feature = "nats")]
pub mod nats;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Queue, Raw};

/// The last item a sink holds from a queue: the queue file's epoch and the item's sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// The random identity of the queue file the item came from.
    pub epoch: u64,
    /// The item's sequence number in that file.
    pub seq: u64,
}

/// A sink's answer to a whole batch: every item is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchAck {
    /// Items the broker already held (it dropped the repeat and acknowledged it).
    pub duplicates: u64,
}

/// Why a sink refused or could not finish a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError {
    /// True when sending the same batch again later may succeed (timeouts, a broker that is
    /// down or restarting); false for configuration errors and items the broker can never take.
    pub retryable: bool,
    /// What happened, for the log.
    pub message: String,
}

impl SinkError {
    /// A transient failure: the relay backs off and sends the batch again.
    pub fn retryable(message: impl Into<String>) -> Self {
        SinkError {
            retryable: true,
            message: message.into(),
        }
    }

    /// A failure that retrying cannot fix: the relay stops, leaving the batch in the queue.
    pub fn permanent(message: impl Into<String>) -> Self {
        SinkError {
            retryable: false,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SinkError {}

/// Where the relay sends items: a distributed log that acknowledges what it stored.
pub trait Sink: Send {
    /// Sends every item of the batch (`(seq, payload)`, oldest first) with the identity
    /// `<epoch>-<seq>`, and returns once the broker has acknowledged all of them. Sending the
    /// same batch again must not store an item twice (the broker deduplicates by identity).
    fn publish_batch(
        &mut self,
        epoch: u64,
        items: &[(u64, Vec<u8>)],
    ) -> impl Future<Output = Result<BatchAck, SinkError>> + Send;

    /// The last item the sink holds on this relay's destination, if any.
    fn last_forwarded(
        &mut self,
    ) -> impl Future<Output = Result<Option<Forwarded>, SinkError>> + Send;
}

/// How the relay loop behaves.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// Most items taken (and in flight) at once.
    pub batch: usize,
    /// First back-off after a failure; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
    /// Return once the queue is empty (instead of waiting for more items).
    pub until_empty: bool,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            batch: 256,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            until_empty: false,
        }
    }
}

/// Counters a relay updates as it runs; read them from another task for progress lines.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Items the broker acknowledged and the queue committed.
    pub relayed: AtomicU64,
    /// Items committed without sending because the broker already held them (restart).
    pub skipped: AtomicU64,
    /// Acknowledgements the broker flagged as duplicates (a re-sent batch).
    pub duplicates: AtomicU64,
    /// Batches sent again after a failure (or start-up reads retried).
    pub retries: AtomicU64,
    /// True while the last exchange with the broker succeeded.
    pub connected: AtomicBool,
    last_ok: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
}

impl RelayStats {
    /// The last failure seen (cleared by the next success).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Time since the broker last acknowledged something (None before the first success).
    pub fn since_last_ack(&self) -> Option<Duration> {
        self.last_ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    fn ok(&self) {
        self.connected.store(true, Ordering::Relaxed);
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn failed(&self, e: &SinkError) {
        self.connected.store(false, Ordering::Relaxed);
        self.retries.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.message.clone());
    }
}

/// Why [`relay`] stopped with an error.
#[derive(Debug)]
pub enum RelayError {
    /// The local queue failed.
    Queue(crate::Error),
    /// The sink refused for good (configuration, an item the broker can never take). The
    /// batch stays in the queue.
    Sink(SinkError),
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::Queue(e) => write!(f, "local queue: {e}"),
            RelayError::Sink(e) => write!(f, "broker: {e}"),
        }
    }
}

impl std::error::Error for RelayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RelayError::Queue(e) => Some(e),
            RelayError::Sink(e) => Some(e),
        }
    }
}

impl From<crate::Error> for RelayError {
    fn from(e: crate::Error) -> Self {
        RelayError::Queue(e)
    }
}

/// Sleeps for the back-off, or returns false if `stop` fired first.
async fn backoff<F: Future<Output = ()> + Unpin>(
    d: &mut Duration,
    max: Duration,
    stop: &mut F,
) -> bool {
    let wait = *d;
    *d = (*d * 2).min(max);
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stop => false,
    }
}

/// Drains `queue` into `sink` until `stop` completes (or, with
/// [`RelayOptions::until_empty`], the queue is empty). Returns `Ok` on a clean stop.
///
/// Each batch is committed in the queue only after the sink acknowledged all of it; a failed
/// batch is sent again, whole and with the same identities, after a back-off (100 ms doubling
/// to 5 s by default). Stopping while a batch is in flight releases it: it is the first thing
/// the next relay sends (and the broker's deduplication, or the start-up skip, drops what it
/// already had).
///
/// # Cancel safety
/// Dropping the future is as safe as `stop`: an uncommitted batch is released.
pub async fn relay<S, F>(
    queue: &Queue<Vec<u8>, Raw>,
    sink: &mut S,
    opts: &RelayOptions,
    stats: &RelayStats,
    stop: F,
) -> Result<(), RelayError>
where
    S: Sink,
    F: Future<Output = ()>,
{
    let mut stop = std::pin::pin!(stop);
    let mut stop = futures::future::FutureExt::fuse(stop.as_mut());
    let mut delay = opts.min_backoff;

    // Where the broker stands: skip what it already holds.
    let mut hwm = loop {
        let got = tokio::select! {
            r = sink.last_forwarded() => r,
            _ = &mut stop => return Ok(()),
        };
        match got {
            Ok(h) => {
                stats.ok();
                break h.filter(|h| h.epoch == queue.epoch());
            }
            Err(e) if e.retryable => {
                log::warn!("relay: cannot read the broker's last item yet: {e}");
                stats.failed(&e);
                if !backoff(&mut delay, opts.max_backoff, &mut stop).await {
                    return Ok(());
                }
            }
            Err(e) => return Err(RelayError::Sink(e)),
        }
    };
    delay = opts.min_backoff;

    loop {
        if opts.until_empty && queue.qsize() == 0 {
            return Ok(());
        }
        let batch = tokio::select! {
            b = queue.get_guarded_batch(opts.batch) => b?,
            _ = &mut stop => return Ok(()),
        };
        let epoch = batch.epoch();
        // Items the broker already holds (a relay restarted after sending them) come first.
        let skip = match hwm {
            Some(h) => batch
                .items()
                .iter()
                .take_while(|(seq, _)| *seq <= h.seq)
                .count(),
            None => 0,
        };
        if skip < batch.len() {
            hwm = None; // sequences only grow: nothing later is below the mark
        }
        let to_send = &batch.items()[skip..];
        if !to_send.is_empty() {
            loop {
                let sent = tokio::select! {
                    r = sink.publish_batch(epoch, to_send) => r,
                    _ = &mut stop => return Ok(()), // drops the batch: released
                };
                match sent {
                    Ok(ack) => {
                        stats.ok();
                        stats
                            .duplicates
                            .fetch_add(ack.duplicates, Ordering::Relaxed);
                        delay = opts.min_backoff;
                        break;
                    }
                    Err(e) if e.retryable => {
                        log::warn!(
                            "relay: batch of {} not acknowledged, sending it again: {e}",
                            to_send.len()
                        );
                        stats.failed(&e);
                        if !backoff(&mut delay, opts.max_backoff, &mut stop).await {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(RelayError::Sink(e)),
                }
            }
        }
        let sent = to_send.len() as u64;
        batch.commit().await?;
        stats.skipped.fetch_add(skip as u64, Ordering::Relaxed);
        stats.relayed.fetch_add(sent, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
