//! `vault-node fsck` and `vault-node compact`: checks and compaction of
//! every user database under a root no node serves.
//!
//! A serving node holds the root's lock file, `<root>/.vault/lock`
//! ([`RootLock`], an exclusive `flock` taken before the node touches the
//! root and released when it stops or dies), and both take it too, so they
//! refuse while a node runs ([`NodeRunning`]) and a node cannot start while
//! they run. A second node on the same root is refused the same way
//! ([`RootBusy`]).

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};
use wire::BlobId;

use super::db::{self, db_err, file_name, Entry, Place, Tables, BLOBS, DATA, DB_FILE};
use super::{offline, TMP_DIR};
use crate::state::META_DIR;

/// A node serves the root: stop it first.
#[derive(Debug, thiserror::Error)]
#[error("the node is running on {0}; stop it first")]
pub struct NodeRunning(pub String);

/// Another node (or `fsck`, `compact`) holds the root.
#[derive(Debug, thiserror::Error)]
#[error("another vault-node serves {0} (or checks or compacts it)")]
pub struct RootBusy(pub String);

/// The lock file's name in `<root>/.vault`.
pub const LOCK_FILE: &str = "lock";

/// An exclusive lock on a node root (`<root>/.vault/lock`): held by a
/// serving node from before it touches the root until it stops, and by
/// [`fsck`] and [`compact`] while they run. Released when dropped (or when
/// the process dies). Two holders in one process exclude each other too.
#[derive(Debug)]
pub struct RootLock {
    _file: File,
}

impl RootLock {
    /// The lock for a node about to serve `root` (its `.vault` folder
    /// created if missing): a [`RootBusy`] error
    /// ([`io::ErrorKind::WouldBlock`]) if another holder has it.
    pub fn serve(root: &Path) -> io::Result<RootLock> {
        let meta = root.join(META_DIR);
        std::fs::create_dir_all(&meta)?;
        try_lock(&meta.join(LOCK_FILE))?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                RootBusy(root.display().to_string()),
            )
        })
    }

    /// The lock for maintenance of `root`: a [`NodeRunning`] error
    /// ([`io::ErrorKind::WouldBlock`]) if a node holds it. `None` when the
    /// root has no `.vault` folder (no node ever served it): nothing is
    /// created there, so a tool run by another system user cannot leave a
    /// folder the node may not write.
    pub fn maintain(root: &Path) -> io::Result<Option<RootLock>> {
        let meta = root.join(META_DIR);
        if !meta.is_dir() {
            return Ok(None);
        }
        match try_lock(&meta.join(LOCK_FILE))? {
            Some(lock) => Ok(Some(lock)),
            None => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                NodeRunning(root.display().to_string()),
            )),
        }
    }
}

/// Takes the lock on `path` (created if missing; an existing file opened
/// read-only, so one created by another system user still works):
/// `None` if another holder has it.
fn try_lock(path: &Path) -> io::Result<Option<RootLock>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?,
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(RootLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(io::Error::new(
            e.kind(),
            format!("failed to lock {}: {e}", path.display()),
        )),
    }
}

/// Whether `name` is a blob file's: `<id>` (a converted 0.2 blob) or
/// `<id>.<n>` with `n >= 2` written in decimal.
fn is_blob_file_name(name: &str) -> bool {
    match name.split_once('.') {
        None => BlobId::is_valid(name),
        Some((id, n)) => {
            BlobId::is_valid(id) && n.parse::<u64>().is_ok_and(|v| v >= 2 && v.to_string() == n)
        }
    }
}

/// What [`fsck`] found.
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Users checked.
    pub users: usize,
    /// Index entries checked.
    pub entries: u64,
    /// Each problem, one line each (`alice: ...`).
    pub problems: Vec<String>,
    /// Problems repaired (with `fix`): unreferenced files removed, orphan
    /// inline bytes dropped, totals rewritten.
    pub fixed: usize,
}

impl FsckReport {
    /// Whether everything was in order.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }
}

fn open(root: &Path, dir: &Path) -> io::Result<redb::Database> {
    db::open_database(dir, false).map_err(|e| {
        if db::is_already_open(&e) {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                NodeRunning(root.display().to_string()),
            )
        } else {
            e
        }
    })
}

/// Checks every user database under `root`: each index entry's bytes
/// exist (inline, or its file) and have the recorded length; the totals
/// match the entries; every file in the user folder (besides the database
/// and `.tmp/`) is referenced by an entry. With `fix`, unreferenced files
/// and inline bytes without an entry are removed and the totals rewritten;
/// an entry whose bytes are missing or of another length is only reported
/// (clients repair it from the other nodes).
///
/// A user whose conversion from a 0.2 folder has not finished (a node
/// stopped part-way; its blobs are still files named by their ids) is
/// reported and left alone, even with `fix`: starting the node finishes
/// it. Only blob files (`<id>`, `<id>.<n>`) are ever removed; anything
/// else in a user folder is reported and left alone. Ids read from a
/// database are checked before they name a file.
pub fn fsck(root: &Path, fix: bool) -> io::Result<FsckReport> {
    let _lock = RootLock::maintain(root)?;
    let mut report = FsckReport::default();
    for user in offline::users(root)? {
        let dir = root.join(&user);
        report.users += 1;
        if !dir.join(DB_FILE).exists() {
            let (mut old, mut new) = (0usize, 0usize);
            for e in std::fs::read_dir(&dir)?.flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if BlobId::is_valid(&name) {
                    old += 1;
                } else if is_blob_file_name(&name) {
                    new += 1;
                }
            }
            if old > 0 {
                report.problems.push(format!(
                    "{user}: {old} blob files not converted yet (start the node once)"
                ));
            }
            if new > 0 {
                report.problems.push(format!(
                    "{user}: {new} blob files of the indexed layout but no {DB_FILE} \
                     (the index is lost: restore it, or remove the folder and repair \
                     the user from the other nodes)"
                ));
            }
            continue;
        }
        let database = open(root, &dir)?;
        if !db::read_totals(&database)?.1 {
            report.problems.push(format!(
                "{user}: conversion unfinished: start the node once to finish it \
                 (nothing checked or removed)"
            ));
            continue;
        }
        check_user(&user, &database, &dir, fix, &mut report)?;
    }
    Ok(report)
}

fn check_user(
    user: &str,
    database: &redb::Database,
    dir: &Path,
    fix: bool,
    report: &mut FsckReport,
) -> io::Result<()> {
    let mut referenced: HashSet<String> = HashSet::new();
    let mut orphan_data = Vec::new();
    let (mut count, mut bytes) = (0u64, 0u64);
    {
        let txn = database.begin_read().map_err(db_err)?;
        let blobs = txn.open_table(BLOBS).map_err(db_err)?;
        let data = txn.open_table(DATA).map_err(db_err)?;
        for item in blobs.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let id = k.value().to_string();
            let entry = Entry::decode(v.value());
            report.entries += 1;
            count += 1;
            bytes = bytes.saturating_add(entry.len);
            if !BlobId::is_valid(&id) {
                // Never a path component: it could name anything.
                report
                    .problems
                    .push(format!("{user}: invalid blob id {id:?} in the index"));
                continue;
            }
            let found = match entry.place {
                Place::Inline => data
                    .get(id.as_str())
                    .map_err(db_err)?
                    .map(|d| d.value().len() as u64),
                Place::File(n) => {
                    let name = file_name(&id, n);
                    let len = std::fs::metadata(dir.join(&name)).ok().map(|m| m.len());
                    referenced.insert(name);
                    len
                }
            };
            match found {
                None => report
                    .problems
                    .push(format!("{user}: blob {id}: its bytes are missing")),
                Some(len) if len != entry.len => report.problems.push(format!(
                    "{user}: blob {id}: {len} bytes stored, {} recorded",
                    entry.len
                )),
                Some(_) => {}
            }
        }
        for item in data.iter().map_err(db_err)? {
            let (k, _) = item.map_err(db_err)?;
            let id = k.value();
            if blobs.get(id).map_err(db_err)?.is_none() {
                report
                    .problems
                    .push(format!("{user}: inline bytes of {id:?} without an entry"));
                orphan_data.push(id.to_string());
            }
        }
    }
    let (totals, _) = db::read_totals(database)?;
    let totals_wrong = totals.count != count || totals.bytes != bytes;
    if totals_wrong {
        report.problems.push(format!(
            "{user}: totals say {} blobs of {} bytes; the entries hold {count} of {bytes}",
            totals.count, totals.bytes
        ));
    }
    let mut unreferenced: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == DB_FILE || name == TMP_DIR || referenced.contains(&name) {
            continue;
        }
        // Only a blob file is ever removed; a folder or another name is
        // not the node's and is left to the operator.
        if is_blob_file_name(&name) && entry.file_type()?.is_file() {
            report.problems.push(format!(
                "{user}: file {name} is not referenced by the index"
            ));
            unreferenced.push(entry.path());
        } else {
            report
                .problems
                .push(format!("{user}: {name:?} is not a blob file (left alone)"));
        }
    }
    if !fix {
        return Ok(());
    }
    for path in unreferenced {
        std::fs::remove_file(&path)?;
        report.fixed += 1;
    }
    if !orphan_data.is_empty() || totals_wrong {
        let txn = database.begin_write().map_err(db_err)?;
        {
            let mut t = Tables::open(&txn)?;
            for id in &orphan_data {
                t.data.remove(id.as_str()).map_err(db_err)?;
                report.fixed += 1;
            }
            if totals_wrong {
                t.totals = db::Totals { count, bytes };
                report.fixed += 1;
            }
            t.save()?;
        }
        txn.commit().map_err(db_err)?;
    }
    Ok(())
}

/// Compacts every user database under `root` (redb's compaction: gives
/// back the space of deleted and replaced blobs); returns the bytes the
/// databases took before and after.
pub fn compact(root: &Path) -> io::Result<(u64, u64)> {
    let _lock = RootLock::maintain(root)?;
    let (mut before, mut after) = (0u64, 0u64);
    for user in offline::users(root)? {
        let dir = root.join(&user);
        let path = dir.join(DB_FILE);
        if !path.exists() {
            continue;
        }
        before += std::fs::metadata(&path)?.len();
        let mut database = open(root, &dir)?;
        database.compact().map_err(db_err)?;
        drop(database);
        after += std::fs::metadata(&path)?.len();
    }
    Ok((before, after))
}
