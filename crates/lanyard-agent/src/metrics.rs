//! The agent's Prometheus metrics: one registry, and a struct of typed
//! handles that the loops and the Workload API update. No globals: whoever
//! records a metric is handed an `Arc<Metrics>`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of `lanyard_agent_workload_api_calls_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

/// Labels of `lanyard_agent_svid_renewals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// How one SVID issuance or renewal ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewalOutcome {
    /// A checked SVID was cached.
    Ok,
    /// The server answered for the entry with an error, or with an SVID
    /// that failed the agent's checks.
    Refused,
    /// The call to the server failed; retried with backoff.
    Failed,
}

impl RenewalOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// Typed handles on every agent metric, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    open_streams: Gauge,
    cached_svids: Gauge,
    renewals: Family<OutcomeLabels, Counter>,
    next_rotation_seconds: Gauge<f64, AtomicU64>,
    /// Earliest scheduled renewal, milliseconds since the Unix epoch; 0 when
    /// nothing is scheduled. Turned into seconds-from-now at each scrape.
    next_rotation_at_ms: AtomicI64,
    revoked_dropped: Counter,
    failing_entries: Gauge,
    crl_number: Gauge,
    sync_updates: Counter,
    sync_deltas: Counter,
    attestation_duration: Histogram,
    attestations_reused: Counter,
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        let open_streams = Gauge::default();
        let cached_svids = Gauge::default();
        let renewals = Family::<OutcomeLabels, Counter>::default();
        let next_rotation_seconds = Gauge::<f64, AtomicU64>::default();
        let revoked_dropped = Counter::default();
        let failing_entries = Gauge::default();
        let crl_number = Gauge::default();
        let sync_updates = Counter::default();
        let sync_deltas = Counter::default();
        // 0.25 ms .. ~1 s: /proc reads and a binary hash.
        let attestation_duration = Histogram::new(exponential_buckets(0.00025, 2.0, 13));
        let attestations_reused = Counter::default();
        registry.register(
            "lanyard_agent_workload_api_calls",
            "Workload API calls by method and gRPC status code",
            calls.clone(),
        );
        registry.register(
            "lanyard_agent_workload_api_open_streams",
            "Open FetchX509SVID and FetchX509Bundles streams",
            open_streams.clone(),
        );
        registry.register(
            "lanyard_agent_cached_svids",
            "X.509-SVIDs the agent holds and serves",
            cached_svids.clone(),
        );
        registry.register(
            "lanyard_agent_svid_renewals",
            "SVID issuances and renewals by outcome (ok, refused, failed)",
            renewals.clone(),
        );
        registry.register(
            "lanyard_agent_next_rotation_seconds",
            "Seconds until the earliest scheduled SVID renewal (0 when none is scheduled)",
            next_rotation_seconds.clone(),
        );
        registry.register(
            "lanyard_agent_revoked_svids_dropped",
            "Cached SVIDs dropped because the CRL lists them",
            revoked_dropped.clone(),
        );
        registry.register(
            "lanyard_agent_entries_failing",
            "Entries whose last SVID issuance failed, waiting for a retry with exponential backoff",
            failing_entries.clone(),
        );
        registry.register(
            "lanyard_agent_crl_number",
            "CRL number of the CRL in force (0 before the first one)",
            crl_number.clone(),
        );
        registry.register(
            "lanyard_agent_sync_updates",
            "Messages received on the Sync stream",
            sync_updates.clone(),
        );
        registry.register(
            "lanyard_agent_sync_deltas",
            "Sync messages that were deltas (only the entries changed since the previous one)",
            sync_deltas.clone(),
        );
        registry.register(
            "lanyard_agent_workload_attestation_duration_seconds",
            "Time to attest a Workload API caller from its process",
            attestation_duration.clone(),
        );
        registry.register(
            "lanyard_agent_workload_attestations_reused",
            "Workload API calls whose caller's selectors were those of its connection's last \
             attestation, every input of which was checked unchanged",
            attestations_reused.clone(),
        );
        Arc::new(Self {
            registry,
            calls,
            open_streams,
            cached_svids,
            renewals,
            next_rotation_seconds,
            next_rotation_at_ms: AtomicI64::new(0),
            revoked_dropped,
            failing_entries,
            crl_number,
            sync_updates,
            sync_deltas,
            attestation_duration,
            attestations_reused,
        })
    }

    /// One answered Workload API call (`method` in snake case).
    pub fn call(&self, method: &'static str, code: tonic::Code) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: code_name(code),
            })
            .inc();
    }

    /// A stream opened; it counts as open until the guard is dropped.
    pub fn stream_opened(self: &Arc<Self>) -> OpenStream {
        self.open_streams.inc();
        OpenStream(self.clone())
    }

    /// One SVID issuance or renewal attempt for one entry.
    pub fn renewal(&self, outcome: RenewalOutcome) {
        self.renewals
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// The earliest scheduled renewal, if any.
    pub fn set_next_rotation(&self, at: Option<SystemTime>) {
        let ms = at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.next_rotation_at_ms.store(ms, Ordering::Relaxed);
    }

    /// Cached SVIDs dropped because they are revoked.
    pub fn revoked_dropped(&self, n: usize) {
        self.revoked_dropped.inc_by(n as u64);
    }

    /// How many entries' last issuance failed.
    pub fn set_failing_entries(&self, n: usize) {
        self.failing_entries
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The CRL number in force.
    pub fn set_crl_number(&self, number: i64) {
        self.crl_number.set(number);
    }

    /// One Sync message applied: a delta, or a full message.
    pub fn sync_update(&self, delta: bool) {
        self.sync_updates.inc();
        if delta {
            self.sync_deltas.inc();
        }
    }

    /// One workload attestation took `elapsed`; `reused`: it found the
    /// connection's last one still true.
    pub fn attestation(&self, elapsed: Duration, reused: bool) {
        self.attestation_duration.observe(elapsed.as_secs_f64());
        if reused {
            self.attestations_reused.inc();
        }
    }

    /// The OpenMetrics text exposition, with the gauges read at scrape time
    /// (`cached_svids` from what is served now) brought up to date.
    pub fn render(&self, cached_svids: usize, now: SystemTime) -> Result<String, std::fmt::Error> {
        self.cached_svids
            .set(i64::try_from(cached_svids).unwrap_or(i64::MAX));
        self.next_rotation_seconds.set(seconds_until(
            self.next_rotation_at_ms.load(Ordering::Relaxed),
            now,
        ));
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Marks a Workload API stream open while it lives.
#[derive(Debug)]
pub struct OpenStream(Arc<Metrics>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.dec();
    }
}

/// Seconds from `now` until `at_ms` (ms since the epoch; 0 = nothing
/// scheduled), never negative.
fn seconds_until(at_ms: i64, now: SystemTime) -> f64 {
    if at_ms == 0 {
        return 0.0;
    }
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0);
    ((at_ms as f64 - now_ms) / 1000.0).max(0.0)
}

/// The gRPC status code as a snake-case label value.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"))
    }

    #[test]
    fn renders_every_metric_with_labels() {
        let m = Metrics::new();
        m.call("fetch_x509_svid", tonic::Code::Ok);
        m.call("fetch_x509_svid", tonic::Code::Ok);
        m.call("fetch_jwt_svid", tonic::Code::Unimplemented);
        let stream = m.stream_opened();
        m.renewal(RenewalOutcome::Ok);
        m.revoked_dropped(2);
        m.set_crl_number(7);
        m.set_failing_entries(3);
        m.sync_update(true);
        m.sync_update(false);
        m.attestation(Duration::from_millis(3), true);
        let now = SystemTime::now();
        m.set_next_rotation(Some(now + Duration::from_secs(30)));
        let text = m.render(4, now).unwrap();
        assert!(text.contains(
            "lanyard_agent_workload_api_calls_total{method=\"fetch_x509_svid\",code=\"ok\"} 2"
        ));
        assert!(text.contains("code=\"unimplemented\"} 1"));
        assert_eq!(
            line(&text, "lanyard_agent_workload_api_open_streams "),
            "lanyard_agent_workload_api_open_streams 1"
        );
        assert_eq!(
            line(&text, "lanyard_agent_cached_svids "),
            "lanyard_agent_cached_svids 4"
        );
        assert!(text.contains("lanyard_agent_svid_renewals_total{outcome=\"ok\"} 1"));
        assert!(text.contains("lanyard_agent_revoked_svids_dropped_total 2"));
        assert!(text.contains("lanyard_agent_crl_number 7"));
        assert!(text.contains("lanyard_agent_entries_failing 3"));
        assert!(text.contains("lanyard_agent_sync_updates_total 2"));
        assert!(text.contains("lanyard_agent_sync_deltas_total 1"));
        assert!(text.contains("lanyard_agent_workload_attestation_duration_seconds_count 1"));
        assert!(text.contains("lanyard_agent_workload_attestations_reused_total 1"));
        let next: f64 = line(&text, "lanyard_agent_next_rotation_seconds ")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((29.0..=30.0).contains(&next), "{next}");
        drop(stream);
        let text = m.render(0, now).unwrap();
        assert!(text.contains("lanyard_agent_workload_api_open_streams 0"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn next_rotation_is_never_negative_and_zero_when_unscheduled() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(seconds_until(0, now), 0.0);
        assert_eq!(seconds_until(900_000, now), 0.0);
        assert_eq!(seconds_until(1_002_500, now), 2.5);
    }

    #[test]
    fn code_names_are_snake_case() {
        assert_eq!(
            code_name(tonic::Code::PermissionDenied),
            "permission_denied"
        );
        assert_eq!(code_name(tonic::Code::InvalidArgument), "invalid_argument");
        assert_eq!(code_name(tonic::Code::Unavailable), "unavailable");
    }
}
