//! Client library against four in-process nodes on port 0, certificates
//! made with rcgen at test time. Covers what needs a hand on the nodes'
//! disks or a hostile node: swapped parts, absurd key-record costs, and
//! accounts made by `vault-node user add`.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use vault_client::config::ClientConfig;
use vault_client::net::client_endpoint;
use vault_client::ops;
use vault_client::vault::{OpenError, Vault};
use vault_node::{certs, NodeConfig, Server, UserDb};
use wire::{KdfParams, Request, UserRecord};
use zeroize::Zeroizing;

const LIMIT: Duration = Duration::from_secs(120);

/// A node's stop signal and its task.
type RunningNode = (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

struct Cluster {
    dir: tempfile::TempDir,
    ca_pem: String,
    addrs: Vec<String>,
    stops: Vec<Option<RunningNode>>,
}

impl Cluster {
    async fn start(users: &str) -> Cluster {
        Self::start_each([users; 4]).await
    }

    /// Starts four nodes, each with its own users file.
    async fn start_each(users: [&str; 4]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let names = ["DFS1", "DFS2", "DFS3", "DFS4"];
        let certs = certs::generate(&names, &["127.0.0.1".to_string()]).unwrap();
        let mut addrs = Vec::new();
        let mut stops = Vec::new();
        for (node, users) in certs.nodes.iter().zip(users) {
            let cfg = NodeConfig::new(
                node.name.clone(),
                dir.path().join(&node.name),
                "127.0.0.1:0".parse().unwrap(),
                UserDb::parse(users, "dfs.conf").unwrap(),
                node.cert_pem.clone(),
                node.key_pem.clone(),
            );
            let server = Server::bind(cfg).unwrap();
            addrs.push(server.local_addr().to_string());
            let (tx, rx) = oneshot::channel::<()>();
            let handle = tokio::spawn(server.run(async {
                let _ = rx.await;
            }));
            stops.push(Some((tx, handle)));
        }
        Cluster {
            dir,
            ca_pem: certs.ca_cert_pem,
            addrs,
            stops,
        }
    }

    fn config(&self, user: &str) -> ClientConfig {
        let mut text = String::new();
        for (i, a) in self.addrs.iter().enumerate() {
            text.push_str(&format!("Server DFS{} {a}\n", i + 1));
        }
        text.push_str(&format!("Username: {user}\n"));
        ClientConfig::parse(&text, &self.dir.path().join("dfc.conf")).unwrap()
    }

    async fn open(&self, user: &str, password: &str) -> Result<Arc<Vault>, OpenError> {
        let endpoint = client_endpoint(self.ca_pem.as_bytes()).unwrap();
        let pw = Zeroizing::new(password.to_string());
        Vault::open(&endpoint, &self.config(user), &pw)
            .await
            .map(Arc::new)
    }

    fn user_dir(&self, node: usize, user: &str) -> PathBuf {
        self.dir.path().join(format!("DFS{}", node + 1)).join(user)
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Cluster {
    /// Stops node `i` and waits until it has shut down.
    async fn stop(&mut self, i: usize) {
        if let Some((tx, handle)) = self.stops[i].take() {
            let _ = tx.send(());
            handle.await.unwrap().unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (tx, _) in self.stops.drain(..).flatten() {
            let _ = tx.send(());
        }
    }
}

fn progress() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

fn md5_hex(s: &str) -> String {
    vault_client::config::md5_hex(s.as_bytes())
}

async fn within<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_swapped_between_files_are_detected() {
    within(async {
        let c = Cluster::start(&format!("Alice {}\n", "Crimson33")).await;
        let v = c.open("alice", "Crimson33").await.unwrap();
        // Same size, so a swap cannot be caught by length alone.
        let a = c.write("a.bin", &vec![b'a'; 200_000]);
        let b = c.write("b.bin", &vec![b'b'; 200_000]);
        ops::put::put_file(&v, &a, progress(), None).await.unwrap();
        ops::put::put_file(&v, &b, progress(), None).await.unwrap();
        let ma = ops::get::find(&v, "a.bin").await.unwrap();
        let mb = ops::get::find(&v, "b.bin").await.unwrap();
        // Replace every copy of a.bin's part 2 with b.bin's part 2.
        let (pa, pb) = (
            v.master().part_id(&ma.file_id, 1),
            v.master().part_id(&mb.file_id, 1),
        );
        let mut swapped = 0;
        for n in 0..4 {
            let dir = c.user_dir(n, "alice");
            if dir.join(pa.as_str()).exists() {
                std::fs::copy(dir.join(pb.as_str()), dir.join(pa.as_str())).unwrap();
                swapped += 1;
            }
        }
        assert_eq!(swapped, 2);
        let out = c.dir.path().join("a.out");
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
    within(async {
        let c = Cluster::start("Alice Crimson33\n").await;
        let v = c.open("alice", "Crimson33").await.unwrap();
        let path = c.write("doc.txt", b"version one");
        ops::put::put_file(&v, &path, progress(), None)
            .await
            .unwrap();
        let m_id = v.master().manifest_id("doc.txt");
        let old_manifest = std::fs::read(c.user_dir(0, "alice").join(m_id.as_str())).unwrap();
        std::fs::write(&path, b"version two!").unwrap();
        ops::put::put_file(&v, &path, progress(), None)
            .await
            .unwrap();
        // DFS1 replays the old manifest.
        std::fs::write(c.user_dir(0, "alice").join(m_id.as_str()), old_manifest).unwrap();
        let out = c.dir.path().join("doc.out");
        ops::get::get_file(&v, "doc.txt", &out, false, progress())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"version two!");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_argon2_costs_in_a_record_are_refused_quickly() {
    within(async {
        let c = Cluster::start(&format!(
            "Username: Alice\nPassword: {}\n",
            md5_hex("Crimson33")
        ))
        .await;
        // A hostile node (or anyone with its disk) plants a record asking for
        // 4 TiB of memory and a million passes, at a high generation.
        let v = c.open("alice", "Crimson33").await.unwrap();
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
        })
        .await
        .unwrap();
        v.close();
        let start = Instant::now();
        // The honest records on DFS2-4 still open the vault; the hostile one
        // is skipped without running Argon2 on it.
        let again = c.open("alice", "Crimson33").await.unwrap();
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
    within(async {
        // What `vault-node user add` writes: Argon2id salt and costs plus the
        // Ed25519 login key derived with the node's own code.
        let kdf = vault_node::kdf::new_params().unwrap();
        let key = vault_node::kdf::public_key_for_password(b"Lapis-4", &kdf).unwrap();
        let line = vault_node::users::upgraded_line("carol", &kdf, &key);
        let c = Cluster::start(&format!("{line}\n")).await;
        let v = c.open("Carol", "Lapis-4").await.unwrap();
        assert!(v.unavailable().is_empty());
        assert_eq!(v.record().kdf, kdf, "the record reuses the account's salt");
        assert_eq!(v.record().login_key.as_deref(), Some(&key[..]));
        let p = c.write("n.txt", b"hello");
        ops::put::put_file(&v, &p, progress(), None).await.unwrap();
        v.close();
        assert!(matches!(
            c.open("carol", "lapis-4").await,
            Err(OpenError::AuthFailed)
        ));
        let v = c.open("carol", "Lapis-4").await.unwrap();
        let listed = ops::list::list(&v).await.unwrap().files;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "n.txt");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_given_up_on_within_about_a_second() {
    within(async {
        let mut c = Cluster::start("Alice Crimson33\n").await;
        c.stop(2).await;
        let start = Instant::now();
        let v = c.open("alice", "Crimson33").await.unwrap();
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
    within(async {
        let kdf = vault_node::kdf::new_params().unwrap();
        let key = vault_node::kdf::public_key_for_password(b"Lapis-4", &kdf).unwrap();
        let upgraded = format!(
            "{}\n",
            vault_node::users::upgraded_line("carol", &kdf, &key)
        );
        // DFS2 pretends Carol is a legacy account (as a hostile node would,
        // to get an MD5 of her password it could crack offline).
        let legacy = format!("Username: carol\nPassword: {}\n", md5_hex("Lapis-4"));
        let c = Cluster::start_each([&upgraded, &legacy, &upgraded, &upgraded]).await;
        let v = c.open("carol", "Lapis-4").await.unwrap();
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
    within(async {
        let c = Cluster::start("Alice Crimson33\n").await;
        let v = c.open("alice", "Crimson33").await.unwrap();
        // Four parts of three full chunks of zeros each.
        let zeros = vec![0u8; 4 * 3 * 65536];
        let path = c.write("zeros.bin", &zeros);
        let read_parts = |m: &vault_client::manifest::Manifest| -> Vec<Vec<u8>> {
            (0..4)
                .map(|k| {
                    let id = v.master().part_id(&m.file_id, k);
                    let copies: Vec<Vec<u8>> = (0..4)
                        .filter_map(|n| {
                            std::fs::read(c.user_dir(n, "alice").join(id.as_str())).ok()
                        })
                        .collect();
                    assert_eq!(copies.len(), 2, "part {k} has two copies");
                    assert_eq!(copies[0], copies[1], "the copies are the same bytes");
                    copies[0].clone()
                })
                .collect()
        };
        ops::put::put_file(&v, &path, progress(), None)
            .await
            .unwrap();
        let first = ops::get::find(&v, "zeros.bin").await.unwrap();
        let v1 = read_parts(&first);
        ops::put::put_file(&v, &path, progress(), None)
            .await
            .unwrap();
        let second = ops::get::find(&v, "zeros.bin").await.unwrap();
        assert_ne!(first.file_id, second.file_id);
        let v2 = read_parts(&second);
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
