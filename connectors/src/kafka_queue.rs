//! The assigned partitions' messages, taken from librdkafka a batch at a time.
//!
//! rdkafka's `BaseConsumer::poll` hands over one message per call, and every call costs three
//! clock reads (two in librdkafka's `max.poll.interval.ms` bookkeeping, one in the Rust wrapper)
//! and a queue lock: 15% of the Kafka reading thread at a million messages a second on this VM,
//! where reading the clock is slow. librdkafka's `rd_kafka_consume_batch_queue` takes up to a
//! batch of messages for one lock and two clock reads, but it may only be used on a queue that
//! holds fetched messages: it aborts on other operations, such as the offset-commit replies the
//! consumer's own queue carries. So each partition's fetch queue is forwarded to a queue of our
//! own *before* the partition is assigned (librdkafka then keeps the application's forwarding
//! instead of forwarding to the consumer queue: `RD_KAFKA_Q_F_FWD_APP`), and that queue is read
//! in batches. The consumer's queue still carries statistics, errors and commit replies, which
//! `BaseConsumer::poll` serves.

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// How many messages one call takes at most.
const BATCH: usize = 1024;

/// A librdkafka queue that the assigned partitions' fetch queues forward to. Borrows the
/// consumer: it must be gone before the consumer closes.
pub struct MessageQueue<'c> {
    client: NonNull<rd::rd_kafka_t>,
    queue: NonNull<rd::rd_kafka_queue_t>,
    partitions: Vec<NonNull<rd::rd_kafka_queue_t>>,
    taken: Vec<*mut rd::rd_kafka_message_t>,
    consumer: PhantomData<&'c ()>,
}

impl<'c> MessageQueue<'c> {
    pub fn new<C: ConsumerContext>(consumer: &'c BaseConsumer<C>) -> Option<Self> {
        let client = NonNull::new(consumer.client().native_ptr())?;
        // SAFETY: `client` is a live consumer handle; the queue is destroyed in `drop`, while the
        // consumer is still alive (`'c`).
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(client.as_ptr()) })?;
        Some(MessageQueue { client, queue, partitions: Vec::new(), taken: Vec::with_capacity(BATCH), consumer: PhantomData })
    }

    /// Sends partition `partition`'s messages to this queue. Call it before assigning the
    /// partition, or its first messages go to the consumer's queue.
    pub fn forward_partition(&mut self, topic: &str, partition: i32) -> Result<(), String> {
        let name = CString::new(topic).map_err(|_| format!("topic name {topic:?} contains a NUL byte"))?;
        // SAFETY: live handles; `name` outlives the call; the partition queue reference is
        // released in `drop`.
        let partition_queue =
            unsafe { rd::rd_kafka_queue_get_partition(self.client.as_ptr(), name.as_ptr(), partition) };
        let partition_queue =
            NonNull::new(partition_queue).ok_or_else(|| format!("librdkafka has no queue for {topic}/{partition}"))?;
        // SAFETY: both queues are live; forwarding takes its own reference to the destination.
        unsafe { rd::rd_kafka_queue_forward(partition_queue.as_ptr(), self.queue.as_ptr()) };
        self.partitions.push(partition_queue);
        Ok(())
    }

    /// Takes the messages waiting (up to a batch), waiting up to `timeout` for the first one.
    pub fn take(&mut self, timeout: Duration) -> Messages<'_> {
        self.taken.clear();
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `taken` has room for BATCH pointers; librdkafka writes at most that many.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), timeout_ms, self.taken.as_mut_ptr(), BATCH)
        };
        // SAFETY: the first `n` pointers were written (a negative count is an error: none).
        unsafe { self.taken.set_len(usize::try_from(n).unwrap_or(0).min(BATCH)) };
        Messages { taken: &mut self.taken }
    }
}

impl Drop for MessageQueue<'_> {
    fn drop(&mut self) {
        for partition_queue in self.partitions.drain(..) {
            // SAFETY: each was obtained from `rd_kafka_queue_get_partition` and is released once.
            unsafe {
                rd::rd_kafka_queue_forward(partition_queue.as_ptr(), std::ptr::null_mut());
                rd::rd_kafka_queue_destroy(partition_queue.as_ptr());
            }
        }
        // SAFETY: created in `new`, destroyed once; messages still in it are freed with it.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// Messages taken by one [`MessageQueue::take`]; they are freed when this is dropped.
pub struct Messages<'q> {
    taken: &'q mut Vec<*mut rd::rd_kafka_message_t>,
}

/// One taken message's parts.
pub struct Received<'m> {
    pub partition: i32,
    pub offset: i64,
    pub payload: &'m [u8],
    pub key: Option<&'m [u8]>,
    /// Create or log-append time, epoch milliseconds.
    pub timestamp: Option<i64>,
    /// A fetch error reported in place of a message.
    pub error: Option<String>,
}

impl Messages<'_> {
    pub fn len(&self) -> usize {
        self.taken.len()
    }

    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }

    pub fn get(&self, i: usize) -> Received<'_> {
        // SAFETY: `taken` holds live messages from librdkafka until `drop`; the slices borrow
        // `self`, so they cannot outlive them.
        unsafe {
            let m = &*self.taken[i];
            let bytes = |ptr: *mut std::ffi::c_void, len: usize| match ptr.is_null() {
                true => None,
                false => Some(std::slice::from_raw_parts(ptr as *const u8, len)),
            };
            let error = (m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| {
                let code = CStr::from_ptr(rd::rd_kafka_err2str(m.err)).to_string_lossy().into_owned();
                match bytes(m.payload, m.len).map(String::from_utf8_lossy) {
                    Some(detail) => format!("{code}: {detail}"),
                    None => code,
                }
            });
            let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            let time = rd::rd_kafka_message_timestamp(m, &mut kind);
            Received {
                partition: m.partition,
                offset: m.offset,
                payload: if error.is_some() { &[] } else { bytes(m.payload, m.len).unwrap_or_default() },
                key: bytes(m.key, m.key_len),
                timestamp: (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE).then_some(time),
                error,
            }
        }
    }
}

impl Drop for Messages<'_> {
    fn drop(&mut self) {
        for m in self.taken.drain(..) {
            // SAFETY: each message was handed over by librdkafka and is freed once.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
    }
}
