//! `vault-node fsck` and `vault-node compact`: checks and compaction of
//! every user database under a root no node serves.
//!
//! A serving node holds each user database open (redb's file lock), so
//! both refuse while it runs: [`NodeRunning`].

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};

use super::db::{self, db_err, file_name, Entry, Place, Tables, BLOBS, DATA, DB_FILE};
use super::{offline, TMP_DIR};

/// A node serves the root: stop it first.
#[derive(Debug, thiserror::Error)]
#[error("the node is running on {0}; stop it first")]
pub struct NodeRunning(pub String);

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
pub fn fsck(root: &Path, fix: bool) -> io::Result<FsckReport> {
    let mut report = FsckReport::default();
    for user in offline::users(root)? {
        let dir = root.join(&user);
        report.users += 1;
        if !dir.join(DB_FILE).exists() {
            let files = std::fs::read_dir(&dir)?
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(wire::BlobId::is_valid))
                .count();
            if files > 0 {
                report.problems.push(format!(
                    "{user}: {files} blob files not converted yet (start the node once)"
                ));
            }
            continue;
        }
        let database = open(root, &dir)?;
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
                    .push(format!("{user}: inline bytes of {id} without an entry"));
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
        report.problems.push(format!(
            "{user}: file {name} is not referenced by the index"
        ));
        unreferenced.push(entry.path());
    }
    if !fix {
        return Ok(());
    }
    for path in unreferenced {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed?;
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
