//! The embedded store's write queue: many senders (the tables, on the
//! server's threads), one receiver (the writer thread), which takes
//! everything queued at once.
//!
//! Why not `std::sync::mpsc`: on one core its receiver spins before it
//! sleeps, and its senders and the receiver contend for the lock on its
//! list of sleepers; in profiles of directory-store full flows its `recv`
//! was a large share of the proxy's CPU, much of it under that lock. Here a
//! send takes one short lock and makes a wake-up call only when the writer
//! sleeps (docs/performance.md has the measurements).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

struct State<T> {
    queued: VecDeque<T>,
    senders: usize,
    /// Set by [`QueueSender::close`]: no more sends; the receiver ends once
    /// it has taken what was queued.
    closed: bool,
    receiver_gone: bool,
    /// The receiver sleeps and must be woken by the next send.
    receiver_waiting: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> Shared<T> {
    /// The state, even if a thread panicked holding the lock: every change
    /// to it is a single push, pop or flag, so it stays consistent.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(crate) fn channel<T>() -> (QueueSender<T>, QueueReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queued: VecDeque::new(),
            senders: 1,
            closed: false,
            receiver_gone: false,
            receiver_waiting: false,
        }),
        ready: Condvar::new(),
    });
    (QueueSender(shared.clone()), QueueReceiver(shared))
}

pub(crate) struct QueueSender<T>(Arc<Shared<T>>);

impl<T> QueueSender<T> {
    /// Queues `item`; gives it back if the receiver is gone or the queue
    /// is closed.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let mut state = self.0.lock();
        if state.receiver_gone || state.closed {
            return Err(item);
        }
        state.queued.push_back(item);
        let wake = std::mem::take(&mut state.receiver_waiting);
        drop(state);
        if wake {
            self.0.ready.notify_one();
        }
        Ok(())
    }
}

impl<T> QueueSender<T> {
    /// Refuses every later send (from any sender) and lets the receiver end
    /// once it has taken what is queued, even while senders remain: how the
    /// store stops its writer at shutdown, when tables may still be held.
    pub(crate) fn close(&self) {
        let mut state = self.0.lock();
        state.closed = true;
        drop(state);
        self.0.ready.notify_one();
    }
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        QueueSender(self.0.clone())
    }
}

impl<T> Drop for QueueSender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        let last = state.senders == 0;
        drop(state);
        if last {
            self.0.ready.notify_one();
        }
    }
}

pub(crate) struct QueueReceiver<T>(Arc<Shared<T>>);

impl<T> QueueReceiver<T> {
    /// Waits for at least one item, then moves up to `max` of them, oldest
    /// first, into `into`. False once every sender is gone, or the queue is
    /// closed, and nothing is left.
    pub(crate) fn recv_many(&self, into: &mut Vec<T>, max: usize) -> bool {
        let mut state = self.0.lock();
        while state.queued.is_empty() {
            if state.senders == 0 || state.closed {
                return false;
            }
            state.receiver_waiting = true;
            state = self
                .0
                .ready
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        state.receiver_waiting = false;
        let n = state.queued.len().min(max);
        into.extend(state.queued.drain(..n));
        true
    }
}

impl<T> Drop for QueueReceiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        // Nobody will take these: drop them (their callers see the reply
        // channel closed) outside the lock.
        let left = std::mem::take(&mut state.queued);
        drop(state);
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receiver_takes_everything_queued_in_order_up_to_its_limit() {
        let (sender, receiver) = channel();
        for i in 0..5 {
            sender.send(i).unwrap();
        }
        let mut got = Vec::new();
        assert!(receiver.recv_many(&mut got, 3));
        assert_eq!(got, vec![0, 1, 2]);
        got.clear();
        assert!(receiver.recv_many(&mut got, 3));
        assert_eq!(got, vec![3, 4]);
    }

    #[test]
    fn a_sleeping_receiver_is_woken_by_a_send_from_another_thread() {
        let (sender, receiver) = channel();
        let sending = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            sender.send(7).unwrap();
        });
        let mut got = Vec::new();
        assert!(receiver.recv_many(&mut got, 10));
        assert_eq!(got, vec![7]);
        sending.join().unwrap();
    }

    #[test]
    fn the_receiver_ends_once_every_sender_is_gone_and_nothing_is_left() {
        let (sender, receiver) = channel();
        let other = sender.clone();
        sender.send(1).unwrap();
        drop(sender);
        let waiting = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut rounds = Vec::new();
            while receiver.recv_many(&mut got, 10) {
                rounds.push(got.len());
            }
            (got, rounds)
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        other.send(2).unwrap();
        drop(other);
        let (got, _) = waiting.join().unwrap();
        assert_eq!(got, vec![1, 2]);
    }

    #[test]
    fn a_closed_queue_refuses_sends_and_its_receiver_ends_after_what_was_queued() {
        let (sender, receiver) = channel();
        let other = sender.clone();
        sender.send(1).unwrap();
        let waiting = std::thread::spawn(move || {
            let mut got = Vec::new();
            while receiver.recv_many(&mut got, 10) {}
            got
        });
        other.send(2).unwrap();
        sender.close();
        assert_eq!(other.send(3), Err(3), "no send after close, from any sender");
        // Both senders are still alive: the receiver ends because of the close.
        assert_eq!(waiting.join().unwrap(), vec![1, 2]);
        drop((sender, other));
    }

    #[test]
    fn a_send_after_the_receiver_is_gone_gives_the_item_back() {
        let (sender, receiver) = channel();
        drop(receiver);
        assert_eq!(sender.send(3), Err(3));
    }
}
