//! The node's integration tests, one test binary (ripgrep's layout): each
//! module beside this file covers one area against real nodes in this
//! process, through the test kit `vault_node::testing`; `cli` runs the
//! `vault-node` binary as an operator does.

mod admission;
mod auth;
mod batch;
mod blobs;
mod certs;
mod cli;
mod cluster_secret;
mod listing;
mod quota;
mod testing_batch;
mod testing_kit;
mod testing_lies;
mod transport;
