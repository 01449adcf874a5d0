//! A vault stored on nodes in 0.2's layout (one file per blob under
//! `<root>/<user>/`) reads back byte for byte after the nodes, restarted on
//! those roots, convert them to the indexed layout at start.

use vault_client::ops;
use vault_node::store::offline;
use vault_node::testing::{self, timed, TestCluster};

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_on_0_2_node_roots_reads_back_byte_for_byte_after_conversion() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        // A small file (every blob inline after conversion) and one whose
        // parts stay files.
        let files = [("small.txt", 5_000, 3), ("large.bin", 1_500_000, 4)];
        let v = open(&c, "alice", ALICE).await.unwrap();
        for (name, len, seed) in files {
            let path = write(&c, name, &data(len, seed));
            ops::put::put_file(&v, &path, progress()).await.unwrap();
        }
        v.close();
        drop(v);
        // Every node's user folder rewritten as 0.2 kept it: the same blob
        // bytes, one file each, no index.
        for i in 0..4 {
            c.stop(i).await.unwrap();
            let root = c.root(i).to_path_buf();
            let blobs = offline::read_blobs(&root, "alice").unwrap();
            assert!(!blobs.is_empty());
            let dir = root.join("alice");
            std::fs::remove_dir_all(&dir).unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            for (id, bytes) in &blobs {
                std::fs::write(dir.join(id), bytes).unwrap();
            }
            c.restart(i).await.unwrap();
            assert!(
                dir.join("index.redb").exists(),
                "DFS{} did not convert",
                i + 1
            );
            assert_eq!(offline::read_blobs(&root, "alice").unwrap(), blobs);
        }
        let v = open(&c, "alice", ALICE).await.unwrap();
        for (name, len, seed) in files {
            let out = c.dir().join(format!("back-{name}"));
            ops::get::get_file(&v, name, &out, false, progress())
                .await
                .unwrap();
            assert!(std::fs::read(&out).unwrap() == data(len, seed), "{name}");
        }
    })
    .await;
}
