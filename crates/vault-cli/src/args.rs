//! The command line: arguments, subcommands and help text.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Encrypted files spread over untrusted storage nodes.
///
/// Every file is encrypted on this machine and placed on the nodes listed in
/// dfc.conf: with four and no `Redundancy` line, split in four parts, each
/// on two nodes (any three nodes rebuild it); with `Redundancy rs K+M` (the
/// default for 3 or 5 to 32 nodes), coded into K+M shards on as many nodes,
/// any K of which rebuild it.
/// Without a command, reads the same commands (PUT, GET, LIST, DELETE,
/// STATUS, CHECK, REPAIR, EXIT) from a prompt.
#[derive(Debug, Parser)]
#[command(name = "vault-client", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Client configuration: `Server NAME HOST:PORT` lines (four for the
    /// classic layout; 3 to 32 with `Redundancy rs K+M`), `Username:` and
    /// optionally `Password:` (plain or its MD5 digest), `CA PATH` and
    /// `Redundancy classic|rs K+M`.
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
    /// GET and LIST: read even when fewer than a majority of the nodes
    /// (three of four) answer. What comes back may be an old version (or show a deleted
    /// file), so it is marked as possibly stale and the exit status is 3.
    #[arg(long, global = true)]
    pub allow_stale: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

const AFTER_HELP: &str = "\
Environment:
  VAULT_PASSWORD      the password (instead of the prompt or dfc.conf)
  VAULT_NEW_PASSWORD  the new password for `rotate`
  VAULT_S3_SECRET     the S3 secret key for `serve` (never the vault password)
  RUST_LOG            log filter (default: warn)

A bad username or password prints `Invalid Username/Password. Please try again.`
and exits with status 1.";

/// Subcommands.
#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Store files. A file is stored under its file name; with -r a folder
    /// is stored under its name plus each file's path inside it
    /// (photos/2024/a.jpg). A new version replaces an old one.
    Put {
        /// Store folders, recursively. Files whose size and modification
        /// time match their stored version are skipped; symbolic links and
        /// special files are reported and skipped, never followed.
        #[arg(short, long)]
        recursive: bool,
        /// With -r, compare contents instead of size and time.
        #[arg(long, requires = "recursive")]
        checksum: bool,
        /// Print every file stored and skipped, not only the counts.
        #[arg(short, long)]
        verbose: bool,
        /// With one node down, store every copy that can be stored (each
        /// file stays readable) and warn that `repair` is needed.
        #[arg(long)]
        degraded: bool,
        /// Files (and with -r, folders) to store.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Fetch a file, or with -r every file under a folder. Needs a majority
    /// of the nodes (any three of four; with fewer it refuses, naming the
    /// missing ones; see --allow-stale).
    Get {
        /// Fetch every file under NAME, recreating the tree.
        #[arg(short, long)]
        recursive: bool,
        /// Name of the file in the vault (a path like photos/2024/a.jpg),
        /// or with -r a folder.
        name: String,
        /// Where to write it [default: the file name in the current
        /// folder; with -r, the current folder]. An existing folder gets
        /// the file inside it, under its file name (as cp does).
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Replace local files that exist.
        #[arg(short, long)]
        force: bool,
        /// With -r, list every file that failed, not one line per cause.
        #[arg(short, long)]
        verbose: bool,
    },
    /// List the files (under PREFIX); ` [incomplete]` marks files the
    /// reachable nodes cannot rebuild now, and then the exit status is 1.
    /// Nothing to list is said on standard error (exit 0). Needs a majority
    /// of the nodes (any three of four; see --allow-stale).
    List {
        /// Only files under this folder (photos or photos/2024).
        prefix: Option<String>,
    },
    /// Delete a file, or with -r every file under a folder, from every
    /// reachable node.
    Delete {
        /// Delete every file under NAME.
        #[arg(short, long)]
        recursive: bool,
        /// Name of the file in the vault, or with -r a folder.
        name: String,
    },
    /// Change the password on every node (no data is re-encrypted) and
    /// update dfc.conf's `Password:` line in the form it has.
    Rotate,
    /// Show each node: up or down (with the error), round-trip time,
    /// version, free space, this user's usage and quota. Exits 0 only when
    /// every node is up.
    Status,
    /// Check that every copy of every file (under PREFIX) is where it
    /// belongs. Exits 0 when fully redundant, 1 when degraded but every
    /// file can be rebuilt, 2 when some file is lost.
    Check {
        /// Also download and authenticate every copy (finds bit rot and
        /// tampering).
        #[arg(long)]
        verify: bool,
        /// List every file with a copy not good, also those whose only
        /// problem is a node that could not be surveyed (by default such a
        /// node is reported once, with a count of its files).
        #[arg(short, long)]
        verbose: bool,
        /// Only files under this folder.
        prefix: Option<String>,
    },
    /// Restore every missing or corrupt copy from a good one, bring nodes
    /// that missed a change up to date, and remove old orphaned parts.
    /// Exits 0 when the vault is fully redundant afterwards, 2 when some
    /// file cannot be rebuilt, 1 otherwise (as check).
    Repair {
        /// Authenticate every copy first, so corrupt ones are replaced too.
        #[arg(long)]
        verify: bool,
        /// Orphaned parts younger than this stay (a PUT may be running
        /// elsewhere): 1h, 30m, 90s, 0s.
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
        grace: std::time::Duration,
        /// After repairing, list every file still not fully redundant (as
        /// check -v).
        #[arg(short, long)]
        verbose: bool,
        /// First move erasure-coded files' shards to where placement wants
        /// them after servers were added to or removed from dfc.conf (only
        /// the shards on nodes no longer wanted move; the old copies go once
        /// the new places are recorded).
        #[arg(long)]
        rebalance: bool,
        /// Only files under this folder (orphans are collected only for the
        /// whole vault).
        prefix: Option<String>,
    },
    /// Serve the vault to other tools from this machine: an S3 endpoint
    /// (aws cli, rclone, boto3: access key = the vault user, secret key =
    /// VAULT_S3_SECRET or one made at first start and kept 0600 in
    /// dfc.conf.s3-secret) and a web page (open the printed URL with its
    /// token). Buckets are the vault's top-level folders. Files are
    /// encrypted here before they leave; uploads wait in the private folder
    /// dfc.conf.spool/. Runs until Ctrl-C or SIGTERM.
    Serve {
        /// Address of the S3 endpoint (port 0: any free port).
        #[arg(long, value_name = "ADDR:PORT", default_value = vault_gateway::DEFAULT_S3)]
        s3: std::net::SocketAddr,
        /// Address of the web page (port 0: any free port).
        #[arg(long, value_name = "ADDR:PORT", default_value = vault_gateway::DEFAULT_WEB)]
        web: std::net::SocketAddr,
        /// Allow addresses other machines can reach (the gateway speaks
        /// plain HTTP: put TLS in front of it).
        #[arg(long)]
        allow_remote: bool,
        /// Store uploads with nodes down, as `put --degraded` (their
        /// copies are skipped; run `repair` once they are back). Without it
        /// an upload needs every node a file is placed on.
        #[arg(long)]
        degraded: bool,
    },
}

/// `repair --grace` when not given: a PUT running elsewhere takes far
/// less than an hour between storing a part and its manifest.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// `90`, `90s`, `30m`, `1h`, `2d`, or a sum like `1h30m`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration (like 0s, 90s, 30m, 1h, 1h30m)");
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let (mut total, mut digits) = (0u64, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}
