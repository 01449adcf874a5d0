//! How `vault-node serve` is told where to run: the node's folder, its port
//! and listening address, in the modern and the classic forms.
//!
//! ```text
//! vault-node serve --root DFS1 --port 10001            modern
//! vault-node serve /DFS1 10001                          classic `dfs.py /DFS1 10001`
//! vault-node serve DFS1 10001 --listen 127.0.0.1        classic, loopback only
//! vault-node serve --root DFS1 --listen 127.0.0.1:10001
//! vault-node serve --root DFS1 --listen ::1 --port 10001
//! ```
//!
//! The classic servers were started from the folder holding `dfs.conf`,
//! and `/DFS1` meant the folder `DFS1` *there*. So a classic folder
//! argument of one component after a leading `/` is read as `./DFS1`; a
//! longer absolute path (`/srv/vault/DFS1`) is taken as it is, and so is
//! anything given with `--root`. When `/DFS1` could mean either (a folder
//! `/DFS1` exists at the top of the file system), the command refuses and
//! says how to write each.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};

/// The node's folder: the classic positional argument or `--root`.
pub fn root(positional: Option<&str>, flag: Option<&Path>) -> Result<PathBuf, String> {
    match (positional, flag) {
        (Some(p), Some(f)) => Err(format!(
            "the node's folder is given twice ({p:?} and --root {}); give it once",
            f.display()
        )),
        (None, Some(f)) => Ok(f.to_path_buf()),
        (Some(p), None) => classic_folder(p, Path::new(p).is_dir() && p.starts_with('/')),
        (None, None) => Err(
            "give the node's folder: `vault-node serve DFS1 10001` or `--root DFS1 --port 10001`"
                .into(),
        ),
    }
}

/// Reads a classic folder argument; `absolute_exists` tells whether the
/// argument, read as an absolute path, is an existing folder.
fn classic_folder(arg: &str, absolute_exists: bool) -> Result<PathBuf, String> {
    let path = Path::new(arg);
    let parts: Vec<Component> = path.components().collect();
    match parts[..] {
        [Component::RootDir, Component::Normal(name)] => {
            let here = Path::new(".").join(name);
            if absolute_exists {
                let name = name.to_string_lossy();
                return Err(format!(
                    "{arg:?} is ambiguous: the classic dfs.py read it as ./{name} (the folder \
                     {name} here), but the folder {arg} exists too; write `{name}` for the \
                     folder here, or `--root {arg}` for the one at the top of the file system"
                ));
            }
            Ok(here)
        }
        _ => Ok(path.to_path_buf()),
    }
}

/// The UDP port: the classic positional argument or `--port`.
pub fn port(positional: Option<u16>, flag: Option<u16>) -> Result<Option<u16>, String> {
    match (positional, flag) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "the port is given twice ({a} and --port {b}); give it once"
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// The address to bind: `--listen` (an IP, or an `IP:PORT`) combined with
/// the port. Without `--listen`, every interface (`0.0.0.0`).
pub fn listen(listen: Option<&str>, port: Option<u16>) -> Result<SocketAddr, String> {
    let Some(text) = listen else {
        return match port {
            Some(p) => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p)),
            None => Err("give a port: `vault-node serve DFS1 10001` or `--port 10001`".into()),
        };
    };
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return match port {
            Some(p) if p != addr.port() => Err(format!(
                "--listen {text} and --port {p} disagree on the port; give it once"
            )),
            _ => Ok(addr),
        };
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    match (bare.parse::<IpAddr>(), port) {
        (Ok(ip), Some(p)) => Ok(SocketAddr::new(ip, p)),
        (Ok(_), None) => Err(format!(
            "--listen {text} has no port: add --port (or write --listen {text}:PORT)"
        )),
        (Err(_), _) => Err(format!(
            "--listen {text:?} is not an IP address or IP:PORT (for IPv6 with a port: [::1]:10001)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            listen(Some("127.0.0.1"), Some(10001)),
            Ok(a("127.0.0.1:10001"))
        );
        assert_eq!(
            listen(Some("127.0.0.1:10001"), None),
            Ok(a("127.0.0.1:10001"))
        );
        assert_eq!(
            listen(Some("127.0.0.1:10001"), Some(10001)),
            Ok(a("127.0.0.1:10001"))
        );
        assert_eq!(listen(Some("::1"), Some(7)), Ok(a("[::1]:7")));
        assert_eq!(listen(Some("[::1]"), Some(7)), Ok(a("[::1]:7")));
        assert_eq!(listen(Some("[::1]:7"), None), Ok(a("[::1]:7")));
        assert_eq!(listen(None, Some(9)), Ok(a("0.0.0.0:9")));
        assert!(listen(Some("127.0.0.1:1"), Some(2))
            .unwrap_err()
            .contains("disagree"));
        assert!(listen(Some("127.0.0.1"), None)
            .unwrap_err()
            .contains("no port"));
        assert!(listen(Some("localhost"), Some(1))
            .unwrap_err()
            .contains("not an IP"));
        assert!(listen(None, None).unwrap_err().contains("give a port"));
    }

    #[test]
    fn classic_folders() {
        assert_eq!(classic_folder("/DFS1", false), Ok(PathBuf::from("./DFS1")));
        assert_eq!(classic_folder("DFS1", false), Ok(PathBuf::from("DFS1")));
        assert_eq!(classic_folder("./DFS1", false), Ok(PathBuf::from("./DFS1")));
        assert_eq!(
            classic_folder("/srv/vault/DFS1", false),
            Ok(PathBuf::from("/srv/vault/DFS1"))
        );
        let err = classic_folder("/DFS1", true).unwrap_err();
        assert!(
            err.contains("ambiguous") && err.contains("--root /DFS1"),
            "{err}"
        );
        assert!(root(Some("DFS1"), Some(Path::new("x")))
            .unwrap_err()
            .contains("twice"));
        assert_eq!(
            root(None, Some(Path::new("/abs/x"))),
            Ok(PathBuf::from("/abs/x"))
        );
        assert!(root(None, None).is_err());
        // A real top-level folder: /tmp exists everywhere.
        assert!(root(Some("/tmp"), None).unwrap_err().contains("ambiguous"));
    }

    #[test]
    fn ports() {
        assert_eq!(port(Some(1), None), Ok(Some(1)));
        assert_eq!(port(None, Some(2)), Ok(Some(2)));
        assert_eq!(port(Some(3), Some(3)), Ok(Some(3)));
        assert!(port(Some(3), Some(4)).is_err());
    }
}
