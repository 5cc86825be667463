//! The seal file: a witness, outside sled's log, of the last write the store
//! acknowledged.
//!
//! sled recovers its log up to the first damaged message and silently drops
//! everything after it, so a damaged or truncated data file opens as a store
//! that looks valid but has lost its latest writes (revocations among them).
//! Every write therefore bumps a generation counter inside sled, flushes, and
//! then records that generation here. On open, a data file whose generation
//! is behind the seal has lost acknowledged writes and is refused.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// The seal's file name inside the store directory.
pub(crate) const SEAL_FILE: &str = "lanyard.seal";

const PREFIX: &str = "lanyard-seal ";
/// `PREFIX`, 16 hex digits, a newline: small enough to be written in one
/// sector, so a crash leaves either the old or the new value.
const LEN: usize = PREFIX.len() + 16 + 1;

/// The open seal file and the generation it holds.
#[derive(Debug)]
pub(crate) struct Seal {
    path: PathBuf,
    file: File,
    sealed: u64,
}

impl Seal {
    /// Creates the seal of a new store, holding generation `generation`.
    pub(crate) fn create(dir: &Path, generation: u64) -> Result<Self, StoreError> {
        let path = dir.join(SEAL_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error(&path, "cannot create", e))?;
        let mut seal = Self {
            path,
            file,
            sealed: 0,
        };
        seal.write(generation)?;
        // The new file's name must be durable too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, "cannot sync the directory holding", e))?;
        Ok(seal)
    }

    /// Opens the seal of an existing store and reads its generation.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(SEAL_FILE);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StoreError::NotAStore {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "the seal file `{SEAL_FILE}` is missing; the store was damaged, \
                         copied without it, or its creation was interrupted"
                    ),
                });
            }
            Err(e) => return Err(io_error(&path, "cannot open", e)),
        };
        let mut buf = vec![0; LEN + 1];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|e| io_error(&path, "cannot read", e))?;
        let sealed = parse(&buf[..n]).ok_or_else(|| StoreError::Corrupt {
            what: format!(
                "seal file {} does not hold `{PREFIX}<16 hex digits>`",
                path.display()
            ),
        })?;
        Ok(Self { path, file, sealed })
    }

    /// The generation the seal holds.
    pub(crate) fn sealed(&self) -> u64 {
        self.sealed
    }

    /// Records `generation` durably, unless the seal already holds a later
    /// one (a concurrent write's flush then covered this one too).
    pub(crate) fn advance(&mut self, generation: u64) -> Result<(), StoreError> {
        if generation <= self.sealed {
            return Ok(());
        }
        self.write(generation)
    }

    fn write(&mut self, generation: u64) -> Result<(), StoreError> {
        let text = format!("{PREFIX}{generation:016x}\n");
        self.file
            .write_all_at(text.as_bytes(), 0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| {
                StoreError::Backend(Box::new(std::io::Error::new(
                    e.kind(),
                    format!("cannot write the seal file {}: {e}", self.path.display()),
                )))
            })?;
        self.sealed = generation;
        Ok(())
    }
}

fn parse(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != LEN {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let digits = text.strip_prefix(PREFIX)?.strip_suffix('\n')?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        reason: format!("{what} the seal file: {e}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_advance() {
        let dir = tempfile::tempdir().unwrap();
        let mut seal = Seal::create(dir.path(), 0).unwrap();
        seal.advance(41).unwrap();
        seal.advance(7).unwrap();
        assert_eq!(seal.sealed(), 41, "a seal never moves backwards");
        drop(seal);
        assert_eq!(Seal::open(dir.path()).unwrap().sealed(), 41);
        assert!(matches!(
            Seal::create(dir.path(), 0),
            Err(StoreError::Open { .. })
        ));
    }

    #[test]
    fn rejects_malformed_seals() {
        for bad in [
            &b""[..],
            b"lanyard-seal 0000000000000001",
            b"lanyard-seal 000000000000000g\n",
            b"lanyard-seal 0000000000000001\nextra",
            b"something else entirely!!!!!!\n",
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(SEAL_FILE), bad).unwrap();
            assert!(
                matches!(Seal::open(dir.path()), Err(StoreError::Corrupt { .. })),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn missing_seal_is_not_a_store() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Seal::open(dir.path()),
            Err(StoreError::NotAStore { .. })
        ));
    }
}
