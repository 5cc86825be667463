//! Revocation: recording revoked serials, building and publishing the trust
//! domain's CRL, and keeping it fresh.
//!
//! A revocation is flushed to the store before it is acknowledged; the CRL
//! is then rebuilt from every stored revocation under one lock, so a
//! published CRL always contains every acknowledged revocation and CRL
//! numbers are published in order. Agents hear of it on the Sync stream at
//! once.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime},
};

use lanyard_audit::{Action, Event};
use lanyard_ca::{RevocationReason, RevokedSerial};
use lanyard_identity::Serial;
use lanyard_store::{Revocation, Sweep};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    ServerError,
    state::{ServerState, now_unix},
    status::store_status,
};

/// How long a CRL is valid (nextUpdate - thisUpdate).
pub const CRL_VALIDITY: Duration = Duration::from_secs(3600);

/// The CRL currently published.
#[derive(Debug, Default)]
pub(crate) struct PublishedCrl {
    pub der: Vec<u8>,
    pub number: u64,
    pub next_update: i64,
    pub revoked: HashSet<String>,
}

/// Parses an operator-given serial into its canonical form, refusing what
/// is not one with the forms that are accepted.
pub(crate) fn normalize_serial(input: &str) -> Result<String, Status> {
    Serial::parse(input)
        .map(Serial::into_string)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// How a revoking operation at this moment revokes, for the store.
pub(crate) fn sweep(state: &ServerState, reason: RevocationReason) -> Sweep {
    Sweep {
        revoked_at: crate::clock::unix(state.now()),
        reason: reason.to_string(),
    }
}

/// Why revocations the store recorded could not be announced.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RevocationError {
    /// Reading the revoked SVIDs' records failed.
    #[error(transparent)]
    Store(#[from] lanyard_store::StoreError),
    /// The audit log could not be written.
    #[error(transparent)]
    Audit(#[from] crate::state::AuditFailed),
    /// The new CRL could not be signed or published.
    #[error("publishing the CRL failed: {0}")]
    Crl(#[source] Box<ServerError>),
}

impl From<RevocationError> for Status {
    fn from(e: RevocationError) -> Self {
        match e {
            RevocationError::Store(s) => store_status(s),
            RevocationError::Audit(a) => a.into(),
            RevocationError::Crl(c) => {
                tracing::error!(error = %c, "CRL publication failed");
                Status::internal(
                    "the revocation is recorded but the CRL could not be published; see the server log",
                )
            }
        }
    }
}

/// Makes revocations the store already recorded take effect: audits each
/// (one fsync), then publishes the new CRL, before the caller returns.
pub(crate) async fn announce(
    state: &Arc<ServerState>,
    revoked: &[Revocation],
    principal: &str,
    ticket: Option<&str>,
) -> Result<(), RevocationError> {
    if revoked.is_empty() {
        return Ok(());
    }
    let serials: Vec<String> = revoked.iter().map(|r| r.serial.clone()).collect();
    let records = state
        .db(move |s| {
            serials
                .iter()
                .map(|serial| s.get_svid(serial))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    let events = revoked
        .iter()
        .zip(records)
        .map(|(r, svid)| {
            let subject = svid
                .as_ref()
                .map(|s| s.spiffe_id.to_string())
                .unwrap_or_else(|| r.serial.clone());
            let mut event = Event::new(principal, Action::SvidRevoked, subject)
                .reason(r.reason.clone())
                .detail("serial", r.serial.clone());
            if let Some(svid) = &svid {
                if let Some(entry) = svid.entry_id {
                    event = event.detail("entry_id", entry.to_string());
                }
                if let Some(task) = &svid.task_id {
                    event = event.detail("task_id", task.clone());
                }
            }
            if let Some(ticket) = ticket {
                event = event.ticket(ticket);
            }
            tracing::warn!(serial = %r.serial, reason = %r.reason, principal, "SVID revoked");
            event
        })
        .collect();
    state.audit_all(events).await?;
    state.metrics.revocations.inc_by(revoked.len() as u64);
    publish(state)
        .await
        .map_err(|e| RevocationError::Crl(Box::new(e)))
}

/// Rebuilds the CRL from the store (pruning expired serials), signs it
/// with the active CA key under a new CRL number, publishes it and wakes
/// every Sync stream.
///
/// On a shared database the number is taken in the same transaction that
/// reads the revocations (so a higher number never lists less), and the
/// CRL is published there too unless another server already published a
/// higher number, in which case that one is published here instead: CRL
/// numbers never go backwards, whichever server signs.
pub(crate) async fn publish(state: &Arc<ServerState>) -> Result<(), ServerError> {
    let _guard = state.crl_lock.lock().await;
    let now = now_unix();
    let shared = state.cluster.postgres().cloned();
    let (revocations, number) = match shared.clone() {
        Some(pg) => tokio::task::spawn_blocking(move || pg.next_crl(now))
            .await
            .map_err(|e| ServerError::Task {
                task: "CRL",
                reason: e.to_string(),
            })??,
        None => {
            state
                .db(move |s| {
                    s.prune_revocations(now)?;
                    Ok((s.list_revocations()?, s.next_crl_number()?))
                })
                .await?
        }
    };
    let entries: Vec<RevokedSerial> = revocations
        .iter()
        .map(|r| RevokedSerial {
            serial: r.serial.clone(),
            revoked_at: r.revoked_at,
            reason: r.reason.parse().unwrap_or(RevocationReason::Unspecified),
        })
        .collect();
    let der = {
        let ca = state.ca.read().map_err(|_| ServerError::Task {
            task: "CRL",
            reason: "CA lock poisoned".into(),
        })?;
        ca.sign_crl(&entries, number, SystemTime::now(), CRL_VALIDITY)?
    };
    let mut published = PublishedCrl {
        der,
        number,
        next_update: now + CRL_VALIDITY.as_secs() as i64,
        revoked: revocations.into_iter().map(|r| r.serial).collect(),
    };
    if let Some(pg) = shared {
        let der = published.der.clone();
        let (current, current_der) =
            tokio::task::spawn_blocking(move || pg.publish_crl(number, &der))
                .await
                .map_err(|e| ServerError::Task {
                    task: "CRL",
                    reason: e.to_string(),
                })??;
        if current != number {
            tracing::info!(
                crl_number = number,
                published = current,
                "another server published a newer CRL; publishing that one"
            );
            published = PublishedCrl::from_der(current_der).map_err(|e| ServerError::Task {
                task: "CRL",
                reason: e,
            })?;
        }
    }
    install(state, published);
    Ok(())
}

/// Makes `crl` the one this server publishes, unless it already publishes
/// one with a higher number, and wakes every Sync stream.
pub(crate) fn install(state: &ServerState, published: PublishedCrl) {
    if published.number <= state.crl.load().number {
        return;
    }
    let now = now_unix();
    tracing::info!(
        crl_number = published.number,
        revoked = published.revoked.len(),
        bytes = published.der.len(),
        "CRL published"
    );
    let m = &state.metrics;
    m.crl_number.set(published.number as i64);
    m.crl_revoked_serials.set(published.revoked.len() as i64);
    m.crl_bytes.set(published.der.len() as i64);
    m.crl_published_at.set(now);
    state.crl.store(Arc::new(published));
    state.notify();
}

impl PublishedCrl {
    /// Reads a CRL this trust domain published (another server signed it).
    pub(crate) fn from_der(der: Vec<u8>) -> Result<Self, String> {
        use x509_parser::prelude::FromDer;
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
            .map_err(|e| format!("not a DER CRL: {e}"))?;
        let number = crl
            .crl_number()
            .and_then(|n| match n.to_u64_digits().as_slice() {
                [] => Some(0),
                [n] => Some(*n),
                _ => None,
            })
            .ok_or_else(|| "the CRL has no CRL number that fits 64 bits".to_owned())?;
        let next_update = crl
            .next_update()
            .map(|t| t.timestamp())
            .ok_or_else(|| "the CRL has no nextUpdate".to_owned())?;
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| {
                let hex = hex::encode(r.raw_serial());
                let trimmed = hex.trim_start_matches('0');
                if trimmed.is_empty() {
                    "0".to_owned()
                } else {
                    trimmed.to_owned()
                }
            })
            .collect();
        Ok(Self {
            number,
            next_update,
            revoked,
            der,
        })
    }
}

/// Republishes the CRL at half its validity so it never lapses, until
/// `shutdown`.
pub(crate) async fn run(
    state: Arc<ServerState>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    loop {
        let next = state.crl.load().next_update;
        let wait = crate::rotation::sleep_for(next - CRL_VALIDITY.as_secs() as i64 / 2, now_unix());
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
        if let Err(e) = refresh(&state).await {
            tracing::error!(error = %e, "CRL refresh failed; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }
}

/// A refresh that falls due: on a shared database one server signs it,
/// under the cluster's CRL lock, and only if no other server already
/// refreshed (the others publish the new CRL when they are notified).
async fn refresh(state: &Arc<ServerState>) -> Result<(), ServerError> {
    if state.cluster.postgres().is_none() {
        return publish(state).await;
    }
    let guard = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            state
                .cluster
                .try_lock(lanyard_store_postgres::ClusterJob::CrlRefresh)
        })
        .await
        .map_err(|e| ServerError::Task {
            task: "CRL refresh",
            reason: e.to_string(),
        })??
    };
    let Some(_guard) = guard else {
        tracing::debug!("another server is refreshing the CRL");
        return Ok(());
    };
    crate::cluster::adopt_crl(state).await;
    let due = state.crl.load().next_update - CRL_VALIDITY.as_secs() as i64 / 2;
    if now_unix() < due {
        return Ok(());
    }
    publish(state).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalized() {
        assert_eq!(normalize_serial("00:AB:cd").unwrap(), "abcd");
        assert_eq!(normalize_serial(" 7F01 ").unwrap(), "7f01");
        // The store's form: whole bytes, as certificates carry them.
        assert_eq!(normalize_serial("abc").unwrap(), "0abc");
        let err = normalize_serial("xyz").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("hexadecimal"));
        assert!(normalize_serial("").is_err());
    }
}
