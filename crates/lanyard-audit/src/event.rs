//! What the caller hands to [`AuditLog::append`](crate::AuditLog::append).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::action::Action;

/// One security decision, before it is numbered, timed and chained.
///
/// ```
/// use lanyard_audit::{Action, Event};
///
/// let event = Event::new("uid:1001(alice)", Action::TaskRequested, "task-7f3a")
///     .ticket("CHG-1234")
///     .reason("rotate the database keys")
///     .detail("ttl", "1h");
/// assert_eq!(event.details["ttl"], "1h");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Who decided: a peer uid and user name on the admin socket
    /// (`uid:1001(alice)`), an agent's SPIFFE ID on the Node API, or
    /// `server` for decisions the server takes on its own (expiry).
    pub principal: String,
    /// What was decided.
    pub action: Action,
    /// What it was decided about: a task ID, an entry ID, an SVID serial, an
    /// agent's SPIFFE ID...
    pub subject: String,
    /// The change ticket the decision belongs to, if any.
    pub ticket: Option<String>,
    /// Why, in the principal's words or the server's.
    pub reason: Option<String>,
    /// Anything else worth keeping (serial numbers, TTLs, selectors...).
    pub details: BTreeMap<String, String>,
}

impl Event {
    /// An event with no ticket, no reason and no details.
    pub fn new(principal: impl Into<String>, action: Action, subject: impl Into<String>) -> Self {
        Self {
            principal: principal.into(),
            action,
            subject: subject.into(),
            ticket: None,
            reason: None,
            details: BTreeMap::new(),
        }
    }

    /// Sets the ticket.
    #[must_use]
    pub fn ticket(mut self, t: impl Into<String>) -> Self {
        self.ticket = Some(t.into());
        self
    }

    /// Sets the reason.
    #[must_use]
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }

    /// Adds (or replaces) one detail.
    #[must_use]
    pub fn detail(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.details.insert(k.into(), v.into());
        self
    }
}
