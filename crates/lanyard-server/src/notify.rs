//! Task notifications: a JSON webhook posted when a task is requested,
//! approved, activated, completed, expired, revoked, opened by break-glass
//! or reviewed, so that chat and ticket systems can show it.
//!
//! Each body is signed with HMAC-SHA256 under the configured secret, sent
//! in `X-Lanyard-Signature: sha256=<hex>`. Posting happens on a worker of
//! its own: a notification never blocks or changes a decision. A failed
//! post is retried with exponential backoff; a notification that still
//! fails, or finds the queue full, is counted in
//! `lanyard_server_task_notifications_failed_total` and logged.

use std::{sync::Arc, time::Duration};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How many notifications may wait for the worker.
const QUEUE: usize = 1024;
/// The first retry's delay; each next one doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Where and how to post.
#[derive(Clone)]
pub struct NotifyConfig {
    /// `https://...`, or `http://` on a loopback host (see
    /// `outbound`).
    pub url: String,
    /// The CAs an https endpoint's certificate must chain to.
    pub ca_file: std::path::PathBuf,
    /// The HMAC-SHA256 key.
    pub secret: Vec<u8>,
    /// One attempt's timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// The sending side, held in the server state.
pub(crate) struct Notifier {
    queue: mpsc::Sender<serde_json::Value>,
    failed: Counter,
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

impl Notifier {
    /// Starts the worker; it ends with `shutdown`.
    pub(crate) fn start(
        cfg: NotifyConfig,
        sent: Counter,
        failed: Counter,
        shutdown: CancellationToken,
    ) -> Self {
        let (queue, mut rx) = mpsc::channel::<serde_json::Value>(QUEUE);
        let cfg = Arc::new(cfg);
        let worker_failed = failed.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = rx.recv() => match next { Some(e) => e, None => return },
                };
                if deliver(&cfg, &event, &shutdown).await {
                    sent.inc();
                } else {
                    worker_failed.inc();
                }
            }
        });
        Self { queue, failed }
    }

    /// Queues `event`; never waits.
    pub(crate) fn send(&self, event: serde_json::Value) {
        if let Err(e) = self.queue.try_send(event) {
            self.failed.inc();
            tracing::error!(error = %e, "task notification dropped: the queue is full or closed");
        }
    }
}

/// Posts one notification, retrying with backoff; whether it was accepted.
async fn deliver(cfg: &NotifyConfig, event: &serde_json::Value, stop: &CancellationToken) -> bool {
    let body = event.to_string();
    let headers = [(
        "x-lanyard-signature",
        signature(&cfg.secret, body.as_bytes()),
    )];
    let mut backoff = FIRST_BACKOFF;
    for attempt in 0..=cfg.retries {
        let result = tokio::time::timeout(
            cfg.timeout,
            crate::outbound::post_json(&cfg.url, &cfg.ca_file, body.clone(), &headers),
        )
        .await;
        let problem = match result {
            Ok(Ok((status, _))) if (200..300).contains(&status) => return true,
            Ok(Ok((status, text))) => format!("HTTP {status} {text}"),
            Ok(Err(e)) => e,
            Err(_) => "timed out".to_owned(),
        };
        if attempt == cfg.retries {
            tracing::error!(url = %cfg.url, attempts = attempt + 1, error = %problem, event = %event["event"], "task notification failed; giving up");
            return false;
        }
        tracing::warn!(url = %cfg.url, attempt = attempt + 1, error = %problem, "task notification failed; retrying");
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = backoff.saturating_mul(2);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
