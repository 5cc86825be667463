//! `lanyard-bench task-policy`: what deciding a task request costs, next to
//! the request's total time.
//!
//! In process, the example Rego policy (`deploy/policies/
//! production-two-approvers.rego`) and the TOML rules decide the same
//! input document as often as they can. End to end, `RequestTask` calls go
//! through the Admin API of a real server, once without and once with the
//! Rego policy; the ratio shows the share of a request the policy takes.

use std::{
    hint::black_box,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lanyard_proto::admin::v1 as pb;
use lanyard_server::{Policy, PrincipalRule, TaskPolicy};

use crate::{
    admin,
    measure::run_for,
    processes::{Agent, Binaries, Server, TRUST_DOMAIN},
    report::{self, Table},
    stats::Summary,
};

/// The policy measured: two change-board approvers for production IDs.
const REGO: &str = include_str!("../../../deploy/policies/production-two-approvers.rego");

/// Options of `lanyard-bench task-policy`.
#[derive(Debug, clap::Args)]
pub struct TaskPolicyArgs {
    /// Seconds to spend on each in-process evaluation rate.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// `task request` calls timed end to end, per server.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
}

/// An input document as the server builds it for a request.
fn input() -> serde_json::Value {
    serde_json::json!({
        "action": "request",
        "requester": {"principal": "uid:1001(alice)", "uid": 1001, "gid": 1001,
                      "user": "alice", "groups": ["sre", "oncall"]},
        "ticket": "CHG-1234",
        "purpose": "rotate the orders DB password",
        "spiffe_id": format!("spiffe://{TRUST_DOMAIN}/prod/db-admin"),
        "parent": {"spiffe_id": format!("spiffe://{TRUST_DOMAIN}/lanyard/agent/join_token/n1"),
                   "selectors": ["join_token:id:n1"]},
        "selectors": ["unix:uid:1000", "unix:path:/usr/bin/psql"],
        "audiences": [format!("spiffe://{TRUST_DOMAIN}/db/orders")],
        "ttl_seconds": 900,
        "starts_at": 1_800_000_000,
        "now": {"unix": 1_800_000_000, "time_zone": "+00:00", "hour": 22, "minute": 0,
                "weekday": "tuesday", "weekend": false},
        "start": {"unix": 1_800_000_000, "time_zone": "+00:00", "hour": 22, "minute": 0,
                  "weekday": "tuesday", "weekend": false},
        "break_glass": false,
        "reason": "",
        "active_tasks": 1,
    })
}

/// Runs both measurements and returns their tables.
pub async fn run(args: TaskPolicyArgs) -> anyhow::Result<Vec<Table>> {
    let budget = Duration::from_secs(args.seconds);
    let rego = TaskPolicy::rego(Path::new("production-two-approvers.rego"), REGO.to_owned())
        .context("compiling the example policy")?;
    let toml = TaskPolicy::toml(&Policy {
        admins: vec![PrincipalRule::Uid(0)],
        requesters: Vec::new(),
        approvers: Vec::new(),
        max_task_ttl: Duration::from_secs(4 * 3600),
        break_glass_max_ttl: Duration::from_secs(1800),
        require_distinct_approver: true,
    });
    let doc = input();
    eprintln!("task-policy: evaluating in process");
    let decide = |policy: &TaskPolicy| {
        let mut once = |_| policy.decide(black_box(&doc)).map(|v| drop(black_box(v)));
        run_for(Duration::from_millis(200), 16, &mut once)?;
        run_for(budget, 16, &mut once)
    };
    let rego_rate = decide(&rego)?;
    let toml_rate = decide(&toml)?;
    let per = |s: crate::measure::Sample| {
        Duration::from_secs_f64(if s.ops > 0 {
            s.elapsed.as_secs_f64() / s.ops as f64
        } else {
            0.0
        })
    };
    let rego_each = per(rego_rate);
    let mut evaluation = Table::new(format!(
        "lanyard-bench task-policy: in-process decisions, {} s each",
        args.seconds
    ));
    evaluation.rate("(a) Rego policy (regorus), production example", rego_rate);
    evaluation.rate("(b) TOML rules (the default policy)", toml_rate);
    evaluation.derived("(a) per decision", report::duration(rego_each));
    evaluation.derived("(b) per decision", report::duration(per(toml_rate)));
    evaluation.note(
        "Each decision clones the compiled policy, converts the input document and evaluates \
         data.lanyard.tasks.decision, as the server does.",
    );

    let bins = Binaries::locate()?;
    eprintln!("task-policy: timing task requests without a policy file");
    let plain = requests(&bins, &[], args.requests).await?;
    let dir = tempfile::tempdir().context("creating a directory for the policy")?;
    let policy_path = dir.path().join("policy.rego");
    std::fs::write(&policy_path, REGO).context("writing the policy")?;
    let config = dir.path().join("server.toml");
    std::fs::write(&config, format!("[tasks]\npolicy_file = {policy_path:?}\n"))
        .context("writing the server config")?;
    let config = config.to_string_lossy().into_owned();
    eprintln!("task-policy: timing task requests with the Rego policy");
    let with_rego = requests(&bins, &["--config", &config], args.requests).await?;

    let mut latency = Table::with_columns(
        format!(
            "lanyard-bench task-policy: `task request` through the Admin API, {} calls each, one at a time",
            args.requests
        ),
        &["p50", "p99", "max", "result"],
    );
    for (label, s) in [
        ("(c) RequestTask, TOML rules", plain),
        ("(d) RequestTask, Rego policy", with_rego),
    ] {
        latency.row(
            label,
            vec![
                report::duration(s.p50),
                report::duration(s.p99),
                report::duration(s.max),
            ],
        );
    }
    latency.derived(
        "policy share of a request: (a) / (d) p50",
        format!(
            "{:.2}%",
            100.0 * rego_each.as_secs_f64() / with_rego.p50.as_secs_f64().max(f64::MIN_POSITIVE)
        ),
    );
    latency.derived(
        "(d) p50 / (c) p50",
        report::ratio(with_rego.p50.as_secs_f64(), plain.p50.as_secs_f64()),
    );
    latency.note(
        "A request also checks the parent agent, scans live tasks and entries, appends and \
         fsyncs its audit record and stores the task; the caller is an admin.",
    );
    Ok(vec![evaluation, latency])
}

/// Starts a server with `extra` run flags and an agent, then times
/// `count` RequestTask calls for distinct production IDs under that agent.
async fn requests(bins: &Binaries, extra: &[&str], count: u64) -> anyhow::Result<Summary> {
    let server = Server::start_with(bins, extra).await?;
    let agent = Agent::start(bins, &server).await?;
    let mut client = admin::connect(&server.admin_socket).await?;
    let mut samples = Vec::new();
    for i in 0..count {
        let request = pb::RequestTaskRequest {
            ticket: "CHG-BENCH".into(),
            purpose: "benchmark".into(),
            spiffe_id: format!("spiffe://{TRUST_DOMAIN}/prod/task-{i}"),
            parent_id: agent.spiffe_id.clone(),
            selectors: vec!["unix:uid:1000".into()],
            ttl_seconds: 600,
            ..Default::default()
        };
        let start = Instant::now();
        client
            .request_task(request)
            .await
            .with_context(|| format!("task request {i}"))?;
        samples.push(start.elapsed());
    }
    Summary::of(&samples).context("no samples")
}
