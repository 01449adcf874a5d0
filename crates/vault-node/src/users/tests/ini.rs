//! The INI form of the users file: the issue's sample, every variant, every
//! refusal, and `user add` / `user remove` on an INI file.

use super::*;
use crate::users::edit::{add_user, remove_user};

/// The users-file sample of issue 9: `[credentials]` followed by
/// `Alice = SimplePassword` lines.
const ISSUE_SAMPLE: &str = "[credentials]
Alice = SimplePassword
";

#[test]
fn issue_sample() {
    let db = UserDb::parse(ISSUE_SAMPLE, "dfs.conf").unwrap();
    assert_eq!(db.len(), 1);
    let alice = db.get("alice").unwrap();
    assert_eq!(alice.name, "Alice");
    assert_eq!(alice.lines, (2, 2));
    assert!(matches!(alice.credential, Credential::Plain(_)));
    assert_eq!(
        alice.credential.md5_digest(),
        Some(md5_of("SimplePassword"))
    );
}

fn salt() -> String {
    "ab".repeat(16)
}

fn key() -> String {
    "cd".repeat(32)
}

#[test]
fn every_variant() {
    let upper = hex::encode(md5_of("Velvet77")).to_ascii_uppercase();
    let text = format!(
        "\u{feff}# users of the cluster\r\n\
         ; configparser comments too\r\n\
         \r\n\
         [ Credentials ]  ; a comment after the header\r\n\
         Alice = SimplePassword\r\n\
         bob:{upper}\r\n\
         \x20 # an indented comment is still a comment\r\n\
         EVE\t:\t two words \r\n\
         mallory=pass=word:with #signs\r\n\
         trent : 5f4dcc3b5aa765d61d8327deb882cf99\r\n\
         carol = argon2id m=65536,t=3,p=1 {} {}\r\n",
        salt(),
        key()
    );
    let db = UserDb::parse(&text, "dfs.conf").unwrap();
    assert_eq!(db.len(), 6);
    let digest = |u: &str| db.get(u).unwrap().credential.md5_digest();
    assert_eq!(digest("ALICE"), Some(md5_of("SimplePassword")));
    assert!(matches!(
        db.get("bob").unwrap().credential,
        Credential::Md5(_)
    ));
    assert_eq!(digest("bob"), Some(md5_of("Velvet77")));
    assert_eq!(db.get("eve").unwrap().name, "EVE");
    assert_eq!(digest("eve"), Some(md5_of("two words")));
    assert_eq!(digest("mallory"), Some(md5_of("pass=word:with #signs")));
    assert_eq!(digest("trent"), Some(md5_of("password")));
    match &db.get("carol").unwrap().credential {
        Credential::Argon2id { kdf, login_key } => {
            assert_eq!((kdf.m_kib, kdf.t, kdf.p), (65536, 3, 1));
            assert_eq!(kdf.salt, vec![0xab; 16]);
            assert_eq!(login_key, &[0xcd; 32]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(db.get("carol").unwrap().lines, (11, 11));
    // A header alone: no users. Indented entries at one depth are fine.
    assert!(UserDb::parse("[CREDENTIALS]\n", "f").unwrap().is_empty());
    let db = UserDb::parse("[credentials]\n  a = x\n  b = y\n", "f").unwrap();
    assert_eq!(db.len(), 2);
}

#[test]
fn semicolon_comments_and_ini_lookalikes_in_the_classic_form() {
    let db = UserDb::parse("; users\nalice pw\n  ;x\n", "f").unwrap();
    assert_eq!(db.len(), 1);
    // An INI entry without its header would otherwise be the password "= pw".
    for line in ["alice = pw\n", "alice : pw\n", "alice =pw\n"] {
        let (n, problem) = parse_err(line);
        assert_eq!(n, 1);
        assert!(
            problem.contains("looks like an INI entry"),
            "{line:?}: {problem}"
        );
        assert!(!problem.contains("pw"), "{problem}");
    }
}

#[test]
fn refusals_name_line_and_problem() {
    let s = salt();
    let k = key();
    let cases: Vec<(String, usize, &str)> = vec![
        ("[credentials\n".into(), 1, "unclosed `[` in section header"),
        (
            "[credentials] alice = x\n".into(),
            1,
            "unexpected text after the section header",
        ),
        (
            "[users]\n".into(),
            1,
            "unknown section [users] (a users file has one section, [credentials])",
        ),
        (
            "[DEFAULT]\n".into(),
            1,
            "section [DEFAULT] is not supported",
        ),
        (
            format!("{ISSUE_SAMPLE}[Credentials]\n"),
            3,
            "duplicate section [credentials] (first on line 1)",
        ),
        (
            format!("bob pw\n{ISSUE_SAMPLE}"),
            1,
            "comes before the [credentials] header (line 2)",
        ),
        (
            format!("# c\nUsername: bob\nPassword: pw\n{ISSUE_SAMPLE}"),
            2,
            "cannot be mixed with sections",
        ),
        (
            format!("{ISSUE_SAMPLE}bob SimplePassword\n"),
            3,
            "a classic `NAME PASSWORD` line cannot be mixed with INI sections",
        ),
        (
            format!("{ISSUE_SAMPLE}bob Simple:Password\n"),
            3,
            "a user name cannot contain whitespace",
        ),
        (
            format!("{ISSUE_SAMPLE}Username: bob\nPassword: pw\n"),
            3,
            "`username` is taken for a keyword, not a user name",
        ),
        (
            format!("{ISSUE_SAMPLE}password = pw\n"),
            3,
            "`password` is taken for a keyword",
        ),
        (
            format!("{ISSUE_SAMPLE}bob\n"),
            3,
            "expected `NAME = PASSWORD` or `NAME: PASSWORD`",
        ),
        (
            format!("{ISSUE_SAMPLE}= pw\n"),
            3,
            "missing user name before `=`",
        ),
        (format!("{ISSUE_SAMPLE}bob =\n"), 3, "empty password"),
        (format!("{ISSUE_SAMPLE}bob:   \n"), 3, "empty password"),
        (
            format!("{ISSUE_SAMPLE}ALICE = other\n"),
            3,
            "user alice is already defined on line 2",
        ),
        (format!("{ISSUE_SAMPLE}../x = pw\n"), 3, "invalid user name"),
        (
            format!("{ISSUE_SAMPLE}  bob = pw\n"),
            3,
            "continuation lines are not supported: this indented line would continue the \
             value on line 2",
        ),
        (
            "[credentials]\nalice = Simple\n\n# c\n\tPassword\n".into(),
            5,
            "continuation lines are not supported",
        ),
        (
            "[credentials]\nalice =\n  SimplePassword\n".into(),
            3,
            "would continue the value on line 2",
        ),
        (
            format!("[credentials]\nc = argon2id m=1,t=1 {s} {k}\n"),
            2,
            "need m, t and p",
        ),
        (
            format!("[credentials]\nc = argon2id m=1,t=1,p=1 {s}\n"),
            2,
            "expected `NAME argon2id",
        ),
        (
            format!("[credentials]\nc: argon2id m=1,t=1,p=1 zz {k}\n"),
            2,
            "not hex",
        ),
    ];
    for (text, line, needle) in cases {
        let (l, problem) = parse_err(&text);
        assert_eq!(l, line, "{text:?}: {problem}");
        assert!(problem.contains(needle), "{text:?}: {problem}");
    }
}

#[test]
fn errors_never_quote_a_password() {
    for text in [
        "[credentials]\nalice TopSecret1\n",
        "[credentials]\nalice Top:Secret1\n",
        "[credentials]\nalice TopSecret1 = x\n",
        "[credentials]\nalice = x\n  TopSecret1\n",
        "[credentials]\npassword = TopSecret1\n",
        "[credentials]\nusername: TopSecret1\n",
        "alice TopSecret1\n[credentials]\n",
        "Password: TopSecret1\n[credentials]\n",
        "[TopSecret1\n",
        "[credentials] TopSecret1\n",
        "[credentials]\n../x = TopSecret1\n",
        "[credentials]\nalice = TopSecret1\nAlice = TopSecret1\n",
        "[credentials]\nalice = argon2id TopSecret1\n",
    ] {
        let (_, problem) = parse_err(text);
        assert!(!problem.contains("TopSecret1"), "{text:?}: {problem}");
    }
}

#[test]
fn hostile_ini_input_never_panics() {
    for s in [
        "[",
        "[]]",
        "[\u{0}]",
        "[é]\n",
        "[credentials]\n=",
        "[credentials]\n:\n",
        "[credentials]\né = ü",
        "[credentials]\na=\u{feff}",
        "\u{feff}[credentials]\n\u{feff}a=x",
        "[credentials]\r\n\t\r\n \t x",
    ] {
        let _ = UserDb::parse(s, "f");
        let _ = UserDb::parse(&format!("{ISSUE_SAMPLE}{s}"), "f");
        let _ = UserDb::parse(&format!("{s}\n{ISSUE_SAMPLE}"), "f");
    }
    let (_, problem) = parse_err(&format!("[{}]\n", "x".repeat(10_000)));
    assert!(problem.len() < 200, "{problem}");
}

fn kdf() -> wire::KdfParams {
    wire::KdfParams {
        salt: vec![0xab; 16],
        m_kib: 65536,
        t: 3,
        p: 1,
    }
}

#[test]
fn add_and_remove_keep_the_ini_form() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dfs.conf");
    // CRLF, a BOM, `:` with no space before it, indented entries, a tab.
    let original = "\u{feff}; users\r\n[credentials]\r\n  Alice: SimplePassword\r\n  bob:\tpw\r\n";
    std::fs::write(&p, original).unwrap();
    add_user(&p, "Carol", &kdf(), &[7; 32]).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    let line = format!(
        "  Carol:\targon2id m=65536,t=3,p=1 {} {}\r\n",
        salt(),
        "07".repeat(32)
    );
    assert_eq!(text, format!("{original}{line}"));
    let db = UserDb::load(&p).unwrap();
    assert_eq!(db.len(), 3);
    assert_eq!(
        db.get("carol").unwrap().credential.scheme(),
        SchemeName::Argon2id
    );
    assert_eq!(db.get("carol").unwrap().lines, (5, 5));
    assert!(matches!(
        add_user(&p, "ALICE", &kdf(), &[7; 32]),
        Err(UsersError::Duplicate { .. })
    ));
    remove_user(&p, "CAROL").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), original);
    remove_user(&p, "alice").unwrap();
    remove_user(&p, "bob").unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "\u{feff}; users\r\n[credentials]\r\n"
    );
    assert!(UserDb::load(&p).unwrap().is_empty());
    // The header alone: the first entry gets ` = `, on its own line even
    // when the file had no final line end.
    std::fs::write(&p, "[credentials]").unwrap();
    add_user(&p, "dave", &kdf(), &[1; 32]).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert_eq!(
        text,
        format!(
            "[credentials]\ndave = argon2id m=65536,t=3,p=1 {} {}\n",
            salt(),
            "01".repeat(32)
        )
    );
    // The issue's sample.
    std::fs::write(&p, ISSUE_SAMPLE).unwrap();
    add_user(&p, "erin", &kdf(), &[2; 32]).unwrap();
    let db = UserDb::load(&p).unwrap();
    assert_eq!(db.len(), 2);
    assert!(std::fs::read_to_string(&p)
        .unwrap()
        .starts_with(&format!("{ISSUE_SAMPLE}erin = argon2id ")));
    remove_user(&p, "erin").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), ISSUE_SAMPLE);
}

#[test]
fn add_refuses_a_broken_ini_file_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dfs.conf");
    let broken = "[credentials]\nalice = x\nbob pw\n";
    std::fs::write(&p, broken).unwrap();
    let e = add_user(&p, "carol", &kdf(), &[7; 32]).unwrap_err();
    assert!(matches!(e, UsersError::Parse { line: 3, .. }), "{e}");
    let e = remove_user(&p, "alice").unwrap_err();
    assert!(matches!(e, UsersError::Parse { line: 3, .. }), "{e}");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), broken);
}
