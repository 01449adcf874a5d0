//! Any number of servers from 3 to 32, and the `Redundancy` line (INI:
//! `redundancy` in `[layout]`): every accepted form, the defaults, and every
//! refusal with its file, line and problem.

use super::*;
use crate::erasure::Scheme;

/// `Server` lines for `n` servers (`DFS1` on line 1, ...), then `extra`
/// lines, then the account.
fn classic_n(n: usize, extra: &str) -> String {
    let mut text: String = (1..=n)
        .map(|i| format!("Server DFS{i} 127.0.0.1:{}\n", 10000 + i))
        .collect();
    text.push_str(extra);
    text.push_str("Username: Alice\nPassword: SimplePassword\n");
    text
}

/// An INI file of `n` servers (the header on line 1, `DFS1` on line 2, ...),
/// then `extra` lines, then the account.
fn ini_n(n: usize, extra: &str) -> String {
    let mut text = String::from("[server_list]\n");
    for i in 1..=n {
        text.push_str(&format!("DFS{i} = 127.0.0.1:{}\n", 10000 + i));
    }
    text.push_str(extra);
    text.push_str("[credentials]\nusername = Alice\npassword = SimplePassword\n");
    text
}

fn rs(k: usize, m: usize) -> Redundancy {
    Redundancy::Rs(Scheme::new(k, m).unwrap())
}

#[test]
fn from_three_to_thirty_two_servers() {
    for n in [3, 4, 6, 12, 32] {
        for (text, first_line) in [(classic_n(n, ""), 1), (ini_n(n, ""), 2)] {
            let cfg = parse(&text).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(cfg.servers.len(), n);
            for (i, s) in cfg.servers.iter().enumerate() {
                assert_eq!(s.name, format!("DFS{}", i + 1));
                assert_eq!(usize::from(s.port), 10001 + i);
                assert_eq!(s.line, first_line + i);
            }
            assert_eq!(cfg.username, "Alice");
            assert_eq!(Some(cfg.redundancy), Redundancy::default_for(n), "{n}");
        }
    }
}

#[test]
fn two_servers_are_refused() {
    let e = parse(&classic_n(2, "")).unwrap_err();
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
    assert_eq!(
        err(&ini_n(2, "")),
        format!("{P}:1: at least 3 servers are needed in [server_list] (one per node), found 2")
    );
}

#[test]
fn the_thirty_third_server_is_refused_on_its_line() {
    // Two comment lines first: the 33rd `Server` line is line 35.
    let text = format!("# big\n# cluster\n{}", classic_n(33, ""));
    let e = parse(&text).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::ServerCount {
                count: 33,
                line: 35,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("{P}:35: at most 32 `Server` lines are supported, found 33 (this is number 33)")
    );
    // More still: the count is all of them, the line still the 33rd.
    let e = parse(&classic_n(40, "")).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::ServerCount {
                count: 40,
                line: 33,
                ..
            }
        ),
        "{e:?}"
    );
    // INI: the header is line 1, so the 33rd entry is line 34.
    assert_eq!(
        err(&ini_n(33, "")),
        format!(
            "{P}:34: at most 32 servers are supported in [server_list], found 33 (this is number 33)"
        )
    );
}

#[test]
fn duplicate_names_are_refused_among_many() {
    let text = classic_n(12, "").replace("Server DFS12 ", "Server dfs7 ");
    assert_eq!(
        err(&text),
        format!("{P}:12: duplicate server name `dfs7` (already on line 7)")
    );
    let text = ini_n(12, "").replace("DFS12 = ", "Dfs7 = ");
    assert_eq!(
        err(&text),
        format!("{P}:13: duplicate server name `Dfs7` (already on line 8)")
    );
}

#[test]
fn every_form_of_the_redundancy_line() {
    for (n, line, expected) in [
        (4, "Redundancy classic", Redundancy::Classic),
        (4, "redundancy CLASSIC", Redundancy::Classic),
        (
            4,
            "REDUNDANCY: Classic # the default anyway",
            Redundancy::Classic,
        ),
        (6, "Redundancy rs 4+2", rs(4, 2)),
        (6, "Redundancy RS 4 + 2", rs(4, 2)),
        (6, "Redundancy: rs 4+2 # comment", rs(4, 2)),
        (6, "redundancy:Rs4+2", rs(4, 2)),
        (6, "\tRedundancy\trs  4 +2\t", rs(4, 2)),
        (6, "Redundancy rs 04+02", rs(4, 2)),
        (3, "Redundancy: rs 2+1 # comment", rs(2, 1)),
        (4, "Redundancy rs 2+2", rs(2, 2)),
        // Fewer shards than servers: rendezvous hashing picks K+M of them.
        (12, "Redundancy rs 4+2", rs(4, 2)),
        (32, "Redundancy rs 28+4", rs(28, 4)),
        (5, "Redundancy rs 1+1", rs(1, 1)),
    ] {
        let text = classic_n(n, &format!("{line}\n"));
        let cfg = parse(&text).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(cfg.redundancy, expected, "{line}");
        assert_eq!(cfg.servers.len(), n);
    }
    // Before the servers, with CRLF and a byte-order mark.
    let text = format!(
        "\u{feff}Redundancy rs 4+2\r\n{}",
        classic_n(6, "").replace('\n', "\r\n")
    );
    assert_eq!(parse(&text).unwrap().redundancy, rs(4, 2));
    // Display gives back the canonical form.
    assert_eq!(rs(4, 2).to_string(), "rs 4+2");
}

#[test]
fn ini_layout_section() {
    for (n, entry, expected) in [
        (4, "redundancy = classic", Redundancy::Classic),
        (6, "redundancy = rs 4+2", rs(4, 2)),
        (6, "Redundancy: RS 4 + 2 # comment", rs(4, 2)),
        (3, "REDUNDANCY=rs 2+1", rs(2, 1)),
        (4, "redundancy = rs 2+2", rs(2, 2)),
    ] {
        let text = ini_n(n, &format!("[Layout]\n{entry}\n"));
        let cfg = parse(&text).unwrap_or_else(|e| panic!("{entry}: {e}"));
        assert_eq!(cfg.redundancy, expected, "{entry}");
    }
    // The section may come first, and may be empty.
    let text = format!(
        "[layout] ; how files are stored\nredundancy = rs 3+2\n{}",
        ini_n(5, "")
    );
    assert_eq!(parse(&text).unwrap().redundancy, rs(3, 2));
    assert_eq!(parse(&ini_n(6, "[layout]\n")).unwrap().redundancy, rs(4, 2));
}

#[test]
fn defaults_without_a_redundancy_line() {
    for (n, expected) in [
        (3, rs(2, 1)),
        (4, Redundancy::Classic),
        (5, rs(3, 2)),
        (6, rs(4, 2)),
        (12, rs(10, 2)),
        (32, rs(30, 2)),
    ] {
        assert_eq!(
            parse(&classic_n(n, "")).unwrap().redundancy,
            expected,
            "{n}"
        );
        assert_eq!(parse(&ini_n(n, "")).unwrap().redundancy, expected, "{n}");
    }
    // The four-server samples elsewhere stay classic.
    assert_eq!(parse(CLASSIC).unwrap().redundancy, Redundancy::Classic);
}

#[test]
fn refusals_name_the_line_and_what_is_accepted() {
    // The `Redundancy` line of `classic_n(n, ...)` is line n + 1.
    for (n, value, expected) in [
        (
            6,
            "classic",
            "`classic` redundancy needs exactly 4 servers; this file lists 6 \
             (write `Redundancy rs 4+2`, or another `rs K+M` with K+M at most 6)",
        ),
        (
            3,
            "classic",
            "`classic` redundancy needs exactly 4 servers; this file lists 3 \
             (write `Redundancy rs 2+1`, or another `rs K+M` with K+M at most 3)",
        ),
        (
            4,
            "rs 4+2",
            "`rs 4+2` needs at least 6 servers (one per shard); this file lists 4",
        ),
        (
            3,
            "rs 2+2",
            "`rs 2+2` needs at least 4 servers (one per shard); this file lists 3",
        ),
        (
            6,
            "rs 0+2",
            "`rs 0+2` has no data shards: K in `rs K+M` must be at least 1",
        ),
        (
            6,
            "rs 2+0",
            "`rs 2+0` has no parity shards: M in `rs K+M` must be at least 1 \
             (with none, losing one server loses files)",
        ),
        (
            32,
            "rs 28+5",
            "`rs 28+5` has more than 32 shards: K+M must be at most 32, and at most \
             the number of servers",
        ),
        (
            6,
            "rs 99999999999999999999999+1",
            "`rs 99999999999999999999999+1` has more than 32 shards",
        ),
        (
            6,
            "raid5",
            "bad `Redundancy` value `raid5` (expected `classic` or `rs K+M`, e.g. `rs 4+2`)",
        ),
        (
            6,
            "rs 4",
            "bad `Redundancy` value `rs 4` (expected `classic` or `rs K+M`",
        ),
        (6, "rs", "bad `Redundancy` value `rs`"),
        (6, "rs 4+", "bad `Redundancy` value `rs 4+`"),
        (6, "rs +2", "bad `Redundancy` value `rs +2`"),
        (6, "rs a+b", "bad `Redundancy` value `rs a+b`"),
        (6, "rs 4+2+1", "bad `Redundancy` value `rs 4+2+1`"),
        (6, "rs 1 2+3", "bad `Redundancy` value `rs 1 2+3`"),
        (6, "rs -1+2", "bad `Redundancy` value `rs -1+2`"),
        (
            6,
            "classic rs 4+2",
            "bad `Redundancy` value `classic rs 4+2`",
        ),
        (
            6,
            "reed-solomon 4+2",
            "bad `Redundancy` value `reed-solomon 4+2`",
        ),
        (
            6,
            "",
            "missing value after `Redundancy` (expected `classic` or `rs K+M`, e.g. `rs 4+2`)",
        ),
        (6, ": # nothing", "missing value after `Redundancy`"),
    ] {
        let line = n + 1;
        let text = classic_n(n, &format!("Redundancy {value}\n"));
        let e = parse(&text).unwrap_err();
        assert!(
            matches!(e, ConfigError::Syntax { line: l, .. } if l == line),
            "{value}: {e:?}"
        );
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{P}:{line}: ")), "{value}: {msg}");
        assert!(msg.contains(expected), "{value}: {msg}");
    }
    // The complete message of the brief's example.
    assert_eq!(
        err(&classic_n(4, "Redundancy rs 4+2\n")),
        format!("{P}:5: `rs 4+2` needs at least 6 servers (one per shard); this file lists 4")
    );
    // A line given twice; the second is named.
    assert_eq!(
        err(&classic_n(
            6,
            "Redundancy rs 4+2\n# again\nredundancy: rs 3+3\n"
        )),
        format!("{P}:9: duplicate `Redundancy` line (first on line 7)")
    );
    // A valid line checked against servers listed after it: still its line.
    let text = format!("Redundancy classic\n{}", classic_n(6, ""));
    assert!(err(&text).starts_with(&format!("{P}:1: `classic` redundancy needs exactly 4")));
    // A server-count problem is reported before the redundancy.
    let text = classic_n(2, "Redundancy rs 4+2\n");
    assert!(matches!(
        parse(&text).unwrap_err(),
        ConfigError::ServerCount { count: 2, .. }
    ));
}

#[test]
fn ini_refusals() {
    // `[server_list]` is line 1, servers 2..=n+1, `[layout]` n+2, the entry
    // n+3.
    for (n, entry, expected) in [
        (
            6,
            "redundancy = classic",
            "`classic` redundancy needs exactly 4 servers; this file lists 6 \
             (write `redundancy = rs 4+2`, or another `rs K+M` with K+M at most 6)",
        ),
        (
            4,
            "redundancy = rs 4+2",
            "`rs 4+2` needs at least 6 servers (one per shard); this file lists 4",
        ),
        (6, "redundancy = rs 0+2", "`rs 0+2` has no data shards"),
        (6, "redundancy = rs 2+0", "`rs 2+0` has no parity shards"),
        (
            6,
            "redundancy = rs 28+5",
            "`rs 28+5` has more than 32 shards",
        ),
        (
            6,
            "redundancy = mirror",
            "bad `redundancy` value `mirror` (expected `classic` or `rs K+M`, e.g. `rs 4+2`)",
        ),
        (6, "redundancy =", "missing value after `redundancy`"),
        (
            6,
            "scheme = rs 4+2",
            "unknown key `scheme` in [layout] (expected redundancy)",
        ),
        (
            6,
            "username = bob",
            "unknown key `username` in [layout] (expected redundancy)",
        ),
        (
            6,
            "ca = certs/ca.pem",
            "`ca` belongs in a [tls] section, not in [layout]",
        ),
        (
            6,
            "Redundancy rs 4+2",
            "a classic `Redundancy` line cannot be mixed with INI sections; in [layout] \
             write `redundancy = rs K+M` or `redundancy = classic`",
        ),
    ] {
        let line = n + 3;
        let msg = err(&ini_n(n, &format!("[layout]\n{entry}\n")));
        assert!(msg.starts_with(&format!("{P}:{line}: ")), "{entry}: {msg}");
        assert!(msg.contains(expected), "{entry}: {msg}");
    }
    // Duplicates: the entry, and the section.
    assert_eq!(
        err(&ini_n(
            6,
            "[layout]\nredundancy = rs 4+2\nREDUNDANCY: rs 3+3\n"
        )),
        format!("{P}:10: duplicate `redundancy` line (first on line 9)")
    );
    assert_eq!(
        err(&ini_n(6, "[layout]\n[layout]\n")),
        format!("{P}:9: duplicate section [layout] (first on line 8)")
    );
    // `redundancy` outside `[layout]`.
    assert_eq!(
        err(&ini_n(6, "[tls]\nredundancy = rs 4+2\n")),
        format!("{P}:9: `redundancy` belongs in a [layout] section, not in [tls]")
    );
    let text = ini_n(6, "").replace(
        "username = Alice\n",
        "username = Alice\nredundancy = rs 4+2\n",
    );
    assert_eq!(
        err(&text),
        format!("{P}:10: `redundancy` belongs in a [layout] section, not in [credentials]")
    );
    // A classic `Redundancy` line in an INI file, before the sections.
    let msg = err(&format!("Redundancy rs 4+2\n{}", ini_n(6, "")));
    assert!(
        msg.starts_with(&format!(
            "{P}:1: this line comes before the first [section] header (line 2)"
        )),
        "{msg}"
    );
}

#[test]
fn hostile_redundancy_values_never_panic() {
    for value in [
        "rs \u{0}+\u{0}",
        "rsé",
        "é",
        "r",
        "rs ٣+٢",
        "rs 4+2\u{feff}",
        "rs 18446744073709551615+18446744073709551615",
        "rs +",
        "+",
        "#",
    ] {
        let _ = parse(&classic_n(6, &format!("Redundancy {value}\n")));
        let _ = parse(&ini_n(6, &format!("[layout]\nredundancy = {value}\n")));
    }
    let msg = err(&classic_n(
        6,
        &format!("Redundancy {}\n", "x".repeat(10_000)),
    ));
    assert!(msg.len() < 200, "{msg}");
}

#[test]
fn server_names_longer_than_a_manifest_records_are_refused() {
    let long = "N".repeat(65);
    let text = classic_n(4, "").replace("Server DFS2 ", &format!("Server {long} "));
    let e = err(&text);
    assert!(
        e.contains("a server name is at most 64 bytes; this one is 65"),
        "{e}"
    );
    let ok = classic_n(4, "").replace("Server DFS2 ", &format!("Server {} ", &long[..64]));
    assert!(parse(&ok).is_ok());
}
