//! The INI form of `dfc.conf` (Python `configparser`): `[server_list]`,
//! `[credentials]`, `[tls]` and `[layout]` sections of `KEY = VALUE` or
//! `KEY: VALUE` entries. The rules, and what is refused and why, are in the `config`
//! module's documentation. [`scan`] first looks for a continuation line
//! ([`continuation`]), then reads the lines one by one: a blank or comment
//! line is skipped, a `[...]` line opens a section ([`IniScan::header`]),
//! anything else is an entry ([`split_entry`]) handed to the same [`Fields`]
//! the classic parser fills.

use std::path::Path;

use super::parse::{
    classic_keyword, is_blank_or_comment, lines, quote, Fields, Keyword, Line, Scanned, Syntax,
    Value,
};
use super::{config_dir, ConfigError, MAX_SERVERS, MIN_SERVERS};

/// The sections of an INI `dfc.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// `[server_list]`: `NAME = ADDRESS`, in node order.
    ServerList,
    /// `[credentials]`: `username` and `password`.
    Credentials,
    /// `[tls]`: `ca`.
    Tls,
    /// `[layout]`: `redundancy`.
    Layout,
}

impl Section {
    const ALL: [(&'static str, Section); 4] = [
        ("server_list", Section::ServerList),
        ("credentials", Section::Credentials),
        ("tls", Section::Tls),
        ("layout", Section::Layout),
    ];

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|(n, _)| name.eq_ignore_ascii_case(n))
            .map(|(_, s)| s)
    }

    fn name(self) -> &'static str {
        Self::ALL
            .into_iter()
            .find(|(_, s)| *s == self)
            .map_or("", |(n, _)| n)
    }

    /// How an entry of this section is written, for hints.
    fn entry_form(self) -> &'static str {
        match self {
            Section::ServerList => "`DFS1 = HOST:PORT`",
            Section::Credentials => "`username = NAME` and `password = PASSWORD`",
            Section::Tls => "`ca = PATH`",
            Section::Layout => "`redundancy = rs K+M` or `redundancy = classic`",
        }
    }
}

/// The line number of the first line that is a section header (its first
/// non-blank character is `[`), if any: such a file is an INI file.
pub(super) fn first_header(text: &str) -> Option<usize> {
    lines(text)
        .find(|line| line.text.trim_start().starts_with('['))
        .map(|line| line.number)
}

/// Parses an INI `dfc.conf` whose first section header is on line
/// `first_header`.
pub(super) fn scan(text: &str, path: &Path, first_header: usize) -> Result<Scanned, ConfigError> {
    let syntax = |line, problem| ConfigError::Syntax {
        path: path.to_owned(),
        line,
        problem,
    };
    // Continuations first: an entry followed by its continuation is
    // reported as such, not as a value cut short.
    if let Some((line, problem)) = continuation(text) {
        return Err(syntax(line, problem));
    }
    let mut scan = IniScan {
        fields: Fields::new(Syntax::Ini),
        first_header,
        section: None,
        seen: Vec::new(),
    };
    let mut last_line = 0;
    for line in lines(text) {
        last_line = line.number;
        scan.line(&line, path)
            .map_err(|problem| syntax(line.number, problem))?;
    }
    let server_list = scan
        .seen
        .iter()
        .find(|(s, _)| *s == Section::ServerList)
        .map(|(_, line)| *line);
    let Some(header) = server_list else {
        return Err(ConfigError::Missing {
            path: path.to_owned(),
            what: "[server_list] section",
        });
    };
    let count = scan.fields.server_count;
    if count < MIN_SERVERS {
        return Err(syntax(
            header,
            format!(
                "at least {MIN_SERVERS} servers are needed in [server_list] (one per node), \
                 found {count}"
            ),
        ));
    }
    if let Some(line) = scan.fields.excess_server_line {
        return Err(syntax(
            line,
            format!(
                "at most {MAX_SERVERS} servers are supported in [server_list], found {count} \
                 (this is number {})",
                MAX_SERVERS + 1
            ),
        ));
    }
    scan.fields.finish(path, last_line)
}

/// The state of an INI scan.
struct IniScan {
    fields: Fields,
    /// Line of the first section header.
    first_header: usize,
    /// The section the current line is in, if a header came before.
    section: Option<Section>,
    /// Sections seen so far, with their header lines.
    seen: Vec<(Section, usize)>,
}

/// The first continuation line, as `configparser` sees one: after an entry
/// of a section, a line (not blank, not a comment) indented deeper than that
/// entry, even with blank or comment lines between them. Its line number and
/// the problem.
fn continuation(text: &str) -> Option<(usize, String)> {
    let mut in_section = false;
    // Indentation (in characters) and line of the last entry.
    let mut last_entry: Option<(usize, usize)> = None;
    for line in lines(text) {
        let trimmed = line.text.trim_start();
        if is_blank_or_comment(trimmed) {
            continue;
        }
        let indent = line.text[..line.text.len() - trimmed.len()].chars().count();
        if let Some((entry_indent, entry_line)) = last_entry {
            if indent > entry_indent {
                return Some((
                    line.number,
                    format!(
                        "continuation lines are not supported: this indented line would \
                         continue the value on line {entry_line}; write every value on one line"
                    ),
                ));
            }
        }
        if trimmed.starts_with('[') {
            in_section = true;
            last_entry = None;
        } else if in_section {
            last_entry = Some((indent, line.number));
        }
    }
    None
}

impl IniScan {
    /// One line: blank or comment, header, or entry.
    fn line(&mut self, line: &Line<'_>, path: &Path) -> Result<(), String> {
        let trimmed = line.text.trim_start();
        if is_blank_or_comment(trimmed) {
            return Ok(());
        }
        if trimmed.starts_with('[') {
            return self.header(trimmed, line.number);
        }
        let Some(section) = self.section else {
            return Err(format!(
                "this line comes before the first [section] header (line {}): in an INI file \
                 every entry belongs to a section, and classic lines (Server, Username:, \
                 Password:, CA, Redundancy) cannot be mixed with sections",
                self.first_header
            ));
        };
        let (key, value) = split_entry(line, trimmed, section)?;
        match (section, Keyword::from_word(key)) {
            (Section::ServerList, _) => self.fields.named_server(key, &value),
            (Section::Credentials, Some(Keyword::Username)) => self.fields.username(&value),
            (Section::Credentials, Some(Keyword::Password)) => self.fields.password(&value),
            (Section::Tls, Some(Keyword::Ca)) => self.fields.ca(&value, config_dir(path)),
            (Section::Layout, Some(Keyword::Redundancy)) => self.fields.redundancy(&value),
            (_, Some(Keyword::Ca)) => Err(format!(
                "`ca` belongs in a [tls] section, not in [{}]",
                section.name()
            )),
            (_, Some(Keyword::Redundancy)) => Err(format!(
                "`redundancy` belongs in a [layout] section, not in [{}]",
                section.name()
            )),
            (Section::Credentials, _) => Err(format!(
                "unknown key {} in [credentials] (expected username or password)",
                quote(key)
            )),
            (Section::Tls, _) => Err(format!("unknown key {} in [tls] (expected ca)", quote(key))),
            (Section::Layout, _) => Err(format!(
                "unknown key {} in [layout] (expected redundancy)",
                quote(key)
            )),
        }
    }

    /// A `[name]` header line, optionally followed by a `#` or `;` comment.
    fn header(&mut self, trimmed: &str, number: usize) -> Result<(), String> {
        let inner = &trimmed[1..];
        let Some((name, after)) = inner.split_once(']') else {
            return Err("unclosed `[` in section header".to_owned());
        };
        let after = after.trim();
        if !after.is_empty() && !after.starts_with('#') && !after.starts_with(';') {
            return Err("unexpected text after the section header".to_owned());
        }
        let name = name.trim();
        if name.is_empty() {
            return Err("empty section name `[]`".to_owned());
        }
        let Some(section) = Section::from_name(name) else {
            let shown = quote(&format!("[{name}]"));
            return Err(if name.eq_ignore_ascii_case("default") {
                format!(
                    "section {shown} is not supported (configparser copies its keys into every \
                     section); put each setting in its own section"
                )
            } else {
                format!(
                    "unknown section {shown} (expected [server_list], [credentials], [tls] or \
                     [layout]); remove it or comment it out"
                )
            });
        };
        if let Some((_, first)) = self.seen.iter().find(|(s, _)| *s == section) {
            return Err(format!(
                "duplicate section [{}] (first on line {first})",
                section.name()
            ));
        }
        self.seen.push((section, number));
        self.section = Some(section);
        Ok(())
    }
}

/// Splits an entry line at its first `=` or `:` into the key and the value.
/// `trimmed` is the line without leading whitespace. Never quotes anything
/// but a key without whitespace: the rest may be a password.
fn split_entry<'a>(
    line: &Line<'a>,
    trimmed: &'a str,
    section: Section,
) -> Result<(&'a str, Value<'a>), String> {
    let classic_hint = || {
        classic_keyword(trimmed).map(|(keyword, _)| {
            format!(
                "a classic {} line cannot be mixed with INI sections; in [{}] write {}",
                keyword.label(Syntax::Classic),
                section.name(),
                section.entry_form()
            )
        })
    };
    let Some(at) = trimmed.find(['=', ':']) else {
        return Err(classic_hint().unwrap_or_else(|| {
            format!(
                "expected `KEY = VALUE` or `KEY: VALUE` (in [{}]: {})",
                section.name(),
                section.entry_form()
            )
        }));
    };
    let key = trimmed[..at].trim_end();
    if key.is_empty() {
        return Err(format!("missing key before `{}`", &trimmed[at..=at]));
    }
    if key.contains(char::is_whitespace) {
        return Err(classic_hint().unwrap_or_else(|| {
            format!(
                "a key cannot contain whitespace (in [{}]: {})",
                section.name(),
                section.entry_form()
            )
        }));
    }
    let rest = trimmed[at + 1..].trim_start();
    let value = Value {
        text: rest.trim_end(),
        start: line.start + line.text.len() - rest.len(),
        line: line.number,
    };
    Ok((key, value))
}
