//! The Kafka relay against librdkafka's built-in mock cluster (`rdkafka::mocking`): an
//! in-process Kafka protocol implementation listening on loopback. No Kafka broker can be
//! installed on these machines, so this is what the relay is tested against.
//!
//! Cases: relay everything and read the topic back; a relay task aborted mid-run and
//! restarted; a crash after the broker stored a batch but before the queue committed it
//! (with a control that disables the start-up mark); brokers down mid-run; injected produce
//! errors, retriable and permanent; an item larger than `message.max.bytes`, in process and
//! through `ringq relay`. Sizes: `RINGQ_KAFKA_ITEMS` (default 20,000; the mock cluster keeps
//! only the last 5 MiB of a partition, about 40,000 of these 64-byte items, and the read-back
//! fails loudly past that).

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use ringq::relay::kafka::{self as rk, KafkaSink};
use ringq::relay::SinkError;
use ringq::relay::{relay, BatchAck, Forwarded, RelayError, RelayOptions, RelayStats, Sink};
use ringq::{Queue, Raw};

const TOPIC: &str = "ringq-test";
const BATCH: usize = 256;

fn items() -> u64 {
    std::env::var("RINGQ_KAFKA_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

type Cluster = MockCluster<'static, DefaultProducerContext>;

/// A one-broker mock cluster holding `TOPIC` with one partition.
fn cluster() -> Cluster {
    let c = MockCluster::new(1).expect("mock cluster");
    c.create_topic(TOPIC, 1, 1).expect("create topic");
    c
}

/// A sink with short timeouts, so that outages show up as retries within the test's time.
fn sink(c: &Cluster) -> KafkaSink {
    KafkaSink::new(&c.bootstrap_servers(), TOPIC)
        .timeouts(Duration::from_secs(1), Duration::from_secs(2))
}

fn payload(i: u64, size: usize) -> Vec<u8> {
    let mut p = vec![(i % 251) as u8; size.max(8)];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

fn index(p: &[u8]) -> u64 {
    u64::from_le_bytes(p[..8].try_into().unwrap())
}

async fn fill(path: &Path, from: u64, to: u64) -> u64 {
    let q = Queue::<Vec<u8>, Raw>::builder(path).open().await.unwrap();
    for i in from..to {
        q.put(payload(i, 64)).await.unwrap();
    }
    q.epoch()
}

/// Runs a relay from `q` into the cluster on its own task, until it has nothing left to do.
fn spawn_relay(
    q: &Queue<Vec<u8>, Raw>,
    c: &Cluster,
    stats: &Arc<RelayStats>,
) -> tokio::task::JoinHandle<Result<(), RelayError>> {
    let (q, stats, mut sink) = (q.clone(), Arc::clone(stats), sink(c));
    tokio::spawn(async move { relay(&q, &mut sink, &opts(), &stats, std::future::pending()).await })
}

/// Waits (bounded) for a relay task that must succeed.
async fn finish(task: tokio::task::JoinHandle<Result<(), RelayError>>) {
    tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("relay finished")
        .unwrap()
        .unwrap();
}

fn opts() -> RelayOptions {
    RelayOptions {
        batch: BATCH,
        until_empty: true,
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    }
}

/// One record read back: its headers and the payload's index.
#[derive(Debug, Clone, Copy)]
struct Record {
    epoch: u64,
    seq: u64,
    index: u64,
}

/// Reads partition 0 of the topic from the beginning to the end.
fn read_topic_blocking(bootstrap: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "ringq-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        low, 0,
        "the mock cluster dropped the oldest records (it keeps the last 5 MiB of a partition): \
         lower RINGQ_KAFKA_ITEMS"
    );
    let mut out = Vec::with_capacity((high - low) as usize);
    if high == low {
        return out;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "read back only {} of {}",
            out.len(),
            high - low
        );
        match consumer.poll(Duration::from_secs(5)) {
            Some(Ok(m)) => {
                let headers = m.headers().expect("headers");
                let header = |name: &str| -> u64 {
                    let h = headers
                        .iter()
                        .find(|h| h.key == name)
                        .unwrap_or_else(|| panic!("header {name}"));
                    std::str::from_utf8(h.value.unwrap())
                        .unwrap()
                        .parse()
                        .unwrap()
                };
                assert!(m.key().is_none(), "records carry no key");
                out.push(Record {
                    epoch: header(rk::EPOCH_HEADER),
                    seq: header(rk::SEQ_HEADER),
                    index: index(m.payload().unwrap()),
                });
            }
            Some(Err(KafkaError::PartitionEOF(_))) if out.len() as i64 >= high - low => break,
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => panic!("read back: {e}"),
        }
    }
    out
}

async fn read_topic(c: &Cluster) -> Vec<Record> {
    let bootstrap = c.bootstrap_servers();
    tokio::task::spawn_blocking(move || read_topic_blocking(&bootstrap))
        .await
        .unwrap()
}

/// Missing and duplicated indices among `0..n`, after checking each record's headers (this
/// queue file's epoch, and `seq == index`: every test queue numbers its items from 0).
fn count(test: &str, got: &[Record], n: u64, epoch: u64) -> (usize, usize) {
    for r in got {
        assert_eq!(r.epoch, epoch, "ringq-epoch header");
        assert_eq!(r.seq, r.index, "ringq-seq header");
    }
    let distinct: HashSet<u64> = got.iter().map(|r| r.index).collect();
    let missing = (0..n).filter(|i| !distinct.contains(i)).count();
    let duplicates = got.len() - distinct.len();
    eprintln!(
        "{test}: {n} items, topic holds {}: missing {missing}, duplicates {duplicates}",
        got.len()
    );
    (missing, duplicates)
}

/// Every index `0..n` exactly once, in order.
fn check_exactly_once(test: &str, got: &[Record], n: u64, epoch: u64) {
    assert_eq!(count(test, got, n, epoch), (0, 0), "missing, duplicates");
    assert!(got.iter().map(|r| r.index).eq(0..n), "order kept");
}

async fn wait_for(stats: &RelayStats, at_least: u64, task: &tokio::task::JoinHandle<impl Sized>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.relayed.load(Ordering::Relaxed) < at_least {
        assert!(Instant::now() < deadline, "relay made no progress");
        assert!(!task.is_finished(), "relay stopped early");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_relays_every_item_once_in_order() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let n = items();
    let epoch = fill(&path, 0, n).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let stats = RelayStats::default();
    let t = Instant::now();
    let (mut s, o) = (sink(&c), opts());
    let run = relay(&q, &mut s, &o, &stats, std::future::pending());
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("relay finished")
        .unwrap();
    eprintln!("kafka relay: {n} items in {:?}", t.elapsed());
    assert_eq!(q.qsize(), 0);
    assert_eq!(stats.relayed.load(Ordering::Relaxed), n);
    assert_eq!(stats.retries.load(Ordering::Relaxed), 0);
    check_exactly_once("kafka_relays_every_item", &read_topic(&c).await, n, epoch);

    // A new relay (new sink, new producer) after more puts sends only the new items.
    drop(q);
    fill(&path, n, n + 10).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    relay(&q, &mut sink(&c), &opts(), &stats, std::future::pending())
        .await
        .unwrap();
    check_exactly_once(
        "kafka_relays_every_item (+10)",
        &read_topic(&c).await,
        n + 10,
        epoch,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_relay_aborted_mid_run_then_restarted_adds_no_duplicate() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let n = items();
    let epoch = fill(&path, 0, n).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let bootstrap = c.bootstrap_servers();
    let spawn = |stats: Arc<RelayStats>| {
        let q = q.clone();
        let mut sink = KafkaSink::new(&bootstrap, TOPIC);
        tokio::spawn(
            async move { relay(&q, &mut sink, &opts(), &stats, std::future::pending()).await },
        )
    };
    // Two aborts of the relay task (its future, its sink and its producer dropped wherever
    // they are: usually with a batch in flight), then a run to the end.
    let mut committed = 0;
    for target in [n / 4, n / 2] {
        let stats = Arc::new(RelayStats::default());
        let task = spawn(Arc::clone(&stats));
        wait_for(&stats, target - committed, &task).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        committed += stats.relayed.load(Ordering::Relaxed) + stats.skipped.load(Ordering::Relaxed);
        eprintln!(
            "aborted at {committed} committed; the queue holds {}",
            q.qsize()
        );
    }
    let stats = Arc::new(RelayStats::default());
    spawn(Arc::clone(&stats)).await.unwrap().unwrap();
    assert_eq!(q.qsize(), 0);
    let got = read_topic(&c).await;
    eprintln!(
        "last relay: skipped {} already in the topic, relayed {}",
        stats.skipped.load(Ordering::Relaxed),
        stats.relayed.load(Ordering::Relaxed)
    );
    check_exactly_once("kafka_relay_aborted_mid_run", &got, n, epoch);
}

/// A sink that never reports a mark: a relay restarted on it sends again what the topic has.
struct NoMark(KafkaSink);

impl Sink for NoMark {
    async fn publish_batch(
        &mut self,
        epoch: u64,
        items: &[(u64, Vec<u8>)],
    ) -> Result<BatchAck, SinkError> {
        self.0.publish_batch(epoch, items).await
    }

    async fn last_forwarded(&mut self) -> Result<Option<Forwarded>, SinkError> {
        Ok(None)
    }
}

/// The broker stores a batch but the relay dies before the queue commits it; the next relay
/// skips it thanks to the mark. The control (no mark) shows the duplicates it prevents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_crash_between_ack_and_commit_is_skipped_by_the_mark() {
    for with_mark in [true, false] {
        let c = cluster();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let n = 1000;
        let epoch = fill(&path, 0, n).await;
        let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
        {
            // Two batches published and acknowledged, never committed: the guards drop.
            let mut s = sink(&c);
            let first = q.get_guarded_batch(300).await.unwrap();
            publish(&mut s, epoch, first.items()).await;
            first.commit().await.unwrap();
            let second = q.get_guarded_batch(300).await.unwrap();
            assert_eq!(second.items()[0].0, 300);
            publish(&mut s, epoch, second.items()).await;
        }
        assert_eq!(
            q.qsize() as u64,
            n - 300,
            "the second batch is back in the queue"
        );
        let stats = RelayStats::default();
        let r = if with_mark {
            relay(&q, &mut sink(&c), &opts(), &stats, std::future::pending()).await
        } else {
            relay(
                &q,
                &mut NoMark(sink(&c)),
                &opts(),
                &stats,
                std::future::pending(),
            )
            .await
        };
        r.unwrap();
        let got = read_topic(&c).await;
        let (missing, duplicates) = count("kafka_crash_between_ack_and_commit", &got, n, epoch);
        assert_eq!(missing, 0);
        if with_mark {
            assert_eq!(stats.skipped.load(Ordering::Relaxed), 300);
            assert_eq!(duplicates, 0);
            assert!(got.iter().map(|r| r.index).eq(0..n), "order kept");
        } else {
            assert_eq!(
                duplicates, 300,
                "control: without the mark the batch repeats"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_brokers_down_mid_run_then_up() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let n = items();
    let epoch = fill(&path, 0, n).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let stats = Arc::new(RelayStats::default());
    let task = spawn_relay(&q, &c, &stats);
    wait_for(&stats, n / 4, &task).await;
    c.broker_down(-1).unwrap();
    let at_down = stats.relayed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let while_down = stats.relayed.load(Ordering::Relaxed);
    assert!(
        while_down <= at_down + BATCH as u64,
        "nothing but the batch in flight is committed while the brokers are down"
    );
    assert!(q.qsize() > 0, "the queue holds the backlog");
    assert!(
        stats.retries.load(Ordering::Relaxed) > 0,
        "timeouts reported"
    );
    assert!(!stats.connected.load(Ordering::Relaxed));
    eprintln!(
        "brokers down: {at_down} relayed at the outage, {while_down} after 3 s, retries {}, \
         last error: {:?}",
        stats.retries.load(Ordering::Relaxed),
        stats.last_error()
    );
    c.broker_up(-1).unwrap();
    finish(task).await;
    let got = read_topic(&c).await;
    // The records in flight at the outage were waited for, not sent again: nothing repeats.
    check_exactly_once("kafka_brokers_down_mid_run", &got, n, epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_brokers_down_at_start_then_up() {
    let c = cluster();
    c.broker_down(-1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let n = 2_000;
    let epoch = fill(&path, 0, n).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let stats = Arc::new(RelayStats::default());
    let task = spawn_relay(&q, &c, &stats);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(!task.is_finished());
    assert_eq!(stats.relayed.load(Ordering::Relaxed), 0);
    assert!(stats.retries.load(Ordering::Relaxed) > 0);
    assert_eq!(q.qsize() as u64, n);
    c.broker_up(-1).unwrap();
    finish(task).await;
    check_exactly_once(
        "kafka_brokers_down_at_start",
        &read_topic(&c).await,
        n,
        epoch,
    );
}

/// Produce requests refused with retriable errors (and dropped connections): librdkafka's
/// idempotent retries absorb them without a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_retriable_produce_errors_add_no_duplicate() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let n = items();
    let epoch = fill(&path, 0, n).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let stats = Arc::new(RelayStats::default());
    let task = spawn_relay(&q, &c, &stats);
    let injected = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ];
    for k in 1..=4 {
        wait_for(&stats, k * n / 5, &task).await;
        c.request_errors(RDKafkaApiKey::Produce, &injected);
    }
    finish(task).await;
    eprintln!(
        "retriable produce errors: {} injected, relay retries {}",
        4 * injected.len(),
        stats.retries.load(Ordering::Relaxed)
    );
    check_exactly_once(
        "kafka_retriable_produce_errors",
        &read_topic(&c).await,
        n,
        epoch,
    );
}

/// A produce request refused for good stops the relay with the batch in the queue; the next
/// relay (after the operator fixed the cause) skips what the topic already has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_permanent_produce_error_stops_the_relay_and_keeps_the_batch() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let n = 5_000;
    let epoch = fill(&path, 0, n).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let stats = Arc::new(RelayStats::default());
    let task = spawn_relay(&q, &c, &stats);
    wait_for(&stats, n / 3, &task).await;
    c.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let r = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("relay stopped")
        .unwrap();
    let Err(RelayError::Sink(e)) = r else {
        panic!("expected a permanent sink error, got {r:?}")
    };
    assert!(!e.retryable);
    eprintln!("permanent error: {e}");
    let relayed = stats.relayed.load(Ordering::Relaxed);
    assert_eq!(
        q.qsize() as u64,
        n - relayed,
        "the failed batch stays in the queue"
    );
    assert!(relayed < n);

    // The cause is gone: a new relay finishes, skipping what the topic holds.
    let stats = RelayStats::default();
    relay(&q, &mut sink(&c), &opts(), &stats, std::future::pending())
        .await
        .unwrap();
    eprintln!(
        "after the fix: skipped {}, relayed {}",
        stats.skipped.load(Ordering::Relaxed),
        stats.relayed.load(Ordering::Relaxed)
    );
    check_exactly_once(
        "kafka_permanent_produce_error",
        &read_topic(&c).await,
        n,
        epoch,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_item_too_large_is_a_clear_error_and_stays_in_the_queue() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let epoch = {
        let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
        for i in 0..10 {
            q.put(payload(i, 64)).await.unwrap();
        }
        q.put(payload(10, 2_000_000)).await.unwrap();
        for i in 11..20 {
            q.put(payload(i, 64)).await.unwrap();
        }
        q.epoch()
    };
    {
        let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
        let stats = RelayStats::default();
        let opts = RelayOptions { batch: 4, ..opts() };
        let r = relay(&q, &mut sink(&c), &opts, &stats, std::future::pending()).await;
        let Err(RelayError::Sink(e)) = r else {
            panic!("expected a permanent sink error, got {r:?}")
        };
        eprintln!("reported: {e}");
        assert!(!e.retryable);
        assert!(
            e.message.contains("item 10 (2000000 bytes)")
                && e.message.contains("message.max.bytes"),
            "{e}"
        );
        assert_eq!(
            stats.relayed.load(Ordering::Relaxed),
            8,
            "the batches before it"
        );
        assert_eq!(q.qsize(), 12, "the large item and what follows stay");
        let head = q.get_guarded().await.unwrap();
        assert_eq!(
            (head.seq(), index(head.item())),
            (8, 8),
            "released, not lost"
        );
    }
    let got = read_topic(&c).await;
    assert_eq!(count("kafka_item_too_large", &got, 8, epoch), (0, 0));

    // Through the command line: a clear message and exit status 1, nothing taken.
    let out = Command::new(crate::ringq_bin::ringq_bin())
        .arg("relay")
        .arg(&path)
        .args(["--to", &format!("kafka://{}", c.bootstrap_servers())])
        .args(["--topic", TOPIC, "--batch", "4", "--drain"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("item 10 (2000000 bytes)"), "stderr: {err}");
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    assert_eq!(q.qsize(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cli_drains_a_queue_and_rejects_nats_only_flags() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let n = 3_000;
    let epoch = fill(&path, 0, n).await;
    let url = format!("kafka://{}", c.bootstrap_servers());
    let out = Command::new(crate::ringq_bin::ringq_bin())
        .arg("relay")
        .arg(&path)
        .args(["--to", &url, "--topic", TOPIC, "--drain", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["relayed"], n);
    assert_eq!(last["done"], true);
    check_exactly_once("kafka_cli", &read_topic(&c).await, n, epoch);

    for (args, expect) in [
        (
            vec!["--from", &url, "--topic", TOPIC],
            "--from is NATS only",
        ),
        (
            vec!["--to", &url, "--topic", TOPIC, "--stream", "S"],
            "--stream is for NATS",
        ),
    ] {
        let out = Command::new(crate::ringq_bin::ringq_bin())
            .arg("relay")
            .arg(dir.path().join("other.q"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "stderr: {err}");
        assert!(err.contains(expect), "stderr: {err}");
        assert!(!dir.path().join("other.q").exists(), "no file created");
    }
}

/// An error librdkafka cannot recover from (a sequence desynchronisation: the producer turns
/// fatal): the sink replaces the producer, reads the mark again, and goes on by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_fatal_producer_error_is_survived_without_duplicates() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let n = items();
    let epoch = fill(&path, 0, n).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let stats = Arc::new(RelayStats::default());
    let task = spawn_relay(&q, &c, &stats);
    let mut errors = Vec::new();
    for k in 1..=3 {
        wait_for(&stats, k * n / 4, &task).await;
        let retries = stats.retries.load(Ordering::Relaxed);
        c.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while stats.retries.load(Ordering::Relaxed) == retries {
            assert!(
                Instant::now() < deadline,
                "the injected error was not reported"
            );
            if let Some(e) = stats.last_error() {
                errors.push(e);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if let Some(e) = stats.last_error() {
            errors.push(e);
        }
    }
    finish(task).await;
    errors.dedup();
    eprintln!(
        "fatal producer errors: retries {}, items the new producer found stored {}, errors: \
         {errors:?}",
        stats.retries.load(Ordering::Relaxed),
        stats.duplicates.load(Ordering::Relaxed)
    );
    check_exactly_once(
        "kafka_fatal_producer_error",
        &read_topic(&c).await,
        n,
        epoch,
    );
}

/// Sends a batch like the relay does: again after each retryable error (the sink resumes the
/// records in flight). Returns the acknowledgement and the errors seen.
async fn publish(
    s: &mut KafkaSink,
    epoch: u64,
    items: &[(u64, Vec<u8>)],
) -> (BatchAck, Vec<SinkError>) {
    let mut errors = Vec::new();
    loop {
        match s.publish_batch(epoch, items).await {
            Ok(ack) => return (ack, errors),
            Err(e) => {
                assert!(e.retryable && errors.len() < 30, "{e}");
                errors.push(e);
            }
        }
    }
}

/// A producer that fails in the middle of a batch (the first request of the batch stored, the
/// next one refused, which makes the producer fatal): the sink replaces it, reads the mark and
/// sends only the rest of the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_producer_failing_mid_batch_resumes_after_the_stored_prefix() {
    let c = cluster();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", c.bootstrap_servers())
        .set("batch.num.messages", "50"); // a batch of 250 takes several requests
    let mut s = KafkaSink::with_config(config, TOPIC)
        .timeouts(Duration::from_secs(1), Duration::from_secs(2));
    let epoch = 7;
    let batch = |from: u64, to: u64| -> Vec<(u64, Vec<u8>)> {
        (from..to).map(|i| (i, payload(i, 64))).collect()
    };
    assert_eq!(s.last_forwarded().await.unwrap(), None);
    assert_eq!(
        publish(&mut s, epoch, &batch(0, 50)).await.0,
        BatchAck::default()
    );
    c.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
        ],
    );
    let items = batch(50, 300);
    let (ack, errors) = publish(&mut s, epoch, &items).await;
    eprintln!("errors before the batch went through: {errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("OutOfOrderSequence") || e.message.contains("Fatal")),
        "the injected failure was reported"
    );
    // The first request of the batch got no error: a prefix of it was stored by the failed
    // producer, and the new one skipped it.
    eprintln!("the new producer skipped {} stored items", ack.duplicates);
    assert!(ack.duplicates >= 1 && ack.duplicates < 250);
    check_exactly_once(
        "kafka_producer_failing_mid_batch",
        &read_topic(&c).await,
        300,
        epoch,
    );
}

/// The relay does not create topics: a missing one is a permanent error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_missing_topic_is_a_clear_error() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    fill(&path, 0, 10).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let mut s = KafkaSink::new(&c.bootstrap_servers(), "no-such-topic");
    let r = relay(
        &q,
        &mut s,
        &opts(),
        &RelayStats::default(),
        std::future::pending(),
    )
    .await;
    let Err(RelayError::Sink(e)) = r else {
        panic!("expected a permanent sink error, got {r:?}")
    };
    eprintln!("reported: {e}");
    assert!(
        !e.retryable && e.message.contains("topic no-such-topic does not exist"),
        "{e}"
    );
    assert_eq!(q.qsize(), 10);
}
