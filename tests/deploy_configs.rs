//! The files in `deploy/` are checked against the code that reads them.
//!
//! - `deploy/server.toml` and the `server.toml` embedded in the Kubernetes
//!   ConfigMap go through the server's real parser and validation
//!   (`lanyard_server::ConfigFile::parse` then `validate`), once as written and
//!   once with every commented-out setting (`#key = value`) switched on, so a
//!   misspelt optional key is caught too (unknown keys are parse errors).
//! - The agent's parser is not reachable from this package (`lanyard-agent`
//!   is not a dependency), so the real `lanyard-agent` binary (built by
//!   `cargo build --workspace`) is run on `deploy/agent.toml`, on its
//!   variants with each node attestation method switched on, and on the
//!   ConfigMap's `agent.toml`. The agent validates its whole configuration
//!   before it does anything else; the first thing it then does is bind its
//!   health endpoint, and only after that does it try to attest. The test
//!   points it at a temporary data dir, socket and health address and at a
//!   closed server port, with a generated bootstrap bundle, so a valid
//!   configuration leaves it retrying attestation (for tens of seconds)
//!   while `/health/live` answers. A configuration error instead makes it
//!   exit at once with `error: config: ...`, which the test reports. Flags
//!   only override paths and addresses, never the keys under test.
//! - Every systemd unit carries the hardening settings the deployment
//!   promises, and its directories agree with the example configs.
//! - The Kubernetes manifests probe `/health/live` and `/health/ready`, and
//!   the agent DaemonSet shares the host's PID namespace and socket
//!   directory.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lanyard_server::ConfigFile;

/// Every key `lanyard_server::ConfigFile` accepts, with its table
/// (`[datastore] url`, which excludes `url_file`, is described in text).
const SERVER_KEYS: &[&str] = &[
    "trust_domain",
    "data_dir",
    "bind_address",
    "admin_socket",
    "http_address",
    "ca_ttl",
    "default_x509_svid_ttl",
    "default_jwt_svid_ttl",
    "jwt_issuer",
    "jwt_algorithm",
    "agent_svid_ttl",
    "join_token_ttl",
    "attestation_refusal_window",
    "log_level",
    "log_format",
    "admins",
    "admin_socket_mode",
    "admin_socket_group",
    "[upstream]",
    "cert_path",
    "key_path",
    "[x509pop]",
    "ca_bundle_path",
    "[tasks]",
    "max_ttl",
    "break_glass_max_ttl",
    "requesters",
    "approvers",
    "require_distinct_approver",
    "policy_file",
    "time_zone",
    "groups_file",
    "ticket_check_url",
    "ticket_check_timeout",
    "ticket_check_fail_open",
    "notify_url",
    "notify_secret_file",
    "notify_retries",
    "https_ca_file",
    "[limits]",
    "max_connections",
    "connection_idle_timeout",
    "http_header_timeout",
    "tls_handshake_timeout",
    "[datastore]",
    "kind",
    "url_file",
    "pool_size",
    "statement_timeout",
    "kek_file",
];

/// Every key the agent's config file accepts.
const AGENT_KEYS: &[&str] = &[
    "trust_domain",
    "server_address",
    "trust_bundle_path",
    "insecure_bootstrap",
    "join_token",
    "x509pop_cert_path",
    "x509pop_key_path",
    "data_dir",
    "socket_path",
    "http_address",
    "attestation_timeout",
    "log_level",
    "log_format",
];

/// Settings every unit must carry, as `Key=value`.
const HARDENING: &[&str] = &[
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictNamespaces=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "SystemCallArchitectures=native",
    "Restart=on-failure",
    // Both hold private keys: no core files.
    "LimitCORE=0",
    // Room for every connection up to the server's cap, and more.
    "LimitNOFILE=65536",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The setting a line holds, if it is one: `key = ...` or `[table]`.
fn setting_name(line: &str) -> Option<String> {
    let line = line.trim();
    if line.starts_with('[') {
        return line.find(']').map(|end| line[..=end].to_owned());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
    .then(|| key.to_owned())
}

/// A commented-out setting is `#key = value` or `#[table]`: no space after
/// the `#`, which explanations always have.
fn commented_setting(line: &str) -> Option<String> {
    let rest = line.strip_prefix('#')?;
    match rest.bytes().next() {
        Some(b) if b.is_ascii_lowercase() || b == b'[' => setting_name(rest),
        _ => None,
    }
}

/// `text` with the commented-out settings named in `keys` switched on (all
/// of them when `keys` is `None`).
fn switch_on(text: &str, keys: Option<&[&str]>) -> String {
    text.lines()
        .map(|line| match commented_setting(line) {
            Some(name) if keys.is_none_or(|k| k.contains(&name.as_str())) => &line[1..],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each of `keys` appears exactly once, switched on or commented out, and
/// nothing else looks like a setting.
fn assert_lists_every_key(file: &str, text: &str, keys: &[&str]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        let name = if line.trim_start().starts_with('#') {
            commented_setting(line)
        } else {
            setting_name(line)
        };
        if let Some(name) = name {
            *seen.entry(name).or_default() += 1;
        }
    }
    for key in keys {
        assert!(seen.contains_key(*key), "{file} does not document `{key}`");
    }
    for (name, count) in &seen {
        assert!(
            keys.contains(&name.as_str()),
            "{file}: `{name}` is not a key of the parser (update the key list in this test if the parser gained it)"
        );
        assert_eq!(*count, 1, "{file}: `{name}` appears {count} times");
    }
}

fn parse_server(what: &str, text: &str) -> lanyard_server::ServerConfig {
    ConfigFile::parse(text)
        .unwrap_or_else(|e| panic!("{what} does not parse: {e}"))
        .validate()
        .unwrap_or_else(|e| panic!("{what} does not validate: {e}"))
}

#[test]
fn server_example_is_complete_and_valid() {
    let text = read("deploy/server.toml");
    assert_lists_every_key("deploy/server.toml", &text, SERVER_KEYS);
    let cfg = parse_server("deploy/server.toml", &text);
    assert_eq!(cfg.trust_domain.as_str(), "example.org");
    assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/lanyard/server"));
    assert_eq!(cfg.admin_socket_mode, 0o600);
    assert!(cfg.policy.require_distinct_approver);

    let all = switch_on(&text, None);
    let cfg = parse_server("deploy/server.toml with every setting on", &all);
    assert!(cfg.upstream.is_some() && cfg.x509pop_ca_bundle.is_some());
    assert_eq!(
        cfg.admin_socket,
        PathBuf::from("/run/lanyard/server/admin.sock")
    );
    assert!(!cfg.policy.requesters.is_empty() && !cfg.policy.approvers.is_empty());
    assert!(cfg.task_policy_file.is_some());
    assert_eq!(cfg.task_time_zone.to_string(), "+02:00");
    assert!(cfg.ticket_check.is_some_and(|c| !c.fail_open));
    assert!(matches!(
        cfg.datastore,
        lanyard_server::DatastoreConfig::Postgres {
            url: lanyard_server::PostgresUrl::File(_),
            pool_size: 10,
            ..
        }
    ));

    // The check above means something only if unknown keys are refused.
    let typo = text.replacen("bind_address", "bind_adress", 1);
    assert!(ConfigFile::parse(&typo).is_err(), "a misspelt key parsed");
}

/// The `name: |` block scalar of a ConfigMap in a manifest.
fn configmap_file(manifest: &str, name: &str) -> String {
    let header = format!("  {name}: |");
    let mut lines = manifest.lines().skip_while(|l| l.trim_end() != header);
    assert!(lines.next().is_some(), "no `{name}` in the manifest");
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.get(4..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn kubernetes_server_config_is_valid() {
    let manifest = read("deploy/kubernetes/10-server.yaml");
    let text = configmap_file(&manifest, "server.toml");
    let cfg = parse_server("the lanyard-server ConfigMap", &text);
    assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/lanyard/server"));
    assert_eq!(cfg.http_address.port(), 8082);
    assert_eq!(cfg.bind_address.port(), 8081);
    assert!(
        cfg.http_address.ip().is_unspecified(),
        "probes need the pod IP"
    );
}

#[test]
fn kubernetes_manifests_probe_health_and_share_the_socket() {
    for file in [
        "deploy/kubernetes/10-server.yaml",
        "deploy/kubernetes/20-agent.yaml",
    ] {
        let text = read(file);
        for needle in ["path: /health/live", "path: /health/ready"] {
            assert!(text.contains(needle), "{file} lacks `{needle}`");
        }
    }
    let server = read("deploy/kubernetes/10-server.yaml");
    for needle in [
        "kind: StatefulSet",
        "volumeClaimTemplates:",
        "mountPath: /var/lib/lanyard",
        "port: 8081",
        "port: 8082",
    ] {
        assert!(server.contains(needle), "server manifest lacks `{needle}`");
    }
    let agent = read("deploy/kubernetes/20-agent.yaml");
    for needle in [
        "kind: DaemonSet",
        "hostPID: true",
        "path: /run/lanyard/agent",
        "type: DirectoryOrCreate",
        "name: lanyard-bundle",
        "$(LANYARD_SERVER_SERVICE_HOST):8081",
    ] {
        assert!(agent.contains(needle), "agent manifest lacks `{needle}`");
    }
    let workload = read("deploy/kubernetes/examples/workload.yaml");
    assert!(workload.contains("unix:///run/lanyard/agent/api.sock"));
}

/// `Key=value` lines of a unit, comments dropped; a key may repeat.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn unit_value(settings: &[(String, String)], key: &str) -> Option<String> {
    settings
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

#[test]
fn systemd_units_are_hardened() {
    let dir = repo().join("deploy/systemd");
    let mut units = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("service") {
            continue;
        }
        units += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let settings = unit_settings(&std::fs::read_to_string(&path).unwrap());
        for want in HARDENING {
            let (key, value) = want.split_once('=').unwrap();
            assert_eq!(
                unit_value(&settings, key).as_deref(),
                Some(value),
                "{name}: needs {want}"
            );
        }
        assert!(
            unit_value(&settings, "CapabilityBoundingSet").is_some(),
            "{name}: needs CapabilityBoundingSet="
        );
        let exec = unit_value(&settings, "ExecStart").unwrap_or_default();
        assert!(
            exec.contains(" run --config /etc/lanyard/"),
            "{name}: ExecStart={exec}"
        );
    }
    assert_eq!(units, 2, "expected the server and agent units");

    let server = unit_settings(&read("deploy/systemd/lanyard-server.service"));
    assert_eq!(
        unit_value(&server, "CapabilityBoundingSet").as_deref(),
        Some("")
    );
    assert_eq!(
        unit_value(&server, "RestrictAddressFamilies").as_deref(),
        Some("AF_UNIX AF_INET AF_INET6")
    );
    // The agent asks the kernel (sock_diag, a netlink socket) which socket
    // is a caller's end of its connection.
    let agent = unit_settings(&read("deploy/systemd/lanyard-agent.service"));
    assert_eq!(
        unit_value(&agent, "RestrictAddressFamilies").as_deref(),
        Some("AF_UNIX AF_INET AF_INET6 AF_NETLINK")
    );
    assert_eq!(unit_value(&server, "User").as_deref(), Some("lanyard"));
    assert_eq!(
        unit_value(&server, "StateDirectoryMode").as_deref(),
        Some("0700")
    );
    let state = unit_value(&server, "StateDirectory").unwrap();
    let cfg = parse_server("deploy/server.toml", &read("deploy/server.toml"));
    assert_eq!(cfg.data_dir, Path::new("/var/lib").join(state));

    let agent = unit_settings(&read("deploy/systemd/lanyard-agent.service"));
    let runtime = unit_value(&agent, "RuntimeDirectory").unwrap();
    assert_eq!(
        unit_value(&agent, "RuntimeDirectoryMode").as_deref(),
        Some("0755")
    );
    let agent_toml = read("deploy/agent.toml");
    let socket = format!("socket_path = \"/run/{runtime}/api.sock\"");
    assert!(agent_toml.contains(&socket), "agent.toml lacks {socket}");
    let state = unit_value(&agent, "StateDirectory").unwrap();
    let data_dir = format!("data_dir = \"/var/lib/{state}\"");
    assert!(
        agent_toml.contains(&data_dir),
        "agent.toml lacks {data_dir}"
    );
}

#[test]
fn dockerfile_builds_both_binaries() {
    let text = read("deploy/Dockerfile");
    assert!(text.contains("cargo build --release --locked -p lanyard-server -p lanyard-agent"));
    assert!(text.contains("USER lanyard"));
    assert!(text.contains("VOLUME [\"/var/lib/lanyard\"]"));
    let ignore = read("deploy/Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

// === the agent, through its binary ===

/// A binary built by `cargo build --workspace` (beside `deps/`).
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` first",
        path.display()
    );
    path
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A CA certificate for trust domain example.org, as a bootstrap bundle.
fn bootstrap_bundle() -> String {
    ca_pem(Some("spiffe://example.org"))
}

/// A CA certificate, with `uri` as its URI SAN or (an organisation's root,
/// for upstream mode) none.
fn ca_pem(uri: Option<&str>) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.subject_alt_names = uri
        .map(|u| rcgen::SanType::URI(u.try_into().unwrap()))
        .into_iter()
        .collect();
    params.self_signed(&key).unwrap().pem()
}

/// Whether `GET /health/live` at `addr` answers 200.
fn live(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health/live HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// Runs the agent on `config` until its health endpoint answers, which it
/// binds only after the whole configuration was accepted.
fn assert_agent_accepts(what: &str, config: &str, extra: &[&str]) {
    if let Err(why) = agent_outcome(config, &bootstrap_bundle(), extra) {
        panic!("lanyard-agent refused {what}: {why}");
    }
}

/// Runs the agent on `config` with `bundle_pem` as its bootstrap bundle:
/// `Ok` once it is live and still trying to reach the (closed) server port,
/// which it does only after the configuration and the bundle were
/// accepted; `Err` with its stderr if it exits first.
fn agent_outcome(config: &str, bundle_pem: &str, extra: &[&str]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, config).unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, bundle_pem).unwrap();
    // Bound and dropped: nothing listens there, so attestation keeps retrying.
    let server = free_port();
    let http = free_port();
    let stderr_path = dir.path().join("stderr.log");
    let mut child = Command::new(bin("lanyard-agent"))
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .args(["--server-address", &server.to_string()])
        .arg("--trust-bundle")
        .arg(&bundle)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--socket-path")
        .arg(dir.path().join("socket").join("api.sock"))
        .args(["--http-address", &http.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start lanyard-agent");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut live_since: Option<Instant> = None;
    let outcome = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!("exited with {status}"));
        }
        // Live, and still retrying the closed server port a moment later:
        // the bundle and the trust domain were accepted too (they are
        // checked before the first connection).
        match live_since {
            Some(t) if t.elapsed() > Duration::from_millis(300) => break Ok(()),
            Some(_) => {}
            None if live(http) => live_since = Some(Instant::now()),
            None => {}
        }
        if Instant::now() > deadline {
            break Err("/health/live did not answer within 20 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    outcome.map_err(|why| {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        format!("{why}\n{stderr}")
    })
}

#[test]
fn upstream_examples_are_valid_and_the_agent_needs_its_trust_domain() {
    let server = parse_server(
        "deploy/upstream/server.toml",
        &read("deploy/upstream/server.toml"),
    );
    assert!(server.upstream.is_some(), "upstream mode is on");
    assert_eq!(server.trust_domain.as_str(), "example.org");

    // The bundle is an organisation's root: no SPIFFE URI SAN.
    let root = ca_pem(None);
    let agent = read("deploy/upstream/agent.toml");
    assert!(agent.contains("trust_domain = \"example.org\""), "{agent}");
    agent_outcome(&agent, &root, &[])
        .unwrap_or_else(|why| panic!("lanyard-agent refused deploy/upstream/agent.toml: {why}"));
    // Without trust_domain it cannot tell the trust domain, and says so.
    let without: String = agent
        .lines()
        .filter(|l| !l.starts_with("trust_domain"))
        .collect::<Vec<_>>()
        .join("\n");
    let why = agent_outcome(&without, &root, &[]).unwrap_err();
    assert!(why.contains("--trust-domain"), "{why}");
    // The main example names the same trust domain as the server examples.
    let why = agent_outcome(
        &read("deploy/agent.toml"),
        &ca_pem(Some("spiffe://other.org")),
        &["--join-token", "0123456789abcdef"],
    )
    .unwrap_err();
    assert!(
        why.contains("other.org") && why.contains("example.org"),
        "{why}"
    );
}

#[test]
fn agent_example_is_complete_and_accepted_by_the_agent() {
    let text = read("deploy/agent.toml");
    assert_lists_every_key("deploy/agent.toml", &text, AGENT_KEYS);
    // As shipped it names no attestation method (the operator picks one);
    // the flag stands in for the token the operator pastes.
    assert_agent_accepts(
        "deploy/agent.toml",
        &text,
        &["--join-token", "0123456789abcdef"],
    );
    assert_agent_accepts(
        "deploy/agent.toml with join_token on",
        &switch_on(&text, Some(&["join_token"])),
        &[],
    );
    assert_agent_accepts(
        "deploy/agent.toml with x509pop on",
        &switch_on(&text, Some(&["x509pop_cert_path", "x509pop_key_path"])),
        &[],
    );
}

#[test]
fn kubernetes_agent_config_is_accepted_by_the_agent() {
    let manifest = read("deploy/kubernetes/20-agent.yaml");
    let text = configmap_file(&manifest, "agent.toml");
    assert!(text.contains("x509pop_cert_path"), "{text}");
    assert_agent_accepts("the lanyard-agent ConfigMap", &text, &[]);
}
