//! Which SPIFFE IDs a verifier accepts.

use std::{fmt, sync::Arc};

use lanyard_identity::{SpiffeId, TrustDomain};

/// Decides whether a verified peer SPIFFE ID is allowed.
#[derive(Clone)]
pub enum Authorizer {
    /// Any ID (the chain to the bundle is the only check).
    Any,
    /// Exactly one of these IDs.
    Exact(Vec<SpiffeId>),
    /// Any ID in this trust domain.
    TrustDomain(TrustDomain),
    /// A custom rule.
    Custom(Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>),
}

impl Authorizer {
    /// Exactly the given IDs.
    pub fn exact(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        Self::Exact(ids.into_iter().collect())
    }

    /// A custom rule.
    pub fn custom(f: impl Fn(&SpiffeId) -> bool + Send + Sync + 'static) -> Self {
        Self::Custom(Arc::new(f))
    }

    /// Whether `id` is accepted.
    pub fn authorize(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(ids) => ids.contains(id),
            Self::TrustDomain(td) => id.is_member_of(td),
            Self::Custom(f) => f(id),
        }
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("Any"),
            Self::Exact(ids) => f.debug_tuple("Exact").field(ids).finish(),
            Self::TrustDomain(td) => f.debug_tuple("TrustDomain").field(td).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}
