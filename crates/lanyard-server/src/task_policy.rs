//! The task policy: the decision taken when a task is requested and each
//! time it is approved, from the whole context of the request.
//!
//! Two kinds share one contract. Without `[tasks] policy_file` the TOML
//! rules (`max_ttl`, `break_glass_max_ttl`, one approver) decide, as they
//! always have. With it, a Rego module (package `lanyard.tasks`, evaluated
//! by `regorus`) decides: the server evaluates `data.lanyard.tasks.decision`
//! against the input document (see `docs/operations.md`) and expects
//!
//! ```json
//! {"allow": true, "rule": "maintenance_window", "reason": "...",
//!  "max_ttl_seconds": 3600, "approvals_required": 2,
//!  "approver_groups": ["change-board"]}
//! ```
//!
//! An undefined decision is a denial (fail closed). Every decision carries
//! the SHA-256 of the policy that took it, for the audit record.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::Policy;

/// The rule the server evaluates in a Rego policy.
pub const DECISION_RULE: &str = "data.lanyard.tasks.decision";
/// The package a Rego task policy must declare.
pub const PACKAGE: &str = "data.lanyard.tasks";

/// Why a policy could not be loaded or could not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("tasks.policy_file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The Rego text does not parse; `message` names file, line and column.
    #[error("tasks.policy_file: {message}")]
    Compile {
        /// regorus's message, e.g. `policy.rego:4:9: error: ...`.
        message: String,
    },
    /// The module declares another package.
    #[error(
        "tasks.policy_file {}: declares package {found}; a task policy must be `package lanyard.tasks` and define `decision`",
        path.display()
    )]
    Package {
        /// The file.
        path: PathBuf,
        /// The package it declares.
        found: String,
    },
    /// Evaluation failed (for example two rules gave different decisions).
    #[error("task policy evaluation failed: {0}")]
    Eval(String),
    /// The decision is not the documented object.
    #[error(
        "task policy decision is malformed ({0}); expected an object with allow (bool), rule, reason, and optionally max_ttl_seconds, approvals_required, approver_groups"
    )]
    Output(String),
}

/// What the policy decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Allowed or not.
    pub allow: bool,
    /// The name of the rule that decided (for the audit record).
    #[serde(default)]
    pub rule: String,
    /// Why, in words.
    #[serde(default)]
    pub reason: String,
    /// The longest window this request may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_seconds: Option<u64>,
    /// Distinct approvers needed before the task becomes active (request only).
    #[serde(default = "one")]
    pub approvals_required: u32,
    /// Approvers must belong to one of these groups (empty: any approver).
    #[serde(default)]
    pub approver_groups: Vec<String>,
}

fn one() -> u32 {
    1
}

/// A decision plus the policy that took it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
    /// SHA-256 (hex) of the policy text.
    pub policy_sha256: String,
}

enum Kind {
    Toml(Policy),
    /// Compiled once; each evaluation runs on a clone.
    Rego(Box<Mutex<regorus::Engine>>),
}

/// The task policy in force.
pub struct TaskPolicy {
    kind: Kind,
    origin: String,
    source: String,
    sha256: String,
}

impl std::fmt::Debug for TaskPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskPolicy")
            .field("origin", &self.origin)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

impl TaskPolicy {
    /// The TOML rules as a policy; its text (and hash) is their canonical
    /// description.
    pub fn toml(policy: &Policy) -> Self {
        let source = format!(
            "# built-in task policy from the server config ([tasks])\n\
             max_ttl = \"{}\"\nbreak_glass_max_ttl = \"{}\"\napprovals_required = 1\n\
             require_distinct_approver = {}\n",
            humantime::format_duration(policy.max_task_ttl),
            humantime::format_duration(policy.break_glass_max_ttl),
            policy.require_distinct_approver
        );
        Self {
            sha256: sha256_hex(&source),
            kind: Kind::Toml(policy.clone()),
            origin: "server config [tasks]".into(),
            source,
        }
    }

    /// Reads and compiles a Rego policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::rego(path, text)
    }

    /// Compiles Rego text; `path` names it in messages.
    pub fn rego(path: &Path, text: String) -> Result<Self, PolicyError> {
        let mut engine = regorus::Engine::new();
        let package = engine
            .add_policy(path.display().to_string(), text.clone())
            .map_err(|e| PolicyError::Compile {
                message: e.to_string(),
            })?;
        if package != PACKAGE {
            return Err(PolicyError::Package {
                path: path.to_owned(),
                found: package.trim_start_matches("data.").to_owned(),
            });
        }
        // Compile-time checks (unknown functions, unsafe variables) run on
        // the first evaluation: do one now, so a bad policy stops the server.
        let mut probe = engine.clone();
        probe
            .eval_rule(DECISION_RULE.into())
            .map_err(|e| PolicyError::Compile {
                message: e.to_string(),
            })?;
        Ok(Self {
            sha256: sha256_hex(&text),
            kind: Kind::Rego(Box::new(Mutex::new(engine))),
            origin: path.display().to_string(),
            source: text,
        })
    }

    /// SHA-256 (hex) of the policy text.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The policy text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where it came from: a file path or the server config.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Decides on `input` (the documented input document).
    pub fn decide(&self, input: &Value) -> Result<Verdict, PolicyError> {
        let decision = match &self.kind {
            Kind::Toml(policy) => toml_decision(policy, input),
            Kind::Rego(engine) => {
                let mut engine = match engine.lock() {
                    Ok(e) => e.clone(),
                    Err(poisoned) => poisoned.into_inner().clone(),
                };
                let input = regorus::Value::from_json_str(&input.to_string())
                    .map_err(|e| PolicyError::Eval(e.to_string()))?;
                engine.set_input(input);
                let value = engine
                    .eval_rule(DECISION_RULE.into())
                    .map_err(|e| PolicyError::Eval(e.to_string()))?;
                if value == regorus::Value::Undefined {
                    Decision {
                        allow: false,
                        rule: "undefined".into(),
                        reason: format!(
                            "the policy gives no decision for this input ({DECISION_RULE} is undefined); denied"
                        ),
                        max_ttl_seconds: None,
                        approvals_required: 1,
                        approver_groups: Vec::new(),
                    }
                } else {
                    let json = value
                        .to_json_str()
                        .map_err(|e| PolicyError::Output(e.to_string()))?;
                    serde_json::from_str(&json).map_err(|e| PolicyError::Output(e.to_string()))?
                }
            }
        };
        Ok(Verdict {
            decision,
            policy_sha256: self.sha256.clone(),
        })
    }
}

/// The TOML rules: the TTL caps at request, nothing more at approval (the
/// roles and `require_distinct_approver` are checked by the server).
fn toml_decision(policy: &Policy, input: &Value) -> Decision {
    let approve = input["action"] == "approve";
    let break_glass = input["break_glass"].as_bool().unwrap_or(false);
    let ttl = input["ttl_seconds"].as_u64().unwrap_or(0);
    let (cap, rule) = if break_glass {
        (policy.break_glass_max_ttl, "tasks.break_glass_max_ttl")
    } else {
        (policy.max_task_ttl, "tasks.max_ttl")
    };
    let mut decision = Decision {
        allow: true,
        rule: rule.into(),
        reason: format!(
            "within {rule} ({})",
            humantime::format_duration(Duration::from_secs(cap.as_secs()))
        ),
        max_ttl_seconds: Some(cap.as_secs()),
        approvals_required: 1,
        approver_groups: Vec::new(),
    };
    if approve {
        decision.rule = "tasks.approvers".into();
        decision.reason = "an approver under the server config".into();
    } else if ttl > cap.as_secs() {
        decision.allow = false;
        decision.reason = format!(
            "a {}task may last at most {}, {} was asked",
            if break_glass { "break-glass " } else { "" },
            humantime::format_duration(cap),
            humantime::format_duration(Duration::from_secs(ttl))
        );
    }
    decision
}

/// A fixed UTC offset, `+HH:MM` or `-HH:MM` (or `Z`/`UTC`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UtcOffset {
    seconds: i32,
}

impl std::str::FromStr for UtcOffset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s:?} is not a UTC offset; expected +HH:MM or -HH:MM (e.g. \"+02:00\") or \"UTC\""
            )
        };
        if matches!(s, "Z" | "UTC" | "utc") {
            return Ok(Self::default());
        }
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+') => (1, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: i32 = h.parse().map_err(|_| bad())?;
        let m: i32 = m.parse().map_err(|_| bad())?;
        if h > 14 || m > 59 {
            return Err(bad());
        }
        Ok(Self {
            seconds: sign * (h * 3600 + m * 60),
        })
    }
}

impl std::fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.seconds < 0 { '-' } else { '+' };
        let abs = self.seconds.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60)
    }
}

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl UtcOffset {
    /// The wall clock at `unix` seconds in this zone: the input's `clock`.
    pub fn clock(self, unix: i64) -> Value {
        let local = unix + i64::from(self.seconds);
        let days = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        // 1970-01-01 was a Thursday (index 3 from Monday).
        let weekday = WEEKDAYS[(days + 3).rem_euclid(7) as usize];
        serde_json::json!({
            "unix": unix,
            "time_zone": self.to_string(),
            "hour": secs / 3600,
            "minute": secs % 3600 / 60,
            "weekday": weekday,
            "weekend": matches!(weekday, "saturday" | "sunday"),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn toml_policy() -> Policy {
        Policy {
            admins: Vec::new(),
            requesters: Vec::new(),
            approvers: Vec::new(),
            max_task_ttl: Duration::from_secs(3600),
            break_glass_max_ttl: Duration::from_secs(600),
            require_distinct_approver: true,
        }
    }

    #[test]
    fn offsets_parse_and_give_the_local_clock() {
        let plus2: UtcOffset = "+02:00".parse().unwrap();
        assert_eq!(plus2.to_string(), "+02:00");
        assert_eq!("-05:30".parse::<UtcOffset>().unwrap().to_string(), "-05:30");
        for bad in ["2", "+2:00", "+25:00", "Europe/Paris", ""] {
            let err = bad.parse::<UtcOffset>().unwrap_err();
            assert!(err.contains("+HH:MM"), "{err}");
        }
        // 2024-01-05T23:30:00Z is a Friday; at +02:00 it is Saturday 01:30.
        let clock = plus2.clock(1_704_497_400);
        assert_eq!(clock["hour"], 1);
        assert_eq!(clock["minute"], 30);
        assert_eq!(clock["weekday"], "saturday");
        assert_eq!(
            UtcOffset::default().clock(1_704_497_400)["weekday"],
            "friday"
        );
        assert_eq!(UtcOffset::default().clock(0)["weekday"], "thursday");
    }

    #[test]
    fn toml_rules_cap_the_ttl() {
        let p = TaskPolicy::toml(&toml_policy());
        let v = p
            .decide(&json!({"action": "request", "ttl_seconds": 7200}))
            .unwrap();
        assert!(!v.decision.allow);
        assert_eq!(v.decision.rule, "tasks.max_ttl");
        let v = p
            .decide(&json!({"action": "request", "ttl_seconds": 900, "break_glass": true}))
            .unwrap();
        assert!(!v.decision.allow);
        assert!(v.decision.reason.contains("break-glass"), "{v:?}");
        assert_eq!(v.policy_sha256.len(), 64);
    }

    const REGO: &str = r#"package lanyard.tasks

default decision := {"allow": false, "rule": "default", "reason": "nothing allows it"}

decision := {"allow": true, "rule": "prod", "reason": "two from change-board",
             "approvals_required": 2, "approver_groups": ["change-board"]} if {
    startswith(input.spiffe_id, "spiffe://a.org/prod/")
}
"#;

    #[test]
    fn rego_decides_and_defaults_deny() {
        let p = TaskPolicy::rego(Path::new("p.rego"), REGO.into()).unwrap();
        let v = p
            .decide(&json!({"spiffe_id": "spiffe://a.org/prod/db"}))
            .unwrap();
        assert!(v.decision.allow);
        assert_eq!(v.decision.approvals_required, 2);
        assert_eq!(v.decision.approver_groups, ["change-board"]);
        let v = p
            .decide(&json!({"spiffe_id": "spiffe://a.org/dev"}))
            .unwrap();
        assert!(!v.decision.allow);
        assert_eq!(v.decision.rule, "default");
        assert_eq!(v.policy_sha256, sha256_hex(REGO));
    }

    #[test]
    fn bad_policies_are_named() {
        let err = TaskPolicy::rego(
            Path::new("bad.rego"),
            "package lanyard.tasks\n\ndecision := {\"allow\": true\n".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad.rego:"), "{err}");
        let err = TaskPolicy::rego(Path::new("x.rego"), "package other\nx := 1\n".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("package lanyard.tasks"), "{err}");
        let p = TaskPolicy::rego(
            Path::new("u.rego"),
            "package lanyard.tasks\ndecision := {\"allow\": true} if input.x\n".into(),
        )
        .unwrap();
        let v = p.decide(&json!({})).unwrap();
        assert!(!v.decision.allow, "undefined is a denial");
        let p = TaskPolicy::rego(
            Path::new("m.rego"),
            "package lanyard.tasks\ndecision := {\"allowed\": true}\n".into(),
        )
        .unwrap();
        let err = p.decide(&json!({})).unwrap_err().to_string();
        assert!(err.contains("malformed"), "{err}");
    }
}
