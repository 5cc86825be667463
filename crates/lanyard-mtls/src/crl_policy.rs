//! What a verifier does when its revocation data is missing or stale: the
//! service author's choice.

use std::time::Duration;

/// How a verifier treats a peer when it has no CRL yet, or only one past
/// its nextUpdate (the revocation feed stopped).
///
/// The default is [`Soft`](CrlPolicy::Soft): a service fed by the Workload
/// API receives the CRL with its first SVID, so "no CRL" only happens to
/// hand-built trust material, and refusing everyone when the server is
/// unreachable for a while would turn a control-plane outage into a
/// data-plane outage. A service that prefers failing closed chooses
/// [`Strict`](CrlPolicy::Strict) with a grace that covers the outages it
/// accepts. Either way a revocation, once received, is never lifted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrlPolicy {
    /// Accept peers that are not on the CRL in force, even before the first
    /// CRL and after its nextUpdate; each such acceptance is logged (once
    /// per CRL) and counted ([`TrustMaterial::unchecked_accepts`](crate::TrustMaterial::unchecked_accepts)).
    #[default]
    Soft,
    /// Refuse every peer while there is no CRL, and once the CRL is older
    /// than its nextUpdate plus `grace`.
    Strict {
        /// How long past nextUpdate a CRL is still trusted.
        grace: Duration,
    },
}
