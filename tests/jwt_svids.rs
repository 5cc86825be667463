//! End to end: JWT-SVIDs from the real server and agent binaries, fetched
//! and validated with the `spiffe` crate's Workload API client (unmodified),
//! verified by an independent JWT library with only the JWK Set that OIDC
//! discovery points to, refused once revoked, and bound to a task's
//! audiences and window.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{
    Server, TD,
    agent::{Agent, my_uid, register_self},
    operators::{ALICE, BOB, ok_as, task_server},
};
use lanyard_proto::workload::{
    JwtsvidRequest, ValidateJwtsvidRequest, spiffe_workload_api_client::SpiffeWorkloadApiClient,
};
use spiffe::{JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient};

const ISSUER: &str = "https://oidc.lanyard.test";

/// Fetches a JWT-SVID for `audience` with the spiffe client, retrying while
/// the agent has not served the identity yet.
async fn fetch_jwt(agent: &Agent, audience: &str, id: &str) -> JwtSvid {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = match WorkloadApiClient::connect_to(agent.endpoint()).await {
            Ok(client) => match client.fetch_jwt_svid([audience], None).await {
                Ok(svid) if svid.spiffe_id().to_string() == id => return svid,
                Ok(svid) => format!("a token for {}, not {id}", svid.spiffe_id()),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "no JWT-SVID for {id}: {last}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn raw_client(agent: &Agent) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let endpoint: spiffe::transport::Endpoint = agent.endpoint().parse().unwrap();
    SpiffeWorkloadApiClient::new(spiffe::transport::connect(&endpoint).await.unwrap())
}

fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    req
}

async fn validate_raw(agent: &Agent, audience: &str, token: &str) -> Result<String, tonic::Status> {
    raw_client(agent)
        .await
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: audience.into(),
            svid: token.into(),
        }))
        .await
        .map(|r| r.into_inner().spiffe_id)
}

/// Validates `token` every few milliseconds until the agent refuses it as
/// revoked; returns how long that took.
async fn until_revoked(agent: &Agent, audience: &str, token: &str, since: Instant) -> Duration {
    loop {
        match validate_raw(agent, audience, token).await {
            Err(s) if s.message().contains("revoked") => {
                assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
                return since.elapsed();
            }
            other => {
                assert!(
                    since.elapsed() < Duration::from_secs(20),
                    "still {other:?} after 20 s"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// What a third party does with only the server's discovery JWK Set:
/// `jsonwebtoken` (an independent library) verifies `token` for `audience`
/// and the configured issuer with the key its `kid` names, signed `alg`.
fn third_party_verify(
    server: &Server,
    token: &str,
    alg: jsonwebtoken::Algorithm,
    audience: &str,
) -> Result<jsonwebtoken::TokenData<serde_json::Value>, jsonwebtoken::errors::Error> {
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&common::agent::http_get(server.http_addr, "/keys")).unwrap();
    let header = jsonwebtoken::decode_header(token)?;
    assert_eq!(header.alg, alg, "the token's alg");
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ISSUER]);
    jsonwebtoken::decode(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk)?,
        &validation,
    )
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spiffe_client_fetches_and_validates_and_a_third_party_verifies() {
    let server = Server::start_with(&["--jwt-issuer", ISSUER]);
    let agent = Agent::start(&server);
    let entry = register_self(&server, &agent, "e2e/jwt");
    let id = format!("spiffe://{TD}/e2e/jwt");

    // The spiffe crate's JWT API, unmodified.
    let svid = fetch_jwt(&agent, "db", &id).await;
    assert_eq!(svid.audience(), ["db"]);
    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    let td = TrustDomain::new(TD).unwrap();
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let bundle = bundles.get(&td).expect("a JWT bundle for the trust domain");
    assert!(
        bundle.find_jwt_authority(svid.key_id()).is_some(),
        "the bundle holds the token's key"
    );
    let validated = client.validate_jwt_token("db", svid.token()).await.unwrap();
    assert_eq!(validated.spiffe_id().to_string(), id);
    assert!(
        client
            .validate_jwt_token("web", svid.token())
            .await
            .is_err()
    );
    let again = client
        .fetch_jwt_svid(["db"], Some(&SpiffeId::new(&id).unwrap()))
        .await
        .unwrap();
    assert_eq!(again.token(), svid.token(), "cached until half-life");

    // A third party with only the discovery document and its JWK Set.
    let discovery: serde_json::Value = serde_json::from_str(&common::agent::http_get(
        server.http_addr,
        "/.well-known/openid-configuration",
    ))
    .unwrap();
    assert_eq!(discovery["issuer"], ISSUER);
    assert_eq!(discovery["jwks_uri"], format!("{ISSUER}/keys"));
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"][0],
        "ES256"
    );
    let verified = third_party_verify(&server, svid.token(), jsonwebtoken::Algorithm::ES256, "db")
        .expect("verifies with only the discovery JWK Set");
    assert_eq!(verified.claims["sub"], id.as_str());
    assert!(
        verified.claims["exp"].as_i64().unwrap() - verified.claims["iat"].as_i64().unwrap() <= 300
    );
    assert!(
        third_party_verify(&server, svid.token(), jsonwebtoken::Algorithm::ES256, "web").is_err(),
        "not for another audience"
    );

    // The CLI, as an operator debugging a workload would use it.
    let out = agent.api(&["fetch", "jwt", "--audience", "db"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&id), "{text}");
    let out = agent.api(&["validate", "jwt", "--audience", "db", svid.token()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&id), "{text}");
    let out = agent.api(&["fetch", "jwt-bundles"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(svid.key_id()), "{text}");

    // Bad input: InvalidArgument naming what was wrong.
    let payload = b64(br#"{"sub":"spiffe://example.org/e2e/jwt","aud":["db"],"exp":4102444800}"#);
    let none = format!("{}.{payload}.", b64(br#"{"alg":"none"}"#));
    let unknown = format!("{}.{payload}.c2ln", b64(br#"{"alg":"ES256","kid":"nope"}"#));
    for (token, says) in [
        ("not-a-token", "three base64url segments"),
        (none.as_str(), "alg \"none\""),
        (unknown.as_str(), "not in the trust domain's JWT bundle"),
    ] {
        let err = validate_raw(&agent, "db", token).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(says), "{says}: {err:?}");
    }
    let err = validate_raw(&agent, "", svid.token()).await.unwrap_err();
    assert!(err.message().contains("audience is required"), "{err:?}");

    // Deleting the entry revokes its tokens: refused everywhere at once.
    server.cli_ok(&["entry", "delete", &entry]);
    let took = until_revoked(&agent, "db", svid.token(), Instant::now()).await;
    println!("entry delete → JWT-SVID refused by ValidateJWTSVID in {took:?}");
    let crl = common::fetch_crl(&server);
    let jti = verified.claims["jti"].as_str().unwrap().to_owned();
    assert!(
        common::agent::crl_serials(&crl).contains(&jti),
        "the token's jti is on the CRL that /crl serves"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rs256_tokens_for_consumers_that_need_rsa() {
    let server = Server::start_with(&["--jwt-issuer", ISSUER, "--jwt-algorithm", "RS256"]);
    let agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/rsa");
    let id = format!("spiffe://{TD}/e2e/rsa");
    let svid = fetch_jwt(&agent, "vault", &id).await;
    let discovery: serde_json::Value = serde_json::from_str(&common::agent::http_get(
        server.http_addr,
        "/.well-known/openid-configuration",
    ))
    .unwrap();
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"][0],
        "RS256"
    );
    let verified = third_party_verify(
        &server,
        svid.token(),
        jsonwebtoken::Algorithm::RS256,
        "vault",
    )
    .expect("verifies with only the discovery JWK Set");
    assert_eq!(verified.claims["sub"], id.as_str());
    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    client
        .validate_jwt_token("vault", svid.token())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_token_is_bound_to_its_audiences_and_ends_with_the_task() {
    let server = task_server();
    let agent = Agent::start(&server);
    let db = format!("spiffe://{TD}/db");
    let maint = format!("spiffe://{TD}/maint");
    let task = ok_as(
        &server,
        ALICE,
        &[
            "task",
            "request",
            "--ticket",
            "CHG-91",
            "--purpose",
            "rotate db credentials",
            "--spiffe-id",
            &maint,
            "--parent-id",
            &agent.spiffe_id(),
            "--selector",
            &format!("unix:uid:{}", my_uid()),
            "--audience",
            &db,
            "--ttl",
            "10m",
        ],
    )
    .trim()
    .to_owned();
    ok_as(&server, BOB, &["task", "approve", &task]);

    let svid = fetch_jwt(&agent, &db, &maint).await;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(svid.token().split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["lanyard_task"]["id"], task.as_str());
    assert_eq!(claims["lanyard_task"]["ticket"], "CHG-91");
    let shown = common::operators::json_as(&server, ALICE, &["task", "show", &task]);
    let ends_at = humantime::parse_rfc3339(shown["ends_at"].as_str().unwrap())
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        claims["exp"].as_i64().unwrap() <= ends_at,
        "exp never passes the window"
    );

    // An audience outside the task's is refused at FetchJWTSVID.
    let err = raw_client(&agent)
        .await
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec![format!("spiffe://{TD}/web")],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not one of task"), "{err:?}");

    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    client.validate_jwt_token(&db, svid.token()).await.unwrap();
    ok_as(&server, ALICE, &["task", "complete", &task]);
    let took = until_revoked(&agent, &db, svid.token(), Instant::now()).await;
    println!("task complete → task JWT-SVID refused by ValidateJWTSVID in {took:?}");
    let err = client
        .fetch_jwt_svid([db.as_str()], None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no identity issued"), "{err}");
}
