//! `ringq relay --metrics ADDR`: the queue's [`Stats`] and the relay's [`RelayStats`] in the
//! Prometheus text exposition format (0.0.4), served by a minimal HTTP/1.1 server on tokio.
//!
//! `GET /metrics` (or `HEAD`) answers 200 with the samples; any other request 404 (405 for
//! another method, 400 for a request that does not parse). One request per connection
//! (`Connection: close`): a scraper opens one per scrape anyway.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::RelayStats;
use crate::{Queue, Raw, Stats};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The longest request head read (a scrape sends a few hundred bytes).
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One metric family being written: HELP and TYPE come first, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &str, value: f64) -> &mut Self {
        let _ = if labels.is_empty() {
            writeln!(self.out, "{name} {value}")
        } else {
            writeln!(self.out, "{name}{{{labels}}} {value}")
        };
        self
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "counter", help).sample(name, "", value as f64);
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    family(out, name, "gauge", help).sample(name, "", value);
}

/// Writes a queue's stats as Prometheus text: gauges for its state, `_total` counters for
/// what happened since open, a summary for commit latency (seconds).
pub fn write_queue_stats(out: &mut String, s: &Stats) {
    gauge(
        out,
        "ringq_items",
        "Items waiting to be gotten.",
        s.items as f64,
    );
    gauge(
        out,
        "ringq_taken_items",
        "Items handed out by a guarded get and not yet committed.",
        s.taken as f64,
    );
    gauge(
        out,
        "ringq_used_bytes",
        "Bytes of the ring in use.",
        s.bytes_used as f64,
    );
    gauge(
        out,
        "ringq_capacity_bytes",
        "Ring capacity in bytes.",
        s.capacity as f64,
    );
    if let Some(age) = s.oldest_age {
        gauge(
            out,
            "ringq_oldest_item_age_seconds",
            "Age of the oldest item.",
            age.as_secs_f64(),
        );
    }
    counter(out, "ringq_puts_total", "Items put since open.", s.puts);
    counter(
        out,
        "ringq_gets_total",
        "Items handed out since open (again after a release).",
        s.gets,
    );
    counter(
        out,
        "ringq_commits_total",
        "Durable commits since open.",
        s.commits,
    );
    let name = "ringq_commit_latency_seconds";
    let mut f = family(
        out,
        name,
        "summary",
        "Latency of the flusher's durable commits since open.",
    );
    let l = s.commit_latency.unwrap_or_default();
    if l.count > 0 {
        f.sample(name, "quantile=\"0.5\"", l.p50.as_secs_f64())
            .sample(name, "quantile=\"0.99\"", l.p99.as_secs_f64());
    }
    f.sample(&format!("{name}_sum"), "", l.sum.as_secs_f64())
        .sample(&format!("{name}_count"), "", l.count as f64);
    counter(
        out,
        "ringq_dropped_full_total",
        "Items dropped by a full-queue policy (none exists yet: always 0).",
        s.dropped_full,
    );
    counter(
        out,
        "ringq_damaged_records_total",
        "Damaged records skipped: at open by recovery, and on read since.",
        s.damaged,
    );
    counter(
        out,
        "ringq_dead_lettered_total",
        "Items moved to a dead-letter file (not implemented yet: always 0).",
        s.dead_lettered,
    );
    counter(out, "ringq_grows_total", "Times the ring grew.", s.grows);
    counter(
        out,
        "ringq_shrinks_total",
        "Times the ring shrank (it never does yet: always 0).",
        s.shrinks,
    );
}

/// Writes a relay's counters; `lag` is the items waiting in the queue file.
pub fn write_relay_stats(out: &mut String, r: &RelayStats, lag: u64) {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    counter(
        out,
        "ringq_relay_relayed_total",
        "Items the broker acknowledged and the queue committed (or, filling the queue, items put).",
        load(&r.relayed),
    );
    counter(
        out,
        "ringq_relay_skipped_total",
        "Items committed without sending because the broker already held them.",
        load(&r.skipped),
    );
    counter(
        out,
        "ringq_relay_duplicates_total",
        "Acknowledgements the broker flagged as duplicates.",
        load(&r.duplicates),
    );
    counter(
        out,
        "ringq_relay_retries_total",
        "Batches sent again after a failure, and start-up reads retried.",
        load(&r.retries),
    );
    gauge(
        out,
        "ringq_relay_lag_items",
        "Items waiting in the queue file.",
        lag as f64,
    );
    gauge(
        out,
        "ringq_relay_connected",
        "1 while the last exchange with the broker succeeded.",
        f64::from(u8::from(r.connected.load(Ordering::Relaxed))),
    );
}

/// The whole page for a relay: the queue's stats, then the relay's counters.
pub fn render(queue: &Queue<Vec<u8>, Raw>, relay: &RelayStats) -> String {
    let stats = queue.stats();
    let mut out = String::with_capacity(4096);
    write_queue_stats(&mut out, &stats);
    write_relay_stats(&mut out, relay, stats.items);
    out
}

/// A running metrics endpoint; dropping it stops the server.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `addr` and answers `GET /metrics` with `page()`, until the returned server is
/// dropped. Must be called inside a tokio runtime.
pub async fn serve<F>(addr: &str, page: F) -> std::io::Result<MetricsServer>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let page = Arc::new(page);
    let task = tokio::spawn(async move {
        loop {
            let (conn, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    log::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let page = Arc::clone(&page);
            tokio::spawn(async move {
                if let Err(e) = answer(conn, &*page).await {
                    log::debug!("metrics: {e}");
                }
            });
        }
    });
    Ok(MetricsServer { addr: local, task })
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head: bool },
    NotFound,
    BadMethod,
    BadRequest,
}

/// Parses a request head (the bytes up to the blank line).
fn route(head: &[u8]) -> Route {
    let Some(line) = head
        .split(|&b| b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
    else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics { head: false },
        ("HEAD", "/metrics") => Route::Metrics { head: true },
        ("GET" | "HEAD", _) => Route::NotFound,
        _ => Route::BadMethod,
    }
}

async fn read_head(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buf); // closed early: whatever came is parsed (and refused)
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(buf);
        }
        if buf.len() > MAX_REQUEST {
            return Ok(buf);
        }
    }
}

async fn answer(
    mut conn: TcpStream,
    page: &(dyn Fn() -> String + Send + Sync),
) -> std::io::Result<()> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut conn))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    let (status, body, send_body) = match route(&head) {
        Route::Metrics { head } => ("200 OK", page(), !head),
        Route::NotFound => ("404 Not Found", "not found: try /metrics\n".into(), true),
        Route::BadMethod => ("405 Method Not Allowed", "use GET\n".into(), true),
        Route::BadRequest => ("400 Bad Request", "bad request\n".into(), true),
    };
    let content_type = if status.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if send_body {
        response.push_str(&body);
    }
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::Metrics { head: true }
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics SPDY/3\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let mut out = String::new();
        write_queue_stats(&mut out, &Stats::default());
        write_relay_stats(&mut out, &RelayStats::default(), 7);
        let mut declared = std::collections::HashSet::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = name
                    .strip_suffix("_sum")
                    .or(name.strip_suffix("_count"))
                    .unwrap_or(name);
                assert!(declared.contains(name) || declared.contains(base), "{line}");
            }
        }
        assert!(out.contains("\nringq_relay_lag_items 7\n"), "{out}");
        assert!(out.contains("ringq_commit_latency_seconds_count 0\n"));
        assert!(!out.contains("quantile"), "no quantiles before any commit");
    }
}
