//! The optional ticket check: a configured HTTPS (or loopback HTTP) endpoint is asked whether a
//! task's ticket allows it, when the task is requested and again when its
//! window opens.
//!
//! The server POSTs `{"ticket", "task_id", "step", "spiffe_id",
//! "requester"}` as JSON and expects `200` with `{"allow": bool, "reason":
//! "..."}`. Anything else (another status, a malformed body, no answer
//! within the timeout, no connection) is a refusal unless
//! `ticket_check_fail_open` is set. Every answer goes to the audit log.

use std::time::Duration;

use std::path::PathBuf;

use serde::Deserialize;

/// Where and how to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketCheck {
    /// `https://...`, or `http://` on a loopback host (the answer grants
    /// access; see the `outbound` module).
    pub url: String,
    /// The CAs an https endpoint's certificate must chain to.
    pub ca_file: PathBuf,
    /// How long to wait for the whole answer.
    pub timeout: Duration,
    /// Allow when the endpoint cannot answer (default: refuse).
    pub fail_open: bool,
}

/// What the endpoint said, for the decision and the audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketAnswer {
    /// Whether the ticket allows the task.
    pub allow: bool,
    /// The endpoint's reason, or why it could not be asked.
    pub reason: String,
    /// What was received (`HTTP 200 {...}`, `timeout after 2s`, ...).
    pub response: String,
}

#[derive(Deserialize)]
struct Reply {
    allow: bool,
    #[serde(default)]
    reason: String,
}

impl TicketCheck {
    /// Asks about `body` (the JSON document described above).
    pub(crate) async fn ask(&self, body: &serde_json::Value) -> TicketAnswer {
        let answer = match tokio::time::timeout(self.timeout, crate::outbound::post_json(&self.url, &self.ca_file, body.to_string(), &[])).await {
            Ok(Ok((200, text))) => match serde_json::from_str::<Reply>(&text) {
                Ok(reply) => TicketAnswer {
                    allow: reply.allow,
                    reason: reply.reason,
                    response: format!("HTTP 200 {text}"),
                },
                Err(e) => self.unanswered(format!(
                    "HTTP 200 with a body that is not {{\"allow\": bool, \"reason\": text}} ({e}): {text}"
                )),
            },
            Ok(Ok((status, text))) => self.unanswered(format!("HTTP {status} {text}")),
            Ok(Err(e)) => self.unanswered(e),
            Err(_) => self.unanswered(format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            )),
        };
        tracing::info!(url = %self.url, allow = answer.allow, response = %answer.response, "ticket check");
        answer
    }

    fn unanswered(&self, response: String) -> TicketAnswer {
        let reason = if self.fail_open {
            format!("ticket check failed ({response}); allowed by ticket_check_fail_open")
        } else {
            format!("ticket check failed ({response}); refused (fail closed)")
        };
        TicketAnswer {
            allow: self.fail_open,
            reason,
            response,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_endpoint_is_a_refusal_unless_fail_open() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut check = TicketCheck {
            url: format!("http://127.0.0.1:{port}/check"),
            ca_file: PathBuf::from("/nonexistent"),
            timeout: Duration::from_secs(2),
            fail_open: false,
        };
        let answer = check.ask(&serde_json::json!({})).await;
        assert!(!answer.allow);
        assert!(answer.reason.contains("fail closed"), "{answer:?}");
        check.fail_open = true;
        assert!(check.ask(&serde_json::json!({})).await.allow);
    }
}
