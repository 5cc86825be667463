//! Unix account lookups in /etc/passwd and /etc/group: user names for the
//! audit record, group rules for the policy, the admin socket's group.
//! Names are for matching and the record only; the uid decides who calls.

use lanyard_identity::accounts;

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// A group as /etc/group lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    pub name: String,
    pub gid: u32,
    /// Supplementary members (users whose primary group this is are not listed).
    pub members: Vec<String>,
}

/// The user name of `uid`, if /etc/passwd has one.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    accounts::name_for_id(&std::fs::read_to_string(PASSWD).ok()?, uid).map(str::to_owned)
}

/// The group named `name`, or with gid `name` when it is a number.
pub(crate) fn group(name: &str) -> Option<Group> {
    let text = std::fs::read_to_string(GROUP).ok();
    let found = text.as_deref().and_then(|t| {
        accounts::groups(t).find(|g| g.name == name).map(|g| Group {
            name: g.name.to_owned(),
            gid: g.gid,
            members: g.members.iter().map(|m| (*m).to_owned()).collect(),
        })
    });
    found.or_else(|| {
        name.parse().ok().map(|gid| Group {
            name: name.to_owned(),
            gid,
            members: Vec::new(),
        })
    })
}

/// The names of the groups `gid` is or `user` belongs to, per `file` (in
/// /etc/group format): what the task policy sees as an operator's groups.
/// An unreadable file gives no groups, so group rules fail closed.
pub(crate) fn groups_of(file: &std::path::Path, user: Option<&str>, gid: u32) -> Vec<String> {
    match std::fs::read_to_string(file) {
        Ok(text) => member_of(&text, user, gid),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot read the groups file; the policy sees no groups");
            Vec::new()
        }
    }
}

fn member_of(text: &str, user: Option<&str>, gid: u32) -> Vec<String> {
    accounts::groups(text)
        .filter(|g| g.gid == gid || user.is_some_and(|u| g.members.contains(&u)))
        .map(|g| g.name.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP_TEXT: &str = "root:x:0:\nops:x:2000:alice,bob\nbad:x:notanumber:\n";

    #[test]
    fn an_operator_is_in_its_primary_and_listed_groups() {
        assert_eq!(member_of(GROUP_TEXT, Some("bob"), 0), ["root", "ops"]);
        assert_eq!(member_of(GROUP_TEXT, None, 2000), ["ops"]);
        assert!(member_of(GROUP_TEXT, Some("eve"), 7).is_empty());
    }

    #[test]
    fn a_numeric_group_is_a_gid() {
        assert_eq!(group("4242").map(|g| g.gid), Some(4242));
    }
}
