//! `vault-node user add` / `user remove`: atomic edits of the users file
//! that keep every other line (comments, legacy entries, line ends) as is.
//! A new entry is written in the file's own form: a classic line, or an INI
//! `NAME = argon2id ...` entry at the end of the `[credentials]` section
//! (the only section an INI users file has, so the end of the file).

use std::io;
use std::path::Path;

use wire::KdfParams;

use super::{UserDb, UsersError};
use crate::fsutil::write_atomic;

/// The upgraded users-file line for `name` (without line end), in the
/// classic form.
pub fn upgraded_line(name: &str, kdf: &KdfParams, login_key: &[u8; wire::LOGIN_KEY_LEN]) -> String {
    format!("{name} {}", upgraded_value(kdf, login_key))
}

/// The upgraded credential: `argon2id m=KIB,t=N,p=N SALT-HEX KEY-HEX`.
fn upgraded_value(kdf: &KdfParams, login_key: &[u8; wire::LOGIN_KEY_LEN]) -> String {
    format!(
        "argon2id m={},t={},p={} {} {}",
        kdf.m_kib,
        kdf.t,
        kdf.p,
        hex::encode(&kdf.salt),
        hex::encode(login_key)
    )
}

fn read_or_empty(path: &Path) -> Result<String, UsersError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(UsersError::Io {
            file: path.display().to_string(),
            source,
        }),
    }
}

fn write(path: &Path, text: &str, new_file: bool) -> Result<(), UsersError> {
    write_atomic(path, text.as_bytes(), new_file).map_err(|source| UsersError::Io {
        file: path.display().to_string(),
        source,
    })
}

/// Appends an upgraded entry for `name`, in the file's form (classic line or
/// INI entry); refuses a name that already has an entry (in any form, any
/// case). Creates the file (mode 0600, classic form) if needed.
pub fn add_user(
    path: &Path,
    name: &str,
    kdf: &KdfParams,
    login_key: &[u8; wire::LOGIN_KEY_LEN],
) -> Result<(), UsersError> {
    let user = wire::normalize_user(name).ok_or_else(|| UsersError::InvalidName(name.into()))?;
    let file = path.display().to_string();
    let new_file = !path.exists();
    let mut text = read_or_empty(path)?;
    let db = UserDb::parse(&text, &file)?;
    if db.get(&user).is_some() {
        return Err(UsersError::Duplicate { file, user });
    }
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push_str(eol);
    }
    match &db.ini {
        None => text.push_str(&upgraded_line(name, kdf, login_key)),
        Some(style) => {
            text.push_str(&style.indent);
            text.push_str(name);
            text.push_str(&style.separator);
            text.push_str(&upgraded_value(kdf, login_key));
        }
    }
    text.push_str(eol);
    write(path, &text, new_file)
}

/// Removes `name`'s entry (one line, or a `Username:`/`Password:` pair);
/// the `[credentials]` header of an INI file stays, even with no entry left.
pub fn remove_user(path: &Path, name: &str) -> Result<(), UsersError> {
    let user = wire::normalize_user(name).ok_or_else(|| UsersError::InvalidName(name.into()))?;
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| UsersError::Io {
        file: file.clone(),
        source,
    })?;
    let db = UserDb::parse(&text, &file)?;
    let Some(entry) = db.get(&user) else {
        return Err(UsersError::NotFound { file, user });
    };
    let (first, last) = entry.lines;
    let kept: String = text
        .split_inclusive('\n')
        .enumerate()
        .filter(|(i, _)| !(first..=last).contains(&(i + 1)))
        .map(|(_, l)| l)
        .collect();
    write(path, &kept, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kdf() -> KdfParams {
        KdfParams {
            salt: vec![0xab; 16],
            m_kib: 65536,
            t: 3,
            p: 1,
        }
    }

    #[test]
    fn add_then_remove_keeps_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dfs.conf");
        let original = "# users\r\nUsername: Alice\r\nPassword: secret\r\nBob pw\r\n";
        std::fs::write(&p, original).unwrap();
        add_user(&p, "Carol", &kdf(), &[7; 32]).unwrap();
        let db = UserDb::load(&p).unwrap();
        assert_eq!(db.len(), 3);
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("\r\n"));
        assert!(matches!(
            add_user(&p, "ALICE", &kdf(), &[7; 32]),
            Err(UsersError::Duplicate { .. })
        ));
        remove_user(&p, "carol").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), original);
        remove_user(&p, "alice").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "# users\r\nBob pw\r\n"
        );
        assert!(matches!(
            remove_user(&p, "alice"),
            Err(UsersError::NotFound { .. })
        ));
    }

    #[test]
    fn add_creates_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dfs.conf");
        add_user(&p, "dave", &kdf(), &[1; 32]).unwrap();
        let db = UserDb::load(&p).unwrap();
        assert_eq!(
            db.get("DAVE").unwrap().credential.scheme().to_string(),
            "argon2id"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(matches!(
            add_user(&p, "../x", &kdf(), &[1; 32]),
            Err(UsersError::InvalidName(_))
        ));
    }
}
