//! Operator commands: each one RPC on the admin socket, then output.

use anyhow::{Context, anyhow};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use lanyard_proto::admin::v1 as pb;
use serde::Serialize;

use super::{
    args::{
        AgentCmd, AuditCmd, BundleCmd, BundleFormat, Cli, Command, CrlCmd, DatastoreCmd, EntryCmd,
        OutputFormat, PolicyCmd, SvidCmd, TokenCmd,
    },
    client::connect,
    output::{self, table},
    views::{
        AgentView, BundleKey, EntryView, HealthView, RevokedView, SpiffeBundleView, SvidView,
        TokenView, X509AuthorityJwk,
    },
};

pub(crate) fn rpc(status: tonic::Status) -> anyhow::Error {
    anyhow!("{}", status.message())
}

/// Whole seconds of a CLI duration, at least 1.
fn secs(d: std::time::Duration) -> i64 {
    d.as_secs().max(1) as i64
}

pub(crate) use lanyard_time::unix;

/// A list as one JSON array, or as a table.
pub(crate) fn print_list<'a, T, V: Serialize + 'a>(
    items: &'a [T],
    json: bool,
    to_json: impl Fn(&'a T) -> V,
    headers: &[&str],
    to_row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        print_json(&items.iter().map(to_json).collect::<Vec<_>>())
    } else {
        let rows: Vec<_> = items.iter().map(to_row).collect();
        println!("{}", table(headers, &rows));
        Ok(())
    }
}

pub(crate) fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs an operator command (anything but `run`), printing its output.
pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    let json = cli.output == OutputFormat::Json;
    if let Command::Audit(AuditCmd::Verify {
        file: Some(file),
        expect_head,
    }) = &cli.command
    {
        return super::task::verify_file(file, expect_head.as_deref(), json);
    }
    if let Command::Datastore(DatastoreCmd::Import {
        file,
        data_dir,
        config,
    }) = &cli.command
    {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let datastore = match config {
            Some(path) => lanyard_server::ConfigFile::load(path)?
                .datastore
                .unwrap_or_default()
                .validate()?,
            None => lanyard_server::DatastoreConfig::Sled,
        };
        let summary = lanyard_server::Backup::from_json(&bytes)?.restore(data_dir, &datastore)?;
        println!("{summary}");
        return Ok(());
    }
    if let Command::Policy(PolicyCmd::Test {
        input,
        policy: Some(policy),
    }) = &cli.command
    {
        return super::task::test_policy_file(policy, input, json);
    }
    let mut admin = connect(&cli.socket).await?;
    match cli.command {
        Command::Policy(cmd) => super::task::policy(&mut admin, cmd, json).await,
        Command::Run(_) => Err(anyhow!("`run` is not an operator command")),
        Command::Healthcheck => {
            let h = admin
                .health(pb::HealthRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                print_json(&HealthView {
                    ready: h.ready,
                    trust_domain: &h.trust_domain,
                })?;
            } else {
                println!(
                    "{} ({})",
                    if h.ready { "ready" } else { "not ready" },
                    h.trust_domain
                );
            }
            if h.ready {
                Ok(())
            } else {
                Err(anyhow!("server is not ready"))
            }
        }
        Command::Entry(cmd) => entry(&mut admin, cmd, json).await,
        Command::Token(TokenCmd::Generate { ttl, spiffe_id }) => {
            let t = admin
                .generate_join_token(pb::GenerateJoinTokenRequest {
                    ttl_seconds: ttl.map(|d| d.as_secs().max(1) as i64).unwrap_or(0),
                    spiffe_id: spiffe_id.unwrap_or_default(),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                print_json(&TokenView {
                    token: &t.token,
                    expires_at: output::time(t.expires_at),
                    agent_id: &t.agent_id,
                })
            } else {
                println!("{}", t.token);
                eprintln!(
                    "agent ID {} · expires {}",
                    t.agent_id,
                    output::time(t.expires_at)
                );
                Ok(())
            }
        }
        Command::Agent(cmd) => {
            let one = |a: pb::Agent| -> anyhow::Result<()> {
                if json {
                    print_json(&AgentView::from(&a))
                } else {
                    println!(
                        "{}",
                        table(
                            &["SPIFFE ID", "ATTESTATION", "STATUS", "SERIAL", "EXPIRES"],
                            &[output::agent_row(&a)]
                        )
                    );
                    Ok(())
                }
            };
            match cmd {
                AgentCmd::List => {
                    let agents = admin
                        .list_agents(pb::ListAgentsRequest {})
                        .await
                        .map_err(rpc)?
                        .into_inner()
                        .agents;
                    print_list(
                        &agents,
                        json,
                        AgentView::from,
                        &["SPIFFE ID", "ATTESTATION", "STATUS", "SERIAL", "EXPIRES"],
                        output::agent_row,
                    )
                }
                AgentCmd::Show { id } => one(admin
                    .get_agent(pb::GetAgentRequest { spiffe_id: id })
                    .await
                    .map_err(rpc)?
                    .into_inner()),
                AgentCmd::Evict { id } => one(admin
                    .evict_agent(pb::EvictAgentRequest { spiffe_id: id })
                    .await
                    .map_err(rpc)?
                    .into_inner()),
                AgentCmd::Ban { id } => one(admin
                    .ban_agent(pb::BanAgentRequest { spiffe_id: id })
                    .await
                    .map_err(rpc)?
                    .into_inner()),
            }
        }
        Command::Bundle(BundleCmd::Show { format }) => {
            let b = admin
                .get_bundle(pb::GetBundleRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            match format {
                BundleFormat::Pem => {
                    for der in &b.x509_authorities {
                        print!("{}", lanyard_ca::pem_block("CERTIFICATE", der));
                    }
                    Ok(())
                }
                BundleFormat::Spiffe => {
                    print_json(&spiffe_bundle(&b.x509_authorities, &b.jwt_authorities)?)
                }
            }
        }
        Command::Svid(SvidCmd::Revoke { serial, reason }) => {
            let r = admin
                .revoke_svid(pb::RevokeSvidRequest {
                    serial: serial.clone(),
                    reason,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                print_json(&RevokedView {
                    serials: &r.serials,
                    crl_number: r.crl_number,
                })
            } else {
                if r.serials.is_empty() {
                    println!("{serial} was already revoked (CRL number {})", r.crl_number);
                } else {
                    println!(
                        "revoked {} (CRL number {})",
                        r.serials.join(", "),
                        r.crl_number
                    );
                }
                Ok(())
            }
        }
        Command::Task(cmd) => super::task::task(&mut admin, cmd, json).await,
        Command::Datastore(DatastoreCmd::Export { file }) => {
            let backup = admin
                .export_datastore(pb::ExportDatastoreRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            lanyard_ca::write_file_atomic(&file, &backup.json, 0o600)
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!(
                "backup written to {} ({} bytes; it holds the CA keys: keep it secret)",
                file.display(),
                backup.json.len()
            );
            Ok(())
        }
        Command::Datastore(DatastoreCmd::Import { .. }) => {
            Err(anyhow!("`datastore import` runs offline"))
        }
        Command::Audit(cmd) => super::task::audit(&mut admin, cmd, json).await,
        Command::Crl(CrlCmd::Show { format }) => {
            let crl = admin
                .get_crl(pb::GetCrlRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            super::crl::show(&crl, format, json)
        }
        Command::Svid(SvidCmd::List { spiffe_id }) => {
            let svids = admin
                .list_svids(pb::ListSvidsRequest {
                    spiffe_id: spiffe_id.unwrap_or_default(),
                })
                .await
                .map_err(rpc)?
                .into_inner()
                .svids;
            print_list(
                &svids,
                json,
                SvidView::from,
                &[
                    "SERIAL",
                    "SPIFFE ID",
                    "ENTRY",
                    "AGENT",
                    "NOT AFTER",
                    "REVOKED",
                ],
                output::svid_row,
            )
        }
    }
}

pub(crate) type Admin = pb::admin_client::AdminClient<tonic::transport::Channel>;

async fn entry(admin: &mut Admin, cmd: EntryCmd, json: bool) -> anyhow::Result<()> {
    let show = |e: pb::Entry| -> anyhow::Result<()> {
        if json {
            print_json(&EntryView::from(&e))
        } else {
            println!("{}", output::entry_text(&e));
            Ok(())
        }
    };
    match cmd {
        EntryCmd::Create {
            spiffe_id,
            parent_id,
            selectors,
            x509_svid_ttl,
            jwt_svid_ttl,
            dns_names,
            expires_at,
            hint,
        } => {
            let e = admin
                .create_entry(pb::CreateEntryRequest {
                    entry: Some(pb::Entry {
                        spiffe_id,
                        parent_id,
                        selectors,
                        x509_svid_ttl_seconds: x509_svid_ttl.map(secs).unwrap_or(0),
                        dns_names,
                        expires_at: expires_at.map(unix).unwrap_or(0),
                        hint,
                        jwt_svid_ttl_seconds: jwt_svid_ttl.map(secs).unwrap_or(0),
                        ..Default::default()
                    }),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                print_json(&EntryView::from(&e))
            } else {
                println!("{}", e.id);
                Ok(())
            }
        }
        EntryCmd::List {
            spiffe_id,
            parent_id,
            selector,
        } => {
            let entries = admin
                .list_entries(pb::ListEntriesRequest {
                    spiffe_id: spiffe_id.unwrap_or_default(),
                    parent_id: parent_id.unwrap_or_default(),
                    selector: selector.unwrap_or_default(),
                })
                .await
                .map_err(rpc)?
                .into_inner()
                .entries;
            print_list(
                &entries,
                json,
                EntryView::from,
                &["ID", "SPIFFE ID", "PARENT ID", "SELECTORS"],
                output::entry_row,
            )
        }
        EntryCmd::Show { id } => show(
            admin
                .get_entry(pb::GetEntryRequest { id })
                .await
                .map_err(rpc)?
                .into_inner(),
        ),
        EntryCmd::Update {
            id,
            spiffe_id,
            parent_id,
            selectors,
            x509_svid_ttl,
            jwt_svid_ttl,
            dns_names,
            expires_at,
            hint,
        } => {
            let set_dns_names = !dns_names.is_empty();
            show(
                admin
                    .update_entry(pb::UpdateEntryRequest {
                        id,
                        spiffe_id,
                        parent_id,
                        selectors,
                        x509_svid_ttl_seconds: x509_svid_ttl.map(secs),
                        dns_names,
                        set_dns_names,
                        expires_at: expires_at.map(unix),
                        hint,
                        jwt_svid_ttl_seconds: jwt_svid_ttl.map(secs),
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner(),
            )
        }
        EntryCmd::Delete { id } => {
            let e = admin
                .delete_entry(pb::DeleteEntryRequest { id })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                print_json(&EntryView::from(&e))
            } else {
                println!("deleted {}", e.id);
                Ok(())
            }
        }
    }
}

/// The SPIFFE bundle format: a JWK Set whose X.509 authorities have
/// `use: "x509-svid"` and carry the certificate in `x5c`, and whose JWT
/// authorities (`jwt_authorities`, a JWK Set) have `use: "jwt-svid"` and a
/// `kid`.
fn spiffe_bundle(
    authorities: &[Vec<u8>],
    jwt_authorities: &[u8],
) -> anyhow::Result<SpiffeBundleView> {
    let mut keys = authorities
        .iter()
        .map(|der| {
            let (_, cert) =
                x509_parser::parse_x509_certificate(der).context("bundle certificate")?;
            let spki = cert.public_key();
            let point = spki.subject_public_key.data.as_ref();
            let crv = match point.len() {
                65 => "P-256",
                97 => "P-384",
                n => return Err(anyhow!("unsupported CA key ({n}-byte point)")),
            };
            let half = (point.len() - 1) / 2;
            Ok(BundleKey::X509(X509AuthorityJwk {
                use_: "x509-svid",
                kty: "EC",
                crv,
                x: URL_SAFE_NO_PAD.encode(&point[1..1 + half]),
                y: URL_SAFE_NO_PAD.encode(&point[1 + half..]),
                x5c: [STANDARD.encode(der)],
            }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !jwt_authorities.is_empty() {
        let jwt = lanyard_jwt::Jwks::from_json(jwt_authorities)
            .context("the server's JWT authorities")?;
        keys.extend(jwt.keys.into_iter().map(BundleKey::Jwt));
    }
    Ok(SpiffeBundleView {
        keys,
        spiffe_refresh_hint: 300,
    })
}
