//! Running a command: open the vault (or rotate), then one operation, with
//! the results printed for people or, with `--json`, for scripts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Write};
use vault_client::config::{ClientConfig, ConfigError, PasswordSetting};
use vault_client::net::client_endpoint;

use vault_client::ops::check::{CopyState, FileHealth, Survey};
use vault_client::ops::put_many::{Event, Outcome, PutOptions, PutPlan};
use vault_client::ops::repair::RepairOptions;
use vault_client::ops::{self, OpError, ProgressRef};
use vault_client::path::{self, Given, GivenFiles, Item, LocalFile};
use vault_client::vault::{OpenError, OpenOptions, Vault, AUTH_FAILED_MESSAGE};

use crate::args::{Cli, Command};
use crate::causes::Causes;
use crate::output::{report_error, tidy, warn_all, Bar};
use crate::password::{passes_local_check, Sources};

/// Runs the command line; returns the process exit status.
pub async fn run(cli: Cli) -> Result<i32> {
    let cfg = match ClientConfig::load(&cli.config) {
        Ok(cfg) => cfg,
        Err(ConfigError::Io { path, source }) => {
            let hint = if source.kind() == std::io::ErrorKind::NotFound {
                " (use -c PATH to name the configuration file)"
            } else {
                ""
            };
            eprintln!("error: failed to read {}: {source}{hint}", path.display());
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
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
    let local_ok = passes_local_check(&cfg, &password, pending.as_ref(), rotating);
    // rotate decides once it has the new password (see its arm).
    if !local_ok && !rotating {
        eprintln!("{AUTH_FAILED_MESSAGE}");
        return Ok(1);
    }
    let status = match cli.command {
        Some(Command::Rotate) => {
            let new = sources.new_password()?;
            // A digest in dfc.conf that is the new password's: an earlier
            // rotate finished; the nodes are asked (ops::rotate says so).
            let new_in_config =
                matches!(&cfg.password, Some(d @ PasswordSetting::Md5(_)) if d.matches(&new));
            if !local_ok && !new_in_config {
                eprintln!("{AUTH_FAILED_MESSAGE}");
                return Ok(1);
            }
            match ops::rotate::rotate(&endpoint, &cfg, &password, &new, &options).await {
                Ok(r) => {
                    if cli.json {
                        println!(
                            "{}",
                            serde_json::json!({"rotated": r.nodes, "config_updated": r.config_updated, "resumed": r.resumed, "already": r.already})
                        );
                    } else if r.already {
                        println!("the password was already changed to the new one (an earlier rotate finished); nothing to do");
                        if r.config_updated {
                            println!("updated {} with the new password", cfg.path.display());
                        }
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
            // Standard input is the prompt's from here on.
            drop(sources);
            // Refused before any login: the gateway would refuse it anyway.
            if let Some(Command::Serve {
                s3,
                web,
                allow_remote: false,
                ..
            }) = &command
            {
                if let Some(addr) = [s3, web].into_iter().find(|a| !a.ip().is_loopback()) {
                    eprintln!("error: {}", vault_gateway::ServeError::Remote(*addr));
                    return Ok(2);
                }
            }
            // PUT's MD5 pass runs while the nodes are dialled and Argon2id runs.
            let batch = match &command {
                Some(Command::Put {
                    files,
                    recursive,
                    checksum,
                    degraded,
                    ..
                }) => Some(start_put(
                    files, *recursive, *checksum, *degraded, cli.json,
                )?),
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
            // check and repair report a node they could not survey once,
            // with its reason, in their own output.
            let surveys = matches!(
                command,
                Some(Command::Check { .. } | Command::Repair { .. })
            );
            for (node, why) in vault.unavailable() {
                if !surveys {
                    eprintln!("warning: {node} {why}");
                }
            }
            let status = match command {
                Some(Command::Serve {
                    s3,
                    web,
                    allow_remote,
                    degraded,
                }) => {
                    let reopen: vault_gateway::backend::Reopen = {
                        let (endpoint, cfg, password, options) = (
                            endpoint.clone(),
                            cfg.clone(),
                            password.clone(),
                            options.clone(),
                        );
                        std::sync::Arc::new(move || {
                            let (endpoint, cfg, password, options) = (
                                endpoint.clone(),
                                cfg.clone(),
                                password.clone(),
                                options.clone(),
                            );
                            Box::pin(async move {
                                Vault::open_with(&endpoint, &cfg, &password, &options)
                                    .await
                                    .map_err(|e| e.to_string())
                            })
                        })
                    };
                    let options = vault_gateway::Options {
                        s3,
                        web,
                        allow_remote,
                        config: cfg.path.clone(),
                        secret: None,
                        reopen: Some(reopen),
                        degraded,
                        password: Some(password.clone()),
                    };
                    return serve(vault, options, &password, &endpoint).await;
                }
                Some(Command::Status) => status(&vault, &cfg, cli.json).await,
                Some(c) => run_command(&vault, c, cli.json, cli.allow_stale, batch).await,
                None => {
                    let me = crate::prompt::Identity {
                        user: cfg.username.clone(),
                        password: password.clone(),
                    };
                    crate::prompt::interactive(&vault, &cfg, &me).await
                }
            };
            vault.close();
            status
        }
    };
    vault_client::net::finish(&endpoint).await;
    Ok(status)
}

/// A PUT's files, planned (their MD5 pass started where it will surely be
/// needed) before the vault opens.
pub struct StartedPut {
    plan: PutPlan,
    bar: std::sync::Arc<Bar>,
    /// Things given that are neither files nor folders.
    special: Vec<String>,
    unreadable: Vec<String>,
    recursive: bool,
}

/// Finds the files a PUT names: files under their file name, with `-r`
/// folders walked as a stream while the files are stored (links and
/// special files skipped and reported as they are met), so that memory
/// does not grow with the tree.
///
/// The progress bar's total comes from a first pass that only sums the
/// sizes (and names the files large enough to be sent alone), made only
/// when the bar can be seen (standard error a terminal, no `--json`).
pub fn start_put(
    files: &[PathBuf],
    recursive: bool,
    checksum: bool,
    degraded: bool,
    json: bool,
) -> Result<StartedPut> {
    let mut given = Vec::new();
    // Files that cannot be read are reported and the others stored.
    let mut unreadable = Vec::new();
    let mut special = Vec::new();
    for path in files {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                unreadable.push(format!("cannot read {}: {e}", path.display()));
                continue;
            }
        };
        if meta.is_dir() {
            if !recursive {
                bail!(
                    "{} is a folder; use put -r to store a folder",
                    path.display()
                );
            }
            // A folder that cannot be walked at all is unreadable, as a
            // missing file is.
            if let Err(e) = path::Walker::new(path) {
                unreadable.push(format!("cannot read {}: {e}", path.display()));
                continue;
            }
            given.push(Given::Folder(path.clone()));
        } else if meta.is_file() {
            let name =
                path::file_name(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            given.push(Given::File(LocalFile {
                path: path.clone(),
                name,
                size: meta.len(),
                mtime_ns: path::mtime_ns(&meta),
            }));
        } else {
            special.push(format!(
                "{}: not a regular file (a link or a special file)",
                path.display()
            ));
        }
    }
    let options = PutOptions {
        skip_unchanged: recursive,
        checksum,
        degraded,
    };
    let (plan, bar) = if recursive {
        let bar = if !json && std::io::stderr().is_terminal() {
            put_bar(&given, json)
        } else {
            Bar::put(&[], json)
        };
        let plan = PutPlan::stream(GivenFiles::new(given), options, bar.clone() as ProgressRef);
        (plan, bar)
    } else {
        // Only the files named: a short list, their large files' MD5 pass
        // begun while the vault opens.
        let local: Vec<LocalFile> = given
            .into_iter()
            .filter_map(|g| match g {
                Given::File(f) => Some(f),
                Given::Folder(_) => None,
            })
            .collect();
        // File bytes, each counted once; the MD5 pass is a phase of the bar.
        let sizes: Vec<(String, u64)> = local.iter().map(|f| (f.name.clone(), f.size)).collect();
        let bar = Bar::put(&sizes, json);
        let plan = PutPlan::start(local, options, bar.clone() as ProgressRef);
        (plan, bar)
    };
    Ok(StartedPut {
        plan,
        bar,
        special,
        unreadable,
        recursive,
    })
}

/// The progress bar of a `put -r`: a first pass over what was given sums
/// the sizes without keeping the files (only those sent alone are named,
/// for the bar's label).
fn put_bar(given: &[Given], json: bool) -> std::sync::Arc<Bar> {
    let mut count = 0usize;
    let mut total = 0u64;
    let mut named: Vec<(String, u64)> = Vec::new();
    let mut first: Option<(String, u64)> = None;
    for item in GivenFiles::new(given.to_vec()) {
        if let Item::File(f) = item {
            count += 1;
            total = total.saturating_add(f.size);
            if count == 1 {
                first = Some((f.name.clone(), f.size));
            }
            if f.size > ops::put_many::SMALL_FILE {
                named.push((f.name, f.size));
            }
        }
    }
    if count == 1 {
        return Bar::put(&first.into_iter().collect::<Vec<_>>(), json);
    }
    Bar::put_sized(count, total, named, json)
}

/// Runs one command against an open vault; returns the exit status.
pub async fn run_command(
    vault: &Vault,
    command: Command,
    json: bool,
    allow_stale: bool,
    started: Option<StartedPut>,
) -> i32 {
    match command {
        Command::Put {
            files,
            recursive,
            checksum,
            verbose,
            degraded,
        } => {
            let started = match started {
                Some(s) => s,
                None => match start_put(&files, recursive, checksum, degraded, json) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        return 1;
                    }
                },
            };
            put(vault, started, json, verbose).await
        }
        Command::Get {
            recursive: true,
            name,
            output,
            force,
            verbose,
        } => get_tree(vault, &name, output, force, json, allow_stale, verbose).await,
        Command::Get {
            recursive: false,
            name,
            output,
            force,
            ..
        } => {
            let leaf = || match path::file_name(Path::new(&name)) {
                Ok(leaf) => Ok(PathBuf::from(leaf)),
                Err(e) => {
                    eprintln!("error: {name}: {e}");
                    Err(1)
                }
            };
            // As cp: an existing folder gets the file under its own name.
            let out = match output {
                Some(o) if o.is_dir() => match leaf() {
                    Ok(l) => o.join(l),
                    Err(status) => return status,
                },
                Some(o) => o,
                None => match leaf() {
                    Ok(l) => l,
                    Err(status) => return status,
                },
            };
            let (m, stale) = match ops::get::find_with(vault, &name, allow_stale).await {
                Ok(found) => found,
                Err(e) => return not_found_or_folder(vault, &name, e).await,
            };
            if let Some(why) = &stale {
                eprintln!("warning: {why}");
            }
            ops::get::sweep_beside(&out);
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
                    stale_status(&stale)
                }
                Err(e) => report_error(&e),
            }
        }
        Command::List { prefix } => {
            match ops::list::list_with(vault, prefix.as_deref().unwrap_or(""), allow_stale).await {
                Ok(listing) => {
                    warn_all(&listing.problems);
                    if let Some(why) = &listing.stale {
                        eprintln!("warning: {why}");
                    }
                    if listing.format1_objects > 0 {
                        eprintln!(
                            "warning: {} objects stored by Vault 0.1 (storage format 1) are not shown; see \"Upgrading from Vault 0.1\" in the README",
                            listing.format1_objects
                        );
                    }
                    if listing.unreadable > 0 {
                        eprintln!(
                            "warning: {} manifest copies failed authentication and were ignored (the good copies were used)",
                            listing.unreadable
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
                            serde_json::json!({"files": listing.files, "unavailable": unavailable, "problems": listing.problems, "format1_objects": listing.format1_objects, "stale": listing.stale})
                        );
                    } else {
                        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                        for f in &listing.files {
                            let tail = if f.complete { "" } else { " [incomplete]" };
                            let _ = writeln!(out, "{}{tail}", f.name);
                        }
                        drop(out);
                        match prefix.as_deref() {
                            _ if !listing.files.is_empty() => {}
                            Some(p) if !p.trim_matches('/').is_empty() => {
                                eprintln!("no files under {}", p.trim_end_matches('/'))
                            }
                            _ => eprintln!("the vault is empty"),
                        }
                    }
                    let incomplete = listing.files.iter().filter(|f| !f.complete).count();
                    if incomplete > 0 && !json {
                        eprintln!(
                            "error: {} cannot be rebuilt from the nodes reachable now",
                            count(incomplete, "file", "files")
                        );
                    }
                    // A stale read (exit 3) marks files it cannot rebuild too.
                    if incomplete > 0 && listing.stale.is_none() {
                        1
                    } else {
                        stale_status(&listing.stale)
                    }
                }
                Err(e) => report_error(&e),
            }
        }
        Command::Delete {
            recursive: true,
            name,
        } => match ops::delete::delete_tree(vault, &name).await {
            Ok(r) => {
                warn_all(&r.warnings);
                for (n, e) in &r.failed {
                    eprintln!("error: {n}: {e}");
                }
                if json {
                    let failed: Vec<_> = r
                        .failed
                        .iter()
                        .map(|(n, e)| serde_json::json!({"name": n, "error": e.to_string()}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({"deleted": r.deleted, "failed": failed, "unreachable": r.unreachable})
                    );
                } else {
                    println!(
                        "deleted {} under {name}",
                        count(r.deleted.len(), "file", "files")
                    );
                    for n in &r.unreachable {
                        eprintln!("warning: {n} could not be reached; it keeps its old copies, which the other nodes' tombstones override");
                    }
                }
                i32::from(!r.failed.is_empty())
            }
            Err(e) => report_error(&e),
        },
        Command::Delete {
            recursive: false,
            name,
        } => match ops::delete::delete_file(vault, &name).await {
            Err(e @ OpError::NotFound(_)) => not_found_or_folder(vault, &name, e).await,
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
        Command::Check {
            verify,
            verbose,
            prefix,
        } => {
            check(
                vault,
                verify,
                prefix.as_deref().unwrap_or(""),
                json,
                verbose,
            )
            .await
        }
        Command::Repair {
            verify,
            rebalance,
            verbose,
            grace,
            prefix,
        } => {
            let prefix = prefix.as_deref().unwrap_or("");
            let options = RepairOptions {
                verify,
                grace,
                rebalance,
            };
            repair(vault, options, prefix, json, verbose).await
        }
        Command::Status => {
            eprintln!("error: status needs the configuration; run `vault-client status`");
            1
        }
        Command::Rotate => {
            eprintln!("error: rotate is not available at the prompt; run `vault-client rotate`");
            1
        }
        Command::Serve { .. } => {
            eprintln!("error: serve is not available at the prompt; run `vault-client serve`");
            1
        }
    }
}

/// `status`: one line (or JSON object) per node; 0 only when all are up.
pub async fn status(vault: &Vault, cfg: &ClientConfig, json: bool) -> i32 {
    let reports = ops::status::status(vault).await;
    let address = |i: usize| {
        let s = &cfg.servers[i];
        if s.host.contains(':') {
            format!("[{}]:{}", s.host, s.port)
        } else {
            format!("{}:{}", s.host, s.port)
        }
    };
    if json {
        let list: Vec<serde_json::Value> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["address"] = serde_json::Value::String(address(i));
                v
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for (i, r) in reports.iter().enumerate() {
            if r.up {
                println!(
                    "{}  {}  up  {:.1} ms  version {}  free {}  {} blobs, {}  quota {}",
                    r.name,
                    address(i),
                    r.rtt_ms.unwrap_or(0.0),
                    r.version.as_deref().unwrap_or("?"),
                    r.free_bytes.map_or("unknown".into(), bytes),
                    r.blobs.unwrap_or(0),
                    bytes(r.bytes.unwrap_or(0)),
                    r.quota.map_or("none".into(), bytes)
                );
            } else {
                println!(
                    "{}  {}  down  {}",
                    r.name,
                    address(i),
                    r.error.as_deref().unwrap_or("unreachable")
                );
            }
        }
    }
    i32::from(reports.iter().any(|r| !r.up))
}

/// `n` and the noun for it: "1 file", "3 files".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Bytes for people: 1.5 MiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// What is wrong with one file, in words, leaving out the unknown copies
/// on the nodes in `skip` (nodes reported once for every file).
fn describe(vault: &Vault, h: &FileHealth, skip: &[usize]) -> String {
    let shown = |node: usize, state: CopyState| {
        state != CopyState::Good && !(state == CopyState::Unknown && skip.contains(&node))
    };
    let mut bits = Vec::new();
    for &(node, state) in &h.manifests {
        if shown(node, state) {
            bits.push(format!(
                "manifest {} on {}",
                state_word(state),
                vault.node_name(node)
            ));
        }
    }
    if h.shards_elsewhere > 0 {
        bits.push(format!(
            "{} shards on nodes no longer in dfc.conf (repair --rebalance moves them)",
            h.shards_elsewhere
        ));
    }
    for &(part, node, state) in &h.parts {
        if shown(node, state) {
            bits.push(format!(
                "{} {} {} on {}",
                if h.shards_needed.is_some() {
                    "shard"
                } else {
                    "part"
                },
                part + 1,
                state_word(state),
                vault.node_name(node)
            ));
        }
    }
    bits.join("; ")
}

fn state_word(s: CopyState) -> &'static str {
    match s {
        CopyState::Good => "good",
        CopyState::Missing => "missing",
        CopyState::Corrupt => "corrupt",
        CopyState::Stale => "out of date",
        CopyState::Unknown => "unknown (the node could not say)",
    }
}

/// A node the survey could not use at all: every copy any file has on it
/// is unknown (it is down, or its listing failed).
struct NotSurveyed {
    node: usize,
    /// Files with a copy on it, none of which could be checked.
    files: usize,
    /// Why, from the survey's problems (each once), or a default.
    reason: String,
    /// The node has no session: it was down from the start.
    down: bool,
}

/// The nodes whose every copy is unknown, in node order.
fn nodes_not_surveyed(vault: &Vault, s: &Survey) -> Vec<NotSurveyed> {
    // node -> (every copy on it unknown, files with a copy on it)
    let mut seen: std::collections::BTreeMap<usize, (bool, usize)> = Default::default();
    for f in &s.files {
        let mut on: std::collections::BTreeMap<usize, bool> = Default::default();
        let copies = f
            .manifests
            .iter()
            .copied()
            .chain(f.parts.iter().map(|&(_, n, st)| (n, st)));
        for (node, state) in copies {
            let unknown = state == CopyState::Unknown;
            *on.entry(node).or_insert(true) &= unknown;
        }
        for (node, all_unknown) in on {
            let e = seen.entry(node).or_insert((true, 0));
            e.0 &= all_unknown;
            e.1 += 1;
        }
    }
    (0..vault.node_count())
        .filter_map(|node| {
            let down = vault.session(node).is_none();
            let files = match seen.get(&node) {
                Some(&(true, files)) => files,
                None if down => 0,
                _ => return None,
            };
            let prefix = format!("{}: ", vault.node_name(node));
            let mut reasons: Vec<String> = Vec::new();
            if down {
                reasons.push(tidy(&vault.why_unusable(node)));
            }
            for p in &s.problems {
                if let Some(why) = p.strip_prefix(&prefix) {
                    let why = tidy(why);
                    if !reasons.contains(&why) {
                        reasons.push(why);
                    }
                }
            }
            let reason = if reasons.is_empty() {
                "its answer could not be used".to_string()
            } else {
                reasons.join("; ")
            };
            Some(NotSurveyed {
                node,
                files,
                reason,
                down,
            })
        })
        .collect()
}

/// Prints a survey's problems; returns its exit code. A node that could
/// not be surveyed is reported once, with a count of its files; a file
/// whose only problem is such a node gets no line of its own unless
/// `verbose`.
fn print_survey(vault: &Vault, s: &Survey, json: bool, verbose: bool) -> i32 {
    let absent = nodes_not_surveyed(vault, s);
    let skip: Vec<usize> = absent.iter().map(|a| a.node).collect();
    let skipped_names: Vec<String> = skip
        .iter()
        .map(|&n| format!("{}: ", vault.node_name(n)))
        .collect();
    // The problems of a node reported below are in its one line.
    warn_all(
        s.problems
            .iter()
            .filter(|p| !skipped_names.iter().any(|n| p.starts_with(n.as_str()))),
    );
    let orphan_bytes: u64 = s.orphans.iter().map(|o| o.len).sum();
    if json {
        let files: Vec<_> = s
            .files
            .iter()
            .filter(|f| f.degraded())
            .map(|f| {
                serde_json::json!({"name": f.name, "lost": f.lost(), "unreachable": f.unreachable(),
                    "deleted": f.deleted, "manifests": f.manifests, "parts": f.parts})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "files": s.files.len(),
                "degraded": s.degraded(),
                "lost": s.lost(),
                "unreachable": s.unreachable(),
                "problem_files": files,
                "orphans": s.orphans.len(),
                "orphan_bytes": orphan_bytes,
                "verified_bytes": s.verified_bytes,
                "problems": s.problems,
                "nodes_not_surveyed": absent
                    .iter()
                    .map(|a| serde_json::json!({"node": vault.node_name(a.node), "down": a.down,
                        "files": a.files, "reason": a.reason}))
                    .collect::<Vec<_>>(),
            })
        );
    } else {
        for a in &absent {
            println!(
                "{}: {} ({}): its copies of {} could not be checked; run check again with it up{}",
                vault.node_name(a.node),
                if a.down { "down" } else { "not surveyed" },
                a.reason,
                count(a.files, "file", "files"),
                if verbose { "" } else { " (-v lists each file)" }
            );
        }
        let hide = if verbose { &[][..] } else { &skip[..] };
        for f in s.files.iter().filter(|f| f.degraded()) {
            let mut what = describe(vault, f, hide);
            if what.is_empty() {
                // Its only problem is a node reported above.
                continue;
            }
            if !hide.is_empty() && f.unknown_on().iter().any(|n| hide.contains(n)) {
                what.push_str("; and its copies on the node not surveyed");
            }
            let label = if f.lost() {
                "LOST"
            } else if f.unreachable() {
                "UNREACHABLE"
            } else {
                "degraded"
            };
            println!("{label} {}: {what}", f.name);
        }
        if !s.orphans.is_empty() {
            println!(
                "{} orphaned parts ({}) no file refers to; repair removes those older than --grace",
                s.orphans.len(),
                bytes(orphan_bytes)
            );
        }
        // Deleted files count too: their tombstones belong on every node.
        // Files and deletions are counted apart.
        let deleted = s.files.iter().filter(|f| f.deleted).count();
        let live = s.files.len() - deleted;
        let files = || s.files.iter().filter(|f| !f.deleted);
        let lost = files().filter(|f| f.lost()).count();
        let unreachable = files().filter(|f| !f.lost() && f.unreachable()).count();
        let degraded = files().filter(|f| f.degraded()).count();
        let deletions_behind = s.files.iter().filter(|f| f.deleted && f.degraded()).count();
        println!(
            "checked {}{}: {} fully redundant, {} degraded, {} lost{}{}{}",
            count(live, "file", "files"),
            if deleted > 0 {
                format!(" and {}", count(deleted, "deletion", "deletions"))
            } else {
                String::new()
            },
            live - degraded,
            degraded - lost - unreachable,
            lost,
            if unreachable > 0 {
                format!(", {unreachable} unreachable (a node could not say)")
            } else {
                String::new()
            },
            if deletions_behind > 0 {
                format!(
                    ", {} not yet on every node",
                    count(deletions_behind, "deletion", "deletions")
                )
            } else {
                String::new()
            },
            if s.verified_bytes > 0 {
                format!(" ({} authenticated)", bytes(s.verified_bytes))
            } else {
                String::new()
            }
        );
    }
    s.exit_code()
}

async fn check(vault: &Vault, verify: bool, prefix: &str, json: bool, verbose: bool) -> i32 {
    let bar = Bar::unknown("check", json);
    bar.show();
    let survey = ops::check::survey(vault, prefix, verify, bar.clone()).await;
    bar.finish();
    match survey {
        Ok(s) => print_survey(vault, &s, json, verbose),
        // A bad prefix is a usage error; anything else left the vault
        // unsurveyed, which check reports as unreachable.
        Err(e @ OpError::BadName(_)) => report_error(&e),
        Err(e) => {
            report_error(&e);
            2
        }
    }
}

async fn repair(
    vault: &Vault,
    options: RepairOptions,
    prefix: &str,
    json: bool,
    verbose: bool,
) -> i32 {
    let bar = Bar::unknown("repair", json);
    bar.show();
    let report = ops::repair::repair(vault, prefix, options, bar.clone()).await;
    bar.finish();
    let r = match report {
        Ok(r) => r,
        Err(e) => return report_error(&e),
    };
    for f in &r.failures {
        eprintln!("error: {f}");
    }
    if !r.skipped.is_empty() && !json {
        eprintln!(
            "warning: skipped {} copies that changed on their node since the survey (run repair again): {}{}",
            r.skipped.len(),
            r.skipped[..r.skipped.len().min(5)].join("; "),
            if r.skipped.len() > 5 { "; ..." } else { "" }
        );
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "copies_restored": r.copies_restored,
                "shards_moved": r.shards_moved,
                "manifests_fixed": r.manifests_fixed,
                "orphans_removed": r.orphans_removed,
                "bytes_moved": r.bytes_moved,
                "failures": r.failures,
                "skipped": r.skipped,
                "degraded_after": r.after.degraded(),
                "lost_after": r.after.lost(),
            })
        );
    } else {
        if options.rebalance {
            println!(
                "moved {} shards to where placement wants them",
                r.shards_moved
            );
        }
        println!(
            "restored {} copies, fixed {} manifests, removed {} orphans, moved {}",
            r.copies_restored,
            r.manifests_fixed,
            r.orphans_removed,
            bytes(r.bytes_moved)
        );
        print_survey(vault, &r.after, false, verbose);
    }
    // As check: 2 when some file cannot be rebuilt, 1 when not fully
    // redundant (or something failed), 0 when whole.
    r.after.exit_code().max(i32::from(!r.failures.is_empty()))
}

async fn put(vault: &Vault, started: StartedPut, json: bool, verbose: bool) -> i32 {
    let StartedPut {
        plan,
        bar,
        special,
        unreadable,
        recursive,
    } = started;
    for s in &special {
        eprintln!("skipped {s}");
    }
    for u in &unreadable {
        eprintln!("error: {u}; not stored");
    }
    bar.show();
    let mut status = i32::from(!unreadable.is_empty());
    // With --json, one array printed as it goes: the unreadable first,
    // then every file in order.
    let mut first = true;
    let mut element = |value: serde_json::Value| {
        print!("{}{value}", if first { "[" } else { "," });
        first = false;
    };
    for u in &unreadable {
        if json {
            element(serde_json::json!({"error": u}));
        }
    }
    // A warning every file carries (a degraded PUT's) is shown once; other
    // warnings and the failures are grouped by cause (`-v`: every file).
    let mut warned: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut warnings = Causes::new("warning");
    let mut failures = Causes::new("error");
    let summary = plan
        .run_with(vault, |event| match event {
            Event::Skipped(s) => bar.suspend(|| eprintln!("skipped {s}")),
            Event::Done(file, outcome) => match outcome {
                Outcome::Stored(r) => {
                    for w in &r.warnings {
                        if w.starts_with(&format!("{}: ", r.name)) {
                            warnings.add(&r.name, w);
                        } else if warned.insert(w.clone()) {
                            bar.suspend(|| warn_all([w]));
                        }
                    }
                    if !json && (verbose || !recursive) {
                        bar.suspend(|| {
                            println!(
                                "stored {} ({} bytes, version {})",
                                r.name, r.size, r.version
                            )
                        });
                    }
                    if json {
                        element(serde_json::json!({"name": r.name, "size": r.size, "version": r.version, "warnings": r.warnings}));
                    }
                }
                Outcome::Unchanged => {
                    if !json && verbose {
                        bar.suspend(|| println!("unchanged {}", file.name));
                    }
                    if json {
                        element(serde_json::json!({"name": file.name, "unchanged": true}));
                    }
                }
                Outcome::Failed(e) => {
                    status = 1;
                    failures.add(&file.name, &format!("{}: {e}", file.name));
                    if json {
                        element(serde_json::json!({"name": file.name, "file": file.path.display().to_string(), "error": e.to_string()}));
                    }
                }
            },
        })
        .await;
    bar.finish();
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            if json && !first {
                println!("]");
            }
            return report_error(&e);
        }
    };
    if !json {
        warnings.print(verbose);
        failures.print(verbose);
    }
    if json {
        if first {
            println!("[]");
        } else {
            println!("]");
        }
    } else if recursive {
        println!(
            "stored {}, {} unchanged, {} failed, {} skipped",
            count(summary.stored, "file", "files"),
            summary.unchanged,
            summary.failed + unreadable.len(),
            summary.skipped + special.len()
        );
    }
    if !json && !unreadable.is_empty() {
        eprintln!(
            "error: {} not stored (could not be read); the others were stored",
            count(unreadable.len(), "file", "files")
        );
    }
    status
}

/// The exit status of a read that worked: 3 when it may be stale.
fn stale_status(stale: &Option<String>) -> i32 {
    if stale.is_some() {
        3
    } else {
        0
    }
}

async fn get_tree(
    vault: &Vault,
    prefix: &str,
    output: Option<PathBuf>,
    force: bool,
    json: bool,
    allow_stale: bool,
    verbose: bool,
) -> i32 {
    let dir = output.unwrap_or_else(|| PathBuf::from("."));
    let bar = Bar::unknown("get", json);
    bar.show();
    let got =
        ops::get_many::get_tree_with(vault, prefix, &dir, force, bar.clone(), allow_stale).await;
    let summary = match got {
        Ok(s) => s,
        Err(e) => {
            bar.finish();
            return report_error(&e);
        }
    };
    bar.finish();
    warn_all(&summary.problems);
    if let Some(why) = &summary.stale {
        eprintln!("warning: {why}");
    }
    let mut results = Vec::new();
    // Failures that share one cause are printed once with a count (-v
    // prints every file).
    let mut causes: Vec<(String, Vec<String>)> = Vec::new();
    for (name, path, r) in &summary.files {
        match r {
            Ok(size) => results.push(serde_json::json!({"name": name, "path": path, "size": size})),
            Err(e) => {
                let (cause, line) = match e {
                    OpError::Exists(p) => (
                        "already exist (use --force to overwrite)".to_string(),
                        format!("{} already exists (use --force to overwrite)", p.display()),
                    ),
                    other => {
                        let text = tidy(&format!("{name}: {other}"));
                        let cause = text
                            .strip_prefix(&format!("{name}: "))
                            .unwrap_or(&text)
                            .to_string();
                        (cause.clone(), cause)
                    }
                };
                if verbose || json {
                    if !json {
                        eprintln!("error: {}", tidy(&format!("{name}: {line}")));
                    }
                } else if let Some((_, names)) = causes.iter_mut().find(|(c, _)| *c == cause) {
                    names.push(line.clone());
                } else {
                    causes.push((cause, vec![format!("{name}: {line}")]));
                }
                results.push(serde_json::json!({"name": name, "path": path, "error": line}));
            }
        }
    }
    for (cause, lines) in &causes {
        if lines.len() == 1 {
            eprintln!("error: {}", tidy(&lines[0]));
        } else if cause.starts_with("already exist") {
            eprintln!(
                "error: {} files already exist (use --force to overwrite); -v lists them",
                lines.len()
            );
        } else {
            eprintln!("error: {} files: {cause}; -v lists them", lines.len());
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(results));
    } else {
        println!(
            "wrote {} to {}{}",
            count(summary.written(), "file", "files"),
            dir.display(),
            if summary.failed() > 0 {
                format!(", {} failed", summary.failed())
            } else {
                String::new()
            }
        );
    }
    if summary.failed() > 0 {
        1
    } else {
        stale_status(&summary.stale)
    }
}

/// A name that is not a file: when files lie under it, says it is a folder
/// and to use -r; otherwise reports `e`. Returns the exit status.
async fn not_found_or_folder(vault: &Vault, name: &str, e: OpError) -> i32 {
    if matches!(e, OpError::NotFound(_)) && !name.trim_matches('/').is_empty() {
        if let Ok(listing) = ops::list::list_with(vault, name, true).await {
            if !listing.files.is_empty() {
                eprintln!(
                    "error: {} is a folder in the vault; use -r",
                    name.trim_end_matches('/')
                );
                return 1;
            }
        }
    }
    report_error(&e)
}

/// `serve`: the gateway over the opened vault until Ctrl-C or SIGTERM.
async fn serve(
    vault: Vault,
    mut options: vault_gateway::Options,
    password: &str,
    endpoint: &quinn::Endpoint,
) -> Result<i32> {
    if let Ok(secret) = std::env::var("VAULT_S3_SECRET") {
        if secret.is_empty() {
            bail!("VAULT_S3_SECRET is empty");
        }
        // The S3 secret travels to every tool given it; the password opens
        // the vault's keys. One must never be the other.
        if subtle::ConstantTimeEq::ct_eq(secret.as_bytes(), password.as_bytes()).into() {
            bail!("VAULT_S3_SECRET must not be the vault password: choose another secret");
        }
        options.secret = Some(zeroize::Zeroizing::new(secret));
    }
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
        eprintln!("stopping: finishing the requests under way");
    };
    let mut out = std::io::stdout();
    let result = vault_gateway::serve(vault, options, shutdown, &mut out).await;
    vault_client::net::finish(endpoint).await;
    match result {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}
