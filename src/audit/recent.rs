//! The last events recorded, kept in memory whatever the sink, once turned
//! on: the tests read them (`Audit::recent`).
//! Bounded: the oldest goes when a new one comes past [`KEPT`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::Event;

/// How many events are kept.
pub const KEPT: usize = 1024;

#[derive(Default)]
pub(super) struct Recent {
    enabled: AtomicBool,
    events: Mutex<VecDeque<Event>>,
}

impl Recent {
    pub(super) fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub(super) fn keep(&self, event: &Event) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut events = self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if events.len() == KEPT {
            events.pop_front();
        }
        events.push_back(event.clone());
    }

    pub(super) fn all(&self) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{EventKind, Outcome, RequestContext};

    #[test]
    fn only_the_last_events_are_kept_oldest_first() {
        let recent = Recent::default();
        recent.keep(&Event::new(
            EventKind::McpRequest,
            Outcome::Success,
            &RequestContext::default(),
        ));
        assert!(recent.all().is_empty(), "nothing is kept until it is turned on");
        recent.enable();
        for n in 0..KEPT + 3 {
            let event =
                Event::new(EventKind::McpRequest, Outcome::Success, &RequestContext::default()).reason(n.to_string());
            recent.keep(&event);
        }
        let kept = recent.all();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].reason.as_deref(), Some("3"));
        assert_eq!(kept[KEPT - 1].reason.as_deref(), Some((KEPT + 2).to_string().as_str()));
    }
}
