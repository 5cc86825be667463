//! JWT-SVIDs for workloads: minted by the server for one entry and a set of
//! audiences, cached per (entry, audience set) and minted again at
//! half-life. A cached token whose `jti` the CRL lists is never served.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use lanyard_proto::node::v1::NewJwtsvidRequest;
use tokio::sync::watch;
use tonic::Status;

use crate::{
    cache::EntryInfo, identity::AgentIdentity, node_client::NodeConnector, schedule::to_unix,
};

/// Most (entry, audience set) pairs cached; past it, expired tokens are
/// dropped, and if that is not enough new tokens are served uncached.
const MAX_CACHED: usize = 10_000;

/// A token the server signed. `Debug` leaves the token out: it is a
/// bearer credential.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSvid {
    /// The JWS compact token. Secret: handed only to the workload.
    pub token: String,
    /// The SPIFFE ID in `sub`.
    pub spiffe_id: String,
    /// `iat`, unix seconds.
    pub issued_at: i64,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// `jti`: listed on the CRL when the token is revoked.
    pub id: String,
}

impl std::fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl JwtSvid {
    /// Whether it may be served at `now` without minting a new one: before
    /// half of its lifetime has passed.
    fn fresh(&self, now: i64) -> bool {
        now < self.issued_at + (self.expires_at - self.issued_at) / 2
    }
}

type Key = (String, Vec<String>);
type Slot = Arc<tokio::sync::Mutex<Option<JwtSvid>>>;

/// Mints and caches JWT-SVIDs through the Node API.
#[derive(Debug)]
pub struct JwtSvids {
    connector: Arc<NodeConnector>,
    identity: watch::Receiver<Arc<AgentIdentity>>,
    /// One slot per (entry ID, sorted audiences); its async lock makes
    /// concurrent callers of one key wait for one mint.
    cache: Mutex<HashMap<Key, Slot>>,
}

impl JwtSvids {
    /// A cache minting through `connector` as `identity`.
    pub fn new(
        connector: Arc<NodeConnector>,
        identity: watch::Receiver<Arc<AgentIdentity>>,
    ) -> Self {
        Self {
            connector,
            identity,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the CRL in force lists `jti`.
    pub fn revoked(&self, jti: &str) -> bool {
        self.connector
            .trust()
            .crl()
            .is_some_and(|crl| crl.is_revoked(jti))
    }

    /// A token for `entry` and `audiences`: the cached one while it is
    /// fresh, unrevoked and for the entry's SPIFFE ID, else a new one. When
    /// the server cannot be reached, a cached token that is still valid is
    /// served.
    pub async fn fetch(&self, entry: &EntryInfo, audiences: &[String]) -> Result<JwtSvid, Status> {
        let mut audiences = audiences.to_vec();
        audiences.sort();
        audiences.dedup();
        let slot = self.slot((entry.id.to_string(), audiences.clone()));
        let mut cached = slot.lock().await;
        let now = to_unix(SystemTime::now());
        let usable = |t: &JwtSvid| {
            t.spiffe_id == entry.spiffe_id.as_str() && !self.revoked(&t.id) && t.expires_at > now
        };
        if let Some(token) = cached.as_ref().filter(|t| usable(t) && t.fresh(now)) {
            return Ok(token.clone());
        }
        match self.mint(&entry.id, audiences).await {
            Ok(token) => {
                *cached = Some(token.clone());
                Ok(token)
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                match cached.as_ref().filter(|t| usable(t)) {
                    Some(token) => {
                        tracing::warn!(entry = %entry.id, reason = %status.message(), "server unreachable; serving the cached JWT-SVID");
                        Ok(token.clone())
                    }
                    None => Err(status),
                }
            }
            Err(status) => {
                // Refused: whatever was cached is not served again.
                *cached = None;
                Err(status)
            }
        }
    }

    fn slot(&self, key: Key) -> Slot {
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(slot) = cache.get(&key) {
            return slot.clone();
        }
        if cache.len() >= MAX_CACHED {
            let now = to_unix(SystemTime::now());
            cache.retain(|_, slot| {
                slot.try_lock()
                    .map_or(true, |t| t.as_ref().is_some_and(|t| t.expires_at > now))
            });
        }
        let slot = Slot::default();
        if cache.len() < MAX_CACHED {
            cache.insert(key, slot.clone());
        }
        slot
    }

    async fn mint(&self, entry_id: &str, audience: Vec<String>) -> Result<JwtSvid, Status> {
        let identity = self.identity.borrow().clone();
        let mut client = self
            .connector
            .client(&identity)
            .await
            .map_err(|e| Status::unavailable(format!("the server cannot be reached: {e}")))?;
        let resp = client
            .new_jwtsvid(NewJwtsvidRequest {
                entry_id: entry_id.to_owned(),
                audience,
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::PermissionDenied
                | tonic::Code::InvalidArgument
                | tonic::Code::NotFound
                | tonic::Code::FailedPrecondition => Status::new(s.code(), s.message()),
                _ => {
                    self.connector.reset();
                    Status::unavailable(format!(
                        "the server did not issue a JWT-SVID: {}",
                        s.message()
                    ))
                }
            })?
            .into_inner();
        tracing::debug!(entry = %entry_id, jti = %resp.id, exp = resp.expires_at, "JWT-SVID minted");
        Ok(JwtSvid {
            token: resp.token,
            spiffe_id: resp.spiffe_id,
            issued_at: resp.issued_at,
            expires_at: resp.expires_at,
            id: resp.id,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_fresh_for_half_its_life() {
        let t = JwtSvid {
            token: String::new(),
            spiffe_id: String::new(),
            issued_at: 100,
            expires_at: 400,
            id: String::new(),
        };
        assert!(t.fresh(100) && t.fresh(249));
        assert!(!t.fresh(250) && !t.fresh(400));
        let secret = JwtSvid {
            token: "eyJhbGciOiJFUzI1NiJ9.secret.sig".into(),
            ..t
        };
        assert!(!format!("{secret:?}").contains("secret"), "{secret:?}");
    }
}
