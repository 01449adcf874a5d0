//! The `dfc.conf` parser. It also remembers where the `Password:` value
//! sits in the text, for the rewrite.

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
pub(super) fn scan(text: &str, path: &Path) -> Result<Scanned, ConfigError> {
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
