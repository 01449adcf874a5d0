//! Rewriting the password for `rotate` (the `Password:` line, or the
//! `password` entry of an INI file): the new password in the form the old
//! one was written, every other byte kept, the file replaced with the
//! crate's one atomic write.

use std::fs;
use std::path::Path;

use zeroize::Zeroizing;

use super::parse::{parse_md5, scan, Form};
use super::{md5_hex, read_text, ConfigError};
use crate::fsutil;

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

/// Rewrites the password value of the configuration at `path` (its
/// `Password:` line, or `password` in the `[credentials]` section of an INI
/// file) for `new_password`, in the form it was found: plain text stays plain
/// text, an MD5 digest becomes the digest of the new password (in the old
/// digest's hex case), and a file without a password is left alone. Every other
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
    fsutil::write_atomic(&real, out.as_bytes()).map_err(|source| ConfigError::Write {
        path: path.to_owned(),
        source,
    })
}
