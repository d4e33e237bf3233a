//! In-process wakeups for long-polls.
//!
//! A `watch` channel per identity that has a waiting poller. Pollers subscribe *before* they
//! read the database and then wait for a change, so a write that commits between the read and
//! the wait still wakes them (a bare `Notify` would lose it). The database stays the truth;
//! the hub rings the doorbell, and for a new message it also hands over the message itself,
//! so a poller that was exactly caught up can answer without reading it back (a post to a
//! thousand-member group would otherwise mean a thousand identical reads).

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;

use crate::api::messages::Message;

/// The newest position in an identity's stream committed since the bell was made (0: none
/// yet), and the event there when the writer had it at hand (its `cursor` is left empty: the
/// receiver fills in `seq`).
#[derive(Debug, Clone, Default)]
pub struct Bell {
    pub seq: u64,
    pub event: Option<Arc<Message>>,
}

#[derive(Default)]
pub struct Hub {
    bells: DashMap<i64, watch::Sender<Bell>>,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    /// A receiver whose current value is marked seen: `changed()` fires on the next notify.
    pub fn subscribe(&self, user_id: i64) -> watch::Receiver<Bell> {
        self.bells
            .entry(user_id)
            .or_insert_with(|| watch::channel(Bell::default()).0)
            .subscribe()
    }

    /// Rings `user_id`'s bell after a commit that appended `seq` to their stream.
    pub fn notify(&self, user_id: i64, seq: u64, event: Option<Arc<Message>>) {
        if let Some(bell) = self.bells.get(&user_id) {
            // Positions only grow: a poller trusts `seq` as the newest it may have missed.
            bell.send_if_modified(|b| {
                let newer = seq > b.seq;
                if newer {
                    *b = Bell { seq, event };
                }
                newer
            });
        }
        // Drop bells nobody listens to any more, so idle identities cost nothing.
        self.bells
            .remove_if(&user_id, |_, bell| bell.receiver_count() == 0);
    }

    /// Wakes every waiter to read the database again, forgetting what the bells had heard:
    /// after a lost doorbell connection, commits may have gone unheard.
    pub fn wake_all(&self) {
        for bell in self.bells.iter() {
            bell.send_modify(|b| *b = Bell::default());
        }
    }

    /// Drops every bell with no listener; run now and then.
    pub fn sweep(&self) {
        self.bells.retain(|_, bell| bell.receiver_count() > 0);
    }

    /// How many identities have a waiting poller.
    pub fn listening(&self) -> usize {
        self.bells.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notify_between_subscribe_and_wait_is_not_lost() {
        let hub = Hub::new();
        let mut rx = hub.subscribe(7);
        hub.notify(7, 1, None);
        tokio::time::timeout(std::time::Duration::from_secs(1), rx.changed())
            .await
            .expect("wakeup lost")
            .expect("bell dropped");
        assert_eq!(rx.borrow().seq, 1);
    }

    #[test]
    fn a_bell_only_moves_forward() {
        let hub = Hub::new();
        let rx = hub.subscribe(3);
        assert_eq!(rx.borrow().seq, 0, "a new bell has heard nothing");
        hub.notify(3, 9, None);
        hub.notify(3, 8, None);
        assert_eq!(rx.borrow().seq, 9);
    }

    #[test]
    fn bells_without_listeners_are_dropped() {
        let hub = Hub::new();
        let rx = hub.subscribe(1);
        assert_eq!(hub.listening(), 1);
        drop(rx);
        hub.notify(1, 5, None);
        assert_eq!(hub.listening(), 0);
    }
}
