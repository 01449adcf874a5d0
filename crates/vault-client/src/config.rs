//! `dfc.conf`: the client configuration, in every legacy form real files use.
//!
//! ```text
//! # four servers; file order is the node number (DFS1 = node 0)
//! Server DFS1 127.0.0.1:10001
//! Server DFS2 127.0.0.1 10002       # host and port may be separate
//! server dfs3 [::1]:10003           # keywords in any case, IPv6 in brackets
//! Server DFS4 ::1 10004             # ... or bare IPv6 with a separate port
//! Username: Alice                   # also `Username:Alice`, `username:alice`
//! Password: Crimson33               # plain text, or 32 hex digits = MD5 digest
//! CA certs/ca.pem                   # optional; relative to this file's folder
//! ```
//!
//! Blank lines, whole-line `#` comments, tabs, CRLF line endings and a UTF-8
//! byte-order mark are accepted. Keywords may be followed by a colon. A
//! `Server` line may end in a ` # comment`; a `Password:` value is the rest of
//! the line (it may contain spaces, colons and `#`), surrounding whitespace
//! trimmed. Every error names the file, the line and the problem.
//!
//! [`rewrite_password`] updates the `Password:` line in the form it was found,
//! byte for byte otherwise, with an atomic replace.

use std::fs;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The number of `Server` lines a configuration must have.
const SERVER_COUNT: usize = 4;

/// Longest piece of a bad line quoted back in an error message.
const QUOTE_MAX: usize = 40;

/// One `Server` line.
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

/// The `Password:` line's value.
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
    /// Exactly four servers; file order is the node number (index 0 = DFS1).
    pub servers: Vec<ServerEntry>,
    /// The user name as written. Usernames are case-insensitive: compare and
    /// derive folder names from a lower-cased copy.
    pub username: String,
    /// The `Password:` line, if any.
    pub password: Option<PasswordSetting>,
    /// The cluster CA from a `CA <path>` line, resolved relative to the
    /// configuration file's folder.
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
    /// The file does not have exactly four `Server` lines. `line` is the
    /// fifth `Server` line when there are too many, else the last line of
    /// the file (0 for an empty file).
    #[error(
        "{}:{line}: expected exactly 4 `Server` lines (DFS1 to DFS4), found {count}",
        .path.display()
    )]
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
        /// What is missing, e.g. "`Username:` line".
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

    /// Parses the text of a configuration file; `path` is used in error
    /// messages and to resolve a relative `CA` path.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        scan(text, path).map(|scanned| scanned.config)
    }

    /// The cluster CA certificate: the `CA` line's path, or `certs/ca.pem`
    /// in the configuration file's folder.
    pub fn default_ca_path(&self) -> PathBuf {
        match &self.ca {
            Some(ca) => ca.clone(),
            None => config_dir(&self.path).join("certs").join("ca.pem"),
        }
    }
}

/// Lower-case hex MD5 digest of `password`: the legacy stored form.
pub fn md5_hex(password: &[u8]) -> String {
    hex::encode(Md5::digest(password))
}

/// Why `password` cannot be written as a plain-text `Password:` value (it
/// would read back differently), or `None` if it can.
///
/// `rotate` should check this before changing anything when the file holds a
/// plain-text password.
pub fn plain_password_problem(password: &str) -> Option<&'static str> {
    if password.is_empty() {
        Some("it is empty")
    } else if password.chars().any(char::is_control) {
        Some("it contains a control character or line break")
    } else if password.trim() != password {
        Some("it starts or ends with whitespace")
    } else if parse_md5(password).is_some() {
        Some("32 hex digits would be read as an md5 digest")
    } else {
        None
    }
}

/// Rewrites the `Password:` line of the configuration at `path` for
/// `new_password`, in the form it was found: plain text stays plain text, an
/// MD5 digest becomes the digest of the new password (in the old digest's hex
/// case), and a file without a `Password:` line is left alone. Every other
/// byte is kept. The file is replaced atomically (temporary file in the same
/// folder, `sync_all`, original permissions, rename, folder fsync).
pub fn rewrite_password(path: &Path, new_password: &str) -> Result<(), ConfigError> {
    // Write beside the real file when `path` is a symlink.
    let real = fs::canonicalize(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    let text = read_text(&real)?;
    let scanned = scan(&text, path)?;
    let Some((span, kind)) = scanned.password_value else {
        return Ok(());
    };
    let replacement: Zeroizing<String> = match kind {
        Form::Plain => {
            if let Some(reason) = plain_password_problem(new_password) {
                return Err(ConfigError::UnstorablePassword {
                    path: path.to_owned(),
                    reason,
                });
            }
            Zeroizing::new(new_password.to_owned())
        }
        Form::Md5 { upper } => {
            let digest = md5_hex(new_password.as_bytes());
            Zeroizing::new(if upper {
                digest.to_ascii_uppercase()
            } else {
                digest
            })
        }
    };
    let mut out = Zeroizing::new(String::with_capacity(text.len() + replacement.len()));
    out.push_str(&text[..span.start]);
    out.push_str(&replacement);
    out.push_str(&text[span.end..]);
    replace_atomically(&real, out.as_bytes()).map_err(|source| ConfigError::Write {
        path: path.to_owned(),
        source,
    })
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

/// How the `Password:` value was written.
#[derive(Debug, Clone, Copy)]
enum Form {
    Plain,
    Md5 { upper: bool },
}

/// A parsed file plus where its password value sits in the text.
struct Scanned {
    config: ClientConfig,
    /// Byte range of the `Password:` value in the text, and its form.
    password_value: Option<(Range<usize>, Form)>,
}

/// The keywords of `dfc.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Server,
    Username,
    Password,
    Ca,
}

impl Keyword {
    fn from_word(word: &str) -> Option<Self> {
        [
            ("server", Keyword::Server),
            ("username", Keyword::Username),
            ("password", Keyword::Password),
            ("ca", Keyword::Ca),
        ]
        .into_iter()
        .find(|(name, _)| word.eq_ignore_ascii_case(name))
        .map(|(_, k)| k)
    }
}

/// Parses `text`, remembering where the password value is.
fn scan(text: &str, path: &Path) -> Result<Scanned, ConfigError> {
    let syntax = |line: usize, problem: String| ConfigError::Syntax {
        path: path.to_owned(),
        line,
        problem,
    };

    let mut servers: Vec<ServerEntry> = Vec::new();
    let mut fifth_server_line = None;
    let mut server_count = 0usize;
    let mut username: Option<(String, usize)> = None;
    let mut password: Option<(PasswordSetting, usize)> = None;
    let mut password_value = None;
    let mut ca: Option<(PathBuf, usize)> = None;

    let mut offset = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let mut lineno = 0usize;
    while offset < text.len() {
        let rest = &text[offset..];
        let (raw, consumed) = match rest.find('\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        let line_start = offset;
        offset += consumed;
        lineno += 1;

        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let line = raw.trim_start();
        if line.trim_end().is_empty() || line.starts_with('#') {
            continue;
        }

        // The keyword: a run of ASCII letters and digits, then the end of
        // the line, whitespace or a colon.
        let word_len = line
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(line.len());
        let (word, after) = line.split_at(word_len);
        let keyword = match after.chars().next() {
            None => Keyword::from_word(word),
            Some(c) if c == ':' || c.is_whitespace() => Keyword::from_word(word),
            Some(_) => None,
        };
        let Some(keyword) = keyword else {
            let token = line.split_whitespace().next().unwrap_or(line);
            return Err(syntax(
                lineno,
                format!(
                    "unknown keyword {} (expected Server, Username, Password or CA)",
                    quote(token)
                ),
            ));
        };
        // An optional colon after the keyword, then the value.
        let after = after.trim_start();
        let after = after.strip_prefix(':').unwrap_or(after);
        let value = after.trim();

        match keyword {
            Keyword::Server => {
                server_count += 1;
                if server_count > SERVER_COUNT {
                    fifth_server_line.get_or_insert(lineno);
                    continue;
                }
                let entry = parse_server(value, lineno).map_err(|p| syntax(lineno, p))?;
                if let Some(prev) = servers
                    .iter()
                    .find(|s| s.name.to_lowercase() == entry.name.to_lowercase())
                {
                    return Err(syntax(
                        lineno,
                        format!(
                            "duplicate server name {} (already on line {})",
                            quote(&entry.name),
                            prev.line
                        ),
                    ));
                }
                servers.push(entry);
            }
            Keyword::Username => {
                if let Some((_, first)) = &username {
                    return Err(syntax(
                        lineno,
                        format!("duplicate `Username:` line (first on line {first})"),
                    ));
                }
                let name = value
                    .split(|c: char| c.is_whitespace())
                    .next()
                    .unwrap_or("");
                if name.is_empty() {
                    return Err(syntax(lineno, "missing username after `Username:`".into()));
                }
                let extra = value[name.len()..].trim_start();
                if !extra.is_empty() && !extra.starts_with('#') {
                    return Err(syntax(
                        lineno,
                        "a username cannot contain whitespace".to_owned(),
                    ));
                }
                if name.chars().any(char::is_control) {
                    return Err(syntax(
                        lineno,
                        "a username cannot contain control characters".to_owned(),
                    ));
                }
                username = Some((name.to_owned(), lineno));
            }
            Keyword::Password => {
                if let Some((_, first)) = &password {
                    return Err(syntax(
                        lineno,
                        format!("duplicate `Password:` line (first on line {first})"),
                    ));
                }
                if value.is_empty() {
                    return Err(syntax(
                        lineno,
                        "missing password after `Password:` (remove the line to be asked for it)"
                            .to_owned(),
                    ));
                }
                let (setting, form) = match parse_md5(value) {
                    Some(digest) => {
                        let upper = !value.bytes().any(|b| b.is_ascii_lowercase())
                            && value.bytes().any(|b| b.is_ascii_uppercase());
                        (PasswordSetting::Md5(digest), Form::Md5 { upper })
                    }
                    None => (
                        PasswordSetting::Plain(Zeroizing::new(value.to_owned())),
                        Form::Plain,
                    ),
                };
                let start = line_start + (value.as_ptr() as usize - raw.as_ptr() as usize);
                password_value = Some((start..start + value.len(), form));
                password = Some((setting, lineno));
            }
            Keyword::Ca => {
                if let Some((_, first)) = &ca {
                    return Err(syntax(
                        lineno,
                        format!("duplicate `CA` line (first on line {first})"),
                    ));
                }
                if value.is_empty() {
                    return Err(syntax(lineno, "missing path after `CA`".to_owned()));
                }
                ca = Some((config_dir(path).join(value), lineno));
            }
        }
    }

    if server_count != SERVER_COUNT {
        return Err(ConfigError::ServerCount {
            path: path.to_owned(),
            line: fifth_server_line.unwrap_or(lineno),
            count: server_count,
        });
    }
    let Some((username, _)) = username else {
        return Err(ConfigError::Missing {
            path: path.to_owned(),
            what: "`Username:` line",
        });
    };
    Ok(Scanned {
        config: ClientConfig {
            path: path.to_owned(),
            servers,
            username,
            password: password.map(|(p, _)| p),
            ca: ca.map(|(p, _)| p),
        },
        password_value,
    })
}

/// Parses the value of a `Server` line: `NAME HOST:PORT`, `NAME HOST PORT`,
/// `NAME [V6]:PORT`, `NAME [V6] PORT` or `NAME V6 PORT`, optionally followed
/// by a `#` comment.
fn parse_server(value: &str, line: usize) -> Result<ServerEntry, String> {
    let tokens: Vec<&str> = value
        .split_whitespace()
        .take_while(|t| !t.starts_with('#'))
        .collect();
    let Some((&name, rest)) = tokens.split_first() else {
        return Err("missing server name and address after `Server`".to_owned());
    };
    let (host, port) = match rest {
        [] => return Err(format!("missing address for server {}", quote(name))),
        [addr] => split_host_port(addr, name)?,
        [host, port] => (unbracket(host, name)?, *port),
        [_, _, extra, ..] => {
            return Err(format!(
                "unexpected {} after the address of server {}",
                quote(extra),
                quote(name)
            ))
        }
    };
    if host.is_empty() {
        return Err(format!("missing host for server {}", quote(name)));
    }
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!(
            "bad address {} for server {}",
            quote(host),
            quote(name)
        ));
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => {
            return Err(format!(
                "bad port {} for server {} (expected 1-65535)",
                quote(port),
                quote(name)
            ))
        }
    };
    Ok(ServerEntry {
        name: name.to_owned(),
        host: host.to_owned(),
        port,
        line,
    })
}

/// Splits `host:port` or `[v6]:port`.
fn split_host_port<'a>(addr: &'a str, name: &str) -> Result<(&'a str, &'a str), String> {
    let missing_port = || {
        format!(
            "missing port in address {} of server {} (write HOST:PORT, [IPV6]:PORT or HOST PORT)",
            quote(addr),
            quote(name)
        )
    };
    if let Some(inner) = addr.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err(format!("unclosed `[` in address {}", quote(addr)));
        };
        let port = after.strip_prefix(':').ok_or_else(missing_port)?;
        return Ok((host, port));
    }
    match addr.split_once(':') {
        Some((host, port)) if !port.contains(':') => Ok((host, port)),
        // Several colons: a bare IPv6 address with no port.
        _ => Err(missing_port()),
    }
}

/// `[v6]` -> `v6`; anything else as is.
fn unbracket<'a>(host: &'a str, name: &str) -> Result<&'a str, String> {
    match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or_else(|| format!("bad address {} for server {}", quote(host), quote(name))),
        None => Ok(host),
    }
}

/// A value of exactly 32 hex digits, as an MD5 digest.
fn parse_md5(value: &str) -> Option<[u8; 16]> {
    if value.len() != 32 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut digest = [0u8; 16];
    hex::decode_to_slice(value, &mut digest).ok()?;
    Some(digest)
}

/// Quotes a piece of the file for an error message: escaped and shortened.
fn quote(s: &str) -> String {
    let mut out = String::from("`");
    for (i, c) in s.chars().enumerate() {
        if i == QUOTE_MAX {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('`');
    out
}

/// Replaces `target` with `contents`: a temporary file in the same folder,
/// written, synced, given `target`'s permissions, renamed over `target`, and
/// the folder synced. The temporary file is removed on any failure.
fn replace_atomically(target: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let permissions = fs::metadata(target)?.permissions();
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    let (tmp_path, mut file) = create_temp(dir, &file_name)?;
    let guard = TempGuard(Some(tmp_path.clone()));
    file.set_permissions(permissions)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp_path, target)?;
    guard.disarm();
    sync_dir(dir)
}

/// Creates a new, private temporary file in `dir`.
fn create_temp(dir: &Path, base: &str) -> io::Result<(PathBuf, fs::File)> {
    let mut last_err = None;
    for _ in 0..8 {
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| io::Error::other(e.to_string()))?;
        let tmp = dir.join(format!(".{base}.{}.tmp", hex::encode(rnd)));
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("could not create a temporary file")))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Removes the temporary file on drop unless disarmed.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/home/alice/.vault/dfc.conf";

    fn parse(text: &str) -> Result<ClientConfig, ConfigError> {
        ClientConfig::parse(text, Path::new(P))
    }

    fn servers(cfg: &ClientConfig) -> Vec<(String, String, u16, usize)> {
        cfg.servers
            .iter()
            .map(|s| (s.name.clone(), s.host.clone(), s.port, s.line))
            .collect()
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const CLASSIC: &str = "Server DFS1 127.0.0.1:10001\n\
                           Server DFS2 127.0.0.1:10002\n\
                           Server DFS3 127.0.0.1:10003\n\
                           Server DFS4 127.0.0.1:10004\n\
                           Username: Alice\n\
                           Password: SimplePassword\n";

    #[test]
    fn classic_file() {
        let cfg = parse(CLASSIC).unwrap();
        assert_eq!(cfg.path, Path::new(P));
        assert_eq!(
            servers(&cfg),
            (1..=4)
                .map(|i| (
                    format!("DFS{i}"),
                    "127.0.0.1".to_owned(),
                    10000 + i as u16,
                    i
                ))
                .collect::<Vec<_>>()
        );
        assert_eq!(cfg.username, "Alice");
        match &cfg.password {
            Some(PasswordSetting::Plain(p)) => assert_eq!(p.as_str(), "SimplePassword"),
            other => panic!("{other:?}"),
        }
        assert!(cfg.ca.is_none());
        assert_eq!(
            cfg.default_ca_path(),
            Path::new("/home/alice/.vault/certs/ca.pem")
        );
    }

    #[test]
    fn every_legacy_form_with_crlf_bom_comments_and_tabs() {
        let text = "\u{feff}# Vault client configuration\r\n\
                    \r\n\
                    Server DFS1 127.0.0.1:10001\r\n\
                    Server\tDFS2\t127.0.0.1\t10002\r\n\
                    \tserver dfs3 localhost:10003   # trailing comment\r\n\
                    SERVER DFS4 [::1]:10004\r\n\
                    \r\n\
                    \x20  # indented comment\r\n\
                    username:alice\r\n\
                    PASSWORD:  pass word:with #colons  \r\n\
                    CA: ../shared certs/ca.pem\r\n";
        let cfg = parse(text).unwrap();
        assert_eq!(
            servers(&cfg),
            vec![
                ("DFS1".into(), "127.0.0.1".into(), 10001, 3),
                ("DFS2".into(), "127.0.0.1".into(), 10002, 4),
                ("dfs3".into(), "localhost".into(), 10003, 5),
                ("DFS4".into(), "::1".into(), 10004, 6),
            ]
        );
        assert_eq!(cfg.username, "alice");
        assert!(cfg
            .password
            .as_ref()
            .unwrap()
            .matches("pass word:with #colons"));
        assert_eq!(
            cfg.ca.as_deref(),
            Some(Path::new("/home/alice/.vault/../shared certs/ca.pem"))
        );
        assert_eq!(cfg.default_ca_path(), cfg.ca.clone().unwrap());
    }

    #[test]
    fn address_forms() {
        for (line, host, port) in [
            ("Server DFS1 127.0.0.1:10001", "127.0.0.1", 10001),
            ("Server DFS1 127.0.0.1 10001", "127.0.0.1", 10001),
            ("server dfs1 localhost:10001", "localhost", 10001),
            ("Server DFS1 [::1]:10001", "::1", 10001),
            ("Server DFS1 ::1 10001", "::1", 10001),
            ("Server DFS1 [fe80::1] 65535", "fe80::1", 65535),
            ("Server: DFS1 node1.example:1", "node1.example", 1),
        ] {
            let text = CLASSIC.replacen("Server DFS1 127.0.0.1:10001", line, 1);
            let cfg = parse(&text).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(cfg.servers[0].host, host, "{line}");
            assert_eq!(cfg.servers[0].port, port, "{line}");
        }
    }

    #[test]
    fn username_and_password_forms() {
        for (user_line, pass_line, user, pass) in [
            (
                "Username: Alice",
                "Password: Crimson33",
                "Alice",
                "Crimson33",
            ),
            ("Username:Alice", "Password:abc", "Alice", "abc"),
            ("username:alice", "password:abc", "alice", "abc"),
            ("USERNAME  :  Bob", "Password :\t a b c \t", "Bob", "a b c"),
            ("Username Carol", "Password x:y", "Carol", "x:y"),
        ] {
            let text = CLASSIC
                .replace("Username: Alice", user_line)
                .replace("Password: SimplePassword", pass_line);
            let cfg = parse(&text).unwrap_or_else(|e| panic!("{user_line}: {e}"));
            assert_eq!(cfg.username, user);
            match cfg.password.as_ref().unwrap() {
                PasswordSetting::Plain(p) => assert_eq!(p.as_str(), pass),
                other => panic!("{other:?}"),
            }
        }
        // No Password line at all.
        let cfg = parse(&CLASSIC.replace("Password: SimplePassword\n", "")).unwrap();
        assert!(cfg.password.is_none());
        // No final newline.
        let cfg = parse(CLASSIC.trim_end()).unwrap();
        assert!(cfg.password.unwrap().matches("SimplePassword"));
    }

    #[test]
    fn md5_passwords() {
        let digest = md5_hex(b"Crimson33");
        assert_eq!(digest.len(), 32);
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        for value in [digest.clone(), digest.to_ascii_uppercase()] {
            let text = CLASSIC.replace("SimplePassword", &value);
            let cfg = parse(&text).unwrap();
            let setting = cfg.password.unwrap();
            match &setting {
                PasswordSetting::Md5(d) => assert_eq!(hex::encode(d), digest),
                other => panic!("{other:?}"),
            }
            assert!(setting.matches("Crimson33"));
            assert!(!setting.matches("crimson33"));
            assert_eq!(format!("{setting:?}"), "Md5([redacted])");
        }
        // 31 or 33 hex digits, or a non-hex letter: plain text.
        for value in [
            &digest[..31],
            &format!("{digest}0")[..],
            &format!("{}g", &digest[..31]),
        ] {
            let cfg = parse(&CLASSIC.replace("SimplePassword", value)).unwrap();
            assert!(
                matches!(cfg.password, Some(PasswordSetting::Plain(_))),
                "{value}"
            );
        }
    }

    #[test]
    fn debug_redacts_passwords() {
        let cfg = parse(CLASSIC).unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("SimplePassword"), "{shown}");
        assert!(shown.contains("Plain([redacted])"));
    }

    #[test]
    fn relative_config_path() {
        let cfg = ClientConfig::parse(CLASSIC, Path::new("dfc.conf")).unwrap();
        assert_eq!(cfg.default_ca_path(), Path::new("certs/ca.pem"));
        let text = format!("{CLASSIC}CA /etc/vault/ca.pem\n");
        let cfg = ClientConfig::parse(&text, Path::new("conf/dfc.conf")).unwrap();
        assert_eq!(cfg.default_ca_path(), Path::new("/etc/vault/ca.pem"));
        let text = format!("{CLASSIC}ca my-ca.pem\n");
        let cfg = ClientConfig::parse(&text, Path::new("conf/dfc.conf")).unwrap();
        assert_eq!(cfg.default_ca_path(), Path::new("conf/my-ca.pem"));
    }

    /// CLASSIC with line `n` (1-based) replaced.
    fn with_line(n: usize, line: &str) -> String {
        CLASSIC
            .lines()
            .enumerate()
            .map(|(i, l)| if i + 1 == n { line } else { l })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    #[test]
    fn syntax_errors_name_file_line_and_problem() {
        for (n, line, expected) in [
            (2, "Sever DFS2 127.0.0.1:10002", "unknown keyword `Sever`"),
            (
                3,
                "Server-DFS3 127.0.0.1:10003",
                "unknown keyword `Server-DFS3`",
            ),
            (5, "User: Alice", "unknown keyword `User:`"),
            (5, ": Alice", "unknown keyword `:`"),
            (
                2,
                "Server DFS2 127.0.0.1:http",
                "bad port `http` for server `DFS2`",
            ),
            (2, "Server DFS2 127.0.0.1:70000", "bad port `70000`"),
            (2, "Server DFS2 127.0.0.1:0", "bad port `0`"),
            (2, "Server DFS2 127.0.0.1 -1", "bad port `-1`"),
            (2, "Server DFS2 127.0.0.1:", "bad port ``"),
            (4, "Server DFS4", "missing address for server `DFS4`"),
            (
                4,
                "Server DFS4 # no address",
                "missing address for server `DFS4`",
            ),
            (4, "Server", "missing server name"),
            (
                4,
                "Server DFS4 127.0.0.1",
                "missing port in address `127.0.0.1`",
            ),
            (4, "Server DFS4 ::1", "missing port in address `::1`"),
            (4, "Server DFS4 [::1]", "missing port in address `[::1]`"),
            (4, "Server DFS4 [::1:10004", "unclosed `[`"),
            (4, "Server DFS4 :10004", "missing host for server `DFS4`"),
            (4, "Server DFS4 a:b 10004", "bad address `a:b`"),
            (4, "Server DFS4 h 1 2", "unexpected `2`"),
            (
                3,
                "Server dfs1 127.0.0.1:10003",
                "duplicate server name `dfs1` (already on line 1)",
            ),
            (5, "Username:", "missing username"),
            (
                5,
                "Username: Alice Smith",
                "a username cannot contain whitespace",
            ),
            (6, "Password:   ", "missing password after `Password:`"),
        ] {
            let msg = err(&with_line(n, line));
            let prefix = format!("{P}:{n}: ");
            assert!(msg.starts_with(&prefix), "{line}: {msg}");
            assert!(msg.contains(expected), "{line}: {msg}");
        }
    }

    #[test]
    fn duplicate_lines() {
        let msg = err(&format!("{CLASSIC}# again\nusername: bob\n"));
        assert_eq!(
            msg,
            format!("{P}:8: duplicate `Username:` line (first on line 5)")
        );
        let msg = err(&format!("{CLASSIC}Password: other\n"));
        assert_eq!(
            msg,
            format!("{P}:7: duplicate `Password:` line (first on line 6)")
        );
        let msg = err(&format!("{CLASSIC}CA a.pem\nCA b.pem\n"));
        assert_eq!(msg, format!("{P}:8: duplicate `CA` line (first on line 7)"));
        let msg = err(&format!("{CLASSIC}CA\n"));
        assert_eq!(msg, format!("{P}:7: missing path after `CA`"));
    }

    #[test]
    fn server_count_errors() {
        let three = CLASSIC.replace("Server DFS4 127.0.0.1:10004\n", "");
        let e = parse(&three).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::ServerCount {
                    count: 3,
                    line: 5,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("{P}:5: expected exactly 4 `Server` lines (DFS1 to DFS4), found 3")
        );
        let six = format!("{CLASSIC}\nServer DFS5 h:1\nServer DFS6 h:2\n");
        let e = parse(&six).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::ServerCount {
                    count: 6,
                    line: 8,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().starts_with(&format!("{P}:8: ")));
        let e = parse("").unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::ServerCount {
                    count: 0,
                    line: 0,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = parse("\u{feff}# only a comment\r\n").unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::ServerCount {
                    count: 0,
                    line: 1,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn missing_username() {
        let e = parse(&CLASSIC.replace("Username: Alice\n", "")).unwrap_err();
        assert!(matches!(e, ConfigError::Missing { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("{P}: missing `Username:` line"));
    }

    #[test]
    fn hostile_input_never_panics() {
        let samples = [
            "\u{feff}",
            "\r",
            "\r\n\r\n",
            "Server \u{0} \u{0}",
            "Server é ü:ö",
            "Password:\u{feff}",
            "Server D [",
            "Server D []:1",
            "Server D ]:1",
            "Username:\u{7}",
            "ünïcode",
            "\u{feff}\u{feff}Server",
        ];
        for s in samples {
            let _ = parse(s);
            let _ = parse(&format!("{CLASSIC}{s}"));
            let _ = parse(&format!("{s}\n{CLASSIC}"));
        }
        let msg = err(&format!("{CLASSIC}{}\n", "x".repeat(10_000)));
        assert!(msg.len() < 200, "{msg}");
    }

    #[test]
    fn load_reads_files_and_reports_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dfc.conf");
        fs::write(&path, CLASSIC).unwrap();
        let cfg = ClientConfig::load(&path).unwrap();
        assert_eq!(cfg.path, path);
        assert_eq!(
            cfg.default_ca_path(),
            dir.path().join("certs").join("ca.pem")
        );

        let missing = dir.path().join("nope.conf");
        let e = ClientConfig::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
        assert!(e
            .to_string()
            .starts_with(&format!("failed to read {}: ", missing.display())));

        let mut bytes = CLASSIC.as_bytes().to_vec();
        bytes.extend_from_slice(b"# \xff\xfe\n");
        fs::write(&path, bytes).unwrap();
        let e = ClientConfig::load(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}:7: the line is not valid utf-8", path.display())
        );
    }

    // ----- rewrite_password -----

    fn rewrite(original: &[u8], new: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dfc.conf");
        fs::write(&path, original).unwrap();
        rewrite_password(&path, new).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("dfc.conf")],
            "no temp file left"
        );
        fs::read(&path).unwrap()
    }

    const CRLF_FILE: &str = "\u{feff}# my cluster\r\n\
                             \r\n\
                             Server DFS1 127.0.0.1:10001\r\n\
                             Server DFS2 127.0.0.1 10002 # second\r\n\
                             server dfs3 [::1]:10003\r\n\
                             Server DFS4 ::1 10004\r\n\
                             # credentials\r\n\
                             username:alice\r\n\
                             PASSWORD:\t OLDVALUE  \r\n\
                             # end\r\n";

    #[test]
    fn rewrite_plain_keeps_every_other_byte() {
        let original = CRLF_FILE.replace("OLDVALUE", "old secret");
        let got = rewrite(original.as_bytes(), "New: pass #1");
        let expected = CRLF_FILE.replace("OLDVALUE", "New: pass #1");
        assert_eq!(String::from_utf8(got).unwrap(), expected);

        // LF, no final newline, no space after the colon.
        let original = CLASSIC.replace("Password: SimplePassword\n", "Password:abc");
        let got = rewrite(original.as_bytes(), "xyz");
        assert_eq!(
            got,
            CLASSIC
                .replace("Password: SimplePassword\n", "Password:xyz")
                .as_bytes()
        );
        let cfg = parse(std::str::from_utf8(&got).unwrap()).unwrap();
        assert!(cfg.password.unwrap().matches("xyz"));
    }

    #[test]
    fn rewrite_md5_keeps_form_and_case() {
        let old = md5_hex(b"old");
        let new = md5_hex(b"Crimson33");
        // Lower-case digest.
        let got = rewrite(CRLF_FILE.replace("OLDVALUE", &old).as_bytes(), "Crimson33");
        assert_eq!(got, CRLF_FILE.replace("OLDVALUE", &new).as_bytes());
        // Upper-case digest stays upper-case.
        let got = rewrite(
            CRLF_FILE
                .replace("OLDVALUE", &old.to_ascii_uppercase())
                .as_bytes(),
            "Crimson33",
        );
        assert_eq!(
            got,
            CRLF_FILE
                .replace("OLDVALUE", &new.to_ascii_uppercase())
                .as_bytes()
        );
        let cfg = parse(std::str::from_utf8(&got).unwrap()).unwrap();
        assert!(cfg.password.unwrap().matches("Crimson33"));
        // A digest can store any password, even one that is itself 32 hex digits.
        let got = rewrite(CLASSIC.replace("SimplePassword", &old).as_bytes(), &old);
        assert_eq!(
            got,
            CLASSIC
                .replace("SimplePassword", &md5_hex(old.as_bytes()))
                .as_bytes()
        );
    }

    #[test]
    fn rewrite_without_password_line_changes_nothing() {
        let original = CRLF_FILE.replace("PASSWORD:\t OLDVALUE  \r\n", "");
        let got = rewrite(original.as_bytes(), "whatever");
        assert_eq!(got, original.as_bytes());
    }

    #[test]
    fn rewrite_refuses_unstorable_plain_passwords_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dfc.conf");
        fs::write(&path, CLASSIC).unwrap();
        for bad in ["", " lead", "trail ", "two\nlines", "cr\r", &md5_hex(b"x")] {
            let e = rewrite_password(&path, bad).unwrap_err();
            assert!(
                matches!(e, ConfigError::UnstorablePassword { .. }),
                "{bad:?}: {e}"
            );
            assert!(plain_password_problem(bad).is_some());
        }
        assert_eq!(fs::read(&path).unwrap(), CLASSIC.as_bytes());
        assert!(plain_password_problem("fine pass: #1").is_none());

        fs::write(&path, "Server DFS1\n").unwrap();
        let e = rewrite_password(&path, "new").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 1, .. }), "{e}");
        let e = rewrite_password(&dir.path().join("missing"), "new").unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn rewrite_keeps_permissions_and_follows_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dfc.conf");
        fs::write(&path, CLASSIC).unwrap();
        for mode in [0o600, 0o640, 0o644] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            rewrite_password(&path, &format!("pw{mode}")).unwrap();
            let got = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(got, mode);
        }
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        rewrite_password(&link, "via-link").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(ClientConfig::load(&path)
            .unwrap()
            .password
            .unwrap()
            .matches("via-link"));
    }
}
