use super::*;

mod ini;

fn md5_of(s: &str) -> [u8; 16] {
    Md5::digest(s.as_bytes()).into()
}

#[test]
fn every_legacy_form() {
    let text = "\u{feff}# demo users\r\n\
                Username: Alice\r\n\
                Password: 0123456789abcdef0123456789ABCDEF\r\n\
                \r\n\
                username:Bob\r\n\
                password:Velvet77\r\n\
                  USERNAME :  Eve  \n\
                PASSWORD : two words\n\
                Mallory SimplePassword\n\
                trent pass with spaces\n";
    let db = UserDb::parse(text, "dfs.conf").unwrap();
    assert_eq!(db.len(), 5);
    let alice = db.get("ALICE").unwrap();
    assert_eq!(alice.name, "Alice");
    assert_eq!(alice.lines, (2, 3));
    assert!(matches!(alice.credential, Credential::Md5(_)));
    let bob = db.get("bob").unwrap();
    assert_eq!(bob.credential.md5_digest(), Some(md5_of("Velvet77")));
    assert_eq!(
        db.get("eve").unwrap().credential.md5_digest(),
        Some(md5_of("two words"))
    );
    assert_eq!(
        db.get("mallory").unwrap().credential.md5_digest(),
        Some(md5_of("SimplePassword"))
    );
    assert_eq!(
        db.get("Trent").unwrap().credential.md5_digest(),
        Some(md5_of("pass with spaces"))
    );
    assert!(db.get("nobody").is_none());
}

#[test]
fn passwords_are_case_sensitive() {
    let db = UserDb::parse("alice Secret\n", "f").unwrap();
    let d = db.get("alice").unwrap().credential.md5_digest().unwrap();
    assert_eq!(d, md5_of("Secret"));
    assert_ne!(d, md5_of("secret"));
}

#[test]
fn upgraded_form() {
    let line = format!(
        "carol argon2id m=65536,t=3,p=1 {} {}\n",
        "ab".repeat(16),
        "cd".repeat(32)
    );
    let db = UserDb::parse(&line, "f").unwrap();
    match &db.get("carol").unwrap().credential {
        Credential::Argon2id { kdf, login_key } => {
            assert_eq!((kdf.m_kib, kdf.t, kdf.p), (65536, 3, 1));
            assert_eq!(kdf.salt, vec![0xab; 16]);
            assert_eq!(login_key, &[0xcd; 32]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(db.get("carol").unwrap().credential.md5_digest(), None);
}

fn parse_err(text: &str) -> (usize, String) {
    match UserDb::parse(text, "users.conf") {
        Err(UsersError::Parse {
            file,
            line,
            problem,
        }) => {
            assert_eq!(file, "users.conf");
            let shown = UsersError::Parse {
                file,
                line,
                problem: problem.clone(),
            }
            .to_string();
            assert!(
                shown.starts_with(&format!("users.conf:{line}: ")),
                "{shown}"
            );
            (line, problem)
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn errors_name_line_and_problem() {
    let salt = "ab".repeat(16);
    let key = "cd".repeat(32);
    let cases: Vec<(String, usize, &str)> = vec![
        ("# c\nPassword: x\n".into(), 2, "without a username"),
        (
            "Username: a\n\nUsername: b\nPassword: x\n".into(),
            1,
            "without a password",
        ),
        ("Username: a\n".into(), 1, "without a password"),
        ("Username: a\nbob pw\n".into(), 1, "without a password"),
        ("Username: a\nPassword:\n".into(), 2, "empty password"),
        ("Username:\n".into(), 1, "empty user name"),
        ("\nloner\n".into(), 2, "expected"),
        ("../etc pw\n".into(), 1, "invalid user name"),
        ("a pw\nA other\n".into(), 2, "already defined on line 1"),
        (
            format!("c argon2id m=1,t=1 {salt} {key}\n"),
            1,
            "need m, t and p",
        ),
        (
            format!("c argon2id m=x,t=1,p=1 {salt} {key}\n"),
            1,
            "bad argon2id cost",
        ),
        (format!("c argon2id m=1,t=1,p=1 zz {key}\n"), 1, "not hex"),
        (
            format!("c argon2id m=1,t=1,p=1 abcd {key}\n"),
            1,
            "salt must be",
        ),
        (
            format!("c argon2id m=1,t=1,p=1 {salt} abcd\n"),
            1,
            "login key",
        ),
        (
            format!("c argon2id m=1,t=1,p=1 {salt}\n"),
            1,
            "expected `NAME argon2id",
        ),
    ];
    for (text, line, needle) in cases {
        let (l, problem) = parse_err(&text);
        assert_eq!(l, line, "{text:?}: {problem}");
        assert!(problem.contains(needle), "{text:?}: {problem}");
    }
}

#[test]
fn errors_and_debug_never_show_passwords() {
    let (_, problem) = parse_err("Username: ../bad\nPassword: TopSecret1\n");
    assert!(!problem.contains("TopSecret1"));
    let db = UserDb::parse("alice TopSecret1\n", "f").unwrap();
    assert!(!format!("{db:?}").contains("TopSecret1"));
}

#[test]
fn load_names_the_file() {
    let err = UserDb::load(Path::new("/nonexistent/dfs.conf")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/dfs.conf"));
}

/// Every `dfs.conf` form README.md's "Coming from the classic dfs/dfc"
/// lists loads, and every user in it has the password `SimplePassword`.
#[test]
fn readme_classic_forms_load() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let (_, section) = readme
        .split_once("\n## Coming from the classic dfs/dfc\n")
        .expect("README.md has a \"Coming from the classic dfs/dfc\" section");
    let mut lines = section
        .lines()
        .skip_while(|l| *l != "### `dfs.conf`")
        .skip(1);
    let mut samples = Vec::new();
    while let Some(line) = lines.next() {
        if line.starts_with('#') {
            break;
        }
        if line.starts_with("```") {
            let block: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            samples.push(block.join("\n") + "\n");
        }
    }
    assert_eq!(samples.len(), 4, "pairs, NAME PASSWORD, lower case, INI");
    for sample in samples {
        let db = UserDb::parse(&sample, "README.md").unwrap_or_else(|e| panic!("{e}\n{sample}"));
        assert!(db.get("alice").is_some(), "{sample}");
        for entry in db.iter() {
            assert_eq!(
                entry.credential.md5_digest(),
                Some(md5_of("SimplePassword")),
                "{sample}"
            );
        }
    }
}
