//! GET restores the modification time stored in the manifest: for one
//! file (`get`) and for every file of a folder (`get -r`), small files
//! (written whole) and large ones (written part by part) alike.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vault_client::ops;
use vault_node::testing::{self, timed, TestCluster};

use super::common::*;

/// A fixed time long past, with a sub-second part.
fn past(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::new(seconds, 123_456_789)
}

fn set_mtime(path: &Path, when: SystemTime) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(when).unwrap();
}

/// Equal to the precision the filesystem keeps (at worst whole seconds).
fn assert_mtime(path: &Path, want: SystemTime) {
    let got = std::fs::metadata(path).unwrap().modified().unwrap();
    let diff = match got.duration_since(want) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(
        diff < Duration::from_secs(1),
        "{}: modified {got:?}, want {want:?}",
        path.display()
    );
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_restores_the_modification_time() {
    timed(async {
        let c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        // A small file and one above the small-file limit (fetched part
        // by part into a partial file).
        for (name, len, when) in [
            ("small.txt", 5_000, past(1_000_000_000)),
            ("large.bin", 1_500_000, past(1_200_000_000)),
        ] {
            let path = write(&c, name, &data(len, 7));
            set_mtime(&path, when);
            ops::put::put_file(&v, &path, progress()).await.unwrap();
            let out = c.dir().join(format!("out-{name}"));
            ops::get::get_file(&v, name, &out, false, progress())
                .await
                .unwrap();
            assert!(std::fs::read(&out).unwrap() == data(len, 7));
            assert_mtime(&out, when);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_r_restores_every_modification_time() {
    timed(async {
        let c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let tree = c.dir().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        let files = [
            ("a.txt", 3_000, past(1_100_000_000)),
            ("b.txt", 4_000, past(1_300_000_000)),
            ("c.bin", 1_300_000, past(1_400_000_000)),
        ];
        for (i, (name, len, when)) in files.iter().enumerate() {
            let path = tree.join(if i == 1 { "sub" } else { "" }).join(name);
            std::fs::write(&path, data(*len, i as u64 + 1)).unwrap();
            set_mtime(&path, *when);
        }
        let walk = vault_client::path::walk(&tree).unwrap();
        let options = ops::put_many::PutOptions::default();
        let stored = ops::put_many::PutPlan::start(walk.files, options, progress())
            .run(&v)
            .await
            .unwrap();
        assert_eq!(stored.stored(), 3);
        let out = c.dir().join("out");
        std::fs::create_dir(&out).unwrap();
        let summary = ops::get_many::get_tree(&v, "tree", &out, false, progress())
            .await
            .unwrap();
        assert_eq!(summary.written(), 3);
        for (i, (name, len, when)) in files.iter().enumerate() {
            let got = find_file(&out, name).unwrap_or_else(|| panic!("{name} not fetched"));
            assert!(std::fs::read(&got).unwrap() == data(*len, i as u64 + 1));
            assert_mtime(&got, *when);
        }
    })
    .await;
}
