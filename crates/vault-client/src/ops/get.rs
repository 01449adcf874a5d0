//! GET: newest valid manifest, one copy of each part, failover, verify,
//! rename.
//!
//! Parts are decrypted chunk by chunk as they arrive and written at their
//! offset in a temporary file beside the target. Only authenticated
//! plaintext is ever written; the temporary file becomes the target only
//! when all four parts decrypted completely, and is removed otherwise.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use tokio::task::JoinSet;

use super::{fetch_versions, io_err, OpError, ProgressRef};
use crate::crypto::format::{part_blob_len, HEADER_LEN, PART_HEADER};
use crate::crypto::keys::PartKeys;
use crate::crypto::stream::{Decryptor, CT_CHUNK_LEN};
use crate::fsutil::{create_partial, parent_dir, publish, sweep_partials, sync_dir, TempGuard};
use crate::manifest::Manifest;
use crate::net::Session;
use crate::placement::nodes_for_part;
use crate::vault::Vault;

/// Slowest transfer rate (bytes/s) a node may serve a part at before the
/// other copy is tried.
const MIN_RATE: u64 = 1 << 20;

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

/// Looks up the newest live version of `name`.
pub async fn find(vault: &Vault, name: &str) -> Result<Manifest, OpError> {
    let id = vault.master().manifest_id(name);
    let versions = fetch_versions(vault, &id, None).await;
    versions
        .live()
        .cloned()
        .ok_or_else(|| OpError::NotFound(name.to_string()))
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
    sweep_partials(&parent_dir(out));
    get_version(vault, &m, out, replace, progress).await
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
        let holders: Vec<String> = nodes_for_part(m.placement(), k)
            .iter()
            .map(|&i| vault.node_name(i).to_string())
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

impl PartFetch {
    /// Tries each holder in turn; returns the failures it recovered from.
    async fn run(
        self,
        candidates: Vec<Session>,
        holders: Vec<String>,
    ) -> Result<Vec<String>, OpError> {
        let mut failures = Vec::new();
        for s in &candidates {
            // A node must deliver at least MIN_RATE (after a grace period)
            // or the other copy is used.
            let deadline = Duration::from_secs(30) + Duration::from_secs(self.len / MIN_RATE);
            let attempt = tokio::time::timeout(deadline, self.fetch_from(s))
                .await
                .unwrap_or_else(|_| Err(format!("too slow (over {deadline:?})")));
            match attempt {
                Ok(()) => return Ok(failures),
                Err(why) => {
                    tracing::warn!(node = %s.name, part = self.k + 1, "falling back to the other copy: {why}");
                    failures.push(format!("{}: {why}", s.name));
                }
            }
        }
        let down: Vec<&String> = holders
            .iter()
            .filter(|h| !candidates.iter().any(|c| &&c.name == h))
            .collect();
        let mut why = failures.clone();
        why.extend(down.iter().map(|h| format!("{h}: unreachable")));
        Err(OpError::Unavailable(format!(
            "part {} cannot be read from any node holding it ({})",
            self.k + 1,
            why.join("; ")
        )))
    }

    async fn fetch_from(&self, s: &Session) -> Result<(), String> {
        let expected = part_blob_len(self.len);
        let mut dl = s
            .get(&self.keys.id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "part missing".to_string())?;
        if dl.len != expected {
            dl.cancel();
            return Err("part has the wrong size".into());
        }
        // The header first: a part in another format is refused before any
        // decryption (it is also bound into every chunk's associated data).
        let mut header: Vec<u8> = Vec::with_capacity(HEADER_LEN);
        while header.len() < HEADER_LEN {
            let piece = dl
                .next_chunk(HEADER_LEN - header.len())
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "part ended early".to_string())?;
            header.extend_from_slice(&piece);
        }
        if header != PART_HEADER {
            dl.cancel();
            return Err("part is not in storage format 2".into());
        }
        let mut dec = Decryptor::new(&self.keys.key, &self.keys.ad);
        let mut buf: Vec<u8> = Vec::with_capacity(CT_CHUNK_LEN);
        let mut received = HEADER_LEN as u64;
        let mut written = 0u64;
        loop {
            let Some(piece) = dl
                .next_chunk(CT_CHUNK_LEN - buf.len())
                .await
                .map_err(|e| e.to_string())?
            else {
                break;
            };
            received += piece.len() as u64;
            buf.extend_from_slice(&piece);
            let last = received == expected;
            if buf.len() == CT_CHUNK_LEN || last {
                dec.open_chunk(&mut buf, last).map_err(|e| e.to_string())?;
                self.file
                    .write_all_at(&buf, self.offset + written)
                    .map_err(|e| format!("writing the output: {e}"))?;
                written += buf.len() as u64;
                self.progress.advance(buf.len() as u64);
                buf.clear();
                // Decryption is the CPU-heavy part of a GET: let the
                // connections' drivers run between chunks, or a busy
                // client stops hearing its nodes and takes them for dead.
                tokio::task::yield_now().await;
            }
        }
        dec.finish().map_err(|e| e.to_string())?;
        if written != self.len {
            return Err("part is shorter than the manifest says".into());
        }
        Ok(())
    }
}
