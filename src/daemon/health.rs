//! What is wrong right now, and what was: the daemon's problems as kinds (each set and cleared
//! by the part that owns it), the incident history status shows, the phase, and whether
//! presence is online. Not durable: it describes this process.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::protocol::{Incident, Phase};
use crate::api::{now_millis, rfc3339_from_millis};

/// How many past problems status keeps.
const INCIDENTS_KEPT: usize = 20;

/// A kind of problem; at most one of each is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Problem {
    /// The relay does not answer (or answers 5xx); the daemon keeps retrying.
    RelayUnreachable,
    /// The session was refused and a new login did not work.
    SessionExpired,
    /// inbox.jsonl cannot be written (a full disk, say); nothing is lost, it retries.
    CannotWriteInbox,
    /// state.json cannot be saved; progress waits until it can.
    CannotSaveState,
}

impl Problem {
    fn describe(self, detail: &str) -> String {
        match self {
            Problem::RelayUnreachable => format!("relay unreachable, retrying: {detail}"),
            Problem::SessionExpired => {
                format!("session expired and cannot log in again: {detail}")
            }
            Problem::CannotWriteInbox => {
                format!("cannot write the inbox (nothing is lost; retrying): {detail}")
            }
            Problem::CannotSaveState => format!("cannot save daemon state: {detail}"),
        }
    }

    /// The stable name status reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::RelayUnreachable => "relay_unreachable",
            Problem::SessionExpired => "session_expired",
            Problem::CannotWriteInbox => "cannot_write_inbox",
            Problem::CannotSaveState => "cannot_save_state",
        }
    }

    /// Whether this problem means the relay cannot be reached as this identity now.
    fn cuts_off_relay(self) -> bool {
        matches!(self, Problem::RelayUnreachable | Problem::SessionExpired)
    }
}

#[derive(Debug, Default)]
struct Inner {
    phase: Option<Phase>,
    /// Presence was last accepted as online.
    online: bool,
    current: BTreeMap<Problem, String>,
    incidents: VecDeque<Incident>,
    /// Why the daemon gave up (phase failed).
    error: Option<String>,
}

/// What status shows of the daemon's health.
#[derive(Debug, Clone)]
pub struct HealthView {
    pub phase: Phase,
    pub online: bool,
    pub problem: Option<String>,
    pub problem_kind: Option<Problem>,
    pub incidents: Vec<Incident>,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Health {
    inner: Mutex<Inner>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Held only for a few field updates; a panic there leaves consistent enough data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports (or updates) a problem; a new one is logged and opens an incident.
    pub fn report(&self, kind: Problem, detail: impl std::fmt::Display) {
        let text = kind.describe(&detail.to_string());
        let mut h = self.lock();
        if h.current.get(&kind) == Some(&text) {
            return;
        }
        let now = rfc3339_from_millis(now_millis());
        if h.current.contains_key(&kind)
            && let Some(open) = h
                .incidents
                .iter_mut()
                .rev()
                .find(|i| i.until.is_none() && i.kind.as_deref() == Some(kind.as_str()))
        {
            // Same problem, new detail: the incident goes on, with the newest wording.
            open.what = text.clone();
        } else {
            tracing::warn!("{text}");
            h.incidents.push_back(Incident {
                what: text.clone(),
                kind: Some(kind.as_str().to_string()),
                since: now,
                until: None,
            });
            while h.incidents.len() > INCIDENTS_KEPT {
                h.incidents.pop_front();
            }
        }
        h.current.insert(kind, text);
    }

    /// The problem is over (a no-op when it was not current).
    pub fn clear(&self, kind: Problem) {
        let mut h = self.lock();
        let Some(text) = h.current.remove(&kind) else {
            return;
        };
        tracing::info!("recovered: {text}");
        let now = rfc3339_from_millis(now_millis());
        if let Some(open) = h
            .incidents
            .iter_mut()
            .rev()
            .find(|i| i.until.is_none() && i.kind.as_deref() == Some(kind.as_str()))
        {
            open.until = Some(now);
        }
    }

    pub fn has(&self, kind: Problem) -> bool {
        self.lock().current.contains_key(&kind)
    }

    /// Whether the relay is cut off (unreachable, or the session is gone).
    pub fn relay_cut_off(&self) -> bool {
        self.lock().current.keys().any(|k| k.cuts_off_relay())
    }

    pub fn set_phase(&self, phase: Phase) {
        self.lock().phase = Some(phase);
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase.unwrap_or(Phase::Starting)
    }

    /// The daemon gave up for good.
    pub fn fail(&self, why: impl Into<String>) {
        let mut h = self.lock();
        h.phase = Some(Phase::Failed);
        h.error = Some(why.into());
    }

    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    pub fn set_online(&self, online: bool) {
        self.lock().online = online;
    }

    pub fn view(&self) -> HealthView {
        let h = self.lock();
        let newest = h
            .incidents
            .iter()
            .rev()
            .filter(|i| i.until.is_none())
            .find_map(|i| {
                h.current
                    .iter()
                    .find(|(k, _)| Some(k.as_str()) == i.kind.as_deref())
            });
        HealthView {
            phase: h.phase.unwrap_or(Phase::Starting),
            // Presence accepted, and the relay reachable now (a late presence answer must not
            // make a daemon that lost its relay look online).
            online: h.online && !h.current.keys().any(|k| k.cuts_off_relay()),
            problem: newest.map(|(_, t)| t.clone()),
            problem_kind: newest.map(|(k, _)| *k),
            incidents: h.incidents.iter().cloned().collect(),
            error: h.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_open_and_close_incidents_by_kind() {
        let h = Health::default();
        h.set_online(true);
        h.report(Problem::RelayUnreachable, "connection refused");
        h.report(Problem::RelayUnreachable, "timed out");
        h.report(Problem::CannotWriteInbox, "No space left on device");
        let v = h.view();
        assert!(!v.online);
        assert_eq!(v.problem_kind, Some(Problem::CannotWriteInbox));
        assert_eq!(
            v.incidents.len(),
            2,
            "a changed detail is the same incident"
        );
        assert!(v.incidents[0].what.contains("timed out"));
        h.clear(Problem::CannotWriteInbox);
        let v = h.view();
        assert_eq!(v.problem_kind, Some(Problem::RelayUnreachable));
        assert!(v.incidents[1].until.is_some());
        h.clear(Problem::RelayUnreachable);
        let v = h.view();
        assert!(v.online && v.problem.is_none());
        assert!(v.incidents.iter().all(|i| i.until.is_some()));
    }
}
