//! Issue 16's messages, end to end through the real binaries: each says
//! what happened and what to do.

use std::path::Path;
use std::time::Duration;

use vault_tests::*;

const LIMIT: Duration = Duration::from_secs(240);
const PW: &str = "Crimson33";

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn a_missing_config_names_the_cause_once_and_suggests_c() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let o = c.client(PW, &["-c", "nosuch.conf", "list"]);
        let err = stderr(&o);
        assert!(!o.status.success());
        assert!(
            err.contains("(use -c PATH to name the configuration file)"),
            "{err}"
        );
        assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    });
}

#[test]
fn get_into_a_folder_and_folder_hints_and_empty_lists() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let d = c.dir.path();
        // An empty vault says so.
        let o = c.client(PW, &["list"]);
        assert_eq!(ok(&o), "");
        assert!(stderr(&o).contains("the vault is empty"), "{}", stderr(&o));

        write(d, "tree/src/main.rs", "fn main() {}");
        write(d, "tree/docs/a.md", "# a");
        write(d, "a.txt", "hello");
        ok(&c.client(PW, &["put", "-r", "tree"]));
        ok(&c.client(PW, &["put", "a.txt"]));

        // Nothing under a prefix says so, and exits 0.
        let o = c.client(PW, &["list", "tree/photo"]);
        assert_eq!(ok(&o), "");
        assert!(
            stderr(&o).contains("no files under tree/photo"),
            "{}",
            stderr(&o)
        );

        // -o DIR writes into the folder, as cp does; --force replaces it.
        std::fs::create_dir(d.join("out")).unwrap();
        ok(&c.client(PW, &["get", "a.txt", "-o", "out"]));
        assert_eq!(
            std::fs::read_to_string(d.join("out/a.txt")).unwrap(),
            "hello"
        );
        let o = c.client(PW, &["get", "a.txt", "-o", "out"]);
        assert!(
            stderr(&o).contains("already exists (use --force"),
            "{}",
            stderr(&o)
        );
        ok(&c.client(PW, &["get", "a.txt", "-o", "out", "--force"]));

        // A folder without -r gets the hint.
        for args in [&["delete", "tree/src"][..], &["get", "tree/docs"][..]] {
            let o = c.client(PW, args);
            assert!(!o.status.success());
            let want = format!("{} is a folder in the vault; use -r", args[1]);
            assert!(stderr(&o).contains(&want), "{}", stderr(&o));
        }
        // A name that is neither still says so.
        let o = c.client(PW, &["get", "tree/nothing"]);
        assert!(
            stderr(&o).contains("no such file in the vault"),
            "{}",
            stderr(&o)
        );
    });
}

#[test]
fn a_partial_put_stores_the_rest_names_the_missing_and_fails() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        write(c.dir.path(), "a.txt", "hello");
        let o = c.client(PW, &["put", "a.txt", "nosuchfile.txt"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stdout(&o).contains("stored a.txt"), "{}", stdout(&o));
        assert!(
            stderr(&o).contains("cannot read nosuchfile.txt"),
            "{}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("not stored"), "{}", stderr(&o));
        assert_eq!(ok(&c.client(PW, &["list"])), "a.txt\n");
    });
}

#[test]
fn get_r_into_an_existing_tree_prints_one_line_with_a_count() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let d = c.dir.path();
        for i in 0..5 {
            write(d, &format!("t/f{i}.txt"), "x");
        }
        let o = c.client(PW, &["put", "-r", "t"]);
        assert!(ok(&o).contains("stored 5 files,"), "{}", stdout(&o));
        ok(&c.client(PW, &["get", "-r", "t", "-o", "back"]));
        let o = c.client(PW, &["get", "-r", "t", "-o", "back"]);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(
            err.contains("5 files already exist (use --force to overwrite); -v lists them"),
            "{err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{err}"
        );
        let o = c.client(PW, &["get", "-r", "t", "-o", "back", "-v"]);
        assert_eq!(
            stderr(&o).matches("already exists").count(),
            5,
            "{}",
            stderr(&o)
        );
    });
}

#[test]
fn plurals_and_deletions_counted_apart() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let d = c.dir.path();
        write(d, "one/a.txt", "a");
        let o = c.client(PW, &["put", "-r", "one"]);
        assert!(ok(&o).contains("stored 1 file,"), "{}", stdout(&o));
        write(d, "b.txt", "b");
        write(d, "c.txt", "c");
        ok(&c.client(PW, &["put", "b.txt", "c.txt"]));
        ok(&c.client(PW, &["delete", "c.txt"]));
        let out = ok(&c.client(PW, &["check"]));
        assert!(
            out.contains("checked 2 files and 1 deletion: 2 fully redundant, 0 degraded, 0 lost"),
            "{out}"
        );
    });
}

#[test]
fn two_nodes_down_reasons_once_never_empty() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        write(c.dir.path(), "t/a.txt", "hello");
        ok(&c.client(PW, &["put", "-r", "t"]));
        let env = [("VAULT_PASSWORD", PW), ("VAULT_NEW_PASSWORD", "Topaz-12")];
        ok(&c.client_env(&env, &["rotate"], None));
        c.kill(1);
        c.kill(2);
        let o = c.client("Topaz-12", &["list", "--allow-stale"]);
        // A file shown that cannot be rebuilt now is not a clean listing.
        assert!(!o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains("t/a.txt [incomplete]"),
            "{}",
            stdout(&o)
        );
        assert!(
            stderr(&o).contains("1 file cannot be rebuilt"),
            "{}",
            stderr(&o)
        );
        let o = c.client(
            "Topaz-12",
            &["get", "-r", "t", "-o", "back", "--allow-stale"],
        );
        let err = stderr(&o);
        assert!(!o.status.success(), "{err}");
        assert!(!err.contains("t/a.txt: t/a.txt:"), "{err}");
        assert!(!err.contains("()"), "{err}");
    });
}

#[test]
fn server_lines_out_of_order_are_named_as_such() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        // DFS1's and DFS2's addresses swapped: each presents the other's
        // certificate.
        let text = std::fs::read_to_string(&c.dfc).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let (one, two) = (
            lines.iter().position(|l| l.contains("DFS1")).unwrap(),
            lines.iter().position(|l| l.contains("DFS2")).unwrap(),
        );
        let addr = |l: &str| l.split_whitespace().last().unwrap().to_string();
        let mut swapped: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        swapped[one] = format!("Server DFS1 {}", addr(lines[two]));
        swapped[two] = format!("Server DFS2 {}", addr(lines[one]));
        std::fs::write(&c.dfc, swapped.join("\n") + "\n").unwrap();
        let out = c.client(PW, &["list"]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("presents DFS2's certificate")
                && err.contains("presents DFS1's certificate")
                && err.contains("are the Server lines in dfc.conf in order?"),
            "{err}"
        );
    });
}

#[test]
fn a_finished_rotation_run_again_says_so_and_exits_0() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let env = [("VAULT_PASSWORD", PW), ("VAULT_NEW_PASSWORD", "Topaz-12")];
        ok(&c.client_env(&env, &["rotate"], None));
        let rotated = std::fs::read_to_string(&c.dfc).unwrap();
        // dfc.conf holds the new password's digest now: the same command
        // again says the change went through, and changes nothing.
        let o = c.client_env(&env, &["rotate"], None);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            out.contains("the password was already changed to the new one (an earlier rotate finished); nothing to do"),
            "{out}"
        );
        assert!(!out.contains("updated"), "{out}");
        assert_eq!(std::fs::read_to_string(&c.dfc).unwrap(), rotated);
        // A dfc.conf still holding the old password's digest is rewritten.
        let old = rotated.replace(&md5_hex(b"Topaz-12"), &md5_hex(PW.as_bytes()));
        std::fs::write(&c.dfc, &old).unwrap();
        let o = c.client_env(&env, &["--json", "rotate"], None);
        let json: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
        assert_eq!(json["already"], true, "{json}");
        assert_eq!(json["config_updated"], true, "{json}");
        assert_eq!(json["rotated"], serde_json::json!([]), "{json}");
        assert_eq!(std::fs::read_to_string(&c.dfc).unwrap(), rotated);
        // A wrong new password is still refused, as before.
        let wrong = [
            ("VAULT_PASSWORD", PW),
            ("VAULT_NEW_PASSWORD", "Wrong-New-3"),
        ];
        let o = c.client_env(&wrong, &["rotate"], None);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("Invalid Username/Password"),
            "{}",
            stderr(&o)
        );
    });
}
