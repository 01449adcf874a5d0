//! The INI form of the users file (Python `configparser`): one
//! `[credentials]` section of `NAME = PASSWORD` entries. The rules, and what
//! is refused and why, are in the `users` module's documentation.
//! [`parse`] first looks for a continuation line ([`continuation`]), then
//! reads the lines one by one: blank and comment lines are skipped, a `[...]`
//! line opens the section ([`header`]), anything else is an entry
//! ([`entry`]) whose value is read by the same functions as the classic
//! forms.

use super::{legacy_credential, upgraded_credential, IniStyle, UserDb};

/// The one section of an INI users file.
const SECTION: &str = "credentials";

/// Where the entries go and how they are written.
const ENTRY_FORM: &str = "in [credentials] each line is `NAME = PASSWORD`";

/// Whether a line (leading whitespace removed) is blank or a whole-line
/// comment (`#` or `;`), in either form.
pub(super) fn is_blank_or_comment(trimmed: &str) -> bool {
    trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';')
}

/// The line number of the first line that is a section header (its first
/// non-blank character is `[`), if any: such a file is an INI file.
pub(super) fn first_header(text: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().starts_with('['))
        .map(|i| i + 1)
}

/// Parses an INI users file (byte-order mark already removed) whose first
/// section header is on line `first_header`. Errors are a line number and a
/// problem that never quotes a password.
pub(super) fn parse(text: &str, first_header: usize) -> Result<UserDb, (usize, String)> {
    if let Some(found) = continuation(text) {
        return Err(found);
    }
    let mut db = UserDb {
        ini: Some(IniStyle::default()),
        ..UserDb::default()
    };
    // The line of the `[credentials]` header, once seen.
    let mut section: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim_start();
        if is_blank_or_comment(trimmed) {
            continue;
        }
        if trimmed.starts_with('[') {
            header(trimmed, section).map_err(|p| (n, p))?;
            section = Some(n);
            continue;
        }
        if section.is_none() {
            return Err((
                n,
                format!(
                    "this line comes before the [credentials] header (line {first_header}): \
                     {ENTRY_FORM}, and classic lines (`Username:`/`Password:` pairs, \
                     `NAME PASSWORD`) cannot be mixed with sections"
                ),
            ));
        }
        entry(&mut db, raw, trimmed, n).map_err(|p| (n, p))?;
    }
    Ok(db)
}

/// A `[name]` header line, optionally followed by a `#` or `;` comment:
/// only `[credentials]`, once. `seen` is the line of an earlier
/// `[credentials]` header.
fn header(trimmed: &str, seen: Option<usize>) -> Result<(), String> {
    let Some((name, after)) = trimmed[1..].split_once(']') else {
        return Err("unclosed `[` in section header".into());
    };
    let after = after.trim();
    if !after.is_empty() && !after.starts_with('#') && !after.starts_with(';') {
        return Err("unexpected text after the section header".into());
    }
    let name = name.trim();
    if !name.eq_ignore_ascii_case(SECTION) {
        let shown: String = name.chars().take(40).flat_map(char::escape_debug).collect();
        return Err(if name.eq_ignore_ascii_case("default") {
            format!(
                "section [{shown}] is not supported (configparser copies its keys into every \
                 section); {ENTRY_FORM}"
            )
        } else {
            format!(
                "unknown section [{shown}] (a users file has one section, [credentials]); \
                 remove it or comment it out"
            )
        });
    }
    if let Some(first) = seen {
        return Err(format!(
            "duplicate section [credentials] (first on line {first})"
        ));
    }
    Ok(())
}

/// One `NAME = PASSWORD` (or `NAME: PASSWORD`, or `NAME = argon2id ...`)
/// entry on line `n`; `raw` is the whole line, `trimmed` the same without
/// its indentation. Messages never quote anything after the name.
fn entry(db: &mut UserDb, raw: &str, trimmed: &str, n: usize) -> Result<(), String> {
    let Some(at) = trimmed.find(['=', ':']) else {
        return Err(if trimmed.contains(char::is_whitespace) {
            format!(
                "a classic `NAME PASSWORD` line cannot be mixed with INI sections; {ENTRY_FORM}"
            )
        } else {
            "expected `NAME = PASSWORD` or `NAME: PASSWORD`".to_string()
        });
    };
    let name = trimmed[..at].trim_end();
    if name.is_empty() {
        return Err(format!("missing user name before `{}`", &trimmed[at..=at]));
    }
    if name.contains(char::is_whitespace) {
        return Err(format!(
            "a user name cannot contain whitespace; {ENTRY_FORM} (classic `NAME PASSWORD` \
             lines cannot be mixed with INI sections)"
        ));
    }
    if name.eq_ignore_ascii_case("username") || name.eq_ignore_ascii_case("password") {
        return Err(format!(
            "`{}` is taken for a keyword, not a user name: {ENTRY_FORM} (classic \
             `Username:`/`Password:` pairs, or a client dfc.conf's [credentials], do not \
             belong in a users file with sections)",
            name.to_ascii_lowercase()
        ));
    }
    let after = &trimmed[at + 1..];
    let value = after.trim();
    let cred = match value.split_whitespace().next() {
        Some("argon2id") => upgraded_credential(value)?,
        _ => legacy_credential(value)?,
    };
    db.insert(name.to_string(), cred, (n, n))?;
    // The style `user add` copies: this entry's indentation and separator.
    let indent = &raw[..raw.len() - trimmed.len()];
    let separator = &trimmed[name.len()..trimmed.len() - after.trim_start().len()];
    db.ini = Some(IniStyle {
        indent: indent.to_string(),
        separator: separator.to_string(),
    });
    Ok(())
}

/// The first continuation line, as `configparser` sees one: after an entry
/// of a section, a line (not blank, not a comment) indented deeper than that
/// entry, even with blank or comment lines between them.
fn continuation(text: &str) -> Option<(usize, String)> {
    let mut in_section = false;
    // Indentation (in characters) and line of the last entry.
    let mut last_entry: Option<(usize, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if is_blank_or_comment(trimmed) {
            continue;
        }
        let indent = raw[..raw.len() - trimmed.len()].chars().count();
        if let Some((entry_indent, entry_line)) = last_entry {
            if indent > entry_indent {
                return Some((
                    i + 1,
                    format!(
                        "continuation lines are not supported: this indented line would \
                         continue the value on line {entry_line}; write every entry on one line"
                    ),
                ));
            }
        }
        if trimmed.starts_with('[') {
            in_section = true;
            last_entry = None;
        } else if in_section {
            last_entry = Some((indent, i + 1));
        }
    }
    None
}
