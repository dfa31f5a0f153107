//! NATS JetStream: the [`Sink`] the relay drains into, and the reverse direction
//! ([`pull()`]: a durable pull consumer filling a local queue).
//!
//! Every message carries the headers `Nats-Msg-Id: <epoch>-<seq>` (JetStream drops a repeat
//! inside the stream's duplicate window), `Ringq-Epoch: <epoch>` and `Ringq-Seq: <seq>` (read
//! back at start by [`JetStreamSink::last_forwarded`] to skip what the stream already holds).

use std::future::{Future, IntoFuture};
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use async_nats::{Client, HeaderMap, Subject};

use super::{BatchAck, Forwarded, RelayStats, Sink, SinkError};
use crate::{Error, Queue, Raw};

/// Header carrying the item's sequence number in its queue file.
pub const SEQ_HEADER: &str = "Ringq-Seq";
/// Header carrying the queue file's epoch (its random identity).
pub const EPOCH_HEADER: &str = "Ringq-Epoch";
/// The duplicate window given to a stream the relay creates.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
/// How long a batch may wait for its acknowledgements before it is sent again.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a metadata request (stream lookup, last message) may take before it is retried.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to `url`, retrying the first connection and every reconnection for ever with a
/// back-off from 100 ms doubling to 5 s. Returns at once even if the server is down:
/// requests wait for (or time out before) the connection.
pub async fn connect(url: &str) -> Result<Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name("ringq-relay")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempt| {
            let ms = 100u64.saturating_mul(1u64 << attempt.min(16));
            Duration::from_millis(ms.min(5_000))
        })
        .connect(url)
        .await
}

fn retryable(what: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::retryable(format!("{what}: {e}"))
}

/// Finds (or, when `create`, creates) the stream that takes `subject`, and checks that it
/// does. Without a name, the stream is the one whose subjects match `subject`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    subject: &str,
    name: Option<&str>,
    create: bool,
) -> Result<stream::Stream, SinkError> {
    use async_nats::jetstream::context::{GetStreamByNameErrorKind, GetStreamErrorKind};
    let owner = match js.stream_by_subject(subject).await {
        Ok(n) => Some(n),
        Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => None,
        Err(e) => return Err(retryable("cannot look up the stream for the subject", e)),
    };
    match (name, owner) {
        (Some(name), Some(owner)) if owner != name => Err(SinkError::permanent(format!(
            "subject {subject} belongs to stream {owner}, not to stream {name}"
        ))),
        (_, Some(owner)) => js
            .get_stream(&owner)
            .await
            .map_err(|e| retryable("cannot get the stream", e)),
        (None, None) => Err(SinkError::permanent(format!(
            "no stream takes subject {subject}: create one, or give --stream NAME to let the relay create it"
        ))),
        (Some(name), None) if create => {
            match js.get_stream(name).await {
                Ok(_) => {
                    return Err(SinkError::permanent(format!(
                        "stream {name} exists but does not take subject {subject}"
                    )))
                }
                Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => {}
                Err(e) => return Err(retryable("cannot get the stream", e)),
            }
            let config = stream::Config {
                name: name.to_string(),
                subjects: vec![subject.to_string()],
                duplicate_window: DUPLICATE_WINDOW,
                storage: stream::StorageType::File,
                ..Default::default()
            };
            log::info!("relay: creating stream {name} for subject {subject}");
            js.create_stream(config)
                .await
                .map_err(|e| retryable("cannot create the stream", e))
        }
        (Some(name), None) => Err(SinkError::permanent(format!(
            "stream {name} does not take subject {subject}"
        ))),
    }
}

/// The JetStream end of the drain direction: publishes a batch pipelined (every publish sent,
/// then every acknowledgement awaited) to one subject.
pub struct JetStreamSink {
    client: Client,
    js: jetstream::Context,
    subject: Subject,
    stream_name: Option<String>,
    create: bool,
    stream: Option<stream::Stream>,
}

impl JetStreamSink {
    /// A sink publishing to `subject`. The stream is looked up (or created, when
    /// `stream_name` is given and `create` is true) on the first [`Sink::last_forwarded`].
    pub fn new(client: Client, subject: &str, stream_name: Option<String>, create: bool) -> Self {
        let js = jetstream::new(client.clone());
        JetStreamSink {
            client,
            js,
            subject: Subject::from(subject),
            stream_name,
            create,
            stream: None,
        }
    }

    async fn publish_all(
        &self,
        epoch: u64,
        items: &[(u64, Vec<u8>)],
    ) -> Result<BatchAck, SinkError> {
        let mut acks = Vec::with_capacity(items.len());
        for (seq, payload) in items {
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{epoch}-{seq}").as_str(),
            );
            headers.insert(EPOCH_HEADER, epoch.to_string().as_str());
            headers.insert(SEQ_HEADER, seq.to_string().as_str());
            let ack = self
                .js
                .publish_with_headers(self.subject.clone(), headers, payload.clone().into())
                .await
                .map_err(|e| retryable("publish", e))?;
            acks.push(ack.into_future());
        }
        let mut out = BatchAck::default();
        for r in futures::future::join_all(acks).await {
            match r {
                Ok(ack) => out.duplicates += u64::from(ack.duplicate),
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                    return Err(SinkError::permanent(format!("publish: {e}")))
                }
                Err(e) => return Err(retryable("publish acknowledgement", e)),
            }
        }
        Ok(out)
    }
}

impl Sink for JetStreamSink {
    async fn publish_batch(
        &mut self,
        epoch: u64,
        items: &[(u64, Vec<u8>)],
    ) -> Result<BatchAck, SinkError> {
        // An item the server can never take would stall the relay for ever: say which.
        let max = self.client.server_info().max_payload;
        if max > 0 {
            if let Some((seq, p)) = items.iter().find(|(_, p)| p.len() + 128 > max) {
                return Err(SinkError::permanent(format!(
                    "item {seq} ({} bytes) is larger than the server's max_payload ({max} bytes); \
                     raise max_payload or remove the item; it stays in the queue",
                    p.len()
                )));
            }
        }
        match tokio::time::timeout(BATCH_TIMEOUT, self.publish_all(epoch, items)).await {
            Ok(r) => r,
            Err(_) => Err(SinkError::retryable(format!(
                "no acknowledgement for the batch within {BATCH_TIMEOUT:?} (is the server up?)"
            ))),
        }
    }

    async fn last_forwarded(&mut self) -> Result<Option<Forwarded>, SinkError> {
        if self.stream.is_none() {
            let found = tokio::time::timeout(
                REQUEST_TIMEOUT,
                ensure_stream(
                    &self.js,
                    &self.subject,
                    self.stream_name.as_deref(),
                    self.create,
                ),
            )
            .await
            .map_err(|_| SinkError::retryable("no answer from the server (is it up?)"))??;
            self.stream = Some(found);
        }
        let Some(stream) = self.stream.as_ref() else {
            unreachable!("set above")
        };
        let last = tokio::time::timeout(
            REQUEST_TIMEOUT,
            stream.get_last_raw_message_by_subject(&self.subject),
        )
        .await
        .map_err(|_| SinkError::retryable("no answer from the server (is it up?)"))?;
        let msg = match last {
            Ok(m) => m,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(None)
            }
            Err(e) => return Err(retryable("cannot read the last message of the subject", e)),
        };
        let header = |name: &str| {
            msg.headers
                .get(name)
                .and_then(|v| v.as_str().parse::<u64>().ok())
        };
        Ok(match (header(EPOCH_HEADER), header(SEQ_HEADER)) {
            (Some(epoch), Some(seq)) => Some(Forwarded { epoch, seq }),
            _ => None,
        })
    }
}

/// How [`pull()`] takes messages from JetStream.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// The subject to consume (the consumer's filter).
    pub subject: String,
    /// The stream; by default the one that takes `subject`.
    pub stream: Option<String>,
    /// The durable consumer's name (created if missing, explicit acks).
    pub durable: String,
    /// Most messages fetched (and in flight) at once.
    pub batch: usize,
    /// Return once a fetch comes back empty and the consumer has nothing pending.
    pub until_idle: bool,
    /// How long the broker waits for an acknowledgement before delivering a message again
    /// (used when the consumer is created). Also how long a restarted relay waits for the
    /// messages a killed one had taken but not acknowledged.
    pub ack_wait: Duration,
}

/// Why [`pull()`] stopped with an error.
#[derive(Debug)]
pub enum PullError {
    /// The local queue failed.
    Queue(Error),
    /// A message the local queue can never hold. It was not acknowledged (nor anything after
    /// it): JetStream delivers it again to the next relay, which must run with a larger limit.
    TooLarge {
        /// The message's sequence number in the stream.
        stream_seq: u64,
        /// Its payload size in bytes.
        size: usize,
        /// The queue's refusal.
        source: Error,
    },
    /// The broker refused for good (no stream, a bad consumer configuration).
    Broker(SinkError),
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PullError::Queue(e) => write!(f, "local queue: {e}"),
            PullError::TooLarge {
                stream_seq,
                size,
                source,
            } => write!(
                f,
                "stream message {stream_seq} ({size} bytes) does not fit in the local queue ({source}); \
                 it was not acknowledged and will be delivered again"
            ),
            PullError::Broker(e) => write!(f, "broker: {e}"),
        }
    }
}

impl std::error::Error for PullError {}

impl From<Error> for PullError {
    fn from(e: Error) -> Self {
        PullError::Queue(e)
    }
}

/// The consumer to fetch from, positioned right after what `queue` holds, and how many of
/// the first messages it delivers the queue already holds (see [`crate::SourceMark`]).
///
/// JetStream delivers a message that a stopped relay took but never acknowledged again only
/// after `ack_wait`, and newer ones before it: resuming from such a consumer would store
/// out of order. The queue's mark says exactly where it stands, so in that case the consumer
/// is recreated to start right after the mark.
async fn positioned_consumer(
    js: &jetstream::Context,
    opts: &PullOptions,
    queue: &Queue<Vec<u8>, Raw>,
) -> Result<(jetstream::consumer::Consumer<pull::Config>, u64), SinkError> {
    let stream = ensure_stream(js, &opts.subject, opts.stream.as_deref(), false).await?;
    let config = pull::Config {
        durable_name: Some(opts.durable.clone()),
        filter_subject: opts.subject.clone(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: opts.ack_wait,
        ..Default::default()
    };
    let mut c = stream
        .get_or_create_consumer(&opts.durable, config.clone())
        .await
        .map_err(|e| retryable("cannot get or create the consumer", e))?;
    let info = c
        .info()
        .await
        .map_err(|e| retryable("consumer info", e))?
        .clone();
    let (mark, unmarked) = match queue.source_mark() {
        Some(m) => (m.seq, m.unmarked),
        None => {
            // The first fill of this file starts after what the consumer has acknowledged.
            let floor = info.ack_floor.stream_sequence;
            queue
                .set_source_seq(floor)
                .map_err(|e| SinkError::permanent(format!("local queue: {e}")))?;
            (floor, 0)
        }
    };
    let in_step =
        info.num_ack_pending == 0 && info.delivered.stream_sequence == mark && unmarked == 0;
    if !in_step {
        log::info!(
            "relay: consumer {} restarts after stream message {mark} (the queue holds {unmarked} more)",
            opts.durable
        );
        stream
            .delete_consumer(&opts.durable)
            .await
            .map_err(|e| retryable("cannot reset the consumer", e))?;
        let config = pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: mark + 1,
            },
            ..config
        };
        c = stream
            .create_consumer(config)
            .await
            .map_err(|e| retryable("cannot create the consumer", e))?;
    }
    Ok((c, unmarked))
}

/// Fills `queue` from a durable JetStream pull consumer until `stop` completes (or, with
/// [`PullOptions::until_idle`], a fetch comes back empty).
///
/// Each fetched batch is put in the queue with [`Queue::put_from_source`], made durable
/// ([`Queue::sync`]), and only then acknowledged to the broker: a crash before the
/// acknowledgements loses nothing. The queue's [`Queue::source_mark`] records the stream
/// position with the records themselves, so a restarted relay resumes right after what the
/// queue holds: no message is stored twice and the order is the stream's. The relay must be
/// the queue's only producer. A message the queue can never hold stops the relay with
/// [`PullError::TooLarge`], unacknowledged.
pub async fn pull<F: Future<Output = ()>>(
    queue: &Queue<Vec<u8>, Raw>,
    client: Client,
    opts: &PullOptions,
    stats: &RelayStats,
    stop: F,
) -> Result<(), PullError> {
    let js = jetstream::new(client);
    let mut stop = std::pin::pin!(stop);
    let mut stop = futures::future::FutureExt::fuse(stop.as_mut());
    let min = Duration::from_millis(100);
    let mut delay = min;
    let mut consumer_handle = None;
    // Messages at the start of the consumer that the queue already holds.
    let mut already_held = 0;
    // Failpoint for the crash tests: abort after this many puts, before they are synced.
    let mut abort_after = std::env::var("RINGQ_TEST_ABORT_AFTER_PUTS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    'outer: loop {
        let failure = 'round: {
            let c = match &consumer_handle {
                Some(c) => c,
                None => match tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    positioned_consumer(&js, opts, queue),
                )
                .await
                {
                    Ok(Ok((c, held))) => {
                        already_held = held;
                        consumer_handle.insert(c)
                    }
                    Ok(Err(e)) if !e.retryable => return Err(PullError::Broker(e)),
                    Ok(Err(e)) => break 'round e,
                    Err(_) => {
                        break 'round SinkError::retryable("no answer from the server (is it up?)")
                    }
                },
            };
            let fetched = async {
                use futures::StreamExt;
                let mut msgs = c
                    .batch()
                    .max_messages(opts.batch.max(1))
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
                    .map_err(|e| retryable("fetch", e))?;
                let mut out = Vec::new();
                while let Some(m) = msgs.next().await {
                    out.push(m.map_err(|e| retryable("fetch", e))?);
                }
                Ok::<_, SinkError>(out)
            };
            let msgs = tokio::select! {
                r = tokio::time::timeout(BATCH_TIMEOUT, fetched) => match r {
                    Ok(Ok(m)) => m,
                    Ok(Err(e)) => break 'round e,
                    Err(_) => break 'round SinkError::retryable("fetch timed out (is the server up?)"),
                },
                _ = &mut stop => return Ok(()),
            };
            stats.ok();
            delay = min;
            if msgs.is_empty() {
                if opts.until_idle {
                    // Messages a killed relay took are delivered again only after ack_wait.
                    match c.get_info().await {
                        Ok(i) if i.num_pending == 0 && i.num_ack_pending == 0 => return Ok(()),
                        Ok(_) => {}
                        Err(e) => break 'round retryable("consumer info", e),
                    }
                }
                continue 'outer;
            }
            let mut taken = 0;
            let mut refused = None;
            let mut stopped = false;
            for m in &msgs {
                let Ok(stream_seq) = m.info().map(|i| i.stream_sequence) else {
                    break 'round SinkError::retryable("a message without JetStream metadata");
                };
                let mark = queue.source_mark().map_or(0, |m| m.seq);
                if stream_seq <= mark {
                    // Delivered again (an acknowledgement that did not arrive): held already.
                    taken += 1;
                    continue;
                }
                if already_held > 0 {
                    // Recovered from before a crash without its mark: held, mark it.
                    already_held -= 1;
                    queue.set_source_seq(stream_seq)?;
                    taken += 1;
                    continue;
                }
                let put = tokio::select! {
                    r = queue.put_from_source(m.payload.to_vec(), stream_seq) => r,
                    _ = &mut stop => { stopped = true; break }
                };
                match put {
                    Ok(()) => {
                        taken += 1;
                        stats.relayed.fetch_add(1, Ordering::Relaxed);
                        if let Some(n) = abort_after.as_mut() {
                            *n = n.saturating_sub(1);
                            if *n == 0 {
                                std::process::abort();
                            }
                        }
                    }
                    Err(e @ Error::TooLarge { .. }) => {
                        refused = Some(PullError::TooLarge {
                            stream_seq,
                            size: m.payload.len(),
                            source: e,
                        });
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // Durable first, then acknowledged: a crash in between redelivers, never loses.
            queue.sync().await?;
            let acks = msgs[..taken].iter().map(|m| m.double_ack());
            let mut unacked = 0;
            for r in futures::future::join_all(acks).await {
                if let Err(e) = r {
                    unacked += 1;
                    log::warn!("relay: acknowledgement not confirmed ({e}); the broker may deliver it again");
                }
            }
            if unacked > 0 {
                stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(e) = refused {
                return Err(e);
            }
            if stopped {
                return Ok(());
            }
            continue 'outer;
        };
        if !failure.retryable {
            return Err(PullError::Broker(failure));
        }
        log::warn!("relay: {failure}; retrying");
        stats.failed(&failure);
        consumer_handle = None;
        if !super::backoff(&mut delay, Duration::from_secs(5), &mut stop).await {
            return Ok(());
        }
    }
}
