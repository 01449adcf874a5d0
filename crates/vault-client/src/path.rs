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
///
/// Holds the whole tree in memory: a PUT streams with [`Walker`] instead.
pub fn walk(dir: &Path) -> std::io::Result<Walk> {
    let mut out = Walk::default();
    for found in Walker::new(dir)? {
        match found {
            Found::File(f) => out.files.push(f),
            Found::Skipped(s) => out.skipped.push(s),
        }
    }
    out.skipped.sort();
    Ok(out)
}

/// The name a walk of `dir` gives its files before their path inside:
/// the folder's own name (empty for `/`).
fn base_of(dir: &Path) -> std::io::Result<String> {
    let abs = std::path::absolute(dir)?;
    Ok(match abs.components().next_back() {
        Some(Component::Normal(n)) => n
            .to_str()
            .ok_or_else(|| std::io::Error::other(format!("{} is not UTF-8", dir.display())))?
            .to_string(),
        // `/` itself or `..`: name the files by their path inside only.
        _ => match std::fs::canonicalize(dir)?.file_name() {
            Some(n) => n.to_string_lossy().into_owned(),
            None => String::new(),
        },
    })
}

/// One thing a [`Walker`] comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A regular file.
    File(LocalFile),
    /// `path: why` for something left out (a link, a special file, a name
    /// that cannot be a vault name, a folder or entry that cannot be read).
    Skipped(String),
}

/// One folder being walked: its path inside the walked folder and the
/// entries not yet visited, smallest sort key last.
struct Level {
    rel: PathBuf,
    entries: Vec<(Vec<u8>, std::ffi::OsString, std::fs::FileType)>,
}

/// [`walk`] as a stream: the regular files under a folder in vault-name
/// order, depth first, with only the entries of the folders on the current
/// path in memory (one folder's names at a time per level), never the
/// whole tree. Links are never followed; links, special files and entries
/// that cannot be read come out as [`Found::Skipped`] where they are met.
///
/// Each folder's entries are sorted by name, a folder's as if it ended in
/// `/`, so that depth-first order is the order of the vault names (`a.txt`
/// comes before `a/b`, as `.` sorts before `/`).
pub struct Walker {
    dir: PathBuf,
    base: String,
    stack: Vec<Level>,
    /// Found but not yet handed out (a folder that could not be read).
    ready: Option<Found>,
}

impl Walker {
    /// Starts walking `dir`, which must be a folder (not a link to one).
    pub fn new(dir: &Path) -> std::io::Result<Walker> {
        let meta = std::fs::symlink_metadata(dir)?;
        if !meta.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a folder", dir.display()),
            ));
        }
        let base = base_of(dir)?;
        let mut w = Walker {
            dir: dir.to_path_buf(),
            base,
            stack: Vec::new(),
            ready: None,
        };
        // The top folder itself must be readable: that is the walk's error.
        let entries = w.read(&PathBuf::new())?;
        w.stack.push(Level {
            rel: PathBuf::new(),
            entries,
        });
        Ok(w)
    }

    /// The first component of every name this walk yields (the walked
    /// folder's name), or `None` when the names have no common first
    /// component (the walked folder is `/`).
    pub fn root(&self) -> Option<&str> {
        (!self.base.is_empty()).then_some(self.base.as_str())
    }

    /// The entries of folder `rel`, sorted so that popping gives them in
    /// vault-name order. The first entry that cannot be read is reported
    /// as skipped next (through `ready`).
    #[allow(clippy::type_complexity)]
    fn read(
        &mut self,
        rel: &Path,
    ) -> std::io::Result<Vec<(Vec<u8>, std::ffi::OsString, std::fs::FileType)>> {
        let here = self.dir.join(rel);
        let mut entries = Vec::new();
        let mut bad = Vec::new();
        for entry in std::fs::read_dir(&here)? {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    bad.push(format!("{}: {e}", here.display()));
                    continue;
                }
            };
            // `file_type` of a DirEntry never follows links.
            let kind = match entry.file_type() {
                Ok(k) => k,
                Err(e) => {
                    bad.push(format!("{}: {e}", here.join(entry.file_name()).display()));
                    continue;
                }
            };
            let name = entry.file_name();
            let mut key = name.as_encoded_bytes().to_vec();
            if kind.is_dir() {
                key.push(b'/');
            }
            entries.push((key, name, kind));
        }
        // Largest first: the next entry is popped off the end.
        entries.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        if let Some(first) = bad.into_iter().next() {
            // At most one such report per folder is kept pending; a folder
            // whose listing breaks is rare and one line names it.
            self.ready = Some(Found::Skipped(first));
        }
        Ok(entries)
    }
}

impl Iterator for Walker {
    type Item = Found;

    fn next(&mut self) -> Option<Found> {
        loop {
            if let Some(found) = self.ready.take() {
                return Some(found);
            }
            let level = self.stack.last_mut()?;
            let Some((_, name, kind)) = level.entries.pop() else {
                self.stack.pop();
                continue;
            };
            let rel = level.rel.join(&name);
            let path = self.dir.join(&rel);
            if kind.is_symlink() {
                return Some(Found::Skipped(format!(
                    "{}: symbolic link, not followed",
                    path.display()
                )));
            } else if kind.is_dir() {
                match self.read(&rel) {
                    Ok(entries) => self.stack.push(Level { rel, entries }),
                    Err(e) => return Some(Found::Skipped(format!("{}: {e}", path.display()))),
                }
            } else if kind.is_file() {
                let name = match name_of(&self.base, &rel) {
                    Ok(name) => name,
                    Err(e) => return Some(Found::Skipped(format!("{}: {e}", path.display()))),
                };
                // `symlink_metadata`: the entry was a regular file; if it
                // has been replaced by a link since, that is what is seen.
                let meta = match std::fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) => return Some(Found::Skipped(format!("{}: {e}", path.display()))),
                };
                return Some(Found::File(LocalFile {
                    path,
                    name,
                    size: meta.len(),
                    mtime_ns: mtime_ns(&meta),
                }));
            } else {
                return Some(Found::Skipped(format!(
                    "{}: not a regular file",
                    path.display()
                )));
            }
        }
    }
}

/// One thing a PUT was given: a file (stored under its file name) or a
/// folder (walked with [`Walker`]).
#[derive(Debug, Clone)]
pub enum Given {
    /// A file, already named.
    File(LocalFile),
    /// A folder, to walk.
    Folder(PathBuf),
}

/// What [`GivenFiles`] yields: a file, a file whose name an earlier file
/// given already had, or something skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A file to store.
    File(LocalFile),
    /// A file whose vault name an earlier one given already has.
    Twice(LocalFile),
    /// `path: why` for something left out.
    Skipped(String),
}

/// A sorted stream of the names one [`Given`] yields, walked again to
/// tell whether a later one repeats a name: advanced only forwards, so
/// each check costs nothing in memory.
struct Probe {
    names: std::iter::Peekable<Box<dyn Iterator<Item = String> + Send>>,
}

impl Probe {
    fn new(given: &Given) -> Option<Probe> {
        let names: Box<dyn Iterator<Item = String> + Send> = match given {
            Given::File(f) => Box::new(std::iter::once(f.name.clone())),
            Given::Folder(dir) => Box::new(Walker::new(dir).ok()?.filter_map(|f| match f {
                Found::File(f) => Some(f.name),
                Found::Skipped(_) => None,
            })),
        };
        Some(Probe {
            names: names.peekable(),
        })
    }

    /// Whether the stream holds `name`; names asked must increase.
    fn holds(&mut self, name: &str) -> bool {
        while self.names.next_if(|n| n.as_str() < name).is_some() {}
        self.names.peek().is_some_and(|n| n == name)
    }
}

/// The files of everything a PUT was given, in the order given, each
/// folder walked as a stream ([`Walker`]): memory does not grow with the
/// trees. A name given twice (two folders of the same name, two files of
/// the same file name) comes out as [`Item::Twice`] the second time: the
/// earlier things given whose names could collide are walked again,
/// alongside, instead of every name being remembered.
pub struct GivenFiles {
    given: Vec<Given>,
    /// The index in `given` of the one being walked.
    at: usize,
    current: Option<Box<dyn Iterator<Item = Found> + Send>>,
    probes: Vec<Probe>,
}

impl GivenFiles {
    /// Streams the files of `given`, in order. A folder that cannot be
    /// walked comes out as one [`Item::Skipped`].
    pub fn new(given: Vec<Given>) -> GivenFiles {
        GivenFiles {
            given,
            at: 0,
            current: None,
            probes: Vec::new(),
        }
    }

    /// The first component of the names `g` yields (`None`: any).
    fn root(g: &Given) -> Option<String> {
        match g {
            Given::File(f) => Some(f.name.clone()),
            Given::Folder(dir) => base_of(dir).ok().filter(|b| !b.is_empty()),
        }
    }

    /// Opens `given[at]`; an error is the one item it yields.
    fn open(&mut self) -> Option<Found> {
        let g = self.given[self.at].clone();
        let mine = Self::root(&g);
        self.probes = self.given[..self.at]
            .iter()
            .filter(|earlier| {
                let theirs = Self::root(earlier);
                mine.is_none() || theirs.is_none() || mine == theirs
            })
            .filter_map(Probe::new)
            .collect();
        match g {
            Given::File(f) => {
                self.current = Some(Box::new(std::iter::once(Found::File(f))));
                None
            }
            Given::Folder(dir) => match Walker::new(&dir) {
                Ok(w) => {
                    self.current = Some(Box::new(w));
                    None
                }
                Err(e) => {
                    self.current = Some(Box::new(std::iter::empty()));
                    Some(Found::Skipped(format!("{}: {e}", dir.display())))
                }
            },
        }
    }
}

impl Iterator for GivenFiles {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if self.at >= self.given.len() {
                return None;
            }
            if self.current.is_none() {
                if let Some(Found::Skipped(s)) = self.open() {
                    return Some(Item::Skipped(s));
                }
            }
            match self.current.as_mut().and_then(Iterator::next) {
                Some(Found::File(f)) => {
                    let twice = self.probes.iter_mut().any(|p| p.holds(&f.name));
                    return Some(if twice { Item::Twice(f) } else { Item::File(f) });
                }
                Some(Found::Skipped(s)) => return Some(Item::Skipped(s)),
                None => {
                    self.current = None;
                    self.probes.clear();
                    self.at += 1;
                }
            }
        }
    }
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

    #[test]
    fn walker_yields_vault_name_order_depth_first() {
        let root = tempfile::tempdir().unwrap();
        let tree = root.path().join("t");
        for p in ["a/b", "a/c/d", "a-b", "z"] {
            std::fs::create_dir_all(tree.join(p)).unwrap();
        }
        for f in [
            "a.txt", "a/b/1", "a/c/d/2", "a/c.txt", "a-b/3", "a0", "z/4", "B",
        ] {
            std::fs::write(tree.join(f), b"x").unwrap();
        }
        let names: Vec<String> = Walker::new(&tree)
            .unwrap()
            .filter_map(|f| match f {
                Found::File(f) => Some(f.name),
                Found::Skipped(_) => None,
            })
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 8);
        assert_eq!(names[..3], ["t/B", "t/a-b/3", "t/a.txt"]);
    }

    #[test]
    fn a_name_given_twice_is_found_without_remembering_names() {
        let root = tempfile::tempdir().unwrap();
        let one = root.path().join("one/photos");
        let two = root.path().join("two/photos");
        let other = root.path().join("two/other");
        for d in [&one, &two, &other] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
        }
        std::fs::write(one.join("sub/a"), b"1").unwrap();
        std::fs::write(one.join("b"), b"1").unwrap();
        std::fs::write(two.join("sub/a"), b"2").unwrap();
        std::fs::write(two.join("c"), b"2").unwrap();
        std::fs::write(other.join("sub/a"), b"3").unwrap();
        let single = root.path().join("b");
        std::fs::write(&single, b"4").unwrap();
        let file = |p: &Path| {
            Given::File(LocalFile {
                path: p.to_path_buf(),
                name: file_name(p).unwrap(),
                size: 1,
                mtime_ns: None,
            })
        };
        let given = vec![
            Given::Folder(one.clone()),
            file(&single),
            Given::Folder(two.clone()),
            Given::Folder(other.clone()),
            file(&single),
        ];
        let got: Vec<(bool, String)> = GivenFiles::new(given)
            .map(|i| match i {
                Item::File(f) => (false, f.name),
                Item::Twice(f) => (true, f.name),
                Item::Skipped(s) => panic!("{s}"),
            })
            .collect();
        let want = [
            (false, "photos/b"),
            (false, "photos/sub/a"),
            (false, "b"),
            (false, "photos/c"),
            (true, "photos/sub/a"),
            (false, "other/sub/a"),
            (true, "b"),
        ];
        let want: Vec<(bool, String)> = want.iter().map(|(t, n)| (*t, n.to_string())).collect();
        assert_eq!(got, want);
    }
}
