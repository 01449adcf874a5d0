//! Running a command: open the vault (or rotate), then one operation, with
//! the results printed for people or, with `--json`, for scripts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vault_client::config::ClientConfig;
use vault_client::net::client_endpoint;
use vault_client::ops::{self, put::PutBatch, ProgressRef};
use vault_client::vault::{OpenError, OpenOptions, Vault, AUTH_FAILED_MESSAGE};

use crate::args::{Cli, Command};
use crate::output::{report_error, warn_all, Bar};
use crate::password::{passes_local_check, Sources};

/// Runs the command line; returns the process exit status.
pub async fn run(cli: Cli) -> Result<i32> {
    let cfg = ClientConfig::load(&cli.config)?;
    let ca_path = cli.ca.clone().unwrap_or_else(|| cfg.default_ca_path());
    let ca = std::fs::read(&ca_path)
        .with_context(|| format!("failed to read the cluster CA {}", ca_path.display()))?;
    let endpoint = client_endpoint(&ca).context("failed to set up QUIC")?;
    let mut sources = Sources::new(cli.password_stdin);
    let password = sources.password(&cfg)?;
    let options = OpenOptions::default();
    let pending = options
        .state_store(&cfg)
        .load(&cfg.username.to_ascii_lowercase())?
        .pending_rotation;
    let rotating = matches!(cli.command, Some(Command::Rotate));
    if !passes_local_check(&cfg, &password, pending.as_ref(), rotating) {
        eprintln!("{AUTH_FAILED_MESSAGE}");
        return Ok(1);
    }
    let status = match cli.command {
        Some(Command::Rotate) => {
            let new = sources.new_password()?;
            match ops::rotate::rotate(&endpoint, &cfg, &password, &new, &options).await {
                Ok(r) => {
                    if cli.json {
                        println!(
                            "{}",
                            serde_json::json!({"rotated": r.nodes, "config_updated": r.config_updated, "resumed": r.resumed})
                        );
                    } else {
                        if r.resumed {
                            println!("finished the interrupted password change");
                        }
                        println!("password changed on {}", r.nodes.join(", "));
                        if r.config_updated {
                            println!("updated {}", cfg.path.display());
                        }
                    }
                    0
                }
                Err(e) => report_error(&e),
            }
        }
        command => {
            // PUT's MD5 pass runs while the nodes are dialled and Argon2id runs.
            let batch = match &command {
                Some(Command::Put { files }) => Some(start_put(files, cli.json)),
                _ => None,
            };
            let vault = match Vault::open_with(&endpoint, &cfg, &password, &options).await {
                Ok(v) => v,
                Err(OpenError::AuthFailed) => {
                    eprintln!("{AUTH_FAILED_MESSAGE}");
                    return Ok(1);
                }
                Err(e) => bail!(e),
            };
            for (node, why) in vault.unavailable() {
                eprintln!("warning: {node} {why}");
            }
            let status = match command {
                Some(c) => run_command(&vault, c, cli.json, batch).await,
                None => {
                    let me = crate::prompt::Identity {
                        user: cfg.username.clone(),
                        password: password.clone(),
                    };
                    crate::prompt::interactive(&vault, &me).await
                }
            };
            vault.close();
            status
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    Ok(status)
}

/// A PUT's files, their MD5 pass started, and one bar each.
pub struct StartedPut {
    batch: PutBatch,
    bars: Vec<std::sync::Arc<Bar>>,
}

/// Starts the MD5 pass of `files` (before the vault opens).
pub fn start_put(files: &[PathBuf], json: bool) -> StartedPut {
    let mut bars = Vec::new();
    let mut jobs = Vec::new();
    for path in files {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let bar = Bar::new(2 * size, &display_name(path), json);
        jobs.push((path.clone(), bar.clone() as ProgressRef));
        bars.push(bar);
    }
    StartedPut {
        batch: PutBatch::start(jobs),
        bars,
    }
}

/// Runs one command against an open vault; returns the exit status.
pub async fn run_command(
    vault: &Vault,
    command: Command,
    json: bool,
    started: Option<StartedPut>,
) -> i32 {
    match command {
        Command::Put { files } => {
            let StartedPut { mut batch, bars } = started.unwrap_or_else(|| start_put(&files, json));
            let mut status = 0;
            let mut results = Vec::new();
            let mut bars = bars.into_iter();
            loop {
                let bar = bars.next();
                if let Some(b) = &bar {
                    b.show();
                }
                let Some((path, r)) = batch.next(vault).await else {
                    break;
                };
                if let Some(b) = &bar {
                    b.finish();
                }
                match r {
                    Ok(r) => {
                        warn_all(&r.warnings);
                        if !json {
                            println!(
                                "stored {} ({} bytes, version {})",
                                r.name, r.size, r.version
                            );
                        }
                        results.push(serde_json::json!({"name": r.name, "size": r.size, "version": r.version, "warnings": r.warnings}));
                    }
                    Err(e) => {
                        status = report_error(&e);
                        results.push(serde_json::json!({"file": path.display().to_string(), "error": e.to_string()}));
                    }
                }
            }
            if json {
                println!("{}", serde_json::Value::Array(results));
            }
            status
        }
        Command::Get {
            name,
            output,
            force,
        } => {
            let out = output.unwrap_or_else(|| PathBuf::from(&name));
            let m = match ops::get::find(vault, &name).await {
                Ok(m) => m,
                Err(e) => return report_error(&e),
            };
            let bar = Bar::new(m.size, &name, json);
            bar.show();
            let r = ops::get::get_version(vault, &m, &out, force, bar.clone()).await;
            bar.finish();
            match r {
                Ok(r) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"name": name, "path": r.path, "size": r.size, "failovers": r.failovers})
                        );
                    } else {
                        for f in &r.failovers {
                            eprintln!("warning: used the other copy after {f}");
                        }
                        println!("wrote {} ({} bytes)", r.path.display(), r.size);
                    }
                    0
                }
                Err(e) => report_error(&e),
            }
        }
        Command::List => match ops::list::list(vault).await {
            Ok(listing) => {
                warn_all(&listing.problems);
                if listing.format1_objects > 0 {
                    eprintln!(
                        "warning: {} objects stored by Vault 0.1 (storage format 1) are not shown; see \"Upgrading from Vault 0.1\" in the README",
                        listing.format1_objects
                    );
                }
                if json {
                    let unavailable: Vec<_> = vault
                        .unavailable()
                        .into_iter()
                        .map(|(node, reason)| serde_json::json!({"node": node, "reason": reason}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({"files": listing.files, "unavailable": unavailable, "problems": listing.problems, "format1_objects": listing.format1_objects})
                    );
                } else {
                    for f in listing.files {
                        if f.complete {
                            println!("{}", f.name);
                        } else {
                            println!("{} [incomplete]", f.name);
                        }
                    }
                }
                0
            }
            Err(e) => report_error(&e),
        },
        Command::Delete { name } => match ops::delete::delete_file(vault, &name).await {
            Ok(r) => {
                warn_all(&r.warnings);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"deleted": name, "unreachable": r.unreachable, "warnings": r.warnings})
                    );
                } else {
                    println!("deleted {name}");
                    for n in r.unreachable {
                        eprintln!("warning: {n} could not be reached; it keeps its old copy, which the other nodes' tombstone overrides");
                    }
                }
                0
            }
            Err(e) => report_error(&e),
        },
        Command::Rotate => {
            eprintln!("error: rotate is not available at the prompt; run `vault-client rotate`");
            1
        }
    }
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}
