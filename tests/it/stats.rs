//! `Queue::stats` against a model, `RingFile::stats` on damage and growth, `ringq stats` on a
//! file a running queue holds, and `ringq relay --metrics` read by a scraper-style client.

use std::collections::BTreeMap;
use std::time::Duration;

use assert_cmd::Command;
use ringq::format::{record_size, DATA_OFFSET, RECORD_HEADER};
use ringq::{Guard, MemStorage, Queue, Raw, RingFile, RingOptions, Storage};

fn ringq() -> Command {
    Command::new(crate::ringq_bin::ringq_bin())
}

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Waiting,
    Taken,
    Removed,
}

/// What the queue should hold: every record since open by sequence number (a fresh file
/// numbers them from 0), and the counters.
#[derive(Default)]
struct Model {
    records: BTreeMap<u64, (usize, St)>,
    puts: u64,
    gets: u64,
    commits: u64,
    /// Something changed since the last commit (a put, or a removal).
    changed: bool,
}

impl Model {
    fn count(&self, st: St) -> u64 {
        self.records.values().filter(|(_, s)| *s == st).count() as u64
    }

    /// Bytes from the oldest record not removed to the tail: a removed record behind an
    /// older one still taken keeps its space until the head passes it.
    fn used(&self) -> u64 {
        self.records
            .values()
            .skip_while(|(_, s)| *s == St::Removed)
            .map(|(size, _)| *size as u64)
            .sum()
    }

    fn oldest_waiting(&self) -> Option<u64> {
        self.records
            .iter()
            .find(|(_, (_, s))| *s == St::Waiting)
            .map(|(seq, _)| *seq)
    }

    fn delivered(&mut self, seq: u64, to: St) {
        let want = self.oldest_waiting();
        assert_eq!(
            Some(seq),
            want,
            "the oldest waiting item is delivered first"
        );
        self.records.get_mut(&seq).unwrap().1 = to;
        self.gets += 1;
        if to == St::Removed {
            self.changed = true;
        }
    }
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut p = seq.to_le_bytes().to_vec();
    p.resize(len.max(8), (seq % 251) as u8);
    p
}

fn seq_of(p: &[u8]) -> u64 {
    u64::from_le_bytes(p[..8].try_into().unwrap())
}

fn check(q: &Queue<Vec<u8>, Raw>, m: &Model, step: usize, what: &str) {
    let s = q.stats();
    let at = format!("step {step} ({what}): {s:?}");
    assert_eq!(s.items, m.count(St::Waiting), "items, {at}");
    assert_eq!(s.items, q.qsize() as u64, "items = qsize, {at}");
    assert_eq!(s.taken, m.count(St::Taken), "taken, {at}");
    assert_eq!(s.bytes_used, m.used(), "bytes used, {at}");
    assert_eq!(s.capacity, 1 << 20, "capacity, {at}");
    assert_eq!(s.puts, m.puts, "puts, {at}");
    assert_eq!(s.gets, m.gets, "gets, {at}");
    assert_eq!(s.commits, m.commits, "commits, {at}");
    match s.commit_latency {
        None => assert_eq!(m.commits, 1, "latency, {at}"),
        Some(l) => {
            // Every commit here runs on the flusher thread (no growth, no checkpoint).
            assert_eq!(l.count, m.commits - 1, "latency count, {at}");
            assert!(l.p50 <= l.p99 && l.p99 <= l.max && l.max <= l.sum, "{at}");
            assert!(l.max > Duration::ZERO, "{at}");
        }
    }
    assert_eq!(s.oldest_age, None, "{at}");
    assert_eq!(
        (
            s.damaged,
            s.dropped_full,
            s.dead_lettered,
            s.grows,
            s.shrinks
        ),
        (0, 0, 0, 0, 0),
        "{at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stats_follow_a_model() {
    for seed in [0x9e37_79b9_7f4a_7c15u64, 7, 12345] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.q");
        let q: Queue<Vec<u8>, Raw> = Queue::builder(&path)
            .initial_capacity(1 << 20)
            .open()
            .await
            .unwrap();
        let mut rng = Rng(seed);
        // Creating the file is one commit (of open, not the flusher's).
        let mut m = Model {
            commits: 1,
            ..Model::default()
        };
        let mut held: Vec<Guard<Vec<u8>>> = Vec::new();
        check(&q, &m, 0, "open");
        for step in 1..=400 {
            let waiting = m.count(St::Waiting) > 0;
            let what = match rng.below(10) {
                0..=2 => {
                    let len = rng.below(120) as usize;
                    let seq = m.puts;
                    let p = payload(seq, len);
                    if rng.below(2) == 0 {
                        q.put(p.clone()).await.unwrap();
                    } else {
                        q.put_nowait(p.clone()).unwrap();
                    }
                    m.records
                        .insert(seq, (record_size(p.len()).unwrap(), St::Waiting));
                    m.puts += 1;
                    m.changed = true;
                    "put"
                }
                3 if waiting => {
                    let p = if rng.below(2) == 0 {
                        q.get().await.unwrap()
                    } else {
                        q.get_nowait().unwrap()
                    };
                    m.delivered(seq_of(&p), St::Removed);
                    "get"
                }
                4 | 5 if waiting && held.len() < 4 => {
                    let g = q.get_guarded().await.unwrap();
                    assert_eq!(
                        g.seq(),
                        seq_of(g.item()),
                        "a fresh file numbers items from 0"
                    );
                    m.delivered(g.seq(), St::Taken);
                    held.push(g);
                    "take"
                }
                6 if !held.is_empty() => {
                    let g = held.remove(rng.below(held.len() as u64) as usize);
                    let seq = g.seq();
                    g.commit().await.unwrap();
                    m.records.get_mut(&seq).unwrap().1 = St::Removed;
                    m.changed = true;
                    "commit guard"
                }
                7 if !held.is_empty() => {
                    let g = held.remove(rng.below(held.len() as u64) as usize);
                    let seq = g.seq();
                    drop(g); // released: delivered again, first in line
                    m.records.get_mut(&seq).unwrap().1 = St::Waiting;
                    "release guard"
                }
                8 => {
                    q.sync().await.unwrap();
                    if std::mem::take(&mut m.changed) {
                        m.commits += 1;
                    }
                    "sync"
                }
                _ => "nothing",
            };
            check(&q, &m, step, what);
        }
        assert!(m.gets > 50 && m.commits > 10, "the run did enough");
    }
}

#[test]
fn ring_stats_count_damage_at_open_and_on_read_and_growth() {
    let opts = RingOptions::default().initial_capacity(4096);
    // Damage on read: the first record's payload changes under a live ring.
    let mut ring = RingFile::open_in(MemStorage::new(), &opts).unwrap();
    for i in 0..3u8 {
        ring.push(&[i; 16]).unwrap();
    }
    ring.storage_mut().bytes_mut()[DATA_OFFSET + RECORD_HEADER] ^= 0xff;
    assert_eq!(ring.pop().unwrap().as_deref(), Some(&[1u8; 16][..]));
    let s = ring.stats();
    assert_eq!((s.damaged, s.items, s.grows), (1, 1, 0), "{s:?}");

    // Damage at open: a committed record fails its checksum.
    let mut ring = RingFile::open_in(MemStorage::new(), &opts).unwrap();
    for i in 0..3u8 {
        ring.push(&[i; 16]).unwrap();
    }
    ring.sync().unwrap();
    let mut bytes = ring.into_storage().live().to_vec();
    bytes[DATA_OFFSET + RECORD_HEADER] ^= 0xff;
    let ring = RingFile::open_in(MemStorage::from_bytes(bytes), &opts).unwrap();
    assert_eq!(ring.recovery_report().records_dropped, 1);
    let s = ring.stats();
    assert_eq!((s.damaged, s.items), (1, 2), "{s:?}");

    // Growth: every capacity change is one grow.
    let mut ring = RingFile::open_in(MemStorage::new(), &opts).unwrap();
    let (mut caps, mut last) = (0, ring.capacity());
    for _ in 0..200 {
        ring.push(&[7u8; 200]).unwrap();
        if ring.capacity() != last {
            caps += 1;
            last = ring.capacity();
        }
    }
    let s = ring.stats();
    assert!(caps >= 2, "the ring grew");
    assert_eq!((s.grows, s.capacity, s.items), (caps, last, 200), "{s:?}");
    assert_eq!(s.bytes_used, 200 * record_size(200).unwrap() as u64);
    assert_eq!((s.puts, s.gets, s.commit_latency), (0, 0, None));
}

fn stats_json(path: &std::path::Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = ringq()
        .arg("stats")
        .arg(path)
        .arg("--json")
        .args(extra)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ringq stats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    if extra.is_empty() {
        vec![serde_json::from_str(&text).expect("one JSON document")]
    } else {
        text.lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringq_stats_reads_a_file_a_running_queue_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.q");
    let q: Queue<Vec<u8>, Raw> = Queue::builder(&path).open().await.unwrap();
    for i in 0..5u64 {
        q.put(payload(i, 40)).await.unwrap();
    }
    let _one = q.get().await.unwrap();
    // The queue holds the lock: opening the file as a queue fails.
    assert!(matches!(
        RingFile::open(&path, &RingOptions::default().create(false)),
        Err(ringq::Error::Locked { .. })
    ));
    let v = &stats_json(&path, &[])[0];
    assert_eq!(v["items"], 4, "{v}");
    assert_eq!(v["bytes_used"], 4 * record_size(40).unwrap() as u64, "{v}");
    assert_eq!(v["capacity"], q.stats().capacity, "{v}");
    assert_eq!(v["damaged"], 0, "{v}");
    assert!(v["oldest_age_s"].is_null(), "{v}");
    for live_only in ["puts", "gets", "commits", "commit_latency"] {
        assert!(
            v.get(live_only).is_none(),
            "{live_only} is not known from a copy: {v}"
        );
    }

    // --watch prints one line per refresh; the count bounds it.
    let lines = stats_json(&path, &["--watch", "--count", "3", "--interval", "50"]);
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["items"] == 4), "{lines:?}");

    // Text says what it cannot show.
    let out = ringq().arg("stats").arg(&path).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(text.contains("items          4"), "{text}");
    assert!(
        text.contains("only the process holding the queue"),
        "{text}"
    );
    // Still held, still unchanged.
    assert_eq!(q.qsize(), 4);
    assert_eq!(q.stats().gets, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringq_stats_watches_a_queue_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.q");
    let q: Queue<Vec<u8>, Raw> = Queue::builder(&path)
        .initial_capacity(4096)
        .open()
        .await
        .unwrap();
    let writer = {
        let q = q.clone();
        tokio::spawn(async move {
            // Puts and gets (the ring wraps and grows) while `ringq stats` reads copies.
            for i in 0..20_000u64 {
                q.put(payload(i, 100)).await.unwrap();
                if i % 3 == 0 {
                    q.get().await.unwrap();
                }
                if i % 256 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let path2 = path.clone();
    let lines = tokio::task::spawn_blocking(move || {
        stats_json(&path2, &["--watch", "--count", "20", "--interval", "10"])
    })
    .await
    .unwrap();
    writer.await.unwrap();
    assert_eq!(lines.len(), 20);
    for l in &lines {
        assert!(l["items"].as_u64().unwrap() <= 20_000, "{l}");
        assert!(l["bytes_used"].as_u64() <= l["capacity"].as_u64(), "{l}");
    }
    let v = &stats_json(&path, &[])[0];
    assert_eq!(v["items"], q.qsize() as u64, "{v}");
    assert_eq!(v["capacity"], q.stats().capacity, "{v}");
}

#[test]
fn ringq_stats_watch_stops_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.q");
    ringq()
        .arg("push")
        .arg(&path)
        .write_stdin("a\nb\n")
        .assert()
        .success();
    let mut child = std::process::Command::new(crate::ringq_bin::ringq_bin())
        .arg("stats")
        .arg(&path)
        .args(["--watch", "--json", "--interval", "50"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["items"], 2);
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringq stats --watch did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn ringq_stats_refuses_what_is_not_a_queue() {
    let dir = tempfile::tempdir().unwrap();
    let not = dir.path().join("notes.txt");
    std::fs::write(&not, "hello\n").unwrap();
    for path in [not.as_path(), dir.path(), &dir.path().join("missing")] {
        let out = ringq().arg("stats").arg(path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("ringq: "));
    }
    assert_eq!(std::fs::read(&not).unwrap(), b"hello\n", "left unchanged");
}

#[cfg(feature = "nats")]
mod prometheus {
    use std::collections::{HashMap, HashSet};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use ringq::{Queue, Raw};

    use crate::relay::{server_or_skip, Server};

    /// A plain HTTP/1.1 GET over a std socket, as a scraper does: status line, headers, body.
    fn http_get(addr: &str, path: &str) -> (u16, HashMap<String, String>, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nUser-Agent: test-scraper\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap();
        let code: u16 = status
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("status line {status:?}"));
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers["content-length"].parse().unwrap();
        assert_eq!(body.len(), len, "Content-Length matches the body");
        (code, headers, body.to_string())
    }

    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// Parses the text exposition format strictly: every sample is `name{labels} value` with
    /// a numeric value, and its family's HELP and TYPE come before it. Returns
    /// `name{labels}` → value.
    fn parse(text: &str) -> HashMap<String, f64> {
        let mut help = HashSet::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = HashMap::new();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, doc) = rest.split_once(' ').expect("HELP name text");
                assert!(valid_name(name) && !doc.is_empty(), "{line}");
                assert!(help.insert(name.to_string()), "one HELP per family: {line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(help.contains(name), "HELP before TYPE: {line}");
                assert!(
                    ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "one TYPE per family: {line}"
                );
                continue;
            }
            assert!(
                !line.starts_with('#'),
                "only HELP and TYPE comments: {line}"
            );
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("numeric value: {line}"));
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("closed labels");
                    for pair in labels.split(',') {
                        let (k, v) = pair.split_once('=').expect("label=value");
                        assert!(valid_name(k), "{line}");
                        assert!(
                            v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                            "{line}"
                        );
                    }
                    name
                }
                None => series,
            };
            assert!(valid_name(name) && name.starts_with("ringq_"), "{line}");
            let family = [
                name,
                name.trim_end_matches("_sum"),
                name.trim_end_matches("_count"),
            ]
            .into_iter()
            .find(|f| types.contains_key(*f))
            .unwrap_or_else(|| panic!("HELP/TYPE before the sample: {line}"));
            if types[family] == "counter" {
                assert!(name.ends_with("_total"), "counters end in _total: {line}");
                assert!(value >= 0.0, "{line}");
            }
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "one sample per series: {line}"
            );
        }
        samples
    }

    fn scrape(addr: &str) -> HashMap<String, f64> {
        let (code, headers, body) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "{body}");
        assert!(
            headers["content-type"].starts_with("text/plain; version=0.0.4"),
            "{headers:?}"
        );
        parse(&body)
    }

    struct Relay(Child);

    impl Drop for Relay {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relay_metrics_scraped_while_it_runs() {
        let Some(bin) = server_or_skip("relay_metrics_scraped_while_it_runs") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q");
        let n = 500u64;
        {
            let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
            for i in 0..n {
                q.put(i.to_le_bytes().to_vec()).await.unwrap();
            }
        }
        // The broker is down at first: the items wait, and the endpoint says so.
        let mut server = Server::not_started(&bin, dir.path());
        let child = Command::new(crate::ringq_bin::ringq_bin())
            .arg("relay")
            .arg(&path)
            .args(["--to", &server.url(), "--subject", "ringq.metrics"])
            .args(["--stream", "METRICS", "--batch", "64"])
            .args(["--metrics", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringq relay");
        let mut relay = Relay(child);
        let mut err = BufReader::new(relay.0.stderr.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            assert!(err.read_line(&mut line).unwrap() > 0, "relay exited");
            if let Some(rest) = line
                .trim()
                .strip_prefix("ringq: serving metrics on http://")
            {
                break rest.strip_suffix("/metrics").unwrap().to_string();
            }
        };
        // Keep reading stderr so the relay never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));

        let m = scrape(&addr);
        assert_eq!(m["ringq_items"], n as f64);
        assert_eq!(m["ringq_relay_lag_items"], n as f64);
        assert_eq!(m["ringq_relay_relayed_total"], 0.0);
        assert_eq!(m["ringq_relay_connected"], 0.0);
        assert_eq!(m["ringq_puts_total"], 0.0);
        assert!(m["ringq_capacity_bytes"] >= m["ringq_used_bytes"]);
        assert!(m["ringq_used_bytes"] > 0.0);
        for zero in [
            "ringq_damaged_records_total",
            "ringq_dropped_full_total",
            "ringq_dead_lettered_total",
            "ringq_shrinks_total",
        ] {
            assert_eq!(m[zero], 0.0, "{zero}");
        }
        let (code, _, _) = http_get(&addr, "/");
        assert_eq!(code, 404);
        let (code, _, _) = http_get(&addr, "/metrics/extra");
        assert_eq!(code, 404);

        server.restart();
        let deadline = Instant::now() + Duration::from_secs(60);
        let m = loop {
            let m = scrape(&addr);
            if m["ringq_relay_relayed_total"] == n as f64 {
                break m;
            }
            assert!(Instant::now() < deadline, "relay made no progress: {m:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(m["ringq_relay_lag_items"], 0.0);
        assert_eq!(m["ringq_items"], 0.0);
        assert_eq!(m["ringq_taken_items"], 0.0);
        assert!(m["ringq_gets_total"] >= n as f64, "{m:?}");
        assert_eq!(m["ringq_relay_connected"], 1.0);
        let count = m["ringq_commit_latency_seconds_count"];
        if count > 0.0 {
            let (p50, p99) = (
                m["ringq_commit_latency_seconds{quantile=\"0.5\"}"],
                m["ringq_commit_latency_seconds{quantile=\"0.99\"}"],
            );
            assert!(0.0 < p50 && p50 <= p99, "{m:?}");
        }
        assert!(
            relay.0.try_wait().unwrap().is_none(),
            "the relay still runs"
        );
    }
}
