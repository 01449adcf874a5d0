//! Erasure coding end to end through the real binaries (issue 19):
//! `vault-node dev-cluster --nodes 6` and `vault-client` on its dfc.conf,
//! which stores files as Reed-Solomon rs 4+2 by default. Files and a
//! folder read back byte for byte with any two nodes stopped; with three
//! stopped GET refuses, naming them, and writes nothing; a node's wiped
//! user folder is found by `check` and rebuilt by `repair`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use vault_tests::*;

const LIMIT: Duration = Duration::from_secs(240);

/// Asserts the command exited with `code`, showing its output otherwise.
#[track_caller]
fn exits(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}:\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// GETs every single file into a new folder `into` and the folder `tree`
/// with -r, and compares each with what was stored.
fn read_back(
    dc: &DevCluster,
    d: &Path,
    into: &str,
    files: &[(&str, Vec<u8>)],
    folder: &BTreeMap<String, Vec<u8>>,
) {
    let out = d.join(into);
    std::fs::create_dir(&out).expect("create the output folder");
    for (name, bytes) in files {
        let target = out.join(name);
        let o = dc.client_in(d, &["get", name, "-o", target.to_str().unwrap()]);
        exits(&o, 0, &format!("get {name} ({into})"));
        let got = std::fs::read(&target).expect("read a file got back");
        assert!(
            got == *bytes,
            "{name} ({into}): {} bytes back, {} stored, or different bytes",
            got.len(),
            bytes.len()
        );
    }
    let back = out.join("back");
    let o = dc.client_in(d, &["get", "-r", "tree", "-o", back.to_str().unwrap()]);
    exits(&o, 0, &format!("get -r tree ({into})"));
    let got = read_tree(&back.join("tree"));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        folder.keys().collect::<Vec<_>>(),
        "{into}"
    );
    for (name, bytes) in folder {
        assert!(got[name] == *bytes, "tree/{name} ({into}): bytes differ");
    }
}

/// With nodes `down` stopped, `get big.bin` (with `flags`) into a new
/// folder `into` exits non-zero, its error names each node down (and says
/// `why`, if given), and the folder stays empty: no file, no
/// `.vault-partial`.
fn three_down_refused(
    dc: &DevCluster,
    d: &Path,
    into: &str,
    flags: &[&str],
    down: &[&str],
    why: Option<&str>,
) {
    let out = d.join(into);
    std::fs::create_dir(&out).expect("create the output folder");
    let target = out.join("big.bin");
    let mut args = flags.to_vec();
    args.extend(["get", "big.bin", "-o", target.to_str().unwrap()]);
    let o = dc.client_in(d, &args);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "{args:?} with {down:?} down succeeded:\n{err}"
    );
    let error = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{args:?}: no error line:\n{err}"));
    for name in down {
        assert!(error.contains(name), "{args:?}: {name} not named:\n{err}");
    }
    if let Some(why) = why {
        assert!(error.contains(why), "{args:?}:\n{err}");
    }
    let left: Vec<_> = std::fs::read_dir(&out)
        .expect("read the output folder")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{args:?} left in {into}: {left:?}");
}

#[test]
fn six_nodes_rs_4_2_two_down_read_three_down_refused_wiped_node_repaired() {
    with_timeout(LIMIT, || {
        let tmp = tempfile::tempdir().expect("temp dir");
        let d = tmp.path();
        let mut dc = DevCluster::start(&d.join("six"), 6);

        // The files: 0 B, 1 B, 100 KiB, 5 MiB, and a folder of 20 small ones.
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("empty.bin", Vec::new()),
            ("one.bin", random(1)),
            ("hundred.bin", random(100 * 1024)),
            ("big.bin", random(5 * 1024 * 1024)),
        ];
        for (name, bytes) in &files {
            std::fs::write(d.join(name), bytes).expect("write a file");
        }
        let src = d.join("tree");
        let mut folder = BTreeMap::new();
        for k in 0..20 {
            let rel = if k % 2 == 0 {
                format!("f{k:02}.txt")
            } else {
                format!("sub/f{k:02}.bin")
            };
            let bytes = random(100 + 97 * k);
            let path = src.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).expect("create a folder");
            std::fs::write(&path, &bytes).expect("write a small file");
            folder.insert(rel, bytes);
        }

        let mut put: Vec<&str> = vec!["put"];
        put.extend(files.iter().map(|(n, _)| *n));
        exits(&dc.client_in(d, &put), 0, "put");
        let o = dc.client_in(d, &["put", "-r", "tree"]);
        exits(&o, 0, "put -r tree");
        assert!(
            stdout(&o).contains("stored 20 files, 0 unchanged, 0 failed"),
            "{}",
            stdout(&o)
        );
        let mut names: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
        names.extend(folder.keys().map(|k| format!("tree/{k}")));
        names.sort();

        // Two nodes down: every file reads back, LIST shows all, complete.
        dc.stop("DFS2");
        dc.stop("DFS5");
        read_back(&dc, d, "two-down", &files, &folder);
        let o = dc.client_in(d, &["list"]);
        exits(&o, 0, "list with DFS2 and DFS5 down");
        let listed = stdout(&o);
        assert!(!listed.contains("[incomplete]"), "{listed}");
        let mut got: Vec<String> = listed.lines().map(str::to_string).collect();
        got.sort();
        assert_eq!(got, names, "{listed}");

        // A third node down: GET refuses, names the three, writes nothing.
        // With the demo account (the legacy login) the refusal comes at
        // login: its password's MD5 goes out only with a majority (4 of 6)
        // of the nodes up.
        dc.stop("DFS3");
        let down = ["DFS2", "DFS3", "DFS5"];
        three_down_refused(&dc, d, "three-down", &[], &down, None);

        // The upgraded account (`rotate`, all six up) logs in with three
        // nodes, and GET itself refuses: a read needs 4 of 6 nodes; with
        // --allow-stale it tries and finds fewer than K = 4 shards.
        for name in down {
            dc.start_node(name);
        }
        let o = dc.client_env(
            d,
            &[("VAULT_NEW_PASSWORD", "Upgraded-Password-19")],
            &["rotate"],
        );
        exits(&o, 0, "rotate");
        dc.password = "Upgraded-Password-19".into();
        for name in down {
            dc.stop(name);
        }
        three_down_refused(
            &dc,
            d,
            "three-down-upgraded",
            &[],
            &down,
            Some("a read needs 4"),
        );
        three_down_refused(
            &dc,
            d,
            "three-down-stale",
            &["--allow-stale"],
            &down,
            Some("fewer than 4 of its 6 shards could be read"),
        );

        // All six again: fully redundant.
        for name in down {
            dc.start_node(name);
        }
        let o = dc.client_in(d, &["check"]);
        exits(&o, 0, "check with all six nodes up");

        // DFS6's disk loses the user's folder: check finds it, repair
        // rebuilds its shards from the others.
        dc.stop("DFS6");
        let user_dir = dc.dir.join("DFS6").join(dc.user.to_ascii_lowercase());
        let mut removed = 0;
        for e in std::fs::read_dir(&user_dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", user_dir.display()))
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).expect("remove a folder");
            } else {
                std::fs::remove_file(&p).expect("remove a file");
            }
            removed += 1;
        }
        assert!(removed > 0, "{} was empty", user_dir.display());
        dc.start_node("DFS6");
        let o = dc.client_in(d, &["check"]);
        exits(&o, 1, "check with DFS6's folder wiped");
        let said = format!("{}{}", stdout(&o), stderr(&o));
        assert!(said.contains("DFS6"), "check does not name DFS6:\n{said}");
        // rs 4+2 on six nodes: every file has a shard (and a manifest) there.
        assert!(
            said.contains("checked 24 files: 0 fully redundant, 24 degraded, 0 lost"),
            "{said}"
        );
        let o = dc.client_in(d, &["repair"]);
        exits(&o, 0, "repair");
        let o = dc.client_in(d, &["check", "--verify"]);
        exits(&o, 0, "check --verify after repair");
        let said = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            said.contains("checked 24 files: 24 fully redundant, 0 degraded, 0 lost"),
            "{said}"
        );

        dc.quit();
    });
}
