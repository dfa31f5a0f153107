//! The relay (Buffered ringq → JetStream) against a raw pipelined async-nats publisher sending
//! the same messages to the same server, 200 B and 4 KiB. Target: the relay reaches at least
//! 80% of the raw publisher's messages/s.
//!
//! Starts its own nats-server (`RINGQ_NATS_SERVER` or PATH) on a free loopback port.
//! `RINGQ_RELAY_BENCH_ITEMS` (default 50,000) messages per run, median of 5 runs (raw and relay alternate).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use ringq::relay::nats::{self as rn, JetStreamSink};
use ringq::relay::{relay, RelayOptions, RelayStats};
use ringq::{Queue, Raw};

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RINGQ_NATS_SERVER") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

const BATCH: usize = 256;

async fn raw(js: &jetstream::Context, subject: &str, msgs: &[Vec<u8>]) -> Duration {
    let t = Instant::now();
    for chunk in msgs.chunks(BATCH) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (i, m) in chunk.iter().enumerate() {
            let mut h = async_nats::HeaderMap::new();
            h.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("raw-{}-{i}", t.elapsed().as_nanos()).as_str(),
            );
            acks.push(
                js.publish_with_headers(subject.to_string(), h, m.clone().into())
                    .await
                    .unwrap(),
            );
        }
        for a in
            futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future))
                .await
        {
            a.unwrap();
        }
    }
    t.elapsed()
}

async fn via_relay(
    client: &async_nats::Client,
    subject: &str,
    msgs: &[Vec<u8>],
    dir: &std::path::Path,
) -> Duration {
    let path = dir.join(format!("{subject}.q"));
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    for m in msgs {
        q.put(m.clone()).await.unwrap();
    }
    let mut sink = JetStreamSink::new(client.clone(), subject, None, false);
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

fn main() {
    let Some(bin) = server_bin() else {
        eprintln!("*** relay bench skipped: nats-server not found (RINGQ_NATS_SERVER or PATH) ***");
        if std::env::var("CI").as_deref() == Ok("true") {
            std::process::exit(1);
        }
        return;
    };
    let n: usize = std::env::var("RINGQ_RELAY_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path().join("js"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = rn::connect(&format!("nats://127.0.0.1:{port}")).await.unwrap();
        let js = jetstream::new(client.clone());
        println!("relay bench: {n} messages per run, batch {BATCH}, median of {RUNS} runs, one nats-server on loopback");
        for size in [200usize, 4096] {
            let msgs: Vec<Vec<u8>> = (0..n).map(|i| vec![(i % 251) as u8; size]).collect();
            let (mut raw_times, mut relay_times) = (Vec::new(), Vec::new());
            for run in 0..RUNS {
                for kind in ["raw", "relay"] {
                    let subject = format!("bench.{kind}.{size}.{run}");
                    let name = format!("BENCH_{}_{size}_{run}", kind.to_uppercase());
                    js.create_stream(stream::Config {
                        name: name.clone(),
                        subjects: vec![subject.clone()],
                        duplicate_window: rn::DUPLICATE_WINDOW,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                    let d = if kind == "raw" {
                        raw(&js, &subject, &msgs).await
                    } else {
                        via_relay(&client, &subject, &msgs, dir.path()).await
                    };
                    let count = js.get_stream(&name).await.unwrap().info().await.unwrap().state.messages;
                    assert_eq!(count, n as u64, "{kind} stored every message");
                    js.delete_stream(&name).await.unwrap();
                    if kind == "raw" {
                        raw_times.push(d);
                    } else {
                        relay_times.push(d);
                    }
                }
            }
            let r = n as f64 / median(&mut raw_times).as_secs_f64();
            let q = n as f64 / median(&mut relay_times).as_secs_f64();
            println!(
                "{size:>5} B: raw publisher {r:>9.0} msgs/s   relay {q:>9.0} msgs/s   relay/raw {:.0}%",
                100.0 * q / r
            );
        }
    });
}

const RUNS: usize = 5;

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
