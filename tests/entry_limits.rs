//! End-to-end: entries that could never converge are refused when they are
//! registered, naming the limit, instead of making agents retry forever.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use common::*;

#[test]
fn an_entry_with_too_many_dns_names_or_selectors_is_refused_naming_the_limit() {
    let server = Server::start();
    let parent = format!("spiffe://{TD}/lanyard/agent/join_token/limits");
    let base = [
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://e2e.test/wide",
        "--parent-id",
        parent.as_str(),
        "--selector",
        "unix:uid:1000",
    ];
    let names: Vec<String> = (0..=lanyard_identity::MAX_DNS_NAMES)
        .flat_map(|n| ["--dns-name".to_owned(), format!("h{n}.example.org")])
        .collect();
    let mut args: Vec<&str> = base.to_vec();
    args.extend(names.iter().map(String::as_str));
    let out = server.cli(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(exit_code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("101 dns_names; at most 100 are accepted"),
        "{stderr}"
    );

    let selectors: Vec<String> = (0..=lanyard_identity::MAX_SELECTORS)
        .flat_map(|n| ["--selector".to_owned(), format!("unix:gid:{n}")])
        .collect();
    let mut args: Vec<&str> = base.to_vec();
    args.extend(selectors.iter().map(String::as_str));
    let out = server.cli(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(exit_code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("selectors; at most 32 are accepted"),
        "{stderr}"
    );

    // At the limit it is accepted.
    let mut args: Vec<&str> = base.to_vec();
    args.extend(names[2..].iter().map(String::as_str));
    server.cli_ok(&args);
}
