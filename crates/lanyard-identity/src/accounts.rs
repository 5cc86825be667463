//! The rules for reading `/etc/passwd` and `/etc/group` text, shared by the
//! agent (names for `unix:user` / `unix:group` selectors) and the server
//! (operator names for the audit record, group rules of the task policy).
//!
//! Only text is parsed here; callers read the files. Comments, blank
//! lines, NIS `+`/`-` lines, entries with an empty name and lines whose ID
//! is not a number are skipped, so a damaged line never names anyone.
//! NSS sources (LDAP, sssd) are not consulted by design: the uid and gid are
//! what the kernel vouches for, names only what this host's files call them.

/// One entry of `/etc/group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry<'a> {
    /// The group's name.
    pub name: &'a str,
    /// Its gid.
    pub gid: u32,
    /// Supplementary members (users whose primary group this is are not
    /// listed).
    pub members: Vec<&'a str>,
}

/// The `name`, the id (third field) and the remaining fields of every
/// well-formed line of `/etc/passwd` or `/etc/group` text.
fn entries(text: &str) -> impl Iterator<Item = (&str, u32, std::str::Split<'_, char>)> + '_ {
    text.lines().filter_map(|line| {
        if line.starts_with(['#', '+', '-']) {
            return None;
        }
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let id: u32 = fields.next()?.trim().parse().ok()?;
        (!name.is_empty()).then_some((name, id, fields))
    })
}

/// The name of the first entry with ID `id` (uid in `/etc/passwd`, gid in
/// `/etc/group`).
pub fn name_for_id(text: &str, id: u32) -> Option<&str> {
    entries(text).find_map(|(name, entry_id, _)| (entry_id == id).then_some(name))
}

/// Every group of `/etc/group` text.
pub fn groups(text: &str) -> impl Iterator<Item = GroupEntry<'_>> + '_ {
    entries(text).map(|(name, gid, mut rest)| GroupEntry {
        name,
        gid,
        members: rest
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
# local users
root:x:0:0:root:/root:/bin/bash

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
+nisuser:x:1000:1000::/home/nis:/bin/sh
broken line without fields
bad:x:notanumber:0::/:/bin/false
payments:x:1000:1000:Payments service,,,:/srv/payments:/usr/sbin/nologin
shadowed:x:1000:1000::/:/bin/false
:x:1001:1001::/:/bin/false
";

    const GROUP: &str = "\
root:x:0:
adm:x:4:syslog,payments
-nisgroup:x:5:
payments:x:1000:
ops:x:2000:alice, bob
";

    #[test]
    fn names_by_id_skip_what_is_not_an_entry() {
        assert_eq!(name_for_id(PASSWD, 0), Some("root"));
        assert_eq!(name_for_id(PASSWD, 1), Some("daemon"));
        // The NIS line is skipped; the first real entry wins.
        assert_eq!(name_for_id(PASSWD, 1000), Some("payments"));
        // An entry with an empty name gives no name.
        assert_eq!(name_for_id(PASSWD, 1001), None);
        assert_eq!(name_for_id(PASSWD, 4242), None);
        assert_eq!(name_for_id(GROUP, 4), Some("adm"));
        assert_eq!(name_for_id(GROUP, 5), None);
    }

    #[test]
    fn groups_list_their_members() {
        let all: Vec<_> = groups(GROUP).collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all[1].members, ["syslog", "payments"]);
        assert!(all[2].members.is_empty());
        assert_eq!(all[3].members, ["alice", "bob"]);
    }
}
