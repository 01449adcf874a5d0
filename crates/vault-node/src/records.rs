//! Per-user key records, `<root>/.vault/records/<user>.cbor`.
//!
//! A record holds the Argon2id salt and costs, the wrapped master key and
//! (once the account is upgraded) the Ed25519 login key. Writes are
//! compare-and-swap on the generation, serialised per user, and atomic
//! (temp file, `sync_all`, rename, fsync the folder).

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use wire::UserRecord;

use crate::fsutil::write_atomic;

/// Largest record file read back (records are far smaller).
const MAX_RECORD_FILE: u64 = wire::MAX_FRAME_BODY_LEN as u64;

/// Failures of the record store.
#[derive(Debug, Error)]
pub enum RecordError {
    /// Reading or writing the record failed.
    #[error("record i/o failed: {0}")]
    Io(#[from] io::Error),
    /// The stored record does not decode or is out of bounds.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The stored generation is not the expected one, or the new one does
    /// not increase.
    #[error("record generation conflict: stored {stored}, expected {expected}, new {new}")]
    Conflict {
        /// Generation on disk (0: no record).
        stored: u64,
        /// Generation the client expected.
        expected: u64,
        /// Generation of the new record.
        new: u64,
    },
    /// A legacy (MD5) login may not replace a record that has a login key.
    #[error("the account is upgraded: log in with the signature to change its record")]
    Upgraded,
}

/// The records folder of a node.
#[derive(Debug)]
pub struct RecordStore {
    dir: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn bad_user() -> RecordError {
    RecordError::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        "invalid user name",
    ))
}

impl RecordStore {
    /// Records under `dir` (`<root>/.vault/records`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RecordStore {
            dir: dir.into(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, user: &str) -> Result<PathBuf, RecordError> {
        if wire::normalize_user(user).as_deref() != Some(user) {
            return Err(bad_user());
        }
        Ok(self.dir.join(format!("{user}.cbor")))
    }

    fn lock_for(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(user.to_string()).or_default().clone()
    }

    /// The user's record, `None` if there is none yet.
    pub async fn get(&self, user: &str) -> Result<Option<UserRecord>, RecordError> {
        let path = self.path(user)?;
        tokio::task::spawn_blocking(move || read_record(&path))
            .await
            .map_err(|e| RecordError::Io(io::Error::other(e.to_string())))?
    }

    /// Compare-and-swap: stores `record` if the stored generation (0 when
    /// there is none) equals `expect_generation` and `record.generation` is
    /// larger. With `legacy_login`, refuses to replace a record that has a
    /// login key (the MD5 proof ended with the upgrade).
    pub async fn put(
        &self,
        user: &str,
        expect_generation: u64,
        record: &UserRecord,
        legacy_login: bool,
    ) -> Result<(), RecordError> {
        let path = self.path(user)?;
        let lock = self.lock_for(user);
        let _held = lock.lock().await;
        let current = self.get(user).await?;
        if legacy_login && current.as_ref().is_some_and(|r| r.login_key.is_some()) {
            return Err(RecordError::Upgraded);
        }
        let stored = current.map_or(0, |r| r.generation);
        if stored != expect_generation || record.generation <= expect_generation {
            return Err(RecordError::Conflict {
                stored,
                expected: expect_generation,
                new: record.generation,
            });
        }
        let mut bytes = Vec::new();
        ciborium::into_writer(record, &mut bytes)
            .map_err(|e| RecordError::Io(io::Error::other(e.to_string())))?;
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes, true))
            .await
            .map_err(|e| RecordError::Io(io::Error::other(e.to_string())))??;
        Ok(())
    }
}

fn read_record(path: &std::path::Path) -> Result<Option<UserRecord>, RecordError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_RECORD_FILE {
        return Err(RecordError::Corrupt("file too large".into()));
    }
    let record: UserRecord =
        ciborium::from_reader(bytes.as_slice()).map_err(|e| RecordError::Corrupt(e.to_string()))?;
    record
        .validate()
        .map_err(|e| RecordError::Corrupt(e.to_string()))?;
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::KdfParams;

    fn rec(generation: u64, key: bool) -> UserRecord {
        UserRecord {
            format: wire::STORAGE_FORMAT,
            generation,
            kdf: KdfParams {
                salt: vec![1; 16],
                m_kib: 8192,
                t: 1,
                p: 1,
            },
            login_key: key.then(|| vec![9; 32]),
            wrapped_key: vec![5; 72],
        }
    }

    #[tokio::test]
    async fn compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path());
        assert_eq!(store.get("alice").await.unwrap(), None);
        assert!(matches!(
            store.put("alice", 1, &rec(2, false), false).await,
            Err(RecordError::Conflict { stored: 0, .. })
        ));
        assert!(matches!(
            store.put("alice", 0, &rec(0, false), false).await,
            Err(RecordError::Conflict { .. })
        ));
        store.put("alice", 0, &rec(1, false), true).await.unwrap();
        store.put("alice", 1, &rec(2, true), true).await.unwrap();
        assert_eq!(store.get("alice").await.unwrap(), Some(rec(2, true)));
        assert!(matches!(
            store.put("alice", 2, &rec(3, true), true).await,
            Err(RecordError::Upgraded)
        ));
        store.put("alice", 2, &rec(3, true), false).await.unwrap();
        assert!(store.get("Alice").await.is_err());
    }

    #[tokio::test]
    async fn corrupt_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bob.cbor"), b"\xff\x00garbage").unwrap();
        let store = RecordStore::new(dir.path());
        assert!(matches!(
            store.get("bob").await,
            Err(RecordError::Corrupt(_))
        ));
    }
}
