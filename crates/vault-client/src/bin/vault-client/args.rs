//! The command line: arguments, subcommands and help text.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
        /// Files (and with -r, folders) to store.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Fetch a file, or with -r every file under a folder. Needs any three
    /// nodes.
    Get {
        /// Fetch every file under NAME, recreating the tree.
        #[arg(short, long)]
        recursive: bool,
        /// Name of the file in the vault (a path like photos/2024/a.jpg),
        /// or with -r a folder.
        name: String,
        /// Where to write it [default: the file name in the current
        /// folder; with -r, the current folder].
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Replace local files that exist.
        #[arg(short, long)]
        force: bool,
    },
    /// List the files (under PREFIX); ` [incomplete]` marks files the
    /// reachable nodes cannot rebuild.
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
    /// Change the password on all four nodes (no data is re-encrypted) and
    /// update dfc.conf's `Password:` line in the form it has.
    Rotate,
}
