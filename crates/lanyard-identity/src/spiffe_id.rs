//! SPIFFE IDs and trust domains, validated strictly: a bad ID is rejected
//! with the rule it breaks and never normalized.
//!
//! The `spiffe` crate does the standard parse; this module adds what Lanyard
//! needs on top of it: upper-case trust domains and schemes are refused
//! instead of lower-cased, the 2048-byte limit is enforced on parsing, and
//! each error names the precise rule (port, query, percent-encoding, ...).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{IdError, IdKind};

/// The only scheme accepted, lower-case.
const SCHEME: &str = "spiffe://";
/// The SPIFFE-ID standard's limit on a whole SPIFFE ID, in bytes.
pub(crate) const MAX_ID_LEN: usize = 2048;
/// The SPIFFE-ID standard's limit on a trust domain name, in bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A validated trust domain name (lower-case, `[a-z0-9._-]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

/// A validated SPIFFE ID (`spiffe://<trust-domain>/<path>`), at most 2048 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId(String);

// === impl TrustDomain ===

impl TrustDomain {
    /// Validates a bare trust domain name such as `example.org`.
    ///
    /// # Errors
    ///
    /// An [`IdError`] naming the rule broken: empty, longer than 255 bytes,
    /// given with a scheme or path, upper-case, or a character outside
    /// `[a-z0-9._-]`.
    pub fn new(name: &str) -> Result<Self, IdError> {
        let what = IdKind::TrustDomain;
        if name.is_empty() {
            return Err(IdError::Empty { what });
        }
        if name.contains("://") || name.contains('/') {
            return Err(IdError::NotABareName {
                input: name.to_owned(),
            });
        }
        check_uri_extras(name, name, what)?;
        check_trust_domain(name, name, what)?;
        // The spiffe crate agrees on everything left; keep it as a second opinion.
        spiffe::TrustDomain::new(name).map_err(|e| IdError::Rejected {
            input: name.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self(name.to_owned()))
    }

    /// The trust domain name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<trust-domain>`.
    pub fn id(&self) -> SpiffeId {
        // A valid trust domain is at most 255 bytes, so its ID is always valid.
        SpiffeId(format!("{SCHEME}{}", self.0))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for TrustDomain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

// === impl SpiffeId ===

impl SpiffeId {
    /// Validates a SPIFFE ID such as `spiffe://example.org/billing/api`.
    ///
    /// # Errors
    ///
    /// An [`IdError`] naming the rule broken (see the variants).
    pub fn new(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty {
                what: IdKind::SpiffeId,
            });
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong {
                len: s.len(),
                max: MAX_ID_LEN,
            });
        }
        let Some(rest) = s.strip_prefix(SCHEME) else {
            return Err(IdError::WrongScheme {
                input: s.to_owned(),
            });
        };
        check_uri_extras(rest, s, IdKind::SpiffeId)?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() {
            return Err(IdError::MissingTrustDomain {
                input: s.to_owned(),
            });
        }
        check_trust_domain(authority, s, IdKind::SpiffeId)?;
        check_path(path, s)?;
        // Reuse the spiffe crate's parse as a second opinion; our rules are
        // stricter, so it must agree and must not have rewritten anything.
        let parsed = spiffe::SpiffeId::new(s).map_err(|e| IdError::Rejected {
            input: s.to_owned(),
            reason: e.to_string(),
        })?;
        if parsed.to_string() != s {
            return Err(IdError::Rejected {
                input: s.to_owned(),
                reason: "it is not in canonical form".to_owned(),
            });
        }
        Ok(Self(s.to_owned()))
    }

    /// Builds `spiffe://<td><path>`; `path` is empty (the trust-domain ID) or
    /// starts with `/`.
    ///
    /// # Errors
    ///
    /// [`IdError::PathNotAbsolute`] for a path without a leading `/`, or the
    /// error [`SpiffeId::new`] gives for the assembled ID.
    pub fn from_parts(td: &TrustDomain, path: &str) -> Result<Self, IdError> {
        if !path.is_empty() && !path.starts_with('/') {
            return Err(IdError::PathNotAbsolute {
                path: path.to_owned(),
            });
        }
        Self::new(&format!("{SCHEME}{}{path}", td.as_str()))
    }

    /// The whole ID, e.g. `spiffe://example.org/billing/api`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain the ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.authority().to_owned())
    }

    /// The path, e.g. `/billing/api`; `""` for a trust-domain ID.
    pub fn path(&self) -> &str {
        let rest = self.after_scheme();
        rest.find('/').map_or("", |i| &rest[i..])
    }

    /// Whether the ID is a trust-domain ID (`spiffe://example.org`, no path).
    pub fn is_trust_domain_id(&self) -> bool {
        self.path().is_empty()
    }

    /// Whether the ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.authority() == td.as_str()
    }

    fn after_scheme(&self) -> &str {
        // Validated on construction: the scheme is always present.
        self.0.strip_prefix(SCHEME).unwrap_or(&self.0)
    }

    fn authority(&self) -> &str {
        let rest = self.after_scheme();
        rest.find('/').map_or(rest, |i| &rest[..i])
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

// === validation rules ===

/// Rejects URI parts a SPIFFE ID never has: percent-encoding, query,
/// fragment, user information and port.
fn check_uri_extras(rest: &str, input: &str, what: IdKind) -> Result<(), IdError> {
    let input = input.to_owned();
    if rest.contains('%') {
        return Err(IdError::PercentEncoded { what, input });
    }
    if rest.contains('?') {
        return Err(IdError::Query { what, input });
    }
    if rest.contains('#') {
        return Err(IdError::Fragment { what, input });
    }
    let authority = rest.find('/').map_or(rest, |i| &rest[..i]);
    if authority.contains('@') {
        return Err(IdError::UserInfo { what, input });
    }
    if authority.contains(':') {
        return Err(IdError::Port { what, input });
    }
    Ok(())
}

fn check_trust_domain(name: &str, input: &str, what: IdKind) -> Result<(), IdError> {
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong {
            what,
            len: name.len(),
            max: MAX_TRUST_DOMAIN_LEN,
        });
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(IdError::TrustDomainUpperCase {
            what,
            input: input.to_owned(),
        });
    }
    if let Some(found) = name
        .chars()
        .find(|&c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        return Err(IdError::TrustDomainChar {
            what,
            input: input.to_owned(),
            found,
        });
    }
    Ok(())
}

fn check_path(path: &str, input: &str) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    let input = input.to_owned();
    // `path` starts with '/', so the first piece of the split is empty.
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            return Err(if segments.peek().is_some() {
                IdError::EmptySegment { input }
            } else {
                IdError::TrailingSlash { input }
            });
        }
        if segment == "." || segment == ".." {
            return Err(IdError::DotSegment { input });
        }
        if let Some(found) = segment
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(IdError::PathChar { input, found });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn err(s: &str) -> IdError {
        SpiffeId::new(s).expect_err(s)
    }

    #[test]
    fn accepts_valid_ids() {
        let id = SpiffeId::new("spiffe://example.org/billing/api").unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/billing/api");
        assert_eq!(id.trust_domain().as_str(), "example.org");
        assert_eq!(id.path(), "/billing/api");
        assert!(!id.is_trust_domain_id());

        let td_id = SpiffeId::new("spiffe://my-td_1.example").unwrap();
        assert_eq!(td_id.path(), "");
        assert!(td_id.is_trust_domain_id());

        // Path segments are case-sensitive and may hold '.', '-', '_'.
        let mixed = SpiffeId::new("spiffe://example.org/Ns/a.b-c_D/...x").unwrap();
        assert_eq!(mixed.path(), "/Ns/a.b-c_D/...x");
    }

    #[test]
    fn rejects_dot_segments() {
        assert!(matches!(
            err("spiffe://example.org/a/../b"),
            IdError::DotSegment { .. }
        ));
        assert!(matches!(
            err("spiffe://example.org/.."),
            IdError::DotSegment { .. }
        ));
        assert!(matches!(
            err("spiffe://example.org/./a"),
            IdError::DotSegment { .. }
        ));
        assert!(matches!(
            err("spiffe://example.org/a/."),
            IdError::DotSegment { .. }
        ));
    }

    #[test]
    fn rejects_percent_encoding() {
        let e = err("spiffe://example.org/%2e%2e/a");
        assert!(matches!(e, IdError::PercentEncoded { .. }), "{e}");
        assert!(e.to_string().contains("percent-encoding"), "{e}");
        assert!(matches!(
            err("spiffe://ex%41mple.org/a"),
            IdError::PercentEncoded { .. }
        ));
    }

    #[test]
    fn rejects_empty_segment_and_trailing_slash() {
        assert!(matches!(
            err("spiffe://example.org//a"),
            IdError::EmptySegment { .. }
        ));
        assert!(matches!(
            err("spiffe://example.org/a//b"),
            IdError::EmptySegment { .. }
        ));
        assert!(matches!(
            err("spiffe://example.org/a/"),
            IdError::TrailingSlash { .. }
        ));
        assert!(matches!(
            err("spiffe://example.org/"),
            IdError::TrailingSlash { .. }
        ));
    }

    #[test]
    fn rejects_upper_case_trust_domain_without_lower_casing() {
        let e = err("spiffe://Example.org/x");
        assert!(matches!(
            e,
            IdError::TrustDomainUpperCase {
                what: IdKind::SpiffeId,
                ..
            }
        ));
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "invalid SPIFFE ID \"spiffe://Example.org/x\": trust domain must be lower-case"
            ),
            "{msg}"
        );
        let e = TrustDomain::new("EXAMPLE.ORG").unwrap_err();
        assert!(matches!(
            e,
            IdError::TrustDomainUpperCase {
                what: IdKind::TrustDomain,
                ..
            }
        ));
    }

    #[test]
    fn rejects_too_long() {
        let prefix = "spiffe://example.org/";
        let ok = format!("{prefix}{}", "a".repeat(MAX_ID_LEN - prefix.len()));
        assert_eq!(ok.len(), MAX_ID_LEN);
        SpiffeId::new(&ok).unwrap();
        let long = format!("{ok}b");
        assert_eq!(
            err(&long),
            IdError::TooLong {
                len: MAX_ID_LEN + 1,
                max: MAX_ID_LEN
            }
        );

        let td = "a".repeat(MAX_TRUST_DOMAIN_LEN + 1);
        assert!(matches!(
            err(&format!("spiffe://{td}/x")),
            IdError::TrustDomainTooLong { len: 256, .. }
        ));
        assert!(matches!(
            TrustDomain::new(&td),
            Err(IdError::TrustDomainTooLong { .. })
        ));
    }

    #[test]
    fn rejects_wrong_scheme() {
        for s in [
            "https://example.org/a",
            "SPIFFE://example.org/a",
            "Spiffe://example.org/a",
            "spiffe:/example.org/a",
            "spiffe:example.org",
            "example.org/a",
        ] {
            assert_eq!(
                err(s),
                IdError::WrongScheme {
                    input: s.to_owned()
                },
                "{s}"
            );
        }
    }

    #[test]
    fn rejects_port_query_fragment_userinfo() {
        assert!(matches!(
            err("spiffe://example.org:8443/a"),
            IdError::Port { .. }
        ));
        assert!(matches!(
            err("spiffe://example.org/a?x=1"),
            IdError::Query { .. }
        ));
        assert!(matches!(
            err("spiffe://example.org?x"),
            IdError::Query { .. }
        ));
        assert!(matches!(
            err("spiffe://example.org/a#frag"),
            IdError::Fragment { .. }
        ));
        assert!(matches!(
            err("spiffe://user@example.org/a"),
            IdError::UserInfo { .. }
        ));
        assert!(matches!(
            TrustDomain::new("example.org:443"),
            Err(IdError::Port { .. })
        ));
    }

    #[test]
    fn rejects_bad_characters_and_missing_parts() {
        assert_eq!(
            err(""),
            IdError::Empty {
                what: IdKind::SpiffeId
            }
        );
        assert!(matches!(
            err("spiffe://"),
            IdError::MissingTrustDomain { .. }
        ));
        assert!(matches!(
            err("spiffe:///a"),
            IdError::MissingTrustDomain { .. }
        ));
        assert!(matches!(
            err("spiffe://exa!mple.org/a"),
            IdError::TrustDomainChar { found: '!', .. }
        ));
        assert!(matches!(
            err("spiffe://example.org/a b"),
            IdError::PathChar { found: ' ', .. }
        ));
        assert!(matches!(
            err("spiffe://example.org/caf\u{e9}"),
            IdError::PathChar {
                found: '\u{e9}',
                ..
            }
        ));
    }

    #[test]
    fn trust_domain_rules() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(td.to_string(), "example.org");
        assert_eq!(td.id().as_str(), "spiffe://example.org");
        assert!(td.id().is_trust_domain_id());
        assert_eq!(
            TrustDomain::new(""),
            Err(IdError::Empty {
                what: IdKind::TrustDomain
            })
        );
        assert!(matches!(
            TrustDomain::new("spiffe://example.org"),
            Err(IdError::NotABareName { .. })
        ));
        assert!(matches!(
            TrustDomain::new("example.org/a"),
            Err(IdError::NotABareName { .. })
        ));
        assert!(matches!(
            TrustDomain::new("exa mple.org"),
            Err(IdError::TrustDomainChar { found: ' ', .. })
        ));
    }

    #[test]
    fn from_parts_and_membership() {
        let td: TrustDomain = "example.org".parse().unwrap();
        let id = SpiffeId::from_parts(&td, "/lanyard/server").unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/lanyard/server");
        assert!(id.is_member_of(&td));
        assert!(!id.is_member_of(&TrustDomain::new("example.com").unwrap()));
        // A trust domain that is a prefix of another is not the same domain.
        let longer = SpiffeId::new("spiffe://example.org.evil/x").unwrap();
        assert!(!longer.is_member_of(&td));
        assert_eq!(SpiffeId::from_parts(&td, "").unwrap(), td.id());
        assert!(matches!(
            SpiffeId::from_parts(&td, "service"),
            Err(IdError::PathNotAbsolute { .. })
        ));
        assert!(matches!(
            SpiffeId::from_parts(&td, "/a/../b"),
            Err(IdError::DotSegment { .. })
        ));
    }

    #[test]
    fn serde_is_a_validated_string() {
        let id = SpiffeId::new("spiffe://example.org/a").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"spiffe://example.org/a\"");
        assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
        let bad = serde_json::from_str::<SpiffeId>("\"spiffe://Example.org/a\"").unwrap_err();
        assert!(bad.to_string().contains("lower-case"), "{bad}");

        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(serde_json::to_string(&td).unwrap(), "\"example.org\"");
        assert_eq!(
            serde_json::from_str::<TrustDomain>("\"example.org\"").unwrap(),
            td
        );
        assert!(serde_json::from_str::<TrustDomain>("\"Example.org\"").is_err());
    }
}
