//! `vault-node`: the storage node binary. Parses arguments and calls the
//! library; everything else lives in `vault_node`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use vault_node::secret::{self, ClusterSecret};
use vault_node::{certs, dev_cluster, invocation, kdf, server, users, NodeConfig, Server, UserDb};
use zeroize::Zeroizing;

/// The largest `--inline-max`: blobs kept inline are buffered in memory
/// whole and copied into the index database, so a bound of several MiB
/// would make every upload of such a blob a large allocation and bloat
/// the database.
const MAX_INLINE_MAX: u64 = 1 << 20;

/// Vault storage node: keeps users' encrypted file parts, served over QUIC.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the cluster CA, one TLS certificate per node and the cluster secret.
    ///
    /// Writes ca.pem, NAME.pem, NAME.key and cluster.secret into --dir (the
    /// folder every node reads with `serve --certs`), and the CA private key
    /// to --ca-key, outside that folder. A ca.key found in --dir (earlier
    /// versions put it there) is moved to --ca-key.
    ///
    /// Renewal: node certificates are valid for --days (default 730), the
    /// CA for 10 years. To renew, run the same command again: the existing
    /// CA and its key are re-used, every --node gets a fresh certificate
    /// that clients already trust, and cluster.secret is kept. Copy the new
    /// NAME.pem and NAME.key to each node and restart it.
    #[command(verbatim_doc_comment)]
    Certs {
        /// Folder for ca.pem, NAME.pem, NAME.key and cluster.secret (never the CA key).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The CA private key (mode 0600, its folder 0700 when created)
        /// [default: ca-private/ca.key next to --dir].
        #[arg(long, value_name = "PATH")]
        ca_key: Option<PathBuf>,
        /// Days the node certificates stay valid.
        #[arg(long, value_name = "N", default_value_t = certs::DEFAULT_NODE_DAYS)]
        days: u32,
        /// Node name to issue a certificate for (repeat: --node DFS1 --node DFS2 ...).
        #[arg(long = "node", value_name = "NAME", required = true)]
        nodes: Vec<String>,
        /// Extra name or address clients use to reach the nodes (repeat);
        /// IP addresses become IP SANs, anything else a DNS name.
        #[arg(long = "san", value_name = "NAME|IP", default_values_t = certs::default_sans())]
        sans: Vec<String>,
        /// Replace an existing CA (invalidates every certificate it issued).
        #[arg(long)]
        force: bool,
    },
    /// Run one storage node.
    ///
    /// Also the classic `dfs.py` form: `vault-node serve /DFS1 10001` or
    /// `vault-node serve DFS1 10001`: the folder `DFS1` here (a leading `/`
    /// followed by one name means the folder here, as in dfs.py), the port,
    /// `dfs.conf` and `certs/` from the current folder.
    #[command(verbatim_doc_comment)]
    Serve {
        /// Classic form: the node's folder (`/DFS1` means ./DFS1).
        #[arg(value_name = "FOLDER", conflicts_with = "root")]
        folder: Option<String>,
        /// Classic form: the UDP port.
        #[arg(value_name = "PORT")]
        classic_port: Option<u16>,
        /// Folder holding this node's data (one sub-folder per user).
        #[arg(long)]
        root: Option<PathBuf>,
        /// UDP port to listen on.
        #[arg(long)]
        port: Option<u16>,
        /// Users file (dfs.conf): who may log in.
        #[arg(long, default_value = "dfs.conf")]
        users: PathBuf,
        /// Folder holding NAME.pem, NAME.key and cluster.secret.
        #[arg(long, default_value = "certs")]
        certs: PathBuf,
        /// Node name, as in the certificate and dfc.conf [default: the root folder's name].
        #[arg(long)]
        name: Option<String>,
        /// Address to listen on: an IP (v4 or v6) used with the port, or a
        /// full IP:PORT ([::1]:10001 for IPv6) [default: every interface].
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Largest blob accepted, in bytes.
        #[arg(long, value_name = "BYTES", default_value_t = wire::DEFAULT_MAX_BLOB_LEN)]
        max_blob: u64,
        /// Most simultaneous client connections. When full, a newcomer
        /// evicts the oldest connection that has not logged in; it is
        /// refused only if all have logged in.
        #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Most simultaneous connections from one IPv4 address or IPv6 /64,
        /// same eviction rule [default: max(4, max-connections / 4)].
        #[arg(long, value_name = "N")]
        max_connections_per_source: Option<usize>,
        /// Most connections logged in as one user; a login over it is
        /// refused as busy [default: max(8, max-connections / 8)].
        #[arg(long, value_name = "N")]
        max_connections_per_user: Option<usize>,
        /// Seconds a connection has to log in before it is closed.
        #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
        login_timeout: Duration,
        /// Most bytes one user may keep on this node, uploads in progress
        /// included [default: no limit].
        #[arg(long, value_name = "BYTES")]
        quota: Option<u64>,
        /// Most blobs one user may keep on this node; an upload of a new
        /// blob over it is refused (replacing one is always allowed).
        #[arg(long, value_name = "N", default_value_t = vault_node::store::DEFAULT_MAX_BLOBS)]
        max_blobs: u64,
        /// Largest blob kept inside the user's index database instead of a
        /// file of its own (manifests, tombstones, small parts); at most
        /// 1048576 (1 MiB).
        #[arg(
            long,
            value_name = "BYTES",
            default_value_t = vault_node::store::DEFAULT_INLINE_MAX,
            value_parser = clap::value_parser!(u64).range(..=MAX_INLINE_MAX)
        )]
        inline_max: u64,
    },
    /// Check a stopped node's root: every index entry's bytes exist and
    /// have the recorded size, and no file is left that no entry names.
    ///
    /// Exits 1 when something is wrong. With --fix, blob files that no
    /// entry names are removed (left by a crash between a commit and the
    /// removal of the file it replaced) and wrong totals rewritten; an entry
    /// whose bytes are missing is only reported (clients repair it from the
    /// other nodes with `repair`). Folders and other names in a user folder
    /// are reported, never removed, and a user whose 0.2 conversion has not
    /// finished is left alone (start the node once to finish it). Run it
    /// after a crash or a disk error, or when the node's disk use looks
    /// larger than its blobs. Refuses while a node serves the root (the
    /// node holds ROOT/.vault/lock), and a node cannot start meanwhile.
    #[command(verbatim_doc_comment)]
    Fsck {
        /// The node's root folder.
        #[arg(long)]
        root: PathBuf,
        /// Remove what no index entry references.
        #[arg(long)]
        fix: bool,
    },
    /// Compact every user's index database of a stopped node's root, giving
    /// back the space of deleted and replaced small blobs.
    ///
    /// Run it after deleting many files (or a `rotate`), when the
    /// index.redb files are much larger than the small blobs they hold.
    /// Refuses while a node serves the root.
    #[command(verbatim_doc_comment)]
    Compact {
        /// The node's root folder.
        #[arg(long)]
        root: PathBuf,
    },
    /// Run local nodes (four by default) with certificates, demo users and a ready dfc.conf.
    ///
    /// With --nodes N (3 to 32), nodes DFS1..DFSN; the dfc.conf it writes
    /// lists N servers, and the client stores files with Reed-Solomon
    /// rs (N-2)+2 by default (rs 2+1 with three; four: the classic layout).
    ///
    /// A --dir made for another number of nodes is refused, and nothing in
    /// it is changed: run it with its own --nodes, or use another --dir.
    ///
    /// While it runs, type into its terminal:
    ///   stop DFS3    stop a node for real (its port closed, as if it died)
    ///   start DFS3   start it again on the same port (`stop 3`, `start 3` too)
    ///   status       each node: running or stopped, and its address
    ///   help         the commands
    ///   quit         stop the cluster (as Ctrl-C)
    /// At the end of standard input (run in the background or under CI)
    /// the cluster keeps running until Ctrl-C or SIGTERM.
    #[command(verbatim_doc_comment)]
    DevCluster {
        /// Folder for certs, dfs.conf, dfc.conf and the node roots.
        #[arg(long, default_value = dev_cluster::DEFAULT_DIR)]
        dir: PathBuf,
        /// Port of DFS1; DFS2..DFSN use the next ones. 0: each node on a
        /// free port the system picks (a new dfc.conf names them; a
        /// restarted node keeps its port).
        #[arg(long, default_value_t = 10001)]
        base_port: u16,
        /// Number of nodes, 3 to 32: DFS1..DFSN. Other than four, the
        /// client uses Reed-Solomon by default (a comment in dfc.conf says
        /// which). A --dir made for another number is refused.
        #[arg(long, default_value_t = dev_cluster::DEFAULT_NODES, value_parser = parse_nodes)]
        nodes: usize,
    },
    /// Manage the users file.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add an upgraded (Argon2id) user.
    ///
    /// The password comes, in this order, from --password-stdin (the first
    /// line of standard input), from the VAULT_PASSWORD environment
    /// variable, or is asked twice without echo on the terminal. For
    /// scripts: `printf '%s\n' "$PW" | vault-node user add NAME --password-stdin`
    /// or `VAULT_PASSWORD="$PW" vault-node user add NAME`.
    #[command(verbatim_doc_comment)]
    Add {
        /// User name (case-insensitive).
        name: String,
        /// Read the password from the first line of standard input
        /// (without echo, for scripts and pipes).
        #[arg(long)]
        password_stdin: bool,
        /// Users file to change (created if missing).
        #[arg(long, default_value = "dfs.conf")]
        users: PathBuf,
    },
    /// Remove a user's entry (in whichever form it is written).
    Remove {
        /// User name (case-insensitive).
        name: String,
        /// Users file to change.
        #[arg(long, default_value = "dfs.conf")]
        users: PathBuf,
    },
    /// List users and their password scheme (plain, md5, argon2id).
    List {
        /// Users file to read.
        #[arg(long, default_value = "dfs.conf")]
        users: PathBuf,
    },
}

/// `--nodes` of `dev-cluster`: a number from 3 to 32.
fn parse_nodes(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of nodes"))?;
    dev_cluster::check_node_count(n)
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Certs {
            dir,
            ca_key,
            days,
            nodes,
            sans,
            force,
        } => {
            let options = certs::CertOptions {
                days,
                ca_key,
                force,
            };
            let written = certs::write_dir(&dir, &nodes, &sans, &options)?;
            if let Some(old) = &written.moved_ca_key_from {
                println!(
                    "notice: moved the CA private key {} to {} (keep it off the nodes)",
                    old.display(),
                    written.ca_key.display()
                );
            }
            println!(
                "certificates for {} (valid {days} days) written to {}",
                nodes.join(", "),
                dir.display()
            );
            println!(
                "CA private key: {} ({}); keep it off the nodes",
                written.ca_key.display(),
                if written.new_ca {
                    "new CA"
                } else {
                    "existing CA re-used"
                }
            );
            if written.new_cluster_secret {
                println!(
                    "cluster secret: {} (copy it to every node with the certificates)",
                    dir.join(secret::CLUSTER_SECRET_FILE).display()
                );
            }
            Ok(())
        }
        Command::Serve {
            folder,
            classic_port,
            root,
            port,
            users,
            certs,
            name,
            listen,
            max_blob,
            max_connections,
            max_connections_per_source,
            max_connections_per_user,
            login_timeout,
            quota,
            max_blobs,
            inline_max,
        } => {
            let root =
                invocation::root(folder.as_deref(), root.as_deref()).map_err(anyhow::Error::msg)?;
            let port = invocation::port(classic_port, port).map_err(anyhow::Error::msg)?;
            let listen = invocation::listen(listen.as_deref(), port).map_err(anyhow::Error::msg)?;
            let name = match name {
                Some(n) => n,
                None => root_name(&root)?,
            };
            // The start-up warnings name the node too, as `Server::run`'s
            // span does for every later line.
            let span = tracing::info_span!("node", node = %name);
            let db = UserDb::load(&users)?;
            span.in_scope(|| db.warn_legacy(&users.display().to_string()));
            let read = |ext: &str| {
                let p = certs.join(format!("{name}.{ext}"));
                std::fs::read_to_string(&p)
                    .with_context(|| format!("failed to read {}", p.display()))
            };
            let cluster_secret = span.in_scope(|| load_cluster_secret(&certs))?;
            let mut config = NodeConfig::new(&name, root, listen, db, read("pem")?, read("key")?);
            config.cluster_secret = cluster_secret;
            config.max_blob_len = max_blob;
            config.max_connections = max_connections;
            config.max_connections_per_source = max_connections_per_source;
            config.max_connections_per_user = max_connections_per_user;
            config.login_timeout = login_timeout;
            config.quota = quota;
            config.store.max_blobs = max_blobs;
            config.store.inline_max = inline_max;
            runtime()?.block_on(async {
                let signal = server::shutdown_signal();
                let server = Server::bind(config)?;
                // Scripts and tests read the bound address (useful with port 0).
                println!("{name} listening on {}", server.local_addr());
                server.run(signal).await
            })
        }
        Command::DevCluster {
            dir,
            base_port,
            nodes,
        } => runtime()?.block_on(async {
            let signal = server::shutdown_signal();
            dev_cluster::run(&dir, base_port, nodes, signal).await
        }),
        Command::User { command } => user(command),
        Command::Fsck { root, fix } => fsck(&root, fix),
        Command::Compact { root } => {
            let (before, after) = vault_node::store::maintenance::compact(&root)
                .with_context(|| format!("failed to compact {}", root.display()))?;
            println!(
                "compacted the indexes under {}: {before} bytes before, {after} after",
                root.display()
            );
            Ok(())
        }
    }
}

/// `vault-node fsck`: prints each problem; exits 1 if there was any.
fn fsck(root: &Path, fix: bool) -> anyhow::Result<()> {
    let report = vault_node::store::maintenance::fsck(root, fix)
        .with_context(|| format!("failed to check {}", root.display()))?;
    for p in &report.problems {
        println!("{p}");
    }
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    println!(
        "checked {}, {}: {}{}",
        plural(report.users, "user", "users"),
        plural(report.entries as usize, "blob", "blobs"),
        plural(report.problems.len(), "problem", "problems"),
        if fix {
            format!(", {} fixed", report.fixed)
        } else {
            String::new()
        }
    );
    if report.clean() {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

/// Reads `<certs>/cluster.secret` (warning when it is missing) and warns
/// when the CA key sits in the certificates folder.
fn load_cluster_secret(certs: &Path) -> anyhow::Result<Option<ClusterSecret>> {
    let ca_key = certs.join(certs::CA_KEY_FILE);
    if ca_key.exists() {
        tracing::warn!(
            path = %ca_key.display(),
            "the CA private key is in the certificates folder: whoever reads this node's files \
             can issue certificates for every node; run `vault-node certs` again to move it out"
        );
    }
    let path = certs.join(secret::CLUSTER_SECRET_FILE);
    let secret =
        ClusterSecret::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
    if secret.is_none() {
        tracing::warn!(
            path = %path.display(),
            "no cluster secret: decoy salts for unknown user names come from this node's own \
             secret, so comparing nodes tells unknown names apart; run `vault-node certs` to create it"
        );
    }
    Ok(secret)
}

/// A positive number of seconds, at most an hour.
fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 3600.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 3600"
        )),
    }
}

fn root_name(root: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    abs.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "cannot take a node name from {}; give --name",
                root.display()
            )
        })
}

fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            password_stdin,
            users: path,
        } => {
            if wire::normalize_user(&name).is_none() {
                bail!("invalid user name {name:?}");
            }
            if let Ok(db) = UserDb::load(&path) {
                if db.get(&name).is_some() {
                    bail!("{}: user {name} already exists", path.display());
                }
            }
            let password = read_password(password_stdin)?;
            let params = kdf::new_params()?;
            let key = kdf::public_key_for_password(password.as_bytes(), &params)?;
            users::add_user(&path, &name, &params, &key)?;
            println!("added {name} (argon2id) to {}", path.display());
            Ok(())
        }
        UserCommand::Remove { name, users: path } => {
            users::remove_user(&path, &name)?;
            println!("removed {name} from {}", path.display());
            Ok(())
        }
        UserCommand::List { users: path } => {
            for entry in UserDb::load(&path)?.iter() {
                println!("{}\t{}", entry.name, entry.credential.scheme());
            }
            Ok(())
        }
    }
}

/// The longest password line `--password-stdin` reads.
const MAX_PASSWORD_LINE: u64 = 4096;

/// How to give the password without a terminal, for error messages.
const PASSWORD_HINT: &str = "pass it with --password-stdin (e.g. `printf '%s\\n' \"$PW\" | \
     vault-node user add NAME --password-stdin`) or in the VAULT_PASSWORD environment variable";

fn read_password(from_stdin: bool) -> anyhow::Result<Zeroizing<String>> {
    if from_stdin {
        return read_password_line(std::io::stdin().lock());
    }
    if let Ok(p) = std::env::var("VAULT_PASSWORD") {
        if p.is_empty() {
            bail!("VAULT_PASSWORD is empty");
        }
        return Ok(Zeroizing::new(p));
    }
    let prompt = |text: &str| {
        rpassword::prompt_password(text)
            .map(Zeroizing::new)
            .map_err(|e| {
                if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                    anyhow::anyhow!("failed to read the password: {e}")
                } else {
                    anyhow::anyhow!("no terminal to ask the password on; {PASSWORD_HINT}")
                }
            })
    };
    let first = prompt("Password: ")?;
    if first.is_empty() {
        bail!("empty password");
    }
    let second = prompt("Repeat password: ")?;
    if *first != *second {
        bail!("the passwords differ");
    }
    Ok(first)
}

/// The first line of `input` (without its line end), at most
/// [`MAX_PASSWORD_LINE`] bytes.
fn read_password_line(input: impl std::io::BufRead) -> anyhow::Result<Zeroizing<String>> {
    use std::io::BufRead;
    let mut line = Zeroizing::new(Vec::new());
    input
        .take(MAX_PASSWORD_LINE + 1)
        .read_until(b'\n', &mut line)
        .context("failed to read the password from standard input")?;
    if line.len() as u64 > MAX_PASSWORD_LINE {
        bail!("the password line on standard input is over {MAX_PASSWORD_LINE} bytes");
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    if line.is_empty() {
        bail!("--password-stdin: no password on standard input (an empty first line)");
    }
    let text = std::str::from_utf8(&line)
        .context("--password-stdin: the password is not UTF-8")?
        .to_string();
    Ok(Zeroizing::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_with_inline_max(v: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["vault-node", "serve", "--root", "r", "--inline-max", v])
    }

    #[test]
    fn inline_max_is_at_most_1_mib() {
        assert!(serve_with_inline_max("1048576").is_ok());
        assert!(serve_with_inline_max("0").is_ok());
        let e = serve_with_inline_max("1048577").err().expect("refused");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("--inline-max"), "{e}");
        assert!(serve_with_inline_max("18446744073709551615").is_err());
    }
}
