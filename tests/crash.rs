//! Crash safety of the node's storage: a node SIGKILLed at random moments
//! during `put -r` of many small files, 20 times over. `vault-node fsck`
//! finds the killed node's root consistent (no index entry without its
//! bytes, no bytes outside the index). After each restart
//! every file whose PUT the client reported stored reads back byte for
//! byte, every file whose PUT failed reads back as its old or its new
//! bytes (never anything else, never an error), and at the end `repair`
//! leaves the vault fully redundant with nothing orphaned.
//!
//! The moment of each kill is random (a random delay after the PUT
//! starts): that is the point of the test, not a synchronisation; each
//! round then waits for the client to exit.
//!
//! Long (about a minute on two cores): 20 rounds of a PUT of 200 files, a
//! restart and a `get -r`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use vault_tests::*;

const LIMIT: Duration = Duration::from_secs(600);
const ROUNDS: usize = 20;
const FILES: usize = 200;

/// A random number below `n`.
fn below(n: u64) -> u64 {
    let b = random(8);
    u64::from_le_bytes(b.try_into().unwrap()) % n
}

/// Writes new random contents (1-8 KiB) to every file of the tree.
fn rewrite(tree: &Path) -> HashMap<String, Vec<u8>> {
    let mut files = HashMap::new();
    for i in 0..FILES {
        let name = format!("tree/d{:02}/f{i:04}.bin", i % 10);
        let bytes = random(1024 + below(7 * 1024) as usize);
        let path = tree.parent().unwrap().join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        files.insert(name, bytes);
    }
    files
}

/// The names the `put --json` output reports stored. A PUT refused as a
/// whole (the node died before the client reached it: "PUT needs all four
/// nodes") prints no array and stored nothing.
fn stored_names(out: &std::process::Output) -> Vec<String> {
    let text = stdout(out);
    let items = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(items)) => items,
        _ => {
            assert!(
                !out.status.success() && text.trim().is_empty(),
                "put --json printed no array:\n{text}\n{}",
                stderr(out)
            );
            return Vec::new();
        }
    };
    items
        .iter()
        .filter(|i| i.get("version").is_some())
        .filter_map(|i| i.get("name")?.as_str().map(String::from))
        .collect()
}

#[test]
fn a_node_killed_at_random_moments_during_put_r_loses_nothing_it_acknowledged() {
    with_timeout(LIMIT, || {
        let mut c = Cluster::start();
        let tree = c.dir.path().join("tree");
        // What each name must read back as: its last stored bytes, and the
        // bytes of a later PUT that failed (which may or may not show).
        let mut settled: HashMap<String, Vec<u8>> = HashMap::new();
        let mut pending: HashMap<String, Vec<u8>> = HashMap::new();
        let first = rewrite(&tree);
        ok(&c.client("Crimson33", &["put", "-r", "tree"]));
        settled.extend(first);
        let mut kills = Vec::new();
        for round in 0..ROUNDS {
            let victim = below(4) as usize;
            let new = rewrite(&tree);
            let put = c.spawn_client("Crimson33", &["--json", "put", "-r", "--checksum", "tree"]);
            let delay = Duration::from_millis(below(1500));
            std::thread::sleep(delay);
            let finished_first = put.exited();
            c.kill(victim);
            let out = put.wait();
            kills.push(format!(
                "round {round}: DFS{} killed {delay:?} in{}",
                victim + 1,
                if finished_first {
                    " (after the PUT ended)"
                } else {
                    ""
                }
            ));
            // The killed node's disk as it was left: every index entry
            // has its bytes, and no bytes lie outside the index.
            let fsck = std::process::Command::new(bin("vault-node"))
                .arg("fsck")
                .arg("--root")
                .arg(&c.nodes[victim].root)
                .output()
                .unwrap();
            assert!(
                fsck.status.success(),
                "round {round}: fsck of DFS{} after the kill: {}{}\n{kills:#?}",
                victim + 1,
                stdout(&fsck),
                stderr(&fsck)
            );
            let stored = stored_names(&out);
            for (name, bytes) in new {
                if stored.contains(&name) {
                    settled.insert(name.clone(), bytes);
                    pending.remove(&name);
                } else {
                    pending.insert(name, bytes);
                }
            }
            c.restart(victim);
            let back = c.dir.path().join(format!("back{round}"));
            let get = c.client(
                "Crimson33",
                &["get", "-r", "tree", "-o", back.to_str().unwrap()],
            );
            ok(&get);
            let mut promoted = Vec::new();
            for (name, want) in &settled {
                let got = std::fs::read(back.join(name))
                    .unwrap_or_else(|e| panic!("round {round}: {name}: {e}\n{kills:#?}"));
                let newer = pending.get(name);
                assert!(
                    got == *want || Some(&got) == newer,
                    "round {round}: {name} reads back as neither its stored nor its pending bytes\n{kills:#?}"
                );
                if Some(&got) == newer {
                    // A PUT that failed but whose manifest a quorum took
                    // is the newest version now.
                    promoted.push((name.clone(), got));
                }
            }
            for (name, got) in promoted {
                pending.remove(&name);
                settled.insert(name, got);
            }
            std::fs::remove_dir_all(&back).unwrap();
        }
        eprintln!("crash: {}", kills.join("; "));
        // Every node up: repair brings every copy back and collects the
        // orphans the killed PUTs left; then check finds nothing wrong.
        let repair = c.client("Crimson33", &["repair"]);
        assert!(
            repair.status.success(),
            "repair: {}{}",
            stdout(&repair),
            stderr(&repair)
        );
        let check = c.client("Crimson33", &["check"]);
        assert!(
            check.status.success(),
            "check after repair: {}{}",
            stdout(&check),
            stderr(&check)
        );
    });
}

/// Blobs in the 0.2 root the conversion test writes.
const OLD_BLOBS: usize = 20_000;

/// Starts `vault-node serve` on `root` (DFS4's certificates and users),
/// its standard output piped (it prints its address once it listens).
fn spawn_serve(c: &Cluster, root: &Path) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(c.dir.path().join("convert.log"))
        .unwrap();
    std::process::Command::new(bin("vault-node"))
        .arg("serve")
        .arg("--root")
        .arg(root)
        .args(["--listen", "127.0.0.1:0", "--name", "DFS4", "--users"])
        .arg(&c.dfs)
        .arg("--certs")
        .arg(c.dir.path().join("certs"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start vault-node")
}

/// Long (about half a minute on two cores): writes a 0.2 root of 20,000
/// blobs and converts it, killing the node at random moments of the
/// conversion (up to five times, while it lasts). A node started on a 0.2 root converts it in place before
/// it serves; killed anywhere, it resumes on the next start, and every
/// blob reads back byte for byte, none lost or repeated, `fsck` clean.
#[test]
fn a_conversion_killed_at_random_moments_resumes_and_loses_nothing() {
    use std::io::BufRead;
    use vault_node::store::offline;
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        c.kill(3);
        let root = c.nodes[3].root.clone();
        // The 0.2 layout: one file per blob in the user's folder; most
        // small (inline after conversion), every 97th over the inline
        // limit (stays a file).
        let folder = root.join("carol");
        std::fs::create_dir_all(&folder).unwrap();
        let mut want: Vec<(String, Vec<u8>)> = Vec::new();
        for i in 0..OLD_BLOBS {
            let id = format!("p2-{i:08x}");
            let len = if i % 97 == 0 {
                100 * 1024
            } else {
                100 + i % 4000
            };
            let bytes = random(len);
            std::fs::write(folder.join(&id), &bytes).unwrap();
            want.push((id, bytes));
        }
        let files_left = || std::fs::read_dir(&folder).unwrap().count();
        let log = c.dir.path().join("convert.log");
        let count = |what: &str| {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches(what)
                .count()
        };
        let progress = || count("converting carol:");
        let serving = || count("node listening");
        let mut interrupted = 0;
        for round in 0..5 {
            let (before, served) = (progress(), serving());
            let mut node = spawn_serve(&c, &root);
            // The crash moment: a random few milliseconds after the
            // conversion logged one or two batches (after its first line,
            // which names what is left): a batch committed, its files
            // being removed, the next batch being read.
            let steps = 2 + below(2) as usize;
            let started = std::time::Instant::now();
            // (Or the conversion ended first: the node serves.)
            while progress() < before + steps
                && serving() == served
                && node.try_wait().unwrap().is_none()
            {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "no progress logged"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(below(30)));
            node.kill().unwrap();
            node.wait().unwrap();
            let left = files_left();
            eprintln!("convert: round {round}: {left} files left in the folder");
            // Killed mid-conversion: small blob files still there beside
            // the index.
            if left > OLD_BLOBS.div_ceil(97) + 1 && folder.join("index.redb").exists() {
                interrupted += 1;
            } else {
                break;
            }
        }
        // The last start finishes the conversion and serves.
        let mut node = spawn_serve(&c, &root);
        let mut line = String::new();
        std::io::BufReader::new(node.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains("127.0.0.1"),
            "the node never listened: {line:?}"
        );
        node.kill().unwrap();
        node.wait().unwrap();
        assert!(
            interrupted >= 1,
            "no kill landed during the conversion: the test proves nothing"
        );
        let fsck = std::process::Command::new(bin("vault-node"))
            .arg("fsck")
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "fsck after the conversion: {}{}",
            stdout(&fsck),
            stderr(&fsck)
        );
        let got = offline::read_blobs(&root, "carol").unwrap();
        assert_eq!(got.len(), OLD_BLOBS, "blobs lost or repeated");
        for ((id, bytes), (got_id, got_bytes)) in want.iter().zip(&got) {
            assert_eq!(id, got_id, "blob ids differ");
            assert!(got_bytes == bytes, "{id} does not read back");
        }
        // Only the large blobs are still files.
        let files = std::fs::read_dir(&folder)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
            .count();
        assert_eq!(files, OLD_BLOBS.div_ceil(97) + 1, "small blob files left");
    });
}
