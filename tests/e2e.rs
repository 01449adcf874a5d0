//! End to end: the real `vault-node` and `vault-client` binaries, four real
//! nodes on loopback, certificates made at test time.

use std::path::Path;
use std::time::Duration;

use vault_node::store::offline;
use vault_tests::*;

mod health;
mod trees;

const LIMIT: Duration = Duration::from_secs(300);
const AUTH_FAILED: &str = "Invalid Username/Password. Please try again.";

/// Writes random files of the given sizes into `dir`; returns their names.
fn make_files(dir: &Path, sizes: &[usize]) -> Vec<(String, Vec<u8>)> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let name = format!("file-{i}-{n}.bin");
            let data = random(n);
            std::fs::write(dir.join(&name), &data).unwrap();
            (name, data)
        })
        .collect()
}

fn put_all(c: &Cluster, files: &[(String, Vec<u8>)]) {
    let mut args = vec!["put"];
    args.extend(files.iter().map(|(n, _)| n.as_str()));
    ok(&c.client("Crimson33", &args));
}

fn get_and_compare(c: &Cluster, name: &str, data: &[u8]) {
    let out = c.dir.path().join(format!("out-{name}"));
    let _ = std::fs::remove_file(&out);
    ok(&c.client("Crimson33", &["get", name, "-o", out.to_str().unwrap()]));
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == data,
        "{name}: bytes differ ({} vs {} bytes)",
        got.len(),
        data.len()
    );
    std::fs::remove_file(&out).unwrap();
}

fn listing(c: &Cluster) -> Vec<String> {
    stdout(&c.client("Crimson33", &["list"]))
        .lines()
        .map(str::to_string)
        .collect()
}

/// Turns dfc.conf's `Password:` line from the MD5 digest into the plain
/// password, as a user who keeps it in the file would have it.
fn plain_password_line(c: &Cluster) {
    let text = std::fs::read_to_string(&c.dfc).unwrap().replace(
        &format!("Password: {}", md5_hex(b"Crimson33")),
        "Password: Crimson33",
    );
    std::fs::write(&c.dfc, text).unwrap();
}

/// Names of files left in `dir` that look like partial downloads.
fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("vault-partial"))
        .collect()
}

#[test]
fn files_of_many_sizes_round_trip() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let sizes = [0, 1, 3, 4, 5, 65_535, 65_536 * 4 + 1, 3 * 1024 * 1024 + 7];
        let files = make_files(c.dir.path(), &sizes);
        put_all(&c, &files);
        let mut names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        assert_eq!(listing(&c), names);
        for (name, data) in &files {
            get_and_compare(&c, name, data);
        }
        // JSON listing for scripts.
        let json: serde_json::Value =
            serde_json::from_str(&ok(&c.client("Crimson33", &["--json", "list"]))).unwrap();
        assert_eq!(json["files"].as_array().unwrap().len(), files.len());
        assert!(json["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["complete"] == true));
    });
}

/// Long (about a minute on two cores): each of the four nodes is killed
/// and restarted in turn, and with each one down the test runs `list` and
/// four `get`s, every one of them a new client process that gives up on
/// the dead node by its timeout.
#[test]
fn any_single_node_down_lists_complete_and_gets() {
    with_timeout(LIMIT, || {
        let mut c = Cluster::start();
        let files = make_files(c.dir.path(), &[10, 1000, 200_000, 1_000_003]);
        put_all(&c, &files);
        for i in 0..4 {
            c.kill(i);
            let out = c.client("Crimson33", &["list"]);
            let text = ok(&out);
            assert!(!text.contains("[incomplete]"), "DFS{} down: {text}", i + 1);
            assert_eq!(text.lines().count(), files.len());
            assert!(
                stderr(&out).contains(&format!("DFS{}", i + 1)),
                "names the node that is down"
            );
            for (name, data) in &files {
                get_and_compare(&c, name, data);
            }
            c.restart(i);
        }
    });
}

#[test]
fn two_nodes_down_reads_are_refused_naming_them_unless_stale_is_allowed() {
    with_timeout(LIMIT, || {
        let mut c = Cluster::start();
        plain_password_line(&c);
        let files = make_files(c.dir.path(), &[5000, 70_000, 300_001]);
        put_all(&c, &files);
        c.kill(1);
        c.kill(2);
        // A legacy (MD5) account: no MD5 goes out without three nodes.
        let out = c.client("Crimson33", &["list"]);
        assert!(!out.status.success(), "LIST with two nodes down succeeded");
        let text = stderr(&out);
        assert!(text.contains("DFS2") && text.contains("DFS3"), "{text}");
        for (name, _) in &files {
            let target = c.dir.path().join(format!("fetched-{name}"));
            let out = c.client("Crimson33", &["get", name, "-o", target.to_str().unwrap()]);
            assert!(!out.status.success(), "GET with two nodes down succeeded");
            assert!(!target.exists(), "a failed GET must not leave a file");
            assert!(
                partials(c.dir.path()).is_empty(),
                "partial file left behind"
            );
        }
        // An upgraded account logs in, but reads need three nodes: refused,
        // naming them; with --allow-stale, marked and exit 3.
        c.restart(1);
        c.restart(2);
        let env = [
            ("VAULT_PASSWORD", "Crimson33"),
            ("VAULT_NEW_PASSWORD", "Topaz-12"),
        ];
        ok(&c.client_env(&env, &["rotate"], None));
        c.kill(1);
        c.kill(2);
        let out = c.client("Topaz-12", &["list"]);
        assert!(!out.status.success());
        let text = stderr(&out);
        assert!(
            text.contains("DFS2") && text.contains("DFS3") && text.contains("--allow-stale"),
            "{text}"
        );
        let out = c.client("Topaz-12", &["list", "--allow-stale"]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(stderr(&out).contains("may be stale"), "{}", stderr(&out));
        let listed = stdout(&out);
        assert_eq!(listed.lines().count(), files.len(), "{listed}");
        assert!(
            listed.lines().all(|l| l.ends_with(" [incomplete]")),
            "{listed}"
        );
    });
}

#[test]
fn nodes_hold_no_names_and_no_plaintext() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let name = "quarterly-secret-report.txt";
        let mut data = Vec::new();
        for i in 0..20_000 {
            data.extend_from_slice(format!("line {i}: the eagle lands at midnight\n").as_bytes());
        }
        std::fs::write(c.dir.path().join(name), &data).unwrap();
        ok(&c.client("Crimson33", &["put", name]));
        let needle = b"the eagle lands at midnight";
        let blobs: usize = (0..4).map(|i| c.blob_ids(i, "alice").len()).sum();
        assert!(blobs >= 12, "8 part copies and 4 manifests expected");
        // Every file of the node roots, whatever the store's layout.
        let files = c.stored_files();
        assert!(!files.is_empty());
        for f in files {
            let path = f.to_string_lossy().into_owned();
            assert!(!path.contains("quarterly"), "file name leaked in {path}");
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "plaintext in {path}"
            );
            assert!(
                !bytes.windows(10).any(|w| w == b"quarterly-"),
                "name inside {path}"
            );
        }
    });
}

#[test]
fn a_corrupted_copy_is_detected_and_the_other_copy_used() {
    with_timeout(LIMIT, || {
        let mut c = Cluster::start();
        let files = make_files(c.dir.path(), &[300_000, 2_000_000]);
        put_all(&c, &files);
        // Flip one byte in the middle of every blob DFS1 holds for Alice
        // (on its disk: it is stopped for the edit).
        let flipped = c.with_disk(0, |root| {
            let ids = offline::blob_ids(root, "alice").unwrap();
            for id in &ids {
                let mut bytes = offline::read_blob(root, "alice", id).unwrap().unwrap();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x01;
                offline::write_blob(root, "alice", id, &bytes).unwrap();
            }
            ids.len()
        });
        assert_eq!(flipped, 6, "two files of a manifest and two parts each");
        for (name, data) in &files {
            get_and_compare(&c, name, data);
        }
        assert!(!listing(&c).iter().any(|l| l.contains("[incomplete]")));
    });
}

#[test]
fn replacing_a_file_serves_the_new_version_and_drops_old_parts() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let path = c.dir.path().join("doc.bin");
        std::fs::write(&path, random(100_000)).unwrap();
        ok(&c.client("Crimson33", &["put", "doc.bin"]));
        let v2 = random(150_000);
        std::fs::write(&path, &v2).unwrap();
        ok(&c.client("Crimson33", &["put", "doc.bin"]));
        get_and_compare(&c, "doc.bin", &v2);
        let per_node: Vec<usize> = (0..4).map(|i| c.blob_ids(i, "alice").len()).collect();
        assert_eq!(
            per_node,
            vec![3, 3, 3, 3],
            "one manifest and two parts per node"
        );
    });
}

#[test]
fn put_with_a_node_down_fails_naming_it_and_leaves_nothing_visible() {
    with_timeout(LIMIT, || {
        let mut c = Cluster::start();
        std::fs::write(c.dir.path().join("new.bin"), random(4096)).unwrap();
        c.kill(2);
        let out = c.client("Crimson33", &["put", "new.bin"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("DFS3"), "{}", stderr(&out));
        c.restart(2);
        assert!(listing(&c).is_empty());
        for i in 0..4 {
            assert!(c.blob_ids(i, "alice").is_empty(), "DFS{} keeps data", i + 1);
        }
    });
}

#[test]
fn delete_removes_everywhere_and_survives_a_missed_node() {
    with_timeout(LIMIT, || {
        let mut c = Cluster::start();
        let files = make_files(c.dir.path(), &[1234, 5678]);
        put_all(&c, &files);
        ok(&c.client("Crimson33", &["delete", &files[0].0]));
        assert_eq!(listing(&c), vec![files[1].0.clone()]);
        // Delete while DFS4 is down: DFS4 keeps its stale copy, but the file
        // must not come back when it returns.
        c.kill(3);
        let out = c.client("Crimson33", &["delete", &files[1].0]);
        ok(&out);
        assert!(stderr(&out).contains("DFS4"));
        c.restart(3);
        assert!(listing(&c).is_empty());
        let missing = c.client("Crimson33", &["get", &files[1].0]);
        assert!(!missing.status.success());
        assert!(stderr(&missing).contains("no such file"));
    });
}

#[test]
fn wrong_password_and_unknown_user_are_refused_alike() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        // The MD5 digest in dfc.conf is checked first.
        let out = c.client("crimson33", &["list"]);
        assert!(!out.status.success());
        assert_eq!(stderr(&out).trim(), AUTH_FAILED);
        // Without a digest in dfc.conf the nodes refuse it.
        c.write_dfc("Alice", "");
        let out = c.client("wrong", &["list"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(AUTH_FAILED), "{}", stderr(&out));
        c.write_dfc("Mallory", "");
        let out = c.client("Crimson33", &["list"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(AUTH_FAILED), "{}", stderr(&out));
        // Plain-text Password: lines work; user names are case-insensitive.
        c.write_dfc("ALICE", "Password: Crimson33");
        ok(&c.client_env(&[], &["list"], None));
    });
}

#[test]
fn users_cannot_see_each_others_files() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let files = make_files(c.dir.path(), &[777]);
        put_all(&c, &files);
        c.write_dfc("Bob", "");
        assert!(ok(&c.client("Velvet77", &["list"])).is_empty());
        let out = c.client("Velvet77", &["get", &files[0].0, "-o", "stolen"]);
        assert!(!out.status.success());
        assert!(!c.dir.path().join("stolen").exists());
    });
}

#[test]
fn interactive_prompt_takes_classic_commands() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let files = make_files(c.dir.path(), &[4321]);
        let script = format!(
            "put {0}\nLIST\nGet {0} copy.bin\nbogus\nDELETE {0}\nlist\nexit\n",
            files[0].0
        );
        let out = c.client_env(&[("VAULT_PASSWORD", "Crimson33")], &[], Some(&script));
        let text = stdout(&out);
        assert!(text.contains(&files[0].0), "{text}");
        assert_eq!(
            std::fs::read(c.dir.path().join("copy.bin")).unwrap(),
            files[0].1
        );
        assert!(stderr(&out).contains("unknown command"));
        assert!(listing(&c).is_empty());
    });
}

#[test]
fn the_prompt_reads_commands_after_a_password_from_stdin() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let files = make_files(c.dir.path(), &[1234]);
        // The password line, then the prompt's commands, on one stdin.
        let script = format!("Crimson33\nput {}\nlist\nexit\n", files[0].0);
        let out = c.client_env(&[], &["--password-stdin"], Some(&script));
        let text = ok(&out);
        assert!(text.contains(&files[0].0), "{text}");
    });
}

/// Bytes of every stored part (not manifests or records), sorted, read
/// from the nodes' disks (each stopped for the reading).
fn part_bytes(c: &mut Cluster) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for i in 0..4 {
        c.with_disk(i, |root| {
            for id in offline::blob_ids(root, "alice").unwrap() {
                if id.starts_with("p2-") {
                    out.push(offline::read_blob(root, "alice", &id).unwrap().unwrap());
                }
            }
        });
    }
    assert!(!out.is_empty(), "no part blobs found (id prefix changed?)");
    out.sort();
    out
}

fn assert_secret_absent(c: &Cluster, secret: &[u8]) {
    let md5 = md5_hex(secret);
    let md5_raw: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&md5[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    for f in c.stored_files() {
        let bytes = std::fs::read(&f).unwrap();
        for needle in [secret, md5.as_bytes(), &md5_raw[..]] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds the password or its MD5",
                f.display()
            );
        }
    }
}

#[test]
fn rotate_changes_the_password_without_reencrypting() {
    with_timeout(LIMIT, || {
        let mut c = Cluster::start();
        let files = make_files(c.dir.path(), &[100, 250_000]);
        put_all(&c, &files);
        let before = part_bytes(&mut c);
        let dfc_before = std::fs::read_to_string(&c.dfc).unwrap();

        let out = c.client_env(
            &[
                ("VAULT_PASSWORD", "Crimson33"),
                ("VAULT_NEW_PASSWORD", "Saffron-99"),
            ],
            &["rotate"],
            None,
        );
        ok(&out);
        // dfc.conf: the digest line now holds the new password's digest; all else kept.
        let dfc_after = std::fs::read_to_string(&c.dfc).unwrap();
        assert_eq!(
            dfc_after,
            dfc_before.replace(&md5_hex(b"Crimson33"), &md5_hex(b"Saffron-99"))
        );
        assert_eq!(part_bytes(&mut c), before, "no part was rewritten");
        for (name, data) in &files {
            let out = c.dir.path().join("after-rotate");
            let _ = std::fs::remove_file(&out);
            ok(&c.client("Saffron-99", &["get", name, "-o", out.to_str().unwrap()]));
            assert_eq!(&std::fs::read(&out).unwrap(), data);
        }
        // The old password is refused by every node: ask each one alone, with
        // the other three unreachable in dfc.conf.
        for i in 0..4 {
            let mut text = String::new();
            for (j, n) in c.nodes.iter().enumerate() {
                let addr = if i == j {
                    n.addr.clone()
                } else {
                    "127.0.0.1:9".to_string()
                };
                text.push_str(&format!("Server {} {}\n", n.name, addr));
            }
            text.push_str("Username: Alice\n");
            let single = c.dir.path().join(format!("single{i}.conf"));
            std::fs::write(&single, text).unwrap();
            // One node is not a quorum: the list is read anyway and marked
            // stale (exit 3), which shows the login itself went through.
            let run = |pw: &str| {
                c.client_env(
                    &[("VAULT_PASSWORD", pw)],
                    &["-c", single.to_str().unwrap(), "list", "--allow-stale"],
                    None,
                )
            };
            let old = run("Crimson33");
            assert!(
                stderr(&old).contains(AUTH_FAILED),
                "DFS{} took the old password",
                i + 1
            );
            let new = run("Saffron-99");
            assert_eq!(new.status.code(), Some(3), "{}", stderr(&new));
        }
        assert_secret_absent(&c, b"Crimson33");
        assert_secret_absent(&c, b"Saffron-99");
    });
}

#[test]
fn rotate_refuses_with_a_node_down_and_changes_nothing() {
    with_timeout(LIMIT, || {
        let mut c = Cluster::start();
        plain_password_line(&c);
        let files = make_files(c.dir.path(), &[9999]);
        put_all(&c, &files);
        let env = [
            ("VAULT_PASSWORD", "Crimson33"),
            ("VAULT_NEW_PASSWORD", "Topaz-12"),
        ];
        c.kill(1);
        let out = c.client_env(&env, &["rotate"], None);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("DFS2"), "{}", stderr(&out));
        assert!(std::fs::read_to_string(&c.dfc)
            .unwrap()
            .contains("Password: Crimson33"));
        c.restart(1);
        // Nothing changed: the old password still works everywhere, and a
        // rotation now goes through.
        get_and_compare_with(&c, &files[0].0, &files[0].1);
        ok(&c.client_env(&env, &["rotate"], None));
        let dfc = std::fs::read_to_string(&c.dfc).unwrap();
        assert!(dfc.contains("Password: Topaz-12\n"), "{dfc}");
        get_and_compare_with(&c, &files[0].0, &files[0].1);
    });
}

fn get_and_compare_with(c: &Cluster, name: &str, data: &[u8]) {
    let out = c.dir.path().join("fetched-after");
    ok(&c.client_env(
        &[],
        &["get", name, "-o", out.to_str().unwrap(), "--force"],
        None,
    ));
    assert_eq!(std::fs::read(&out).unwrap(), data);
}

#[test]
fn cli_errors_are_clear() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let help = ok(&c.client_env(&[], &["--help"], None));
        for word in [
            "put", "get", "list", "delete", "rotate", "--config", "--ca", "--json",
        ] {
            assert!(help.contains(word), "help lacks {word}");
        }
        let bad = c.dir.path().join("bad.conf");
        std::fs::write(&bad, "Server DFS1 127.0.0.1:1\nServer DFS1 127.0.0.1:2\n").unwrap();
        let out = c.client_env(&[], &["-c", bad.to_str().unwrap(), "list"], None);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("bad.conf:2"), "{}", stderr(&out));
        let out = c.client("Crimson33", &["get", "no-such-file"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("no such file"));
        // GET does not overwrite without --force.
        let files = make_files(c.dir.path(), &[10]);
        put_all(&c, &files);
        let out = c.client("Crimson33", &["get", &files[0].0]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("--force"));
    });
}

#[test]
fn the_prompt_takes_the_classic_forms_with_credentials() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let files = make_files(c.dir.path(), &[4321]);
        let (name, data) = (&files[0].0, &files[0].1);
        std::fs::write(c.dir.path().join("copy.bin"), b"old contents").unwrap();
        let script = format!(
            "-put {name} Alice Crimson33\n\
             -list alice Crimson33\n\
             -get {name} ALICE wrong-password\n\
             -list Bob Velvet77\n\
             get {name} copy.bin\n\
             GET {name} copy.bin -f\n\
             -get {name} alice Crimson33\n\
             exit\n"
        );
        let out = c.client_env(&[("VAULT_PASSWORD", "Crimson33")], &[], Some(&script));
        let (text, err) = (stdout(&out), stderr(&out));
        assert!(text.contains(&format!("stored {name}")), "{text}");
        assert!(
            text.lines().any(|l| l == name),
            "LIST printed the file: {text}"
        );
        // Two wrong pairs: the classic message each time, and the prompt goes on.
        assert_eq!(err.matches(AUTH_FAILED).count(), 2, "{err}");
        // GET refuses to replace copy.bin, then -f replaces it.
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(&std::fs::read(c.dir.path().join("copy.bin")).unwrap(), data);
        // The classic -get wrote the file under its name (it existed: refused).
        assert!(text.contains("wrote copy.bin"), "{text}");
    });
}

#[test]
fn ini_configuration_files_work_end_to_end_and_rotate_rewrites_them() {
    with_timeout(LIMIT, || {
        // configparser-style files, as one classic implementation wrote them.
        let c = Cluster::start_with_users(
            "[credentials]\r\nAlice = SimplePassword\r\nbob : Velvet77\r\n",
        );
        let mut dfc = String::from("; written for configparser\n[server_list]\n");
        for n in &c.nodes {
            dfc.push_str(&format!("{} = {}\n", n.name, n.addr));
        }
        dfc.push_str("\n[credentials]\nusername = Alice\npassword = SimplePassword\n");
        std::fs::write(&c.dfc, &dfc).unwrap();
        let files = make_files(c.dir.path(), &[2048]);
        ok(&c.client_env(&[], &["put", &files[0].0], None));
        assert_eq!(ok(&c.client_env(&[], &["list"], None)).trim(), files[0].0);
        let out = c.client_env(&[("VAULT_NEW_PASSWORD", "Opal-Sky-8")], &["rotate"], None);
        ok(&out);
        let after = std::fs::read_to_string(&c.dfc).unwrap();
        assert_eq!(
            after,
            dfc.replace("password = SimplePassword", "password = Opal-Sky-8")
        );
        get_and_compare_with(&c, &files[0].0, &files[0].1);
    });
}

#[test]
fn serve_accepts_the_classic_and_listen_forms_and_refuses_conflicts() {
    with_timeout(LIMIT, || {
        // The cluster's DFS1 runs as `serve /DFS1 PORT --listen 127.0.0.1`
        // and DFS2 as `serve --listen 127.0.0.1 --port PORT`: they listen
        // on loopback, at the port they report.
        let c = Cluster::start();
        for n in &c.nodes[..2] {
            assert!(n.addr.starts_with("127.0.0.1:"), "{} {}", n.name, n.addr);
        }
        assert!(c.dir.path().join("DFS1").is_dir(), "/DFS1 meant ./DFS1");
        let files = make_files(c.dir.path(), &[1000]);
        put_all(&c, &files);
        get_and_compare(&c, &files[0].0, &files[0].1);
        // Conflicts and ambiguity are clear errors, and nothing starts.
        let node = |args: &[&str]| {
            std::process::Command::new(bin("vault-node"))
                .args(args)
                .current_dir(c.dir.path())
                .output()
                .unwrap()
        };
        let out = node(&["serve", "DFS1", "--listen", "127.0.0.1:1", "--port", "2"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("disagree"), "{}", stderr(&out));
        let out = node(&["serve", "DFS1", "--listen", "127.0.0.1"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("no port"), "{}", stderr(&out));
        let out = node(&["serve", "/tmp", "1"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("ambiguous"), "{}", stderr(&out));
    });
}
