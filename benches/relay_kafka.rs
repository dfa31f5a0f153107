//! The Kafka relay (Buffered ringq → KafkaSink) against a raw rdkafka `FutureProducer` sending
//! the same messages with the same settings (idempotent, `acks=all`, `linger.ms=1`, partition
//! 0) and the same window (256 sends, then their delivery reports), 200 B and 4 KiB.
//!
//! Both run against librdkafka's in-process mock cluster (`rdkafka::mocking`, one broker on
//! loopback; no Kafka broker can be installed here), a fresh cluster per run.
//! `RINGQ_RELAY_BENCH_ITEMS` (default 50,000) messages per run, `RINGQ_RELAY_BENCH_RUNS`
//! (default 5) runs of each, median reported.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use ringq::relay::kafka::KafkaSink;
use ringq::relay::{relay, RelayOptions, RelayStats};
use ringq::{Queue, Raw};

const BATCH: usize = 256;
const TOPIC: &str = "bench";

async fn raw(bootstrap: &str, msgs: &[Vec<u8>]) -> Duration {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let t = Instant::now();
    let mut seq = 0u64;
    for chunk in msgs.chunks(BATCH) {
        let mut deliveries = Vec::with_capacity(chunk.len());
        for m in chunk {
            seq += 1;
            let s = seq.to_string();
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: "ringq-epoch",
                    value: Some("1"),
                })
                .insert(Header {
                    key: "ringq-seq",
                    value: Some(s.as_str()),
                });
            let record = FutureRecord::<(), [u8]>::to(TOPIC)
                .partition(0)
                .payload(m.as_slice())
                .headers(headers);
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        }
        for d in futures::future::join_all(deliveries).await {
            d.unwrap().unwrap();
        }
    }
    t.elapsed()
}

async fn via_relay(bootstrap: &str, msgs: &[Vec<u8>], dir: &std::path::Path) -> Duration {
    let path = dir.join("bench.q");
    let _ = std::fs::remove_file(&path);
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    for m in msgs {
        q.put(m.clone()).await.unwrap();
    }
    let mut sink = KafkaSink::new(bootstrap, TOPIC);
    let opts = RelayOptions {
        batch: BATCH,
        until_empty: true,
        ..Default::default()
    };
    let t = Instant::now();
    relay(
        &q,
        &mut sink,
        &opts,
        &RelayStats::default(),
        std::future::pending(),
    )
    .await
    .unwrap();
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env("RINGQ_RELAY_BENCH_ITEMS", 50_000);
    let runs = env("RINGQ_RELAY_BENCH_RUNS", 5).max(1);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "kafka relay bench: {n} messages per run, batch {BATCH}, median of {runs}, \
         librdkafka mock cluster (1 broker, loopback)"
    );
    for size in [200usize, 4096] {
        let msgs: Vec<Vec<u8>> = (0..n).map(|i| vec![(i % 251) as u8; size]).collect();
        let (mut raws, mut relays) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            for kind in ["raw", "relay"] {
                let cluster = MockCluster::new(1).unwrap();
                cluster.create_topic(TOPIC, 1, 1).unwrap();
                let bootstrap = cluster.bootstrap_servers();
                let d = rt.block_on(async {
                    if kind == "raw" {
                        raw(&bootstrap, &msgs).await
                    } else {
                        via_relay(&bootstrap, &msgs, dir.path()).await
                    }
                });
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .create()
                    .unwrap();
                // The mock keeps the last 5 MiB of a partition: count by the end offset.
                let (_, high) = consumer
                    .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
                    .unwrap();
                assert_eq!(high as usize, n, "{kind} stored every message");
                if kind == "raw" {
                    raws.push(d);
                } else {
                    relays.push(d);
                }
            }
        }
        let r = n as f64 / median(raws).as_secs_f64();
        let q = n as f64 / median(relays).as_secs_f64();
        println!(
            "{size:>5} B: raw FutureProducer {r:>9.0} msgs/s   relay {q:>9.0} msgs/s   relay/raw {:.0}%",
            100.0 * q / r
        );
    }
}
