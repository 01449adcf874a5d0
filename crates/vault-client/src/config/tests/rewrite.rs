//! [`rewrite_password`]: the form kept, every other byte kept, no temporary
//! file left, permissions kept, symlinks followed.

use super::*;

fn rewrite(original: &[u8], new: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dfc.conf");
    fs::write(&path, original).unwrap();
    rewrite_password(&path, new).unwrap();
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("dfc.conf")],
        "no temp file left"
    );
    fs::read(&path).unwrap()
}

const CRLF_FILE: &str = "\u{feff}# my cluster\r\n\
                         \r\n\
                         Server DFS1 127.0.0.1:10001\r\n\
                         Server DFS2 127.0.0.1 10002 # second\r\n\
                         server dfs3 [::1]:10003\r\n\
                         Server DFS4 ::1 10004\r\n\
                         # credentials\r\n\
                         username:alice\r\n\
                         PASSWORD:\t OLDVALUE  \r\n\
                         # end\r\n";

#[test]
fn rewrite_plain_keeps_every_other_byte() {
    let original = CRLF_FILE.replace("OLDVALUE", "old secret");
    let got = rewrite(original.as_bytes(), "New: pass #1");
    let expected = CRLF_FILE.replace("OLDVALUE", "New: pass #1");
    assert_eq!(String::from_utf8(got).unwrap(), expected);

    // LF, no final newline, no space after the colon.
    let original = CLASSIC.replace("Password: SimplePassword\n", "Password:abc");
    let got = rewrite(original.as_bytes(), "xyz");
    assert_eq!(
        got,
        CLASSIC
            .replace("Password: SimplePassword\n", "Password:xyz")
            .as_bytes()
    );
    let cfg = parse(std::str::from_utf8(&got).unwrap()).unwrap();
    assert!(cfg.password.unwrap().matches("xyz"));
}

#[test]
fn rewrite_md5_keeps_form_and_case() {
    let old = md5_hex(b"old");
    let new = md5_hex(b"Crimson33");
    // Lower-case digest.
    let got = rewrite(CRLF_FILE.replace("OLDVALUE", &old).as_bytes(), "Crimson33");
    assert_eq!(got, CRLF_FILE.replace("OLDVALUE", &new).as_bytes());
    // Upper-case digest stays upper-case.
    let got = rewrite(
        CRLF_FILE
            .replace("OLDVALUE", &old.to_ascii_uppercase())
            .as_bytes(),
        "Crimson33",
    );
    assert_eq!(
        got,
        CRLF_FILE
            .replace("OLDVALUE", &new.to_ascii_uppercase())
            .as_bytes()
    );
    let cfg = parse(std::str::from_utf8(&got).unwrap()).unwrap();
    assert!(cfg.password.unwrap().matches("Crimson33"));
    // A digest can store any password, even one that is itself 32 hex digits.
    let got = rewrite(CLASSIC.replace("SimplePassword", &old).as_bytes(), &old);
    assert_eq!(
        got,
        CLASSIC
            .replace("SimplePassword", &md5_hex(old.as_bytes()))
            .as_bytes()
    );
}

#[test]
fn rewrite_without_password_line_changes_nothing() {
    let original = CRLF_FILE.replace("PASSWORD:\t OLDVALUE  \r\n", "");
    let got = rewrite(original.as_bytes(), "whatever");
    assert_eq!(got, original.as_bytes());
}

#[test]
fn rewrite_refuses_unstorable_plain_passwords_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dfc.conf");
    fs::write(&path, CLASSIC).unwrap();
    for bad in ["", " lead", "trail ", "two\nlines", "cr\r", &md5_hex(b"x")] {
        let e = rewrite_password(&path, bad).unwrap_err();
        assert!(
            matches!(e, ConfigError::UnstorablePassword { .. }),
            "{bad:?}: {e}"
        );
        assert!(plain_password_problem(bad).is_some());
    }
    assert_eq!(fs::read(&path).unwrap(), CLASSIC.as_bytes());
    assert!(plain_password_problem("fine pass: #1").is_none());

    fs::write(&path, "Server DFS1\n").unwrap();
    let e = rewrite_password(&path, "new").unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { line: 1, .. }), "{e}");
    let e = rewrite_password(&dir.path().join("missing"), "new").unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }), "{e}");
}

#[cfg(unix)]
#[test]
fn rewrite_keeps_permissions_and_follows_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dfc.conf");
    fs::write(&path, CLASSIC).unwrap();
    for mode in [0o600, 0o640, 0o644] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        rewrite_password(&path, &format!("pw{mode}")).unwrap();
        let got = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(got, mode);
    }
    let link = dir.path().join("link.conf");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    rewrite_password(&link, "via-link").unwrap();
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(ClientConfig::load(&path)
        .unwrap()
        .password
        .unwrap()
        .matches("via-link"));
}

/// An INI file with every variant around the password: BOM, CRLF, `;`
/// comments, upper-case names, `:` and a tab around the value, other sections
/// after it, no final line end.
const INI_FILE: &str = "\u{feff}; my cluster\r\n\
                        [server_list]\r\n\
                        DFS1 = 127.0.0.1:10001\r\n\
                        DFS2=127.0.0.1:10002\r\n\
                        DFS3: [::1]:10003\r\n\
                        DFS4 = ::1 10004\r\n\
                        \r\n\
                        [CREDENTIALS]\r\n\
                        username = alice\r\n\
                        # the password follows\r\n\
                        PASSWORD:\t OLDVALUE  \r\n\
                        [tls]\r\n\
                        ca = certs/ca.pem\r\n\
                        ; end";

#[test]
fn rewrite_ini_keeps_every_other_byte() {
    // Plain text stays plain text.
    let got = rewrite(
        INI_FILE.replace("OLDVALUE", "old=secret").as_bytes(),
        "New: p=ss #1",
    );
    assert_eq!(
        String::from_utf8(got).unwrap(),
        INI_FILE.replace("OLDVALUE", "New: p=ss #1")
    );
    // A digest becomes the new digest, in the old digest's case.
    let old = md5_hex(b"old");
    let new = md5_hex(b"Crimson33");
    for (was, becomes) in [
        (old.clone(), new.clone()),
        (old.to_ascii_uppercase(), new.to_ascii_uppercase()),
    ] {
        let got = rewrite(INI_FILE.replace("OLDVALUE", &was).as_bytes(), "Crimson33");
        assert_eq!(got, INI_FILE.replace("OLDVALUE", &becomes).as_bytes());
        let cfg = parse(std::str::from_utf8(&got).unwrap()).unwrap();
        assert!(cfg.password.unwrap().matches("Crimson33"));
    }
    // The issue's sample, `=` with spaces, LF.
    let sample = "[server_list]\nDFS1 = 127.0.0.1:10001\nDFS2 = 127.0.0.1:10002\n\
                  DFS3 = 127.0.0.1:10003\nDFS4 = 127.0.0.1:10004\n\n\
                  [credentials]\nusername = Alice\npassword = SimplePassword\n";
    let got = rewrite(sample.as_bytes(), "Lapis-4");
    assert_eq!(got, sample.replace("SimplePassword", "Lapis-4").as_bytes());
}

#[test]
fn rewrite_ini_without_password_changes_nothing_and_refuses_bad_files() {
    let original = INI_FILE.replace("PASSWORD:\t OLDVALUE  \r\n", "");
    let got = rewrite(original.as_bytes(), "whatever");
    assert_eq!(got, original.as_bytes());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dfc.conf");
    let mixed = format!(
        "{}\r\nServer DFS5 h:5\r\n",
        INI_FILE.replace("OLDVALUE", "old")
    );
    fs::write(&path, &mixed).unwrap();
    let e = rewrite_password(&path, "new").unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { line: 15, .. }), "{e}");
    assert_eq!(fs::read(&path).unwrap(), mixed.as_bytes());
    // A plain password that would not read back is refused before writing.
    let plain = INI_FILE.replace("OLDVALUE", "old");
    fs::write(&path, &plain).unwrap();
    let e = rewrite_password(&path, " lead").unwrap_err();
    assert!(matches!(e, ConfigError::UnstorablePassword { .. }), "{e}");
    assert_eq!(fs::read(&path).unwrap(), plain.as_bytes());
}

/// Six servers and a `Redundancy` line (INI: `[layout]`): the rewrite reads
/// them and keeps them byte for byte.
#[test]
fn rewrite_keeps_many_servers_and_the_redundancy_line() {
    let classic = "Server DFS1 127.0.0.1:10001\r\n\
                   Server DFS2 127.0.0.1:10002\r\n\
                   Server DFS3 127.0.0.1:10003\r\n\
                   Server DFS4 127.0.0.1:10004\r\n\
                   Server DFS5 127.0.0.1:10005\r\n\
                   Server DFS6 127.0.0.1:10006\r\n\
                   Redundancy: RS 4 + 2 # six nodes\r\n\
                   Username: alice\r\n\
                   Password: OLDVALUE\r\n";
    let ini = "[server_list]\n\
               DFS1 = 127.0.0.1:10001\n\
               DFS2 = 127.0.0.1:10002\n\
               DFS3 = 127.0.0.1:10003\n\
               DFS4 = 127.0.0.1:10004\n\
               DFS5 = 127.0.0.1:10005\n\
               DFS6 = 127.0.0.1:10006\n\
               [layout]\n\
               redundancy = rs 3+3\n\
               [credentials]\n\
               username = alice\n\
               password = OLDVALUE\n";
    for (file, scheme) in [(classic, (4, 2)), (ini, (3, 3))] {
        let got = rewrite(file.replace("OLDVALUE", "old").as_bytes(), "Lapis-4");
        assert_eq!(got, file.replace("OLDVALUE", "Lapis-4").as_bytes());
        let cfg = parse(std::str::from_utf8(&got).unwrap()).unwrap();
        assert!(cfg.password.unwrap().matches("Lapis-4"));
        assert_eq!(cfg.servers.len(), 6);
        assert_eq!(
            cfg.redundancy,
            Redundancy::Rs(crate::erasure::Scheme::new(scheme.0, scheme.1).unwrap())
        );
    }
    // A file whose `Redundancy` line does not fit is refused, untouched.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dfc.conf");
    let bad = classic.replace("RS 4 + 2", "classic");
    fs::write(&path, &bad).unwrap();
    let e = rewrite_password(&path, "new").unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { line: 7, .. }), "{e}");
    assert_eq!(fs::read(&path).unwrap(), bad.as_bytes());
}
