//! The relay loop against a fake sink that deduplicates by identity like JetStream and
//! injects failures: lost acknowledgements (stored, then an error), refusals, and restarts.

use super::*;
use crate::{Queue, Raw};
use std::collections::HashSet;

/// A broker model: a log, a duplicate filter keyed by `<epoch>-<seq>`, and a fault schedule.
#[derive(Default)]
struct FakeSink {
    log: Vec<(u64, u64, Vec<u8>)>,
    ids: HashSet<(u64, u64)>,
    calls: u64,
    /// Every `lose_every`-th call stores the first half of the batch, then fails.
    lose_every: u64,
    /// Every `refuse_every`-th call stores nothing and fails.
    refuse_every: u64,
    /// Answer `last_forwarded` from the log (false: the hwm read is disabled).
    report_last: bool,
    /// Forget the dedup filter (the broker's window has passed).
    forget_ids: bool,
}

impl FakeSink {
    fn store(&mut self, epoch: u64, seq: u64, p: &[u8]) -> bool {
        if !self.forget_ids && !self.ids.insert((epoch, seq)) {
            return false;
        }
        self.log.push((epoch, seq, p.to_vec()));
        true
    }
}

impl Sink for FakeSink {
    async fn publish_batch(
        &mut self,
        epoch: u64,
        items: &[(u64, Vec<u8>)],
    ) -> Result<BatchAck, SinkError> {
        self.calls += 1;
        if self.refuse_every > 0 && self.calls.is_multiple_of(self.refuse_every) {
            return Err(SinkError::retryable("refused"));
        }
        let lose = self.lose_every > 0 && self.calls.is_multiple_of(self.lose_every);
        let n = if lose {
            items.len().div_ceil(2)
        } else {
            items.len()
        };
        let mut dups = 0;
        for (seq, p) in &items[..n] {
            if !self.store(epoch, *seq, p) {
                dups += 1;
            }
        }
        if lose {
            return Err(SinkError::retryable("ack lost"));
        }
        Ok(BatchAck { duplicates: dups })
    }

    async fn last_forwarded(&mut self) -> Result<Option<Forwarded>, SinkError> {
        if !self.report_last {
            return Ok(None);
        }
        Ok(self.log.last().map(|(epoch, seq, _)| Forwarded {
            epoch: *epoch,
            seq: *seq,
        }))
    }
}

fn fast() -> RelayOptions {
    RelayOptions {
        batch: 7,
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        until_empty: true,
    }
}

async fn filled(dir: &tempfile::TempDir, n: u32) -> Queue<Vec<u8>, Raw> {
    let q = Queue::<Vec<u8>, Raw>::builder(dir.path().join("q"))
        .open()
        .await
        .unwrap();
    for i in 0..n {
        q.put(i.to_le_bytes().to_vec()).await.unwrap();
    }
    q
}

fn payloads(log: &[(u64, u64, Vec<u8>)]) -> Vec<u32> {
    log.iter()
        .map(|(_, _, p)| u32::from_le_bytes(p[..4].try_into().unwrap()))
        .collect()
}

#[tokio::test]
async fn every_item_once_in_order_despite_lost_acks_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let q = filled(&dir, 1000).await;
    let mut sink = FakeSink {
        lose_every: 3,
        refuse_every: 5,
        ..Default::default()
    };
    let stats = RelayStats::default();
    relay(&q, &mut sink, &fast(), &stats, std::future::pending())
        .await
        .unwrap();
    assert_eq!(payloads(&sink.log), (0..1000).collect::<Vec<_>>());
    assert_eq!(q.qsize(), 0);
    assert_eq!(stats.relayed.load(Ordering::Relaxed), 1000);
    assert!(stats.retries.load(Ordering::Relaxed) > 0);
    assert!(
        stats.duplicates.load(Ordering::Relaxed) > 0,
        "lost acks make the re-send hit the filter"
    );
}

#[tokio::test]
async fn a_restart_after_the_window_skips_what_the_broker_holds() {
    let dir = tempfile::tempdir().unwrap();
    let q = filled(&dir, 100).await;
    // The first relay sends a batch, the broker stores it, and the relay dies before committing.
    let mut sink = FakeSink {
        report_last: true,
        forget_ids: true,
        ..Default::default()
    };
    {
        let batch = q.get_guarded_batch(40).await.unwrap();
        sink.publish_batch(batch.epoch(), batch.items())
            .await
            .unwrap();
        drop(batch); // released, as a crash would
    }
    assert_eq!(q.qsize(), 100);
    let stats = RelayStats::default();
    relay(&q, &mut sink, &fast(), &stats, std::future::pending())
        .await
        .unwrap();
    assert_eq!(
        payloads(&sink.log),
        (0..100).collect::<Vec<_>>(),
        "no duplicate although the filter forgot"
    );
    assert_eq!(stats.skipped.load(Ordering::Relaxed), 40);
    assert_eq!(stats.relayed.load(Ordering::Relaxed), 60);
}

#[tokio::test]
async fn without_the_mark_and_the_filter_a_restart_duplicates() {
    // The control for the test above: the skip is what prevents the duplicates.
    let dir = tempfile::tempdir().unwrap();
    let q = filled(&dir, 100).await;
    let mut sink = FakeSink {
        report_last: false,
        forget_ids: true,
        ..Default::default()
    };
    {
        let batch = q.get_guarded_batch(40).await.unwrap();
        sink.publish_batch(batch.epoch(), batch.items())
            .await
            .unwrap();
    }
    relay(
        &q,
        &mut sink,
        &fast(),
        &RelayStats::default(),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(sink.log.len(), 140);
}

#[tokio::test]
async fn another_queue_s_mark_skips_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let q = filled(&dir, 10).await;
    let mut sink = FakeSink {
        report_last: true,
        ..Default::default()
    };
    sink.store(q.epoch() ^ 1, 1_000, b"other");
    relay(
        &q,
        &mut sink,
        &fast(),
        &RelayStats::default(),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(sink.log.len(), 11);
}

#[tokio::test]
async fn stop_while_failing_keeps_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let q = filled(&dir, 10).await;
    let mut sink = FakeSink {
        refuse_every: 1,
        ..Default::default()
    };
    let opts = RelayOptions {
        until_empty: false,
        ..fast()
    };
    let stop = tokio::time::sleep(Duration::from_millis(50));
    relay(&q, &mut sink, &opts, &RelayStats::default(), stop)
        .await
        .unwrap();
    assert_eq!(q.qsize(), 10, "the refused batch is back in the queue");
    assert!(sink.calls > 1);
}

#[tokio::test]
async fn a_permanent_error_stops_and_keeps_the_batch() {
    struct Refuse;
    impl Sink for Refuse {
        async fn publish_batch(
            &mut self,
            _: u64,
            _: &[(u64, Vec<u8>)],
        ) -> Result<BatchAck, SinkError> {
            Err(SinkError::permanent("too large"))
        }
        async fn last_forwarded(&mut self) -> Result<Option<Forwarded>, SinkError> {
            Ok(None)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let q = filled(&dir, 3).await;
    let err = relay(
        &q,
        &mut Refuse,
        &fast(),
        &RelayStats::default(),
        std::future::pending(),
    )
    .await;
    assert!(matches!(err, Err(RelayError::Sink(ref e)) if !e.retryable));
    assert_eq!(q.qsize(), 3);
}
