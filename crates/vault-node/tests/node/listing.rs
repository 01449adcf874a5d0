//! Listings for many files: `List` by id prefix, and `ListData` pages
//! (entries with the contents of the small blobs), through a real node.

use std::collections::{BTreeMap, BTreeSet};

use vault_node::testing::raw::error_code;
use vault_node::testing::{timed, users_text, RawClient, TestNode};
use wire::{BlobId, ErrorCode, ListEntry, Request, Response, MAX_BATCH};

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

/// Stores `blobs` in batches of at most [`MAX_BATCH`].
async fn put_all(c: &RawClient, blobs: &BTreeMap<String, Vec<u8>>) {
    let all: Vec<(&str, &[u8])> = blobs
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    for chunk in all.chunks(MAX_BATCH) {
        let resp = c.put_blobs(chunk).await;
        assert_eq!(resp, Response::BatchStored { failed: vec![] });
    }
}

/// Every page of `List` with `prefix`, `limit` entries at a time.
async fn list_all(c: &RawClient, prefix: Option<&str>, limit: u32) -> Vec<ListEntry> {
    let (mut all, mut after) = (Vec::new(), None);
    loop {
        let req = Request::List {
            after: after.clone(),
            limit,
            prefix: prefix.map(str::to_string),
        };
        let Response::Listing { entries, more } = c.call(&req).await else {
            panic!("no listing");
        };
        assert!(entries.len() <= limit as usize);
        after = entries.last().map(|e| e.id.clone()).or(after);
        all.extend(entries);
        if !more {
            return all;
        }
    }
}

/// One `ListData` page: the entries, each with its bytes if inline, and
/// `more`.
async fn data_page(
    c: &RawClient,
    after: Option<BlobId>,
    prefix: &str,
    (max_entries, max_bytes, max_inline): (u32, u32, u32),
) -> (Vec<(ListEntry, Option<Vec<u8>>)>, bool) {
    let req = Request::ListData {
        after,
        prefix: prefix.into(),
        max_entries,
        max_bytes,
        max_inline,
    };
    let (resp, parts) = c.request_parts(&req, &[]).await.unwrap();
    let Response::DataListing { entries, more } = resp else {
        panic!("no data listing: {resp:?}");
    };
    let mut parts = parts.into_iter();
    let page = entries
        .into_iter()
        .map(|e| {
            let data = (e.len <= u64::from(max_inline)).then(|| parts.next().unwrap());
            (e, data)
        })
        .collect();
    (page, more)
}

#[tokio::test]
async fn list_by_prefix_stops_past_the_prefix() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let mut blobs = BTreeMap::new();
        for i in 0..40 {
            blobs.insert(format!("m2-{i:03}"), vec![1]);
            blobs.insert(format!("p2-{i:03}"), vec![2, 2]);
        }
        for other in ["a", "m2", "m3-000", "m20", "z"] {
            blobs.insert(other.to_string(), vec![3]);
        }
        put_all(&c, &blobs).await;
        let names = |entries: &[ListEntry]| -> Vec<String> {
            entries.iter().map(|e| e.id.to_string()).collect()
        };
        let m2: Vec<String> = blobs
            .keys()
            .filter(|k| k.starts_with("m2-"))
            .cloned()
            .collect();
        assert_eq!(names(&list_all(&c, Some("m2-"), 7).await), m2);
        let p2 = list_all(&c, Some("p2-"), 256).await;
        assert_eq!(p2.len(), 40);
        assert!(p2.iter().all(|e| e.len == 2));
        // `m2` matches itself, `m2-...` and `m20`; no prefix lists all.
        assert_eq!(list_all(&c, Some("m2"), 256).await.len(), 42);
        assert_eq!(list_all(&c, None, 256).await.len(), blobs.len());
        assert_eq!(list_all(&c, Some(""), 256).await.len(), blobs.len());
        assert!(list_all(&c, Some("q"), 10).await.is_empty());
        // A resume point before the prefix starts at the prefix, one past
        // it ends the listing; the page that reaches the prefix's end says
        // no more follow.
        let req = |after: &str, limit| Request::List {
            after: Some(id(after)),
            limit,
            prefix: Some("m2-".into()),
        };
        let Response::Listing { entries, more } = c.call(&req("a", 3)).await else {
            panic!()
        };
        assert_eq!((names(&entries), more), (m2[..3].to_vec(), true));
        let Response::Listing { entries, more } = c.call(&req("m2-037", 3)).await else {
            panic!()
        };
        assert_eq!((names(&entries), more), (m2[38..].to_vec(), false));
        assert_eq!(
            c.call(&req("n", 3)).await,
            Response::Listing {
                entries: vec![],
                more: false
            }
        );
        // Prefixes outside the id alphabet or too long are refused.
        for bad in [
            "M2-",
            "m2.",
            "../",
            "a/b",
            &"m".repeat(wire::MAX_ID_PREFIX_LEN + 1),
        ] {
            let req = Request::List {
                after: None,
                limit: 5,
                prefix: Some(bad.into()),
            };
            assert_eq!(
                error_code(&c.call(&req).await),
                Some(ErrorCode::BadRequest),
                "{bad}"
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_data_pages_through_thousands_of_blobs_within_their_bounds() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        const MAX_INLINE: u32 = 1000;
        const MAX_BYTES: u32 = 40_000;
        let mut blobs = BTreeMap::new();
        for i in 0..3000u32 {
            // Mostly small, every 50th too large to come inline, a few
            // exactly at the bound, some empty.
            let len = match i % 50 {
                0 => 1500 + i as usize,
                1 => MAX_INLINE as usize,
                _ => (i as usize * 37) % 600,
            };
            let data: Vec<u8> = (0..len).map(|k| (k as u32 * 7 + i) as u8).collect();
            blobs.insert(format!("m2-{:064x}", u64::from(i) * 2_654_435_761), data);
        }
        // Other prefixes, never listed.
        for i in 0..100 {
            blobs.insert(format!("p2-{i:064x}"), vec![9; 10]);
            blobs.insert(format!("m3-{i:064x}"), vec![9; 10]);
        }
        put_all(&c, &blobs).await;

        let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
        loop {
            let (page, more) =
                data_page(&c, after.clone(), "m2-", (512, MAX_BYTES, MAX_INLINE)).await;
            pages += 1;
            assert!(!page.is_empty() && page.len() <= 512);
            let inline: u64 = page
                .iter()
                .filter_map(|(_, d)| d.as_ref())
                .map(|d| d.len() as u64)
                .sum();
            assert!(inline <= u64::from(MAX_BYTES), "page of {inline} bytes");
            after = page.last().map(|(e, _)| e.id.clone());
            seen.extend(page);
            if !more {
                break;
            }
        }
        let m2: Vec<(&String, &Vec<u8>)> =
            blobs.iter().filter(|(k, _)| k.starts_with("m2-")).collect();
        assert_eq!(seen.len(), m2.len(), "every blob exactly once");
        let inline_total: usize = m2
            .iter()
            .filter(|(_, d)| d.len() <= MAX_INLINE as usize)
            .map(|(_, d)| d.len())
            .sum();
        assert!(pages >= inline_total / MAX_BYTES as usize, "{pages} pages");
        for ((entry, data), (name, want)) in seen.iter().zip(&m2) {
            assert_eq!(entry.id.as_str(), name.as_str());
            assert_eq!(entry.len, want.len() as u64);
            if want.len() <= MAX_INLINE as usize {
                assert_eq!(data.as_deref(), Some(want.as_slice()), "{name}");
            } else {
                assert!(data.is_none(), "{name} came inline");
            }
        }

        // The first entry always comes, even over `max_bytes`; then the
        // page stops before the bytes would pass it.
        let big = format!("m4-{}", "0".repeat(8));
        let small = format!("m4-{}", "1".repeat(8));
        c.put_blobs(&[(&big, &[5; 800]), (&small, &[6; 10])]).await;
        let (page, more) = data_page(&c, None, "m4-", (10, 100, 1000)).await;
        assert!(more);
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].1.as_deref(), Some(&[5u8; 800][..]));
        let (page, more) = data_page(&c, Some(id(&big)), "m4-", (10, 100, 1000)).await;
        assert!(!more);
        assert_eq!(page[0].1.as_deref(), Some(&[6u8; 10][..]));
        // Entries too large to come inline cost no bytes.
        let (page, _) = data_page(&c, None, "m4-", (10, 10, 500)).await;
        assert_eq!(page.len(), 2);
        assert!(page[0].1.is_none() && page[1].1.is_some());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_data_pages_stay_consistent_while_blobs_come_and_go() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let contents = |name: &str| name.as_bytes().repeat(3);
        // Present throughout: every even number. The churn adds and
        // removes odd ones, batch after batch, until told to stop.
        let stable: BTreeMap<String, Vec<u8>> = (0..600)
            .map(|i| format!("m2-{:04}", i * 2))
            .map(|n| {
                let d = contents(&n);
                (n, d)
            })
            .collect();
        put_all(&c, &stable).await;
        let churner = node.md5_client("alice", "Crimson33").await.unwrap();
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let churn = tokio::spawn(async move {
            let mut rounds = 0u32;
            while !*stop_rx.borrow_and_update() {
                let names: Vec<String> = (0..20)
                    .map(|k| format!("m2-{:04}", ((rounds * 20 + k) % 600) * 2 + 1))
                    .collect();
                let data: Vec<Vec<u8>> = names.iter().map(|n| contents(n)).collect();
                let items: Vec<(&str, &[u8])> = names
                    .iter()
                    .zip(&data)
                    .map(|(n, d)| (n.as_str(), d.as_slice()))
                    .collect();
                let stored = churner.put_blobs(&items).await;
                assert_eq!(stored, Response::BatchStored { failed: vec![] });
                let ids = names.iter().step_by(2).map(|n| id(n)).collect();
                let deleted = churner.call(&Request::DeleteBlobs { ids }).await;
                assert!(
                    matches!(deleted, Response::BatchDeleted { .. }),
                    "{deleted:?}"
                );
                rounds += 1;
            }
            rounds
        });
        for pass in 0..6 {
            let (mut seen, mut after) = (Vec::new(), None::<BlobId>);
            loop {
                let (page, more) = data_page(&c, after.clone(), "m2-", (37, 1 << 20, 1024)).await;
                if let (Some(a), Some((first, _))) = (&after, page.first()) {
                    assert!(first.id > *a, "page went backwards");
                }
                for (entry, data) in &page {
                    // Whatever is listed comes with the bytes it has.
                    let want = contents(entry.id.as_str());
                    assert_eq!(data.as_deref(), Some(want.as_slice()), "{}", entry.id);
                    assert_eq!(entry.len, want.len() as u64);
                }
                after = page.last().map(|(e, _)| e.id.clone()).or(after);
                seen.extend(page.into_iter().map(|(e, _)| e.id.to_string()));
                if !more {
                    break;
                }
            }
            assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "repeated or unordered"
            );
            let seen: BTreeSet<&String> = seen.iter().collect();
            for name in stable.keys() {
                assert!(seen.contains(name), "{name} lost in pass {pass}");
            }
        }
        stop_tx.send(true).unwrap();
        assert!(churn.await.unwrap() > 0, "the churn never ran");
    })
    .await
}

#[tokio::test]
async fn list_data_bounds_are_refused() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let max = (
            MAX_BATCH as u32,
            wire::MAX_LIST_DATA_BYTES,
            wire::MAX_INLINE_LEN,
        );
        let (page, more) = data_page(&c, None, "", max).await;
        assert!(page.is_empty() && !more);
        for (entries, bytes, inline, prefix) in [
            (0, 1, 1, "m2-"),
            (max.0 + 1, 1, 1, "m2-"),
            (1, max.1 + 1, 1, "m2-"),
            (1, 1, max.2 + 1, "m2-"),
            (1, 1, 1, "M2-"),
        ] {
            let req = Request::ListData {
                after: None,
                prefix: prefix.into(),
                max_entries: entries,
                max_bytes: bytes,
                max_inline: inline,
            };
            let resp = c.call(&req).await;
            assert_eq!(error_code(&resp), Some(ErrorCode::BadRequest), "{req:?}");
        }
    })
    .await
}
