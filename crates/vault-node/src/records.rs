//! Per-user key records, `<root>/.vault/records/<user>.cbor`.
//!
//! A record holds the Argon2id salt and costs, the wrapped master key and
//! (once the account is upgraded) the Ed25519 login key. Writes are
//! compare-and-swap on the generation (and, when the client names it, on
//! the stored record's [`wire::record_hash`]), serialised per user, and
//! atomic (temp file, `sync_all`, rename, fsync the folder). Only a write
//! naming the stored record's hash may replace it with a record of the
//! same generation: that is how clients that created one vault at the same
//! moment converge on one record.
//!
//! Beside the record the file keeps the login key it replaced, so a client
//! that has not caught up with a rotation is recognised and not counted as
//! a password guesser. Every change of a user's login key moves the user's
//! credential *epoch* on: connections logged in under an older epoch must
//! log in again.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use wire::UserRecord;

use crate::fsutil::write_atomic;

/// Largest record file read back (records are far smaller).
const MAX_RECORD_FILE: u64 = wire::MAX_FRAME_BODY_LEN as u64;

/// The record file: the client's record plus what only the node uses.
#[derive(Serialize, Deserialize)]
struct RecordFile {
    record: UserRecord,
    #[serde(with = "serde_bytes")]
    previous_login_key: Option<Vec<u8>>,
}

/// A stored record and the login key it replaced, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The record as the client wrote it.
    pub record: UserRecord,
    /// The login key the current one replaced (a stale client's key).
    pub previous_login_key: Option<[u8; wire::LOGIN_KEY_LEN]>,
}

/// Failures of the record store.
#[derive(Debug, Error)]
pub enum RecordError {
    /// Reading or writing the record failed.
    #[error("record i/o failed: {0}")]
    Io(#[from] io::Error),
    /// The stored record does not decode or is out of bounds.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The stored generation is not the expected one, the new one does not
    /// increase (or, with an expected record hash, goes back), or the
    /// stored record is not the one the client named.
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
    /// A record without a login key may not replace one that has one: an
    /// upgraded account never goes back to the legacy login.
    #[error("an upgraded account cannot go back to the legacy login")]
    Downgrade,
}

/// The records folder of a node.
#[derive(Debug)]
pub struct RecordStore {
    dir: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Credential epoch per user (0 until the login key changes).
    epochs: Mutex<HashMap<String, u64>>,
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
            epochs: Mutex::new(HashMap::new()),
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

    /// The user's credential epoch: changes whenever the login key does.
    pub fn epoch(&self, user: &str) -> u64 {
        let epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        epochs.get(user).copied().unwrap_or(0)
    }

    /// The user's record, `None` if there is none yet.
    pub async fn get(&self, user: &str) -> Result<Option<UserRecord>, RecordError> {
        Ok(self.get_stored(user).await?.map(|s| s.record))
    }

    /// The user's record and the login key it replaced.
    pub async fn get_stored(&self, user: &str) -> Result<Option<Stored>, RecordError> {
        let path = self.path(user)?;
        tokio::task::spawn_blocking(move || read_record(&path))
            .await
            .map_err(|e| RecordError::Io(io::Error::other(e.to_string())))?
    }

    /// Compare-and-swap: stores `record` if the stored generation (0 when
    /// there is none) equals `expect_generation` and `record.generation` is
    /// larger. With `legacy_login`, refuses to replace a record that has a
    /// login key (the MD5 proof ended with the upgrade); nobody may remove
    /// a login key. Returns the user's credential epoch after the write.
    pub async fn put(
        &self,
        user: &str,
        expect_generation: u64,
        record: &UserRecord,
        legacy_login: bool,
    ) -> Result<u64, RecordError> {
        self.put_if(user, expect_generation, None, record, legacy_login, None)
            .await
    }

    /// [`RecordStore::put`], and with `expect_record` also only if a record
    /// is stored and its [`wire::record_hash`] is `expect_record`; then
    /// `record.generation` may equal the stored one (a same-generation
    /// replacement), never be smaller. Every other rule of
    /// [`RecordStore::put`] holds.
    ///
    /// `file_key` is the login key the node checks while the stored record
    /// has none (the users-file entry's, for an account made upgraded by
    /// `vault-node user add`). The epoch moves on only when the login key
    /// the node checks really changes: a first record carrying the very
    /// key the users file already checks logs nobody out (clients creating
    /// one upgraded vault at once would otherwise log each other out).
    pub async fn put_if(
        &self,
        user: &str,
        expect_generation: u64,
        expect_record: Option<&[u8]>,
        record: &UserRecord,
        legacy_login: bool,
        file_key: Option<&[u8]>,
    ) -> Result<u64, RecordError> {
        let path = self.path(user)?;
        let lock = self.lock_for(user);
        let _held = lock.lock().await;
        let current = self.get_stored(user).await?;
        let current_key = current.as_ref().and_then(|c| c.record.login_key.clone());
        if legacy_login && current_key.is_some() {
            return Err(RecordError::Upgraded);
        }
        if current_key.is_some() && record.login_key.is_none() {
            return Err(RecordError::Downgrade);
        }
        let stored = current.as_ref().map_or(0, |c| c.record.generation);
        let allowed = match expect_record {
            None => record.generation > expect_generation,
            Some(want) => {
                let held = current.as_ref().map(|c| wire::record_hash(&c.record));
                held.is_some_and(|h| h.as_slice() == want) && record.generation >= expect_generation
            }
        };
        if stored != expect_generation || !allowed {
            return Err(RecordError::Conflict {
                stored,
                expected: expect_generation,
                new: record.generation,
            });
        }
        let checked = current_key.as_deref().or(file_key);
        let key_changed = checked != record.login_key.as_deref();
        let previous_login_key = if current_key != record.login_key {
            current_key
        } else {
            current
                .and_then(|c| c.previous_login_key)
                .map(|k| k.to_vec())
        };
        let file = RecordFile {
            record: record.clone(),
            previous_login_key,
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&file, &mut bytes)
            .map_err(|e| RecordError::Io(io::Error::other(e.to_string())))?;
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes, true))
            .await
            .map_err(|e| RecordError::Io(io::Error::other(e.to_string())))??;
        let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = epochs.entry(user.to_string()).or_insert(0);
        if key_changed {
            *epoch += 1;
        }
        Ok(*epoch)
    }
}

fn read_record(path: &std::path::Path) -> Result<Option<Stored>, RecordError> {
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
    let corrupt = |e: &dyn std::fmt::Display| RecordError::Corrupt(e.to_string());
    // Vault 0.1 wrote the bare record; it is still read (as format 1, which
    // clients refuse) so an upgraded account keeps its login key.
    let (record, previous) = match ciborium::from_reader::<RecordFile, _>(bytes.as_slice()) {
        Ok(f) => (f.record, f.previous_login_key),
        Err(_) => (
            ciborium::from_reader::<UserRecord, _>(bytes.as_slice()).map_err(|e| corrupt(&e))?,
            None,
        ),
    };
    record.validate().map_err(|e| corrupt(&e))?;
    let previous_login_key = match previous {
        Some(k) => Some(
            <[u8; wire::LOGIN_KEY_LEN]>::try_from(k.as_slice())
                .map_err(|_| corrupt(&"previous login key length"))?,
        ),
        None => None,
    };
    Ok(Some(Stored {
        record,
        previous_login_key,
    }))
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
        assert_eq!(
            store.put("alice", 0, &rec(1, false), true).await.unwrap(),
            0
        );
        // The login key appears: the epoch moves on.
        assert_eq!(store.put("alice", 1, &rec(2, true), true).await.unwrap(), 1);
        assert_eq!(store.get("alice").await.unwrap(), Some(rec(2, true)));
        assert_eq!(store.epoch("alice"), 1);
        assert!(matches!(
            store.put("alice", 2, &rec(3, true), true).await,
            Err(RecordError::Upgraded)
        ));
        // Same login key: same epoch.
        assert_eq!(
            store.put("alice", 2, &rec(3, true), false).await.unwrap(),
            1
        );
        // Nobody takes the login key away.
        assert!(matches!(
            store.put("alice", 3, &rec(4, false), false).await,
            Err(RecordError::Downgrade)
        ));
        assert!(store.get("Alice").await.is_err());
        assert_eq!(store.epoch("bob"), 0);
    }

    #[tokio::test]
    async fn same_generation_replacement_needs_the_stored_records_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path());
        let ours = rec(1, false);
        let mut theirs = rec(1, false);
        theirs.wrapped_key = vec![6; 72];
        // Nothing stored: no hash can match.
        let h = wire::record_hash(&ours);
        assert!(matches!(
            store
                .put_if("erin", 0, Some(&h), &theirs, false, None)
                .await,
            Err(RecordError::Conflict { .. })
        ));
        store.put("erin", 0, &ours, false).await.unwrap();
        // Without the hash, or with another one: refused.
        assert!(store.put("erin", 1, &theirs, false).await.is_err());
        let wrong = wire::record_hash(&theirs);
        assert!(matches!(
            store
                .put_if("erin", 1, Some(&wrong), &theirs, false, None)
                .await,
            Err(RecordError::Conflict { .. })
        ));
        // Never backwards, even with the right hash.
        assert!(store
            .put_if("erin", 1, Some(&h), &rec(0, false), false, None)
            .await
            .is_err());
        assert_eq!(store.get("erin").await.unwrap(), Some(ours));
        store
            .put_if("erin", 1, Some(&h), &theirs, false, None)
            .await
            .unwrap();
        assert_eq!(store.get("erin").await.unwrap(), Some(theirs));
    }

    #[tokio::test]
    async fn a_first_record_with_the_users_file_key_keeps_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path());
        let file_key = [9u8; 32];
        // The key the users file already checks: nobody is logged out.
        let first = rec(1, true);
        let epoch = store
            .put_if("gina", 0, None, &first, false, Some(&file_key))
            .await
            .unwrap();
        assert_eq!(epoch, 0);
        // Racing clients replacing one first record with another of the
        // same key: still nobody logged out.
        let mut other = rec(1, true);
        other.wrapped_key = vec![6; 72];
        let h = wire::record_hash(&first);
        store
            .put_if("gina", 1, Some(&h), &other, false, Some(&file_key))
            .await
            .unwrap();
        assert_eq!(store.epoch("gina"), 0);
        // A real change of the key moves the epoch on.
        let mut rotated = rec(2, true);
        rotated.login_key = Some(vec![8; 32]);
        store
            .put_if("gina", 1, None, &rotated, false, Some(&file_key))
            .await
            .unwrap();
        assert_eq!(store.epoch("gina"), 1);
        // Without a users-file key, a first login key is a change.
        store
            .put_if("hal", 0, None, &first, false, None)
            .await
            .unwrap();
        assert_eq!(store.epoch("hal"), 1);
    }

    #[tokio::test]
    async fn the_replaced_login_key_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path());
        store.put("carol", 0, &rec(1, true), false).await.unwrap();
        let mut next = rec(2, true);
        next.login_key = Some(vec![8; 32]);
        store.put("carol", 1, &next, false).await.unwrap();
        let got = store.get_stored("carol").await.unwrap().unwrap();
        assert_eq!(got.previous_login_key, Some([9; 32]));
        assert_eq!(store.epoch("carol"), 2);
        // A later write with the same key keeps the previous one.
        let mut again = next.clone();
        again.generation = 3;
        store.put("carol", 2, &again, false).await.unwrap();
        let got = store.get_stored("carol").await.unwrap().unwrap();
        assert_eq!(got.previous_login_key, Some([9; 32]));
    }

    #[tokio::test]
    async fn records_written_by_vault_0_1_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = rec(4, true);
        old.format = 1;
        let mut bytes = Vec::new();
        ciborium::into_writer(&old, &mut bytes).unwrap();
        std::fs::write(dir.path().join("dave.cbor"), bytes).unwrap();
        let store = RecordStore::new(dir.path());
        let got = store.get_stored("dave").await.unwrap().unwrap();
        assert_eq!(got.record, old);
        assert_eq!(got.previous_login_key, None);
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
