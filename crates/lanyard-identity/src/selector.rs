//! Selectors (`type:key:value`) and entry matching.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wildmatch::WildMatch;

use crate::error::SelectorError;

/// A selector such as `unix:uid:1000` or `cgroup:path:/system.slice/*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    /// `unix`, `cgroup`, `join_token`, `x509pop`.
    pub kind: String,
    /// `uid`, `gid`, `user`, `group`, `path`, `sha256`, `id`, `subject`, `ca`.
    pub key: String,
    /// Everything after the second `:` (may itself contain `:`).
    pub value: String,
}

/// What a value must look like; each is also the text of the error message.
#[derive(Clone, Copy)]
enum ValueRule {
    Id,
    Name,
    AbsolutePath,
    Sha256,
    Glob,
    Token,
    SubjectCn,
    CaFingerprint,
}

impl ValueRule {
    fn expected(self) -> &'static str {
        match self {
            Self::Id => "a decimal number from 0 to 4294967295 without sign or leading zeros",
            Self::Name => "a non-empty name without whitespace or control characters",
            Self::AbsolutePath => "an absolute path starting with '/', without control characters",
            Self::Sha256 => "64 lower-case hex digits (a SHA-256 digest)",
            Self::Glob => {
                "a non-empty glob ('*' and '?' wildcards) on the cgroup path, e.g. \
                 /system.slice/*.service"
            }
            Self::Token => "a non-empty token ID without whitespace or control characters",
            Self::SubjectCn => "cn:<common name>, with a non-empty common name",
            Self::CaFingerprint => "fingerprint:<lower-case hex digest>",
        }
    }

    fn accepts(self, value: &str) -> bool {
        let no_control = !value.chars().any(char::is_control);
        let no_space = !value.chars().any(char::is_whitespace);
        match self {
            Self::Id => value.parse::<u32>().is_ok_and(|n| n.to_string() == value),
            Self::Name | Self::Token => !value.is_empty() && no_space && no_control,
            Self::AbsolutePath => value.starts_with('/') && no_control,
            Self::Sha256 => value.len() == 64 && is_lower_hex(value),
            Self::Glob => !value.is_empty() && no_control,
            Self::SubjectCn => value
                .strip_prefix("cn:")
                .is_some_and(|cn| !cn.is_empty() && no_control),
            Self::CaFingerprint => value
                .strip_prefix("fingerprint:")
                .is_some_and(|hex| !hex.is_empty() && hex.len() % 2 == 0 && is_lower_hex(hex)),
        }
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The rule for `kind:key`, or the error naming what is accepted.
fn rule_for(kind: &str, key: &str, input: &str) -> Result<ValueRule, SelectorError> {
    let unknown_key = |accepted: &'static str| SelectorError::UnknownKey {
        input: input.to_owned(),
        kind: kind.to_owned(),
        key: key.to_owned(),
        accepted,
    };
    match kind {
        "unix" => match key {
            "uid" | "gid" => Ok(ValueRule::Id),
            "user" | "group" => Ok(ValueRule::Name),
            "path" => Ok(ValueRule::AbsolutePath),
            "sha256" => Ok(ValueRule::Sha256),
            _ => Err(unknown_key("uid, gid, user, group, path and sha256")),
        },
        "cgroup" => match key {
            "path" => Ok(ValueRule::Glob),
            _ => Err(unknown_key("path")),
        },
        "join_token" => match key {
            "id" => Ok(ValueRule::Token),
            _ => Err(unknown_key("id")),
        },
        "x509pop" => match key {
            "subject" => Ok(ValueRule::SubjectCn),
            "ca" => Ok(ValueRule::CaFingerprint),
            _ => Err(unknown_key(
                "subject (subject:cn:<name>) and ca (ca:fingerprint:<hex>)",
            )),
        },
        _ => Err(SelectorError::UnknownKind {
            input: input.to_owned(),
            kind: kind.to_owned(),
        }),
    }
}

// === impl Selector ===

impl Selector {
    /// Builds and validates a selector from its three parts.
    ///
    /// # Errors
    ///
    /// [`SelectorError`] naming the unknown type or key, or what the value
    /// must look like.
    pub fn new(
        kind: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, SelectorError> {
        let selector = Self {
            kind: kind.into(),
            key: key.into(),
            value: value.into(),
        };
        selector.validate()?;
        Ok(selector)
    }

    /// Checks the selector's type, key and value.
    ///
    /// # Errors
    ///
    /// As for [`Selector::new`].
    pub fn validate(&self) -> Result<(), SelectorError> {
        let input = self.to_string();
        let rule = rule_for(&self.kind, &self.key, &input)?;
        if !rule.accepts(&self.value) {
            return Err(SelectorError::InvalidValue {
                input,
                expected: rule.expected(),
            });
        }
        Ok(())
    }

    /// Whether this (entry) selector is matched by the workload's selector:
    /// equality, except that an entry's `cgroup:path` value is a glob matched
    /// against the workload's cgroup path.
    pub fn matches(&self, workload: &Selector) -> bool {
        if self.kind != workload.kind || self.key != workload.key {
            return false;
        }
        if self.kind == "cgroup" && self.key == "path" {
            WildMatch::new(&self.value).matches(&workload.value)
        } else {
            self.value == workload.value
        }
    }
}

/// Whether every entry selector is matched by some workload selector. An
/// empty entry list matches nothing: an entry without selectors must never
/// grant an identity.
pub fn matches_all(entry: &[Selector], workload: &[Selector]) -> bool {
    !entry.is_empty() && entry.iter().all(|e| workload.iter().any(|w| e.matches(w)))
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.key, self.value)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(kind), Some(key), Some(value)) if !kind.is_empty() && !key.is_empty() => {
                Self::new(kind, key, value)
            }
            _ => Err(SelectorError::Malformed {
                input: s.to_owned(),
            }),
        }
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        s.parse().unwrap()
    }

    fn err(s: &str) -> SelectorError {
        s.parse::<Selector>().expect_err(s)
    }

    #[test]
    fn parse_print_round_trip() {
        let sha = "a".repeat(64);
        for s in [
            "unix:uid:1000",
            "unix:uid:0",
            "unix:gid:4294967295",
            "unix:user:www-data",
            "unix:group:wheel",
            "unix:path:/usr/bin/my app",
            &format!("unix:sha256:{sha}"),
            "cgroup:path:/system.slice/*.service",
            "join_token:id:6f1c2d",
            "x509pop:subject:cn:node-1.example.org",
            "x509pop:ca:fingerprint:0a1b2c3d",
        ] {
            let parsed = sel(s);
            assert_eq!(parsed.to_string(), s);
            assert_eq!(
                parsed,
                Selector::new(&parsed.kind, &parsed.key, &parsed.value).unwrap()
            );
        }
    }

    #[test]
    fn value_may_contain_colons() {
        let s = sel("x509pop:subject:cn:a:b:c");
        assert_eq!(
            (s.kind.as_str(), s.key.as_str(), s.value.as_str()),
            ("x509pop", "subject", "cn:a:b:c")
        );
        let s = sel("cgroup:path:0::/user.slice/*");
        assert_eq!(s.value, "0::/user.slice/*");
    }

    #[test]
    fn malformed() {
        for s in ["", "unix", "unix:uid", ":uid:1", "unix::1"] {
            assert_eq!(
                err(s),
                SelectorError::Malformed {
                    input: s.to_owned()
                },
                "{s}"
            );
        }
        assert!(err("unix").to_string().contains("expected type:key:value"));
    }

    #[test]
    fn unknown_kind_and_key() {
        let e = err("docker:image:nginx");
        assert!(matches!(&e, SelectorError::UnknownKind { kind, .. } if kind == "docker"));
        assert!(
            e.to_string()
                .contains("unix, cgroup, join_token and x509pop"),
            "{e}"
        );
        let e = err("unix:pid:1");
        assert!(matches!(&e, SelectorError::UnknownKey { key, .. } if key == "pid"));
        assert!(
            e.to_string()
                .contains("uid, gid, user, group, path and sha256"),
            "{e}"
        );
        assert!(matches!(
            err("UNIX:uid:1"),
            SelectorError::UnknownKind { .. }
        ));
        assert!(matches!(
            err("cgroup:id:1"),
            SelectorError::UnknownKey { .. }
        ));
        assert!(matches!(
            err("join_token:token:1"),
            SelectorError::UnknownKey { .. }
        ));
        assert!(matches!(
            err("x509pop:issuer:cn:x"),
            SelectorError::UnknownKey { .. }
        ));
    }

    #[test]
    fn bad_values() {
        let bad = [
            ("unix:uid:", ValueRule::Id),
            ("unix:uid:-1", ValueRule::Id),
            ("unix:uid:+1", ValueRule::Id),
            ("unix:uid:01", ValueRule::Id),
            ("unix:uid:4294967296", ValueRule::Id),
            ("unix:gid:root", ValueRule::Id),
            ("unix:user:", ValueRule::Name),
            ("unix:user:a b", ValueRule::Name),
            ("unix:group:a\nb", ValueRule::Name),
            ("unix:path:usr/bin/x", ValueRule::AbsolutePath),
            ("unix:path:", ValueRule::AbsolutePath),
            ("unix:sha256:abc", ValueRule::Sha256),
            ("unix:sha256:", ValueRule::Sha256),
            ("cgroup:path:", ValueRule::Glob),
            ("join_token:id:", ValueRule::Token),
            ("join_token:id:a b", ValueRule::Token),
            ("x509pop:subject:node-1", ValueRule::SubjectCn),
            ("x509pop:subject:cn:", ValueRule::SubjectCn),
            ("x509pop:ca:fingerprint:abc", ValueRule::CaFingerprint),
            ("x509pop:ca:fingerprint:ABCD", ValueRule::CaFingerprint),
            ("x509pop:ca:0a0b", ValueRule::CaFingerprint),
        ];
        for (s, rule) in bad {
            assert_eq!(
                err(s),
                SelectorError::InvalidValue {
                    input: s.to_owned(),
                    expected: rule.expected()
                },
                "{s}"
            );
        }
        let upper_sha = format!("unix:sha256:{}", "A".repeat(64));
        assert!(matches!(
            err(&upper_sha),
            SelectorError::InvalidValue { .. }
        ));
        assert!(err("unix:uid:x").to_string().contains("decimal number"));
    }

    #[test]
    fn matching_is_equality() {
        let e = sel("unix:uid:1000");
        assert!(e.matches(&sel("unix:uid:1000")));
        assert!(!e.matches(&sel("unix:uid:10000")));
        assert!(!e.matches(&sel("unix:gid:1000")));
        // Only cgroup:path is a glob; '*' elsewhere is literal.
        let star = Selector {
            kind: "unix".into(),
            key: "path".into(),
            value: "/usr/bin/*".into(),
        };
        assert!(!star.matches(&sel("unix:path:/usr/bin/curl")));
        assert!(star.matches(&sel("unix:path:/usr/bin/*")));
    }

    #[test]
    fn cgroup_path_is_a_glob() {
        let e = sel("cgroup:path:/system.slice/*.service");
        assert!(e.matches(&sel("cgroup:path:/system.slice/billing.service")));
        assert!(!e.matches(&sel("cgroup:path:/user.slice/billing.service")));
        assert!(!e.matches(&sel("cgroup:path:/system.slice/billing.socket")));
        let q = sel("cgroup:path:/kubepods/pod?");
        assert!(q.matches(&sel("cgroup:path:/kubepods/pod1")));
        assert!(!q.matches(&sel("cgroup:path:/kubepods/pod12")));
        // The glob is the entry's; a workload's value is never read as one.
        assert!(!sel("cgroup:path:/a/b").matches(&sel("cgroup:path:/a/*")));
    }

    #[test]
    fn matches_all_semantics() {
        let workload = vec![
            sel("unix:uid:1000"),
            sel("unix:gid:50"),
            sel("cgroup:path:/app.slice/web.service"),
        ];
        assert!(matches_all(&[sel("unix:uid:1000")], &workload));
        assert!(matches_all(
            &[sel("unix:uid:1000"), sel("cgroup:path:/app.slice/*")],
            &workload
        ));
        assert!(!matches_all(
            &[sel("unix:uid:1000"), sel("unix:gid:51")],
            &workload
        ));
        assert!(!matches_all(&[], &workload));
        assert!(!matches_all(&[sel("unix:uid:1000")], &[]));
    }

    #[test]
    fn serde_as_string() {
        let s = sel("x509pop:subject:cn:node:1");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"x509pop:subject:cn:node:1\"");
        assert_eq!(serde_json::from_str::<Selector>(&json).unwrap(), s);
        let e = serde_json::from_str::<Selector>("\"unix:uid:abc\"").unwrap_err();
        assert!(e.to_string().contains("decimal number"), "{e}");
    }
}
