//! `vault-node dev-cluster`: four nodes in one process, for trying Vault.
//!
//! In `DIR` (default `vault-dev`): `certs/` (an existing CA is re-used;
//! its key in `ca-private/ca.key`, outside `certs/`; `certs/cluster.secret`
//! shared by the four nodes), `dfs.conf` with the demo users in the classic MD5 form, `dfc.conf` for
//! the client (the client finds `certs/ca.pem` next to it), and the node
//! roots `DFS1`..`DFS4`. Existing `dfs.conf`/`dfc.conf` are kept.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use md5::{Digest, Md5};
use tokio::sync::watch;

use crate::records::RecordStore;
use crate::server::{NodeConfig, Server};
use crate::users::UserDb;

/// Demo users (name, password) written to a new `dfs.conf`.
pub const DEMO_USERS: [(&str, &str); 3] = [
    ("Alice", "Crimson33"),
    ("Bob", "Velvet77"),
    ("Eve", "Magellan101"),
];

/// The four node names.
pub const NODES: [&str; 4] = ["DFS1", "DFS2", "DFS3", "DFS4"];

/// Default folder of the dev cluster.
pub const DEFAULT_DIR: &str = "vault-dev";

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

fn dfs_conf() -> String {
    let mut s = String::from(
        "# Vault dev-cluster users, classic dfs.conf form (MD5 digests: legacy).\n\
         # `vault-client rotate` upgrades an account; `vault-node user add` adds one.\n",
    );
    for (name, password) in DEMO_USERS {
        s.push_str(&format!(
            "Username: {name}\nPassword: {}\n",
            md5_hex(password)
        ));
    }
    s
}

fn dfc_conf(base_port: u16) -> String {
    let mut s = String::from("# Vault dev-cluster client configuration.\n");
    for (i, name) in NODES.iter().enumerate() {
        s.push_str(&format!(
            "Server {name} 127.0.0.1:{}\n",
            base_port as usize + i
        ));
    }
    let (name, password) = DEMO_USERS[0];
    s.push_str(&format!(
        "Username: {name}\nPassword: {}\n",
        md5_hex(password)
    ));
    s
}

fn write_if_missing(path: &Path, text: &str) -> anyhow::Result<()> {
    if path.exists() {
        tracing::info!(path = %path.display(), "keeping the existing file");
        return Ok(());
    }
    crate::fsutil::write_atomic(path, text.as_bytes(), false)
        .with_context(|| format!("failed to write {}", path.display()))
}

/// Creates (or re-uses) the dev cluster's files in `dir` and binds the four
/// nodes on 127.0.0.1, ports `base_port`..`base_port + 3`.
pub fn prepare(dir: &Path, base_port: u16) -> anyhow::Result<Vec<Server>> {
    if base_port.checked_add(3).is_none() {
        anyhow::bail!("base port {base_port} leaves no room for four nodes");
    }
    prepare_with(dir, base_port, |i| base_port + i)
}

/// [`prepare`] with node `i` (0-based) bound to port `port(i)`.
fn prepare_with(
    dir: &Path,
    base_port: u16,
    port: impl Fn(u16) -> u16,
) -> anyhow::Result<Vec<Server>> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let certs = dir.join("certs");
    let names: Vec<String> = NODES.iter().map(|s| s.to_string()).collect();
    let options = crate::certs::CertOptions::default();
    let written = crate::certs::write_dir(&certs, &names, &crate::certs::default_sans(), &options)?;
    if let Some(old) = written.moved_ca_key_from {
        tracing::warn!(from = %old.display(), to = %written.ca_key.display(), "moved the CA key out of the certificates folder");
    }
    let secret_path = certs.join(crate::secret::CLUSTER_SECRET_FILE);
    let cluster_secret = crate::secret::ClusterSecret::read(&secret_path)
        .with_context(|| format!("failed to read {}", secret_path.display()))?;
    let users_path = dir.join("dfs.conf");
    write_if_missing(&users_path, &dfs_conf())?;
    write_if_missing(&dir.join("dfc.conf"), &dfc_conf(base_port))?;
    let users = UserDb::load(&users_path)?;
    let mut servers = Vec::new();
    for (i, name) in NODES.iter().enumerate() {
        let read = |ext: &str| {
            let p = certs.join(format!("{name}.{ext}"));
            std::fs::read_to_string(&p).with_context(|| format!("failed to read {}", p.display()))
        };
        let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port(i as u16));
        let mut config = NodeConfig::new(
            *name,
            dir.join(name),
            listen,
            users.clone(),
            read("pem")?,
            read("key")?,
        );
        config.cluster_secret = cluster_secret.clone();
        servers.push(Server::bind(config).with_context(|| format!("failed to start {name}"))?);
    }
    Ok(servers)
}

/// The users (lower-case names) whose key record on some node of the dev
/// cluster in `dir` holds a login key: they ran `vault-client rotate`, so
/// their demo password no longer works and their legacy `dfs.conf` entry
/// no longer logs anyone in.
pub async fn rotated_users(dir: &Path) -> Vec<String> {
    let mut rotated = Vec::new();
    for (user, _) in DEMO_USERS {
        let user = user.to_ascii_lowercase();
        for name in NODES {
            let store = RecordStore::new(dir.join(name).join(".vault").join("records"));
            if let Ok(Some(record)) = store.get(&user).await {
                if record.login_key.is_some() {
                    rotated.push(user);
                    break;
                }
            }
        }
    }
    rotated
}

/// How to run the client: the `vault-client` built beside this binary
/// (`cargo build --release` builds both), else `cargo run`.
fn client_command() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("vault-client")))
        .filter(|c| c.is_file())
        .map_or_else(
            || "cargo run --release -p vault-client --".to_string(),
            |c| c.display().to_string(),
        )
}

/// What to try, printed when the cluster is up; `rotated` are the users
/// [`rotated_users`] found, whose demo password is no longer theirs.
pub fn instructions(dir: &Path, rotated: &[String]) -> String {
    let conf = dir.join("dfc.conf");
    let conf = conf.display();
    let is_rotated = |u: &str| rotated.iter().any(|r| r.eq_ignore_ascii_case(u));
    let (user, password) = DEMO_USERS[0];
    let (as_user, password) = if is_rotated(user) {
        (
            format!("{user} (she ran `rotate`: give her new password)"),
            "<new password>",
        )
    } else {
        (format!("{user} (password {password})"), password)
    };
    let others: Vec<String> = DEMO_USERS[1..]
        .iter()
        .map(|(u, p)| {
            if is_rotated(u) {
                format!("{u} (rotated: own password)")
            } else {
                format!("{u}/{p}")
            }
        })
        .collect();
    let client = client_command();
    format!(
        "Vault dev cluster: four nodes running; Ctrl-C stops them.\n\
         \n\
         Try, as {as_user}:\n\
         \x20 VAULT_PASSWORD={password} {client} -c {conf} put README.md\n\
         \x20 VAULT_PASSWORD={password} {client} -c {conf} list\n\
         \x20 VAULT_PASSWORD={password} {client} -c {conf} get README.md -o /tmp/README.copy\n\
         \x20 VAULT_PASSWORD={password} {client} -c {conf} delete README.md\n\
         \x20 {client} -c {conf}            (interactive prompt)\n\
         \n\
         Other demo users: {} (copy {conf} and change Username:/Password:).\n\
         `vault-client rotate` upgrades an account. These four nodes share one\n\
         process; to stop one node and watch failover, run them as separate\n\
         processes (README, \"Running nodes by hand\").\n",
        others.join(", ")
    )
}

/// Runs the dev cluster until `shutdown` completes.
pub async fn run(
    dir: &Path,
    base_port: u16,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let servers = prepare(dir, base_port)?;
    let rotated = rotated_users(dir).await;
    let users_path = dir.join("dfs.conf");
    if let Ok(users) = UserDb::load(&users_path) {
        users.warn_legacy_unless(&users_path.display().to_string(), |u| {
            rotated.iter().any(|r| r.as_str() == u)
        });
    }
    let (tx, rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for server in servers {
        let mut rx = rx.clone();
        tasks.spawn(server.run(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }));
    }
    println!("{}", instructions(dir, &rotated));
    shutdown.await;
    let _ = tx.send(true);
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(anyhow::anyhow!("node task failed: {e}")),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_files_parse() {
        let db = UserDb::parse(&dfs_conf(), "dfs.conf").unwrap();
        assert_eq!(db.len(), 3);
        let eve = db.get("eve").unwrap().credential.md5_digest().unwrap();
        assert_eq!(hex::encode(eve), md5_hex("Magellan101"));
        let dfc = dfc_conf(10001);
        assert!(dfc.contains("Server DFS4 127.0.0.1:10004\n"));
        assert!(dfc.contains(&format!("Password: {}", md5_hex("Crimson33"))));
    }

    #[tokio::test]
    async fn hints_stay_true_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        assert!(rotated_users(dir.path()).await.is_empty());
        let fresh = instructions(dir.path(), &[]);
        assert!(
            fresh.contains("Try, as Alice (password Crimson33)"),
            "{fresh}"
        );
        // Alice rotated: her record on a node holds a login key.
        let records = dir.path().join("DFS2/.vault/records");
        std::fs::create_dir_all(&records).unwrap();
        let store = RecordStore::new(records);
        let record = wire::UserRecord {
            format: wire::STORAGE_FORMAT,
            generation: 1,
            kdf: wire::KdfParams {
                salt: vec![1; 16],
                m_kib: 8192,
                t: 1,
                p: 1,
            },
            login_key: Some(vec![9; 32]),
            wrapped_key: vec![5; 72],
        };
        store.put("alice", 0, &record, true).await.unwrap();
        let rotated = rotated_users(dir.path()).await;
        assert_eq!(rotated, ["alice"]);
        let text = instructions(dir.path(), &rotated);
        assert!(!text.contains("Crimson33"), "{text}");
        assert!(text.contains("new password"), "{text}");
        assert!(text.contains("Bob/Velvet77"), "{text}");
    }

    #[tokio::test]
    async fn prepares_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let servers = prepare_with(dir.path(), 10001, |_| 0).unwrap();
        assert_eq!(servers.len(), 4);
        assert!(dir.path().join("certs/DFS4.key").exists());
        assert!(dir.path().join("certs/cluster.secret").exists());
        assert!(dir.path().join("ca-private/ca.key").exists());
        assert!(!dir.path().join("certs/ca.key").exists());
        assert!(dir.path().join("DFS1/.vault/node.secret").exists());
        let kept = "# mine\n";
        std::fs::write(dir.path().join("dfc.conf"), kept).unwrap();
        drop(servers);
        let again = prepare_with(dir.path(), 10001, |_| 0).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("dfc.conf")).unwrap(),
            kept
        );
        drop(again);
    }
}
