//! Prometheus metrics of the server, served at `GET /metrics`.
//!
//! One struct of typed handles, created once and shared through the server
//! state; the registry is read only at scrape time.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// What an SVID was issued to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    /// `workload`, `task`, `agent` or `server`.
    pub kind: &'static str,
}

/// How an attestation ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AttestLabel {
    /// `join_token` or `x509pop`.
    pub method: &'static str,
    /// `ok` or `refused`.
    pub outcome: &'static str,
}

/// What kind of Sync message was sent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SyncKindLabel {
    /// `full` (every entry) or `delta` (only the changed ones).
    pub kind: &'static str,
}

/// The server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    pub svids_issued: Family<KindLabel, Counter>,
    pub signing_seconds: Histogram,
    pub attestations: Family<AttestLabel, Counter>,
    pub revocations: Counter,
    pub crl_revoked_serials: Gauge,
    pub crl_number: Gauge,
    pub crl_bytes: Gauge,
    pub crl_published_at: Gauge,
    pub sync_streams: Gauge,
    pub sync_messages: Family<SyncKindLabel, Counter>,
    pub tasks_active: Gauge,
    pub task_notifications_sent: Counter,
    pub task_notifications_failed: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lanyard_server");
        let svids_issued = Family::<KindLabel, Counter>::default();
        registry.register(
            "svids_issued",
            "X.509-SVIDs signed, by what they were issued to",
            svids_issued.clone(),
        );
        // 50 µs .. ~1.6 s
        let signing_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "svid_signing_duration_seconds",
            "Time to sign and durably record one SVID",
            signing_seconds.clone(),
        );
        let attestations = Family::<AttestLabel, Counter>::default();
        registry.register(
            "attestations",
            "Node attestations by method and outcome",
            attestations.clone(),
        );
        let revocations = Counter::default();
        registry.register("revocations", "SVIDs put on the CRL", revocations.clone());
        let crl_revoked_serials = Gauge::default();
        registry.register(
            "crl_revoked_serials",
            "Serials on the CRL now published",
            crl_revoked_serials.clone(),
        );
        let crl_number = Gauge::default();
        registry.register(
            "crl_number",
            "CRL number of the CRL now published",
            crl_number.clone(),
        );
        let crl_bytes = Gauge::default();
        registry.register(
            "crl_size_bytes",
            "DER size of the CRL now published",
            crl_bytes.clone(),
        );
        let crl_published_at = Gauge::default();
        registry.register(
            "crl_published_timestamp_seconds",
            "When the CRL now published was signed (unix seconds); its age is time() minus this",
            crl_published_at.clone(),
        );
        let sync_streams = Gauge::default();
        registry.register(
            "sync_streams",
            "Agents' open Sync streams",
            sync_streams.clone(),
        );
        let sync_messages = Family::<SyncKindLabel, Counter>::default();
        registry.register(
            "sync_messages",
            "Sync messages sent to agents, full or delta",
            sync_messages.clone(),
        );
        let tasks_active = Gauge::default();
        registry.register(
            "tasks_active",
            "Task grants inside their window",
            tasks_active.clone(),
        );
        let task_notifications_sent = Counter::default();
        registry.register(
            "task_notifications_sent",
            "Task notifications the webhook accepted",
            task_notifications_sent.clone(),
        );
        let task_notifications_failed = Counter::default();
        registry.register(
            "task_notifications_failed",
            "Task notifications dropped or refused after every retry",
            task_notifications_failed.clone(),
        );
        Self {
            task_notifications_sent,
            task_notifications_failed,
            registry,
            svids_issued,
            signing_seconds,
            attestations,
            revocations,
            crl_revoked_serials,
            crl_number,
            crl_bytes,
            crl_published_at,
            sync_streams,
            sync_messages,
            tasks_active,
        }
    }

    /// Records one signing.
    pub fn issued(&self, kind: &'static str, took: Duration) {
        self.svids_issued.get_or_create(&KindLabel { kind }).inc();
        self.signing_seconds.observe(took.as_secs_f64());
    }

    /// Records a group commit of `count` workload SVIDs that took `took`.
    pub fn issued_group(&self, count: u64, took: Duration) {
        if count > 0 {
            self.svids_issued
                .get_or_create(&KindLabel { kind: "workload" })
                .inc_by(count);
            self.signing_seconds.observe(took.as_secs_f64());
        }
    }

    /// Records one Sync message of `kind` (`full` or `delta`).
    pub fn sync_message(&self, kind: &'static str) {
        self.sync_messages
            .get_or_create(&SyncKindLabel { kind })
            .inc();
    }

    /// Records one attestation.
    pub fn attested(&self, method: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "refused" };
        self.attestations
            .get_or_create(&AttestLabel { method, outcome })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Counts something open for as long as the guard lives.
pub(crate) struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_prefix_and_labels() {
        let m = Metrics::new();
        m.issued("workload", Duration::from_millis(2));
        m.attested("join_token", false);
        m.crl_number.set(7);
        m.sync_message("delta");
        let text = m.encode();
        assert!(
            text.contains("lanyard_server_svids_issued_total{kind=\"workload\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "lanyard_server_attestations_total{method=\"join_token\",outcome=\"refused\"} 1"
        ));
        assert!(text.contains("lanyard_server_crl_number 7"));
        assert!(text.contains("lanyard_server_sync_messages_total{kind=\"delta\"} 1"));
        assert!(text.contains("lanyard_server_svid_signing_duration_seconds_count 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}
