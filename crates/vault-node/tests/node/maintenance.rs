//! `vault-node fsck` and `compact` against damaged, unfinished and served
//! roots: an unfinished 0.2 conversion and unknown folders are never
//! removed, ids read from an index never name a path, and the root lock
//! (`<root>/.vault/lock`) keeps a second node and the maintenance tools
//! off a served root; `--inline-max` is bounded.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use redb::TableDefinition;
use vault_node::store::db::{self, Convert, DB_FILE};
use vault_node::store::{maintenance, offline, DEFAULT_INLINE_MAX};
use vault_node::testing::{timed, users_text, TestNode};
use vault_node::Server;

/// The index's `blobs` table, as `store::db` defines it: a hostile or
/// damaged disk can hold any key.
const BLOBS: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("blobs");

/// The names in a user folder, besides the index and `.tmp`.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != DB_FILE && n != ".tmp")
        .collect()
}

/// `n` blobs as a 0.2 node kept them: one file per blob, named by its id.
fn write_old_layout(dir: &Path, n: usize) -> BTreeSet<String> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let name = format!("p-{i:04}");
            std::fs::write(dir.join(&name), vec![(i % 251) as u8; i * 7]).unwrap();
            name
        })
        .collect()
}

#[tokio::test]
async fn fsck_fix_removes_nothing_of_an_unfinished_conversion() {
    timed(async {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("alice");
        let all = write_old_layout(&dir, 300);
        // A node killed after the first batch's commit: 100 blobs in the
        // index, every file still there, the converted flag unset.
        let mut hook = Convert {
            batch: 100,
            stop_after_commit: Some(1),
            ..Convert::default()
        };
        assert!(!db::convert_folder(&dir, DEFAULT_INLINE_MAX, &mut hook).unwrap());
        let report = maintenance::fsck(root.path(), true).unwrap();
        assert_eq!(report.fixed, 0, "{:?}", report.problems);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(
            report.problems[0].contains("conversion unfinished"),
            "{:?}",
            report.problems
        );
        assert_eq!(names(&dir), all, "no 0.2 blob removed");
        // Starting the node finishes it; every blob is there.
        assert!(db::convert_folder(&dir, DEFAULT_INLINE_MAX, &mut Convert::default()).unwrap());
        let blobs = offline::read_blobs(root.path(), "alice").unwrap();
        assert_eq!(blobs.len(), 300);
        for (id, bytes) in blobs {
            let i: usize = id[2..].parse().unwrap();
            assert_eq!(bytes, vec![(i % 251) as u8; i * 7], "{id}");
        }
        let report = maintenance::fsck(root.path(), true).unwrap();
        assert!(report.clean(), "{:?}", report.problems);
    })
    .await
}

#[tokio::test]
async fn fsck_fix_removes_stray_blob_files_only_never_folders_or_other_names() {
    timed(async {
        let root = tempfile::tempdir().unwrap();
        offline::write_blob(root.path(), "alice", "p-1", b"small").unwrap();
        offline::write_blob(root.path(), "alice", "p-2", &vec![9; 100_000]).unwrap();
        let dir = root.path().join("alice");
        let kept = names(&dir);
        std::fs::create_dir_all(dir.join("keep-me")).unwrap();
        std::fs::write(dir.join("keep-me/precious"), b"not the node's").unwrap();
        std::fs::write(dir.join("notes.txt"), b"an operator's note").unwrap();
        std::fs::write(dir.join("p-stray.7"), b"left by a crash").unwrap();
        let report = maintenance::fsck(root.path(), true).unwrap();
        assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
        assert_eq!(report.fixed, 1, "{:?}", report.problems);
        assert!(!dir.join("p-stray.7").exists());
        assert!(
            dir.join("keep-me/precious").exists(),
            "a folder is left alone"
        );
        assert!(dir.join("notes.txt").exists(), "another name is left alone");
        let mut expected = kept;
        expected.extend(["keep-me".to_string(), "notes.txt".to_string()]);
        assert_eq!(names(&dir), expected);
        assert_eq!(
            offline::read_blob(root.path(), "alice", "p-2").unwrap(),
            Some(vec![9; 100_000])
        );
    })
    .await
}

#[tokio::test]
async fn ids_read_from_an_index_never_name_a_path() {
    timed(async {
        let root = tempfile::tempdir().unwrap();
        offline::write_blob(root.path(), "alice", "p-1", b"one").unwrap();
        // A file outside the user folder that a hostile key points at.
        std::fs::write(root.path().join("victim"), b"outside").unwrap();
        let dir = root.path().join("alice");
        {
            let database = redb::Database::open(dir.join(DB_FILE)).unwrap();
            let txn = database.begin_write().unwrap();
            {
                let mut blobs = txn.open_table(BLOBS).unwrap();
                // Place 1: a file named exactly the key.
                blobs.insert("../victim", (7, 0, 1)).unwrap();
            }
            txn.commit().unwrap();
        }
        let report = maintenance::fsck(root.path(), false).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("invalid blob id \"../victim\"")),
            "{:?}",
            report.problems
        );
        // Not taken for a blob whose 7 bytes are there.
        assert!(
            !report.problems.iter().any(|p| p.contains("missing")),
            "{:?}",
            report.problems
        );
        let e = offline::blob_ids(root.path(), "alice").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        let e = offline::read_blobs(root.path(), "alice").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        assert_eq!(
            std::fs::read(root.path().join("victim")).unwrap(),
            b"outside"
        );
    })
    .await
}

#[tokio::test]
async fn the_root_lock_keeps_a_second_node_and_fsck_off_a_served_root() {
    timed(async {
        let mut node = TestNode::start(&users_text()).await.unwrap();
        let root = node.root().to_path_buf();
        // No user touched: no user database is open, only the root lock
        // tells that a node serves the root.
        let upload = root.join("alice").join(".tmp").join("in-progress.tmp");
        std::fs::create_dir_all(upload.parent().unwrap()).unwrap();
        std::fs::write(&upload, b"an upload of the serving node").unwrap();
        let mut second = node.config().clone();
        second.listen = "127.0.0.1:0".parse().unwrap();
        let err = Server::bind(second.clone()).unwrap_err();
        assert!(
            format!("{err:#}").contains("another vault-node serves"),
            "{err:#}"
        );
        assert!(upload.exists(), "the second node removed nothing");
        for err in [
            maintenance::fsck(&root, true).unwrap_err(),
            maintenance::compact(&root).unwrap_err(),
        ] {
            assert!(err.to_string().contains("the node is running on"), "{err}");
        }
        // From another process too.
        let out = Command::new(env!("CARGO_BIN_EXE_vault-node"))
            .args(["fsck", "--fix", "--root"])
            .arg(&root)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("the node is running on"), "{stderr}");
        assert!(upload.exists());
        // A stopped node releases it; a restart in this process takes it
        // again.
        node.stop().await.unwrap();
        drop(Server::bind(second.clone()).unwrap());
        node.restart_with(|_| {}).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(c.put("p-1", b"one").await, wire::Response::Stored);
        assert!(maintenance::fsck(&root, false).is_err());
        node.stop().await.unwrap();
        assert!(maintenance::fsck(&root, false).unwrap().clean());
        maintenance::compact(&root).unwrap();
    })
    .await
}

#[test]
fn serve_refuses_an_inline_max_over_1_mib() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vault-node"))
        .args(["serve", "--port", "0", "--inline-max", "1048577", "--root"])
        .arg(dir.path().join("DFS1"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--inline-max") && stderr.contains("1048577"),
        "{stderr}"
    );
    assert!(!dir.path().join("DFS1").exists(), "refused before starting");
}
