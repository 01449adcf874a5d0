//! The client's integration tests, one binary: four real nodes in-process
//! (`vault_node::testing`), hostile proxies in front of them, the library
//! and the real `vault-client` binary against them, and the format's
//! known-answer vectors.

mod common;
mod consistency;
mod dead_node;
mod erasure;
mod example;
mod hostile;
mod hostile_login;
mod hostile_repair;
mod library;
mod mtime;
mod progress;
mod range;
mod rotate_again;
mod stream_put;
mod upgrade;
mod vectors;
