//! `task ...` and `audit ...` operator commands.

use anyhow::{Context, anyhow};
use lanyard_proto::admin::v1 as pb;
use serde_json::Value;

use super::{
    args::{AuditCmd, PolicyCmd, TaskCmd},
    commands::{Admin, print_json, print_list, rpc, unix},
    output::time,
    views::{AuditReportView, PolicyView, TaskView},
};

fn state_label(t: &pb::Task) -> String {
    let mut s = t.state.clone();
    if t.break_glass {
        s.push_str(if t.awaiting_review {
            " BREAK-GLASS (awaiting review)"
        } else {
            " break-glass (reviewed)"
        });
    }
    s
}

fn task_text(t: &pb::Task) -> String {
    let mut out = vec![
        format!("{:<11} {}", "ID", t.id),
        format!("{:<11} {}", "Ticket", t.ticket),
        format!("{:<11} {}", "Purpose", t.purpose),
        format!("{:<11} {}", "State", state_label(t)),
        format!("{:<11} {}", "SPIFFE ID", t.spiffe_id),
        format!("{:<11} {}", "Parent ID", t.parent_id),
        format!("{:<11} {}", "Selectors", t.selectors.join(", ")),
        format!(
            "{:<11} {}",
            "Audiences",
            if t.audiences.is_empty() {
                "(any)".into()
            } else {
                t.audiences.join(", ")
            }
        ),
        format!(
            "{:<11} {} .. {}",
            "Window",
            time(t.starts_at),
            time(t.ends_at)
        ),
        format!(
            "{:<11} {}/{}{}",
            "Approvals",
            t.approvals.len(),
            t.approvals_required.max(1),
            if t.approver_groups.is_empty() {
                String::new()
            } else {
                format!(" (from {})", t.approver_groups.join(", "))
            }
        ),
    ];
    if !t.policy_sha256.is_empty() {
        out.push(format!(
            "{:<11} rule {} (sha256 {})",
            "Policy", t.policy_rule, t.policy_sha256
        ));
    }
    out.push("History".to_owned());
    for h in &t.history {
        out.push(format!(
            "  {}  {:<10} {}  {}",
            time(h.at),
            h.state,
            h.principal,
            h.note
        ));
    }
    if let Some(r) = &t.reviewed {
        out.push(format!(
            "  {}  {:<10} {}  {}",
            time(r.at),
            "reviewed",
            r.principal,
            r.note
        ));
    }
    out.join("\n")
}

fn show(t: &pb::Task, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(&TaskView::from(t))
    } else {
        println!("{}", task_text(t));
        Ok(())
    }
}

pub(crate) async fn task(admin: &mut Admin, cmd: TaskCmd, json: bool) -> anyhow::Result<()> {
    let decision = |id: String, note: String| pb::TaskDecision { id, note };
    match cmd {
        TaskCmd::Request(r) => {
            let t = admin
                .request_task(pb::RequestTaskRequest {
                    ticket: r.ticket,
                    purpose: r.purpose,
                    spiffe_id: r.spiffe_id,
                    parent_id: r.parent_id,
                    selectors: r.selectors,
                    dns_names: r.dns_names,
                    ttl_seconds: r.ttl.as_secs().max(1) as i64,
                    audiences: r.audiences,
                    starts_at: r.starts_at.map(unix).unwrap_or(0),
                    break_glass: r.break_glass,
                    reason: r.reason.unwrap_or_default(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                print_json(&TaskView::from(&t))
            } else {
                println!("{}", t.id);
                eprintln!(
                    "{} · {} · window {} .. {}",
                    t.ticket,
                    state_label(&t),
                    time(t.starts_at),
                    time(t.ends_at)
                );
                Ok(())
            }
        }
        TaskCmd::Approve { id, note } => show(
            &admin
                .approve_task(decision(id, note))
                .await
                .map_err(rpc)?
                .into_inner(),
            json,
        ),
        TaskCmd::Deny { id, reason } => show(
            &admin
                .deny_task(decision(id, reason))
                .await
                .map_err(rpc)?
                .into_inner(),
            json,
        ),
        TaskCmd::Complete { id, note } => show(
            &admin
                .complete_task(decision(id, note))
                .await
                .map_err(rpc)?
                .into_inner(),
            json,
        ),
        TaskCmd::Review { id, note } => show(
            &admin
                .review_task(decision(id, note))
                .await
                .map_err(rpc)?
                .into_inner(),
            json,
        ),
        TaskCmd::Show { id } => show(
            &admin
                .get_task(pb::GetTaskRequest { id })
                .await
                .map_err(rpc)?
                .into_inner(),
            json,
        ),
        TaskCmd::List { state, ticket } => {
            let tasks = admin
                .list_tasks(pb::ListTasksRequest {
                    state: state.unwrap_or_default(),
                    ticket: ticket.unwrap_or_default(),
                })
                .await
                .map_err(rpc)?
                .into_inner()
                .tasks;
            print_list(
                &tasks,
                json,
                TaskView::from,
                &["ID", "TICKET", "STATE", "SPIFFE ID", "REQUESTED BY", "ENDS"],
                |t| {
                    vec![
                        t.id.clone(),
                        t.ticket.clone(),
                        state_label(t),
                        t.spiffe_id.clone(),
                        t.history
                            .first()
                            .map(|h| h.principal.clone())
                            .unwrap_or_default(),
                        time(t.ends_at),
                    ]
                },
            )
        }
    }
}

/// `policy show` and `policy test` against the server's policy.
pub(crate) async fn policy(admin: &mut Admin, cmd: PolicyCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Show => {
            let p = admin
                .get_task_policy(pb::GetTaskPolicyRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                print_json(&PolicyView {
                    origin: &p.origin,
                    sha256: &p.sha256,
                    source: &p.source,
                })
            } else {
                println!(
                    "# task policy: {}\n# sha256: {}\n{}",
                    p.origin, p.sha256, p.source
                );
                Ok(())
            }
        }
        PolicyCmd::Test { input, .. } => {
            let input_json = read_input(&input)?;
            let decision = admin
                .test_task_policy(pb::TestTaskPolicyRequest { input_json })
                .await
                .map_err(rpc)?
                .into_inner()
                .decision_json;
            print_decision(serde_json::from_str(&decision)?, json)
        }
    }
}

fn read_input(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --input {}", path.display()))?;
    serde_json::from_str::<Value>(&text).with_context(|| {
        format!(
            "--input {} is not JSON; give the input document of a request or an approval",
            path.display()
        )
    })?;
    Ok(text)
}

/// `policy test --policy FILE`: no server needed.
pub(crate) fn test_policy_file(
    policy: &std::path::Path,
    input: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    let policy = lanyard_server::TaskPolicy::load(policy)?;
    let input: Value = serde_json::from_str(&read_input(input)?)?;
    print_decision(serde_json::to_value(policy.decide(&input)?)?, json)
}

fn print_decision(v: Value, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&v);
    }
    let allow = v["allow"].as_bool().unwrap_or(false);
    println!("{}", if allow { "allow" } else { "deny" });
    println!("rule      {}", v["rule"].as_str().unwrap_or_default());
    println!("reason    {}", v["reason"].as_str().unwrap_or_default());
    if let Some(max) = v["max_ttl_seconds"].as_u64() {
        println!(
            "max ttl   {}",
            humantime::format_duration(std::time::Duration::from_secs(max))
        );
    }
    println!(
        "approvals {}{}",
        v["approvals_required"],
        match v["approver_groups"].as_array() {
            Some(g) if !g.is_empty() => format!(
                " from {}",
                g.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        }
    );
    println!(
        "policy    sha256 {}",
        v["policy_sha256"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// `audit verify --file`: no server needed.
pub(crate) fn verify_file(
    file: &std::path::Path,
    expect_head: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let head = expect_head
        .map(|h| {
            let (seq, hash) = h
                .split_once(':')
                .ok_or_else(|| anyhow!("--expect-head must be SEQ:HASH, got {h:?}"))?;
            let seq: u64 = seq
                .parse()
                .with_context(|| format!("--expect-head sequence {seq:?}"))?;
            Ok::<_, anyhow::Error>((seq, hash.to_owned()))
        })
        .transpose()?;
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let report = lanyard_audit::verify(reader, head.as_ref().map(|(s, h)| (*s, h.as_str())))
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    print_report(report.records, &report.head_hash, json)
}

fn print_report(records: u64, head: &str, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(&AuditReportView {
            ok: true,
            records,
            head_hash: head,
        })
    } else {
        println!("audit log OK: {records} records, head {records}:{head}");
        Ok(())
    }
}

pub(crate) async fn audit(admin: &mut Admin, cmd: AuditCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Export { since, ticket } => {
            let records = admin
                .export_audit(pb::ExportAuditRequest {
                    since: since.map(unix).unwrap_or(0),
                    ticket: ticket.unwrap_or_default(),
                })
                .await
                .map_err(rpc)?
                .into_inner()
                .records;
            for r in records {
                println!("{r}");
            }
            Ok(())
        }
        AuditCmd::Verify {
            file: Some(file),
            expect_head,
        } => verify_file(&file, expect_head.as_deref(), json),
        AuditCmd::Verify { file: None, .. } => {
            let r = admin
                .verify_audit(pb::VerifyAuditRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            print_report(r.records, &r.head_hash, json)
        }
    }
}
