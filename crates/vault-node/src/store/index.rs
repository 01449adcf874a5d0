//! The in-memory index of one user's blobs: id order, sizes and times,
//! running totals and the bytes reserved by uploads in progress.
//!
//! It is built by one scan of the user's folder and then kept by the
//! store, which updates it under its lock together with every rename into
//! the folder and every removal from it. Listings and usage come from here,
//! never from the folder again.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Bound;
use std::path::Path;

use wire::{BlobId, ListEntry};

/// What the index keeps of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobMeta {
    /// Size in bytes.
    pub len: u64,
    /// Modification time, seconds since the Unix epoch (0 if unknown).
    pub modified: u64,
}

/// A refused reservation: the numbers for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverQuota {
    pub quota: u64,
    /// Stored bytes plus bytes reserved by uploads in progress.
    pub used: u64,
    pub requested: u64,
    /// Size of the blobs the upload would replace (0 if none).
    pub replaced: u64,
    /// Number of distinct blobs the upload would write.
    pub blobs: usize,
}

/// One user's blobs.
#[derive(Debug, Default)]
pub(crate) struct UserIndex {
    blobs: BTreeMap<BlobId, BlobMeta>,
    /// Sum of `blobs[..].len`.
    bytes: u64,
    /// Announced lengths of the uploads in progress.
    reserved: u64,
}

impl UserIndex {
    /// Reads `dir` once: every regular file named like a blob id. A missing
    /// folder is an empty index.
    pub(crate) fn scan(dir: &Path) -> io::Result<UserIndex> {
        let mut index = UserIndex::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(index),
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
                index.insert(
                    id,
                    BlobMeta {
                        len: meta.len(),
                        modified: unix_secs(&meta),
                    },
                );
            }
        }
        Ok(index)
    }

    /// Number of blobs and their bytes.
    pub(crate) fn usage(&self) -> (u64, u64) {
        (self.blobs.len() as u64, self.bytes)
    }

    /// Bytes reserved by uploads in progress.
    #[cfg(test)]
    pub(crate) fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Up to `limit` entries after `after` whose id starts with `prefix`
    /// (`""`: every id), in id order, and whether more such entries follow:
    /// O(log n + limit). The walk starts at the later of `after` and
    /// `prefix` and stops at the first id past the prefix.
    pub(crate) fn page(
        &self,
        after: Option<&BlobId>,
        prefix: &str,
        limit: usize,
    ) -> (Vec<ListEntry>, bool) {
        // A non-empty prefix is itself a valid id: the smallest one it starts.
        let first = BlobId::new(prefix).ok();
        let start = match (after, first.as_ref()) {
            (Some(a), Some(p)) if a < p => Bound::Included(p),
            (Some(a), _) => Bound::Excluded(a),
            (None, Some(p)) => Bound::Included(p),
            (None, None) => Bound::Unbounded,
        };
        let mut range = self
            .blobs
            .range::<BlobId, _>((start, Bound::Unbounded))
            .take_while(|(id, _)| id.as_str().starts_with(prefix));
        let entries: Vec<ListEntry> = range
            .by_ref()
            .take(limit)
            .map(|(id, m)| ListEntry {
                id: id.clone(),
                len: m.len,
                modified: m.modified,
            })
            .collect();
        (entries, range.next().is_some())
    }

    /// What the index holds of blob `id`.
    pub(crate) fn get(&self, id: &BlobId) -> Option<BlobMeta> {
        self.blobs.get(id).copied()
    }

    /// Reserves `len` bytes for an upload of `id` if the user stays within
    /// `quota`, counting stored bytes, uploads in progress and, as freed,
    /// the blob the upload replaces.
    pub(crate) fn reserve(
        &mut self,
        id: &BlobId,
        len: u64,
        quota: Option<u64>,
    ) -> Result<(), OverQuota> {
        self.reserve_many([(id, len)], quota)
    }

    /// Reserves the total length of several uploads at once, all or
    /// nothing, as [`UserIndex::reserve`] does for one: every blob they
    /// replace counts as freed once, however often its id appears.
    pub(crate) fn reserve_many<'a>(
        &mut self,
        items: impl IntoIterator<Item = (&'a BlobId, u64)>,
        quota: Option<u64>,
    ) -> Result<(), OverQuota> {
        let mut ids = BTreeSet::new();
        let mut len = 0u64;
        for (id, n) in items {
            ids.insert(id);
            len = len.saturating_add(n);
        }
        if let Some(quota) = quota {
            let used = self.bytes.saturating_add(self.reserved);
            let replaced = ids
                .iter()
                .filter_map(|id| self.blobs.get(*id))
                .fold(0u64, |t, m| t.saturating_add(m.len));
            let after = used.saturating_add(len).saturating_sub(replaced);
            if after > quota {
                return Err(OverQuota {
                    quota,
                    used,
                    requested: len,
                    replaced,
                    blobs: ids.len(),
                });
            }
        }
        self.reserved = self.reserved.saturating_add(len);
        Ok(())
    }

    /// Gives back a reservation whose upload ended without a blob.
    pub(crate) fn release(&mut self, len: u64) {
        self.reserved = self.reserved.saturating_sub(len);
    }

    /// An upload that reserved `reserved` bytes became blob `id`.
    pub(crate) fn committed(&mut self, id: BlobId, meta: BlobMeta, reserved: u64) {
        self.release(reserved);
        self.insert(id, meta);
    }

    fn insert(&mut self, id: BlobId, meta: BlobMeta) {
        if let Some(old) = self.blobs.insert(id, meta) {
            self.bytes = self.bytes.saturating_sub(old.len);
        }
        self.bytes = self.bytes.saturating_add(meta.len);
    }

    /// Blob `id` is gone.
    pub(crate) fn removed(&mut self, id: &BlobId) {
        if let Some(old) = self.blobs.remove(id) {
            self.bytes = self.bytes.saturating_sub(old.len);
        }
    }
}

/// Modification time in whole seconds since the Unix epoch (0 if unknown).
pub(crate) fn unix_secs(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> BlobId {
        BlobId::new(s).unwrap()
    }

    fn meta(len: u64) -> BlobMeta {
        BlobMeta { len, modified: 7 }
    }

    fn ids(entries: &[ListEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn pages_follow_id_order_and_say_whether_more_follow() {
        let mut ix = UserIndex::default();
        for (name, len) in [("c", 3), ("a", 1), ("b", 2)] {
            ix.committed(id(name), meta(len), 0);
        }
        let (p, more) = ix.page(None, "", 2);
        assert_eq!((ids(&p), more), (vec!["a", "b"], true));
        let (p, more) = ix.page(Some(&id("b")), "", 2);
        assert_eq!((ids(&p), more), (vec!["c"], false));
        // A resume point that is no longer there still works.
        let (p, more) = ix.page(Some(&id("bb")), "", 5);
        assert_eq!((ids(&p), more), (vec!["c"], false));
        let (p, more) = ix.page(Some(&id("c")), "", 5);
        assert!(p.is_empty() && !more);
        assert_eq!(p.first().map(|e| e.modified), None);
        assert_eq!(ix.page(None, "", 1).0[0].modified, 7);
    }

    #[test]
    fn totals_follow_replacements_and_removals() {
        let mut ix = UserIndex::default();
        ix.committed(id("a"), meta(10), 0);
        ix.committed(id("b"), meta(5), 0);
        ix.committed(id("a"), meta(4), 0);
        assert_eq!(ix.usage(), (2, 9));
        ix.removed(&id("a"));
        ix.removed(&id("a"));
        assert_eq!(ix.usage(), (1, 5));
    }

    #[test]
    fn reservations_count_against_the_quota_until_settled() {
        let mut ix = UserIndex::default();
        ix.committed(id("a"), meta(40), 0);
        // Exactly up to the quota is allowed; one byte more is not.
        assert!(ix.reserve(&id("b"), 60, Some(100)).is_ok());
        let err = ix.reserve(&id("c"), 1, Some(100)).unwrap_err();
        assert_eq!(
            err,
            OverQuota {
                quota: 100,
                used: 100,
                requested: 1,
                replaced: 0,
                blobs: 1,
            }
        );
        // Replacing a blob counts only the difference.
        assert!(ix.reserve(&id("a"), 41, Some(100)).is_err());
        assert!(ix.reserve(&id("a"), 40, Some(100)).is_ok());
        ix.release(40);
        ix.release(60);
        assert!(ix.reserve(&id("a"), 100, Some(100)).is_ok());
        ix.committed(id("a"), meta(100), 100);
        assert_eq!((ix.usage(), ix.reserved()), ((1, 100), 0));
        // No quota: anything goes.
        assert!(ix.reserve(&id("z"), u64::MAX, None).is_ok());
    }

    #[test]
    fn prefix_pages_start_at_the_prefix_and_stop_past_it() {
        let mut ix = UserIndex::default();
        for name in ["a", "m2-a", "m2-b", "m2-c", "m3-a", "p2-a"] {
            ix.committed(id(name), meta(1), 0);
        }
        let (p, more) = ix.page(None, "m2-", 2);
        assert_eq!((ids(&p), more), (vec!["m2-a", "m2-b"], true));
        let (p, more) = ix.page(Some(&id("m2-b")), "m2-", 2);
        assert_eq!(
            (ids(&p), more),
            (vec!["m2-c"], false),
            "m3-a is past the prefix"
        );
        // A resume point before the prefix starts at the prefix; one past
        // it gives an empty page.
        let (p, more) = ix.page(Some(&id("a")), "m2-", 10);
        assert_eq!((ids(&p), more), (vec!["m2-a", "m2-b", "m2-c"], false));
        let (p, more) = ix.page(Some(&id("n")), "m2-", 10);
        assert!(p.is_empty() && !more);
        // A prefix that is itself an id includes it; no match, no page.
        let (p, _) = ix.page(None, "m2-a", 10);
        assert_eq!(ids(&p), ["m2-a"]);
        assert_eq!(ix.page(None, "q", 10), (vec![], false));
        assert_eq!(ix.page(None, "", 10).0.len(), 6);
    }

    #[test]
    fn a_batch_reserves_all_or_nothing_and_frees_each_replaced_blob_once() {
        let mut ix = UserIndex::default();
        ix.committed(id("a"), meta(30), 0);
        let (a, b) = (id("a"), id("b"));
        // 30 stored; a (30) is replaced: 30 + 50 + 40 - 30 = 90 fits in 90.
        assert!(ix.reserve_many([(&a, 50), (&b, 40)], Some(90)).is_ok());
        assert_eq!(ix.reserved(), 90);
        ix.release(90);
        // `a` twice frees its 30 bytes once: 30 + 50 + 50 - 30 = 100 > 90.
        let err = ix.reserve_many([(&a, 50), (&a, 50)], Some(90)).unwrap_err();
        assert_eq!(
            err,
            OverQuota {
                quota: 90,
                used: 30,
                requested: 100,
                replaced: 30,
                blobs: 1
            }
        );
        assert_eq!(ix.reserved(), 0, "a refused batch reserves nothing");
    }
}
