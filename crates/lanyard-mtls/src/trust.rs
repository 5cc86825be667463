//! The swappable trust material a verifier checks against: the trust
//! bundle and the trust domain's CRL, installed together.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::{CrlPolicy, MtlsError, RevocationList, crl::number_lower, error::CrlError};

/// One consistent view: a handshake checks the chain and the CRL against
/// the same snapshot.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) bundle: Arc<Vec<CertificateDer<'static>>>,
    pub(crate) crl: Option<Arc<RevocationList>>,
}

/// What to do with the CRL when the bundle is replaced.
pub(crate) enum CrlUpdate {
    /// Keep the CRL in force (a message without a CRL does not lift
    /// revocations).
    Keep,
    /// Install this one.
    Replace(Vec<u8>),
    /// Remove the CRL.
    Clear,
}

/// The current trust bundle (CA certificates, DER) and CRL, replaced
/// atomically on rotation; every handshake reads the latest.
///
/// A CRL is parsed and its signature checked against the bundle when it is
/// installed, never per handshake. Revocations are sticky: a CRL that no
/// longer verifies against a newer bundle stays in force until a newer CRL
/// replaces it, and a CRL past its nextUpdate is still enforced (with a
/// warning), because lifting revocations when the feed stalls would let
/// revoked peers back in.
#[derive(Debug)]
pub struct TrustMaterial {
    current: ArcSwap<Snapshot>,
    /// Intermediate CAs (from the holder's own SVID chain) that may sign
    /// the CRL when they chain to the bundle: upstream mode.
    crl_signers: ArcSwap<Vec<CertificateDer<'static>>>,
    // Serializes writers so read-modify-write updates are never lost;
    // readers (handshakes) never take it.
    write: Mutex<()>,
    /// What handshakes do without fresh revocation data.
    policy: CrlPolicy,
    /// Peers accepted without a fresh CRL under [`CrlPolicy::Soft`].
    unchecked: AtomicU64,
}

impl TrustMaterial {
    /// Starts with `bundle` and no CRL.
    pub fn new(bundle: Vec<CertificateDer<'static>>) -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot {
                bundle: Arc::new(bundle),
                crl: None,
            }),
            crl_signers: ArcSwap::from_pointee(Vec::new()),
            write: Mutex::new(()),
            policy: CrlPolicy::default(),
            unchecked: AtomicU64::new(0),
        }
    }

    /// Sets what handshakes do without fresh revocation data (default
    /// [`CrlPolicy::Soft`]).
    pub fn with_crl_policy(mut self, policy: CrlPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The policy in force.
    pub fn crl_policy(&self) -> CrlPolicy {
        self.policy
    }

    /// How many peers were accepted without a fresh CRL (no CRL yet, or one
    /// past its nextUpdate) under [`CrlPolicy::Soft`]: export it as a metric.
    pub fn unchecked_accepts(&self) -> u64 {
        self.unchecked.load(Ordering::Relaxed)
    }

    /// Applies the policy to a handshake at `now`: `Err` when a strict
    /// policy refuses for lack of fresh revocation data.
    pub(crate) fn check_freshness(
        &self,
        crl: Option<&RevocationList>,
        now: UnixTime,
    ) -> Result<(), MtlsError> {
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let fresh_until = crl.map(|c| c.next_update().unwrap_or(i64::MAX));
        let stale = fresh_until.is_none_or(|next| next < now_secs);
        if !stale {
            return Ok(());
        }
        match self.policy {
            CrlPolicy::Soft => {
                self.unchecked.fetch_add(1, Ordering::Relaxed);
                if crl.is_none() {
                    tracing::debug!("peer accepted without a CRL (CrlPolicy::Soft)");
                }
                Ok(())
            }
            CrlPolicy::Strict { grace } => {
                let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
                match fresh_until {
                    Some(next) if next.saturating_add(grace) >= now_secs => Ok(()),
                    Some(next) => Err(MtlsError::StaleCrl {
                        next_update: next,
                        grace_secs: grace,
                    }),
                    None => Err(MtlsError::NoCrl),
                }
            }
        }
    }

    /// The intermediate CAs of the holder's own SVID chain (upstream mode):
    /// a CRL they sign is accepted when they chain to the bundle. Set before
    /// the CRL that needs them.
    pub fn set_crl_signers(&self, intermediates: Vec<CertificateDer<'static>>) {
        self.crl_signers.store(Arc::new(intermediates));
    }

    /// Replaces the bundle, keeping the CRL in force.
    pub fn set_bundle(&self, bundle: Vec<CertificateDer<'static>>) {
        // Keep never fails.
        let _ = self.install(bundle, CrlUpdate::Keep);
    }

    /// Replaces the CRL (`None` removes it) after checking its signature
    /// against the current bundle.
    ///
    /// # Errors
    ///
    /// [`MtlsError::Crl`] if the CRL is malformed, not signed by a CA in the
    /// bundle, or older than the one in force; the previous CRL stays.
    pub fn set_crl(&self, der: Option<Vec<u8>>) -> Result<(), MtlsError> {
        let _guard = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let cur = self.current.load_full();
        let crl = match der {
            None => None,
            Some(der) => Some(Arc::new(checked(
                der,
                &cur.bundle,
                &self.crl_signers.load(),
                cur.crl.as_deref(),
            )?)),
        };
        log_installed(crl.as_deref());
        self.current.store(Arc::new(Snapshot {
            bundle: cur.bundle.clone(),
            crl,
        }));
        Ok(())
    }

    /// Replaces bundle and CRL in one step; the CRL is checked against the
    /// *new* bundle. `None` removes the CRL.
    ///
    /// # Errors
    ///
    /// [`MtlsError::Crl`] if the CRL is refused. The new bundle is installed
    /// anyway (a CA rotation must not wait on a CRL) and the previous CRL stays
    /// in force.
    pub fn set(
        &self,
        bundle: Vec<CertificateDer<'static>>,
        crl: Option<Vec<u8>>,
    ) -> Result<(), MtlsError> {
        let update = match crl {
            Some(der) => CrlUpdate::Replace(der),
            None => CrlUpdate::Clear,
        };
        self.install(bundle, update)
    }

    /// The current bundle.
    pub fn bundle(&self) -> Arc<Vec<CertificateDer<'static>>> {
        self.current.load().bundle.clone()
    }

    /// The CRL in force, if any.
    pub fn crl(&self) -> Option<Arc<RevocationList>> {
        self.current.load().crl.clone()
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub(crate) fn install(
        &self,
        bundle: Vec<CertificateDer<'static>>,
        update: CrlUpdate,
    ) -> Result<(), MtlsError> {
        let _guard = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let cur = self.current.load_full();
        // The agent repeats the CRL in every message: the same bytes are a
        // no-op, not a re-parse of a possibly large list.
        let update = match update {
            CrlUpdate::Replace(der) if cur.crl.as_ref().is_some_and(|c| c.der() == der) => {
                CrlUpdate::Keep
            }
            other => other,
        };
        let (crl, result) = match update {
            CrlUpdate::Clear => (None, Ok(())),
            CrlUpdate::Keep => (cur.crl.clone(), Ok(())),
            CrlUpdate::Replace(der) => {
                match checked(der, &bundle, &self.crl_signers.load(), cur.crl.as_deref()) {
                    Ok(crl) => {
                        log_installed(Some(&crl));
                        (Some(Arc::new(crl)), Ok(()))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "CRL refused; the previous CRL stays in force");
                        (cur.crl.clone(), Err(e))
                    }
                }
            }
        };
        let kept = crl
            .as_ref()
            .filter(|c| cur.crl.as_ref().is_some_and(|p| Arc::ptr_eq(p, c)));
        if let Some(kept) = kept.filter(|_| *cur.bundle != bundle)
            && RevocationList::verify_with_signers(
                kept.der().to_vec(),
                &bundle,
                &self.crl_signers.load(),
            )
            .is_err()
        {
            tracing::warn!(
                crl_number = kept.number().unwrap_or("-"),
                "the CRL in force is not signed by a CA in the new bundle; still enforcing it"
            );
        }
        self.current.store(Arc::new(Snapshot {
            bundle: Arc::new(bundle),
            crl,
        }));
        result
    }
}

/// Verifies `der` against `bundle` and refuses a CRL number lower than the
/// one in force.
fn checked(
    der: Vec<u8>,
    bundle: &[CertificateDer<'_>],
    signers: &[CertificateDer<'_>],
    current: Option<&RevocationList>,
) -> Result<RevocationList, MtlsError> {
    let crl = RevocationList::verify_with_signers(der, bundle, signers)?;
    if let (Some(offered), Some(current)) = (crl.number(), current.and_then(|c| c.number()))
        && number_lower(offered, current)
    {
        return Err(CrlError::Rollback {
            current: current.to_owned(),
            offered: offered.to_owned(),
        }
        .into());
    }
    Ok(crl)
}

fn log_installed(crl: Option<&RevocationList>) {
    match crl {
        Some(crl) => tracing::debug!(
            crl_number = crl.number().unwrap_or("-"),
            revoked = crl.len(),
            next_update = crl.next_update().unwrap_or_default(),
            "CRL installed"
        ),
        None => tracing::debug!("CRL removed"),
    }
}
