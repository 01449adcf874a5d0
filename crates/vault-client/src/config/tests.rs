//! The parser tests, and the `dfc.conf` samples of README.md and of this
//! module's documentation parsed as written. The rewrite's tests are in
//! `tests/rewrite.rs`, the number of servers and the `Redundancy` line in
//! `tests/redundancy.rs`.

use super::*;

mod ini;
mod redundancy;
mod rewrite;

const P: &str = "/home/alice/.vault/dfc.conf";

fn parse(text: &str) -> Result<ClientConfig, ConfigError> {
    ClientConfig::parse(text, Path::new(P))
}

fn servers(cfg: &ClientConfig) -> Vec<(String, String, u16, usize)> {
    cfg.servers
        .iter()
        .map(|s| (s.name.clone(), s.host.clone(), s.port, s.line))
        .collect()
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

const CLASSIC: &str = "Server DFS1 127.0.0.1:10001\n\
                       Server DFS2 127.0.0.1:10002\n\
                       Server DFS3 127.0.0.1:10003\n\
                       Server DFS4 127.0.0.1:10004\n\
                       Username: Alice\n\
                       Password: SimplePassword\n";

#[test]
fn classic_file() {
    let cfg = parse(CLASSIC).unwrap();
    assert_eq!(cfg.path, Path::new(P));
    assert_eq!(
        servers(&cfg),
        (1..=4)
            .map(|i| (
                format!("DFS{i}"),
                "127.0.0.1".to_owned(),
                10000 + i as u16,
                i
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(cfg.username, "Alice");
    match &cfg.password {
        Some(PasswordSetting::Plain(p)) => assert_eq!(p.as_str(), "SimplePassword"),
        other => panic!("{other:?}"),
    }
    assert!(cfg.ca.is_none());
    assert_eq!(
        cfg.default_ca_path(),
        Path::new("/home/alice/.vault/certs/ca.pem")
    );
}

#[test]
fn every_legacy_form_with_crlf_bom_comments_and_tabs() {
    let text = "\u{feff}# Vault client configuration\r\n\
                \r\n\
                Server DFS1 127.0.0.1:10001\r\n\
                Server\tDFS2\t127.0.0.1\t10002\r\n\
                \tserver dfs3 localhost:10003   # trailing comment\r\n\
                SERVER DFS4 [::1]:10004\r\n\
                \r\n\
                \x20  # indented comment\r\n\
                username:alice\r\n\
                PASSWORD:  pass word:with #colons  \r\n\
                CA: ../shared certs/ca.pem\r\n";
    let cfg = parse(text).unwrap();
    assert_eq!(
        servers(&cfg),
        vec![
            ("DFS1".into(), "127.0.0.1".into(), 10001, 3),
            ("DFS2".into(), "127.0.0.1".into(), 10002, 4),
            ("dfs3".into(), "localhost".into(), 10003, 5),
            ("DFS4".into(), "::1".into(), 10004, 6),
        ]
    );
    assert_eq!(cfg.username, "alice");
    assert!(cfg
        .password
        .as_ref()
        .unwrap()
        .matches("pass word:with #colons"));
    assert_eq!(
        cfg.ca.as_deref(),
        Some(Path::new("/home/alice/.vault/../shared certs/ca.pem"))
    );
    assert_eq!(cfg.default_ca_path(), cfg.ca.clone().unwrap());
}

#[test]
fn semicolon_comments_in_the_classic_form() {
    let text = format!("; written by hand\n  ; indented\n{CLASSIC};end\n");
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.servers[0].line, 3);
    assert!(cfg.password.unwrap().matches("SimplePassword"));
}

#[test]
fn address_forms() {
    for (line, host, port) in [
        ("Server DFS1 127.0.0.1:10001", "127.0.0.1", 10001),
        ("Server DFS1 127.0.0.1 10001", "127.0.0.1", 10001),
        ("server dfs1 localhost:10001", "localhost", 10001),
        ("Server DFS1 [::1]:10001", "::1", 10001),
        ("Server DFS1 ::1 10001", "::1", 10001),
        ("Server DFS1 [fe80::1] 65535", "fe80::1", 65535),
        ("Server: DFS1 node1.example:1", "node1.example", 1),
    ] {
        let text = CLASSIC.replacen("Server DFS1 127.0.0.1:10001", line, 1);
        let cfg = parse(&text).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(cfg.servers[0].host, host, "{line}");
        assert_eq!(cfg.servers[0].port, port, "{line}");
    }
}

#[test]
fn username_and_password_forms() {
    for (user_line, pass_line, user, pass) in [
        (
            "Username: Alice",
            "Password: Crimson33",
            "Alice",
            "Crimson33",
        ),
        ("Username:Alice", "Password:abc", "Alice", "abc"),
        ("username:alice", "password:abc", "alice", "abc"),
        ("USERNAME  :  Bob", "Password :\t a b c \t", "Bob", "a b c"),
        ("Username Carol", "Password x:y", "Carol", "x:y"),
    ] {
        let text = CLASSIC
            .replace("Username: Alice", user_line)
            .replace("Password: SimplePassword", pass_line);
        let cfg = parse(&text).unwrap_or_else(|e| panic!("{user_line}: {e}"));
        assert_eq!(cfg.username, user);
        match cfg.password.as_ref().unwrap() {
            PasswordSetting::Plain(p) => assert_eq!(p.as_str(), pass),
            other => panic!("{other:?}"),
        }
    }
    // No Password line at all.
    let cfg = parse(&CLASSIC.replace("Password: SimplePassword\n", "")).unwrap();
    assert!(cfg.password.is_none());
    // No final newline.
    let cfg = parse(CLASSIC.trim_end()).unwrap();
    assert!(cfg.password.unwrap().matches("SimplePassword"));
}

#[test]
fn md5_passwords() {
    let digest = md5_hex(b"Crimson33");
    assert_eq!(digest.len(), 32);
    assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    for value in [digest.clone(), digest.to_ascii_uppercase()] {
        let text = CLASSIC.replace("SimplePassword", &value);
        let cfg = parse(&text).unwrap();
        let setting = cfg.password.unwrap();
        match &setting {
            PasswordSetting::Md5(d) => assert_eq!(hex::encode(d), digest),
            other => panic!("{other:?}"),
        }
        assert!(setting.matches("Crimson33"));
        assert!(!setting.matches("crimson33"));
        assert_eq!(format!("{setting:?}"), "Md5([redacted])");
    }
    // 31 or 33 hex digits, or a non-hex letter: plain text.
    for value in [
        &digest[..31],
        &format!("{digest}0")[..],
        &format!("{}g", &digest[..31]),
    ] {
        let cfg = parse(&CLASSIC.replace("SimplePassword", value)).unwrap();
        assert!(
            matches!(cfg.password, Some(PasswordSetting::Plain(_))),
            "{value}"
        );
    }
}

#[test]
fn debug_redacts_passwords() {
    let cfg = parse(CLASSIC).unwrap();
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("SimplePassword"), "{shown}");
    assert!(shown.contains("Plain([redacted])"));
}

#[test]
fn relative_config_path() {
    let cfg = ClientConfig::parse(CLASSIC, Path::new("dfc.conf")).unwrap();
    assert_eq!(cfg.default_ca_path(), Path::new("certs/ca.pem"));
    let text = format!("{CLASSIC}CA /etc/vault/ca.pem\n");
    let cfg = ClientConfig::parse(&text, Path::new("conf/dfc.conf")).unwrap();
    assert_eq!(cfg.default_ca_path(), Path::new("/etc/vault/ca.pem"));
    let text = format!("{CLASSIC}ca my-ca.pem\n");
    let cfg = ClientConfig::parse(&text, Path::new("conf/dfc.conf")).unwrap();
    assert_eq!(cfg.default_ca_path(), Path::new("conf/my-ca.pem"));
}

/// CLASSIC with line `n` (1-based) replaced.
fn with_line(n: usize, line: &str) -> String {
    CLASSIC
        .lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == n { line } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn errors_never_quote_what_may_be_a_password() {
    for (line, secret) in [
        ("Crimson33", "Crimson33"),
        ("  Hunter2!  ", "Hunter2!"),
        ("password=Crimson33", "Crimson33"),
    ] {
        let msg = err(&with_line(6, line));
        assert!(msg.starts_with(&format!("{P}:6: ")), "{line}: {msg}");
        assert!(!msg.contains(secret), "{line}: {msg}");
    }
}

#[test]
fn syntax_errors_name_file_line_and_problem() {
    for (n, line, expected) in [
        (2, "Sever DFS2 127.0.0.1:10002", "unknown keyword `Sever`"),
        (
            3,
            "Server-DFS3 127.0.0.1:10003",
            "unknown keyword `Server-DFS3`",
        ),
        (5, "User: Alice", "unknown keyword `User:`"),
        (5, ": Alice", "unknown keyword `:`"),
        (
            2,
            "Server DFS2 127.0.0.1:http",
            "bad port `http` for server `DFS2`",
        ),
        (2, "Server DFS2 127.0.0.1:70000", "bad port `70000`"),
        (2, "Server DFS2 127.0.0.1:0", "bad port `0`"),
        (2, "Server DFS2 127.0.0.1 -1", "bad port `-1`"),
        (2, "Server DFS2 127.0.0.1:", "bad port ``"),
        (4, "Server DFS4", "missing address for server `DFS4`"),
        (
            4,
            "Server DFS4 # no address",
            "missing address for server `DFS4`",
        ),
        (4, "Server", "missing server name"),
        (
            4,
            "Server DFS4 127.0.0.1",
            "missing port in address `127.0.0.1`",
        ),
        (4, "Server DFS4 ::1", "missing port in address `::1`"),
        (4, "Server DFS4 [::1]", "missing port in address `[::1]`"),
        (4, "Server DFS4 [::1:10004", "unclosed `[`"),
        (4, "Server DFS4 :10004", "missing host for server `DFS4`"),
        (4, "Server DFS4 a:b 10004", "bad address `a:b`"),
        (4, "Server DFS4 h 1 2", "unexpected `2`"),
        (
            3,
            "Server dfs1 127.0.0.1:10003",
            "duplicate server name `dfs1` (already on line 1)",
        ),
        (5, "Username:", "missing username"),
        (
            5,
            "Username: Alice Smith",
            "a username cannot contain whitespace",
        ),
        (6, "Password:   ", "missing password after `Password:`"),
    ] {
        let msg = err(&with_line(n, line));
        let prefix = format!("{P}:{n}: ");
        assert!(msg.starts_with(&prefix), "{line}: {msg}");
        assert!(msg.contains(expected), "{line}: {msg}");
    }
}

#[test]
fn duplicate_lines() {
    let msg = err(&format!("{CLASSIC}# again\nusername: bob\n"));
    assert_eq!(
        msg,
        format!("{P}:8: duplicate `Username:` line (first on line 5)")
    );
    let msg = err(&format!("{CLASSIC}Password: other\n"));
    assert_eq!(
        msg,
        format!("{P}:7: duplicate `Password:` line (first on line 6)")
    );
    let msg = err(&format!("{CLASSIC}CA a.pem\nCA b.pem\n"));
    assert_eq!(msg, format!("{P}:8: duplicate `CA` line (first on line 7)"));
    let msg = err(&format!("{CLASSIC}CA\n"));
    assert_eq!(msg, format!("{P}:7: missing path after `CA`"));
}

#[test]
fn server_count_errors() {
    // Three servers are enough now; two are not.
    let three = CLASSIC.replace("Server DFS4 127.0.0.1:10004\n", "");
    assert_eq!(parse(&three).unwrap().servers.len(), 3);
    let two = three.replace("Server DFS3 127.0.0.1:10003\n", "");
    let e = parse(&two).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::ServerCount {
                count: 2,
                line: 4,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("{P}:4: at least 3 `Server` lines are needed (one per node), found 2")
    );
    // A fifth and sixth server are accepted now (the limit is 64, see
    // tests/redundancy.rs).
    let six = format!("{CLASSIC}\nServer DFS5 h:1\nServer DFS6 h:2\n");
    assert_eq!(parse(&six).unwrap().servers.len(), 6);
    let e = parse("").unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::ServerCount {
                count: 0,
                line: 0,
                ..
            }
        ),
        "{e:?}"
    );
    let e = parse("\u{feff}# only a comment\r\n").unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::ServerCount {
                count: 0,
                line: 1,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn missing_username() {
    let e = parse(&CLASSIC.replace("Username: Alice\n", "")).unwrap_err();
    assert!(matches!(e, ConfigError::Missing { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("{P}: missing `Username:` line"));
}

#[test]
fn hostile_input_never_panics() {
    let samples = [
        "\u{feff}",
        "\r",
        "\r\n\r\n",
        "Server \u{0} \u{0}",
        "Server é ü:ö",
        "Password:\u{feff}",
        "Server D [",
        "Server D []:1",
        "Server D ]:1",
        "Username:\u{7}",
        "ünïcode",
        "\u{feff}\u{feff}Server",
    ];
    for s in samples {
        let _ = parse(s);
        let _ = parse(&format!("{CLASSIC}{s}"));
        let _ = parse(&format!("{s}\n{CLASSIC}"));
    }
    let msg = err(&format!("{CLASSIC}{}\n", "x".repeat(10_000)));
    assert!(msg.len() < 200, "{msg}");
}

#[test]
fn load_reads_files_and_reports_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dfc.conf");
    fs::write(&path, CLASSIC).unwrap();
    let cfg = ClientConfig::load(&path).unwrap();
    assert_eq!(cfg.path, path);
    assert_eq!(
        cfg.default_ca_path(),
        dir.path().join("certs").join("ca.pem")
    );

    let missing = dir.path().join("nope.conf");
    let e = ClientConfig::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(e
        .to_string()
        .starts_with(&format!("failed to read {}: ", missing.display())));

    let mut bytes = CLASSIC.as_bytes().to_vec();
    bytes.extend_from_slice(b"# \xff\xfe\n");
    fs::write(&path, bytes).unwrap();
    let e = ClientConfig::load(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:7: the line is not valid utf-8", path.display())
    );
}

// ----- the samples in the docs, parsed exactly as written -----

/// The sentence in README.md that introduces the `dfc.conf` sample.
const README_INTRO: &str = "`dfc.conf` in any form the classic exercise produced:";

/// The contents of the fenced code block `lines` starts with (blank lines
/// before it skipped), each line ending in `\n`.
fn fenced_block<'a>(mut lines: impl Iterator<Item = &'a str>) -> String {
    let open = lines
        .by_ref()
        .find(|l| !l.trim().is_empty())
        .expect("a fenced block");
    assert!(open.starts_with("```"), "expected a fenced block: {open:?}");
    let mut block = String::new();
    for line in lines {
        if line.starts_with("```") {
            return block;
        }
        block.push_str(line);
        block.push('\n');
    }
    panic!("unclosed fenced block");
}

/// Name, host and port of each server.
fn addresses(cfg: &ClientConfig) -> Vec<(&str, &str, u16)> {
    cfg.servers
        .iter()
        .map(|s| (s.name.as_str(), s.host.as_str(), s.port))
        .collect()
}

fn plain_password(cfg: &ClientConfig) -> &str {
    match &cfg.password {
        Some(PasswordSetting::Plain(p)) => p.as_str(),
        other => panic!("{other:?}"),
    }
}

/// A comment written after a `Password:` or `CA` value is part of the
/// value, so a sample that annotates those lines in place teaches a trap.
#[test]
fn readme_sample_parses_to_what_it_shows() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = fs::read_to_string(&path).unwrap();
    let (_, after) = readme
        .split_once(README_INTRO)
        .unwrap_or_else(|| panic!("README.md no longer says {README_INTRO:?}"));
    let sample = fenced_block(after.lines());
    let cfg = parse(&sample).unwrap_or_else(|e| panic!("{e}\n{sample}"));
    assert_eq!(
        addresses(&cfg),
        vec![
            ("DFS1", "127.0.0.1", 10001),
            ("DFS2", "127.0.0.1", 10002),
            ("dfs3", "localhost", 10003),
            ("DFS4", "::1", 10004),
        ]
    );
    assert_eq!(cfg.username, "Alice");
    assert_eq!(plain_password(&cfg), "SimplePassword");
    assert_eq!(
        cfg.ca.as_deref(),
        Some(Path::new("/home/alice/.vault/certs/ca.pem"))
    );
}

/// The contents of every fenced block in the part of `text` under the
/// heading line `heading`, up to the next heading.
fn blocks_under(text: &str, heading: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| *l != heading).skip(1);
    let mut blocks = Vec::new();
    while let Some(line) = lines.next() {
        if line.starts_with('#') {
            break;
        }
        if line.starts_with("```") {
            let block: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            blocks.push(block.iter().map(|l| format!("{l}\n")).collect());
        }
    }
    blocks
}

/// Every `dfc.conf` form README.md's "Coming from the classic dfs/dfc"
/// lists reads as the same four servers and the same account.
#[test]
fn readme_classic_forms_parse_to_the_same_settings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = fs::read_to_string(&path).unwrap();
    let (_, section) = readme
        .split_once("\n## Coming from the classic dfs/dfc\n")
        .expect("README.md has a \"Coming from the classic dfs/dfc\" section");
    let samples = blocks_under(section, "### `dfc.conf`");
    assert_eq!(samples.len(), 4, "classic, HOST PORT, lower case, INI");
    for sample in samples {
        let cfg = parse(&sample).unwrap_or_else(|e| panic!("{e}\n{sample}"));
        for (i, server) in cfg.servers.iter().enumerate() {
            assert!(
                server.name.eq_ignore_ascii_case(&format!("DFS{}", i + 1)),
                "{sample}"
            );
            assert_eq!(server.port, 10001 + i as u16, "{sample}");
        }
        assert!(cfg.username.eq_ignore_ascii_case("alice"), "{sample}");
        assert!(cfg.password.unwrap().matches("SimplePassword"), "{sample}");
    }
}

/// The same for the sample at the top of this module's documentation.
#[test]
fn module_doc_sample_parses_to_what_it_shows() {
    let doc = include_str!("mod.rs")
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .skip_while(|l| !l.starts_with("```"));
    let sample = fenced_block(doc);
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
    assert_eq!(
        cfg.redundancy,
        Redundancy::Rs(crate::erasure::Scheme::new(2, 2).unwrap())
    );
}
