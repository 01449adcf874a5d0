//! The command line and the classic interactive prompt.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use zeroize::Zeroizing;

use crate::config::{ClientConfig, PasswordSetting};
use crate::net::client_endpoint;
use crate::ops::{self, OpError};
use crate::vault::{OpenError, OpenOptions, Vault, AUTH_FAILED_MESSAGE};

/// Encrypted files spread over four untrusted storage nodes.
///
/// Every file is split in four parts, encrypted on this machine and placed on
/// two of the four nodes listed in dfc.conf; any three nodes can rebuild it.
/// Without a command, reads PUT/GET/LIST/DELETE/EXIT commands from a prompt.
#[derive(Debug, Parser)]
#[command(name = "vault-client", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Client configuration: four `Server NAME HOST:PORT` lines, `Username:`
    /// and optionally `Password:` (plain or its MD5 digest) and `CA PATH`.
    #[arg(
        short = 'c',
        long = "config",
        default_value = "dfc.conf",
        global = true
    )]
    pub config: PathBuf,
    /// Cluster CA certificate [default: the config's `CA` line, else
    /// certs/ca.pem beside the config file].
    #[arg(long, global = true, value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// Read the password from the first line of standard input (for
    /// `rotate`, the new password from the second line).
    #[arg(long, global = true)]
    pub password_stdin: bool,
    /// Print results as JSON (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

const AFTER_HELP: &str = "\
Environment:
  VAULT_PASSWORD      the password (instead of the prompt or dfc.conf)
  VAULT_NEW_PASSWORD  the new password for `rotate`
  RUST_LOG            log filter (default: warn)

A bad username or password prints `Invalid Username/Password. Please try again.`
and exits with status 1.";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store files (an existing name is replaced by the new version).
    Put {
        /// Files to store; each is stored under its file name.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Fetch a file. Needs any three nodes.
    Get {
        /// Name of the file in the vault.
        name: String,
        /// Where to write it [default: NAME in the current folder].
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(short, long)]
        force: bool,
    },
    /// List the files; ` [incomplete]` marks files the reachable nodes cannot rebuild.
    List,
    /// Delete a file from every reachable node.
    Delete {
        /// Name of the file in the vault.
        name: String,
    },
    /// Change the password on all four nodes (no data is re-encrypted) and
    /// update dfc.conf's `Password:` line in the form it has.
    Rotate,
}

/// Runs the command line; returns the process exit status.
pub async fn run(cli: Cli) -> Result<i32> {
    let cfg = ClientConfig::load(&cli.config)?;
    let ca_path = cli.ca.clone().unwrap_or_else(|| cfg.default_ca_path());
    let ca = std::fs::read(&ca_path)
        .with_context(|| format!("failed to read the cluster CA {}", ca_path.display()))?;
    let endpoint = client_endpoint(&ca).context("failed to set up QUIC")?;
    let mut stdin_lines = None;
    if cli.password_stdin {
        stdin_lines = Some(std::io::stdin().lock().lines());
    }
    let mut next_stdin = || -> Result<Option<Zeroizing<String>>> {
        match stdin_lines.as_mut() {
            None => Ok(None),
            Some(lines) => match lines.next() {
                Some(l) => Ok(Some(Zeroizing::new(
                    l.context("failed to read standard input")?,
                ))),
                None => bail!("--password-stdin: standard input is empty"),
            },
        }
    };
    let password = match next_stdin()? {
        Some(p) => p,
        None => password_from_env_or_config(&cfg, "VAULT_PASSWORD", "Password")?,
    };
    let options = OpenOptions::default();
    let store = options.state_store(&cfg);
    let pending = store
        .load(&cfg.username.to_ascii_lowercase())?
        .pending_rotation;
    // The legacy MD5 credential check: a digest in dfc.conf must match
    // before anything is sent (plain-text lines are left to the nodes).
    // While a rotation is pending, the new password's digest matches too,
    // and `rotate` itself is left to the nodes: a half-finished rotation
    // must never be locked out by the local check.
    if let Some(digest @ PasswordSetting::Md5(_)) = &cfg.password {
        let pending_new = pending
            .as_ref()
            .and_then(|p| p.new_md5.as_deref())
            .is_some_and(|d| crate::config::md5_hex(password.as_bytes()) == d);
        let rotating = pending.is_some() && matches!(cli.command, Some(Command::Rotate));
        if !digest.matches(&password) && !pending_new && !rotating {
            eprintln!("{AUTH_FAILED_MESSAGE}");
            return Ok(1);
        }
    }
    let status = match cli.command {
        Some(Command::Rotate) => {
            let new = match next_stdin()? {
                Some(p) => p,
                None => new_password()?,
            };
            let report = ops::rotate::rotate(&endpoint, &cfg, &password, &new, &options).await;
            match report {
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
            let ahead = match &command {
                Some(Command::Put { files }) => {
                    let counters: Vec<Arc<AtomicU64>> =
                        files.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
                    let hashing = ops::put::hash_ahead(files, &counters);
                    Some(Ahead { counters, hashing })
                }
                _ => None,
            };
            let vault = match Vault::open_with(&endpoint, &cfg, &password, &options).await {
                Ok(v) => Arc::new(v),
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
                Some(c) => run_command(&vault, c, cli.json, ahead).await,
                None => interactive(&vault).await,
            };
            vault.close();
            status
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    Ok(status)
}

/// The password from `env`, the config's plain `Password:` line, or a prompt.
fn password_from_env_or_config(
    cfg: &ClientConfig,
    env: &str,
    what: &str,
) -> Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var(env) {
        return Ok(Zeroizing::new(p));
    }
    if let Some(PasswordSetting::Plain(p)) = &cfg.password {
        return Ok(p.clone());
    }
    prompt(&format!("{what} for {}: ", cfg.username))
}

fn prompt(text: &str) -> Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        bail!("no password: set VAULT_PASSWORD, use --password-stdin, or run on a terminal");
    }
    Ok(Zeroizing::new(
        rpassword::prompt_password(text).context("failed to read the password")?,
    ))
}

fn new_password() -> Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var("VAULT_NEW_PASSWORD") {
        return Ok(Zeroizing::new(p));
    }
    let a = prompt("New password: ")?;
    let b = prompt("New password again: ")?;
    if *a != *b {
        bail!("the new passwords do not match; nothing was changed");
    }
    Ok(a)
}

fn report_error(e: &OpError) -> i32 {
    match e {
        OpError::Open(OpenError::AuthFailed) => eprintln!("{AUTH_FAILED_MESSAGE}"),
        other => eprintln!("error: {other}"),
    }
    1
}

/// Work started before the vault opened: PUT's MD5 passes.
pub struct Ahead {
    counters: Vec<Arc<AtomicU64>>,
    hashing: Vec<ops::put::Hashing>,
}

/// A progress bar on a terminal for transfers over 8 MiB; nothing otherwise.
fn progress_bar(
    counter: Arc<AtomicU64>,
    total: u64,
    label: &str,
    json: bool,
) -> (Option<tokio::task::JoinHandle<()>>, ProgressBar) {
    if json || total < (8 << 20) || !std::io::stderr().is_terminal() {
        return (None, ProgressBar::hidden());
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    let (c, b) = (counter.clone(), bar.clone());
    let ticker = tokio::spawn(async move {
        loop {
            b.set_position(c.load(std::sync::atomic::Ordering::Relaxed).min(total));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (Some(ticker), bar)
}

fn finish_bar(ticker: Option<tokio::task::JoinHandle<()>>, bar: ProgressBar) {
    if let Some(t) = ticker {
        t.abort();
    }
    bar.finish_and_clear();
}

/// Runs one command against an open vault; returns the exit status.
pub async fn run_command(
    vault: &Arc<Vault>,
    command: Command,
    json: bool,
    ahead: Option<Ahead>,
) -> i32 {
    match command {
        Command::Put { files } => {
            let mut status = 0;
            let mut results = Vec::new();
            let (mut counters, mut hashing) = match ahead {
                Some(a) => (a.counters.into_iter(), a.hashing.into_iter()),
                None => (Vec::new().into_iter(), Vec::new().into_iter()),
            };
            for path in files {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let counter = counters.next().unwrap_or_default();
                let (ticker, bar) =
                    progress_bar(counter.clone(), 2 * size, &display_name(&path), json);
                let r = ops::put::put_file(vault, &path, counter, hashing.next()).await;
                finish_bar(ticker, bar);
                match r {
                    Ok(r) => {
                        if !json {
                            println!(
                                "stored {} ({} bytes, version {})",
                                r.name, r.size, r.version
                            );
                        }
                        results.push(serde_json::json!({"name": r.name, "size": r.size, "version": r.version}));
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
            let counter = Arc::new(AtomicU64::new(0));
            let (ticker, bar) = progress_bar(counter.clone(), m.size, &name, json);
            let r = ops::get::get_version(vault, &m, &out, force, counter).await;
            finish_bar(ticker, bar);
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
                for p in &listing.problems {
                    eprintln!("warning: {p}");
                }
                if listing.format1_objects > 0 {
                    eprintln!(
                        "warning: {} objects stored by Vault 0.1 (storage format 1) are not shown; see \"Upgrading from Vault 0.1\" in the README",
                        listing.format1_objects
                    );
                }
                let files = listing.files;
                if json {
                    let unavailable: Vec<_> = vault
                        .unavailable()
                        .into_iter()
                        .map(|(node, reason)| serde_json::json!({"node": node, "reason": reason}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({"files": files, "unavailable": unavailable, "problems": listing.problems, "format1_objects": listing.format1_objects})
                    );
                } else {
                    for f in files {
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
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"deleted": name, "unreachable": r.unreachable})
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

const PROMPT_HELP: &str = "commands: PUT FILE..., GET NAME [PATH], LIST, DELETE NAME, EXIT";

/// The classic prompt: PUT, GET, LIST, DELETE and EXIT in any case.
pub async fn interactive(vault: &Arc<Vault>) -> i32 {
    let tty = std::io::stdin().is_terminal();
    if tty {
        println!("{PROMPT_HELP}");
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut status = 0;
    loop {
        if tty {
            print!("vault> ");
            let _ = std::io::stdout().flush();
        }
        let Some(line) = rx.recv().await else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((cmd, args)) = words.split_first() else {
            continue;
        };
        let command = match (cmd.to_ascii_uppercase().as_str(), args) {
            ("EXIT" | "QUIT", _) => break,
            ("HELP" | "?", _) => {
                println!("{PROMPT_HELP}");
                continue;
            }
            ("PUT", files) if !files.is_empty() => Command::Put {
                files: files.iter().map(PathBuf::from).collect(),
            },
            ("GET", [name]) => Command::Get {
                name: name.to_string(),
                output: None,
                force: false,
            },
            ("GET", [name, path]) => Command::Get {
                name: name.to_string(),
                output: Some(PathBuf::from(path)),
                force: false,
            },
            ("LIST" | "LS", []) => Command::List,
            ("DELETE" | "DEL" | "RM", [name]) => Command::Delete {
                name: name.to_string(),
            },
            _ => {
                eprintln!("unknown command: {line}\n{PROMPT_HELP}");
                status = 1;
                continue;
            }
        };
        status = run_command(vault, command, false, None).await;
    }
    status
}
