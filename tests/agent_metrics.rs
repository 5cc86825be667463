//! End to end: the agent's `/metrics` after a Workload API fetch and a
//! revocation, scraped over plain HTTP like Prometheus would.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{collections::HashMap, time::Duration};

use common::{
    Server, TD,
    agent::{Agent, eventually, http_get, leaf_serial, register_self, stream_serving},
};
use spiffe::WorkloadApiClient;

/// Samples by their full name with labels, e.g.
/// `lanyard_agent_svid_renewals_total{outcome="ok"}`.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("{name} not exposed; have {:?}", samples.keys()))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_after_a_fetch_and_a_revocation() {
    let server = Server::start();
    let agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/metered");
    let id = format!("spiffe://{TD}/e2e/metered");

    // A fetch with the spiffe crate's client, and a stream kept open.
    let (mut stream, first) = stream_serving(&agent, &id).await;
    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    let ctx = client.fetch_x509_context().await.unwrap();
    assert_eq!(ctx.default_svid().unwrap().spiffe_id().to_string(), id);

    let revoked = leaf_serial(&first.svids[0].x509_svid);
    server.cli_ok(&["svid", "revoke", "--serial", &revoked]);
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let msg = stream.message().await.unwrap().expect("stream open");
            if msg
                .svids
                .iter()
                .any(|s| leaf_serial(&s.x509_svid) != revoked)
            {
                return;
            }
        }
    })
    .await
    .expect("the revoked SVID is replaced");

    let addr = agent.http_addr;
    let text = tokio::task::spawn_blocking(move || {
        eventually(
            Duration::from_secs(30),
            "the revocation in the metrics",
            || {
                let text = http_get(addr, "/metrics");
                let s = samples(&text);
                (s.get("lanyard_agent_revoked_svids_dropped_total") >= Some(&1.0)
                    && s.get("lanyard_agent_cached_svids") >= Some(&1.0))
                .then_some(text)
            },
        )
    })
    .await
    .unwrap();
    let s = samples(&text);
    assert!(
        value(
            &s,
            r#"lanyard_agent_workload_api_calls_total{method="fetch_x509_svid",code="ok"}"#
        ) >= 1.0,
        "{text}"
    );
    assert!(value(&s, "lanyard_agent_cached_svids") >= 1.0, "{text}");
    assert!(
        value(&s, "lanyard_agent_revoked_svids_dropped_total") >= 1.0,
        "{text}"
    );
    assert!(value(&s, "lanyard_agent_crl_number") >= 2.0, "{text}");
    let open = value(&s, "lanyard_agent_workload_api_open_streams");
    assert!(open >= 0.0 && open.fract() == 0.0, "{text}");
    assert!(
        value(&s, "lanyard_agent_next_rotation_seconds") > 0.0,
        "{text}"
    );
    assert!(
        value(&s, r#"lanyard_agent_svid_renewals_total{outcome="ok"}"#) >= 2.0,
        "first issuance and the replacement: {text}"
    );
    assert!(
        value(&s, "lanyard_agent_sync_updates_total") >= 2.0,
        "{text}"
    );
    assert!(
        value(
            &s,
            "lanyard_agent_workload_attestation_duration_seconds_count"
        ) >= 1.0,
        "{text}"
    );
    assert!(text.contains("# TYPE lanyard_agent_workload_attestation_duration_seconds histogram"));
    // The health endpoints share the address.
    let ready = tokio::task::spawn_blocking(move || http_get(addr, "/health/ready"))
        .await
        .unwrap();
    assert!(ready.contains("ready"), "{ready}");
}

/// `issuance` of `/health/ready`, if the agent reports any failing entry.
fn issuance(agent: &Agent) -> Option<serde_json::Value> {
    let body = http_get(agent.http_addr, "/health/ready");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    health.get("issuance").cloned()
}

#[test]
fn an_issuance_failure_backs_off_and_shows_in_health_and_metrics() {
    /// The agent's first wait and the cap for an unreachable server.
    const BASE_MS: u64 = 500;
    const CAP_MS: u64 = 30_000;
    let mut server = Server::start();
    let agent = Agent::start(&server);
    let id = format!("spiffe://{TD}/e2e/renewing");
    common::agent::register(
        &server,
        &agent,
        "e2e/renewing",
        &format!("unix:uid:{}", common::agent::my_uid()),
        &["--x509-svid-ttl", "10s"],
    );
    eventually(Duration::from_secs(20), "the first SVID", || {
        let out = agent.api(&["fetch", "x509"]);
        String::from_utf8_lossy(&out.stdout)
            .contains(&id)
            .then_some(())
    });
    assert!(issuance(&agent).is_none());

    // The server goes away; the renewal at half-life fails, again and again.
    server.kill();
    let mut seen: Vec<(u64, u64)> = Vec::new();
    eventually(Duration::from_secs(60), "four failed renewals", || {
        if let Some(i) = issuance(&agent) {
            let (n, wait) = (
                i["consecutive_failures"].as_u64().unwrap(),
                i["backoff_ms"].as_u64().unwrap(),
            );
            assert_eq!(i["failing_entries"], 1, "{i}");
            assert!(
                i["last_error"].as_str().is_some_and(|e| !e.is_empty()),
                "{i}"
            );
            if !seen.contains(&(n, wait)) {
                seen.push((n, wait));
            }
        }
        seen.iter().any(|(n, _)| *n >= 4).then_some(())
    });
    // Each wait is the exponential backoff of its attempt (jittered over
    // its upper half), never a fixed short retry.
    for (n, wait) in &seen {
        let full = (BASE_MS << (n - 1).min(16)).min(CAP_MS);
        assert!(
            (full / 2..=full).contains(wait),
            "failure {n}: waited {wait} ms, expected {}..={full} ms; seen {seen:?}",
            full / 2
        );
    }
    let metrics = samples(&http_get(agent.http_addr, "/metrics"));
    assert_eq!(value(&metrics, "lanyard_agent_entries_failing"), 1.0);
    assert!(
        value(
            &metrics,
            "lanyard_agent_svid_renewals_total{outcome=\"failed\"}"
        ) >= 4.0,
        "{metrics:?}"
    );

    // The server is back: the next retry renews, and the report clears.
    server.spawn();
    eventually(
        Duration::from_secs(60),
        "the renewal after the outage",
        || issuance(&agent).is_none().then_some(()),
    );
    let metrics = samples(&http_get(agent.http_addr, "/metrics"));
    assert_eq!(value(&metrics, "lanyard_agent_entries_failing"), 0.0);
}
