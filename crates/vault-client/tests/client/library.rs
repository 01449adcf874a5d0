//! The client library against four in-process nodes (`vault_node::testing`),
//! with a hand on the nodes' disks: swapped parts, replayed manifests,
//! absurd key-record costs, accounts made by `vault-node user add`, dead
//! nodes, and no keystream shared between parts.

use std::time::{Duration, Instant};

use vault_client::net::Limits;
use vault_client::ops;
use vault_client::vault::OpenError;
use vault_node::testing::{timed, TestCluster};
use wire::{KdfParams, Request, UserRecord};

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_swapped_between_files_are_detected() {
    timed(async {
        let c = TestCluster::start(&format!("Alice {}\n", "Crimson33"))
            .await
            .unwrap();
        let v = open(&c, "alice", "Crimson33").await.unwrap();
        // Same size, so a swap cannot be caught by length alone.
        let a = write(&c, "a.bin", &vec![b'a'; 200_000]);
        let b = write(&c, "b.bin", &vec![b'b'; 200_000]);
        ops::put::put_file(&v, &a, progress()).await.unwrap();
        ops::put::put_file(&v, &b, progress()).await.unwrap();
        let ma = ops::get::find(&v, "a.bin").await.unwrap();
        let mb = ops::get::find(&v, "b.bin").await.unwrap();
        // Replace every copy of a.bin's part 2 with b.bin's part 2.
        let (pa, pb) = (
            v.master().part_id(&ma.file_id, 1),
            v.master().part_id(&mb.file_id, 1),
        );
        let mut swapped = 0;
        for n in 0..4 {
            if c.blob(n, "alice", pa.as_str()).await.unwrap().is_some() {
                let theirs = c.blob(n, "alice", pb.as_str()).await.unwrap().unwrap();
                c.set_blob(n, "alice", pa.as_str(), &theirs).await.unwrap();
                swapped += 1;
            }
        }
        assert_eq!(swapped, 2);
        let out = c.dir().join("a.out");
        let err = ops::get::get_file(&v, "a.bin", &out, false, progress())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("decryption failed"), "{err}");
        assert!(!out.exists());
        // b.bin is untouched and still reads back.
        ops::get::get_file(&v, "b.bin", &out, false, progress())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), vec![b'b'; 200_000]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_old_manifest_loses_to_the_newest() {
    timed(async {
        let c = TestCluster::start("Alice Crimson33\n").await.unwrap();
        let v = open(&c, "alice", "Crimson33").await.unwrap();
        let path = write(&c, "doc.txt", b"version one");
        ops::put::put_file(&v, &path, progress()).await.unwrap();
        let m_id = v.master().manifest_id("doc.txt");
        let old_manifest = c.blob(0, "alice", m_id.as_str()).await.unwrap().unwrap();
        std::fs::write(&path, b"version two!").unwrap();
        ops::put::put_file(&v, &path, progress()).await.unwrap();
        // DFS1 replays the old manifest.
        c.set_blob(0, "alice", m_id.as_str(), &old_manifest)
            .await
            .unwrap();
        let out = c.dir().join("doc.out");
        ops::get::get_file(&v, "doc.txt", &out, false, progress())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"version two!");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_argon2_costs_in_a_record_are_refused_quickly() {
    timed(async {
        let c = TestCluster::start(&format!(
            "Username: Alice\nPassword: {}\n",
            md5_hex("Crimson33")
        ))
        .await
        .unwrap();
        // A hostile node (or anyone with its disk) plants a record asking for
        // 4 TiB of memory and a million passes, at a high generation.
        let v = open(&c, "alice", "Crimson33").await.unwrap();
        let hostile = UserRecord {
            format: wire::STORAGE_FORMAT,
            generation: 99,
            kdf: KdfParams {
                salt: vec![1; 16],
                m_kib: u32::MAX,
                t: 1_000_000,
                p: 1,
            },
            login_key: None,
            wrapped_key: vec![0; 72],
        };
        let s = v.session(0).unwrap();
        s.call(&Request::PutRecord {
            expect_generation: v.record().generation,
            record: hostile,
            expect_record: None,
        })
        .await
        .unwrap();
        v.close();
        let start = Instant::now();
        // The honest records on DFS2-4 still open the vault; the hostile one
        // is skipped without running Argon2 on it.
        let again = open(&c, "alice", "Crimson33").await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(
            again.record().kdf.m_kib,
            vault_client::crypto::keys::DEFAULT_M_KIB
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_made_by_user_add_log_in_with_the_client() {
    timed(async {
        // What `vault-node user add` writes: Argon2id salt and costs plus the
        // Ed25519 login key derived with the node's own code.
        let kdf = vault_node::kdf::new_params().unwrap();
        let key = vault_node::kdf::public_key_for_password(b"Lapis-4", &kdf).unwrap();
        let line = vault_node::users::upgraded_line("carol", &kdf, &key);
        let c = TestCluster::start(&format!("{line}\n")).await.unwrap();
        let v = open(&c, "Carol", "Lapis-4").await.unwrap();
        assert!(v.unavailable().is_empty());
        assert_eq!(v.record().kdf, kdf, "the record reuses the account's salt");
        assert_eq!(v.record().login_key.as_deref(), Some(&key[..]));
        let p = write(&c, "n.txt", b"hello");
        ops::put::put_file(&v, &p, progress()).await.unwrap();
        v.close();
        assert!(matches!(
            open(&c, "carol", "lapis-4").await,
            Err(OpenError::AuthFailed)
        ));
        let v = open(&c, "carol", "Lapis-4").await.unwrap();
        let listed = ops::list::list(&v, "").await.unwrap().files;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "n.txt");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_given_up_on_within_about_a_second() {
    timed(async {
        let mut c = TestCluster::start("Alice Crimson33\n").await.unwrap();
        c.stop(2).await.unwrap();
        let start = Instant::now();
        // The real limits: a dead node costs its one-second dial, no more.
        let v = open_with_limits(&c, "alice", "Crimson33", Limits::default())
            .await
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
        let down = v.unavailable();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].0, "DFS3");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_claiming_legacy_login_for_an_upgraded_account_gets_no_md5() {
    timed(async {
        let kdf = vault_node::kdf::new_params().unwrap();
        let key = vault_node::kdf::public_key_for_password(b"Lapis-4", &kdf).unwrap();
        let upgraded = format!(
            "{}\n",
            vault_node::users::upgraded_line("carol", &kdf, &key)
        );
        // DFS2 pretends Carol is a legacy account (as a hostile node would,
        // to get an MD5 of her password it could crack offline).
        let legacy = format!("Username: carol\nPassword: {}\n", md5_hex("Lapis-4"));
        let c = TestCluster::start_each([&upgraded, &legacy, &upgraded, &upgraded])
            .await
            .unwrap();
        let v = open(&c, "carol", "Lapis-4").await.unwrap();
        let down = v.unavailable();
        assert_eq!(down.len(), 1, "{down:?}");
        assert_eq!(down[0].0, "DFS2");
        assert!(down[0].1.contains("legacy"), "{}", down[0].1);
        assert!(v.session(1).is_none(), "no session with the lying node");
    })
    .await;
}

/// Whether `a` and `b` agree on 16 consecutive bytes at the same offset:
/// never for independent keystreams (probability 2^-128 per offset), always
/// when one keystream encrypted the same plaintext twice.
fn share_a_window(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    (0..n.saturating_sub(16)).any(|i| a[i..i + 16] == b[i..i + 16])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keystream_is_shared_between_parts_or_versions() {
    timed(async {
        let c = TestCluster::start("Alice Crimson33\n").await.unwrap();
        let v = open(&c, "alice", "Crimson33").await.unwrap();
        // Four parts of three full chunks of zeros each.
        let zeros = vec![0u8; 4 * 3 * 65536];
        let path = write(&c, "zeros.bin", &zeros);
        let read_parts = |m: vault_client::manifest::Manifest| {
            let (c, v) = (&c, &v);
            async move {
                let mut parts: Vec<Vec<u8>> = Vec::new();
                for k in 0..4 {
                    let id = v.master().part_id(&m.file_id, k);
                    let mut copies: Vec<Vec<u8>> = Vec::new();
                    for n in 0..4 {
                        copies.extend(c.blob(n, "alice", id.as_str()).await.unwrap());
                    }
                    assert_eq!(copies.len(), 2, "part {k} has two copies");
                    assert_eq!(copies[0], copies[1], "the copies are the same bytes");
                    parts.push(copies[0].clone());
                }
                parts
            }
        };
        ops::put::put_file(&v, &path, progress()).await.unwrap();
        let first = ops::get::find(&v, "zeros.bin").await.unwrap();
        let v1 = read_parts(first.clone()).await;
        ops::put::put_file(&v, &path, progress()).await.unwrap();
        let second = ops::get::find(&v, "zeros.bin").await.unwrap();
        assert_ne!(first.file_id, second.file_id);
        let v2 = read_parts(second).await;
        let all: Vec<&Vec<u8>> = v1.iter().chain(&v2).collect();
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert!(
                    !share_a_window(all[i], all[j]),
                    "parts {i} and {j} share keystream"
                );
            }
        }
        // Every part starts with the format-2 header.
        assert!(all.iter().all(|p| p.starts_with(b"VLTp\x02")));
    })
    .await;
}

/// Progress that says when `goal` bytes have gone by.
struct Reached {
    done: std::sync::atomic::AtomicU64,
    goal: u64,
    tx: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl ops::Progress for Reached {
    fn advance(&self, bytes: u64) {
        let done = self
            .done
            .fetch_add(bytes, std::sync::atomic::Ordering::SeqCst)
            + bytes;
        if done >= self.goal {
            if let Some(tx) = self.tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_after_its_md5_pass_is_refused_not_stored_short() {
    timed(async {
        let c = TestCluster::start(&format!("Alice {}\n", "Crimson33"))
            .await
            .unwrap();
        let v = open(&c, "alice", "Crimson33").await.unwrap();
        let first = data(2 << 20, 7);
        let path = write(&c, "grows.bin", &first);
        // The MD5 pass (the first 2 MiB of progress) ends, then the file
        // grows before it is stored: storing its first 2 MiB under the old
        // MD5 would report a file the vault does not hold.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let progress = std::sync::Arc::new(Reached {
            done: Default::default(),
            goal: first.len() as u64,
            tx: std::sync::Mutex::new(Some(tx)),
        });
        let mut batch = ops::put::PutBatch::start(vec![(path.clone(), progress)]);
        rx.await.unwrap();
        let mut longer = first.clone();
        longer.extend_from_slice(&data(4096, 8));
        std::fs::write(&path, &longer).unwrap();
        let (_, result) = batch.next(&v).await.unwrap();
        let err = result.unwrap_err();
        assert!(err.to_string().contains("changed"), "{err}");
        let listed = ops::list::list(&v, "").await.unwrap();
        assert!(listed.files.is_empty(), "{listed:?}");
    })
    .await
}
