//! The audit trail: one JSON object per event, each line chained to the one
//! before by its SHA-256 hash, written by a thread of its own so a request
//! never waits on the sink.
//!
//! `record` only queues: a full queue or a failing sink counts the event as
//! dropped (and the request goes on), unless `OAUTH_PROXY_AUDIT_REQUIRED`
//! is true, when the request fails with 503 instead.

mod chain;
mod checkpoint;
mod event;
mod recent;
mod sink;
pub mod verify;
mod writer;

pub use checkpoint::{CheckpointKey, CHECKPOINT_EVENT, CHECKPOINT_EVERY_LINES, CHECKPOINT_INTERVAL};
pub use event::{Event, EventKind, McpCall, Outcome, RequestContext, RevokedBy};
pub use writer::{DROP_WARNING_INTERVAL, QUEUE_CAPACITY};

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{AuditSink, Operations};
use chain::ChainState;
use sink::Sink;
use writer::{Message, Shared, Writer};

/// How long the stop waits for the writer to write what is queued.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// The event could not be queued and the audit trail is required.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the audit trail cannot take the event (OAUTH_PROXY_AUDIT_REQUIRED)")]
pub struct AuditUnavailable;

/// A cheap handle on the audit writer, shared by every worker.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<AuditInner>,
    /// The last events recorded (see [`Audit::recent`]).
    recent: Arc<recent::Recent>,
}

struct AuditInner {
    required: bool,
    /// `None`: `OAUTH_PROXY_AUDIT_LOG=off`.
    writer: Option<WriterHandle>,
}

struct WriterHandle {
    queue: SyncSender<Message>,
    capacity: usize,
    shared: Arc<Shared>,
    /// Taken by the first `shutdown`.
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The audit writer could not start (its file cannot be opened).
#[derive(Debug, thiserror::Error)]
#[error("the audit log cannot be opened (OAUTH_PROXY_AUDIT_LOG): {0}")]
pub struct AuditStartError(#[from] pub std::io::Error);

impl Audit {
    /// Starts the writer the configuration asks for. `instance_id` names
    /// this process in every event; `key` signs the checkpoints. The first
    /// event is `service.started`.
    pub fn start(operations: &Operations, instance_id: &str, key: CheckpointKey) -> Result<Audit, AuditStartError> {
        let (sink, state) = match &operations.audit_log {
            AuditSink::Off => {
                return Ok(Audit {
                    inner: Arc::new(AuditInner {
                        required: operations.audit_required,
                        writer: None,
                    }),
                    recent: Arc::default(),
                })
            }
            AuditSink::Stdout => (Sink::stdout(), ChainState::genesis()),
            AuditSink::File(path) => Sink::open_file(path)?,
        };
        let audit = Audit::with_writer(
            operations.audit_required,
            QUEUE_CAPACITY,
            Writer::new(sink, state, instance_id.to_string(), key, Arc::default()),
        )?;
        let _ = audit.record(Event::new(
            EventKind::ServiceStarted,
            Outcome::Success,
            &RequestContext::default(),
        ));
        Ok(audit)
    }

    fn with_writer(required: bool, capacity: usize, writer: Writer) -> std::io::Result<Audit> {
        let (queue, receiver) = mpsc::sync_channel(capacity);
        let shared = writer.shared.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(receiver))?;
        Ok(Audit {
            inner: Arc::new(AuditInner {
                required,
                writer: Some(WriterHandle {
                    queue,
                    capacity,
                    shared,
                    thread: Mutex::new(Some(thread)),
                }),
            }),
            recent: Arc::default(),
        })
    }

    /// Queues an event: never waits, never writes on the caller's thread.
    /// An event that cannot be taken (queue full, sink failing, writer
    /// stopped) is counted as dropped; `Err` then only when the trail is
    /// required.
    pub fn record(&self, event: Event) -> Result<(), AuditUnavailable> {
        self.recent.keep(&event);
        let Some(writer) = &self.inner.writer else {
            return Ok(());
        };
        let taken = !(self.inner.required && writer.shared.failing.load(Ordering::Relaxed)) && {
            writer.shared.queued.fetch_add(1, Ordering::Relaxed);
            match writer
                .queue
                .try_send(Message::Event(Box::new((SystemTime::now(), event))))
            {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    writer.shared.queued.fetch_sub(1, Ordering::Relaxed);
                    false
                }
            }
        };
        if taken {
            return Ok(());
        }
        writer.shared.dropped.fetch_add(1, Ordering::Relaxed);
        match self.inner.required {
            true => Err(AuditUnavailable),
            false => Ok(()),
        }
    }

    /// The last events recorded (at most 1024, oldest first), whether or
    /// not the sink took them, once [`Audit::keep_recent`] turned it on.
    pub fn recent(&self) -> Vec<Event> {
        self.recent.all()
    }

    /// Starts keeping the last events in memory (tests, diagnostics): off
    /// by default, so serving pays no lock and no copy per event.
    pub fn keep_recent(&self) {
        self.recent.enable();
    }

    /// Whether an event recorded now would be taken (the gateway asks
    /// before it forwards, when the trail is required).
    pub fn accepting(&self) -> bool {
        match &self.inner.writer {
            None => true,
            Some(writer) => {
                self.healthy()
                    && writer.shared.queued.load(Ordering::Relaxed) < writer.capacity
                    && !writer.shared.stopped.load(Ordering::Relaxed)
            }
        }
    }

    /// Whether the sink is being written (readiness, when required): false
    /// from a failed write until a write succeeds again.
    pub fn healthy(&self) -> bool {
        match &self.inner.writer {
            None => true,
            Some(writer) => !writer.shared.failing.load(Ordering::Relaxed),
        }
    }

    /// Whether the trail is required (`OAUTH_PROXY_AUDIT_REQUIRED`).
    pub fn required(&self) -> bool {
        self.inner.required
    }

    /// Events written so far (checkpoint lines not counted).
    pub fn written(&self) -> u64 {
        self.inner
            .writer
            .as_ref()
            .map_or(0, |writer| writer.shared.written.load(Ordering::Relaxed))
    }

    /// Events dropped so far (queue full or sink failing).
    pub fn dropped(&self) -> u64 {
        self.inner
            .writer
            .as_ref()
            .map_or(0, |writer| writer.shared.dropped.load(Ordering::Relaxed))
    }

    /// Reopens the file (SIGHUP, after logrotate moved it): lines after the
    /// ones already written go to the file now at the path, continuing the
    /// chain. Returns at once; the writer reopens at its next batch.
    pub fn reopen(&self) {
        if let Some(writer) = &self.inner.writer {
            writer.shared.reopen.store(true, Ordering::Relaxed);
            // Full: the writer is busy and looks at the flag after its batch.
            let _ = writer.queue.try_send(Message::Reopen);
        }
    }

    /// Records `service.stopped`, writes what is queued and a checkpoint,
    /// and stops the writer (waiting at most `SHUTDOWN_WAIT`). Later events
    /// are dropped.
    pub fn shutdown(&self) {
        let Some(writer) = &self.inner.writer else {
            return;
        };
        let Some(thread) = writer.thread.lock().ok().and_then(|mut thread| thread.take()) else {
            return;
        };
        writer.shared.stopped.store(true, Ordering::Relaxed);
        let _ = self.record(Event::new(
            EventKind::ServiceStopped,
            Outcome::Success,
            &RequestContext::default(),
        ));
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let (done, finished) = mpsc::channel();
        let mut message = Message::Shutdown(done);
        loop {
            match writer.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => {
                    log::warn!("the audit writer did not stop in time: events still queued are lost");
                    return;
                }
            }
        }
        match finished.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => {
                let _ = thread.join();
            }
            Err(_) => log::warn!("the audit writer did not stop in time: events still queued are lost"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::mpsc::Receiver;

    use super::*;

    fn key() -> CheckpointKey {
        CheckpointKey::derive(b"a consent signing key of 32 chars!")
    }

    fn operations(path: &Path, required: bool) -> Operations {
        Operations {
            audit_log: AuditSink::File(path.to_path_buf()),
            audit_required: required,
            admin_bind: None,
            admin_token: None,
            log_format: crate::config::LogFormat::Text,
        }
    }

    fn event(n: u32) -> Event {
        Event::new(EventKind::McpRequest, Outcome::Success, &RequestContext::default()).status(n as u16)
    }

    fn verify_files(paths: &[&Path]) -> Result<verify::Summary, verify::Broken> {
        let files: Vec<(String, Vec<u8>)> = paths
            .iter()
            .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
            .collect();
        verify::verify(&files, Some(&key()))
    }

    fn events_in(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// An audit handle whose writer never runs: the queue only fills.
    fn stalled(required: bool, capacity: usize) -> (Audit, Receiver<Message>) {
        let (queue, receiver) = mpsc::sync_channel(capacity);
        let audit = Audit {
            inner: Arc::new(AuditInner {
                required,
                writer: Some(WriterHandle {
                    queue,
                    capacity,
                    shared: Arc::default(),
                    thread: Mutex::new(Some(std::thread::spawn(|| {}))),
                }),
            }),
            recent: Arc::default(),
        };
        (audit, receiver)
    }

    #[test]
    fn a_full_queue_counts_the_event_as_dropped_and_the_request_goes_on() {
        let (audit, _receiver) = stalled(false, 2);
        assert!(audit.record(event(1)).is_ok());
        assert!(audit.record(event(2)).is_ok());
        assert!(!audit.accepting());
        assert!(audit.record(event(3)).is_ok());
        assert_eq!(audit.dropped(), 1);
    }

    #[test]
    fn a_full_queue_refuses_the_event_when_the_trail_is_required() {
        let (audit, _receiver) = stalled(true, 1);
        assert!(audit.record(event(1)).is_ok());
        assert!(audit.record(event(2)).is_err());
        assert_eq!(audit.dropped(), 1);
    }

    #[test]
    fn a_failing_sink_refuses_events_when_required_and_is_not_healthy() {
        let (audit, _receiver) = stalled(true, 8);
        audit
            .inner
            .writer
            .as_ref()
            .unwrap()
            .shared
            .failing
            .store(true, Ordering::Relaxed);
        assert!(!audit.healthy());
        assert!(!audit.accepting());
        assert!(audit.record(event(1)).is_err());
        assert_eq!(audit.dropped(), 1);
    }

    #[test]
    fn events_are_written_as_chained_lines_with_time_instance_and_a_closing_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::start(&operations(&path, false), "inst-1", key()).unwrap();
        for n in 0..5 {
            audit.record(event(n)).unwrap();
        }
        audit.shutdown();
        assert_eq!(audit.written(), 7, "started, 5 events, stopped");
        assert_eq!(audit.dropped(), 0);
        let lines = events_in(&path);
        let names: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(names.first(), Some(&"service.started"));
        assert_eq!(&names[names.len() - 2..], ["service.stopped", "audit.checkpoint"]);
        let time = lines[1]["time"].as_str().unwrap();
        assert_eq!(time.len(), "2026-12-03T14:05:06.123Z".len(), "{time}");
        assert!(time.ends_with('Z'));
        assert_eq!(lines[1]["instance"], "inst-1");
        assert_eq!(lines[1]["seq"], 2);
        let summary = verify_files(&[&path]).unwrap();
        assert_eq!(summary.lines, 8);
        assert_eq!(summary.checkpoints_verified, 1);
        // Recorded after the stop: dropped.
        assert!(!audit.accepting());
        assert!(audit.record(event(9)).is_ok());
        assert_eq!(audit.dropped(), 1);
    }

    #[test]
    fn a_restart_continues_the_chain_in_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        for run in 0..2 {
            let audit = Audit::start(&operations(&path, false), &format!("run-{run}"), key()).unwrap();
            audit.record(event(run)).unwrap();
            audit.shutdown();
        }
        let lines = events_in(&path);
        assert_eq!(lines.len(), 8);
        assert_eq!(lines[4]["seq"], 5, "the second run goes on from seq 4");
        assert_eq!(lines[4]["instance"], "run-1");
        let summary = verify_files(&[&path]).unwrap();
        assert_eq!((summary.lines, summary.checkpoints_verified), (8, 2));
        assert_eq!(summary.continues, None);
    }

    #[test]
    fn a_reopen_after_rotation_continues_the_chain_in_the_new_file_losing_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotated = dir.path().join("audit.jsonl.1");
        let audit = Audit::start(&operations(&path, false), "inst", key()).unwrap();
        let recorder = {
            let audit = audit.clone();
            std::thread::spawn(move || {
                for n in 0..2000 {
                    audit.record(event(n)).unwrap();
                    if n % 100 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(5));
        std::fs::rename(&path, &rotated).unwrap();
        audit.reopen();
        recorder.join().unwrap();
        audit.shutdown();
        assert_eq!(audit.dropped(), 0);
        let summary = verify_files(&[&rotated, &path]).unwrap();
        let mcp_lines = [&rotated, &path]
            .iter()
            .flat_map(|p| events_in(p))
            .filter(|l| l["event"] == "mcp.request")
            .count();
        assert_eq!(mcp_lines, 2000, "each event once, in one file or the other");
        assert!(!events_in(&path).is_empty(), "the new file was written");
        assert!(summary.checkpoints_verified >= 2, "{summary:?}");
    }

    #[test]
    fn a_missing_directory_stops_the_start_with_the_path_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("audit.jsonl");
        let error = Audit::start(&operations(&path, false), "inst", key())
            .err()
            .expect("refused");
        assert!(error.to_string().contains("OAUTH_PROXY_AUDIT_LOG"), "{error}");
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn a_sink_that_fails_is_unhealthy_and_its_events_are_counted_as_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (sink, state) = Sink::open_file(&path).unwrap();
        let shared: Arc<Shared> = Arc::default();
        let mut writer = Writer::new(sink, state, "inst".into(), key(), shared.clone());
        // /dev/full: every write fails with ENOSPC.
        writer.sink = Sink::File {
            path: "/dev/full".into(),
            file: std::fs::OpenOptions::new().append(true).open("/dev/full").unwrap(),
        };
        let audit = Audit::with_writer(false, 16, writer).unwrap();
        audit.record(event(1)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while audit.dropped() == 0 {
            assert!(Instant::now() < deadline, "the failed write was not counted");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!audit.healthy());
        assert_eq!(audit.written(), 0);
        audit.shutdown();
    }
}
