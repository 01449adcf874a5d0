//! `dfc.conf`: the client configuration, in every legacy form real files use.
//!
//! ```text
//! # One line per node, 3 to 32 of them; file order is the node number
//! # (DFS1 = node 0).
//! Server DFS1 127.0.0.1:10001
//! # Host and port may be separate.
//! Server DFS2 127.0.0.1 10002
//! # Keywords in any case; IPv6 in brackets...
//! server dfs3 [::1]:10003
//! # ...or bare, with a separate port.
//! Server DFS4 ::1 10004
//! # Also `Username:Alice`, `username:alice`.
//! Username: Alice
//! # Plain text, or 32 hex digits: the MD5 digest of the password.
//! Password: Crimson33
//! # Optional; relative to this file's folder.
//! CA certs/ca.pem
//! # Optional: `classic` (exactly four servers) or `rs K+M` (K data and M
//! # parity shards on K+M of the servers). Without it: classic with four
//! # servers, `rs 2+1` with three, `rs (N-2)+2` with N > 4.
//! Redundancy rs 2+2
//! ```
//!
//! Blank lines, whole-line `#` or `;` comments, tabs, CRLF line endings and
//! a UTF-8 byte-order mark are accepted. Keywords may be followed by a colon.
//! A `Server`, `Username:` or `Redundancy` line may end in a ` # comment`, but a
//! `Password:` or `CA` value is the rest of the line (it may contain spaces,
//! colons and `#`), surrounding whitespace trimmed: a comment written after
//! it becomes part of the password or path, so comments go on lines of their
//! own. Every error names the file, the line and the problem, and never
//! quotes a password.
//!
//! # Servers and redundancy
//!
//! A file lists at least [`MIN_SERVERS`] (3) and at most [`MAX_SERVERS`]
//! (32) servers, names unique ignoring case; fewer is an error at the end
//! of the file, more an error on the 65th. The optional `Redundancy` line
//! (given once) chooses how new files are stored
//! ([`ClientConfig::redundancy`]):
//!
//! - `Redundancy classic`: the MD5 placement table of the classic
//!   exercise, each part on two of exactly four nodes; with another number
//!   of servers it is refused;
//! - `Redundancy rs K+M` (`RS 4 + 2` too): Reed-Solomon, K data and M
//!   parity shards on K+M distinct servers; K and M at least 1, K+M at most
//!   the number of servers.
//!
//! Without the line the default is [`Redundancy::default_for`] the number
//! of servers: `classic` with four, `rs 2+1` with three, `rs (N-2)+2` with
//! N above four. An error about the line names it and says what would be
//! accepted.
//!
//! # The INI form
//!
//! One classic implementation wrote the same settings with Python's
//! `configparser`; such files are read too:
//!
//! ```ini
//! [server_list]
//! DFS1 = 127.0.0.1:10001
//! DFS2: 127.0.0.1 10002
//! dfs3=[::1]:10003
//! DFS4 = ::1 10004
//! ; ... up to 32 entries, at least 3.
//!
//! ; `=` or `:`, spaces around it or not, names in any case.
//! [Credentials]
//! Username = Alice
//! password: Crimson33
//!
//! ; Optional; relative to this file's folder.
//! [tls]
//! ca = certs/ca.pem
//!
//! ; Optional: the value of a `Redundancy` line.
//! [layout]
//! redundancy = classic
//! ```
//!
//! A file with a `[section]` header line is an INI file. Section and key
//! names are case-insensitive; the first `=` or `:` on a line separates the
//! key from the value. Blank lines, whole-line `#` or `;` comments, CRLF and a
//! byte-order mark are accepted as in the classic form, and the values follow
//! the classic rules: a `[server_list]` entry is `NAME = ADDRESS` with the
//! addresses of `Server` lines, the order of the entries is the node number
//! and their number follows the rules above; a username is one word; a
//! password is the rest of the line (32 hex digits: an MD5 digest);
//! `redundancy` in `[layout]` takes the values of a `Redundancy` line.
//!
//! Refused, each with an error naming the line:
//!
//! - sections other than `[server_list]`, `[credentials]`, `[tls]` and
//!   `[layout]`, and a
//!   section given twice: a misspelt section would otherwise drop its
//!   settings without a word, and `[DEFAULT]` would lend its keys to every
//!   section. Extra sections a Python tool kept in the file must be removed
//!   or commented out;
//! - unknown keys, `ca` anywhere but in `[tls]` and `redundancy` anywhere
//!   but in `[layout]`;
//! - a line before the first section header, and classic keyword lines
//!   among the sections (`Server DFS1 ...`, `CA path`, `Redundancy rs 4+2`):
//!   a file is in one
//!   form or the other. `Username: Alice` in `[credentials]` is simply an
//!   INI entry with a colon;
//! - continuation lines (a line indented deeper than the entry before it,
//!   which `configparser` would append to that value): every value, a
//!   password above all, is on one line.
//!
//! # Rewriting and layout
//!
//! [`rewrite_password`] updates the password value in the form it was found
//! (a `Password:` line or an INI `password` entry), byte for byte otherwise,
//! with an atomic replace.
//!
//! The classic parser is in `parse` (one function per keyword), the INI
//! scan in `ini` (it fills the same fields), the rewrite in `rewrite`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

mod ini;
mod parse;
mod rewrite;
#[cfg(test)]
mod tests;

pub use rewrite::{plain_password_problem, rewrite_password};

use crate::layout::Redundancy;

/// The fewest servers a configuration may list (`rs 2+1` needs three).
pub const MIN_SERVERS: usize = 3;

/// The most servers a configuration may list: one per shard of the widest
/// Reed-Solomon scheme ([`crate::erasure::MAX_SHARDS`]).
pub const MAX_SERVERS: usize = 32;

/// One server: a `Server` line or an entry of an INI `[server_list]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    /// The node's name as written (`DFS1`); also its TLS server name.
    pub name: String,
    /// Host name or IP address, IPv6 without brackets (`::1`).
    pub host: String,
    /// UDP port, never 0.
    pub port: u16,
    /// 1-based line number in the file, for messages.
    pub line: usize,
}

/// The password value (a `Password:` line or an INI `password` entry).
#[derive(Clone)]
pub enum PasswordSetting {
    /// A plain-text password.
    Plain(Zeroizing<String>),
    /// The MD5 digest of the password (the value was 32 hex digits); the
    /// password itself must be asked for and checked against it.
    Md5([u8; 16]),
}

impl PasswordSetting {
    /// Whether `password` is this password (plain text compared as is, or
    /// its MD5 digest compared with the stored digest), in constant time
    /// for equal lengths.
    pub fn matches(&self, password: &str) -> bool {
        match self {
            PasswordSetting::Plain(plain) => plain.as_bytes().ct_eq(password.as_bytes()).into(),
            PasswordSetting::Md5(digest) => {
                let got: [u8; 16] = Md5::digest(password.as_bytes()).into();
                got.ct_eq(digest).into()
            }
        }
    }
}

impl std::fmt::Debug for PasswordSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordSetting::Plain(_) => f.write_str("Plain([redacted])"),
            PasswordSetting::Md5(_) => f.write_str("Md5([redacted])"),
        }
    }
}

/// A parsed `dfc.conf`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The file it was read from (as given).
    pub path: PathBuf,
    /// [`MIN_SERVERS`] to [`MAX_SERVERS`] servers with distinct names
    /// (ignoring case); file order is the node number (index 0 = DFS1).
    pub servers: Vec<ServerEntry>,
    /// How new files are stored: the `Redundancy` line (INI: `redundancy`
    /// in `[layout]`), already checked against the number of servers
    /// (`Classic` only with exactly four, `Rs` with K+M at most
    /// `servers.len()`), or without one [`Redundancy::default_for`] the
    /// number of servers. Always set.
    pub redundancy: Redundancy,
    /// The user name as written. Usernames are case-insensitive: compare and
    /// derive folder names from a lower-cased copy.
    pub username: String,
    /// The `Password:` line (INI: `password` in `[credentials]`), if any.
    pub password: Option<PasswordSetting>,
    /// The cluster CA from a `CA <path>` line (INI: `ca` in `[tls]`),
    /// resolved relative to the configuration file's folder.
    pub ca: Option<PathBuf>,
}

/// Why `dfc.conf` could not be read, parsed or rewritten.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file (or its replacement) could not be written.
    #[error("failed to write {}: {source}", .path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A line is malformed.
    #[error("{}:{line}: {problem}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, in lower case.
        problem: String,
    },
    /// A classic file lists fewer than [`MIN_SERVERS`] or more than
    /// [`MAX_SERVERS`] `Server` lines. `line` is the first `Server` line
    /// beyond the maximum when there are too many, else the last line of the
    /// file (0 for an empty file). (An INI file reports a wrong number of
    /// `[server_list]` entries as [`ConfigError::Syntax`] on the section's
    /// header line or its first entry beyond the maximum.)
    #[error("{}:{line}: {}", .path.display(), server_count_problem(*.count))]
    ServerCount {
        /// The file.
        path: PathBuf,
        /// Where the problem shows.
        line: usize,
        /// How many `Server` lines there are.
        count: usize,
    },
    /// A required line is absent.
    #[error("{}: missing {what}", .path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What is missing, e.g. "`Username:` line" or "`[server_list]`
        /// section".
        what: &'static str,
    },
    /// [`rewrite_password`] was asked to store, as plain text, a password
    /// that would not read back as the same plain-text password.
    #[error("{}: the new password cannot be stored as plain text: {reason}", .path.display())]
    UnstorablePassword {
        /// The file.
        path: PathBuf,
        /// Why (see [`plain_password_problem`]).
        reason: &'static str,
    },
}

impl ClientConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_text(path)?;
        Self::parse(&text, path)
    }

    /// Parses the text of a configuration file in either form; `path` is
    /// used in error messages and to resolve a relative `CA` path.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        parse::scan(text, path).map(|scanned| scanned.config)
    }

    /// The cluster CA certificate: the `CA` line's (INI: `[tls]` `ca`) path,
    /// or `certs/ca.pem` in the configuration file's folder.
    pub fn default_ca_path(&self) -> PathBuf {
        match &self.ca {
            Some(ca) => ca.clone(),
            None => config_dir(&self.path).join("certs").join("ca.pem"),
        }
    }
}

/// What is wrong with a classic file of `count` `Server` lines.
fn server_count_problem(count: usize) -> String {
    if count < MIN_SERVERS {
        format!("at least {MIN_SERVERS} `Server` lines are needed (one per node), found {count}")
    } else {
        format!(
            "at most {MAX_SERVERS} `Server` lines are supported, found {count} \
             (this is number {})",
            MAX_SERVERS + 1
        )
    }
}

/// Lower-case hex MD5 digest of `password`: the legacy stored form.
pub fn md5_hex(password: &[u8]) -> String {
    hex::encode(Md5::digest(password))
}

/// Reads a whole file as UTF-8 into a buffer that is zeroed on drop.
fn read_text(path: &Path) -> Result<Zeroizing<String>, ConfigError> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?);
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            Err(ConfigError::Syntax {
                path: path.to_owned(),
                line,
                problem: "the line is not valid utf-8".to_owned(),
            })
        }
    }
}

/// The folder holding the configuration file (`.`-relative paths stay
/// relative).
fn config_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}
