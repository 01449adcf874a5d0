//! Quota accounting: what a blob costs ([`BLOB_OVERHEAD`]), and the
//! reservations of uploads in progress, checked against the stored totals
//! read from the user's database.

use std::collections::BTreeMap;

use wire::BlobId;

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

/// Quota and blob places held by one user's uploads in progress (the
/// only per-user state kept in memory; the stored blobs' totals are in
/// the user's database).
#[derive(Debug, Default)]
pub(crate) struct Reserved {
    /// Charges of the uploads in progress.
    pub charge: u64,
    /// New ids being uploaded (places held under the blob count cap).
    pub slots: u64,
}

impl Reserved {
    /// Reserves the charges of several uploads at once, all or nothing,
    /// counting the stored blobs (`count` blobs of `bytes` bytes in all),
    /// the uploads in progress and, as freed, the blobs the upload
    /// replaces (`stored(id)`: the stored length of `id`, if any) once
    /// each, however often an id appears. Each distinct id not stored yet
    /// holds one place under `max_blobs` (its first item). Returns what
    /// each item holds, in order.
    pub(crate) fn reserve_many<'a>(
        &mut self,
        (count, bytes): (u64, u64),
        stored: impl Fn(&BlobId) -> Option<u64>,
        items: impl IntoIterator<Item = (&'a BlobId, u64)>,
        quota: Option<u64>,
        max_blobs: u64,
    ) -> Result<Vec<Hold>, Refusal> {
        let mut ids = BTreeMap::new();
        let mut holds = Vec::new();
        let mut len = 0u64;
        let mut adding = 0u64;
        for (id, n) in items {
            let slots = match ids.get(id) {
                Some(_) => 0,
                None => {
                    let old = stored(id);
                    ids.insert(id, old);
                    u64::from(old.is_none())
                }
            };
            adding += slots;
            let hold = Hold {
                charge: charge(n),
                slots,
            };
            len = len.saturating_add(hold.charge);
            holds.push(hold);
        }
        let held = count.saturating_add(self.slots);
        if adding > 0 && held.saturating_add(adding) > max_blobs {
            return Err(Refusal::TooMany(TooManyBlobs {
                max: max_blobs,
                held,
                adding,
            }));
        }
        if let Some(quota) = quota {
            let charged = count.saturating_mul(BLOB_OVERHEAD).saturating_add(bytes);
            let used = charged.saturating_add(self.charge);
            let replaced = ids
                .values()
                .flatten()
                .fold(0u64, |t, l| t.saturating_add(charge(*l)));
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
        self.charge = self.charge.saturating_add(len);
        self.slots = self.slots.saturating_add(adding);
        Ok(holds)
    }

    /// Gives back a reservation (its upload ended, stored or not).
    pub(crate) fn release(&mut self, hold: Hold) {
        self.charge = self.charge.saturating_sub(hold.charge);
        self.slots = self.slots.saturating_sub(hold.slots);
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

    const O: u64 = BLOB_OVERHEAD;

    /// Stored blobs for the tests: id -> length.
    struct Fake(BTreeMap<BlobId, u64>);

    impl Fake {
        fn totals(&self) -> (u64, u64) {
            (self.0.len() as u64, self.0.values().sum())
        }
        fn reserve(
            &self,
            r: &mut Reserved,
            items: &[(&BlobId, u64)],
            quota: Option<u64>,
            max: u64,
        ) -> Result<Vec<Hold>, Refusal> {
            r.reserve_many(
                self.totals(),
                |i| self.0.get(i).copied(),
                items.iter().copied(),
                quota,
                max,
            )
        }
    }

    #[test]
    fn reservations_count_against_the_quota_until_settled() {
        let mut stored = Fake(BTreeMap::new());
        stored.0.insert(id("a"), 40);
        let mut r = Reserved::default();
        let q = Some(100 + 2 * O);
        let b = stored
            .reserve(&mut r, &[(&id("b"), 60)], q, u64::MAX)
            .unwrap()[0];
        assert_eq!(
            b,
            Hold {
                charge: 60 + O,
                slots: 1
            }
        );
        let err = stored
            .reserve(&mut r, &[(&id("c"), 0)], q, u64::MAX)
            .unwrap_err();
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
        assert!(stored
            .reserve(&mut r, &[(&id("a"), 41)], q, u64::MAX)
            .is_err());
        let a = stored
            .reserve(&mut r, &[(&id("a"), 40)], q, u64::MAX)
            .unwrap()[0];
        assert_eq!(a.slots, 0, "a replacement adds no blob");
        r.release(a);
        r.release(b);
        assert_eq!((r.charge, r.slots), (0, 0));
        assert!(stored
            .reserve(&mut r, &[(&id("z"), u64::MAX)], None, u64::MAX)
            .is_ok());
    }

    #[test]
    fn the_blob_count_cap_counts_stored_and_new_ids_being_uploaded() {
        let mut stored = Fake(BTreeMap::new());
        stored.0.insert(id("a"), 1);
        let mut r = Reserved::default();
        let (a, b, c) = (id("a"), id("b"), id("c"));
        let holds = stored
            .reserve(&mut r, &[(&a, 1), (&b, 1), (&b, 1)], None, 2)
            .unwrap();
        assert_eq!(holds.iter().filter(|h| h.slots == 1).count(), 1);
        let err = stored.reserve(&mut r, &[(&c, 1)], None, 2).unwrap_err();
        assert_eq!(
            err,
            Refusal::TooMany(TooManyBlobs {
                max: 2,
                held: 2,
                adding: 1
            })
        );
        // Replacing a stored blob is always allowed.
        let x = stored.reserve(&mut r, &[(&a, 5)], None, 2).unwrap();
        r.release(x[0]);
        for h in holds {
            r.release(h);
        }
        stored.0.insert(b.clone(), 1);
        assert!(stored.reserve(&mut r, &[(&c, 1)], None, 2).is_err());
        stored.0.remove(&a);
        assert!(stored.reserve(&mut r, &[(&c, 1)], None, 2).is_ok());
    }

    #[test]
    fn a_batch_reserves_all_or_nothing_and_frees_each_replaced_blob_once() {
        let mut stored = Fake(BTreeMap::new());
        stored.0.insert(id("a"), 30);
        let mut r = Reserved::default();
        let (a, b) = (id("a"), id("b"));
        let q = Some(90 + 2 * O);
        let holds = stored
            .reserve(&mut r, &[(&a, 50), (&b, 40)], q, u64::MAX)
            .unwrap();
        assert_eq!(r.charge, 90 + 2 * O);
        for h in holds {
            r.release(h);
        }
        let err = stored
            .reserve(&mut r, &[(&a, 50), (&a, 50)], q, u64::MAX)
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
        assert_eq!(r.charge, 0, "a refused batch reserves nothing");
    }
}
