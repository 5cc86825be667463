//! End-to-end: `token generate --spiffe-id` names only agent IDs
//! (`/lanyard/agent/...`) that no agent in good standing holds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use common::*;

/// The agent IDs `agent list` shows, in no particular order.
fn agent_ids(server: &Server) -> Vec<String> {
    server
        .cli_json(&["agent", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["spiffe_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs `token generate --spiffe-id ID`; returns stderr if it was refused
/// (exit code 1), or `None` if a token was issued.
fn refusal(server: &Server, id: &str) -> Option<String> {
    let out = server.cli(&["token", "generate", "--spiffe-id", id]);
    if out.status.success() {
        return None;
    }
    assert_eq!(exit_code(&out), 1, "token generate --spiffe-id {id}");
    Some(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Attests a new agent with a plain token; returns its agent ID.
async fn attested_agent(server: &Server) -> String {
    let before = agent_ids(server);
    attest(server, &server.token()).await.unwrap();
    agent_ids(server)
        .into_iter()
        .find(|id| !before.contains(id))
        .expect("a new agent in agent list")
}

#[tokio::test(flavor = "multi_thread")]
async fn token_spiffe_id_must_name_an_agent_id_no_agent_in_good_standing_holds() {
    let server = Server::start();

    // Not an agent ID: a workload's, the server's, another trust domain's.
    for id in [
        format!("spiffe://{TD}/web"),
        format!("spiffe://{TD}/lanyard/server"),
        format!("spiffe://{TD}/lanyard/agent"),
        "spiffe://other.test/lanyard/agent/join_token/x".to_owned(),
    ] {
        let err = refusal(&server, &id).unwrap_or_else(|| panic!("{id} was accepted"));
        assert!(
            err.contains(&id) && err.contains(&format!("spiffe://{TD}/lanyard/agent/")),
            "{err}"
        );
    }

    // An agent ID nobody holds is accepted.
    let fresh = format!("spiffe://{TD}/lanyard/agent/join_token/new-node");
    assert_eq!(refusal(&server, &fresh), None);

    // A live agent's ID is refused; once evicted, it may be reissued.
    let live = attested_agent(&server).await;
    let err = refusal(&server, &live).expect("a live agent's ID was accepted");
    assert!(
        err.contains(&live) && err.contains("good standing"),
        "{err}"
    );
    server.cli_ok(&["agent", "evict", &live]);
    assert_eq!(refusal(&server, &live), None);

    // A banned agent's ID is refused for good.
    let banned = attested_agent(&server).await;
    server.cli_ok(&["agent", "ban", &banned]);
    let err = refusal(&server, &banned).expect("a banned agent's ID was accepted");
    assert!(err.contains(&banned) && err.contains("banned"), "{err}");
}
