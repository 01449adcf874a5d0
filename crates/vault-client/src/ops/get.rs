//! GET: newest valid manifest, one copy of each part, failover, verify,
//! rename.
//!
//! Parts are decrypted chunk by chunk as they arrive and written at their
//! offset in a temporary file beside the target. Only authenticated
//! plaintext is ever written; the temporary file becomes the target only
//! when all four parts decrypted completely, and is removed otherwise.
//!
//! A node that dies mid-GET (killed, frozen, cut off) costs about a second,
//! not its connection's idle timeout: the manifest lookup goes on without
//! a last node silent for [`SWITCH_AFTER`] after the others answered, and
//! a part whose holder sends nothing for [`SWITCH_AFTER`] is taken over by
//! the other copy, from the first chunk not yet written.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use tokio::task::JoinSet;

use super::part_stream::{PartError, PartReader, ReadOptions};
use super::{check_quorum, fetch_versions_within, io_err, OpError, ProgressRef};
use crate::crypto::keys::PartKeys;
use crate::crypto::stream::CHUNK_LEN;
use crate::fsutil::{
    create_partial, parent_dir, publish, set_mtime_ns, sweep_partials, sync_dir, TempGuard,
};
use crate::manifest::Manifest;
use crate::net::Session;
use crate::placement::nodes_for_part;
use crate::vault::Vault;

/// Slowest transfer rate (bytes/s) a node may serve a part at before the
/// other copy is tried.
const MIN_RATE: u64 = 1 << 20;

/// How long a node may stay silent while another could serve instead: the
/// last node to answer the manifest lookup, or a part's holder (its answer,
/// or the next bytes) while the other holder is left to try. Half the
/// connection's idle timeout ([`crate::net::DEAD_AFTER`]), so a dead node
/// costs a GET about a second; a live node silent this long is merely
/// passed over (the other copy serves; it is tried again if that fails).
pub const SWITCH_AFTER: Duration = Duration::from_secs(1);

/// What a successful GET wrote.
#[derive(Debug, Clone)]
pub struct GetReport {
    /// Where the file was written.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Nodes that failed along the way and were replaced by the other copy.
    pub failovers: Vec<String>,
}

/// Looks up the newest live version of `name`. A last node silent
/// [`SWITCH_AFTER`] after the others answered is left out (and its copies
/// are then tried last).
///
/// Refuses ([`OpError::NoQuorum`]) unless a majority of the manifest
/// holders answered: with fewer, an old version or a deleted file could be
/// all that is left to see.
pub async fn find(vault: &Vault, name: &str) -> Result<Manifest, OpError> {
    find_with(vault, name, false).await.map(|(m, _)| m)
}

/// [`find`] that, with `allow_stale`, goes on with fewer answers than a
/// quorum and returns the warning to show (the version may be old).
pub async fn find_with(
    vault: &Vault,
    name: &str,
    allow_stale: bool,
) -> Result<(Manifest, Option<String>), OpError> {
    let id = vault.master().manifest_id(name);
    let versions = fetch_versions_within(vault, &id, None, Some(SWITCH_AFTER)).await;
    let stale = check_quorum(vault, versions.answered, &versions.problems, allow_stale)?;
    let m = versions
        .live()
        .cloned()
        .ok_or_else(|| OpError::NotFound(name.to_string()))?;
    Ok((m, stale))
}

/// Fetches `name` into `out`. Refuses to replace an existing file unless
/// `replace`. `progress` advances by the file's size.
pub async fn get_file(
    vault: &Vault,
    name: &str,
    out: &Path,
    replace: bool,
    progress: ProgressRef,
) -> Result<GetReport, OpError> {
    let m = find(vault, name).await?;
    sweep_beside(out);
    get_version(vault, &m, out, replace, progress).await
}

/// Removes the partial downloads interrupted GETs left in the folder `out`
/// is to be written to (abandoned ones only: no process holds their lock
/// and they were not written for a minute); how many went. [`get_file`] does
/// this itself; a caller of [`get_version`] does it first.
pub fn sweep_beside(out: &Path) -> usize {
    sweep_partials(&parent_dir(out))
}

/// Fetches the file version `m` (from [`find`]) into `out`.
pub async fn get_version(
    vault: &Vault,
    m: &Manifest,
    out: &Path,
    replace: bool,
    progress: ProgressRef,
) -> Result<GetReport, OpError> {
    if out.exists() && !replace {
        return Err(OpError::Exists(out.to_path_buf()));
    }
    let dir = parent_dir(out);
    let (tmp_path, file) = create_partial(out).map_err(io_err(&dir))?;
    let guard = TempGuard::new(tmp_path.clone());
    file.set_len(m.size).map_err(io_err(&tmp_path))?;
    let file = Arc::new(file);

    let mut set = JoinSet::new();
    for (k, (offset, len)) in m.parts().into_iter().enumerate() {
        let candidates: Vec<Session> = nodes_for_part(m.placement(), k)
            .iter()
            .filter_map(|&i| vault.session(i).cloned())
            .collect();
        let job = PartFetch {
            k,
            offset,
            len,
            keys: vault.master().part(vault.user(), &m.file_id, m.version, k),
            file: file.clone(),
            progress: progress.clone(),
        };
        // Each holder's name, and why it cannot be used if it cannot.
        let holders: Vec<(String, String)> = nodes_for_part(m.placement(), k)
            .iter()
            .map(|&i| (vault.node_name(i).to_string(), vault.why_unusable(i)))
            .collect();
        set.spawn(async move { job.run(candidates, holders).await });
    }
    let mut failovers = Vec::new();
    let mut first_err = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(mut f)) => failovers.append(&mut f),
            Ok(Err(e)) => {
                if first_err.is_none() {
                    first_err = Some(e);
                    set.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                first_err.get_or_insert(OpError::Unavailable(format!("part task failed: {e}")));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    // The stored modification time, set before the file is published so
    // that no reader sees it with another (the partial stays locked).
    set_mtime_ns(&file, m.mtime_ns).map_err(io_err(&tmp_path))?;
    file.sync_all().map_err(io_err(&tmp_path))?;
    // Never replace a file that appeared meanwhile unless asked to. The
    // partial file stays open (locked against sweeps) until published.
    publish(&tmp_path, out, replace).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            OpError::Exists(out.to_path_buf())
        } else {
            OpError::Io {
                path: out.to_path_buf(),
                source: e,
            }
        }
    })?;
    if replace {
        guard.disarm();
    } else {
        // The link is in place; the temporary name goes with the guard.
        drop(guard);
    }
    drop(file);
    let _ = sync_dir(&dir);
    Ok(GetReport {
        path: out.to_path_buf(),
        size: m.size,
        failovers,
    })
}

struct PartFetch {
    k: usize,
    offset: u64,
    len: u64,
    keys: PartKeys,
    file: Arc<File>,
    progress: ProgressRef,
}

/// Why an attempt at a part ended.
enum Failure {
    /// The holder sent nothing for [`SWITCH_AFTER`] while the other could
    /// serve.
    Silent,
    /// Anything else, in words.
    Failed(String),
}

impl From<PartError> for Failure {
    fn from(e: PartError) -> Self {
        match e {
            PartError::Silent(_) => Failure::Silent,
            other => Failure::Failed(other.to_string()),
        }
    }
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Failure::Failed(why)
    }
}

/// How much of a part is written: whole chunks, so another copy can take
/// over at the next one.
#[derive(Debug, Default)]
struct Written {
    /// Chunks decrypted and written.
    chunks: u64,
    /// The last chunk among them: the part is complete.
    complete: bool,
}

impl PartFetch {
    /// Tries the holders in turn (quiet ones last), each taking over from
    /// the first chunk not yet written; returns the failures it recovered
    /// from. A holder passed over for silence is tried again, without the
    /// silence limit, if the others fail.
    async fn run(
        self,
        candidates: Vec<Session>,
        holders: Vec<(String, String)>,
    ) -> Result<Vec<String>, OpError> {
        let mut failures = Vec::new();
        let mut order = candidates.clone();
        order.sort_by_key(Session::is_quiet);
        let mut queue: VecDeque<(Session, bool)> = order.into_iter().map(|s| (s, false)).collect();
        let mut written = Written::default();
        while let Some((s, again)) = queue.pop_front() {
            let silence = (!queue.is_empty()).then_some(SWITCH_AFTER);
            // A node must deliver at least MIN_RATE (after a grace period)
            // or the other copy is used.
            let deadline = Duration::from_secs(30) + Duration::from_secs(self.len / MIN_RATE);
            let attempt =
                tokio::time::timeout(deadline, self.fetch_from(&s, &mut written, silence))
                    .await
                    .unwrap_or_else(|_| Err(format!("too slow (over {deadline:?})").into()));
            let why = match attempt {
                Ok(()) => {
                    // A holder passed over for being quiet is a failover
                    // the user hears about too.
                    for (q, _) in queue.iter().filter(|(q, again)| !again && q.is_quiet()) {
                        failures.push(format!(
                            "{}: not answering, the other copy was used",
                            q.name
                        ));
                    }
                    return Ok(failures);
                }
                Err(Failure::Silent) => {
                    if !again {
                        queue.push_back((s.clone(), true));
                    }
                    format!("sent nothing for {SWITCH_AFTER:?}")
                }
                Err(Failure::Failed(why)) => why,
            };
            tracing::warn!(node = %s.name, part = self.k + 1, "falling back to the other copy: {why}");
            failures.push(format!("{}: {why}", s.name));
        }
        let mut why = failures.clone();
        why.extend(
            holders
                .iter()
                .filter(|(h, _)| !candidates.iter().any(|c| &c.name == h))
                .map(|(h, reason)| format!("{h}: {reason}")),
        );
        Err(OpError::Unavailable(format!(
            "part {} cannot be read from any node holding it ({})",
            self.k + 1,
            why.join("; ")
        )))
    }

    /// Fetches the part from `s`, from the first chunk not yet `written`
    /// (the chunks before it are read past, not decrypted again). With
    /// `silence`, gives up when `s` sends nothing for that long.
    async fn fetch_from(
        &self,
        s: &Session,
        written: &mut Written,
        silence: Option<Duration>,
    ) -> Result<(), Failure> {
        if written.complete {
            return Ok(());
        }
        let options = ReadOptions {
            from_chunk: written.chunks,
            silence,
            keep_ciphertext: false,
        };
        let mut part = PartReader::open(s, &self.keys, self.len, options).await?;
        let mut done = written.chunks * CHUNK_LEN as u64;
        while let Some(plain) = part.next().await? {
            self.file
                .write_all_at(plain, self.offset + done)
                .map_err(|e| format!("writing the output: {e}"))?;
            done += plain.len() as u64;
            written.chunks += 1;
            self.progress.advance(plain.len() as u64);
            written.complete = part.opened_last();
        }
        Ok(())
    }
}
