//! `lanyard-bench issue --burst N`: how long a mass (re-)issuance takes with
//! real agents, and how fast an entry change reaches an agent's Sync stream
//! when the agent already has many entries.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use lanyard_proto::{
    admin::v1::{CreateEntryRequest, Entry},
    node::v1::SyncRequest,
};

use crate::{
    admin,
    issue::{IssueArgs, simulated_agent, trust_of},
    processes::{Agent, Binaries, Server, TRUST_DOMAIN},
    report::{Table, duration},
    stats::Summary,
};

/// Real agents the burst is spread over.
const AGENTS: usize = 10;
/// Entries the simulated agent holds while entry changes are timed.
const LATENCY_ENTRIES: usize = 10_000;
/// Entry changes timed.
const LATENCY_ROUNDS: usize = 100;
/// Give up waiting for the burst after this long.
const BURST_DEADLINE: Duration = Duration::from_secs(600);

/// Runs both measurements.
pub async fn run(_args: &IssueArgs, burst: usize) -> anyhow::Result<Vec<Table>> {
    let bins = Binaries::locate()?;
    let mut tables = vec![burst_table(&bins, burst).await?];
    tables.push(latency_table(&bins).await?);
    Ok(tables)
}

/// Registers `burst` entries across [`AGENTS`] real agents and times
/// registration-to-every-SVID-issued.
async fn burst_table(bins: &Binaries, burst: usize) -> anyhow::Result<Table> {
    let server = Server::start(bins).await?;
    let mut agents = Vec::with_capacity(AGENTS);
    for _ in 0..AGENTS {
        agents.push(Agent::start(bins, &server).await?);
    }
    let client = admin::connect(&server.admin_socket).await?;
    let per_agent = burst.div_ceil(AGENTS);
    let started = Instant::now();
    for (n, agent) in agents.iter().enumerate() {
        let first = n * per_agent;
        let last = ((n + 1) * per_agent).min(burst);
        admin::batch_create_entries(
            &client,
            TRUST_DOMAIN,
            "burst",
            first..last,
            &agent.spiffe_id,
            "unix:uid:1000",
        )
        .await?;
    }
    let registered = started.elapsed();
    let mut issued = 0.0;
    while issued < burst as f64 {
        for agent in &mut agents {
            agent.check_running()?;
        }
        anyhow::ensure!(
            started.elapsed() < BURST_DEADLINE,
            "only {issued} of {burst} SVIDs issued after {BURST_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        issued = server
            .metric("lanyard_server_svids_issued_total{kind=\"workload\"}")
            .await?;
    }
    // The counter says how many were signed; the store must agree.
    let recorded = admin::count_issued(&client, TRUST_DOMAIN, "burst").await?;
    anyhow::ensure!(
        recorded >= burst,
        "the server counted {issued} SVIDs but recorded {recorded} of {burst}"
    );
    let all = started.elapsed();
    let mut table = Table::with_columns(
        format!("lanyard-bench issue --burst {burst}: {AGENTS} real agents"),
        &["result"],
    );
    table.row(
        "entries registered (BatchCreateEntries)",
        vec![duration(registered)],
    );
    table.row(
        "registration began -> every SVID issued",
        vec![duration(all)],
    );
    table.row(
        "SVIDs per second over the burst",
        vec![format!("{:.0}/s", burst as f64 / all.as_secs_f64())],
    );
    table.note("target: every SVID issued under 30 s for 100,000 entries");
    Ok(table)
}

/// Times an unrelated entry change reaching a Sync stream whose agent has
/// [`LATENCY_ENTRIES`] entries.
async fn latency_table(bins: &Binaries) -> anyhow::Result<Table> {
    let server = Server::start(bins).await?;
    let trust = trust_of(&server).await?;
    let (mut agent, agent_id) = simulated_agent(&server, &trust, 0).await?;
    let client = admin::connect(&server.admin_socket).await?;
    admin::batch_create_entries(
        &client,
        TRUST_DOMAIN,
        "held",
        0..LATENCY_ENTRIES,
        &agent_id,
        "unix:uid:1000",
    )
    .await?;
    let mut sync = agent
        .client
        .sync(SyncRequest::default())
        .await
        .context("opening Sync")?
        .into_inner();
    // The stream's first message(s) until it holds everything registered.
    loop {
        let msg = sync.next().await.context("Sync ended")??;
        if msg.entries.len() > LATENCY_ENTRIES {
            break;
        }
    }
    let mut samples = Vec::with_capacity(LATENCY_ROUNDS);
    for n in 0..LATENCY_ROUNDS {
        let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/changed-{n}");
        let started = Instant::now();
        client
            .clone()
            .create_entry(CreateEntryRequest {
                entry: Some(Entry {
                    spiffe_id: spiffe_id.clone(),
                    parent_id: agent_id.clone(),
                    selectors: vec!["unix:uid:1000".to_owned()],
                    ..Entry::default()
                }),
            })
            .await
            .context("creating an entry")?;
        loop {
            let msg = sync.next().await.context("Sync ended")??;
            if msg.entries.iter().any(|e| e.spiffe_id == spiffe_id) {
                break;
            }
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    let summary = Summary::of(&samples).context("no samples")?;
    let mut table = Table::with_columns(
        format!(
            "entry change -> Sync stream of an agent holding {LATENCY_ENTRIES} entries ({LATENCY_ROUNDS} changes)"
        ),
        &["result"],
    );
    table.row("p50", vec![duration(summary.p50)]);
    table.row("p99", vec![duration(summary.p99)]);
    table.note("from CreateEntry sent to the Sync message that carries it; target p99 < 300 ms");
    Ok(table)
}
