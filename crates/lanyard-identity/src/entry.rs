//! Registration entries: which SPIFFE ID a workload matching some selectors
//! gets, and through which parent (agent).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::IdError;

/// The longest hint accepted, in bytes.
pub const MAX_HINT_LEN: usize = 1024;
/// The most DNS names an entry may give its SVIDs: more would not fit an
/// X.509-SVID that verifiers accept (webpki refuses certificates whose
/// SAN extension grows past its limits), and the entry would never converge.
pub const MAX_DNS_NAMES: usize = 100;
/// The most selectors an entry may require.
pub const MAX_SELECTORS: usize = 32;

/// A registration entry ID (a UUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub uuid::Uuid);

/// A registration entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's ID.
    pub id: EntryId,
    /// The SPIFFE ID issued to matching workloads.
    pub spiffe_id: crate::SpiffeId,
    /// The agent (or parent entry's ID) allowed to receive SVIDs for this entry.
    pub parent_id: crate::SpiffeId,
    /// All must be among the workload's selectors. Never empty.
    pub selectors: Vec<crate::Selector>,
    /// X.509-SVID lifetime in seconds; `None` means the server default.
    #[serde(default)]
    pub x509_svid_ttl_secs: Option<u64>,
    /// DNS SANs added to the SVID.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// Seconds since the Unix epoch after which the entry is ignored.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Free text passed to workloads in the Workload API `hint` field.
    #[serde(default)]
    pub hint: String,
    /// Bumped on each update.
    #[serde(default)]
    pub revision: u64,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    /// JWT-SVID lifetime in seconds; `None` means the server default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_svid_ttl_secs: Option<u64>,
}

// === impl EntryId ===

impl EntryId {
    /// A new random (version 4) entry ID.
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for EntryId {
    type Err = IdError;

    /// Accepts only the hyphenated form (36 characters, either case), the
    /// one [`Display`](fmt::Display) prints.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || IdError::InvalidEntryId {
            input: s.to_owned(),
        };
        if s.len() != 36 {
            return Err(invalid());
        }
        uuid::Uuid::try_parse(s).map(Self).map_err(|_| invalid())
    }
}

impl Serialize for EntryId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EntryId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// === impl Entry ===

impl Entry {
    /// Checks the rules the types alone do not: at least one selector, a
    /// workload (not trust-domain) SPIFFE ID, valid DNS names, a hint of at
    /// most 1024 bytes and a positive TTL when one is set.
    ///
    /// # Errors
    ///
    /// The first [`IdError`] found.
    pub fn validate(&self) -> Result<(), IdError> {
        if self.selectors.is_empty() {
            return Err(IdError::NoSelectors);
        }
        for (what, count, max) in [
            ("selectors", self.selectors.len(), MAX_SELECTORS),
            ("dns_names", self.dns_names.len(), MAX_DNS_NAMES),
        ] {
            if count > max {
                return Err(IdError::TooMany { what, count, max });
            }
        }
        if self.spiffe_id.is_trust_domain_id() {
            return Err(IdError::TrustDomainIdInEntry {
                id: self.spiffe_id.to_string(),
            });
        }
        for name in &self.dns_names {
            validate_dns_name(name)?;
        }
        if self.hint.len() > MAX_HINT_LEN {
            return Err(IdError::HintTooLong {
                len: self.hint.len(),
                max: MAX_HINT_LEN,
            });
        }
        if self.x509_svid_ttl_secs == Some(0) {
            return Err(IdError::ZeroTtl);
        }
        Ok(())
    }
}

/// Checks that `name` is a host name fit for a dNSName SAN: LDH labels of
/// 1-63 bytes, at most 253 bytes in all, no trailing dot, and optionally a
/// leading `*.` wildcard label.
pub fn validate_dns_name(name: &str) -> Result<(), IdError> {
    let invalid = |reason| IdError::InvalidDnsName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > 253 {
        return Err(invalid("it is longer than 253 bytes"));
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    if host.is_empty() {
        return Err(invalid("a wildcard needs a name after \"*.\""));
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(invalid(
                "it has an empty label (\"..\", or a leading or trailing dot)",
            ));
        }
        if label.len() > 63 {
            return Err(invalid("a label is longer than 63 bytes"));
        }
        if label.contains('*') {
            return Err(invalid("'*' is accepted only as the whole first label"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "a label has a character other than a letter, digit or '-'",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label starts or ends with '-'"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            id: "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap(),
            spiffe_id: "spiffe://example.org/billing/api".parse().unwrap(),
            parent_id: "spiffe://example.org/lanyard/agent/join_token/abc"
                .parse()
                .unwrap(),
            selectors: vec![
                "unix:uid:1000".parse().unwrap(),
                "cgroup:path:/app.slice/*".parse().unwrap(),
            ],
            x509_svid_ttl_secs: Some(600),
            jwt_svid_ttl_secs: None,
            dns_names: vec!["api.example.org".into(), "*.svc.example.org".into()],
            expires_at: Some(1_900_000_000),
            hint: "billing".into(),
            revision: 3,
            created_at: 1_700_000_000,
        }
    }

    #[test]
    fn entry_id_display_parse_serde() {
        let id = EntryId::new_random();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.matches('-').count(), 4);
        assert_eq!(text.parse::<EntryId>().unwrap(), id);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
        assert_eq!(
            serde_json::from_str::<EntryId>(&format!("\"{text}\"")).unwrap(),
            id
        );
        assert_ne!(EntryId::new_random(), id);
    }

    #[test]
    fn entry_id_rejects_other_forms() {
        for s in [
            "",
            "not-a-uuid",
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "67e55044-10b1-426f-9247-bb680e5fe0cz",
        ] {
            assert_eq!(
                s.parse::<EntryId>(),
                Err(IdError::InvalidEntryId {
                    input: s.to_owned()
                }),
                "{s}"
            );
        }
        assert!(serde_json::from_str::<EntryId>("\"x\"").is_err());
    }

    #[test]
    fn entry_serde_round_trip_with_snake_case_keys() {
        let e = entry();
        let json = serde_json::to_value(&e).unwrap();
        for key in [
            "id",
            "spiffe_id",
            "parent_id",
            "selectors",
            "x509_svid_ttl_secs",
            "dns_names",
            "expires_at",
            "hint",
            "revision",
            "created_at",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["id"], "67e55044-10b1-426f-9247-bb680e5fe0c8");
        assert_eq!(json["spiffe_id"], "spiffe://example.org/billing/api");
        assert_eq!(json["selectors"][0], "unix:uid:1000");
        let back: Entry = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn entry_deserialize_validates_fields() {
        let mut json = serde_json::to_value(entry()).unwrap();
        json["spiffe_id"] = "spiffe://example.org/a/../b".into();
        assert!(serde_json::from_value::<Entry>(json).is_err());
        let mut json = serde_json::to_value(entry()).unwrap();
        json["selectors"][0] = "unix:uid:x".into();
        assert!(serde_json::from_value::<Entry>(json).is_err());
    }

    #[test]
    fn optional_fields_default() {
        let json = serde_json::json!({
            "id": "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "spiffe_id": "spiffe://example.org/a",
            "parent_id": "spiffe://example.org/lanyard/agent/x509pop/00ff",
            "selectors": ["unix:uid:0"],
            "created_at": 1,
        });
        let e: Entry = serde_json::from_value(json).unwrap();
        assert_eq!(e.x509_svid_ttl_secs, None);
        assert!(e.dns_names.is_empty() && e.hint.is_empty());
        e.validate().unwrap();
    }

    #[test]
    fn validate_accepts_a_good_entry() {
        entry().validate().unwrap();
    }

    #[test]
    fn validate_rejects_each_rule() {
        let mut e = entry();
        e.selectors.clear();
        assert_eq!(e.validate(), Err(IdError::NoSelectors));

        let mut e = entry();
        e.spiffe_id = "spiffe://example.org".parse().unwrap();
        assert!(matches!(
            e.validate(),
            Err(IdError::TrustDomainIdInEntry { .. })
        ));

        let mut e = entry();
        e.hint = "x".repeat(MAX_HINT_LEN + 1);
        assert_eq!(
            e.validate(),
            Err(IdError::HintTooLong {
                len: MAX_HINT_LEN + 1,
                max: MAX_HINT_LEN
            })
        );
        e.hint = "x".repeat(MAX_HINT_LEN);
        e.validate().unwrap();

        let mut e = entry();
        e.dns_names = (0..=MAX_DNS_NAMES)
            .map(|n| format!("h{n}.example.org"))
            .collect();
        assert_eq!(
            e.validate(),
            Err(IdError::TooMany {
                what: "dns_names",
                count: MAX_DNS_NAMES + 1,
                max: MAX_DNS_NAMES
            })
        );
        e.dns_names.pop();
        e.validate().unwrap();
        let mut e = entry();
        e.selectors = (0..=MAX_SELECTORS)
            .map(|n| format!("unix:uid:{n}").parse().unwrap())
            .collect();
        assert!(matches!(
            e.validate(),
            Err(IdError::TooMany {
                what: "selectors",
                ..
            })
        ));

        let mut e = entry();
        e.x509_svid_ttl_secs = Some(0);
        assert_eq!(e.validate(), Err(IdError::ZeroTtl));

        let mut e = entry();
        e.dns_names.push("bad_name.example.org".into());
        assert!(
            matches!(e.validate(), Err(IdError::InvalidDnsName { name, .. }) if name == "bad_name.example.org")
        );
    }

    #[test]
    fn dns_names() {
        for ok in [
            "localhost",
            "api.example.org",
            "*.example.org",
            "a-b.c0.example",
            "API.Example.org",
        ] {
            validate_dns_name(ok).unwrap();
        }
        let long_label = format!("{}.org", "a".repeat(64));
        let long_name = vec!["a".repeat(60); 5].join(".");
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            ".a",
            "a.",
            "-a.org",
            "a-.org",
            "a_b.org",
            "a.*.org",
            "**.org",
            "a b.org",
            long_label.as_str(),
            long_name.as_str(),
            "exa\u{e9}mple.org",
        ] {
            assert!(
                matches!(validate_dns_name(bad), Err(IdError::InvalidDnsName { .. })),
                "{bad:?}"
            );
        }
    }
}
