//! SPIFFE IDs and trust domains, validated strictly: a bad ID is rejected
//! with the rule it breaks and never normalized.

use crate::error::IdError;

/// A validated trust domain name (lower-case, `[a-z0-9._-]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

/// A validated SPIFFE ID (`spiffe://<trust-domain>/<path>`), at most 2048 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId(String);

// TO IMPLEMENT (helper):
// impl TrustDomain { pub fn new(name: &str) -> Result<Self, IdError>; pub fn as_str(&self) -> &str;
//                    pub fn id(&self) -> SpiffeId /* spiffe://td */; }
// impl FromStr, Display, Serialize/Deserialize (as string, validated) for both.
// impl SpiffeId { pub fn new(s: &str) -> Result<Self, IdError>;
//                 pub fn from_parts(td: &TrustDomain, path: &str) -> Result<Self, IdError> /* path starts with '/' */;
//                 pub fn as_str(&self) -> &str; pub fn trust_domain(&self) -> TrustDomain;
//                 pub fn path(&self) -> &str /* "" for the trust domain ID */;
//                 pub fn is_member_of(&self, td: &TrustDomain) -> bool; }
