//! User and group names from `/etc/passwd` and `/etc/group`.
//!
//! Names are resolved in the agent's own view of the filesystem, not the
//! workload's (a container may have its own `/etc/passwd`): the uid and gid
//! are what the kernel vouches for, the names only what this host calls them.
//! NSS sources (LDAP, sssd) are not consulted; a uid without a local entry
//! simply gets no `unix:user` selector. The lines are read by the rules of
//! `lanyard_identity::accounts`, which the server shares.

use std::{fs, io};

use lanyard_identity::accounts;

use super::hash_cache::BinaryState;

/// Where the host's users are listed.
pub(crate) const PASSWD: &str = "/etc/passwd";
/// Where the host's groups are listed.
pub(crate) const GROUP: &str = "/etc/group";

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
        Ok(db) => Ok(accounts::name_for_id(&db, id).map(str::to_owned)),
        // A minimal image may have no /etc/group: no names, not an error.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn host_root_resolves() {
        // Every Linux host the agent runs on names uid 0.
        assert_eq!(user_name(0).unwrap().as_deref(), Some("root"));
    }
}
