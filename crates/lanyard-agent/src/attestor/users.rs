//! User and group names from `/etc/passwd` and `/etc/group`.
//!
//! Names are resolved in the agent's own view of the filesystem, not the
//! workload's (a container may have its own `/etc/passwd`): the uid and gid
//! are what the kernel vouches for, the names only what this host calls them.
//! NSS sources (LDAP, sssd) are not consulted; a uid without a local entry
//! simply gets no `unix:user` selector.

use std::{fs, io};

use super::hash_cache::BinaryState;

/// Where the host's users are listed.
pub(crate) const PASSWD: &str = "/etc/passwd";
/// Where the host's groups are listed.
pub(crate) const GROUP: &str = "/etc/group";

/// The name of the first entry whose third field (`name:password:id:...`) is
/// `id`, in `/etc/passwd` or `/etc/group` text. Comments, blank lines, NIS
/// `+`/`-` lines and malformed lines are skipped.
pub(crate) fn name_for_id(db: &str, id: u32) -> Option<&str> {
    db.lines().find_map(|line| {
        if line.starts_with(['#', '+', '-']) {
            return None;
        }
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let entry_id: u32 = fields.next()?.trim().parse().ok()?;
        (entry_id == id && !name.is_empty()).then_some(name)
    })
}

/// The user name of `uid` in `/etc/passwd`; `None` when it has none (or the
/// file is missing).
pub(crate) fn user_name(uid: u32) -> io::Result<Option<String>> {
    lookup(PASSWD, uid)
}

/// The group name of `gid` in `/etc/group`; `None` when it has none (or the
/// file is missing).
pub(crate) fn group_name(gid: u32) -> io::Result<Option<String>> {
    lookup(GROUP, gid)
}

/// The state (identity, size, mtime, ctime) of `/etc/passwd` and
/// `/etc/group`, `None` for one that is missing or unreadable: names read
/// after this are still current while it is unchanged.
pub(crate) fn db_state() -> (Option<BinaryState>, Option<BinaryState>) {
    let state = |path| fs::metadata(path).ok().map(|m| BinaryState::of(&m));
    (state(PASSWD), state(GROUP))
}

fn lookup(path: &str, id: u32) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(db) => Ok(name_for_id(&db, id).map(str::to_owned)),
        // A minimal image may have no /etc/group: no names, not an error.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const PASSWD_FIXTURE: &str = "\
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

    const GROUP_FIXTURE: &str = "\
root:x:0:
adm:x:4:syslog,payments
payments:x:1000:
";

    #[test]
    fn passwd_lookup() {
        assert_eq!(name_for_id(PASSWD_FIXTURE, 0), Some("root"));
        assert_eq!(name_for_id(PASSWD_FIXTURE, 1), Some("daemon"));
        // The NIS line is skipped; the first real entry wins.
        assert_eq!(name_for_id(PASSWD_FIXTURE, 1000), Some("payments"));
        // An entry with an empty name gives no name.
        assert_eq!(name_for_id(PASSWD_FIXTURE, 1001), None);
        assert_eq!(name_for_id(PASSWD_FIXTURE, 4242), None);
    }

    #[test]
    fn group_lookup() {
        assert_eq!(name_for_id(GROUP_FIXTURE, 0), Some("root"));
        assert_eq!(name_for_id(GROUP_FIXTURE, 4), Some("adm"));
        assert_eq!(name_for_id(GROUP_FIXTURE, 1000), Some("payments"));
        assert_eq!(name_for_id(GROUP_FIXTURE, 27), None);
        assert_eq!(name_for_id("", 0), None);
    }

    #[test]
    fn host_root_resolves() {
        // Every Linux host the agent runs on names uid 0.
        assert_eq!(user_name(0).unwrap().as_deref(), Some("root"));
    }
}
