//! The INI form: the issue's sample as written, every variant, and every
//! refusal with its file, line and problem.

use super::*;

/// The `dfc.conf` sample of issue 9, exactly as given.
const ISSUE_SAMPLE: &str = "[server_list]
DFS1 = 127.0.0.1:10001
DFS2 = 127.0.0.1:10002
DFS3 = 127.0.0.1:10003
DFS4 = 127.0.0.1:10004

[credentials]
username = Alice
password = SimplePassword
";

#[test]
fn issue_sample() {
    let cfg = parse(ISSUE_SAMPLE).unwrap();
    assert_eq!(
        servers(&cfg),
        (1..=4)
            .map(|i| (
                format!("DFS{i}"),
                "127.0.0.1".to_owned(),
                10000 + i as u16,
                i + 1
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(cfg.username, "Alice");
    assert_eq!(plain_password(&cfg), "SimplePassword");
    assert!(cfg.ca.is_none());
    // Same result as the classic form of the same settings.
    let classic = parse(CLASSIC).unwrap();
    assert_eq!(addresses(&cfg), addresses(&classic));
}

#[test]
fn every_variant_with_crlf_bom_comments_and_case() {
    let digest = md5_hex(b"Crimson33").to_ascii_uppercase();
    let text = format!(
        "\u{feff}# written by dfc.py\r\n\
         ; configparser comments too\r\n\
         \r\n\
         [SERVER_LIST]\r\n\
         dfs1=127.0.0.1:10001\r\n\
         DFS2 : 127.0.0.1 10002\r\n\
         \x20 # an indented comment is still a comment\r\n\
         DFS3:\t[::1]:10003\r\n\
         DFS4   =   fe80::1 10004   # trailing comment\r\n\
         \r\n\
         [ Credentials ]   ; a comment after the header\r\n\
         USERNAME: alice\r\n\
         Password={digest}\r\n\
         [TLS]\r\n\
         CA = ../shared certs/ca.pem\r\n"
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(
        servers(&cfg),
        vec![
            ("dfs1".into(), "127.0.0.1".into(), 10001, 5),
            ("DFS2".into(), "127.0.0.1".into(), 10002, 6),
            ("DFS3".into(), "::1".into(), 10003, 8),
            ("DFS4".into(), "fe80::1".into(), 10004, 9),
        ]
    );
    assert_eq!(cfg.username, "alice");
    let password = cfg.password.as_ref().unwrap();
    assert!(matches!(password, PasswordSetting::Md5(_)));
    assert!(password.matches("Crimson33"));
    assert_eq!(
        cfg.ca.as_deref(),
        Some(Path::new("/home/alice/.vault/../shared certs/ca.pem"))
    );
}

/// The issue's sample with line `n` (1-based) replaced.
fn sample_with(n: usize, line: &str) -> String {
    ISSUE_SAMPLE
        .lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == n { line } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn separators_spaces_and_address_forms() {
    for (line, name, host, port) in [
        ("DFS1 = 127.0.0.1:10001", "DFS1", "127.0.0.1", 10001),
        ("DFS1=127.0.0.1:10001", "DFS1", "127.0.0.1", 10001),
        ("DFS1: 127.0.0.1:10001", "DFS1", "127.0.0.1", 10001),
        ("DFS1:127.0.0.1:10001", "DFS1", "127.0.0.1", 10001),
        ("DFS1 :127.0.0.1 10001", "DFS1", "127.0.0.1", 10001),
        ("\tDFS1\t=\tlocalhost:10001\t", "DFS1", "localhost", 10001),
        ("dfs1 = [::1]:10001", "dfs1", "::1", 10001),
        ("DFS1 = [fe80::1] 65535", "DFS1", "fe80::1", 65535),
        ("DFS1 = ::1 1", "DFS1", "::1", 1),
        (
            "node-a = node1.example:10001",
            "node-a",
            "node1.example",
            10001,
        ),
    ] {
        let cfg = parse(&sample_with(2, line)).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(cfg.servers[0].name, name, "{line}");
        assert_eq!(cfg.servers[0].host, host, "{line}");
        assert_eq!(cfg.servers[0].port, port, "{line}");
    }
    for (user_line, pass_line, user, pass) in [
        ("username=Bob", "password=x", "Bob", "x"),
        ("Username: Bob", "Password: a b c", "Bob", "a b c"),
        (
            "USERNAME :Bob",
            "PASSWORD\t=\t pass=word:with #signs ; too ",
            "Bob",
            "pass=word:with #signs ; too",
        ),
        (
            "username = Bob # a comment",
            "password = [brackets]",
            "Bob",
            "[brackets]",
        ),
    ] {
        let text = sample_with(8, user_line);
        let text = text.replace("password = SimplePassword", pass_line);
        let cfg = parse(&text).unwrap_or_else(|e| panic!("{user_line}: {e}"));
        assert_eq!(cfg.username, user);
        assert_eq!(plain_password(&cfg), pass);
    }
}

#[test]
fn optional_parts() {
    // No password: asked for later.
    let cfg = parse(&ISSUE_SAMPLE.replace("password = SimplePassword\n", "")).unwrap();
    assert!(cfg.password.is_none());
    // Sections in any order, no final newline, a lower-case digest.
    let digest = md5_hex(b"pw");
    let text = format!(
        "[tls]\nca = /etc/vault/ca.pem\n[credentials]\nusername = a\npassword = {digest}\n\
         [server_list]\nA = h:1\nB = h:2\nC = h:3\nD = h:4"
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.default_ca_path(), Path::new("/etc/vault/ca.pem"));
    assert!(cfg.password.unwrap().matches("pw"));
    assert_eq!(cfg.servers[3].line, 10);
    // An indented first entry is not a continuation; entries at its depth
    // follow it.
    let text = ISSUE_SAMPLE.replace("\nDFS", "\n  DFS");
    assert_eq!(parse(&text).unwrap().servers.len(), 4);
}

#[test]
fn refusals_name_file_line_and_problem() {
    for (n, line, expected) in [
        (
            1,
            "[server_list",
            "unclosed `[` in section header",
        ),
        (1, "[server_list] DFS1", "unexpected text after the section header"),
        (1, "[]", "empty section name"),
        (
            7,
            "[settings]",
            "unknown section `[settings]` (expected [server_list], [credentials], [tls] or [layout])",
        ),
        (7, "[DEFAULT]", "section `[DEFAULT]` is not supported"),
        (7, "[Server_List]", "duplicate section [server_list] (first on line 1)"),
        (
            2,
            "Server DFS1 127.0.0.1:10001",
            "a classic `Server` line cannot be mixed with INI sections; in [server_list] write `DFS1 = HOST:PORT`",
        ),
        (
            2,
            "Server DFS1 127.0.0.1 10001",
            "a classic `Server` line cannot be mixed",
        ),
        (
            8,
            "Username Alice",
            "a classic `Username:` line cannot be mixed with INI sections; in [credentials] write",
        ),
        (2, "DFS1", "expected `KEY = VALUE` or `KEY: VALUE` (in [server_list]: `DFS1 = HOST:PORT`)"),
        (2, "node one = h:1", "a key cannot contain whitespace"),
        (2, "= 127.0.0.1:10001", "missing key before `=`"),
        (2, ": 127.0.0.1:10001", "missing key before `:`"),
        (2, "DFS1 =", "missing address for server `DFS1`"),
        (2, "DFS1 = 127.0.0.1", "missing port in address `127.0.0.1`"),
        (2, "DFS1 = 127.0.0.1:0", "bad port `0` for server `DFS1`"),
        (2, "DFS1 = [::1:10001", "unclosed `[`"),
        (3, "dfs1 = h:2", "duplicate server name `dfs1` (already on line 2)"),
        (8, "user = Alice", "unknown key `user` in [credentials] (expected username or password)"),
        (8, "username =", "missing username after `username`"),
        (8, "username = Alice Smith", "a username cannot contain whitespace"),
        (9, "password =   ", "missing password after `password`"),
        (9, "ca = certs/ca.pem", "`ca` belongs in a [tls] section"),
    ] {
        let msg = err(&sample_with(n, line));
        let prefix = format!("{P}:{n}: ");
        assert!(msg.starts_with(&prefix), "{line}: {msg}");
        assert!(msg.contains(expected), "{line}: {msg}");
    }
    let msg = err(&format!("{ISSUE_SAMPLE}[tls]\nkey = x\n"));
    assert_eq!(
        msg,
        format!("{P}:11: unknown key `key` in [tls] (expected ca)")
    );
    let msg = err(&format!("{ISSUE_SAMPLE}[tls]\nca =\n"));
    assert_eq!(msg, format!("{P}:11: missing path after `ca`"));
    let msg = err(&format!("{ISSUE_SAMPLE}[tls]\nca = a\nCA: b\n"));
    assert_eq!(
        msg,
        format!("{P}:12: duplicate `ca` line (first on line 11)")
    );
    let msg = err(&format!("{ISSUE_SAMPLE}[tls]\nCA certs/ca.pem\n"));
    assert_eq!(
        msg,
        format!("{P}:11: a classic `CA` line cannot be mixed with INI sections; in [tls] write `ca = PATH`")
    );
    let msg = err(&format!("{ISSUE_SAMPLE}Username: bob\n"));
    assert_eq!(
        msg,
        format!("{P}:10: duplicate `username` line (first on line 8)")
    );
    let msg = err(&format!("{ISSUE_SAMPLE}password: other\n"));
    assert_eq!(
        msg,
        format!("{P}:10: duplicate `password` line (first on line 9)")
    );
}

#[test]
fn mixed_files_are_refused() {
    // Classic lines first, then a section.
    let text = format!("{CLASSIC}[tls]\nca = certs/ca.pem\n");
    let msg = err(&text);
    assert!(
        msg.starts_with(&format!(
            "{P}:1: this line comes before the first [section] header (line 7)"
        )),
        "{msg}"
    );
    assert!(msg.contains("cannot be mixed with sections"), "{msg}");
    // An INI line before any header.
    let msg = err(&format!("DFS0 = h:1\n{ISSUE_SAMPLE}"));
    assert!(
        msg.starts_with(&format!(
            "{P}:1: this line comes before the first [section] header (line 2)"
        )),
        "{msg}"
    );
    // Classic lines after the sections.
    let msg = err(&format!("{ISSUE_SAMPLE}Server DFS5 h:5\n"));
    assert!(
        msg.starts_with(&format!("{P}:10: a classic `Server` line")),
        "{msg}"
    );
}

#[test]
fn continuation_lines_are_refused() {
    for (text, line, entry) in [
        (
            ISSUE_SAMPLE.replace("SimplePassword\n", "Simple\n  Password\n"),
            10,
            9,
        ),
        (
            ISSUE_SAMPLE.replace("SimplePassword\n", "Simple\n\n# c\n\tPassword\n"),
            12,
            9,
        ),
        (
            ISSUE_SAMPLE.replace("DFS2 = 127.0.0.1:10002\n", "DFS2 =\n  127.0.0.1:10002\n"),
            4,
            3,
        ),
        (
            ISSUE_SAMPLE.replace("\n[credentials]", "\n [credentials]"),
            7,
            5,
        ),
        (
            ISSUE_SAMPLE
                .replace("\nDFS", "\n  DFS")
                .replace("DFS4", "   DFS4"),
            5,
            4,
        ),
    ] {
        let msg = err(&text);
        assert_eq!(
            msg,
            format!(
                "{P}:{line}: continuation lines are not supported: this indented line would \
                 continue the value on line {entry}; write every value on one line"
            ),
            "{text}"
        );
    }
}

#[test]
fn server_count_and_missing_parts() {
    // Three entries are enough now; two are not.
    let three = ISSUE_SAMPLE.replace("DFS4 = 127.0.0.1:10004\n", "");
    assert_eq!(parse(&three).unwrap().servers.len(), 3);
    let two = three.replace("DFS3 = 127.0.0.1:10003\n", "");
    let e = parse(&two).unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { line: 1, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("{P}:1: at least 3 servers are needed in [server_list] (one per node), found 2")
    );
    // Five and six are accepted now (the limit is 64, see
    // tests/redundancy.rs).
    let six = ISSUE_SAMPLE.replace("\n\n", "\nDFS5 = h:5\nDFS6 = h:6\n\n");
    assert_eq!(parse(&six).unwrap().servers.len(), 6);
    let e = parse("[server_list]\n").unwrap_err();
    assert!(e.to_string().ends_with("found 0"), "{e}");
    let e = parse("[credentials]\nusername = a\n").unwrap_err();
    assert!(matches!(e, ConfigError::Missing { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("{P}: missing [server_list] section"));
    let e = parse(&ISSUE_SAMPLE.replace("username = Alice\n", "")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{P}: missing `username` in [credentials]")
    );
}

#[test]
fn errors_never_quote_a_password() {
    let secret = "TopSecret1";
    for (n, line) in [
        (9, "password TopSecret1"),
        (9, "password TopSecret1 = x"),
        (9, "pass word = TopSecret1"),
        (9, "passwd = TopSecret1"),
        (10, "  TopSecret1"),
        (1, "Password: TopSecret1"),
        (1, "[TopSecret1"),
        (1, "[server_list] TopSecret1"),
    ] {
        let text = if n == 10 {
            ISSUE_SAMPLE.replace("SimplePassword\n", &format!("SimplePassword\n{line}\n"))
        } else {
            sample_with(n, line)
        };
        let msg = err(&text);
        assert!(msg.starts_with(&format!("{P}:{n}: ")), "{line}: {msg}");
        // "passwd" is quoted as an unknown key, which is a key, not a value.
        assert!(!msg.contains(secret), "{line}: {msg}");
    }
}

#[test]
fn hostile_ini_input_never_panics() {
    for s in [
        "[",
        "[]]",
        "[\u{0}]",
        "[é]\n",
        "[server_list]\n=",
        "[server_list]\n:\n",
        "[server_list]\né = ü:ö",
        "[credentials]\npassword=\u{feff}",
        "\u{feff}[tls]\n\u{feff}ca=x",
        "[server_list]\r\n\t\r\n \t x",
    ] {
        let _ = parse(s);
        let _ = parse(&format!("{ISSUE_SAMPLE}{s}"));
        let _ = parse(&format!("{s}\n{ISSUE_SAMPLE}"));
    }
    let msg = err(&format!("[{}]\n", "x".repeat(10_000)));
    assert!(msg.len() < 250, "{msg}");
}

/// The INI sample in this module's documentation, parsed as written.
#[test]
fn module_doc_ini_sample_parses_to_what_it_shows() {
    let doc: Vec<&str> = include_str!("../mod.rs")
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = doc
        .iter()
        .position(|l| *l == "```ini")
        .expect("an ini sample");
    let sample = fenced_block(doc[start..].iter().copied());
    let cfg = parse(&sample).unwrap_or_else(|e| panic!("{e}\n{sample}"));
    assert_eq!(
        addresses(&cfg),
        vec![
            ("DFS1", "127.0.0.1", 10001),
            ("DFS2", "127.0.0.1", 10002),
            ("dfs3", "::1", 10003),
            ("DFS4", "::1", 10004),
        ]
    );
    assert_eq!(cfg.username, "Alice");
    assert_eq!(plain_password(&cfg), "Crimson33");
    assert_eq!(
        cfg.ca.as_deref(),
        Some(Path::new("/home/alice/.vault/certs/ca.pem"))
    );
    assert_eq!(cfg.redundancy, Redundancy::Classic);
}
