//! The writer thread: takes events from a bounded queue, lays them out as
//! chained lines, and writes each batch (everything queued when it wakes)
//! with one write and one flush. Requests only queue: the clock is read on
//! their thread, everything else (serialization, hashing, I/O, logging)
//! happens here.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::chain::{hex, rfc3339_millis, ChainState};
use super::checkpoint::{checkpoint_fields, CheckpointKey, CHECKPOINT_EVERY_LINES, CHECKPOINT_INTERVAL};
use super::sink::Sink;
use super::Event;

/// Events waiting for the writer. Room for several seconds of a busy
/// service's events while the disk stalls (a store's fsync, a rotation),
/// a few MiB at most (each slot holds a pointer; each queued event a few
/// hundred bytes); past it events are dropped or refused, not buffered
/// without bound.
pub const QUEUE_CAPACITY: usize = 16_384;

/// At most this many events in one write: bounds a batch's buffer.
const MAX_BATCH: usize = 1024;

/// How long the writer lets events gather after the first of a batch
/// arrives, before it drains the queue. Without it, under load the writer
/// wakes (and writes) once per event: a futex wake, a context switch and a
/// write syscall per request, which measured 40% of the proxy's throughput
/// on one core (docs/performance.md). Lines reach the file this much later.
const GATHER: Duration = Duration::from_millis(5);

/// The file is synced at a checkpoint at most this often (and always at
/// the stop): under load, checkpoints come every 1000 lines, many a second.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// How often the writer wakes with nothing queued: checkpoints on time,
/// the drop warning, retrying a failed sink.
const TICK: Duration = Duration::from_secs(1);

/// At most one "events dropped" warning this often (with the count).
pub const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// How long a failing sink waits before the writer tries it again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

pub(super) enum Message {
    Event(Box<(SystemTime, Event)>),
    /// Wakes the writer to look at `Shared::reopen`.
    Reopen,
    /// Write what is queued, a checkpoint, then answer and stop.
    Shutdown(Sender<()>),
}

/// What the handle and the writer thread share.
#[derive(Default)]
pub(super) struct Shared {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    /// Events in the queue (the channel cannot say).
    pub queued: AtomicUsize,
    /// `false` from a failed write until a write succeeds again.
    pub failing: AtomicBool,
    /// Set by `reopen()`; the writer reopens at its next batch.
    pub reopen: AtomicBool,
    /// Set by `shutdown()`: later events are dropped.
    pub stopped: AtomicBool,
}

pub(super) struct Writer {
    pub sink: Sink,
    pub state: ChainState,
    pub instance: String,
    pub key: CheckpointKey,
    pub shared: Arc<Shared>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    dropped_warned: u64,
    last_warning: Option<Instant>,
    last_attempt: Instant,
    last_sync: Instant,
}

impl Writer {
    pub fn new(sink: Sink, state: ChainState, instance: String, key: CheckpointKey, shared: Arc<Shared>) -> Writer {
        Writer {
            sink,
            state,
            instance,
            key,
            shared,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            dropped_warned: 0,
            last_warning: None,
            last_attempt: Instant::now(),
            last_sync: Instant::now(),
        }
    }

    /// Runs until a `Shutdown` message, or until every handle is gone.
    pub fn run(mut self, queue: Receiver<Message>) {
        loop {
            let first = match queue.recv_timeout(TICK) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    self.tick();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.stop();
                    return;
                }
            };
            if matches!(first, Message::Event(_)) {
                std::thread::sleep(GATHER);
            }
            self.recover();
            let mut batch = Batch::default();
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Event(event) => {
                        self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                        self.add_event(&mut batch, &event.0, &event.1);
                    }
                    Message::Reopen => {}
                    Message::Shutdown(done) => {
                        self.write(batch);
                        self.stop();
                        let _ = done.send(());
                        return;
                    }
                }
                if batch.events < MAX_BATCH as u64 {
                    next = queue.try_recv().ok();
                }
            }
            self.write(batch);
            self.tick();
        }
    }

    /// The work of a quiet moment: a rotation asked for, a checkpoint on
    /// time, a failed sink tried again, the drop warning.
    fn tick(&mut self) {
        if self.shared.reopen.swap(false, Ordering::Relaxed) {
            match self.sink.reopen() {
                Ok(()) => log::info!("audit log reopened: {}", self.sink.describe()),
                Err(e) => self.fail(&e),
            }
        }
        self.recover();
        if self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            let mut batch = Batch::default();
            self.add_checkpoint(&mut batch);
            self.write(batch);
        }
        if self.shared.failing.load(Ordering::Relaxed) && self.last_attempt.elapsed() >= RETRY_INTERVAL {
            // A checkpoint probes the sink: written, the trail is healthy again.
            let mut batch = Batch::default();
            self.add_checkpoint(&mut batch);
            self.write(batch);
        }
        self.warn_dropped();
    }

    /// A clean stop: what is written is signed and on disk.
    fn stop(&mut self) {
        if self.shared.reopen.swap(false, Ordering::Relaxed) {
            if let Err(e) = self.sink.reopen() {
                self.fail(&e);
            }
        }
        self.recover();
        let mut batch = Batch::default();
        self.add_checkpoint(&mut batch);
        self.write(batch);
        let _ = self.sink.sync();
        self.warn_dropped();
    }

    fn add_event(&mut self, batch: &mut Batch, time: &SystemTime, event: &Event) {
        // `Event` holds identifiers only (src/audit/event.rs): serializing it
        // is all the writer does with it, so no token can reach the file.
        batch.begin(self);
        let time = rfc3339_millis(*time);
        let written = self.state.append_with(&mut batch.bytes, &time, &self.instance, |out| {
            serde_json::to_writer(out, event).is_ok()
        });
        if !written {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        batch.events += 1;
        self.since_checkpoint += 1;
        if self.since_checkpoint >= CHECKPOINT_EVERY_LINES {
            self.add_checkpoint(batch);
        }
    }

    fn add_checkpoint(&mut self, batch: &mut Batch) {
        batch.begin(self);
        let time = rfc3339_millis(SystemTime::now());
        let fields = checkpoint_fields(
            &self.key,
            self.state.seq + 1,
            &hex(&self.state.hash),
            &time,
            &self.instance,
        );
        self.state.append(&mut batch.bytes, &time, &self.instance, &fields);
        batch.checkpoint = true;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
    }

    /// Before laying out a batch on a sink that failed: a failed write may
    /// have left part of a batch in the file, so the chain continues from
    /// what the file holds.
    fn recover(&mut self) {
        if !self.shared.failing.load(Ordering::Relaxed) {
            return;
        }
        match self.sink.resync() {
            Ok(Some(state)) if state != self.state => {
                log::warn!("the audit log holds part of a failed write: the chain continues from its last line");
                self.state = state;
            }
            // The write will fail too, and be counted.
            Ok(_) | Err(_) => {}
        }
    }

    /// Writes a batch; on failure its events count as dropped and the chain
    /// state goes back to before the batch.
    fn write(&mut self, batch: Batch) {
        let Some(before) = batch.before else {
            return;
        };
        self.last_attempt = Instant::now();
        let sync = batch.checkpoint && self.last_sync.elapsed() >= SYNC_INTERVAL;
        let result = self.sink.write(&batch.bytes).and_then(|()| match sync {
            true => {
                self.last_sync = Instant::now();
                self.sink.sync()
            }
            false => Ok(()),
        });
        match result {
            Ok(()) => {
                self.shared.written.fetch_add(batch.events, Ordering::Relaxed);
                if self.shared.failing.swap(false, Ordering::Relaxed) {
                    log::warn!("the audit log is being written again: {}", self.sink.describe());
                }
            }
            Err(e) => self.lose(batch, before, &e),
        }
    }

    fn lose(&mut self, batch: Batch, before: Before, error: &std::io::Error) {
        self.shared.dropped.fetch_add(batch.events, Ordering::Relaxed);
        self.state = before.state;
        self.since_checkpoint = before.since_checkpoint;
        self.fail(error);
    }

    fn fail(&mut self, error: &std::io::Error) {
        if !self.shared.failing.swap(true, Ordering::Relaxed) {
            log::error!("cannot write the audit log {}: {error}", self.sink.describe());
        }
    }

    /// At most one warning per `DROP_WARNING_INTERVAL`, with the count.
    fn warn_dropped(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped == self.dropped_warned {
            return;
        }
        if self.last_warning.is_some_and(|at| at.elapsed() < DROP_WARNING_INTERVAL) {
            return;
        }
        log::warn!(
            "{} audit events dropped (queue full or the audit log failing; {dropped} since start)",
            dropped - self.dropped_warned
        );
        self.dropped_warned = dropped;
        self.last_warning = Some(Instant::now());
    }
}

/// Lines laid out for one write.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    events: u64,
    checkpoint: bool,
    /// The writer's chain state before the first line (`None`: empty batch).
    before: Option<Before>,
}

#[derive(Clone, Copy)]
struct Before {
    state: ChainState,
    since_checkpoint: u64,
}

impl Batch {
    fn begin(&mut self, writer: &Writer) {
        self.before.get_or_insert(Before {
            state: writer.state,
            since_checkpoint: writer.since_checkpoint,
        });
    }
}
