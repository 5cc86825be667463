//! Who may do what on the admin socket, and the rules task grants obey.
//!
//! Access to the socket file is the first gate (mode and group); the
//! principal rules here are the second: every admin call names the role it
//! needs and the caller's Unix identity (peer credentials) must match one of
//! that role's rules.

use std::{fmt, str::FromStr, time::Duration};

use crate::admin::Principal;

/// One rule matching Unix principals: `uid:N`, `user:NAME`, `gid:N`,
/// `group:NAME` (primary group or listed member), or `*` (anyone who can
/// reach the socket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalRule {
    /// Anyone.
    Anyone,
    /// This uid.
    Uid(u32),
    /// This user name.
    User(String),
    /// This gid (primary group).
    Gid(u32),
    /// Members of this group.
    Group(String),
}

impl FromStr for PrincipalRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s:?} is not a principal rule; expected uid:N, user:NAME, gid:N, group:NAME or *"
            )
        };
        if s == "*" {
            return Ok(Self::Anyone);
        }
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        if value.is_empty() {
            return Err(bad());
        }
        match kind {
            "uid" => value.parse().map(Self::Uid).map_err(|_| bad()),
            "gid" => value.parse().map(Self::Gid).map_err(|_| bad()),
            "user" => Ok(Self::User(value.to_owned())),
            "group" => Ok(Self::Group(value.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for PrincipalRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anyone => f.write_str("*"),
            Self::Uid(u) => write!(f, "uid:{u}"),
            Self::User(n) => write!(f, "user:{n}"),
            Self::Gid(g) => write!(f, "gid:{g}"),
            Self::Group(n) => write!(f, "group:{n}"),
        }
    }
}

impl PrincipalRule {
    /// Whether `p` matches.
    pub(crate) fn matches(&self, p: &Principal) -> bool {
        match self {
            Self::Anyone => true,
            Self::Uid(u) => p.uid == *u,
            Self::User(n) => p.user.as_deref() == Some(n),
            Self::Gid(g) => p.gid == *g,
            Self::Group(n) => group_admits(n, p),
        }
    }
}

/// Primary group by gid, or a listed member, per /etc/group.
fn group_admits(name: &str, p: &Principal) -> bool {
    crate::accounts::group(name)
        .is_some_and(|g| g.gid == p.gid || p.user.as_ref().is_some_and(|u| g.members.contains(u)))
}

/// What an admin call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Entries, tokens, agents, revocation, audit.
    Admin,
    /// `task request`, `task complete` of one's own task, reading tasks.
    Requester,
    /// `task approve`, `task deny`, `task review`.
    Approver,
    /// Either of the two: reading tasks, `task complete` (which further
    /// requires the task's own requester or an approver).
    Participant,
}

/// The admin and task policy (server config `admins` and `[tasks]`).
#[derive(Clone, Debug)]
pub struct Policy {
    /// May run every operator command.
    pub admins: Vec<PrincipalRule>,
    /// May request tasks (and complete their own).
    pub requesters: Vec<PrincipalRule>,
    /// May approve, deny and review tasks.
    pub approvers: Vec<PrincipalRule>,
    /// Longest task window.
    pub max_task_ttl: Duration,
    /// Longest break-glass window.
    pub break_glass_max_ttl: Duration,
    /// Requester and approver (or reviewer) must be different principals.
    pub require_distinct_approver: bool,
}

impl Policy {
    /// Whether `p` holds `role` (admins hold every role).
    pub(crate) fn allows(&self, p: &Principal, role: Role) -> bool {
        let any = |rules: &[PrincipalRule]| rules.iter().any(|r| r.matches(p));
        any(&self.admins)
            || match role {
                Role::Admin => false,
                Role::Requester => any(&self.requesters),
                Role::Approver => any(&self.approvers),
                Role::Participant => any(&self.requesters) || any(&self.approvers),
            }
    }

    /// The rules of `role`, for error messages.
    pub(crate) fn describe(&self, role: Role) -> String {
        let list =
            |rules: &[PrincipalRule]| rules.iter().map(ToString::to_string).collect::<Vec<_>>();
        let mut names = list(&self.admins);
        match role {
            Role::Admin => {}
            Role::Requester => names.extend(list(&self.requesters)),
            Role::Approver => names.extend(list(&self.approvers)),
            Role::Participant => {
                names.extend(list(&self.requesters));
                names.extend(list(&self.approvers));
            }
        }
        names.join(", ")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(uid: u32, user: Option<&str>) -> Principal {
        Principal {
            uid,
            gid: 100,
            user: user.map(str::to_owned),
        }
    }

    #[test]
    fn rules_parse_and_match() {
        assert_eq!(
            "uid:7".parse::<PrincipalRule>().unwrap(),
            PrincipalRule::Uid(7)
        );
        assert!(
            "uid:x"
                .parse::<PrincipalRule>()
                .unwrap_err()
                .contains("expected uid:N")
        );
        assert!("root".parse::<PrincipalRule>().is_err());
        assert!("user:".parse::<PrincipalRule>().is_err());
        assert!(PrincipalRule::User("alice".into()).matches(&p(5, Some("alice"))));
        assert!(!PrincipalRule::User("alice".into()).matches(&p(5, None)));
        assert!(PrincipalRule::Gid(100).matches(&p(5, None)));
        assert!(PrincipalRule::Anyone.matches(&p(5, None)));
    }

    #[test]
    fn admins_hold_every_role_and_roles_are_separate() {
        let policy = Policy {
            admins: vec![PrincipalRule::Uid(0)],
            requesters: vec![PrincipalRule::Uid(1)],
            approvers: vec![PrincipalRule::Uid(2)],
            max_task_ttl: Duration::from_secs(60),
            break_glass_max_ttl: Duration::from_secs(30),
            require_distinct_approver: true,
        };
        assert!(policy.allows(&p(0, None), Role::Approver));
        assert!(policy.allows(&p(1, None), Role::Requester));
        assert!(!policy.allows(&p(1, None), Role::Approver));
        assert!(!policy.allows(&p(2, None), Role::Admin));
        assert!(policy.describe(Role::Approver).contains("uid:2"));
        assert!(
            policy.allows(&p(2, None), Role::Participant),
            "approvers read tasks"
        );
        assert!(policy.allows(&p(1, None), Role::Participant));
        assert!(!policy.allows(&p(9, None), Role::Participant));
    }
}
