//! The relay against a real nats-server on loopback: the drain direction (in process and as
//! the `ringq relay` child process, across broker and relay `kill -9`), the broker down at
//! start, the source direction across a relay crash, and a message the queue cannot take.
//!
//! The server is found through `RINGQ_NATS_SERVER` or `PATH` (and /usr/sbin, /usr/bin);
//! without it the tests print a loud skip, or fail under `CI=true`. Sizes: `RINGQ_RELAY_ITEMS`
//! (default 20,000; the figure is 100,000).

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use ringq::relay::nats::{self as rn, JetStreamSink, PullError, PullOptions};
use ringq::relay::{relay, RelayOptions, RelayStats};
use ringq::{Queue, Raw};

const SUBJECT: &str = "ringq.test";
const STREAM: &str = "RINGQ";

fn items() -> u64 {
    std::env::var("RINGQ_RELAY_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn nats_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RINGQ_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/sbin".into(),
            "/usr/bin".into(),
            "/usr/local/bin".into(),
        ])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// The server binary, or None after a loud skip message; under `CI=true` a missing server fails.
pub(crate) fn server_or_skip(test: &str) -> Option<PathBuf> {
    match nats_server_binary() {
        Some(p) => Some(p),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("nats-server not found (set RINGQ_NATS_SERVER or install it): CI=true forbids skipping")
        }
        None => {
            eprintln!(
                "\n*** SKIPPED {test}: nats-server not found (set RINGQ_NATS_SERVER or install nats-server) ***\n"
            );
            None
        }
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A nats-server child; killed (that PID, SIGKILL) on drop.
pub(crate) struct Server {
    bin: PathBuf,
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start(bin: &Path, dir: &Path) -> Server {
        let mut s = Server {
            bin: bin.to_path_buf(),
            port: free_port(),
            store: dir.join("js"),
            child: None,
        };
        s.restart();
        s
    }

    /// A server that is not running yet (its port is reserved by nothing; start it later).
    pub(crate) fn not_started(bin: &Path, dir: &Path) -> Server {
        Server {
            bin: bin.to_path_buf(),
            port: free_port(),
            store: dir.join("js"),
            child: None,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `ringq relay` child; killed on drop.
struct RelayProc(Option<Child>);

impl RelayProc {
    fn spawn(args: &[String]) -> RelayProc {
        Self::spawn_env(args, &[])
    }

    fn spawn_env(args: &[String], env: &[(&str, &str)]) -> RelayProc {
        let bin = std::env::var_os("RINGQ_RELAY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(crate::ringq_bin::ringq_bin);
        let child = Command::new(bin)
            .arg("relay")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringq relay");
        RelayProc(Some(child))
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (bounded) for the relay to exit; returns its status and stderr.
    fn wait(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let mut c = self.0.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                return (status, err);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("ringq relay did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        self.kill9();
    }
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

async fn js_client(url: &str) -> jetstream::Context {
    jetstream::new(rn::connect(url).await.unwrap())
}

/// Messages the stream holds (retried while a restarted server comes back).
async fn stream_count(js: &jetstream::Context) -> u64 {
    match tokio::time::timeout(Duration::from_secs(2), async {
        let mut s = js.get_stream(STREAM).await.ok()?;
        Some(s.info().await.ok()?.state.messages)
    })
    .await
    {
        Ok(Some(n)) => n,
        _ => 0,
    }
}

/// Reads the whole subject back, in stream order: the payload indices, checking the headers.
async fn read_back(js: &jetstream::Context, epoch: u64) -> Vec<u64> {
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let total = stream.info().await.unwrap().state.messages;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: SUBJECT.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    let mut out = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as u64) < total {
        assert!(
            Instant::now() < deadline,
            "read back only {} of {total}",
            out.len()
        );
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let h = m.headers.as_ref().expect("headers");
        let seq: u64 = h.get(rn::SEQ_HEADER).unwrap().as_str().parse().unwrap();
        assert_eq!(h.get(rn::EPOCH_HEADER).unwrap().as_str(), epoch.to_string());
        assert_eq!(
            h.get("Nats-Msg-Id").unwrap().as_str(),
            format!("{epoch}-{seq}")
        );
        out.push(index(&m.payload));
    }
    out
}

/// Asserts every index 0..n exactly once, in order; prints the counts.
fn check_exactly_once(test: &str, got: &[u64], n: u64) {
    check_once(test, got, n);
    assert!(got.iter().copied().eq(0..n), "order kept");
}

/// Asserts every index 0..n exactly once, with order kept except for items displaced by less
/// than one batch (a broker crash can drop the head of an in-flight batch while its tail lands
/// on the new connection; the re-sent head then lands after it). Returns the inversions.
fn check_once_order_within(test: &str, got: &[u64], n: u64, window: u64) -> usize {
    check_once(test, got, n);
    let mut inversions = 0;
    let mut max_seen = 0;
    for (i, &x) in got.iter().enumerate() {
        if i > 0 && x < max_seen {
            inversions += 1;
            assert!(
                max_seen - x < window,
                "{x} arrived after {max_seen}: displaced by more than a batch"
            );
        }
        max_seen = max_seen.max(x);
    }
    eprintln!("{test}: {inversions} items out of order (each by less than one batch)");
    inversions
}

fn check_once(test: &str, got: &[u64], n: u64) {
    let distinct: HashSet<u64> = got.iter().copied().collect();
    let missing = (0..n).filter(|i| !distinct.contains(i)).count();
    let duplicates = got.len() - distinct.len();
    eprintln!(
        "{test}: {n} items, stream holds {}: missing {missing}, duplicates {duplicates}",
        got.len()
    );
    assert_eq!((missing, duplicates), (0, 0));
}

fn fast_opts() -> RelayOptions {
    RelayOptions {
        until_empty: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_every_item_once_in_order() {
    let Some(bin) = server_or_skip("relays_every_item_once_in_order") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&bin, dir.path());
    let n = items();
    let path = dir.path().join("q");
    let epoch = fill(&path, 0, n).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let client = rn::connect(&server.url()).await.unwrap();
    let mut sink = JetStreamSink::new(client.clone(), SUBJECT, Some(STREAM.into()), true);
    let stats = RelayStats::default();
    let opts = fast_opts();
    let run = relay(&q, &mut sink, &opts, &stats, std::future::pending());
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("relay finished")
        .unwrap();
    assert_eq!(q.qsize(), 0);
    assert_eq!(stats.relayed.load(Ordering::Relaxed), n);
    let js = jetstream::new(client);
    check_exactly_once(
        "relays_every_item_once_in_order",
        &read_back(&js, epoch).await,
        n,
    );

    // A second relay on the same (now empty) queue after more puts sends only the new items.
    drop(q);
    fill(&path, n, n + 10).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let mut sink = JetStreamSink::new(js.client().clone(), SUBJECT, Some(STREAM.into()), true);
    relay(&q, &mut sink, &fast_opts(), &stats, std::future::pending())
        .await
        .unwrap();
    check_exactly_once(
        "relays_every_item_once_in_order (+10)",
        &read_back(&js, epoch).await,
        n + 10,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_kill9_mid_run_loses_and_duplicates_nothing() {
    let Some(bin) = server_or_skip("broker_kill9_mid_run_loses_and_duplicates_nothing") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&bin, dir.path());
    let n = items();
    let path = dir.path().join("q");
    let epoch = fill(&path, 0, n).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let stats = Arc::new(RelayStats::default());
    let url = server.url();
    let task = {
        let (q, stats) = (q.clone(), Arc::clone(&stats));
        tokio::spawn(async move {
            let client = rn::connect(&url).await.unwrap();
            let mut sink = JetStreamSink::new(client, SUBJECT, Some(STREAM.into()), true);
            relay(&q, &mut sink, &fast_opts(), &stats, std::future::pending()).await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.relayed.load(Ordering::Relaxed) < n / 4 {
        assert!(
            Instant::now() < deadline && !task.is_finished(),
            "relay made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    let at_kill = stats.relayed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        q.qsize() > 0,
        "the queue holds the backlog while the broker is down"
    );
    let while_down = stats.relayed.load(Ordering::Relaxed);
    assert!(
        while_down <= at_kill + 256,
        "nothing but the batch in flight at the kill is committed while the broker is down"
    );
    server.restart();
    tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("relay finished")
        .unwrap()
        .unwrap();
    eprintln!(
        "broker kill: killed at {at_kill} relayed, retries {}, duplicate acks {}",
        stats.retries.load(Ordering::Relaxed),
        stats.duplicates.load(Ordering::Relaxed)
    );
    let js = js_client(&server.url()).await;
    check_once_order_within("broker_kill9_mid_run", &read_back(&js, epoch).await, n, 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_then_up() {
    let Some(bin) = server_or_skip("broker_down_at_start_then_up") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::not_started(&bin, dir.path());
    let n = items().min(5_000);
    let path = dir.path().join("q");
    let epoch = fill(&path, 0, n / 2).await;
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let stats = Arc::new(RelayStats::default());
    let url = server.url();
    let task = {
        let (q, stats) = (q.clone(), Arc::clone(&stats));
        tokio::spawn(async move {
            let client = rn::connect(&url).await.unwrap();
            let mut sink = JetStreamSink::new(client, SUBJECT, Some(STREAM.into()), true);
            relay(&q, &mut sink, &fast_opts(), &stats, std::future::pending()).await
        })
    };
    // The producer keeps writing while the broker is down; the queue absorbs it.
    for i in n / 2..n {
        q.put(payload(i, 64)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(!task.is_finished());
    assert_eq!(stats.relayed.load(Ordering::Relaxed), 0);
    assert!(!stats.connected.load(Ordering::Relaxed));
    assert!(stats.retries.load(Ordering::Relaxed) > 0);
    assert_eq!(q.qsize() as u64, n);
    server.restart();
    tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("relay finished")
        .unwrap()
        .unwrap();
    let js = js_client(&server.url()).await;
    check_exactly_once("broker_down_at_start", &read_back(&js, epoch).await, n);
}

fn relay_to_args(path: &Path, url: &str, batch: usize) -> Vec<String> {
    vec![
        path.display().to_string(),
        "--to".into(),
        url.into(),
        "--subject".into(),
        SUBJECT.into(),
        "--stream".into(),
        STREAM.into(),
        "--batch".into(),
        batch.to_string(),
        "--drain".into(),
        "--json".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_kill9_mid_run_then_restart() {
    let Some(bin) = server_or_skip("relay_kill9_mid_run_then_restart") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&bin, dir.path());
    let n = items();
    let path = dir.path().join("q");
    let epoch = fill(&path, 0, n).await;
    let js = js_client(&server.url()).await;
    let mut kills = 0;
    // Two kills of the relay process at different points, then a run to the end.
    for target in [n / 4, n / 2] {
        let mut child = RelayProc::spawn(&relay_to_args(&path, &server.url(), 256));
        let deadline = Instant::now() + Duration::from_secs(60);
        while stream_count(&js).await < target {
            assert!(Instant::now() < deadline, "relay made no progress");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.kill9();
        kills += 1;
    }
    let mut child = RelayProc::spawn(&relay_to_args(&path, &server.url(), 256));
    let (status, err) = child.wait(Duration::from_secs(120));
    assert!(status.success(), "relay failed: {err}");
    eprintln!("relay kill: {kills} kills, last relay says: {}", err.trim());
    check_exactly_once("relay_kill9_mid_run", &read_back(&js, epoch).await, n);
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    assert_eq!(q.qsize(), 0);
}

/// Publishes `0..n` (pipelined) to the subject of a stream the test creates.
async fn publish_source(js: &jetstream::Context, n: u64, size: usize) {
    js.get_or_create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(512) {
        let mut acks = Vec::new();
        for &i in chunk {
            acks.push(js.publish(SUBJECT, payload(i, size).into()).await.unwrap());
        }
        for a in acks {
            a.await.unwrap();
        }
    }
}

async fn ack_floor(js: &jetstream::Context) -> u64 {
    let r = tokio::time::timeout(Duration::from_secs(2), async {
        let stream = js.get_stream(STREAM).await.ok()?;
        let c: jetstream::consumer::PullConsumer = stream.get_consumer("ringq").await.ok()?;
        Some(c.get_info().await.ok()?.ack_floor.stream_sequence)
    })
    .await;
    r.ok().flatten().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_direction_across_a_relay_crash() {
    let Some(bin) = server_or_skip("source_direction_across_a_relay_crash") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&bin, dir.path());
    let n = items();
    let js = js_client(&server.url()).await;
    publish_source(&js, n, 64).await;
    let path = dir.path().join("local.q");
    let batch = 100;
    let args = |path: &Path| -> Vec<String> {
        [
            "--from",
            &server.url(),
            "--subject",
            SUBJECT,
            "--batch",
            &batch.to_string(),
            "--ack-wait",
            "1",
            "--drain",
            &path.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // Kill the relay twice mid-run (at a third and at two thirds of the stream).
    let mut child = RelayProc::spawn(&args(&path));
    for k in 1..=2 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while ack_floor(&js).await < k * n / 3 {
            assert!(Instant::now() < deadline, "relay made no progress");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.kill9();
        child = RelayProc::spawn(&args(&path));
    }
    let (status, err) = child.wait(Duration::from_secs(120));
    assert!(status.success(), "relay failed: {err}");
    assert_eq!(ack_floor(&js).await, n, "every message acknowledged");

    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let mut got = Vec::new();
    while let Ok(p) = q.get_nowait() {
        got.push(index(&p));
    }
    let mut seen = HashSet::new();
    let firsts: Vec<u64> = got.iter().copied().filter(|i| seen.insert(*i)).collect();
    let duplicates = got.len() - firsts.len();
    let missing = (0..n).filter(|i| !seen.contains(i)).count();
    eprintln!("source direction, 2 relay kills: {n} messages, local queue holds {}: missing {missing}, duplicates {duplicates}", got.len());
    assert_eq!(missing, 0);
    assert_eq!(duplicates, 0, "the queue's source mark skips what it holds");
    assert!(firsts.iter().copied().eq(0..n), "order kept");
}

/// The relay dies between writing part of a batch into the queue and its commit: the records
/// survive in the page cache although no slot names them. The restarted relay must count them
/// (the queue's source mark) and skip exactly those messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_direction_crash_between_put_and_commit() {
    let Some(bin) = server_or_skip("source_direction_crash_between_put_and_commit") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&bin, dir.path());
    let n = 3_000;
    let js = js_client(&server.url()).await;
    publish_source(&js, n, 64).await;
    let path = dir.path().join("local.q");
    let args: Vec<String> = [
        "--from",
        &server.url(),
        "--subject",
        SUBJECT,
        "--batch",
        "100",
        "--ack-wait",
        "30",
        "--drain",
        &path.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Twelve whole batches, then 50 puts of the thirteenth, then abort().
    let (status, _) = RelayProc::spawn_env(&args, &[("RINGQ_TEST_ABORT_AFTER_PUTS", "1250")])
        .wait(Duration::from_secs(60));
    assert!(!status.success(), "the failpoint aborts the relay");
    // ack_wait is 30 s: finishing well within it shows the restart did not wait for
    // JetStream to deliver the killed relay's messages again.
    let started = Instant::now();
    let (status, err) =
        RelayProc::spawn_env(&args, &[("RINGQ_LOG", "info")]).wait(Duration::from_secs(60));
    assert!(status.success(), "relay failed: {err}");
    assert!(
        err.contains("the queue holds 50 more"),
        "the restart found the 50 uncommitted records: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(ack_floor(&js).await, n, "every message acknowledged");
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let mut got = Vec::new();
    while let Ok(p) = q.get_nowait() {
        got.push(index(&p));
    }
    assert_eq!(
        got,
        (0..n).collect::<Vec<_>>(),
        "every message once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_the_queue_is_reported_and_not_acked() {
    let Some(bin) = server_or_skip("a_message_too_large_for_the_queue_is_reported_and_not_acked")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&bin, dir.path());
    let js = js_client(&server.url()).await;
    js.get_or_create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    for p in [payload(0, 64), payload(1, 600_000), payload(2, 64)] {
        js.publish(SUBJECT, p.into()).await.unwrap().await.unwrap();
    }
    let path = dir.path().join("small.q");
    let opts = PullOptions {
        subject: SUBJECT.into(),
        stream: None,
        durable: "ringq".into(),
        batch: 10,
        until_idle: true,
        ack_wait: Duration::from_secs(30),
    };
    let client = js.client().clone();
    {
        let q = Queue::<Vec<u8>, Raw>::builder(&path)
            .max_bytes(256 * 1024)
            .open()
            .await
            .unwrap();
        let stats = RelayStats::default();
        let r = rn::pull(&q, client.clone(), &opts, &stats, std::future::pending()).await;
        match r {
            Err(PullError::TooLarge {
                stream_seq, size, ..
            }) => {
                assert_eq!((stream_seq, size), (2, 600_000));
                eprintln!("reported: {}", r.unwrap_err());
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(q.qsize(), 1);
        assert_eq!(index(&q.get_nowait().unwrap()), 0);
    }
    assert_eq!(
        ack_floor(&js).await,
        1,
        "only the message before it is acknowledged"
    );
    let info = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .get_consumer::<pull::Config>("ringq")
        .await
        .unwrap();
    assert!(
        info.get_info().await.unwrap().num_ack_pending >= 1,
        "the large message is pending, not acked"
    );

    // The same file through the command line: the error is reported and the exit is non-zero.
    let mut child = RelayProc::spawn(&[
        "--from".into(),
        server.url(),
        "--subject".into(),
        SUBJECT.into(),
        "--durable".into(),
        "cli".into(),
        "--max-bytes".into(),
        (256 * 1024).to_string(),
        "--drain".into(),
        dir.path().join("cli.q").display().to_string(),
    ]);
    let (status, err) = child.wait(Duration::from_secs(60));
    assert!(!status.success());
    assert!(
        err.contains("600000 bytes") && err.contains("not acknowledged"),
        "stderr: {err}"
    );
}
