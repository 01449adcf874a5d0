//! `ListData{after, prefix, max_entries, max_bytes, max_inline}` ->
//! `DataListing{entries, more}` + the bytes of every entry at most
//! `max_inline` bytes long, in entry order, streamed from files opened
//! before the answer was made.
//!
//! The page holds the user's blobs whose id starts with `prefix`, in id
//! order after `after`, found in the index as `List`'s are. It ends after
//! `max_entries` entries, before the inline bytes would pass `max_bytes`
//! (the first entry always comes), or before the answer's frame would pass
//! [`wire::MAX_FRAME_BODY_LEN`] (512 entries with the longest ids would
//! not fit), with `more` set. A small blob deleted after the index was
//! read is left out rather than listed without its bytes; one replaced is
//! listed, length and time, as the file that is sent. The decoder bounds
//! the fields ([`wire::MAX_BATCH`] entries, [`wire::MAX_LIST_DATA_BYTES`],
//! [`wire::MAX_INLINE_LEN`]).

use wire::{BlobId, Response, MAX_BATCH, MAX_FRAME_BODY_LEN, MAX_INLINE_LEN, MAX_LIST_DATA_BYTES};

use super::{read_failed, Ctx, Reply};
use crate::store::{DataEntry, DataLimits};

/// The request's bounds on a page.
pub(crate) struct Limits {
    pub max_entries: u32,
    pub max_bytes: u32,
    pub max_inline: u32,
}

/// Most bytes a `ListEntry` takes in CBOR besides its id's characters: the
/// map header, the three keys, the id's text header (up to 255
/// characters), two 64-bit integers.
const ENTRY_OVERHEAD: usize = 1 + 3 + 2 + 4 + 9 + 9 + 9;

/// Most bytes a `DataListing` takes in CBOR besides its entries.
const LISTING_OVERHEAD: usize = 64;

pub(crate) async fn run(
    ctx: &Ctx<'_>,
    after: Option<BlobId>,
    prefix: &str,
    limits: Limits,
) -> Result<Reply, Response> {
    let (user, _) = ctx.user()?;
    let limits = DataLimits {
        max_entries: limits.max_entries.clamp(1, MAX_BATCH as u32) as usize,
        max_inline: u64::from(limits.max_inline.min(MAX_INLINE_LEN)),
        max_bytes: u64::from(limits.max_bytes.min(MAX_LIST_DATA_BYTES)),
    };
    let mut page = ctx
        .node
        .blobs
        .list_data(&user, after, prefix, limits)
        .await
        .map_err(|e| read_failed("listing", &e))?;
    if fit_frame(&mut page.entries) {
        page.more = true;
    }
    let mut entries = Vec::with_capacity(page.entries.len());
    let mut files = Vec::new();
    for e in page.entries {
        entries.push(e.entry);
        files.extend(e.data);
    }
    Ok(Reply::Bulk {
        head: Response::DataListing {
            entries,
            more: page.more,
        },
        files,
    })
}

/// Drops the entries one frame cannot hold; whether it dropped any.
fn fit_frame(entries: &mut Vec<DataEntry>) -> bool {
    let mut size = LISTING_OVERHEAD;
    let fit = entries
        .iter()
        .take_while(|e| {
            size += ENTRY_OVERHEAD + e.entry.id.as_str().len();
            size <= MAX_FRAME_BODY_LEN
        })
        .count();
    let cut = fit < entries.len();
    entries.truncate(fit);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::ListEntry;

    fn page(id_len: usize, n: usize) -> Vec<DataEntry> {
        (0..n)
            .map(|i| DataEntry {
                entry: ListEntry {
                    id: BlobId::new(format!("{i:0id_len$x}")).unwrap(),
                    len: u64::MAX,
                    modified: u64::MAX,
                },
                data: None,
            })
            .collect()
    }

    fn encoded(entries: &[DataEntry]) -> usize {
        let resp = Response::DataListing {
            entries: entries.iter().map(|e| e.entry.clone()).collect(),
            more: true,
        };
        // Panics over MAX_FRAME_BODY_LEN.
        wire::encode_response(&resp).len() - wire::FRAME_PREFIX_LEN
    }

    #[test]
    fn the_longest_ids_are_cut_to_one_frame() {
        let mut entries = page(wire::id::MAX_BLOB_ID_LEN, MAX_BATCH);
        assert!(fit_frame(&mut entries));
        assert!(encoded(&entries) <= MAX_FRAME_BODY_LEN);
        // The estimate wastes at most a couple of entries' room.
        let entry = ENTRY_OVERHEAD + wire::id::MAX_BLOB_ID_LEN;
        assert!(encoded(&entries) + 2 * entry > MAX_FRAME_BODY_LEN);
    }

    #[test]
    fn a_full_page_of_client_ids_fits() {
        // The client's ids: `m2-` or `p2-` and 64 hex digits.
        let mut entries = page(67, MAX_BATCH);
        assert!(!fit_frame(&mut entries));
        assert_eq!(entries.len(), MAX_BATCH);
        assert!(encoded(&entries) <= MAX_FRAME_BODY_LEN);
    }
}
