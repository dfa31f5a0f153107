//! Kafka: the [`Sink`] the relay drains into (feature `kafka`: rdkafka over its bundled
//! librdkafka).
//!
//! Every record goes to **partition 0** of the topic (Kafka orders records per partition
//! only; give each queue file its own topic, best with a single partition), with no key and
//! two headers: `ringq-epoch: <epoch>` and `ringq-seq: <seq>` (decimal). Consumers drop the
//! repeats by that pair.
//!
//! The producer is idempotent (`enable.idempotence=true`, `acks=all`) with
//! `enable.gapless.guarantee=true` and no local message timeout (`message.timeout.ms=0`):
//! within one producer instance, librdkafka's own retries add no duplicate, and what reaches
//! the partition is always a *prefix* of what the instance was given, never a series with a
//! hole. That makes the last record of the partition a safe mark: every item up to its
//! `ringq-seq` is stored, so [`KafkaSink::last_forwarded`] (and the sink itself, after it
//! replaced a failed producer) can skip them instead of sending them twice.
//!
//! A batch waits at most [`BATCH_TIMEOUT`] for its acknowledgements; then `publish_batch`
//! reports a retryable error but keeps the records in flight, and the relay's next attempt
//! at the same batch waits for those same records instead of sending them again. A producer
//! that failed (a fatal error, a record refused) is replaced, after which the sink reads the
//! mark again before sending. What remains: a relay killed while a batch is in flight can
//! see records of that batch land after the next relay read the mark; that next relay then
//! sends them again. So, per relay crash, at most one batch may repeat.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::{BatchAck, Forwarded, Sink, SinkError};

/// Header carrying the item's sequence number in its queue file (decimal).
pub const SEQ_HEADER: &str = "ringq-seq";
/// Header carrying the queue file's epoch, its random identity (decimal).
pub const EPOCH_HEADER: &str = "ringq-epoch";
/// The partition every record goes to.
pub const PARTITION: i32 = 0;
/// How long a batch may wait for its acknowledgements before `publish_batch` reports a
/// retryable error (the records stay in flight and are waited for again by the next attempt).
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading the partition's last record may take before it is retried.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Room left for the headers and the record framing when checking an item's size against
/// `message.max.bytes`.
const RECORD_OVERHEAD: usize = 128;

/// Items of one batch handed to the producer and not all acknowledged yet.
struct InFlight {
    epoch: u64,
    /// The batch as the relay gave it: first seq, last seq, length.
    batch: (u64, u64, usize),
    /// Every record of the batch is in the producer (false: the enqueueing was interrupted).
    complete: bool,
    /// Items of the batch skipped because the partition already held them.
    skipped: u64,
    /// Items acknowledged as repeats (the broker already had them from this producer).
    duplicates: u64,
    /// Delivery reports still awaited, oldest first, with the item's seq.
    deliveries: VecDeque<(u64, DeliveryFuture)>,
}

fn batch_id(items: &[(u64, Vec<u8>)]) -> (u64, u64, usize) {
    let first = items.first().map_or(0, |(s, _)| *s);
    let last = items.last().map_or(0, |(s, _)| *s);
    (first, last, items.len())
}

/// The Kafka end of the drain direction: an idempotent producer writing to partition 0 of one
/// topic, a whole batch in flight at once.
pub struct KafkaSink {
    config: ClientConfig,
    topic: String,
    max_message_bytes: usize,
    batch_timeout: Duration,
    request_timeout: Duration,
    producer: Option<FutureProducer>,
    in_flight: Option<InFlight>,
    /// A producer was dropped with records possibly written: read the mark before sending.
    resync: bool,
}

impl KafkaSink {
    /// A sink writing to `topic` through the brokers `bootstrap` (`host:port[,host:port…]`).
    pub fn new(bootstrap: &str, topic: &str) -> Self {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        Self::with_config(config, topic)
    }

    /// A sink with the caller's librdkafka configuration (`bootstrap.servers`, security,
    /// `linger.ms`, `message.max.bytes`…). The sink sets `enable.idempotence=true`,
    /// `acks=all`, `enable.gapless.guarantee=true` and `message.timeout.ms=0` over it: its
    /// guarantees rest on them.
    pub fn with_config(mut config: ClientConfig, topic: &str) -> Self {
        if config.get("client.id").is_none() {
            config.set("client.id", "ringq-relay");
        }
        let max_message_bytes = config
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        KafkaSink {
            config,
            topic: topic.to_string(),
            max_message_bytes,
            batch_timeout: BATCH_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            producer: None,
            in_flight: None,
            resync: false,
        }
    }

    /// Sets how long a batch waits for its acknowledgements before `publish_batch` reports a
    /// retryable error ([`BATCH_TIMEOUT`] by default), and how long reading the partition's
    /// last record may take ([`REQUEST_TIMEOUT`]).
    pub fn timeouts(mut self, batch: Duration, request: Duration) -> Self {
        self.batch_timeout = batch;
        self.request_timeout = request;
        self
    }

    /// The topic the sink writes to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn producer(&mut self) -> Result<FutureProducer, SinkError> {
        if let Some(p) = &self.producer {
            return Ok(p.clone());
        }
        let mut config = self.config.clone();
        if config.get("linger.ms").is_none() {
            // The relay hands over a whole batch at once: little to gain by waiting for more.
            config.set("linger.ms", "1");
        }
        let p: FutureProducer = config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("enable.gapless.guarantee", "true")
            .set("message.timeout.ms", "0")
            .create()
            .map_err(|e| SinkError::permanent(format!("cannot create the Kafka producer: {e}")))?;
        self.producer = Some(p.clone());
        Ok(p)
    }

    /// Drops the producer and whatever it still holds (librdkafka purges its queue; records
    /// already sent may still be written) and waits until it is gone. The next send reads
    /// the mark first.
    async fn discard(&mut self) {
        self.in_flight = None;
        self.resync = true;
        if let Some(p) = self.producer.take() {
            // Dropping the last handle purges, flushes for up to 500 ms and destroys the
            // client: blocking work, kept off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || drop(p)).await;
        }
    }

    /// The last record of the partition, read by a short-lived consumer.
    async fn read_mark(&self) -> Result<Option<Forwarded>, SinkError> {
        let config = self.config.clone();
        let topic = self.topic.clone();
        let timeout = self.request_timeout;
        tokio::task::spawn_blocking(move || read_mark_blocking(&config, &topic, timeout))
            .await
            .map_err(|e| {
                SinkError::retryable(format!("reading the partition's last record: {e}"))
            })?
    }

    /// Hands the items to the producer (all of them, without waiting for acknowledgements).
    async fn enqueue(&mut self, epoch: u64, items: &[(u64, Vec<u8>)]) -> Result<(), SinkError> {
        let producer = self.producer()?;
        let flight = self.in_flight.as_mut().expect("set by the caller");
        let epoch_value = epoch.to_string();
        for (seq, payload) in items {
            let seq_value = seq.to_string();
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: EPOCH_HEADER,
                    value: Some(epoch_value.as_bytes()),
                })
                .insert(Header {
                    key: SEQ_HEADER,
                    value: Some(seq_value.as_bytes()),
                });
            let mut record = FutureRecord::<(), [u8]>::to(&self.topic)
                .partition(PARTITION)
                .payload(payload.as_slice())
                .headers(headers);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        flight.deliveries.push_back((*seq, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // The producer's local queue is full: let it send some.
                        record = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(delivery_error(*seq, payload.len(), &e)),
                }
            }
        }
        flight.complete = true;
        Ok(())
    }

    /// Waits for the delivery reports of the batch in flight, oldest first.
    async fn settle(&mut self) -> Result<BatchAck, SinkError> {
        let flight = self.in_flight.as_mut().expect("set by the caller");
        while let Some((seq, delivery)) = flight.deliveries.front_mut() {
            let seq = *seq;
            let report = delivery.await;
            flight.deliveries.pop_front();
            match report {
                Ok(Ok(d)) => {
                    // A repeat the broker recognised comes back with no offset.
                    if d.offset < 0 {
                        flight.duplicates += 1;
                    }
                }
                Ok(Err((e, msg))) => {
                    let size = msg.payload().map_or(0, <[u8]>::len);
                    return Err(delivery_error(seq, size, &e));
                }
                Err(_) => return Err(SinkError::retryable("the Kafka producer went away")),
            }
        }
        Ok(BatchAck {
            duplicates: flight.skipped + flight.duplicates,
        })
    }
}

/// Classifies a record's failure: the item can never be taken (permanent), or the producer
/// failed and sending again (through a new one) may succeed.
fn delivery_error(seq: u64, size: usize, e: &KafkaError) -> SinkError {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize) => SinkError::permanent(format!(
            "item {seq} ({size} bytes) is larger than the broker or the topic accepts \
             (message.max.bytes / max.message.bytes): raise the limit or remove the item; \
             it stays in the queue"
        )),
        Some(
            code @ (C::InvalidMessage
            | C::InvalidRecord
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::UnknownPartition
            | C::InvalidConfig),
        ) => SinkError::permanent(format!(
            "item {seq}: the broker refuses it ({code}); it stays in the queue"
        )),
        _ => SinkError::retryable(format!("item {seq} not acknowledged: {e}")),
    }
}

fn read_mark_blocking(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Option<Forwarded>, SinkError> {
    let retryable = |what: &str, e: KafkaError| SinkError::retryable(format!("{what}: {e}"));
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "ringq-relay")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| SinkError::permanent(format!("cannot create the Kafka consumer: {e}")))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| retryable("no metadata from the brokers (are they up?)", e))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(SinkError::retryable(format!(
            "no metadata for topic {topic}"
        )));
    };
    match t.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
            return Err(SinkError::permanent(format!(
                "topic {topic} does not exist: create it (one partition; the relay writes to \
                 partition {PARTITION})"
            )))
        }
        Some(code) => {
            return Err(SinkError::retryable(format!(
                "topic {topic} is not available: {code}"
            )))
        }
    }
    if t.partitions().len() > 1 {
        log::warn!(
            "relay: topic {topic} has {} partitions; the relay writes to partition {PARTITION} only",
            t.partitions().len()
        );
    }
    let (low, high) = consumer
        .fetch_watermarks(topic, PARTITION, timeout)
        .map_err(|e| retryable("cannot read the partition's offsets", e))?;
    if high <= low {
        return Ok(None);
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, PARTITION, Offset::Offset(high - 1))
        .map_err(|e| retryable("assign", e))?;
    consumer
        .assign(&assignment)
        .map_err(|e| retryable("assign", e))?;
    // Read from the last offset to the end: the last record there is the mark (the offset
    // before the end can also be a transaction marker of another producer: then no mark).
    let deadline = Instant::now() + timeout;
    let mut mark = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.poll(left) {
            Some(Ok(m)) => {
                let header = |name: &str| {
                    m.headers()?
                        .iter()
                        .find(|h| h.key == name)
                        .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<u64>().ok())
                };
                mark = match (header(EPOCH_HEADER), header(SEQ_HEADER)) {
                    (Some(epoch), Some(seq)) => Some(Forwarded { epoch, seq }),
                    _ => None,
                };
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(mark),
            Some(Err(e)) => return Err(retryable("cannot read the partition's last record", e)),
            None => {
                return Err(SinkError::retryable(format!(
                    "no answer reading the last record of {topic} within {timeout:?}"
                )))
            }
        }
    }
}

impl Sink for KafkaSink {
    async fn publish_batch(
        &mut self,
        epoch: u64,
        items: &[(u64, Vec<u8>)],
    ) -> Result<BatchAck, SinkError> {
        // An item the producer can never take would stall the relay for ever: say which.
        if let Some((seq, p)) = items
            .iter()
            .find(|(_, p)| p.len() + RECORD_OVERHEAD > self.max_message_bytes)
        {
            return Err(SinkError::permanent(format!(
                "item {seq} ({} bytes) is larger than message.max.bytes ({} bytes, less {} for \
                 headers and framing); raise it (and the topic's max.message.bytes) or remove \
                 the item; it stays in the queue",
                p.len(),
                self.max_message_bytes,
                RECORD_OVERHEAD
            )));
        }
        let id = batch_id(items);
        let resume = matches!(&self.in_flight,
            Some(f) if f.complete && f.epoch == epoch && f.batch == id);
        if !resume {
            if self.in_flight.is_some() {
                // Records of another (or a half-sent) batch are still in the producer: sending
                // behind them would break the order. Start over with a new producer.
                self.discard().await;
            }
            let mut skip = 0;
            if self.resync {
                // The last producer may have written a prefix of this batch.
                if let Some(mark) = self.read_mark().await? {
                    if mark.epoch == epoch {
                        skip = items.iter().take_while(|(s, _)| *s <= mark.seq).count();
                    }
                }
                self.resync = false;
            }
            self.in_flight = Some(InFlight {
                epoch,
                batch: id,
                complete: false,
                skipped: skip as u64,
                duplicates: 0,
                deliveries: VecDeque::with_capacity(items.len() - skip),
            });
            if let Err(e) = self.enqueue(epoch, &items[skip..]).await {
                self.discard().await;
                return Err(e);
            }
        }
        let limit = self.batch_timeout;
        match tokio::time::timeout(limit, self.settle()).await {
            Ok(Ok(ack)) => {
                self.in_flight = None;
                Ok(ack)
            }
            Ok(Err(e)) => {
                // The producer failed (with the gap-less guarantee, everything after the
                // failed record fails too): replace it; the mark tells what was written.
                self.discard().await;
                Err(e)
            }
            Err(_) => Err(SinkError::retryable(format!(
                "no acknowledgement for the batch within {limit:?} (are the brokers up?); \
                 its records stay in flight"
            ))),
        }
    }

    async fn last_forwarded(&mut self) -> Result<Option<Forwarded>, SinkError> {
        if self.in_flight.is_some() {
            // A relay stopped mid-batch on this sink: its records must not land behind the
            // next relay's.
            self.discard().await;
        }
        let mark = self.read_mark().await?;
        self.resync = false;
        Ok(mark)
    }
}
