//! Rewriting the `Password:` line for `rotate`: the new password in the form
//! the old one was written, every other byte kept, the file replaced
//! atomically.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::parse::{parse_md5, scan, Form};
use super::{md5_hex, read_text, ConfigError};

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
