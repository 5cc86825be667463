//! Lanyard's quickstart: the whole flow on one machine, with real processes.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! It starts `lanyard-server` on an embedded sled store in a temporary
//! directory and a `lanyard-agent` attested with a join token, registers two
//! workloads that fetch their SVIDs over the SPIFFE Workload API and talk
//! mTLS through lanyard-mtls, revokes one and shows its next handshake
//! refused, then runs a task-scoped identity from request to completion. It
//! prints what each step verified and how long it took, cleans up every
//! process and file, and exits non-zero if any step fails.

mod cluster;
mod workload;

use std::{
    net::SocketAddr,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use cluster::{Cluster, Proc, wait_until};
use workload::{Pinned, echo};

const STEPS: usize = 9;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("workload") {
        return match workload::main(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("workload: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(()) => {
            println!("\nquickstart: every step passed; all processes stopped and files removed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nquickstart FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(n: usize, what: &str) {
    println!("\n[{n}/{STEPS}] {what}");
}

fn ok(what: impl AsRef<str>) {
    println!("      ok  {}", what.as_ref());
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `<copy> workload call ...` and returns its output.
fn call(
    c: &Cluster,
    bin: &std::path::Path,
    server: SocketAddr,
    server_name: &str,
    out: &str,
) -> anyhow::Result<String> {
    let result = Command::new(bin)
        .arg("workload")
        .arg("call")
        .arg(&c.agent_socket)
        .arg(server.to_string())
        .arg(c.id(server_name))
        .arg(c.dir.path().join(out))
        .output()
        .context("running a workload")?;
    ensure!(
        result.status.success(),
        "{} failed: {}",
        bin.display(),
        String::from_utf8_lossy(&result.stderr).trim()
    );
    Ok(String::from_utf8(result.stdout)?)
}

/// Presents `pinned` until the server refuses it as revoked; returns how
/// long after `since` that was.
fn until_refused(
    rt: &tokio::runtime::Runtime,
    pinned: &Pinned,
    server: SocketAddr,
    server_id: &str,
    since: Instant,
) -> anyhow::Result<Duration> {
    let config = pinned.client_config(server_id)?;
    loop {
        match rt.block_on(echo(config.clone(), server)) {
            Err(e) if e.to_string().contains("certificate revoked") => return Ok(since.elapsed()),
            Ok(_) | Err(_) if since.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(_) => bail!("the revoked SVID was still accepted 10 s after revocation"),
            Err(e) => bail!("handshakes failed, but not as revoked: {e:#}"),
        }
    }
}

fn run() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    step(1, "build lanyard-server and lanyard-agent");
    cluster::build_binaries()?;
    ok(format!("binaries in {}", cluster::bin_dir()?.display()));

    step(
        2,
        "start lanyard-server (embedded sled store, self-signed CA)",
    );
    let mut c = Cluster::start_server()?;
    ok(format!(
        "trust domain {} · data in {}",
        c.trust_domain,
        c.dir.path().join("server").display()
    ));
    let bundle = c.cli(&["bundle", "show"])?;
    ok(format!(
        "trust bundle: {} CA certificate(s)",
        bundle.matches("BEGIN CERTIFICATE").count()
    ));

    step(
        3,
        "start lanyard-agent, attested with a one-time join token",
    );
    let attestation = c.start_agent()?;
    ok(format!(
        "agent {} attested and ready in {}",
        c.agent_id,
        ms(attestation)
    ));

    step(
        4,
        "register workload `billing` and start it as an mTLS server",
    );
    let billing_bin = c.workload_binary("billing")?;
    let ledger_bin = c.workload_binary("ledger")?;
    c.register("billing", &billing_bin)?;
    c.register("ledger", &ledger_bin)?;
    ok("entries: billing and ledger, selected by uid and binary path");
    let addr_file = c.dir.path().join("billing.addr");
    let billing = Proc::spawn(
        "billing",
        Command::new(&billing_bin)
            .arg("workload")
            .arg("serve")
            .arg(&c.agent_socket)
            .arg(&addr_file),
        &c.dir.path().join("billing.log"),
    )?;
    c.adopt(billing);
    let first_svid = wait_until("billing's first SVID", Duration::from_secs(30), || {
        addr_file.exists()
    })?;
    let billing_addr: SocketAddr = std::fs::read_to_string(&addr_file)?.trim().parse()?;
    ok(format!(
        "billing got {} over the Workload API in {} and listens on {billing_addr}",
        c.id("billing"),
        ms(first_svid)
    ));

    step(
        5,
        "workload `ledger` fetches its SVID (spiffe crate) and calls billing over mTLS",
    );
    let reply = call(&c, &ledger_bin, billing_addr, "billing", "ledger-svid")?;
    ensure!(
        reply.contains(&c.id("ledger")),
        "billing did not see ledger's identity: {reply}"
    );
    ok(format!("billing answered: {}", reply.trim()));

    step(
        6,
        "revoke ledger's SVID; billing refuses it at the next handshake",
    );
    let stolen = Pinned::load(&c.dir.path().join("ledger-svid"))?;
    let serial = stolen.serial()?;
    rt.block_on(echo(stolen.client_config(&c.id("billing"))?, billing_addr))
        .context("the SVID works before revocation")?;
    c.cli(&[
        "svid",
        "revoke",
        "--serial",
        &serial,
        "--reason",
        "key-compromise",
    ])?;
    let revoked_at = Instant::now();
    let propagation = until_refused(&rt, &stolen, billing_addr, &c.id("billing"), revoked_at)?;
    ok(format!(
        "serial {serial} refused with \"certificate revoked\" {} after `svid revoke` returned",
        ms(propagation)
    ));
    let crl = cluster::http_get(c.server_http, "/crl")?;
    ensure!(crl.starts_with("HTTP/1.1 200"), "GET /crl failed");
    ok("the same CRL is served at GET /crl for openssl verify -crl_check");

    step(
        7,
        "ledger runs again: the agent renewed its SVID, billing accepts it",
    );
    let reply = call(&c, &ledger_bin, billing_addr, "billing", "ledger-svid-2")?;
    let fresh = Pinned::load(&c.dir.path().join("ledger-svid-2"))?.serial()?;
    ensure!(fresh != serial, "the agent served the revoked SVID again");
    ok(format!(
        "new serial {fresh}; billing answered: {}",
        reply.trim()
    ));

    step(8, "a task-scoped identity: request, approve, use, complete");
    let maint_bin = c.workload_binary("maint")?;
    let uid = cluster::current_uid()?.to_string();
    let task = c.cli(&[
        "task",
        "request",
        "--ticket",
        "CHG-1234",
        "--purpose",
        "rotate billing's database credentials",
        "--spiffe-id",
        &c.id("maint/rotate"),
        "--parent-id",
        &c.agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
        "--selector",
        &format!("unix:path:{}", maint_bin.display()),
        "--audience",
        &c.id("billing"),
        "--ttl",
        "10m",
    ])?;
    let task = task.trim().to_owned();
    ok(format!(
        "{task} requested for ticket CHG-1234; nothing is issued before approval"
    ));
    c.cli(&["task", "approve", &task, "--note", "change window approved"])?;
    let show = || -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(
            &c.cli(&["--output", "json", "task", "show", &task])?,
        )?)
    };
    wait_until("the task to become active", Duration::from_secs(10), || {
        show().is_ok_and(|t| t["state"] == "active")
    })?;
    ok("approved and active: its entry exists only inside the window");
    let out = call(&c, &maint_bin, billing_addr, "billing", "maint-svid")?;
    for line in out.lines() {
        ok(line);
    }
    let maint = Pinned::load(&c.dir.path().join("maint-svid"))?;
    c.cli(&["task", "complete", &task])?;
    let completed_at = Instant::now();
    let refused = until_refused(&rt, &maint, billing_addr, &c.id("billing"), completed_at)?;
    ok(format!(
        "task completed; its SVID refused {} later",
        ms(refused)
    ));
    ensure!(show()?["state"] == "completed", "task not completed");

    step(9, "the audit log: every decision, hash-chained");
    let audit = c.cli(&["audit", "export", "--ticket", "CHG-1234"])?;
    let actions: Vec<String> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|r| {
            format!(
                "{} by {}",
                r["action"].as_str().unwrap_or("?"),
                r["principal"].as_str().unwrap_or("?")
            )
        })
        .collect();
    ensure!(!actions.is_empty(), "no audit records for the ticket");
    for a in &actions {
        ok(a);
    }
    ok(c.cli(&["audit", "verify"])?.trim());
    c.check_alive()?;

    println!(
        "\ntimings: attestation {} · first SVID {} · revocation → refused handshake {} · task complete → refused {}",
        ms(attestation),
        ms(first_svid),
        ms(propagation),
        ms(refused)
    );
    Ok(())
}
