//! Folders and many files, end to end: `put -r`, `get -r`, `list PREFIX`,
//! `delete -r`, incremental re-PUT, through the real binaries.

use std::path::{Path, PathBuf};

use vault_tests::*;

use super::LIMIT;

/// Every regular file under `dir`, relative, with its bytes, sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A tree with nested folders, empty files, spaces, non-ASCII names and
/// two files that share a base name.
fn make_tree(root: &Path) -> PathBuf {
    let t = root.join("photos");
    let files: &[(&str, usize)] = &[
        ("2024/a.jpg", 70_000),
        ("2024/notes.txt", 1_200),
        ("2023/notes.txt", 900),
        ("2023/deep/er/still deeper/x.bin", 3),
        ("empty", 0),
        ("with space.txt", 10),
        ("ünïcødé/日本語.txt", 42),
        ("big.bin", 1_500_000),
    ];
    for (rel, size) in files {
        let p = t.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, random(*size)).unwrap();
    }
    std::fs::create_dir_all(t.join("empty folder")).unwrap();
    t
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

#[test]
fn a_tree_round_trips_byte_for_byte() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let src = make_tree(c.dir.path());
        #[cfg(unix)]
        {
            // A link out of the tree is reported, never followed.
            std::os::unix::fs::symlink("/etc", src.join("etc-link")).unwrap();
        }
        let out = c.client("Crimson33", &["put", "-r", src.to_str().unwrap()]);
        let text = ok(&out);
        assert!(
            text.contains("stored 8 files, 0 unchanged, 0 failed"),
            "{text}"
        );
        #[cfg(unix)]
        assert!(stderr(&out).contains("etc-link"), "{}", stderr(&out));
        let listed = lines(&ok(&c.client("Crimson33", &["list"])));
        assert_eq!(
            listed,
            [
                "photos/2023/deep/er/still deeper/x.bin",
                "photos/2023/notes.txt",
                "photos/2024/a.jpg",
                "photos/2024/notes.txt",
                "photos/big.bin",
                "photos/empty",
                "photos/with space.txt",
                "photos/ünïcødé/日本語.txt",
            ]
        );
        let back = c.dir.path().join("back");
        let text = ok(&c.client(
            "Crimson33",
            &["get", "-r", "photos", "-o", back.to_str().unwrap()],
        ));
        assert!(text.contains("wrote 8 files"), "{text}");
        #[cfg(unix)]
        std::fs::remove_file(src.join("etc-link")).unwrap();
        let mut want = tree(&src);
        let got = tree(&back.join("photos"));
        want.retain(|(n, _)| !n.contains("empty folder"));
        assert_eq!(got.len(), want.len());
        for ((gn, gb), (wn, wb)) in got.iter().zip(&want) {
            assert_eq!(gn, wn);
            assert!(gb == wb, "{gn}: bytes differ");
        }
        // A single file by its path; without -o it lands under its file name.
        ok(&c.client("Crimson33", &["get", "photos/2023/notes.txt"]));
        assert_eq!(
            std::fs::read(c.dir.path().join("notes.txt")).unwrap(),
            std::fs::read(src.join("2023/notes.txt")).unwrap()
        );
        // get -r refuses to overwrite without --force, and does with it.
        let again = c.client(
            "Crimson33",
            &["get", "-r", "photos", "-o", back.to_str().unwrap()],
        );
        assert!(!again.status.success());
        assert!(
            stderr(&again).contains("already exist"),
            "{}",
            stderr(&again)
        );
        std::fs::write(back.join("photos/2024/a.jpg"), b"changed here").unwrap();
        ok(&c.client(
            "Crimson33",
            &[
                "get",
                "-r",
                "photos",
                "-o",
                back.to_str().unwrap(),
                "--force",
            ],
        ));
        assert_eq!(
            std::fs::read(back.join("photos/2024/a.jpg")).unwrap(),
            std::fs::read(src.join("2024/a.jpg")).unwrap()
        );
    });
}

#[test]
fn hostile_names_are_refused() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        for args in [
            vec!["list", "../x"],
            vec!["get", "-r", "../../etc", "-o", "out"],
            vec!["delete", "-r", "a/../b"],
            vec!["delete", "-r", "/"],
            vec!["list", "a//b"],
        ] {
            let out = c.client("Crimson33", &args);
            assert!(!out.status.success(), "{args:?} succeeded");
            let err = stderr(&out);
            assert!(
                err.contains("component")
                    || err.contains("whole vault")
                    || err.contains("absolute"),
                "{args:?}: {err}"
            );
        }
        // A local file whose name cannot be a vault name is skipped, named.
        let t = c.dir.path().join("odd");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("fine.txt"), b"ok").unwrap();
        std::fs::write(t.join("bell\x07.txt"), b"no").unwrap();
        let out = c.client("Crimson33", &["put", "-r", t.to_str().unwrap()]);
        ok(&out);
        assert!(
            stderr(&out).contains("control character"),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            lines(&ok(&c.client("Crimson33", &["list"]))),
            ["odd/fine.txt"]
        );
        assert!(!c.dir.path().join("etc").exists() && !c.dir.path().join("out").exists());
    });
}

/// Alice's blobs on one node: ids and bytes (ciphertext under fresh
/// nonces: a blob written again has other bytes).
fn blobs_of(c: &Cluster, node: usize) -> Vec<(String, Vec<u8>)> {
    c.blobs(node, "alice")
}

#[test]
fn re_put_sends_only_what_changed_and_drops_old_parts() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let src = make_tree(c.dir.path());
        ok(&c.client("Crimson33", &["put", "-r", src.to_str().unwrap()]));
        let before: Vec<_> = (0..4).map(|i| blobs_of(&c, i)).collect();
        // Unchanged: nothing is uploaded, no node file is touched.
        let text = ok(&c.client("Crimson33", &["put", "-r", "-v", src.to_str().unwrap()]));
        assert!(text.contains("stored 0 files, 8 unchanged"), "{text}");
        assert!(text.contains("unchanged photos/2024/a.jpg"), "{text}");
        for (i, b) in before.iter().enumerate() {
            assert_eq!(&blobs_of(&c, i), b, "DFS{} changed", i + 1);
        }
        // One file changes: it alone is sent, its old parts go.
        std::fs::write(src.join("2024/notes.txt"), random(1_300)).unwrap();
        let text = ok(&c.client("Crimson33", &["put", "-r", "-v", src.to_str().unwrap()]));
        assert!(text.contains("stored 1 file, 7 unchanged"), "{text}");
        assert!(text.contains("stored photos/2024/notes.txt"), "{text}");
        for (i, b) in before.iter().enumerate() {
            assert_eq!(
                c.blob_ids(i, "alice").len(),
                b.len(),
                "DFS{} keeps old parts",
                i + 1
            );
        }
        // --checksum compares contents: same size and time, other bytes.
        let p = src.join("with space.txt");
        let t = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::fs::write(&p, b"0123456789").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
        let text = ok(&c.client("Crimson33", &["put", "-r", src.to_str().unwrap()]));
        assert!(
            text.contains("stored 0 files"),
            "same size and time: {text}"
        );
        let text = ok(&c.client(
            "Crimson33",
            &["put", "-r", "--checksum", src.to_str().unwrap()],
        ));
        assert!(text.contains("stored 1 file,"), "{text}");
        let back = c.dir.path().join("check");
        ok(&c.client(
            "Crimson33",
            &["get", "-r", "photos", "-o", back.to_str().unwrap()],
        ));
        assert_eq!(
            std::fs::read(back.join("photos/with space.txt")).unwrap(),
            b"0123456789"
        );
        assert_eq!(
            std::fs::read(back.join("photos/2024/notes.txt")).unwrap(),
            std::fs::read(src.join("2024/notes.txt")).unwrap()
        );
    });
}

#[test]
fn list_and_delete_by_prefix_touch_only_that_prefix() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let src = make_tree(c.dir.path());
        ok(&c.client("Crimson33", &["put", "-r", src.to_str().unwrap()]));
        std::fs::write(c.dir.path().join("photos2.txt"), b"sibling").unwrap();
        ok(&c.client("Crimson33", &["put", "photos2.txt"]));
        assert_eq!(
            lines(&ok(&c.client("Crimson33", &["list", "photos/2024"]))),
            ["photos/2024/a.jpg", "photos/2024/notes.txt"]
        );
        // A prefix matches whole components: "photos" is not "photos2.txt".
        assert_eq!(
            lines(&ok(&c.client("Crimson33", &["list", "photos"]))).len(),
            8
        );
        let text = ok(&c.client("Crimson33", &["delete", "-r", "photos/2023"]));
        assert!(text.contains("deleted 2 files"), "{text}");
        let left = lines(&ok(&c.client("Crimson33", &["list"])));
        assert_eq!(left.len(), 7, "{left:?}");
        assert!(
            left.iter().all(|n| !n.starts_with("photos/2023/")),
            "{left:?}"
        );
        assert!(left.contains(&"photos2.txt".to_string()));
        // Deleted again: nothing there.
        let again = c.client("Crimson33", &["delete", "-r", "photos/2023"]);
        assert!(!again.status.success());
        assert!(
            stderr(&again).contains("no such file"),
            "{}",
            stderr(&again)
        );
    });
}
