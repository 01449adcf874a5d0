//! Names in the vault are relative paths (`photos/2024/a.jpg`), and the
//! local trees they come from and go back to.
//!
//! A vault name is UTF-8, `/`-separated, made of non-empty components that
//! are neither `.` nor `..`, with no NUL or other control character and no
//! leading `/`; at most [`MAX_NAME_LEN`] bytes. It stays inside the
//! encrypted manifest: nodes never see it. A prefix (for `list`, `get -r`,
//! `delete -r`) is a name or the empty string, and matches whole
//! components: `photos` matches `photos/a.jpg`, not `photos2/b.jpg`.
//!
//! [`walk`] lists the regular files under a local folder without ever
//! following a symbolic link; links and special files are reported as
//! skipped.

use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// Longest vault name, in bytes.
pub const MAX_NAME_LEN: usize = 4096;

/// Why a name is not a vault name.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Empty.
    #[error("empty name")]
    Empty,
    /// Starts with `/`.
    #[error("{0:?} is absolute; vault names are relative paths")]
    Absolute(String),
    /// Has an empty, `.` or `..` component.
    #[error("{0:?} has an empty, \".\" or \"..\" component")]
    BadComponent(String),
    /// Has a NUL or another control character.
    #[error("{0:?} contains a control character")]
    Control(String),
    /// Longer than [`MAX_NAME_LEN`].
    #[error("name of {0} bytes is longer than {MAX_NAME_LEN}")]
    TooLong(usize),
    /// Not UTF-8 (a local path).
    #[error("{0:?} is not valid UTF-8")]
    NotUtf8(PathBuf),
}

/// Checks a vault name; returns it unchanged when valid.
pub fn check_name(name: &str) -> Result<&str, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control(name.to_string()));
    }
    if name.starts_with('/') {
        return Err(NameError::Absolute(name.to_string()));
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(NameError::BadComponent(name.to_string()));
    }
    Ok(name)
}

/// Normalises a prefix given by a user: surrounding `/` removed (so
/// `photos/` and `photos` are the same), then checked like a name. The
/// empty prefix matches everything.
pub fn normalize_prefix(prefix: &str) -> Result<String, NameError> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    check_name(trimmed).map(str::to_string)
}

/// Whether `name` is `prefix` itself or lies under it (whole components).
pub fn under(name: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || name == prefix
        || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The vault name of a local path relative to a walked folder: its
/// components joined by `/`.
fn name_of(base: &str, rel: &Path) -> Result<String, NameError> {
    let mut name = base.to_string();
    for c in rel.components() {
        let Component::Normal(part) = c else {
            return Err(NameError::BadComponent(rel.display().to_string()));
        };
        let part = part
            .to_str()
            .ok_or_else(|| NameError::NotUtf8(rel.to_path_buf()))?;
        if !name.is_empty() {
            name.push('/');
        }
        name.push_str(part);
    }
    check_name(&name)?;
    Ok(name)
}

/// The vault name of a single local file: its file name.
pub fn file_name(path: &Path) -> Result<String, NameError> {
    let name = path
        .file_name()
        .ok_or_else(|| NameError::BadComponent(path.display().to_string()))?;
    let name = name
        .to_str()
        .ok_or_else(|| NameError::NotUtf8(path.to_path_buf()))?;
    check_name(name).map(str::to_string)
}

/// A file's modification time in nanoseconds since the Unix epoch.
pub fn mtime_ns(meta: &std::fs::Metadata) -> Option<u64> {
    let d = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    u64::try_from(d.as_nanos()).ok()
}

/// A regular file found by [`walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its name in the vault.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: Option<u64>,
}

/// What [`walk`] found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Regular files, by vault name.
    pub files: Vec<LocalFile>,
    /// `path: why` for everything left out (links, special files, names
    /// that cannot be vault names, unreadable folders).
    pub skipped: Vec<String>,
}

/// Lists every regular file under `dir`, named `<dir's name>/<path inside
/// dir>`. Symbolic links are never followed (a link to a folder is not
/// entered, a link to a file is not read): they are reported as skipped, as
/// are sockets, devices and pipes. Files come out sorted by vault name.
pub fn walk(dir: &Path) -> std::io::Result<Walk> {
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a folder", dir.display()),
        ));
    }
    let abs = std::path::absolute(dir)?;
    let base = match abs.components().next_back() {
        Some(Component::Normal(n)) => n
            .to_str()
            .ok_or_else(|| std::io::Error::other(format!("{} is not UTF-8", dir.display())))?
            .to_string(),
        // `/` itself or `..`: name the files by their path inside only.
        _ => match std::fs::canonicalize(dir)?.file_name() {
            Some(n) => n.to_string_lossy().into_owned(),
            None => String::new(),
        },
    };
    let mut out = Walk::default();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let entries = match std::fs::read_dir(&here) {
            Ok(e) => e,
            Err(e) => {
                out.skipped.push(format!("{}: {e}", here.display()));
                continue;
            }
        };
        for entry in entries {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            let path = dir.join(&rel);
            // `file_type` of a DirEntry never follows links.
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                out.skipped
                    .push(format!("{}: symbolic link, not followed", path.display()));
            } else if kind.is_dir() {
                stack.push(rel);
            } else if kind.is_file() {
                match name_of(&base, &rel) {
                    Ok(name) => {
                        let meta = entry.metadata()?;
                        out.files.push(LocalFile {
                            path,
                            name,
                            size: meta.len(),
                            mtime_ns: mtime_ns(&meta),
                        });
                    }
                    Err(e) => out.skipped.push(format!("{}: {e}", path.display())),
                }
            } else {
                out.skipped
                    .push(format!("{}: not a regular file", path.display()));
            }
        }
    }
    out.files.sort_by(|a, b| a.name.cmp(&b.name));
    out.skipped.sort();
    Ok(out)
}

/// Where `name` (under `prefix`) goes below `dir` when a tree is fetched:
/// the part of the name below the prefix's parent, so `get -r photos -o
/// out` writes `out/photos/...`. Refuses anything that is not a vault name.
pub fn local_path(dir: &Path, prefix: &str, name: &str) -> Result<PathBuf, NameError> {
    check_name(name)?;
    let keep_from = match prefix.rfind('/') {
        Some(i) if under(name, prefix) => i + 1,
        _ => 0,
    };
    let mut out = dir.to_path_buf();
    for part in name[keep_from..].split('/') {
        out.push(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "photos/2024/a.jpg",
            "with space/ünï €.txt",
            "a..b/.hidden",
            "x\\y",
        ] {
            assert_eq!(check_name(ok), Ok(ok), "{ok}");
        }
        assert_eq!(check_name(""), Err(NameError::Empty));
        for bad in ["/etc/passwd", "/a"] {
            assert!(
                matches!(check_name(bad), Err(NameError::Absolute(_))),
                "{bad}"
            );
        }
        for bad in [
            "../../etc/passwd",
            "a/../b",
            "a//b",
            "a/",
            "./a",
            "a/.",
            "..",
        ] {
            assert!(
                matches!(check_name(bad), Err(NameError::BadComponent(_))),
                "{bad}"
            );
        }
        for bad in ["a\0b", "a\nb", "\x1b[31m"] {
            assert!(
                matches!(check_name(bad), Err(NameError::Control(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            check_name(&"a".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn prefixes_match_whole_components() {
        assert_eq!(normalize_prefix("photos/").unwrap(), "photos");
        assert_eq!(normalize_prefix("/").unwrap(), "");
        assert!(normalize_prefix("../x").is_err());
        assert!(under("photos/a.jpg", "photos"));
        assert!(under("photos", "photos"));
        assert!(!under("photos2/a.jpg", "photos"));
        assert!(under("anything", ""));
    }

    #[test]
    fn local_paths_keep_the_prefix_leaf() {
        let d = Path::new("/out");
        assert_eq!(
            local_path(d, "photos/2024", "photos/2024/a.jpg").unwrap(),
            Path::new("/out/2024/a.jpg")
        );
        assert_eq!(
            local_path(d, "photos", "photos/2024/a.jpg").unwrap(),
            Path::new("/out/photos/2024/a.jpg")
        );
        assert_eq!(local_path(d, "", "a/b").unwrap(), Path::new("/out/a/b"));
        assert!(local_path(d, "", "../x").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn walk_skips_links_and_never_leaves_the_tree() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let tree = root.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("top.txt"), b"1").unwrap();
        std::fs::write(tree.join("a/b/deep file.txt"), b"22").unwrap();
        std::fs::write(tree.join("a/empty"), b"").unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.join("a/out-dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), tree.join("link")).unwrap();
        let w = walk(&tree).unwrap();
        let names: Vec<&str> = w.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["tree/a/b/deep file.txt", "tree/a/empty", "tree/top.txt"]
        );
        assert_eq!(w.files[0].size, 2);
        assert_eq!(w.skipped.len(), 2, "{:?}", w.skipped);
        assert!(w.skipped.iter().all(|s| s.contains("symbolic link")));
    }
}
