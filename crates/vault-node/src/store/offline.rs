//! Blobs of a node root that is not being served: read, replace, remove
//! and list them, copy a user's folder, for tests (a hostile disk edit, a
//! disk restored from an old copy) and maintenance tools.
//!
//! They work on the root's user databases (`<user>/index.redb`) and blob
//! files. A root that a node in this process serves is reached through
//! that node's open databases (redb allows one opener per file), so a
//! change made here is seen by the node at once; any other root must not
//! be served by a node in another process (its databases are locked:
//! an error). The one exception is [`activity`], made to be read while a
//! node in another process serves the root.
//!
//! Users are given as a user name (any case; it is normalised as a node
//! does) and blobs by their id; an invalid name or id is an
//! [`io::ErrorKind::InvalidInput`] error, never a path outside the root.
//!
//! The layout: `<root>/<user>/index.redb` (the index and the inline
//! blobs), `<root>/<user>/<blob-id>.<n>` for larger blobs, and
//! `<root>/<user>/.tmp/` for uploads in progress.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use redb::{ReadableDatabase, ReadableTable};
use wire::BlobId;

use super::db::{self, db_err, Data, Job, PutOp, UserDb, BLOBS};
use super::{live, TMP_DIR};
use crate::fsutil::{random_hex, Synced, TempGuard};

/// `<root>/<user>` for a valid user name (normalised to lower case).
fn user_dir(root: &Path, user: &str) -> io::Result<PathBuf> {
    let user = wire::normalize_user(user)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid user name"))?;
    Ok(root.join(user))
}

/// A valid blob id.
fn blob_id(id: &str) -> io::Result<BlobId> {
    BlobId::new(id).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "invalid blob id"))
}

/// `user`'s database under `root` (`None`: no folder and not `create`).
fn user_db(root: &Path, user: &str, create: bool) -> io::Result<Option<std::sync::Arc<UserDb>>> {
    let dir = user_dir(root, user)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    live::user_db(root, &name, create)
}

/// Runs `job` on `db` now; its answer is ready when this returns.
fn run_put(db: &UserDb, op: PutOp) -> io::Result<()> {
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    db.run_now(Job::Put {
        ops: vec![op],
        reply,
    });
    let mut results = answer
        .try_recv()
        .map_err(|_| io::Error::other("no answer from the blob index"))??;
    match results.pop() {
        Some(Err(e)) => Err(io::Error::other(e.to_string())),
        _ => Ok(()),
    }
}

/// The bytes of `user`'s blob `id` under `root`; `None` if there is none.
pub fn read_blob(root: &Path, user: &str, id: &str) -> io::Result<Option<Vec<u8>>> {
    let id = blob_id(id)?;
    if !live::is_live(root) {
        // Read only: no writer, no conversion.
        let dir = user_dir(root, user)?;
        if !dir.join(db::DB_FILE).exists() {
            return Ok(None);
        }
        let database = db::open_database(&dir, false)?;
        return db::read_blob_in(&database, &dir, id.as_str(), u64::MAX);
    }
    let Some(db) = user_db(root, user, false)? else {
        return Ok(None);
    };
    db::read_blob(&db, id.as_str(), u64::MAX)
}

/// Makes `bytes` the content of `user`'s blob `id` under `root`, replacing
/// the blob or creating it (and the user's folder), as a hostile edit of
/// the disk would: no quota, no condition.
pub fn write_blob(root: &Path, user: &str, id: &str, bytes: &[u8]) -> io::Result<()> {
    let id = blob_id(id)?;
    let db = user_db(root, user, true)?.ok_or_else(|| io::Error::other("no user folder"))?;
    let data = if bytes.len() as u64 <= super::DEFAULT_INLINE_MAX.min(db::MAX_BYTES) {
        Data::Bytes(bytes.to_vec())
    } else {
        let tmp = db.dir.join(TMP_DIR);
        std::fs::create_dir_all(&tmp)?;
        let path = tmp.join(format!("{}.tmp", random_hex(16)?));
        std::fs::write(&path, bytes)?;
        let file = std::fs::File::open(&path)?;
        Data::Temp(Synced::new(file, TempGuard::new(path))?)
    };
    run_put(
        &db,
        PutOp {
            id,
            data,
            expect: None,
        },
    )
}

/// Removes `user`'s blob `id` under `root`; `false` if there was none.
pub fn remove_blob(root: &Path, user: &str, id: &str) -> io::Result<bool> {
    let id = blob_id(id)?;
    let Some(db) = user_db(root, user, false)? else {
        return Ok(false);
    };
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    db.run_now(Job::Delete {
        ids: vec![id],
        reply,
    });
    let found = answer
        .try_recv()
        .map_err(|_| io::Error::other("no answer from the blob index"))??;
    Ok(found.first().copied().unwrap_or(false))
}

/// Uploads in progress for `user` on the node of this process serving
/// `root` (0 if none, or no such node): an upload counts from when its
/// quota is reserved until it is stored or dropped.
pub fn uploads_in_progress(root: &Path, user: &str) -> u64 {
    // Only a database the node has open: opening one here could wait up
    // to the open timeout on the node's own opening of it.
    let Some(user) = wire::normalize_user(user) else {
        return 0;
    };
    live::open_user_db(root, &user).map_or(0, |db| db.uploads.load(Ordering::Relaxed))
}

/// The users with a folder under `root` (lower-case names), sorted: the
/// node's own metadata (`.vault`) is not a user.
pub fn users(root: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut users = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if wire::normalize_user(&name).as_deref() == Some(name.as_str())
            && entry.file_type()?.is_dir()
        {
            users.push(name);
        }
    }
    users.sort();
    Ok(users)
}

/// The ids of `user`'s blobs under `root`, sorted; empty if the user has no
/// folder. Uploads in progress are not blobs. An index key that is not a
/// valid blob id is an [`io::ErrorKind::InvalidData`] error.
pub fn blob_ids(root: &Path, user: &str) -> io::Result<Vec<String>> {
    let Some(db) = user_db(root, user, false)? else {
        return Ok(Vec::new());
    };
    ids_in(&db)
}

/// The ids in `db`, sorted; a key that is not a valid blob id (a damaged
/// or hostile database) is an [`io::ErrorKind::InvalidData`] error, never
/// an id that later names a path.
fn ids_in(db: &UserDb) -> io::Result<Vec<String>> {
    let txn = db.db.begin_read().map_err(db_err)?;
    let blobs = txn.open_table(BLOBS).map_err(db_err)?;
    let mut ids = Vec::new();
    for item in blobs.iter().map_err(db_err)? {
        let (k, _) = item.map_err(db_err)?;
        let id = k.value();
        if !BlobId::is_valid(id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the index holds an invalid blob id {id:?}"),
            ));
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// Every blob of `user` under `root`, id and bytes, in id order (the
/// database opened once: reading many blobs with [`read_blob`] opens it
/// for each on a root no node of this process serves).
pub fn read_blobs(root: &Path, user: &str) -> io::Result<Vec<(String, Vec<u8>)>> {
    let Some(db) = user_db(root, user, false)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for id in ids_in(&db)? {
        if let Some(bytes) = db::read_blob(&db, &id, u64::MAX)? {
            out.push((id, bytes));
        }
    }
    Ok(out)
}

/// Replaces `user`'s folder under `to_root` by a copy of the one under
/// `from_root` (everything the node keeps for the user, uploads in
/// progress left out): to keep a disk as it is and serve it again later.
/// A user without a folder under `from_root` leaves none under `to_root`.
pub fn copy_user(from_root: &Path, to_root: &Path, user: &str) -> io::Result<()> {
    let (from, to) = (user_dir(from_root, user)?, user_dir(to_root, user)?);
    match std::fs::remove_dir_all(&to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if !from.exists() {
        return Ok(());
    }
    copy_tree(&from, &to)
}

/// Copies the regular files and folders under `from` to `to`, leaving out
/// the uploads folder.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if entry.file_name() != TMP_DIR {
                copy_tree(&entry.path(), &to.join(entry.file_name()))?;
            }
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// A number that grows as the node stores blobs for `user` under `root`,
/// readable while a node (in this process or another) serves the root: to
/// poll for a transfer's progress. It is the bytes the user's folder holds
/// on disk: the index database's length plus every blob file's (uploads
/// in progress left out). 0 if nothing can be read.
pub fn activity(root: &Path, user: &str) -> u64 {
    let Ok(dir) = user_dir(root, user) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_list_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(read_blob(root, "Alice", "p-1").unwrap(), None);
        assert!(blob_ids(root, "alice").unwrap().is_empty());
        assert_eq!(activity(root, "alice"), 0);
        write_blob(root, "Alice", "p-2", b"two").unwrap();
        assert!(activity(root, "alice") > 0);
        write_blob(root, "alice", "p-1", b"one").unwrap();
        write_blob(root, "alice", "p-1", b"uno").unwrap();
        std::fs::create_dir_all(root.join("alice").join(TMP_DIR)).unwrap();
        std::fs::write(root.join("alice/.tmp/x.tmp"), b"partial").unwrap();
        assert_eq!(blob_ids(root, "alice").unwrap(), ["p-1", "p-2"]);
        // redb may trim its file when a writer closes the database, so
        // offline writes need not grow it; a serving node's only grows.
        assert!(activity(root, "ALICE") > 0);
        assert_eq!(read_blob(root, "alice", "p-1").unwrap().unwrap(), b"uno");
        assert!(remove_blob(root, "alice", "p-1").unwrap());
        assert!(!remove_blob(root, "alice", "p-1").unwrap());
        assert_eq!(blob_ids(root, "alice").unwrap(), ["p-2"]);
        std::fs::create_dir_all(root.join(".vault")).unwrap();
        write_blob(root, "bob", "m-1", b"bob").unwrap();
        assert_eq!(users(root).unwrap(), ["alice", "bob"]);
    }

    #[test]
    fn bad_names_are_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (user, id) in [
            ("..", "p-1"),
            ("alice", "../x"),
            ("alice", "P-1"),
            ("", "p"),
        ] {
            let e = write_blob(root, user, id, b"x").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{user} {id}");
        }
        assert_eq!(activity(root, ".."), 0);
    }

    #[test]
    fn copy_user_replaces_the_folder_and_leaves_uploads_out() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_blob(&a, "alice", "m-1", b"old").unwrap();
        std::fs::create_dir_all(a.join("alice").join(TMP_DIR)).unwrap();
        std::fs::write(a.join("alice/.tmp/x.tmp"), b"partial").unwrap();
        write_blob(&b, "alice", "m-2", b"other").unwrap();
        // A large blob is a file of its own.
        write_blob(&a, "alice", "p-big", &vec![5; 100_000]).unwrap();
        copy_user(&a, &b, "alice").unwrap();
        assert_eq!(blob_ids(&b, "alice").unwrap(), ["m-1", "p-big"]);
        assert_eq!(
            read_blob(&b, "alice", "p-big").unwrap().unwrap(),
            vec![5; 100_000]
        );
        assert!(!b.join("alice").join(TMP_DIR).exists());
        copy_user(&dir.path().join("none"), &b, "alice").unwrap();
        assert!(blob_ids(&b, "alice").unwrap().is_empty());
    }
}
