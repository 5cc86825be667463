//! The claims of a JWT-SVID.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The claims Lanyard writes in a JWT-SVID, and reads back after
/// verifying one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The SPIFFE ID the token is for.
    pub sub: String,
    /// Who the token is for; never empty.
    pub aud: Audience,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issue time, seconds since the Unix epoch.
    pub iat: i64,
    /// The issuer URL when OIDC discovery is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The token's unique ID: the server records it like an X.509 serial,
    /// and revokes it with the entry, agent or task it was issued under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The task grant the token belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanyard_task: Option<TaskClaim>,
}

impl Claims {
    /// Claims for `sub` and `aud`, issued at `iat` (unix seconds) and
    /// expiring `ttl_secs` later; no issuer, ID or task.
    pub fn new(sub: impl Into<String>, aud: Vec<String>, iat: i64, ttl_secs: i64) -> Self {
        Self {
            sub: sub.into(),
            aud: Audience(aud),
            exp: iat.saturating_add(ttl_secs),
            iat,
            iss: None,
            jti: None,
            lanyard_task: None,
        }
    }
}

/// The `lanyard_task` claim: the task grant a token was issued under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskClaim {
    /// The task's ID.
    pub id: String,
    /// The change or incident ticket the task is bound to.
    pub ticket: String,
}

/// The `aud` claim: RFC 7519 allows one string or an array of strings.
/// Lanyard reads both and always writes an array.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audience(pub Vec<String>);

impl Audience {
    /// Whether `audience` is one of the token's audiences.
    pub fn contains(&self, audience: &str) -> bool {
        self.0.iter().any(|a| a == audience)
    }
}

impl Serialize for Audience {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(a) => Self(vec![a]),
            OneOrMany::Many(a) => Self(a),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn audience_reads_a_string_or_an_array_and_writes_an_array() {
        let one: Audience = serde_json::from_str("\"db\"").unwrap();
        assert_eq!(one.0, ["db"]);
        let many: Audience = serde_json::from_str("[\"db\",\"web\"]").unwrap();
        assert!(many.contains("web"));
        assert_eq!(serde_json::to_string(&one).unwrap(), "[\"db\"]");
    }

    #[test]
    fn optional_claims_are_left_out() {
        let c = Claims::new("spiffe://td/a", vec!["x".into()], 10, 5);
        assert_eq!(c.exp, 15);
        let json = serde_json::to_value(&c).unwrap();
        assert!(json.get("iss").is_none() && json.get("lanyard_task").is_none());
    }
}
