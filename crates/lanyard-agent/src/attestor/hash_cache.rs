//! A bounded cache of binary digests, so the agent does not re-read and
//! re-hash a caller's binary on every Workload API call.
//!
//! The key is the file's identity and its modification state: device,
//! inode, size, mtime and ctime. A file's owner can set its mtime back, but
//! any write or metadata change moves its ctime, which nobody can set. A
//! digest is cached only if that state is the same after hashing as before,
//! so a binary modified while it was being read is never cached.

use std::{
    collections::HashMap,
    fs::Metadata,
    os::unix::fs::MetadataExt,
    sync::{Mutex, PoisonError},
};

/// What identifies a binary's exact content for the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BinaryState {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl BinaryState {
    pub(crate) fn of(m: &Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The state of the file at `path` as the kernel has it cached
    /// (`AT_STATX_DONT_SYNC`): a network or FUSE filesystem is not asked
    /// to refresh it, so the call never waits on a server or a daemon.
    /// `None` if it cannot be read.
    pub(crate) fn cached(path: &std::path::Path) -> Option<Self> {
        use rustix::fs::{AtFlags, CWD, StatxFlags, makedev, statx};
        let want = StatxFlags::INO | StatxFlags::SIZE | StatxFlags::MTIME | StatxFlags::CTIME;
        let s = statx(CWD, path, AtFlags::STATX_DONT_SYNC, want).ok()?;
        if !StatxFlags::from_bits_retain(s.stx_mask).contains(want) {
            return None;
        }
        Some(Self {
            dev: makedev(s.stx_dev_major, s.stx_dev_minor),
            ino: s.stx_ino,
            size: s.stx_size,
            mtime: (s.stx_mtime.tv_sec, i64::from(s.stx_mtime.tv_nsec)),
            ctime: (s.stx_ctime.tv_sec, i64::from(s.stx_ctime.tv_nsec)),
        })
    }
}

/// Digests by binary state; cleared when it reaches its capacity.
#[derive(Debug)]
pub struct HashCache {
    digests: Mutex<HashMap<BinaryState, Option<String>>>,
    capacity: usize,
}

impl HashCache {
    /// A cache holding at most `capacity` binaries.
    pub fn new(capacity: usize) -> Self {
        Self {
            digests: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn get(&self, state: &BinaryState) -> Option<Option<String>> {
        self.digests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(state)
            .cloned()
    }

    pub(crate) fn put(&self, state: BinaryState, digest: Option<String>) {
        let mut digests = self.digests.lock().unwrap_or_else(PoisonError::into_inner);
        if digests.len() >= self.capacity {
            digests.clear();
        }
        digests.insert(state, digest);
    }
}

impl Default for HashCache {
    fn default() -> Self {
        Self::new(4096)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn any_write_changes_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("binary");
        std::fs::write(&path, b"v1").unwrap();
        let before = BinaryState::of(&std::fs::metadata(&path).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Same size, and the owner puts the mtime back: ctime still moves.
        std::fs::write(&path, b"v2").unwrap();
        let mtime = std::time::UNIX_EPOCH
            + std::time::Duration::new(before.mtime.0 as u64, before.mtime.1 as u32);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let after = BinaryState::of(&std::fs::metadata(&path).unwrap());
        assert_eq!(after.size, before.size);
        assert_eq!(after.mtime, before.mtime, "mtime restored by the owner");
        assert_ne!(
            after, before,
            "ctime still says the content may have changed"
        );
    }

    #[test]
    fn the_cached_state_is_the_stat_state() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"content").unwrap();
        let stat = BinaryState::of(&std::fs::metadata(f.path()).unwrap());
        assert_eq!(BinaryState::cached(f.path()), Some(stat));
        // Through a magic link too, as the reuse check reads a binary.
        let exe = std::path::Path::new("/proc/self/exe");
        let ours = BinaryState::of(&std::fs::metadata(exe).unwrap());
        assert_eq!(BinaryState::cached(exe), Some(ours));
        assert_eq!(BinaryState::cached(&f.path().join("none")), None);
    }

    #[test]
    fn bounded() {
        let cache = HashCache::new(2);
        let f = tempfile::NamedTempFile::new().unwrap();
        let s = BinaryState::of(&f.as_file().metadata().unwrap());
        let other = BinaryState {
            ino: s.ino + 1,
            ..s
        };
        let third = BinaryState {
            ino: s.ino + 2,
            ..s
        };
        cache.put(s, Some("a".into()));
        cache.put(other, None);
        assert_eq!(cache.get(&s), Some(Some("a".into())));
        cache.put(third, Some("c".into()));
        assert_eq!(cache.get(&s), None, "cleared at capacity");
        assert_eq!(cache.get(&third), Some(Some("c".into())));
    }
}
