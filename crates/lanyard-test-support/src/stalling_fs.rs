//! A real FUSE filesystem holding one executable file whose `stat` can be
//! made to hang, as on a stalled network or FUSE mount: the slow binary of
//! issue 11, item 2. Mounting needs root (CI runs as root) and `/dev/fuse`.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, INodeNo, LockOwner, OpenFlags, ReplyAttr,
    ReplyData, ReplyEntry, Request,
};

/// The file's name in the mount.
const NAME: &str = "tool";
const FILE: INodeNo = INodeNo(2);
/// Attributes are never cached by the kernel: every `stat` asks us.
const NO_CACHE: Duration = Duration::ZERO;
/// However long a test forgets to release it, a stat answers after this.
const LONGEST_STALL: Duration = Duration::from_secs(120);

/// Whether `stat` of the file hangs.
#[derive(Default)]
struct Switch {
    stalled: Mutex<bool>,
    changed: Condvar,
}

struct OneFile {
    content: Vec<u8>,
    switch: Arc<Switch>,
}

impl OneFile {
    fn attr(&self, ino: INodeNo) -> FileAttr {
        let (kind, perm, size) = if ino == FILE {
            (FileType::RegularFile, 0o755, self.content.len() as u64)
        } else {
            (FileType::Directory, 0o755, 0)
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }
}

impl Filesystem for OneFile {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == NAME {
            reply.entry(&NO_CACHE, &self.attr(FILE), fuser::Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == FILE {
            let deadline = SystemTime::now() + LONGEST_STALL;
            let mut stalled = self.switch.stalled.lock().unwrap();
            while *stalled && SystemTime::now() < deadline {
                stalled = self
                    .switch
                    .changed
                    .wait_timeout(stalled, Duration::from_secs(1))
                    .unwrap()
                    .0;
            }
        }
        reply.attr(&NO_CACHE, &self.attr(ino));
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != FILE {
            return reply.error(Errno::EISDIR);
        }
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.content.len());
        let end = start.saturating_add(size as usize).min(self.content.len());
        reply.data(&self.content[start..end]);
    }
}

/// A mounted `OneFile`; unmounted on drop (after releasing any stall).
pub struct StallingFs {
    switch: Arc<Switch>,
    session: Option<fuser::BackgroundSession>,
    file: PathBuf,
}

impl StallingFs {
    /// Mounts a filesystem at `mountpoint` holding a copy of `binary`.
    pub fn mount(mountpoint: &Path, binary: &Path) -> Self {
        let switch = Arc::new(Switch::default());
        let fs = OneFile {
            content: std::fs::read(binary).unwrap(),
            switch: Arc::clone(&switch),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("lanyard-stalling".into()),
            fuser::MountOption::RO,
        ];
        // Reads go on while one thread hangs in a stat.
        config.n_threads = Some(4);
        let session = fuser::spawn_mount(fs, mountpoint, &config)
            .expect("mount a FUSE filesystem (needs root and /dev/fuse)");
        Self {
            switch,
            session: Some(session),
            file: mountpoint.join(NAME),
        }
    }

    /// The executable file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// From now on, a `stat` of the file hangs until [`release`](Self::release).
    pub fn stall(&self) {
        *self.switch.stalled.lock().unwrap() = true;
    }

    /// Every hanging `stat` answers.
    pub fn release(&self) {
        *self.switch.stalled.lock().unwrap() = false;
        self.switch.changed.notify_all();
    }
}

impl Drop for StallingFs {
    fn drop(&mut self) {
        self.release();
        if let Some(session) = self.session.take()
            && session.umount_and_join().is_err()
            && let Some(mountpoint) = self.file.parent()
        {
            // Busy (a test failed with the binary still running): detach it.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(mountpoint)
                .status();
        }
    }
}
