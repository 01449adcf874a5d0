//! What this client has learned about an account, kept beside `dfc.conf`
//! (`dfc.conf.state`, JSON, mode 0600), so that no node can make it go
//! backwards:
//!
//! - `upgraded`: once a verified key record carried a login key, no node is
//!   ever sent an MD5 of the password again (a node announcing the legacy
//!   login for the account is lying or restored from an old backup);
//! - `generation`, `kdf`, `login_key`: the newest verified key record; a
//!   cluster whose newest record is older is refused (a replayed record);
//! - `pending_rotation`: a password change in progress, written before any
//!   node changes, so an interrupted rotation can always be finished.
//!
//! The file holds no secret that the nodes do not already hold (public
//! salts and keys, and during a rotation of a dfc.conf that stores an MD5
//! digest, the new password's digest that dfc.conf is about to hold).
//! Deleting it resets what the client learned; the client then behaves as
//! on a machine that never logged in. Updates are made under a lock file
//! and merged, so concurrent clients never lose what another learned.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use wire::{KdfParams, UserRecord};

use crate::fsutil::write_atomic;

/// Largest state file read.
const MAX_STATE_FILE: u64 = 1 << 20;

/// Version of the state file's layout.
const STATE_VERSION: u32 = 1;

/// Problems with the state file.
#[derive(Debug, Error)]
pub enum StateError {
    /// Reading, locking or writing it failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The state file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// It exists but is not a state file this version understands.
    #[error("{} is not a valid client state file ({problem}); remove it to start over", path.display())]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Argon2id parameters as stored in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfState {
    /// Salt, hex.
    pub salt: String,
    /// Memory cost in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfState {
    /// The stored form of `k`.
    pub fn of(k: &KdfParams) -> Self {
        KdfState {
            salt: hex::encode(&k.salt),
            m_kib: k.m_kib,
            t: k.t,
            p: k.p,
        }
    }
}

/// A password change in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRotation {
    /// When it started, seconds since the Unix epoch.
    pub started: u64,
    /// The new key record (CBOR, hex) every node is to hold.
    pub record: String,
    /// Nodes that held the legacy credential when the rotation began: they
    /// may get the *old* password's MD5 (which they hold already) until
    /// they switch.
    pub legacy_nodes: Vec<String>,
    /// MD5 of the new password (hex), kept only when dfc.conf stores a
    /// digest, so the local check accepts the new password until dfc.conf
    /// is rewritten.
    pub new_md5: Option<String>,
}

impl PendingRotation {
    /// The new record.
    pub fn record(&self) -> Option<UserRecord> {
        let bytes = hex::decode(&self.record).ok()?;
        ciborium::from_reader(bytes.as_slice()).ok()
    }

    /// Encodes `record` for [`PendingRotation::record`].
    pub fn encode_record(record: &UserRecord) -> String {
        let mut bytes = Vec::new();
        ciborium::into_writer(record, &mut bytes).expect("writing CBOR to a Vec cannot fail");
        hex::encode(bytes)
    }
}

/// What the client knows about one account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// A verified key record with a login key has been seen.
    pub upgraded: bool,
    /// Generation of the newest verified key record (0: none seen).
    pub generation: u64,
    /// Argon2id parameters of that record.
    pub kdf: Option<KdfState>,
    /// Its login key (hex), if any.
    pub login_key: Option<String>,
    /// A password change in progress.
    pub pending_rotation: Option<PendingRotation>,
}

impl AccountState {
    /// Whether anything was ever learned.
    pub fn is_known(&self) -> bool {
        self.generation > 0 || self.upgraded || self.pending_rotation.is_some()
    }

    /// Takes in a verified record: only ever moves forward.
    pub fn learn(&mut self, record: &UserRecord) {
        if record.generation >= self.generation {
            self.generation = record.generation;
            self.kdf = Some(KdfState::of(&record.kdf));
            self.login_key = record.login_key.as_ref().map(hex::encode);
        }
        self.upgraded |= record.login_key.is_some();
    }

    /// Merges what another client wrote meanwhile (the larger wins).
    fn merge_from(&mut self, other: &AccountState) {
        if other.generation > self.generation {
            self.generation = other.generation;
            self.kdf = other.kdf.clone();
            self.login_key = other.login_key.clone();
        }
        self.upgraded |= other.upgraded;
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    accounts: BTreeMap<String, AccountState>,
}

/// The state file of one `dfc.conf`.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    /// The state of the configuration at `config`: `<config>.state`.
    pub fn beside(config: &Path) -> Self {
        let mut name = config.as_os_str().to_owned();
        name.push(".state");
        StateStore {
            path: PathBuf::from(name),
        }
    }

    /// A state file at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        StateStore { path: path.into() }
    }

    /// Where the state lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn read(&self) -> Result<StateFile, StateError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(StateFile {
                    version: STATE_VERSION,
                    accounts: BTreeMap::new(),
                })
            }
            Err(e) => return Err(self.io(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_STATE_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.io(e))?;
        let corrupt = |problem: String| StateError::Corrupt {
            path: self.path.clone(),
            problem,
        };
        if bytes.len() as u64 > MAX_STATE_FILE {
            return Err(corrupt("too large".into()));
        }
        let parsed: StateFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if parsed.version != STATE_VERSION {
            return Err(corrupt(format!("unknown version {}", parsed.version)));
        }
        Ok(parsed)
    }

    /// What is known about `user` (lower case); empty if nothing.
    pub fn load(&self, user: &str) -> Result<AccountState, StateError> {
        Ok(self.read()?.accounts.remove(user).unwrap_or_default())
    }

    /// Applies `change` to `user`'s state under the lock, after merging in
    /// what other clients wrote, and saves it. Returns the new state.
    pub fn update(
        &self,
        user: &str,
        change: impl FnOnce(&mut AccountState),
    ) -> Result<AccountState, StateError> {
        let _lock = self.lock()?;
        let mut file = self.read()?;
        let entry = file.accounts.entry(user.to_string()).or_default();
        change(entry);
        let updated = entry.clone();
        let text = serde_json::to_vec_pretty(&file).expect("state serialises");
        write_atomic(&self.path, &text).map_err(|e| self.io(e))?;
        Ok(updated)
    }

    /// Records what a session learned (`seen`), merged with the file.
    pub fn save_learned(&self, user: &str, seen: &AccountState) -> Result<(), StateError> {
        self.update(user, |s| s.merge_from(seen)).map(drop)
    }

    fn lock(&self) -> Result<File, StateError> {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(PathBuf::from(name))
            .map_err(|e| self.io(e))?;
        file.lock().map_err(|e| self.io(e))?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(generation: u64, key: bool) -> UserRecord {
        UserRecord {
            format: 2,
            generation,
            kdf: KdfParams {
                salt: vec![generation as u8; 16],
                m_kib: 65536,
                t: 3,
                p: 1,
            },
            login_key: key.then(|| vec![7; 32]),
            wrapped_key: vec![1; 72],
        }
    }

    #[test]
    fn learning_only_moves_forward() {
        let mut s = AccountState::default();
        assert!(!s.is_known());
        s.learn(&record(3, true));
        s.learn(&record(2, false));
        assert_eq!(s.generation, 3);
        assert!(s.upgraded);
        assert_eq!(s.kdf.as_ref().unwrap().salt, hex::encode([3u8; 16]));
    }

    #[test]
    fn updates_merge_and_persist_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::beside(&dir.path().join("dfc.conf"));
        assert_eq!(store.path(), dir.path().join("dfc.conf.state"));
        assert_eq!(store.load("alice").unwrap(), AccountState::default());
        let mut a = AccountState::default();
        a.learn(&record(2, true));
        store.save_learned("alice", &a).unwrap();
        // A client that saw less does not take it back.
        let mut stale = AccountState::default();
        stale.learn(&record(1, false));
        store.save_learned("alice", &stale).unwrap();
        let got = store.load("alice").unwrap();
        assert_eq!((got.generation, got.upgraded), (2, true));
        assert_eq!(store.load("bob").unwrap(), AccountState::default());
        store
            .update("alice", |s| {
                s.pending_rotation = Some(PendingRotation {
                    started: 1,
                    record: PendingRotation::encode_record(&record(3, true)),
                    legacy_nodes: vec!["DFS4".into()],
                    new_md5: None,
                })
            })
            .unwrap();
        let pending = store.load("alice").unwrap().pending_rotation.unwrap();
        assert_eq!(pending.record().unwrap(), record(3, true));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::at(dir.path().join("s"));
        std::fs::write(store.path(), b"{not json").unwrap();
        let err = store.load("alice").unwrap_err().to_string();
        assert!(err.contains("remove it"), "{err}");
    }
}
