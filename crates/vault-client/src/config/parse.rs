//! The `dfc.conf` parser. [`scan`] is a loop over the lines: [`lines`]
//! splits the text, [`split_keyword`] recognises a line's keyword and cuts
//! out its value, and one function per keyword reads that value
//! ([`Fields::server`], [`Fields::username`], [`Fields::password`],
//! [`Fields::ca`]). The scan also remembers where the `Password:` value sits
//! in the text, for the rewrite.

use std::ops::Range;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{config_dir, ClientConfig, ConfigError, PasswordSetting, ServerEntry};

/// The number of `Server` lines a configuration must have.
const SERVER_COUNT: usize = 4;

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

/// Parses `text`, remembering where the password value is.
pub(super) fn scan(text: &str, path: &Path) -> Result<Scanned, ConfigError> {
    let mut fields = Fields::default();
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
        }
        .map_err(syntax)?;
    }
    fields.finish(path, last_line)
}

/// One line of the file, without its line ending.
struct Line<'a> {
    /// 1-based line number.
    number: usize,
    /// Byte offset of `text` in the whole text.
    start: usize,
    text: &'a str,
}

/// The file's lines (LF or CRLF endings, a leading byte-order mark skipped).
/// A final line ending does not start another line.
fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
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

/// What follows a keyword and its optional colon, surrounding whitespace
/// trimmed.
struct Value<'a> {
    text: &'a str,
    /// Byte offset of `text` in the whole text.
    start: usize,
    /// 1-based line number.
    line: usize,
}

/// Recognises a line's keyword and cuts out its value; `None` for a blank
/// line or a comment.
fn split_keyword<'a>(line: &Line<'a>) -> Result<Option<(Keyword, Value<'a>)>, String> {
    let text = line.text.trim_start();
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    // The keyword: a run of ASCII letters and digits, then the end of the
    // line, whitespace or a colon.
    let word_len = text
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(text.len());
    let (word, after) = text.split_at(word_len);
    let keyword = match after.chars().next() {
        None => Keyword::from_word(word),
        Some(c) if c == ':' || c.is_whitespace() => Keyword::from_word(word),
        Some(_) => None,
    };
    let Some(keyword) = keyword else {
        let token = text.split_whitespace().next().unwrap_or(text);
        return Err(format!(
            "unknown keyword {} (expected Server, Username, Password or CA)",
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
#[derive(Default)]
struct Fields {
    servers: Vec<ServerEntry>,
    /// `Server` lines seen, including any beyond the fourth.
    server_count: usize,
    /// The first `Server` line beyond the fourth.
    fifth_server_line: Option<usize>,
    username: Option<(String, usize)>,
    password: Option<(PasswordSetting, usize)>,
    password_value: Option<(Range<usize>, Form)>,
    ca: Option<(PathBuf, usize)>,
}

impl Fields {
    /// A `Server` line. The first four are parsed; more are only counted.
    fn server(&mut self, value: &Value<'_>) -> Result<(), String> {
        self.server_count += 1;
        if self.server_count > SERVER_COUNT {
            self.fifth_server_line.get_or_insert(value.line);
            return Ok(());
        }
        let entry = parse_server(value.text, value.line)?;
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
    fn username(&mut self, value: &Value<'_>) -> Result<(), String> {
        if let Some((_, first)) = &self.username {
            return Err(format!(
                "duplicate `Username:` line (first on line {first})"
            ));
        }
        let name = value
            .text
            .split(|c: char| c.is_whitespace())
            .next()
            .unwrap_or("");
        if name.is_empty() {
            return Err("missing username after `Username:`".into());
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
    fn password(&mut self, value: &Value<'_>) -> Result<(), String> {
        if let Some((_, first)) = &self.password {
            return Err(format!(
                "duplicate `Password:` line (first on line {first})"
            ));
        }
        let text = value.text;
        if text.is_empty() {
            return Err(
                "missing password after `Password:` (remove the line to be asked for it)"
                    .to_owned(),
            );
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
    fn ca(&mut self, value: &Value<'_>, dir: &Path) -> Result<(), String> {
        if let Some((_, first)) = &self.ca {
            return Err(format!("duplicate `CA` line (first on line {first})"));
        }
        if value.text.is_empty() {
            return Err("missing path after `CA`".to_owned());
        }
        self.ca = Some((dir.join(value.text), value.line));
        Ok(())
    }

    /// Checks what must be there once every line is read. `last_line` is the
    /// file's last line number (0 for an empty file).
    fn finish(self, path: &Path, last_line: usize) -> Result<Scanned, ConfigError> {
        if self.server_count != SERVER_COUNT {
            return Err(ConfigError::ServerCount {
                path: path.to_owned(),
                line: self.fifth_server_line.unwrap_or(last_line),
                count: self.server_count,
            });
        }
        let Some((username, _)) = self.username else {
            return Err(ConfigError::Missing {
                path: path.to_owned(),
                what: "`Username:` line",
            });
        };
        Ok(Scanned {
            config: ClientConfig {
                path: path.to_owned(),
                servers: self.servers,
                username,
                password: self.password.map(|(p, _)| p),
                ca: self.ca.map(|(p, _)| p),
            },
            password_value: self.password_value,
        })
    }
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
pub(super) fn parse_md5(value: &str) -> Option<[u8; 16]> {
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
