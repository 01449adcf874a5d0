//! The library example (`examples/store_file.rs`), run against real nodes:
//! what it shows an embedder must keep working.

use vault_node::testing::{self, timed, TestCluster};

use super::common::*;

#[allow(dead_code)]
#[path = "../../examples/store_file.rs"]
mod store_file_example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_example_stores_a_file() {
    timed(async {
        let c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let conf = c.write_dfc("Alice", None).unwrap();
        let bytes = data(70_000, 3);
        let file = write(&c, "ex.bin", &bytes);
        let report = store_file_example::store_file(&conf, ALICE, &file)
            .await
            .unwrap();
        assert_eq!(
            (report.name.as_str(), report.size, report.version),
            ("ex.bin", 70_000, 1)
        );
        let v = open(&c, "alice", ALICE).await.unwrap();
        get_ok(&v, &c, "ex.bin", &bytes).await;
    })
    .await
}
