//! Per-user blob folders.
//!
//! `<root>/<user>/<blob-id>` holds one blob; `<root>/<user>/.tmp/` holds
//! uploads in progress. A blob becomes visible only by `rename` after its
//! bytes are durable, so readers and listings never see a partial blob.
//! Paths are built only from a lower-case user name that passed
//! [`wire::normalize_user`] and a [`BlobId`] (one plain component each).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use wire::{BlobId, ListEntry};

use crate::fsutil::{random_hex, sync_dir, TempGuard};

/// Name of the per-user folder of uploads in progress.
pub const TMP_DIR: &str = ".tmp";

/// Upload bytes gathered before one blocking write.
const WRITE_BUF: usize = 512 * 1024;

/// The blob folders under a node's root.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// An upload in progress: bytes go to a temp file that is removed unless
/// [`PendingBlob::commit`] renames it into place.
#[derive(Debug)]
pub struct PendingBlob {
    /// `None` only while a write is in flight on a blocking thread.
    file: Option<std::fs::File>,
    /// Bytes not yet written: QUIC hands over packet-sized pieces, and one
    /// blocking write per piece would cost more than the copy.
    buf: Vec<u8>,
    guard: TempGuard,
    dir: PathBuf,
    target: PathBuf,
    written: u64,
}

fn bad_user() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "invalid user folder name")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

impl BlobStore {
    /// Blob folders under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        BlobStore { root: root.into() }
    }

    /// `<root>/<user>`; `user` must already be normalised (lower case).
    pub fn user_dir(&self, user: &str) -> io::Result<PathBuf> {
        if wire::normalize_user(user).as_deref() != Some(user) {
            return Err(bad_user());
        }
        Ok(self.root.join(user))
    }

    /// Removes every leftover upload (`<root>/*/.tmp/*`). Run at start.
    pub fn clean_temp(&self) -> io::Result<usize> {
        let mut removed = 0;
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if !entry.file_type()?.is_dir() || entry.file_name().to_string_lossy().starts_with('.')
            {
                continue;
            }
            let tmp = entry.path().join(TMP_DIR);
            let Ok(files) = std::fs::read_dir(&tmp) else {
                continue;
            };
            for f in files {
                let f = f?;
                if f.file_type()?.is_file() {
                    std::fs::remove_file(f.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Starts an upload of blob `id` for `user`.
    pub async fn begin_put(&self, user: &str, id: &BlobId) -> io::Result<PendingBlob> {
        let dir = self.user_dir(user)?;
        let tmp_dir = dir.join(TMP_DIR);
        tokio::fs::create_dir_all(&tmp_dir).await?;
        let guard = TempGuard::new(tmp_dir.join(format!("{}.tmp", random_hex(16)?)));
        let path = guard.path().to_path_buf();
        let file = blocking(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
        })
        .await?;
        Ok(PendingBlob {
            file: Some(file),
            buf: Vec::with_capacity(WRITE_BUF),
            guard,
            target: dir.join(id.as_str()),
            dir,
            written: 0,
        })
    }

    /// Opens blob `id` for reading: the file and its length, `None` if absent.
    /// The open file keeps its contents even if the blob is replaced or
    /// deleted meanwhile.
    pub async fn open(
        &self,
        user: &str,
        id: &BlobId,
    ) -> io::Result<Option<(tokio::fs::File, u64)>> {
        let path = self.user_dir(user)?.join(id.as_str());
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata().await?;
        if !meta.is_file() {
            return Ok(None);
        }
        Ok(Some((file, meta.len())))
    }

    /// Deletes blob `id`; `false` if there was none.
    pub async fn delete(&self, user: &str, id: &BlobId) -> io::Result<bool> {
        let dir = self.user_dir(user)?;
        let path = dir.join(id.as_str());
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&dir).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    /// One page of `user`'s blobs in id order after `after`, at most `limit`
    /// entries, and whether more follow. Memory stays bounded by `limit`
    /// whatever the folder holds; names that are not blob ids are skipped.
    pub async fn list(
        &self,
        user: &str,
        after: Option<BlobId>,
        limit: usize,
    ) -> io::Result<(Vec<ListEntry>, bool)> {
        let dir = self.user_dir(user)?;
        blocking(move || {
            let mut page: BTreeSet<BlobId> = BTreeSet::new();
            for_each_blob(&dir, |id, _| {
                if after.as_ref().is_some_and(|a| &id <= a) {
                    return;
                }
                page.insert(id);
                if page.len() > limit + 1 {
                    page.pop_last();
                }
            })?;
            let more = page.len() > limit;
            let mut entries = Vec::with_capacity(limit.min(page.len()));
            for id in page.into_iter().take(limit) {
                // A blob deleted since the scan is simply left out.
                if let Ok(meta) = std::fs::metadata(dir.join(id.as_str())) {
                    entries.push(ListEntry {
                        id,
                        len: meta.len(),
                        modified: unix_secs(&meta),
                    });
                }
            }
            Ok((entries, more))
        })
        .await
    }

    /// Number of blobs and bytes held for `user`.
    pub async fn usage(&self, user: &str) -> io::Result<(u64, u64)> {
        let dir = self.user_dir(user)?;
        blocking(move || {
            let (mut blobs, mut bytes) = (0u64, 0u64);
            for_each_blob(&dir, |_, len| {
                blobs += 1;
                bytes += len;
            })?;
            Ok((blobs, bytes))
        })
        .await
    }
}

/// Modification time in whole seconds since the Unix epoch (0 if unknown).
fn unix_secs(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Calls `f(id, len)` for each regular file in `dir` named like a blob id.
fn for_each_blob(dir: &Path, mut f: impl FnMut(BlobId, u64)) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(id) = BlobId::new(name) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_file() {
            f(id, meta.len());
        }
    }
    Ok(())
}

impl PendingBlob {
    /// Appends bytes to the upload.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
        if self.buf.len() >= WRITE_BUF {
            self.flush_buf().await?;
        }
        Ok(())
    }

    /// Writes the buffered bytes on a blocking thread.
    async fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("an earlier write failed"))?;
        let buf = std::mem::take(&mut self.buf);
        let (file, mut buf) = blocking(move || {
            std::io::Write::write_all(&mut file, &buf)?;
            Ok((file, buf))
        })
        .await?;
        buf.clear();
        self.buf = buf;
        self.file = Some(file);
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the upload durable and visible: `sync_all`, rename over the
    /// blob's name, fsync the folder.
    pub async fn commit(mut self) -> io::Result<()> {
        self.flush_buf().await?;
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("an earlier write failed"))?;
        let (guard, target, dir) = (self.guard, self.target, self.dir);
        blocking(move || {
            file.sync_all()?;
            drop(file);
            std::fs::rename(guard.path(), &target)?;
            guard.commit();
            sync_dir(&dir)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> BlobId {
        BlobId::new(s).unwrap()
    }

    #[tokio::test]
    async fn put_list_delete() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::new(root.path());
        for name in ["c", "a", "b", "d"] {
            let mut p = store.begin_put("alice", &id(name)).await.unwrap();
            p.write(name.as_bytes()).await.unwrap();
            p.commit().await.unwrap();
        }
        std::fs::write(root.path().join("alice/NOT-AN-ID.txt"), b"x").unwrap();
        let (page, more) = store.list("alice", None, 2).await.unwrap();
        assert_eq!(
            page.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(more);
        let (page, more) = store.list("alice", Some(id("b")), 2).await.unwrap();
        assert_eq!(
            page.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["c", "d"]
        );
        assert!(!more);
        assert_eq!(store.usage("alice").await.unwrap(), (4, 4));
        assert!(store.delete("alice", &id("a")).await.unwrap());
        assert!(!store.delete("alice", &id("a")).await.unwrap());
        assert!(store.open("alice", &id("a")).await.unwrap().is_none());
        assert_eq!(store.list("bob", None, 10).await.unwrap(), (vec![], false));
    }

    #[tokio::test]
    async fn dropped_upload_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::new(root.path());
        let mut p = store.begin_put("alice", &id("x")).await.unwrap();
        p.write(b"partial").await.unwrap();
        drop(p);
        assert_eq!(
            std::fs::read_dir(root.path().join("alice/.tmp"))
                .unwrap()
                .count(),
            0
        );
        assert!(!root.path().join("alice/x").exists());
    }

    #[test]
    fn clean_temp_removes_leftovers() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("bob/.tmp")).unwrap();
        std::fs::write(root.path().join("bob/.tmp/1.tmp"), b"x").unwrap();
        std::fs::write(root.path().join("bob/keep"), b"x").unwrap();
        assert_eq!(BlobStore::new(root.path()).clean_temp().unwrap(), 1);
        assert!(root.path().join("bob/keep").exists());
    }

    #[test]
    fn refuses_unnormalised_users() {
        let store = BlobStore::new("/r");
        for bad in ["Alice", "..", "a/b", ".vault", ""] {
            assert!(store.user_dir(bad).is_err(), "{bad}");
        }
    }
}
