//! `lanyard-bench workload-api`: what a workload waits for and what the
//! agent holds in memory, on real `lanyard-server` and `lanyard-agent`
//! processes.
//!
//! Latency: N concurrent callers, each on its own Unix socket connection to
//! one agent, each making `--requests` sequential `FetchX509SVID` calls
//! timed to the stream's first message (attestation from /proc, matching,
//! response encoding), then as many `FetchJWTSVID` calls (attestation,
//! matching, the cached token). Baseline, in the same run with the same
//! callers and connections: `ValidateJWTSVID` without an audience, which
//! the agent refuses (InvalidArgument) after checking the header, without
//! attestation or signing, so it is the raw cost of a gRPC round trip over
//! the socket. The three kinds of call are timed in `--rounds` rounds, each
//! starting with another kind, and each kind's samples pooled: a passing
//! disturbance of the machine then weighs on all three alike.
//!
//! Memory: the agent's VmRSS at ready with no entries (the baseline), then
//! with N entries (for a uid that is not running) once it serves all N
//! SVIDs; a fresh server and agent for each N. Then, with the N entries
//! there, entries created one at a time for another workload (the
//! watcher, with its FetchX509SVID stream open) are timed until its
//! stream delivers each.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use lanyard_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest};
use tokio::{sync::Barrier, task::JoinSet};

use crate::{
    admin, limits,
    processes::{Agent, Binaries, Server, TRUST_DOMAIN},
    procfs,
    report::{Table, bytes, duration, ratio},
    stats::Summary,
    workload_client::{self, Client, fetch_x509_once, request},
};

/// Connections opened at once while setting up callers.
const CONNECT_PARALLELISM: usize = 64;
/// Bound on one call, so a stuck agent fails the run instead of hanging it.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Options of `lanyard-bench workload-api`.
#[derive(Debug, clap::Args)]
pub struct WorkloadApiArgs {
    /// Concurrent callers for the latency measurement, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1000])]
    callers: Vec<usize>,
    /// Timed calls each caller makes, one after the other, per measurement
    /// and round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
    /// Rounds of the latency measurement: each round times every kind of
    /// call once, starting with a different one each time, and the rounds'
    /// samples are pooled, so that a passing disturbance of the machine
    /// weighs on every kind alike instead of on the one that ran then.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Cached SVID counts for the memory measurement, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000])]
    svids: Vec<usize>,
    /// Register the entries one CreateEntry call at a time (the server
    /// rebuilds and sends the agent's whole Sync view on each), instead of
    /// in BatchCreateEntries calls.
    #[arg(long)]
    one_by_one: bool,
    /// Admin API requests in flight with `--one-by-one`.
    #[arg(long, default_value_t = 16)]
    parallelism: usize,
    /// Entries created for the watcher, one at a time, once the bulk
    /// entries are served: each is timed until its stream delivers it.
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// Measure memory only.
    #[arg(long, conflicts_with = "skip_memory")]
    skip_latency: bool,
    /// Measure latency only.
    #[arg(long)]
    skip_memory: bool,
}

/// Runs the measurements and returns their tables.
pub async fn run(args: WorkloadApiArgs) -> anyhow::Result<Vec<Table>> {
    let bins = Binaries::locate()?;
    let uid = procfs::own_uid()?;
    let most = args.callers.iter().copied().max().unwrap_or(0);
    // Before any agent is spawned: it inherits the raised limit.
    let nofile = limits::raise_open_files(limits::needed_for(most))?;
    let mut tables = Vec::new();
    if !args.skip_latency {
        tables.push(latency(&bins, &args, uid, nofile).await?);
    }
    if !args.skip_memory {
        tables.push(memory(&bins, &args, uid).await?);
    }
    Ok(tables)
}

// === latency ===

/// The calls compared.
#[derive(Clone, Copy, Debug)]
enum Call {
    /// `ValidateJWTSVID` without an audience: header check, then
    /// InvalidArgument.
    Baseline,
    /// `FetchX509SVID` up to the first stream message.
    FetchX509Svid,
    /// `FetchJWTSVID` for one audience (served from the agent's cache after
    /// the untimed warm-up call).
    FetchJwtSvid,
}

impl Call {
    async fn once(self, client: &mut Client) -> anyhow::Result<()> {
        match self {
            Self::Baseline => match client
                .validate_jwtsvid(request(ValidateJwtsvidRequest::default()))
                .await
            {
                Err(status) if status.code() == tonic::Code::InvalidArgument => Ok(()),
                other => bail!("ValidateJWTSVID without an audience answered {other:?}"),
            },
            Self::FetchJwtSvid => {
                let resp = client
                    .fetch_jwtsvid(request(JwtsvidRequest {
                        audience: vec!["lanyard-bench".into()],
                        spiffe_id: String::new(),
                    }))
                    .await
                    .context("FetchJWTSVID")?;
                if resp.into_inner().svids.is_empty() {
                    bail!("FetchJWTSVID answered without a token");
                }
                Ok(())
            }
            Self::FetchX509Svid => {
                let first = fetch_x509_once(client).await?;
                if first.svids.is_empty() {
                    bail!("FetchX509SVID answered without an SVID");
                }
                Ok(())
            }
        }
    }
}

/// Latencies of every call, the phase's wall time, the CPU time the agent
/// and the callers (this process) used during it, and the time the agent
/// spent attesting callers, by its own clock.
#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    wall: Duration,
    agent_cpu: Duration,
    client_cpu: Duration,
    /// Sum of `lanyard_agent_workload_attestation_duration_seconds` over
    /// the phase, and its number of attestations.
    attesting: f64,
    attestations: f64,
}

impl Phase {
    /// Adds another round's samples and times.
    fn absorb(&mut self, round: Self) {
        self.latencies.extend(round.latencies);
        self.wall += round.wall;
        self.agent_cpu += round.agent_cpu;
        self.client_cpu += round.client_cpu;
        self.attesting += round.attesting;
        self.attestations += round.attestations;
    }

    /// The agent's mean attestation time per attested call, if any was.
    fn attestation_mean(&self) -> Option<Duration> {
        (self.attestations >= 1.0)
            .then(|| Duration::from_secs_f64(self.attesting / self.attestations))
    }

    /// CPU time per call, in microseconds.
    fn per_call(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.latencies.len().max(1) as f64
    }
}

/// The agent's attestation-time histogram: its sum (seconds) and count.
const ATTESTATION_SUM: &str = "lanyard_agent_workload_attestation_duration_seconds_sum";
const ATTESTATION_COUNT: &str = "lanyard_agent_workload_attestation_duration_seconds_count";

/// [`phase`], with the CPU time `agent` and this process used during it
/// and the agent's attestation time (its metrics are read outside the CPU
/// window).
async fn measured(
    agent: &Agent,
    clients: &[Client],
    requests: u64,
    call: Call,
) -> anyhow::Result<Phase> {
    let (sum0, count0) = (
        agent.metric(ATTESTATION_SUM).await?,
        agent.metric(ATTESTATION_COUNT).await?,
    );
    let (pid, own) = (agent.pid(), std::process::id());
    let (agent0, own0) = (procfs::cpu_time(pid)?, procfs::cpu_time(own)?);
    let mut phase = phase(clients, requests, call).await?;
    phase.agent_cpu = procfs::cpu_time(pid)?.saturating_sub(agent0);
    phase.client_cpu = procfs::cpu_time(own)?.saturating_sub(own0);
    phase.attesting = agent.metric(ATTESTATION_SUM).await? - sum0;
    phase.attestations = agent.metric(ATTESTATION_COUNT).await? - count0;
    Ok(phase)
}

/// Every client makes `requests` sequential calls; all start together.
async fn phase(clients: &[Client], requests: u64, call: Call) -> anyhow::Result<Phase> {
    let barrier = Arc::new(Barrier::new(clients.len() + 1));
    let mut tasks = JoinSet::new();
    for client in clients {
        let mut client = client.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let mut out = Vec::with_capacity(usize::try_from(requests).unwrap_or(0));
            for _ in 0..requests {
                let start = Instant::now();
                tokio::time::timeout(CALL_TIMEOUT, call.once(&mut client))
                    .await
                    .with_context(|| format!("{call:?} took over {CALL_TIMEOUT:?}"))??;
                out.push(start.elapsed());
            }
            anyhow::Ok(out)
        });
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.context("caller task failed")??);
    }
    Ok(Phase {
        latencies,
        wall: start.elapsed(),
        ..Phase::default()
    })
}

async fn latency(
    bins: &Binaries,
    args: &WorkloadApiArgs,
    uid: u32,
    nofile: u64,
) -> anyhow::Result<Table> {
    eprintln!("workload-api: starting lanyard-server and lanyard-agent");
    let server = Server::start(bins).await?;
    let mut agent = Agent::start(bins, &server).await?;
    let id = format!("spiffe://{TRUST_DOMAIN}/bench/workload");
    let selector = format!("unix:uid:{uid}");
    server
        .cli(&[
            "entry",
            "create",
            "--spiffe-id",
            &id,
            "--parent-id",
            &agent.spiffe_id,
            "--selector",
            &selector,
        ])
        .await?;
    wait_served(&agent, 1, Duration::from_secs(60)).await?;

    let mut table = Table::with_columns(
        format!(
            "lanyard-bench workload-api: latency, {} rounds of {} timed calls per caller \
             and kind of call, one agent",
            args.rounds, args.requests
        ),
        &[
            "callers",
            "calls",
            "p50",
            "p99",
            "max",
            "calls/s",
            "agent CPU/call",
            "callers' CPU/call",
            "attestation/call",
        ],
    );
    for &callers in &args.callers {
        if callers == 0 {
            continue;
        }
        eprintln!("workload-api: connecting {callers} callers");
        let clients: Vec<Client> = futures::stream::iter(0..callers)
            .map(|_| workload_client::connect(&agent.socket))
            .buffer_unordered(CONNECT_PARALLELISM)
            .try_collect()
            .await?;
        // Untimed warm-up of every connection (and the one token minted).
        phase(&clients, 1, Call::Baseline).await?;
        phase(&clients, 1, Call::FetchJwtSvid).await?;
        let calls = [Call::Baseline, Call::FetchX509Svid, Call::FetchJwtSvid];
        let mut phases: [Phase; 3] = Default::default();
        for round in 0..args.rounds {
            for k in 0..calls.len() {
                let i = (k + usize::try_from(round).unwrap_or(0)) % calls.len();
                let call = calls.get(i).copied().context("call index")?;
                eprintln!(
                    "workload-api: {callers} callers, round {}/{}, {call:?}",
                    round + 1,
                    args.rounds
                );
                let timed = measured(&agent, &clients, args.requests, call).await?;
                phases.get_mut(i).context("call index")?.absorb(timed);
            }
        }
        let [base, fetch, jwt] = phases;
        agent.check_running()?;
        drop(clients);

        let b = Summary::of(&base.latencies).context("no baseline samples")?;
        let f = Summary::of(&fetch.latencies).context("no FetchX509SVID samples")?;
        let j = Summary::of(&jwt.latencies).context("no FetchJWTSVID samples")?;
        let row = |s: &Summary, p: &Phase| {
            vec![
                callers.to_string(),
                s.count.to_string(),
                duration(s.p50),
                duration(s.p99),
                duration(s.max),
                format!("{:.0}", s.count as f64 / p.wall.as_secs_f64().max(1e-9)),
                format!("{:.1}µs", p.per_call(p.agent_cpu)),
                format!("{:.1}µs", p.per_call(p.client_cpu)),
                p.attestation_mean().map_or_else(|| "-".into(), duration),
            ]
        };
        table.row("(a) FetchX509SVID, to first message", row(&f, &fetch));
        table.row("(d) FetchJWTSVID, one audience", row(&j, &jwt));
        table.row(
            "(b) baseline: ValidateJWTSVID -> InvalidArgument",
            row(&b, &base),
        );
        let ratios = |s: &Summary, p: &Phase| {
            vec![
                String::new(),
                String::new(),
                ratio(s.p50.as_secs_f64(), b.p50.as_secs_f64()),
                ratio(s.p99.as_secs_f64(), b.p99.as_secs_f64()),
                String::new(),
                String::new(),
                ratio(p.per_call(p.agent_cpu), base.per_call(base.agent_cpu)),
                ratio(p.per_call(p.client_cpu), base.per_call(base.client_cpu)),
                String::new(),
            ]
        };
        table.row("ratio a/b", ratios(&f, &fetch));
        table.row("ratio d/b", ratios(&j, &jwt));
    }
    let (exe_size, hashing) = hash_own_binary(5)?;
    let h = Summary::of(&hashing).context("no hashing samples")?;
    table.row(
        "(c) reference: read + SHA-256 of the caller's binary",
        vec![
            "1".into(),
            h.count.to_string(),
            duration(h.p50),
            duration(h.p99),
            duration(h.max),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ],
    );
    table.note(format!(
        "Each caller has its own connection to the agent's socket (set up before timing). \
         (a) includes workload attestation from /proc; the caller's binary (here \
         lanyard-bench, {}) is hashed for unix:sha256 once and then cached by file state \
         (the untimed warm-up call pays it); (c) is that uncached step alone.",
        bytes(exe_size)
    ));
    table.note(
        "CPU/call: user plus system time of the agent, and of this process (the callers), \
         during the phase, over its calls (the kernel counts in clock ticks, usually 10 ms).",
    );
    table.note(
        "attestation/call: the agent's own mean time attesting one call \
         (lanyard_agent_workload_attestation_duration_seconds over the phase), on the wall \
         clock: it includes time its thread was preempted. After the warm-up every call reuses \
         its connection's attestation, so this is the check of its inputs.",
    );
    table.note(format!(
        "Callers, agent and server share {} CPU(s); RLIMIT_NOFILE {nofile}.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    Ok(table)
}

/// Reads and hashes this binary `runs` times as workload attestation does
/// for `unix:sha256`; returns its size and the time of each run.
fn hash_own_binary(runs: usize) -> anyhow::Result<(u64, Vec<Duration>)> {
    let exe = std::env::current_exe().context("locating the lanyard-bench binary")?;
    let mut times = Vec::with_capacity(runs);
    let mut size = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let data = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
        std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, &data));
        times.push(start.elapsed());
        size = u64::try_from(data.len()).unwrap_or(u64::MAX);
    }
    Ok((size, times))
}

/// Waits until the Workload API serves this process at least `count` SVIDs;
/// returns how many it served.
async fn wait_served(agent: &Agent, count: usize, timeout: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let mut client = workload_client::connect(&agent.socket).await?;
            let first = fetch_x509_once(&mut client).await?;
            anyhow::Ok(first.svids.len())
        };
        let last = match attempt.await {
            Ok(n) if n >= count => return Ok(n),
            Ok(n) => format!("{n} SVIDs served"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("the agent did not serve {count} SVIDs within {timeout:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// === memory ===

/// A uid no process of the bench runs as: the bulk entries' workload. The
/// agent issues and holds their SVIDs all the same (it serves whoever
/// comes with that uid), and they stay out of the watcher's answer.
fn bulk_uid(uid: u32) -> u32 {
    uid.wrapping_add(1_000_003)
}

async fn memory(bins: &Binaries, args: &WorkloadApiArgs, uid: u32) -> anyhow::Result<Table> {
    let mut table = Table::with_columns(
        "lanyard-bench workload-api: agent resident memory (VmRSS) by cached X.509-SVIDs, \
         and an unrelated change reaching a stream",
        &[
            "SVIDs",
            "VmRSS",
            "bytes/SVID",
            "registered in",
            "all served",
            "change p50",
            "change p99",
            "change max",
        ],
    );
    let mut counts = args.svids.clone();
    counts.sort_unstable();
    counts.dedup();
    for n in counts.into_iter().filter(|n| *n > 0) {
        eprintln!("workload-api: memory with {n} SVIDs: starting a fresh server and agent");
        let server = Server::start(bins).await?;
        let mut agent = Agent::start(bins, &server).await?;
        let admin = admin::connect(&server.admin_socket).await?;
        let rss0 = settled_rss(agent.pid()).await?;

        // The watcher: a workload of its own, whose stream is open while
        // the bulk entries arrive and while its own entries change.
        let own = format!("unix:uid:{uid}");
        admin::create_entry(
            &admin,
            &format!("spiffe://{TRUST_DOMAIN}/bench/watcher"),
            &agent.spiffe_id,
            &own,
        )
        .await?;
        wait_served(&agent, 1, Duration::from_secs(60)).await?;
        let mut watcher = Watcher::open(&agent).await?;

        let bulk = format!("unix:uid:{}", bulk_uid(uid));
        let prefix = "bench/mem";
        let start = Instant::now();
        if args.one_by_one {
            eprintln!(
                "workload-api: registering {n} entries one by one ({} in flight)",
                args.parallelism
            );
            admin::create_entries(
                &admin,
                TRUST_DOMAIN,
                prefix,
                0..n,
                &agent.spiffe_id,
                &bulk,
                args.parallelism,
            )
            .await?;
        } else {
            eprintln!("workload-api: registering {n} entries in batches");
            admin::batch_create_entries(
                &admin,
                TRUST_DOMAIN,
                prefix,
                0..n,
                &agent.spiffe_id,
                &bulk,
            )
            .await?;
        }
        let registered = start.elapsed();
        // Generous: the agent signs in batches as the entries arrive.
        let deadline = Instant::now()
            + Duration::from_secs(120)
            + Duration::from_millis(50) * u32::try_from(n).unwrap_or(u32::MAX);
        let all = n + 1;
        loop {
            agent.check_running()?;
            let served = agent.metric("lanyard_agent_cached_svids ").await? as usize;
            if served >= all {
                break;
            }
            if Instant::now() > deadline {
                bail!("the agent serves only {served} of {all} SVIDs in time");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let served = start.elapsed();
        eprintln!("workload-api: {n} SVIDs served; waiting for the agent's memory to settle");
        let rss = settled_rss(agent.pid()).await?;

        eprintln!(
            "workload-api: {} changes to the watcher's entries",
            args.changes
        );
        let mut delays = Vec::with_capacity(args.changes);
        for i in 0..args.changes {
            let start = Instant::now();
            admin::create_entry(
                &admin,
                &format!("spiffe://{TRUST_DOMAIN}/bench/watched-{i}"),
                &agent.spiffe_id,
                &own,
            )
            .await?;
            watcher.until_svids(i + 2).await?;
            delays.push(start.elapsed());
        }
        agent.check_running()?;
        let change = Summary::of(&delays);

        table.row(
            "(b) baseline: agent ready, no entries",
            vec!["0".into(), bytes(rss0)],
        );
        let per_svid = (rss as f64 - rss0 as f64) / n as f64;
        let mut row = vec![
            n.to_string(),
            bytes(rss),
            format!("{per_svid:.0}"),
            duration(registered),
            duration(served),
        ];
        if let Some(c) = change {
            row.extend([duration(c.p50), duration(c.p99), duration(c.max)]);
        }
        table.row(&format!("(a) agent holding {n} SVIDs"), row);
    }
    table.note(
        "bytes/SVID = (VmRSS(a) - VmRSS(b)) / SVIDs; each size on a fresh server and agent, \
         read once the agent serves every SVID and its VmRSS is steady.",
    );
    table.note(format!(
        "Each SVID is one entry, for a workload uid that is not running: its P-256 key, \
         certificate chain and entry as the agent holds them. Entries registered through the \
         Admin API, {}; 'all served' is from the start of registration until the agent's \
         lanyard_agent_cached_svids gauge counts them all.",
        if args.one_by_one {
            "one CreateEntry call each"
        } else {
            "in BatchCreateEntries calls of 5,000"
        }
    ));
    table.note(format!(
        "change: {} times, an entry created for the watcher (another uid's workload, whose \
         FetchX509SVID stream is open) while the bulk entries exist: from the CreateEntry call \
         until the stream delivers the answer with the new SVID (server Sync, issuance, \
         publication).",
        args.changes
    ));
    Ok(table)
}

/// An open `FetchX509SVID` stream.
struct Watcher {
    stream: tonic::Streaming<lanyard_proto::workload::X509svidResponse>,
}

impl Watcher {
    async fn open(agent: &Agent) -> anyhow::Result<Self> {
        let mut client = workload_client::connect(&agent.socket).await?;
        let stream = client
            .fetch_x509svid(request(lanyard_proto::workload::X509svidRequest {}))
            .await
            .context("FetchX509SVID")?
            .into_inner();
        Ok(Self { stream })
    }

    /// Waits for a message with at least `count` SVIDs.
    async fn until_svids(&mut self, count: usize) -> anyhow::Result<()> {
        loop {
            let message = tokio::time::timeout(CALL_TIMEOUT, self.stream.message())
                .await
                .with_context(|| format!("no answer with {count} SVIDs within {CALL_TIMEOUT:?}"))?
                .context("FetchX509SVID stream")?
                .context("FetchX509SVID stream ended")?;
            if message.svids.len() >= count {
                return Ok(());
            }
        }
    }
}

/// VmRSS once two readings 500 ms apart differ by under 1 % (at most 15 s).
async fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut last = procfs::vm_rss(pid)?;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = procfs::vm_rss(pid)?;
        if now.abs_diff(last) * 100 < last.max(1) {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}
