//! Raw clients from other loopback source addresses (127.0.0.N), for
//! tests of what the node does per source: Linux routes all of
//! 127.0.0.0/8 to the loopback interface, and the node listens on
//! 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use vault_node::testing::raw::{client_tls, CONNECT_TIMEOUT};
use vault_node::testing::RawClient;

/// A raw client whose UDP socket is bound to `ip` (port 0), connected to
/// the node `server_name` at `addr`.
pub async fn client_from(
    ip: Ipv4Addr,
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
) -> anyhow::Result<RawClient> {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from((ip, 0)))
        .with_context(|| format!("failed to bind {ip}"))?;
    endpoint.set_default_client_config(client_tls(ca_pem)?);
    let connecting = endpoint.connect(addr, server_name)?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .context("connect timed out")?
        .with_context(|| format!("failed to connect from {ip}"))?;
    Ok(RawClient { endpoint, conn })
}
