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

/// What one blob costs against the quota besides its bytes: the index
/// entry, the directory entry and the file system's block it takes even
/// when empty. So a zero-length blob is not free, and a quota of `q` bytes
/// holds at most `q / BLOB_OVERHEAD` blobs.
pub const BLOB_OVERHEAD: u64 = 4096;

/// What a blob of `len` bytes counts against the quota.
pub(crate) fn charge(len: u64) -> u64 {
    len.saturating_add(BLOB_OVERHEAD)
}

/// A refused reservation: the numbers for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The user's bytes would pass the quota.
    Quota(OverQuota),
    /// The user's blob count would pass the cap.
    TooMany(TooManyBlobs),
}

/// Over the quota: the numbers for the error message. Every figure counts
/// each blob as [`charge`] of its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverQuota {
    pub quota: u64,
    /// Stored blobs plus the uploads in progress.
    pub used: u64,
    pub requested: u64,
    /// What the blobs the upload would replace count (0 if none).
    pub replaced: u64,
    /// Number of distinct blobs the upload would write.
    pub blobs: usize,
}

/// Over the blob count cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyBlobs {
    /// The cap.
    pub max: u64,
    /// Blobs stored plus new ones being uploaded.
    pub held: u64,
    /// New blobs (ids not stored yet) the upload would add.
    pub adding: u64,
}

/// What an upload (or one item of a batch) holds: its charge against the
/// quota, and its places under the blob count cap (one per new id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Hold {
    pub charge: u64,
    pub slots: u64,
}

/// One user's blobs.
#[derive(Debug, Default)]
pub(crate) struct UserIndex {
    blobs: BTreeMap<BlobId, BlobMeta>,
    /// Sum of `blobs[..].len`.
    bytes: u64,
    /// Charges of the uploads in progress.
    reserved: u64,
    /// New ids being uploaded (places held under the blob count cap).
    reserved_slots: u64,
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

    /// What the stored blobs count against the quota.
    fn charged(&self) -> u64 {
        (self.blobs.len() as u64)
            .saturating_mul(BLOB_OVERHEAD)
            .saturating_add(self.bytes)
    }

    /// Charges reserved by uploads in progress.
    #[cfg(test)]
    pub(crate) fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Places under the blob count cap held by uploads in progress.
    #[cfg(test)]
    pub(crate) fn reserved_slots(&self) -> u64 {
        self.reserved_slots
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

    /// Reserves [`charge`]`(len)` for an upload of `id` if the user stays
    /// within `quota` and `max_blobs`, counting stored blobs, uploads in
    /// progress and, as freed, the blob the upload replaces.
    #[cfg(test)]
    pub(crate) fn reserve(
        &mut self,
        id: &BlobId,
        len: u64,
        quota: Option<u64>,
    ) -> Result<Hold, Refusal> {
        Ok(self.reserve_many([(id, len)], quota, u64::MAX)?[0])
    }

    /// Reserves the charges of several uploads at once, all or nothing, as
    /// [`UserIndex::reserve`] does for one: every blob they replace counts
    /// as freed once, however often its id appears. Each distinct id not
    /// stored yet holds one place under `max_blobs` (its first item).
    /// Returns what each item holds, in order.
    pub(crate) fn reserve_many<'a>(
        &mut self,
        items: impl IntoIterator<Item = (&'a BlobId, u64)>,
        quota: Option<u64>,
        max_blobs: u64,
    ) -> Result<Vec<Hold>, Refusal> {
        let mut ids = BTreeSet::new();
        let mut holds = Vec::new();
        let mut len = 0u64;
        let mut adding = 0u64;
        for (id, n) in items {
            let first = ids.insert(id);
            let slots = u64::from(first && !self.blobs.contains_key(id));
            adding += slots;
            let hold = Hold {
                charge: charge(n),
                slots,
            };
            len = len.saturating_add(hold.charge);
            holds.push(hold);
        }
        let held = (self.blobs.len() as u64).saturating_add(self.reserved_slots);
        if adding > 0 && held.saturating_add(adding) > max_blobs {
            return Err(Refusal::TooMany(TooManyBlobs {
                max: max_blobs,
                held,
                adding,
            }));
        }
        if let Some(quota) = quota {
            let used = self.charged().saturating_add(self.reserved);
            let replaced = ids
                .iter()
                .filter_map(|id| self.blobs.get(*id))
                .fold(0u64, |t, m| t.saturating_add(charge(m.len)));
            let after = used.saturating_add(len).saturating_sub(replaced);
            if after > quota {
                return Err(Refusal::Quota(OverQuota {
                    quota,
                    used,
                    requested: len,
                    replaced,
                    blobs: ids.len(),
                }));
            }
        }
        self.reserved = self.reserved.saturating_add(len);
        self.reserved_slots = self.reserved_slots.saturating_add(adding);
        Ok(holds)
    }

    /// Gives back a reservation whose upload ended without a blob.
    pub(crate) fn release(&mut self, hold: Hold) {
        self.reserved = self.reserved.saturating_sub(hold.charge);
        self.reserved_slots = self.reserved_slots.saturating_sub(hold.slots);
    }

    /// An upload that reserved `hold` became blob `id`.
    pub(crate) fn committed(&mut self, id: BlobId, meta: BlobMeta, hold: Hold) {
        self.release(hold);
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
            ix.committed(id(name), meta(len), Hold::default());
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
        ix.committed(id("a"), meta(10), Hold::default());
        ix.committed(id("b"), meta(5), Hold::default());
        ix.committed(id("a"), meta(4), Hold::default());
        assert_eq!(ix.usage(), (2, 9));
        ix.removed(&id("a"));
        ix.removed(&id("a"));
        assert_eq!(ix.usage(), (1, 5));
    }

    const O: u64 = BLOB_OVERHEAD;

    #[test]
    fn reservations_count_against_the_quota_until_settled() {
        let mut ix = UserIndex::default();
        ix.committed(id("a"), meta(40), Hold::default());
        let q = Some(100 + 2 * O);
        // Exactly up to the quota is allowed; one byte more is not.
        let b = ix.reserve(&id("b"), 60, q).unwrap();
        assert_eq!(
            b,
            Hold {
                charge: 60 + O,
                slots: 1
            }
        );
        let err = ix.reserve(&id("c"), 0, q).unwrap_err();
        assert_eq!(
            err,
            Refusal::Quota(OverQuota {
                quota: 100 + 2 * O,
                used: 100 + 2 * O,
                requested: O,
                replaced: 0,
                blobs: 1,
            }),
            "a zero-length blob is not free"
        );
        // Replacing a blob counts only the difference.
        assert!(ix.reserve(&id("a"), 41, q).is_err());
        let a = ix.reserve(&id("a"), 40, q).unwrap();
        assert_eq!(a.slots, 0, "a replacement adds no blob");
        ix.release(a);
        ix.release(b);
        assert_eq!((ix.reserved(), ix.reserved_slots()), (0, 0));
        let a = ix.reserve(&id("a"), 100 + O, q).unwrap();
        ix.committed(id("a"), meta(100 + O), a);
        assert_eq!((ix.usage(), ix.reserved()), ((1, 100 + O), 0));
        // No quota: anything goes.
        assert!(ix.reserve(&id("z"), u64::MAX, None).is_ok());
    }

    #[test]
    fn the_blob_count_cap_counts_stored_and_new_ids_being_uploaded() {
        let mut ix = UserIndex::default();
        ix.committed(id("a"), meta(1), Hold::default());
        let (a, b, c) = (id("a"), id("b"), id("c"));
        // a is stored; b is new: 2 of 2.
        let holds = ix
            .reserve_many([(&a, 1), (&b, 1), (&b, 1)], None, 2)
            .unwrap();
        assert_eq!(holds.iter().filter(|h| h.slots == 1).count(), 1);
        // c would be a third blob while b is being uploaded.
        let err = ix.reserve_many([(&c, 1)], None, 2).unwrap_err();
        assert_eq!(
            err,
            Refusal::TooMany(TooManyBlobs {
                max: 2,
                held: 2,
                adding: 1
            })
        );
        // Replacing a stored blob is always allowed.
        let r = ix.reserve_many([(&a, 5)], None, 2).unwrap();
        ix.release(r[0]);
        for (i, h) in holds.into_iter().enumerate() {
            if i == 0 {
                ix.release(h);
            } else {
                ix.committed(b.clone(), meta(1), h);
            }
        }
        assert_eq!((ix.usage().0, ix.reserved_slots()), (2, 0));
        assert!(ix.reserve_many([(&c, 1)], None, 2).is_err());
        ix.removed(&a);
        assert!(ix.reserve_many([(&c, 1)], None, 2).is_ok());
    }

    #[test]
    fn prefix_pages_start_at_the_prefix_and_stop_past_it() {
        let mut ix = UserIndex::default();
        for name in ["a", "m2-a", "m2-b", "m2-c", "m3-a", "p2-a"] {
            ix.committed(id(name), meta(1), Hold::default());
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
        ix.committed(id("a"), meta(30), Hold::default());
        let (a, b) = (id("a"), id("b"));
        let q = Some(90 + 2 * O);
        // a (30 + O) is replaced: (30 + O) + (50 + O) + (40 + O) - (30 + O) fits.
        let holds = ix.reserve_many([(&a, 50), (&b, 40)], q, u64::MAX).unwrap();
        assert_eq!(ix.reserved(), 90 + 2 * O);
        for h in holds {
            ix.release(h);
        }
        // `a` twice frees its charge once: (30 + O) + 2 (50 + O) - (30 + O).
        let err = ix
            .reserve_many([(&a, 50), (&a, 50)], q, u64::MAX)
            .unwrap_err();
        assert_eq!(
            err,
            Refusal::Quota(OverQuota {
                quota: 90 + 2 * O,
                used: 30 + O,
                requested: 100 + 2 * O,
                replaced: 30 + O,
                blobs: 1
            })
        );
        assert_eq!(ix.reserved(), 0, "a refused batch reserves nothing");
    }
}
