//! The optional ticket check: a configured HTTP endpoint is asked whether a
//! task's ticket allows it, when the task is requested and again when its
//! window opens.
//!
//! The server POSTs `{"ticket", "task_id", "step", "spiffe_id",
//! "requester"}` as JSON and expects `200` with `{"allow": bool, "reason":
//! "..."}`. Anything else (another status, a malformed body, no answer
//! within the timeout, no connection) is a refusal unless
//! `ticket_check_fail_open` is set. Every answer goes to the audit log.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// The longest response body kept (and recorded).
const MAX_BODY: usize = 4096;

/// Where and how to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketCheck {
    /// `http://127.0.0.1:PORT/path` (loopback only: the answer grants access).
    pub url: String,
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

/// Checks `ticket_check_url`: an `http://` URL on a loopback host (put a
/// TLS proxy on the same machine in front of a remote ticket system).
pub(crate) fn check_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!(
            "{url:?} is not an http:// URL on a loopback host (e.g. http://127.0.0.1:8090/check)"
        )
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: the port {p:?} is not a number"))?,
        ),
        None => (authority, 80),
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(format!(
            "{url:?}: the ticket check's answer grants access, so it is asked only on a loopback host \
             (127.0.0.1, localhost, [::1]); put a TLS proxy on this machine in front of a remote ticket system"
        ));
    }
    Ok((host.to_owned(), port, path.to_owned()))
}

impl TicketCheck {
    /// Asks about `body` (the JSON document described above).
    pub(crate) async fn ask(&self, body: &serde_json::Value) -> TicketAnswer {
        let answer = match tokio::time::timeout(self.timeout, post_json(&self.url, body.to_string(), &[])).await {
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

/// POSTs `body` (JSON) to `url` (checked by [`check_url`]) with `headers`;
/// returns the status and at most [`MAX_BODY`] bytes of the body.
pub(crate) async fn post_json(
    url: &str,
    body: String,
    headers: &[(&'static str, String)],
) -> Result<(u16, String), String> {
    let (host, port, path) = check_url(url)?;
    let connect_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((connect_host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP handshake with {host}:{port}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP client connection ended");
        }
    });
    let mut request = hyper::Request::post(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .body(Full::new(std::io::Cursor::new(body.into_bytes())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request to {url}: {e}"))?;
    let status = response.status().as_u16();
    let bytes = http_body_util::Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("response from {url}: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).trim().to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_urls_are_accepted() {
        assert_eq!(
            check_url("http://127.0.0.1:8090/check").unwrap(),
            ("127.0.0.1".to_owned(), 8090, "/check".to_owned())
        );
        assert_eq!(check_url("http://localhost").unwrap().2, "/");
        for bad in [
            "https://tickets.example.org/check",
            "http://tickets.example.org/check",
            "http://127.0.0.1:x/",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn no_endpoint_is_a_refusal_unless_fail_open() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut check = TicketCheck {
            url: format!("http://127.0.0.1:{port}/check"),
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
