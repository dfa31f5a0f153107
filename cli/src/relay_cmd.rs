//! `ringq relay`: move items between a queue file and NATS JetStream or Kafka, at least once.

use std::error::Error;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "kafka")]
use ringq::relay::kafka::KafkaSink;
#[cfg(feature = "nats")]
use ringq::relay::nats::{self, JetStreamSink, PullOptions};
use ringq::relay::{metrics, relay, RelayOptions, RelayStats};
use ringq::{Queue, Raw};

/// Arguments of `ringq relay`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    about = "Relay a queue file into NATS JetStream or Kafka (--to), or fill it from JetStream (--from)",
    after_help = "Examples:\n  ringq relay jobs.q --to nats://127.0.0.1:4222 --subject jobs --stream JOBS\n  \
                  ringq relay --from nats://127.0.0.1:4222 --subject jobs jobs-copy.q\n  \
                  ringq relay jobs.q --to kafka://127.0.0.1:9092 --topic jobs   (built with --features kafka)"
)]
pub struct RelayArgs {
    /// The queue file (created if missing).
    pub file: PathBuf,
    /// Drain the queue into JetStream at this server (nats://HOST:PORT), or into Kafka at
    /// these brokers (kafka://HOST:PORT[,HOST:PORT...]).
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "from",
        conflicts_with = "from"
    )]
    pub to: Option<String>,
    /// Fill the queue from a durable JetStream pull consumer at this server.
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// The subject to publish to (--to) or consume (--from); for Kafka, the topic (alias
    /// --topic; the relay writes to its partition 0). Give each queue its own.
    #[arg(long, visible_alias = "topic")]
    pub subject: String,
    /// The stream (--to: created with a 10 min duplicate window if missing). By default the
    /// stream that takes the subject.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// Items per batch: taken, published, acknowledged and committed together.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub batch: usize,
    /// Name of the durable consumer (--from).
    #[arg(long, value_name = "NAME", default_value = "ringq")]
    pub durable: String,
    /// Seconds the broker waits for an acknowledgement before delivering again (--from; used
    /// when the consumer is created).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub ack_wait: f64,
    /// Largest ring the queue file may grow to (--from): a message larger than that stops the
    /// relay, unacknowledged.
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,
    /// Exit once there is nothing left to move (--to: the queue is empty; --from: a fetch
    /// comes back empty).
    #[arg(long)]
    pub drain: bool,
    /// Print a JSON status line on stdout every interval (and one at the end).
    #[arg(long)]
    pub json: bool,
    /// Seconds between progress lines.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub interval: f64,
    /// Serve the queue's stats and the relay's counters in the Prometheus text format at
    /// http://ADDR/metrics (e.g. 127.0.0.1:9464; port 0 picks one, printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

/// Runs `ringq relay` on its own tokio runtime until Ctrl-C/SIGTERM (or `--drain`).
pub fn run(args: RelayArgs) -> Result<(), Box<dyn Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The broker a URL names, in the build's features.
enum Broker {
    #[cfg(feature = "nats")]
    Nats(String),
    #[cfg(feature = "kafka")]
    Kafka(String),
}

/// The broker of `--to` or `--from`, checked against the other arguments.
fn broker(args: &RelayArgs) -> Result<Broker, String> {
    let url = args
        .to
        .as_deref()
        .or(args.from.as_deref())
        .ok_or("give --to URL or --from URL")?;
    match url.strip_prefix("kafka://") {
        #[cfg(feature = "kafka")]
        Some(_) if args.from.is_some() => Err(
            "the Kafka relay only drains a queue (--to kafka://...); --from is NATS only".into(),
        ),
        #[cfg(feature = "kafka")]
        Some(_) if args.stream.is_some() => {
            Err("--stream is for NATS; with Kafka, --topic names the topic".into())
        }
        #[cfg(feature = "kafka")]
        Some(hosts) => Ok(Broker::Kafka(hosts.trim_end_matches('/').to_string())),
        #[cfg(not(feature = "kafka"))]
        Some(_) => Err(
            "this ringq was built without Kafka support: rebuild it with \
                        `--features kafka` (cargo install ringq --features kafka)"
                .into(),
        ),
        #[cfg(feature = "nats")]
        None => Ok(Broker::Nats(url.to_string())),
        #[cfg(not(feature = "nats"))]
        None => Err(format!(
            "{url}: this ringq relays to Kafka only (kafka://HOST:PORT); rebuild it with \
             `--features nats` for NATS"
        )),
    }
}

fn relay_options(args: &RelayArgs) -> RelayOptions {
    RelayOptions {
        batch: args.batch.max(1),
        until_empty: args.drain,
        ..Default::default()
    }
}

async fn run_async(args: RelayArgs) -> Result<(), Box<dyn Error>> {
    let broker = broker(&args)?;
    let mut builder = Queue::<Vec<u8>, Raw>::builder(&args.file);
    if let Some(b) = args.max_bytes {
        builder = builder.max_bytes(b);
    }
    let queue = builder.open().await?;
    let stats = Arc::new(RelayStats::default());
    let _metrics = match &args.metrics {
        Some(addr) => {
            let (q, s) = (queue.clone(), Arc::clone(&stats));
            let server = metrics::serve(addr, move || metrics::render(&q, &s))
                .await
                .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
            eprintln!(
                "ringq: serving metrics on http://{}/metrics",
                server.local_addr()
            );
            Some(server)
        }
        None => None,
    };
    let progress = tokio::spawn(report(
        queue.clone(),
        Arc::clone(&stats),
        args.clone(),
        false,
    ));
    let result = match broker {
        #[cfg(feature = "nats")]
        Broker::Nats(url) => with_nats(&queue, &url, &args, &stats).await,
        #[cfg(feature = "kafka")]
        Broker::Kafka(hosts) => to_kafka(&queue, &hosts, &args, &stats).await,
    };
    progress.abort();
    // The last line, whatever happened.
    report(queue.clone(), Arc::clone(&stats), args, true).await;
    result
}

#[cfg(feature = "nats")]
async fn with_nats(
    queue: &Queue<Vec<u8>, Raw>,
    url: &str,
    args: &RelayArgs,
    stats: &RelayStats,
) -> Result<(), Box<dyn Error>> {
    let client = nats::connect(url).await?;
    let result: Result<(), Box<dyn Error>> = if args.to.is_some() {
        let mut sink = JetStreamSink::new(client.clone(), &args.subject, args.stream.clone(), true);
        relay(queue, &mut sink, &relay_options(args), stats, stop_signal())
            .await
            .map_err(Into::into)
    } else {
        let opts = PullOptions {
            subject: args.subject.clone(),
            stream: args.stream.clone(),
            durable: args.durable.clone(),
            batch: args.batch.max(1),
            until_idle: args.drain,
            ack_wait: Duration::from_secs_f64(args.ack_wait.max(0.1)),
        };
        nats::pull(queue, client.clone(), &opts, stats, stop_signal())
            .await
            .map_err(Into::into)
    };
    let _ = client.flush().await;
    result
}

#[cfg(feature = "kafka")]
async fn to_kafka(
    queue: &Queue<Vec<u8>, Raw>,
    hosts: &str,
    args: &RelayArgs,
    stats: &RelayStats,
) -> Result<(), Box<dyn Error>> {
    let mut sink = KafkaSink::new(hosts, &args.subject);
    relay(queue, &mut sink, &relay_options(args), stats, stop_signal()).await?;
    Ok(())
}

/// Prints progress every interval (a `\r` line on a terminal, JSON lines with `--json`), or
/// once when `last`.
async fn report(queue: Queue<Vec<u8>, Raw>, stats: Arc<RelayStats>, args: RelayArgs, last: bool) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    let tty = std::io::stderr().is_terminal();
    let every = Duration::from_secs_f64(args.interval.max(0.05));
    let mut prev = (start, 0u64);
    loop {
        if !last {
            tokio::time::sleep(every).await;
        }
        let now = Instant::now();
        let relayed = stats.relayed.load(Ordering::Relaxed);
        let rate = if last {
            relayed as f64 / now.duration_since(start).as_secs_f64().max(1e-9)
        } else {
            (relayed - prev.1) as f64 / now.duration_since(prev.0).as_secs_f64().max(1e-9)
        };
        prev = (now, relayed);
        let depth = queue.qsize();
        let retries = stats.retries.load(Ordering::Relaxed);
        let connected = stats.connected.load(Ordering::Relaxed);
        // Records carry no timestamp: the age of the oldest unsent item is bounded by the time
        // since the broker last acknowledged something, shown while items wait.
        let stalled = if depth > 0 {
            stats.since_last_ack().map(|d| d.as_secs_f64())
        } else {
            None
        };
        let error = stats.last_error();
        if args.json {
            let line = serde_json::json!({
                "direction": if args.to.is_some() { "to" } else { "from" },
                "relayed": relayed,
                "rate": rate.round(),
                "depth": depth,
                "skipped": stats.skipped.load(Ordering::Relaxed),
                "duplicates": stats.duplicates.load(Ordering::Relaxed),
                "retries": retries,
                "connected": connected,
                "since_ack_s": stalled,
                "error": error,
                "done": last,
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        } else if tty || last {
            let mut line =
                format!("relayed {relayed}  {rate:.0}/s  depth {depth}  retries {retries}");
            if let Some(s) = stalled.filter(|s| *s >= 1.0) {
                line.push_str(&format!("  no ack for {s:.0}s"));
            }
            if let Some(e) = &error {
                line.push_str(&format!("  [{e}]"));
            }
            let mut err = std::io::stderr().lock();
            if tty {
                let _ = write!(err, "\r\x1b[2K{line}");
                if last {
                    let _ = writeln!(err);
                }
            } else {
                let _ = writeln!(err, "{line}");
            }
        }
        if last {
            return;
        }
    }
}
