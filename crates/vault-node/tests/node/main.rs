//! The node's integration tests, one test binary (ripgrep's layout): each
//! module beside this file covers one area against real nodes in this
//! process, through the test kit `vault_node::testing`; `cli` runs the
//! `vault-node` binary as an operator does.

mod admission;
mod auth;
mod batch;
mod blob_range;
mod blobs;
mod certs;
mod cli;
mod cluster_secret;
mod conditional;
mod engine;
mod engine_faults;
mod engine_limits;
mod listing;
mod maintenance;
mod prelogin;
mod quota;
mod records_cas;
mod slow_relay;
mod sources;
mod store_limits;
mod testing_batch;
mod testing_kit;
mod testing_lies;
mod transport;
mod user_add;

/// Awaits every future, each on its own task, concurrently; the outputs in
/// order.
async fn join_all<T: Send + 'static>(
    futs: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
