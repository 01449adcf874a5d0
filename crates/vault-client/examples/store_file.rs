//! Storing a file through the library alone: open the vault a `dfc.conf`
//! describes and PUT one file. No command-line code is involved; an
//! embedder depends on the `vault-client` library, which has no
//! command-line or HTTP dependencies.
//!
//! ```sh
//! VAULT_PASSWORD=Crimson33 cargo run -p vault-client --example store_file -- vault-dev/dfc.conf README.md
//! ```

use std::path::Path;

use vault_client::config::ClientConfig;
use vault_client::net::client_endpoint;
use vault_client::ops::{self, put::PutReport};
use vault_client::vault::Vault;
use zeroize::Zeroizing;

/// Opens the vault of `config` with `password` and stores `file` in it.
pub async fn store_file(
    config: &Path,
    password: &str,
    file: &Path,
) -> Result<PutReport, Box<dyn std::error::Error>> {
    let cfg = ClientConfig::load(config)?;
    let ca = std::fs::read(cfg.default_ca_path())?;
    let endpoint = client_endpoint(&ca)?;
    let password = Zeroizing::new(password.to_string());
    let vault = Vault::open(&endpoint, &cfg, &password).await?;
    let report = ops::put::put_file(&vault, file, ops::no_progress()).await;
    vault.close();
    Ok(report?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, file] = &args[..] else {
        return Err("usage: store_file DFC.CONF FILE (password in VAULT_PASSWORD)".into());
    };
    let password = std::env::var("VAULT_PASSWORD").map_err(|_| "set VAULT_PASSWORD")?;
    let report = store_file(Path::new(config), &password, Path::new(file)).await?;
    println!(
        "stored {} ({} bytes, version {})",
        report.name, report.size, report.version
    );
    Ok(())
}
