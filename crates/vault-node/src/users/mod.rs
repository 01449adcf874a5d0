//! The `--users` file (`dfs.conf`): who may log in to a node, and how.
//!
//! Every form the classic exercise and its descendants wrote is accepted,
//! one user per entry:
//!
//! ```text
//! # comment lines (# or ;) and blank lines are ignored; CRLF line ends are fine
//! Username: Alice                       keyword pair (keywords in any case,
//! Password: 5f4dcc3b5aa765d61d8327deb882cf99   space after the colon optional)
//! Bob SimplePassword                    name, then the rest of the line
//! carol argon2id m=65536,t=3,p=1 <salt-hex> <ed25519-public-key-hex>
//! ```
//!
//! A password value of exactly 32 hex digits is an MD5 digest of the
//! password; anything else is the plain-text password. Both are legacy: the
//! node warns about them at start. The `argon2id` line is the upgraded form
//! written by `vault-node user add`: Argon2id costs (`m` in KiB, `t`
//! passes, `p` lanes), the salt (16 to 64 bytes, hex) and the Ed25519
//! public login key (32 bytes, hex) derived as in [`crate::kdf`]. The node
//! holds nothing from which the password could be checked offline cheaply.
//! A `NAME PASSWORD` line whose password starts with `=` or `:` is refused:
//! it is an INI entry that lost its `[credentials]` header.
//!
//! # The INI form
//!
//! One classic implementation read the users file with Python's
//! `configparser`; the same entries are accepted in that form:
//!
//! ```ini
//! [credentials]
//! Alice = SimplePassword
//! bob: 5f4dcc3b5aa765d61d8327deb882cf99
//! carol=argon2id m=65536,t=3,p=1 <salt-hex> <ed25519-public-key-hex>
//! ```
//!
//! A file with a `[section]` header line is an INI file. The section name is
//! case-insensitive; the first `=` or `:` on a line separates the user name
//! from the value (the rest of the line, trimmed), which follows the rules
//! above. `vault-node user add` appends its `argon2id` entry in the same
//! form, copying the indentation and separator of the last entry. Refused,
//! each with an error naming the line:
//!
//! - any section but `[credentials]`, and `[credentials]` twice (a users
//!   file has nothing else to say; `[DEFAULT]` would lend its keys to every
//!   section). Extra sections must be removed or commented out;
//! - a line before the header, and classic lines among the entries
//!   (`Alice SimplePassword`, `Username:`/`Password:` pairs; a user named
//!   `username` or `password` would be a misread pair): a file is in one
//!   form or the other;
//! - continuation lines (a line indented deeper than the entry before it,
//!   which `configparser` would append to that value): a password is on one
//!   line.
//!
//! User names are case-insensitive ([`wire::normalize_user`]); passwords are
//! case-sensitive. Anything malformed is an error naming file, line and
//! problem, and never quoting a password.

mod edit;
mod ini;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use md5::{Digest, Md5};
use thiserror::Error;
use wire::KdfParams;
use zeroize::Zeroizing;

pub use edit::{add_user, remove_user, upgraded_line};

/// Problems with a users file.
#[derive(Debug, Error)]
pub enum UsersError {
    /// The file could not be read or written.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{file}:{line}: {problem}")]
    Parse {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong, never quoting a password.
        problem: String,
    },
    /// `user add` for a name that already has an entry.
    #[error("{file}: user {user} already exists")]
    Duplicate {
        /// The file.
        file: String,
        /// The user name (lower case).
        user: String,
    },
    /// `user remove` for a name without an entry.
    #[error("{file}: no user {user}")]
    NotFound {
        /// The file.
        file: String,
        /// The user name (lower case).
        user: String,
    },
    /// A user name that could never be a folder name on a node.
    #[error("invalid user name {0:?}")]
    InvalidName(String),
}

/// How a user's password is held in the users file.
#[derive(Clone)]
pub enum Credential {
    /// Plain-text password (legacy).
    Plain(Zeroizing<String>),
    /// MD5 digest of the password (legacy).
    Md5([u8; wire::MD5_LEN]),
    /// Upgraded: Argon2id parameters and the Ed25519 public login key.
    Argon2id {
        /// Salt and costs the client derives the login key with.
        kdf: KdfParams,
        /// Ed25519 public key signatures are checked against.
        login_key: [u8; wire::LOGIN_KEY_LEN],
    },
}

impl Credential {
    /// The scheme's name, as `user list` prints it.
    pub fn scheme(&self) -> SchemeName {
        match self {
            Credential::Plain(_) => SchemeName::Plain,
            Credential::Md5(_) => SchemeName::Md5,
            Credential::Argon2id { .. } => SchemeName::Argon2id,
        }
    }

    /// The MD5 digest a legacy login proof is compared with.
    pub fn md5_digest(&self) -> Option<[u8; wire::MD5_LEN]> {
        match self {
            Credential::Plain(p) => Some(Md5::digest(p.as_bytes()).into()),
            Credential::Md5(d) => Some(*d),
            Credential::Argon2id { .. } => None,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets: plain passwords and MD5 digests are
        // password-equivalent.
        match self {
            Credential::Plain(_) => f.write_str("Plain(<redacted>)"),
            Credential::Md5(_) => f.write_str("Md5(<redacted>)"),
            Credential::Argon2id { kdf, .. } => f
                .debug_struct("Argon2id")
                .field("m_kib", &kdf.m_kib)
                .field("t", &kdf.t)
                .field("p", &kdf.p)
                .finish_non_exhaustive(),
        }
    }
}

/// Credential scheme names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemeName {
    /// Plain-text password.
    Plain,
    /// MD5 digest.
    Md5,
    /// Argon2id-derived Ed25519 key.
    Argon2id,
}

impl fmt::Display for SchemeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SchemeName::Plain => "plain",
            SchemeName::Md5 => "md5",
            SchemeName::Argon2id => "argon2id",
        })
    }
}

/// One user of the users file.
#[derive(Debug, Clone)]
pub struct UserEntry {
    /// The name as written in the file.
    pub name: String,
    /// The lower-case name (folder name on the node).
    pub user: String,
    /// How the password is held.
    pub credential: Credential,
    /// First and last line (1-based) of the entry in the file.
    pub lines: (usize, usize),
}

/// The parsed users file.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    entries: Vec<UserEntry>,
    index: HashMap<String, usize>,
    /// For an INI file, how its entries are written (for `user add`); `None`
    /// for the classic forms.
    ini: Option<IniStyle>,
}

/// How the entries of an INI users file are written: the last entry's
/// indentation and separator (`" = "` when there is none yet).
#[derive(Debug, Clone)]
struct IniStyle {
    indent: String,
    separator: String,
}

impl Default for IniStyle {
    fn default() -> Self {
        IniStyle {
            indent: String::new(),
            separator: " = ".to_string(),
        }
    }
}

impl UserDb {
    /// Reads and parses a users file.
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Io {
            file: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses users-file text in any of its forms; `source` names the file
    /// in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, UsersError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        match ini::first_header(text) {
            Some(header) => ini::parse(text, header),
            None => parse_classic(text),
        }
        .map_err(|(line, problem)| UsersError::Parse {
            file: source.to_string(),
            line,
            problem,
        })
    }

    fn insert(
        &mut self,
        name: String,
        credential: Credential,
        lines: (usize, usize),
    ) -> Result<(), String> {
        let user =
            wire::normalize_user(&name).ok_or_else(|| format!("invalid user name {name:?}"))?;
        if let Some(&prev) = self.index.get(&user) {
            return Err(format!(
                "user {user} is already defined on line {}",
                self.entries[prev].lines.0
            ));
        }
        self.index.insert(user.clone(), self.entries.len());
        self.entries.push(UserEntry {
            name,
            user,
            credential,
            lines,
        });
        Ok(())
    }

    /// The entry for a user name (any case).
    pub fn get(&self, user: &str) -> Option<&UserEntry> {
        let user = wire::normalize_user(user)?;
        self.index.get(&user).map(|&i| &self.entries[i])
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = &UserEntry> {
        self.entries.iter()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file defines no user.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Logs a warning for every legacy (plain-text or MD5) entry, by name.
    pub fn warn_legacy(&self, source: &str) {
        self.warn_legacy_unless(source, |_| false);
    }

    /// [`UserDb::warn_legacy`], except for the users (lower-case names)
    /// `upgraded` says have rotated already: their key record holds a login
    /// key, so the legacy entry no longer lets anyone log in.
    pub fn warn_legacy_unless(&self, source: &str, upgraded: impl Fn(&str) -> bool) {
        for e in self.entries.iter().filter(|e| !upgraded(&e.user)) {
            match e.credential.scheme() {
                SchemeName::Plain => tracing::warn!(
                    user = %e.user, file = source,
                    "legacy plain-text password; run `vault-client rotate` to upgrade"
                ),
                SchemeName::Md5 => tracing::warn!(
                    user = %e.user, file = source,
                    "legacy MD5 password; run `vault-client rotate` to upgrade"
                ),
                SchemeName::Argon2id => {}
            }
        }
    }
}

/// Parses the classic forms (byte-order mark already removed). Errors are a
/// line number and a problem that never quotes a password.
fn parse_classic(text: &str) -> Result<UserDb, (usize, String)> {
    let mut db = UserDb::default();
    // A `Username:` line waiting for its `Password:` line.
    let mut pending: Option<(usize, String)> = None;
    let unpaired = |at: usize| (at, "username without a password line".to_string());
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if ini::is_blank_or_comment(line) {
            continue;
        }
        if let Some((keyword, value)) = keyword_line(line) {
            let value = value.trim();
            match keyword {
                Keyword::Username => {
                    if let Some((at, _)) = pending {
                        return Err(unpaired(at));
                    }
                    if value.is_empty() {
                        return Err((n, "empty user name".into()));
                    }
                    pending = Some((n, value.to_string()));
                }
                Keyword::Password => {
                    let (at, name) = pending
                        .take()
                        .ok_or_else(|| (n, "password line without a username line".into()))?;
                    let cred = legacy_credential(value).map_err(|p| (n, p))?;
                    db.insert(name, cred, (at, n)).map_err(|p| (at, p))?;
                }
            }
            continue;
        }
        if let Some((at, _)) = pending {
            return Err(unpaired(at));
        }
        let Some((name, rest)) = line.split_once(char::is_whitespace) else {
            return Err((
                n,
                "expected `NAME PASSWORD`, `Username:`/`Password:` or an argon2id entry".into(),
            ));
        };
        let rest = rest.trim();
        if rest.starts_with(['=', ':']) {
            return Err((
                n,
                "a password cannot start with `=` or `:` in a `NAME PASSWORD` line: this looks \
                 like an INI entry (`NAME = PASSWORD`), which belongs under a [credentials] \
                 header"
                    .into(),
            ));
        }
        let cred = match rest.split_whitespace().next() {
            Some("argon2id") => upgraded_credential(rest),
            _ => legacy_credential(rest),
        }
        .map_err(|p| (n, p))?;
        db.insert(name.to_string(), cred, (n, n))
            .map_err(|p| (n, p))?;
    }
    if let Some((at, _)) = pending {
        return Err(unpaired(at));
    }
    Ok(db)
}

enum Keyword {
    Username,
    Password,
}

fn keyword_line(line: &str) -> Option<(Keyword, &str)> {
    let (k, v) = line.split_once(':')?;
    let k = k.trim();
    if k.eq_ignore_ascii_case("username") {
        Some((Keyword::Username, v))
    } else if k.eq_ignore_ascii_case("password") {
        Some((Keyword::Password, v))
    } else {
        None
    }
}

/// A `Password:` value or the rest of a `NAME PASSWORD` line.
fn legacy_credential(value: &str) -> Result<Credential, String> {
    if value.is_empty() {
        return Err("empty password".into());
    }
    if value.len() == 2 * wire::MD5_LEN && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut d = [0u8; wire::MD5_LEN];
        hex::decode_to_slice(value, &mut d).map_err(|_| "bad md5 digest".to_string())?;
        return Ok(Credential::Md5(d));
    }
    Ok(Credential::Plain(Zeroizing::new(value.to_string())))
}

/// `argon2id m=65536,t=3,p=1 <salt-hex> <public-key-hex>`.
fn upgraded_credential(rest: &str) -> Result<Credential, String> {
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let [_, costs, salt, key] = fields[..] else {
        return Err("expected `NAME argon2id m=KIB,t=N,p=N SALT-HEX PUBLIC-KEY-HEX`".into());
    };
    let mut m = None;
    let mut t = None;
    let mut p = None;
    for kv in costs.split(',') {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("bad argon2id cost {kv:?}, expected m=KIB,t=N,p=N"))?;
        let v: u32 = v
            .parse()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| format!("bad argon2id cost {kv:?}"))?;
        let slot = match k {
            "m" => &mut m,
            "t" => &mut t,
            "p" => &mut p,
            _ => return Err(format!("unknown argon2id cost {k:?}")),
        };
        if slot.replace(v).is_some() {
            return Err(format!("argon2id cost {k} given twice"));
        }
    }
    let (Some(m_kib), Some(t), Some(p)) = (m, t, p) else {
        return Err("argon2id costs need m, t and p".into());
    };
    let salt = hex::decode(salt).map_err(|_| "argon2id salt is not hex".to_string())?;
    if !(wire::MIN_SALT_LEN..=wire::MAX_SALT_LEN).contains(&salt.len()) {
        return Err(format!(
            "argon2id salt must be {} to {} bytes",
            wire::MIN_SALT_LEN,
            wire::MAX_SALT_LEN
        ));
    }
    let mut login_key = [0u8; wire::LOGIN_KEY_LEN];
    hex::decode_to_slice(key, &mut login_key)
        .map_err(|_| "login key must be 64 hex digits".to_string())?;
    Ok(Credential::Argon2id {
        kdf: KdfParams { salt, m_kib, t, p },
        login_key,
    })
}

#[cfg(test)]
mod tests;
