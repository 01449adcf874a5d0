//! The `dfc.conf` parser. [`scan`] picks the file's form: a file with a
//! `[section]` header line is an INI file (`super::ini`), any other is the
//! classic keyword form. The classic scan is a loop over the lines: [`lines`]
//! splits the text, [`split_keyword`] recognises a line's keyword and cuts
//! out its value, and one function per keyword reads that value
//! ([`Fields::server`], [`Fields::username`], [`Fields::password`],
//! [`Fields::ca`], [`Fields::redundancy`]). The INI scan feeds the same
//! [`Fields`]. Both remember where the password value sits in the text, for
//! the rewrite. [`Fields::finish`] checks the number of servers and the
//! redundancy against it once every line is read.

use std::ops::Range;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{
    config_dir, ini, ClientConfig, ConfigError, PasswordSetting, ServerEntry, MAX_SERVERS,
    MIN_SERVERS,
};
use crate::erasure::{Scheme, MAX_SHARDS};
use crate::layout::Redundancy;

/// Longest piece of a bad line quoted back in an error message.
const QUOTE_MAX: usize = 40;

/// How the `Password:` value was written.
#[derive(Debug, Clone, Copy)]
pub(super) enum Form {
    Plain,
    Md5 { upper: bool },
}

/// A parsed file plus where its password value sits in the text.
pub(super) struct Scanned {
    pub(super) config: ClientConfig,
    /// Byte range of the `Password:` value in the text, and its form.
    pub(super) password_value: Option<(Range<usize>, Form)>,
}

/// Parses `text` in whichever form it is written, remembering where the
/// password value is.
pub(super) fn scan(text: &str, path: &Path) -> Result<Scanned, ConfigError> {
    if let Some(first_header) = ini::first_header(text) {
        return ini::scan(text, path, first_header);
    }
    let mut fields = Fields::new(Syntax::Classic);
    let mut last_line = 0;
    for line in lines(text) {
        last_line = line.number;
        let syntax = |problem| ConfigError::Syntax {
            path: path.to_owned(),
            line: line.number,
            problem,
        };
        let Some((keyword, value)) = split_keyword(&line).map_err(syntax)? else {
            continue; // blank line or comment
        };
        match keyword {
            Keyword::Server => fields.server(&value),
            Keyword::Username => fields.username(&value),
            Keyword::Password => fields.password(&value),
            Keyword::Ca => fields.ca(&value, config_dir(path)),
            Keyword::Redundancy => fields.redundancy(&value),
        }
        .map_err(syntax)?;
    }
    fields.finish(path, last_line)
}

/// One line of the file, without its line ending.
pub(super) struct Line<'a> {
    /// 1-based line number.
    pub(super) number: usize,
    /// Byte offset of `text` in the whole text.
    pub(super) start: usize,
    pub(super) text: &'a str,
}

/// Whether a line (leading whitespace removed) is blank or a whole-line
/// comment (`#` or `;`), in either form.
pub(super) fn is_blank_or_comment(trimmed: &str) -> bool {
    trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';')
}

/// The file's lines (LF or CRLF endings, a leading byte-order mark skipped).
/// A final line ending does not start another line.
pub(super) fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut start = text.len() - body.len();
    body.split_inclusive('\n')
        .zip(1..)
        .map(move |(piece, number)| {
            let line = piece.strip_suffix('\n').unwrap_or(piece);
            let line = Line {
                number,
                start,
                text: line.strip_suffix('\r').unwrap_or(line),
            };
            start += piece.len();
            line
        })
}

/// The keywords of the classic `dfc.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keyword {
    Server,
    Username,
    Password,
    Ca,
    Redundancy,
}

impl Keyword {
    pub(super) fn from_word(word: &str) -> Option<Self> {
        [
            ("server", Keyword::Server),
            ("username", Keyword::Username),
            ("password", Keyword::Password),
            ("ca", Keyword::Ca),
            ("redundancy", Keyword::Redundancy),
        ]
        .into_iter()
        .find(|(name, _)| word.eq_ignore_ascii_case(name))
        .map(|(_, k)| k)
    }

    /// How the keyword is written in a message about a line of the given
    /// form: `` `Username:` `` in a classic file, `` `username` `` in an INI
    /// file.
    pub(super) fn label(self, syntax: Syntax) -> &'static str {
        match (syntax, self) {
            (Syntax::Classic, Keyword::Server) => "`Server`",
            (Syntax::Classic, Keyword::Username) => "`Username:`",
            (Syntax::Classic, Keyword::Password) => "`Password:`",
            (Syntax::Classic, Keyword::Ca) => "`CA`",
            (Syntax::Classic, Keyword::Redundancy) => "`Redundancy`",
            (Syntax::Ini, Keyword::Server) => "server entry",
            (Syntax::Ini, Keyword::Username) => "`username`",
            (Syntax::Ini, Keyword::Password) => "`password`",
            (Syntax::Ini, Keyword::Ca) => "`ca`",
            (Syntax::Ini, Keyword::Redundancy) => "`redundancy`",
        }
    }
}

/// The keyword a classic line starts with, if it starts with one (a run of
/// ASCII letters and digits followed by the end of the line, whitespace or
/// a colon), and the rest of the line after it.
pub(super) fn classic_keyword(trimmed: &str) -> Option<(Keyword, &str)> {
    let word_len = trimmed
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(trimmed.len());
    let (word, after) = trimmed.split_at(word_len);
    match after.chars().next() {
        None => Keyword::from_word(word),
        Some(c) if c == ':' || c.is_whitespace() => Keyword::from_word(word),
        Some(_) => None,
    }
    .map(|keyword| (keyword, after))
}

/// The two ways a `dfc.conf` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Syntax {
    /// `Server DFS1 HOST:PORT`, `Username: NAME`, `Password: ...`, `CA PATH`,
    /// `Redundancy rs K+M`.
    Classic,
    /// `[server_list]`, `[credentials]`, `[tls]` and `[layout]` sections of
    /// `KEY = VALUE`.
    Ini,
}

/// A value: what follows a keyword and its optional colon, or an INI key and
/// its separator, surrounding whitespace trimmed.
pub(super) struct Value<'a> {
    pub(super) text: &'a str,
    /// Byte offset of `text` in the whole text.
    pub(super) start: usize,
    /// 1-based line number.
    pub(super) line: usize,
}

/// Recognises a line's keyword and cuts out its value; `None` for a blank
/// line or a comment.
fn split_keyword<'a>(line: &Line<'a>) -> Result<Option<(Keyword, Value<'a>)>, String> {
    let text = line.text.trim_start();
    if is_blank_or_comment(text) {
        return Ok(None);
    }
    let Some((keyword, after)) = classic_keyword(text) else {
        // Never quote what may be a password: not past an `=`, and not a
        // line of one word (a password on a line of its own).
        let token = text.split_whitespace().next().unwrap_or(text);
        let token = token.find('=').map_or(token, |i| &token[..=i]);
        if token.len() == text.trim_end().len() && !token.ends_with([':', '=']) {
            return Err(
                "a line of one word that is not a keyword (not shown: it may be a password; expected Server, Username, Password, CA or Redundancy)".into(),
            );
        }
        return Err(format!(
            "unknown keyword {} (expected Server, Username, Password, CA or Redundancy)",
            quote(token)
        ));
    };
    // An optional colon after the keyword, then the value.
    let after = after.trim_start();
    let rest = after.strip_prefix(':').unwrap_or(after).trim_start();
    let value = Value {
        text: rest.trim_end(),
        start: line.start + line.text.len() - rest.len(),
        line: line.number,
    };
    Ok(Some((keyword, value)))
}

/// What the lines read so far have set.
pub(super) struct Fields {
    /// The form of the file, for the wording of messages.
    syntax: Syntax,
    servers: Vec<ServerEntry>,
    /// Servers seen, including any beyond [`MAX_SERVERS`].
    pub(super) server_count: usize,
    /// The line of the first server beyond [`MAX_SERVERS`].
    pub(super) excess_server_line: Option<usize>,
    /// The `Redundancy` line's value and line number.
    redundancy: Option<(Redundancy, usize)>,
    username: Option<(String, usize)>,
    password: Option<(PasswordSetting, usize)>,
    password_value: Option<(Range<usize>, Form)>,
    ca: Option<(PathBuf, usize)>,
}

impl Fields {
    pub(super) fn new(syntax: Syntax) -> Self {
        Fields {
            syntax,
            servers: Vec::new(),
            server_count: 0,
            excess_server_line: None,
            redundancy: None,
            username: None,
            password: None,
            password_value: None,
            ca: None,
        }
    }

    /// A `Server` line: `NAME` and the address.
    fn server(&mut self, value: &Value<'_>) -> Result<(), String> {
        self.add_server(value.line, || parse_server(value.text, value.line))
    }

    /// An entry of an INI `[server_list]`: the key `name` and the address.
    pub(super) fn named_server(&mut self, name: &str, value: &Value<'_>) -> Result<(), String> {
        self.add_server(value.line, || {
            parse_address(name, &value_tokens(value.text), value.line)
        })
    }

    /// One server at `line`. The first [`MAX_SERVERS`] are parsed; more are
    /// only counted.
    fn add_server(
        &mut self,
        line: usize,
        parse: impl FnOnce() -> Result<ServerEntry, String>,
    ) -> Result<(), String> {
        self.server_count += 1;
        if self.server_count > MAX_SERVERS {
            self.excess_server_line.get_or_insert(line);
            return Ok(());
        }
        let entry = parse()?;
        // A manifest records the nodes of an erasure-coded file by name,
        // and refuses longer names.
        if entry.name.len() > crate::manifest::MAX_NODE_NAME_LEN {
            return Err(format!(
                "a server name is at most {} bytes; this one is {}",
                crate::manifest::MAX_NODE_NAME_LEN,
                entry.name.len()
            ));
        }
        if let Some(prev) = self
            .servers
            .iter()
            .find(|s| s.name.to_lowercase() == entry.name.to_lowercase())
        {
            return Err(format!(
                "duplicate server name {} (already on line {})",
                quote(&entry.name),
                prev.line
            ));
        }
        self.servers.push(entry);
        Ok(())
    }

    /// A `Username:` line: one word, optionally followed by a `#` comment.
    pub(super) fn username(&mut self, value: &Value<'_>) -> Result<(), String> {
        let label = Keyword::Username.label(self.syntax);
        if let Some((_, first)) = &self.username {
            return Err(format!("duplicate {label} line (first on line {first})"));
        }
        let name = value
            .text
            .split(|c: char| c.is_whitespace())
            .next()
            .unwrap_or("");
        if name.is_empty() {
            return Err(format!("missing username after {label}"));
        }
        let extra = value.text[name.len()..].trim_start();
        if !extra.is_empty() && !extra.starts_with('#') {
            return Err("a username cannot contain whitespace".to_owned());
        }
        if name.chars().any(char::is_control) {
            return Err("a username cannot contain control characters".to_owned());
        }
        self.username = Some((name.to_owned(), value.line));
        Ok(())
    }

    /// A `Password:` line: the rest of the line is the value (a `#` in it is
    /// part of it), plain text or, when it is 32 hex digits, an MD5 digest.
    pub(super) fn password(&mut self, value: &Value<'_>) -> Result<(), String> {
        let label = Keyword::Password.label(self.syntax);
        if let Some((_, first)) = &self.password {
            return Err(format!("duplicate {label} line (first on line {first})"));
        }
        let text = value.text;
        if text.is_empty() {
            return Err(format!(
                "missing password after {label} (remove the line to be asked for it)"
            ));
        }
        let (setting, form) = match parse_md5(text) {
            Some(digest) => {
                let upper = !text.bytes().any(|b| b.is_ascii_lowercase())
                    && text.bytes().any(|b| b.is_ascii_uppercase());
                (PasswordSetting::Md5(digest), Form::Md5 { upper })
            }
            None => (
                PasswordSetting::Plain(Zeroizing::new(text.to_owned())),
                Form::Plain,
            ),
        };
        self.password_value = Some((value.start..value.start + text.len(), form));
        self.password = Some((setting, value.line));
        Ok(())
    }

    /// A `CA` line: the rest of the line is a path, relative to `dir` (the
    /// configuration file's folder).
    pub(super) fn ca(&mut self, value: &Value<'_>, dir: &Path) -> Result<(), String> {
        let label = Keyword::Ca.label(self.syntax);
        if let Some((_, first)) = &self.ca {
            return Err(format!("duplicate {label} line (first on line {first})"));
        }
        if value.text.is_empty() {
            return Err(format!("missing path after {label}"));
        }
        self.ca = Some((dir.join(value.text), value.line));
        Ok(())
    }

    /// A `Redundancy` line (INI: `redundancy` in `[layout]`): `classic` or
    /// `rs K+M`, optionally followed by a `#` comment. The scheme is checked
    /// here on its own (K and M at least 1, K+M at most [`MAX_SHARDS`]);
    /// against the number of servers in [`Fields::finish`].
    pub(super) fn redundancy(&mut self, value: &Value<'_>) -> Result<(), String> {
        let label = Keyword::Redundancy.label(self.syntax);
        if let Some((_, first)) = &self.redundancy {
            return Err(format!("duplicate {label} line (first on line {first})"));
        }
        let redundancy = parse_redundancy(value.text, label)?;
        self.redundancy = Some((redundancy, value.line));
        Ok(())
    }

    /// Checks what must be there once every line is read. `last_line` is the
    /// file's last line number (0 for an empty file). An INI scan checks the
    /// number of servers itself, before this.
    pub(super) fn finish(self, path: &Path, last_line: usize) -> Result<Scanned, ConfigError> {
        if !(MIN_SERVERS..=MAX_SERVERS).contains(&self.server_count) {
            return Err(ConfigError::ServerCount {
                path: path.to_owned(),
                line: self.excess_server_line.unwrap_or(last_line),
                count: self.server_count,
            });
        }
        let n = self.servers.len();
        let redundancy = match self.redundancy {
            Some((redundancy, line)) => {
                fits_servers(redundancy, n, self.syntax).map_err(|problem| {
                    ConfigError::Syntax {
                        path: path.to_owned(),
                        line,
                        problem,
                    }
                })?;
                redundancy
            }
            None => default_redundancy(n),
        };
        let Some((username, _)) = self.username else {
            return Err(ConfigError::Missing {
                path: path.to_owned(),
                what: match self.syntax {
                    Syntax::Classic => "`Username:` line",
                    Syntax::Ini => "`username` in [credentials]",
                },
            });
        };
        Ok(Scanned {
            config: ClientConfig {
                path: path.to_owned(),
                servers: self.servers,
                redundancy,
                username,
                password: self.password.map(|(p, _)| p),
                ca: self.ca.map(|(p, _)| p),
            },
            password_value: self.password_value,
        })
    }
}

/// What a redundancy value may be, for messages.
const REDUNDANCY_FORMS: &str = "expected `classic` or `rs K+M`, e.g. `rs 4+2`";

/// Parses a redundancy value (`label` names the keyword in messages):
/// `classic` or `rs K+M`, in any case, spaces around the `+` or none, up to
/// a `#` comment.
fn parse_redundancy(value: &str, label: &str) -> Result<Redundancy, String> {
    let text = value.split('#').next().unwrap_or("").trim();
    if text.is_empty() {
        return Err(format!("missing value after {label} ({REDUNDANCY_FORMS})"));
    }
    if text.eq_ignore_ascii_case("classic") {
        return Ok(Redundancy::Classic);
    }
    let bad = || format!("bad {label} value {} ({REDUNDANCY_FORMS})", quote(text));
    let rs = text
        .get(..2)
        .filter(|word| word.eq_ignore_ascii_case("rs"))
        .map(|_| &text[2..])
        .ok_or_else(bad)?;
    let (k_text, m_text) = rs.split_once('+').ok_or_else(bad)?;
    let ((k, k_digits), (m, m_digits)) = (
        shard_count(k_text).ok_or_else(bad)?,
        shard_count(m_text).ok_or_else(bad)?,
    );
    let shown = quote(&format!("rs {k_digits}+{m_digits}"));
    if k == 0 {
        return Err(format!(
            "{shown} has no data shards: K in `rs K+M` must be at least 1"
        ));
    }
    if m == 0 {
        return Err(format!(
            "{shown} has no parity shards: M in `rs K+M` must be at least 1 \
             (with none, losing one server loses files)"
        ));
    }
    if k + m > MAX_SHARDS {
        return Err(format!(
            "{shown} has more than {MAX_SHARDS} shards: K+M must be at most \
             {MAX_SHARDS}, and at most the number of servers"
        ));
    }
    Scheme::new(k, m).map(Redundancy::Rs).map_err(|_| bad())
}

/// A shard count of `rs K+M` (ASCII digits, spaces around them allowed)
/// and its digits without leading zeros. Values past any real scheme
/// saturate at 10 000, which is refused.
fn shard_count(text: &str) -> Option<(usize, &str)> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Some((0, "0"));
    }
    let count = if significant.len() > 4 {
        10_000
    } else {
        significant.parse().unwrap_or(10_000)
    };
    Some((count, significant))
}

/// Whether `redundancy` can store files on `servers` servers, and if not
/// why.
fn fits_servers(redundancy: Redundancy, servers: usize, syntax: Syntax) -> Result<(), String> {
    match redundancy {
        Redundancy::Classic if servers != 4 => {
            let suggestion = match (syntax, default_redundancy(servers)) {
                (Syntax::Classic, Redundancy::Rs(s)) => format!("`Redundancy {s}`"),
                (Syntax::Ini, Redundancy::Rs(s)) => format!("`redundancy = {s}`"),
                (_, Redundancy::Classic) => "`rs K+M`".to_owned(),
            };
            Err(format!(
                "`classic` redundancy needs exactly 4 servers; this file lists {servers} \
                 (write {suggestion}, or another `rs K+M` with K+M at most {servers})"
            ))
        }
        Redundancy::Rs(s) if usize::from(s.k) + usize::from(s.m) > servers => Err(format!(
            "`{s}` needs at least {} servers (one per shard); this file lists {servers}",
            usize::from(s.k) + usize::from(s.m)
        )),
        _ => Ok(()),
    }
}

/// The redundancy of a file without a `Redundancy` line: the layout's
/// default for `servers` ([`MIN_SERVERS`] to [`MAX_SERVERS`] of them).
fn default_redundancy(servers: usize) -> Redundancy {
    Redundancy::default_for(servers).unwrap_or(Redundancy::Classic)
}

/// The words of a value up to a `#` comment.
fn value_tokens(value: &str) -> Vec<&str> {
    value
        .split_whitespace()
        .take_while(|t| !t.starts_with('#'))
        .collect()
}

/// Parses the value of a `Server` line: `NAME` followed by an address (see
/// [`parse_address`]), optionally followed by a `#` comment.
fn parse_server(value: &str, line: usize) -> Result<ServerEntry, String> {
    let tokens = value_tokens(value);
    let Some((&name, rest)) = tokens.split_first() else {
        return Err("missing server name and address after `Server`".to_owned());
    };
    parse_address(name, rest, line)
}

/// Parses the address of server `name`, split in words: `HOST:PORT`,
/// `HOST PORT`, `[V6]:PORT`, `[V6] PORT` or `V6 PORT`.
fn parse_address(name: &str, rest: &[&str], line: usize) -> Result<ServerEntry, String> {
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
pub(super) fn parse_md5(value: &str) -> Option<[u8; 16]> {
    if value.len() != 32 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut digest = [0u8; 16];
    hex::decode_to_slice(value, &mut digest).ok()?;
    Some(digest)
}

/// Quotes a piece of the file for an error message: escaped and shortened.
pub(super) fn quote(s: &str) -> String {
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
