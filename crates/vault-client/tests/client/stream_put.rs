//! `put -r` walks the tree as a stream and compares it against what is
//! stored a chunk at a time: everything is stored, unchanged files are
//! skipped on the next run, a name given twice is reported, and the plan
//! never holds more than a bounded number of files, however big the tree.

use std::path::{Path, PathBuf};

use vault_client::ops::put_many::{Outcome, PutOptions, PutPlan, PutSummary};
use vault_client::path::{Given, GivenFiles, LocalFile};
use vault_client::vault::Vault;
use vault_node::testing::{self, timed, TestCluster};

use super::common::*;

/// Folders of the tree, and files in each.
const FOLDERS: usize = 60;
const PER_FOLDER: usize = 40;
/// Files taken at a time in these tests (the plan holds at most twice).
const CHUNK: usize = 150;

/// A tree of `FOLDERS * PER_FOLDER` tiny files in nested folders under
/// `dir/tree`, plus `tree/a.txt` and `tree/a/b.txt` (a name order trap:
/// `a.txt` sorts before `a/b.txt`). Returns the tree's path.
fn make_tree(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    for i in 0..FOLDERS * PER_FOLDER {
        let folder = tree
            .join(format!("d{:02}", i / (PER_FOLDER * 10)))
            .join(format!("s{:02}", (i / PER_FOLDER) % 10));
        std::fs::create_dir_all(&folder).unwrap();
        // Some empty, most a few bytes.
        let len = if i % 7 == 0 { 0 } else { 1 + i % 50 };
        std::fs::write(folder.join(format!("f{i:05}.txt")), data(len, i as u64)).unwrap();
    }
    std::fs::create_dir_all(tree.join("a")).unwrap();
    std::fs::write(tree.join("a.txt"), b"dot").unwrap();
    std::fs::write(tree.join("a/b.txt"), b"slash").unwrap();
    tree
}

const TREE_FILES: usize = FOLDERS * PER_FOLDER + 2;

/// `put -r` of everything in `given`, a chunk of [`CHUNK`] at a time.
async fn put_r(v: &Vault, given: &[Given]) -> PutSummary {
    let options = PutOptions {
        skip_unchanged: true,
        ..Default::default()
    };
    PutPlan::stream(GivenFiles::new(given.to_vec()), options, progress())
        .chunk(CHUNK)
        .run(v)
        .await
        .unwrap()
}

fn names(summary: &PutSummary) -> Vec<&str> {
    summary.files.iter().map(|(f, _)| f.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_r_of_thousands_of_files_is_a_stream_held_a_chunk_at_a_time() {
    timed(async {
        let c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let tree = make_tree(c.dir());
        // A second folder also named `tree`: one file repeats a name of the
        // first, one is new.
        let other = c.dir().join("other").join("tree");
        std::fs::create_dir_all(other.join("d00/s00")).unwrap();
        std::fs::write(other.join("d00/s00/f00001.txt"), b"again").unwrap();
        std::fs::write(other.join("extra.txt"), b"new").unwrap();
        let given = vec![Given::Folder(tree.clone()), Given::Folder(other.clone())];
        let v = open(&c, "alice", ALICE).await.unwrap();

        let first = put_r(&v, &given).await;
        assert_eq!(first.files.len(), TREE_FILES + 2);
        assert_eq!(first.stored(), TREE_FILES + 1, "{:?}", failures(&first));
        assert_eq!(first.failed(), 1);
        // Outcomes come in the order given: the first tree in name order,
        // then the second folder's files.
        let got = names(&first);
        let mut sorted = got[..TREE_FILES].to_vec();
        sorted.sort();
        assert_eq!(got[..TREE_FILES], sorted[..]);
        assert_eq!(got[0], "tree/a.txt");
        assert_eq!(got[1], "tree/a/b.txt");
        assert_eq!(
            got[TREE_FILES..],
            ["tree/d00/s00/f00001.txt", "tree/extra.txt"]
        );
        let (twice, outcome) = &first.files[TREE_FILES];
        assert_eq!(twice.path, other.join("d00/s00/f00001.txt"));
        match outcome {
            Outcome::Failed(e) => assert!(e.to_string().contains("given twice"), "{e}"),
            o => panic!("a name given twice: {o:?}"),
        }
        // Bounded: never more than two chunks held, far below the tree.
        assert!(
            first.peak_in_memory <= 2 * CHUNK,
            "held {} files at once",
            first.peak_in_memory
        );
        assert!(first.peak_in_memory > 0);

        // Everything is in the vault, with the first tree's bytes.
        let catalog = vault_client::catalog::scan(&v, "tree").await;
        assert_eq!(catalog.live().count(), TREE_FILES + 1);
        assert!(fetch(&v, &c, "tree/d00/s00/f00001.txt").await == data(2, 1));
        assert_eq!(fetch(&v, &c, "tree/a.txt").await, b"dot");
        assert_eq!(fetch(&v, &c, "tree/extra.txt").await, b"new");

        // Again: nothing changed, nothing sent; the repeated name is
        // reported again.
        let again = put_r(&v, &given).await;
        assert_eq!(again.stored(), 0, "{:?}", failures(&again));
        assert_eq!(again.unchanged(), TREE_FILES + 1);
        assert_eq!(again.failed(), 1);
        assert!(again.peak_in_memory <= 2 * CHUNK);

        // One file changed (its size): only it is sent.
        let changed = tree.join("d01/s02/f00480.txt");
        std::fs::write(&changed, b"a different length").unwrap();
        let third = put_r(&v, &given[..1]).await;
        assert_eq!(third.stored(), 1);
        assert_eq!(third.unchanged(), TREE_FILES - 1);
        let stored: Vec<&LocalFile> = third
            .files
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Stored(_)))
            .map(|(f, _)| f)
            .collect();
        assert_eq!(stored[0].path, changed);
        assert_eq!(
            fetch(&v, &c, "tree/d01/s02/f00480.txt").await,
            b"a different length"
        );
        v.close();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_in_the_tree_is_reported_as_skipped_and_the_rest_stored() {
    timed(async {
        let c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let tree = c.dir().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        for i in 0..30 {
            std::fs::write(tree.join("sub").join(format!("f{i:02}")), data(10, i)).unwrap();
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let summary = put_r(&v, &[Given::Folder(tree.clone())]).await;
        assert_eq!(summary.stored(), 30);
        #[cfg(unix)]
        {
            assert_eq!(summary.skipped.len(), 1, "{:?}", summary.skipped);
            assert!(summary.skipped[0].contains("symbolic link"));
        }
        v.close();
    })
    .await;
}

/// The stored bytes of `name`.
async fn fetch(v: &Vault, c: &TestCluster, name: &str) -> Vec<u8> {
    let out = c.dir().join("fetched");
    vault_client::ops::get::get_file(v, name, &out, true, progress())
        .await
        .unwrap();
    std::fs::read(&out).unwrap()
}

fn failures(s: &PutSummary) -> Vec<String> {
    s.files
        .iter()
        .filter_map(|(f, o)| match o {
            Outcome::Failed(e) => Some(format!("{}: {e}", f.name)),
            _ => None,
        })
        .take(5)
        .collect()
}
