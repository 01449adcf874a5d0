//! The gateway (`vault-client serve`, issue 18) driven by the real S3
//! clients people use: the aws cli, rclone and boto3 (its script is
//! `tests/gateway/boto_checks.py`). Each test starts four real nodes and a
//! gateway on loopback ports the system picks, and compares every byte,
//! name and status code with what it sent and with what S3 does.
//!
//! The clients are not Rust: `.ci/install-gateway-deps` installs them. A
//! machine without them fails these tests, saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use md5::{Digest, Md5};
use serde_json::{json, Value};
use vault_tests::gateway::Gateway;
use vault_tests::*;

const LIMIT: Duration = Duration::from_secs(300);
const PASSWORD: &str = "Crimson33";
const MIB: usize = 1 << 20;
const INSTALL: &str = "run `.ci/install-gateway-deps` (as root) to install the S3 clients \
     the gateway tests drive (aws cli, boto3, rclone)";
const BOTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway/boto_checks.py");

/// Fails the test unless `cmd args` runs and succeeds.
fn require(what: &str, cmd: &str, args: &[&str]) {
    vault_tests::gateway::require(what, cmd, args, INSTALL);
}

fn require_aws() {
    require("the aws cli", "aws", &["--version"]);
}

fn require_rclone() {
    require("rclone", "rclone", &["version"]);
}

fn require_boto3() {
    require("boto3", "python3", &["-c", "import boto3"]);
}

/// Runs `cmd` (bounded by the harness's command timeout) and returns its
/// output.
fn run(mut cmd: Command, what: &str) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}: {INSTALL}"));
    collect(child, what)
}

/// Asserts `o` succeeded, naming `what` ran; its standard output.
#[track_caller]
fn ok_tool(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// `aws --endpoint-url GATEWAY args`, from `cwd`, with only the gateway's
/// credentials (nothing of the machine's aws configuration).
fn aws(gw: &Gateway, cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("aws");
    cmd.arg("--endpoint-url")
        .arg(&gw.s3)
        .args(args)
        .current_dir(cwd)
        .env("AWS_ACCESS_KEY_ID", &gw.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &gw.secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL");
    run(cmd, &format!("aws {}", args.join(" ")))
}

/// `aws ...` that must succeed: its standard output.
#[track_caller]
fn aws_ok(gw: &Gateway, cwd: &Path, args: &[&str]) -> String {
    let o = aws(gw, cwd, args);
    ok_tool(&o, &format!("aws {}", args.join(" ")))
}

/// `rclone args` with the remote `v:` (the gateway) configured from the
/// environment and an empty config file `conf`, times in UTC.
fn rclone(gw: &Gateway, conf: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("rclone");
    cmd.arg("--config")
        .arg(conf)
        .args(["--retries", "1", "--low-level-retries", "2"])
        .args(args)
        .env("TZ", "UTC")
        // rclone 1.60 fails to start with a custom CA bundle in the
        // environment ("HTTPClient's transport unsupported type"); the
        // gateway is plain HTTP on loopback.
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG_V_TYPE", "s3")
        .env("RCLONE_CONFIG_V_PROVIDER", "Other")
        .env("RCLONE_CONFIG_V_ENV_AUTH", "false")
        .env("RCLONE_CONFIG_V_ENDPOINT", &gw.s3)
        .env("RCLONE_CONFIG_V_REGION", "us-east-1")
        .env("RCLONE_CONFIG_V_ACCESS_KEY_ID", &gw.access_key)
        .env("RCLONE_CONFIG_V_SECRET_ACCESS_KEY", &gw.secret)
        .env("RCLONE_CONFIG_V_FORCE_PATH_STYLE", "true");
    run(cmd, &format!("rclone {}", args.join(" ")))
}

#[track_caller]
fn rclone_ok(gw: &Gateway, conf: &Path, args: &[&str]) -> Output {
    let o = rclone(gw, conf, args);
    ok_tool(&o, &format!("rclone {}", args.join(" ")));
    o
}

/// Runs `boto_checks.py command args` against the gateway: its JSON.
fn boto(gw: &Gateway, command: &str, args: &Value) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg(BOTO)
        .arg(command)
        .arg(args.to_string())
        .env("S3_ENDPOINT", &gw.s3)
        .env("S3_ACCESS_KEY", &gw.access_key)
        .env("S3_SECRET_KEY", &gw.secret)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL");
    let o = run(cmd, &format!("boto_checks.py {command}"));
    let out = ok_tool(&o, &format!("boto_checks.py {command}"));
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("boto_checks.py {command}: not JSON ({e}): {out}"))
}

/// The vault's names, as `vault-client list` prints them.
fn vault_list(c: &Cluster) -> Vec<String> {
    let o = c.client(PASSWORD, &["list"]);
    ok(&o).lines().map(str::to_string).collect()
}

/// The listed names under `bucket/` (the bucket's own marker left out).
fn vault_files(c: &Cluster, bucket: &str) -> BTreeSet<String> {
    let prefix = format!("{bucket}/");
    vault_list(c)
        .into_iter()
        .filter(|n| n.starts_with(&prefix) && *n != prefix)
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// `vault-client get name` into a temp file: its bytes.
fn vault_get(c: &Cluster, name: &str) -> Vec<u8> {
    let out = c.dir.path().join("vault-get.out");
    let _ = std::fs::remove_file(&out);
    ok(&c.client(PASSWORD, &["get", name, "-o", out.to_str().unwrap()]));
    let bytes = std::fs::read(&out).expect("read the file got");
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// Asserts two trees hold the same names and bytes.
#[track_caller]
fn assert_same_tree(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>) {
    let g: Vec<&String> = got.keys().collect();
    let w: Vec<&String> = want.keys().collect();
    assert_eq!(g, w, "the trees hold different names");
    for (name, bytes) in want {
        assert!(
            got[name] == *bytes,
            "{name}: bytes differ ({} vs {} bytes)",
            got[name].len(),
            bytes.len()
        );
    }
}

fn write(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, data).unwrap();
}

/// The S3 ETag of `data` uploaded in parts of `part` bytes: the MD5 of the
/// parts' MD5s, `-N`.
fn multipart_etag(data: &[u8], part: usize) -> String {
    let mut all = Md5::new();
    let mut n = 0;
    for chunk in data.chunks(part) {
        all.update(Md5::digest(chunk));
        n += 1;
    }
    let hex: String = all.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{n}")
}

/// Asserts the spool holds only its `lock` file and is private (0700).
#[track_caller]
fn assert_spool_clean(c: &Cluster) {
    use std::os::unix::fs::PermissionsExt;
    let spool = Gateway::spool(c);
    let mode = std::fs::metadata(&spool)
        .unwrap_or_else(|e| panic!("spool {}: {e}", spool.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "spool mode {:o}", mode & 0o777);
    let names: Vec<String> = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["lock".to_string()],
        "the spool holds more than its lock"
    );
}

/// A folder for the test's own plaintext files in the cluster's temp dir.
fn work_dir(c: &Cluster) -> PathBuf {
    let d = c.dir.path().join("work");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Stops the gateway, which must exit 0 by itself.
fn stop(gw: Gateway) {
    let o = gw.stop();
    assert!(
        o.status.success(),
        "the gateway did not exit 0 on SIGTERM ({}): {}",
        o.status,
        stderr(&o)
    );
}

#[test]
fn aws_cli_round_trips() {
    require_aws();
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let w = work_dir(&c);

        let out = aws_ok(&gw, &w, &["s3", "mb", "s3://photos"]);
        assert!(out.contains("make_bucket: photos"), "aws s3 mb: {out}");
        let buckets = aws_ok(&gw, &w, &["s3", "ls"]);
        let names: Vec<&str> = buckets
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        assert_eq!(names, vec!["photos"], "aws s3 ls: {buckets}");

        // One small file, one of 20 MiB (multipart: over 8 MiB), up and down.
        let small = random(1000);
        let big = random(20 * MIB);
        write(&w.join("small.bin"), &small);
        write(&w.join("big.bin"), &big);
        aws_ok(&gw, &w, &["s3", "cp", "small.bin", "s3://photos/small.bin"]);
        aws_ok(&gw, &w, &["s3", "cp", "big.bin", "s3://photos/big.bin"]);
        aws_ok(
            &gw,
            &w,
            &["s3", "cp", "s3://photos/small.bin", "down/small.bin"],
        );
        aws_ok(
            &gw,
            &w,
            &["s3", "cp", "s3://photos/big.bin", "down/big.bin"],
        );
        assert!(std::fs::read(w.join("down/small.bin")).unwrap() == small);
        assert!(
            std::fs::read(w.join("down/big.bin")).unwrap() == big,
            "the 20 MiB file came back different"
        );
        let head: Value = serde_json::from_str(&aws_ok(
            &gw,
            &w,
            &[
                "s3api",
                "head-object",
                "--bucket",
                "photos",
                "--key",
                "big.bin",
            ],
        ))
        .unwrap();
        assert_eq!(
            head["ETag"].as_str().unwrap().trim_matches('"'),
            multipart_etag(&big, 8 * MIB),
            "multipart ETag"
        );
        assert_eq!(head["ContentLength"], json!(20 * MIB));
        let head: Value = serde_json::from_str(&aws_ok(
            &gw,
            &w,
            &[
                "s3api",
                "head-object",
                "--bucket",
                "photos",
                "--key",
                "small.bin",
            ],
        ))
        .unwrap();
        assert_eq!(
            head["ETag"].as_str().unwrap().trim_matches('"'),
            md5_hex(&small)
        );
        assert!(vault_get(&c, "photos/big.bin") == big, "vault get big.bin");

        // A tree, synced up.
        let tree = w.join("tree");
        write(&tree.join("a.txt"), b"first version of a\n");
        write(&tree.join("empty.txt"), b"");
        write(&tree.join("sub/b.bin"), &random(70_000));
        write(&tree.join("sub/deeper/c.txt"), b"c in a deeper folder\n");
        aws_ok(&gw, &w, &["s3", "sync", "tree", "s3://photos/tree"]);

        let ls = aws_ok(&gw, &w, &["s3", "ls", "s3://photos/"]);
        let mut top: Vec<String> = ls
            .lines()
            .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
            .collect();
        top.sort();
        assert_eq!(
            top,
            vec!["big.bin", "small.bin", "tree/"],
            "aws s3 ls: {ls}"
        );
        let want_sizes: BTreeMap<String, u64> = [
            ("big.bin", big.len() as u64),
            ("small.bin", small.len() as u64),
            ("tree/a.txt", 19),
            ("tree/empty.txt", 0),
            ("tree/sub/b.bin", 70_000),
            ("tree/sub/deeper/c.txt", 21),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let rec = aws_ok(&gw, &w, &["s3", "ls", "--recursive", "s3://photos/"]);
        let got_sizes: BTreeMap<String, u64> = rec
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f.len(), 4, "aws s3 ls --recursive line: {l}");
                (f[3].to_string(), f[2].parse().expect("size"))
            })
            .collect();
        assert_eq!(got_sizes, want_sizes, "aws s3 ls --recursive: {rec}");
        let in_vault: BTreeSet<String> = want_sizes.keys().map(|k| format!("photos/{k}")).collect();
        assert_eq!(vault_files(&c, "photos"), in_vault, "vault-client list");

        // rm.
        let out = aws_ok(&gw, &w, &["s3", "rm", "s3://photos/small.bin"]);
        assert!(
            out.contains("delete: s3://photos/small.bin"),
            "aws s3 rm: {out}"
        );
        assert!(!vault_files(&c, "photos").contains("photos/small.bin"));

        // A change (another size) and a deletion, synced with --delete.
        write(&tree.join("a.txt"), b"second, longer version of a\n");
        std::fs::remove_file(tree.join("sub/b.bin")).unwrap();
        let out = aws_ok(
            &gw,
            &w,
            &["s3", "sync", "tree", "s3://photos/tree", "--delete"],
        );
        assert!(
            out.contains("delete: s3://photos/tree/sub/b.bin"),
            "sync --delete: {out}"
        );
        assert!(
            out.contains("upload: tree/a.txt to s3://photos/tree/a.txt"),
            "{out}"
        );
        assert_eq!(
            vault_files(&c, "photos"),
            set(&[
                "photos/big.bin",
                "photos/tree/a.txt",
                "photos/tree/empty.txt",
                "photos/tree/sub/deeper/c.txt",
            ]),
            "vault-client list after sync --delete"
        );

        // And down into an empty folder: the same tree.
        aws_ok(&gw, &w, &["s3", "sync", "s3://photos/tree", "tree-down"]);
        assert_same_tree(&read_tree(&w.join("tree-down")), &read_tree(&tree));

        assert_spool_clean(&c);
        stop(gw);
    });
}

#[test]
fn rclone_copy_check_sync_and_mtimes() {
    require_rclone();
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let w = work_dir(&c);
        let conf = w.join("rclone.conf");
        std::fs::write(&conf, "").unwrap();

        let src = w.join("src");
        write(&src.join("top.txt"), b"top of the tree\n");
        write(&src.join("empty.txt"), b"");
        write(&src.join("nine.bin"), &random(9 * MIB));
        write(&src.join("a/b/c/deep.txt"), b"deep down\n");
        write(&src.join("a/old.txt"), b"an old file\n");
        // 2001-02-03T04:05:06Z.
        let old = UNIX_EPOCH + Duration::from_secs(981_173_106);
        std::fs::File::options()
            .write(true)
            .open(src.join("a/old.txt"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let srcs = src.to_str().unwrap();

        rclone_ok(&gw, &conf, &["copy", srcs, "v:pics/tree"]);
        let o = rclone_ok(&gw, &conf, &["check", srcs, "v:pics/tree"]);
        assert!(
            stderr(&o).contains("0 differences found"),
            "rclone check: {}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("5 matching files"), "{}", stderr(&o));
        assert_eq!(
            vault_files(&c, "pics"),
            set(&[
                "pics/tree/a/b/c/deep.txt",
                "pics/tree/a/old.txt",
                "pics/tree/empty.txt",
                "pics/tree/nine.bin",
                "pics/tree/top.txt",
            ]),
            "vault-client list after rclone copy"
        );
        assert!(
            vault_get(&c, "pics/tree/nine.bin") == std::fs::read(src.join("nine.bin")).unwrap()
        );

        // The modification time kept: listed, and given back on the way down.
        let o = rclone_ok(&gw, &conf, &["lsl", "v:pics/tree/a", "--max-depth", "1"]);
        let line = stdout(&o);
        assert!(
            line.contains("2001-02-03 04:05:06") && line.contains("old.txt"),
            "rclone lsl: {line}"
        );
        let down = w.join("down");
        rclone_ok(&gw, &conf, &["copy", "v:pics/tree", down.to_str().unwrap()]);
        assert_same_tree(&read_tree(&down), &read_tree(&src));
        let got = std::fs::metadata(down.join("a/old.txt"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            got.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            981_173_106,
            "mtime of the file copied down"
        );

        // A deletion, synced: gone from the vault.
        std::fs::remove_file(src.join("top.txt")).unwrap();
        rclone_ok(&gw, &conf, &["sync", srcs, "v:pics/tree"]);
        assert_eq!(
            vault_files(&c, "pics"),
            set(&[
                "pics/tree/a/b/c/deep.txt",
                "pics/tree/a/old.txt",
                "pics/tree/empty.txt",
                "pics/tree/nine.bin",
            ]),
            "vault-client list after rclone sync"
        );
        rclone_ok(&gw, &conf, &["check", srcs, "v:pics/tree"]);

        assert_spool_clean(&c);
        stop(gw);
    });
}

/// Lower-case hex of `data`.
fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn boto3_presign_ranges_copy_delete_metadata() {
    require_boto3();
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let w = work_dir(&c);
        let n = 12 * MIB + 12_345;
        let data = random(n);
        let file = w.join("data.bin");
        write(&file, &data);
        // The vault's part boundary (four parts of ceil(n/4) bytes) and the
        // S3 upload's part boundary (5 MiB).
        let vault_part = n.div_ceil(4);
        let s3_part = 5 * MIB;
        let ranges: Vec<(String, usize, usize)> = vec![
            ("bytes=100-199".into(), 100, 199),
            ("bytes=-10".into(), n - 10, n - 1),
            (
                format!("bytes={}-{}", vault_part - 100, vault_part + 99),
                vault_part - 100,
                vault_part + 99,
            ),
            (
                format!("bytes={}-{}", s3_part - 50, s3_part + 49),
                s3_part - 50,
                s3_part + 49,
            ),
            (format!("bytes={}-", n - 7), n - 7, n - 1),
        ];
        let args = json!({
            "file": file,
            "part_size": s3_part,
            "ranges": ranges.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        });
        let r = boto(&gw, "features", &args);
        let md5 = md5_hex(&data);

        assert_eq!(r["single_etag"], json!(md5), "single PUT ETag");
        assert_eq!(
            r["multi_etag"],
            json!(multipart_etag(&data, s3_part)),
            "multipart ETag"
        );
        assert_eq!(
            r["presigned"],
            json!({"status": 200, "md5": md5, "len": n}),
            "presigned GET"
        );
        for key in ["single.bin", "multi.bin"] {
            for (spec, a, b) in &ranges {
                let got = &r["ranges"][key][spec];
                assert_eq!(
                    *got,
                    json!({
                        "status": 206,
                        "content_range": format!("bytes {a}-{b}/{n}"),
                        "hex": hex(&data[*a..=*b]),
                    }),
                    "{key} Range {spec}"
                );
            }
        }
        assert_eq!(r["copy_etags"], json!([md5, md5]), "CopyObject ETags");
        assert_eq!(r["copy_md5s"], json!([md5, md5]), "copies read back");
        let dels = ["del/k1.txt", "del/k2.txt", "del/sub/k3.txt"];
        assert_eq!(r["del_listed_before"], json!(dels));
        assert_eq!(r["deleted"], json!(dels), "DeleteObjects Deleted");
        assert_eq!(r["delete_errors"], json!([]), "DeleteObjects Errors");
        assert_eq!(r["del_listed_after"], json!([]));
        assert_eq!(r["del_heads"], json!([404, 404, 404]));
        let meta = json!({"a": "1", "b": "x y"});
        assert_eq!(
            r["meta_head"],
            json!({
                "metadata": meta,
                "content_type": "text/plain",
                "length": 14,
                "etag": md5_hex(b"hello metadata"),
            }),
            "HeadObject of the object put with metadata"
        );
        assert_eq!(
            r["meta_get"],
            json!({"metadata": meta, "content_type": "text/plain", "body": "hello metadata"}),
            "GetObject of the object put with metadata"
        );

        assert_eq!(
            vault_files(&c, "docs"),
            set(&[
                "docs/copy.bin",
                "docs/meta.txt",
                "docs/multi.bin",
                "docs/single.bin"
            ]),
            "vault-client list"
        );
        assert_eq!(vault_files(&c, "backup"), set(&["backup/deep/copy.bin"]));
        assert!(
            vault_get(&c, "backup/deep/copy.bin") == data,
            "the copy, read by vault-client"
        );
        assert!(vault_get(&c, "docs/multi.bin") == data);
        assert_spool_clean(&c);
        stop(gw);
    });
}

#[test]
fn boto3_bad_signatures_and_keys_are_refused() {
    require_boto3();
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let r = boto(&gw, "security", &json!({}));
        let refused = |code: &str| json!({"status": 403, "code": code});
        assert_eq!(
            r["wrong_secret"],
            refused("SignatureDoesNotMatch"),
            "PUT, wrong secret"
        );
        assert_eq!(
            r["wrong_secret_get"],
            refused("SignatureDoesNotMatch"),
            "GET, wrong secret"
        );
        assert_eq!(
            r["unknown_key"],
            refused("InvalidAccessKeyId"),
            "PUT, unknown access key"
        );
        assert_eq!(
            r["unknown_key_list"],
            refused("InvalidAccessKeyId"),
            "ListObjectsV2, unknown access key"
        );
        assert_eq!(
            r["presigned_good"],
            json!({"status": 200, "md5": md5_hex(b"the real thing"), "len": 14}),
            "a valid presigned URL"
        );
        for (what, code) in [
            ("presigned_tampered", "SignatureDoesNotMatch"),
            ("presigned_other_key", "SignatureDoesNotMatch"),
            ("presigned_expired", "AccessDenied"),
        ] {
            assert_eq!(
                (&r[what]["status"], &r[what]["code"]),
                (&json!(403), &json!(code)),
                "{what}: {}",
                r[what]
            );
        }
        // Nothing written by the refused requests.
        assert_eq!(vault_files(&c, "docs"), set(&["docs/secret.txt"]));
        stop(gw);
    });
}

#[test]
fn invalid_keys_are_refused_and_nothing_is_stored() {
    require_boto3();
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let long = "k".repeat(5000);
        let keys = [
            "a/../b",
            "a//b",
            "./x",
            "a/./b",
            "../up",
            "a\u{1}b",
            long.as_str(),
        ];
        let r = boto(&gw, "badkeys", &json!({ "keys": keys }));
        for key in keys {
            let got = &r[key];
            let status = got["status"].as_u64().unwrap_or(0);
            let shown: String = key.chars().take(40).collect();
            assert!(
                (400..500).contains(&status) && got["code"].as_str().is_some_and(|s| !s.is_empty()),
                "key {shown:?}: {got}"
            );
            let code = got["code"].as_str().unwrap();
            if key.len() > 4096 {
                assert_eq!(code, "KeyTooLongError", "key of {} bytes: {got}", key.len());
            } else {
                assert_eq!(code, "InvalidArgument", "key {shown:?}: {got}");
            }
        }
        // Only the good key and the bucket: every listed name.
        let all: BTreeSet<String> = vault_list(&c)
            .into_iter()
            .filter(|n| n != "docs" && n != "docs/")
            .collect();
        assert_eq!(all, set(&["docs/good.txt"]), "vault-client list");
        assert_spool_clean(&c);
        stop(gw);
    });
}

/// Whether `hay` holds `needle`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn spool_is_emptied_and_no_plaintext_reaches_the_disk() {
    require_aws();
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let w = work_dir(&c);
        let marker = format!("PLAINTEXT-MARKER-{}", hex(&random(8)));
        let line = format!("{marker} the quick brown fox\n");
        let small: Vec<u8> = line.repeat(200).into_bytes();
        let mut big = Vec::with_capacity(20 * MIB);
        while big.len() < 20 * MIB {
            big.extend_from_slice(line.as_bytes());
            big.extend_from_slice(&random(64));
        }
        write(&w.join("small.txt"), &small);
        write(&w.join("big.txt"), &big);
        let meta = format!("note={marker}");
        aws_ok(&gw, &w, &["s3", "mb", "s3://marked"]);
        aws_ok(
            &gw,
            &w,
            &[
                "s3",
                "cp",
                "small.txt",
                "s3://marked/small.txt",
                "--metadata",
                &meta,
            ],
        );
        aws_ok(
            &gw,
            &w,
            &[
                "s3",
                "cp",
                "big.txt",
                "s3://marked/big.txt",
                "--metadata",
                &meta,
            ],
        );
        // A server-side copy goes through the spool too.
        aws_ok(
            &gw,
            &w,
            &["s3", "cp", "s3://marked/small.txt", "s3://marked/copy.txt"],
        );
        let head: Value = serde_json::from_str(&aws_ok(
            &gw,
            &w,
            &[
                "s3api",
                "head-object",
                "--bucket",
                "marked",
                "--key",
                "small.txt",
            ],
        ))
        .unwrap();
        assert_eq!(head["Metadata"], json!({"note": marker}));
        assert!(vault_get(&c, "marked/copy.txt") == small, "the copy");
        assert_spool_clean(&c);

        let spool = Gateway::spool(&c);
        let mut files = Vec::new();
        let mut stack = vec![c.dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p == w || p == spool {
                    continue;
                }
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
        assert!(
            files.len() > 8,
            "the walk found only {files:?} in the cluster's folder"
        );
        // The search finds the marker where it is.
        assert!(contains(
            &std::fs::read(w.join("big.txt")).unwrap(),
            marker.as_bytes()
        ));
        for f in &files {
            let bytes = std::fs::read(f).unwrap_or_default();
            assert!(
                !contains(&bytes, marker.as_bytes()),
                "{} holds the uploaded plaintext",
                f.display()
            );
        }
        stop(gw);
    });
}

/// Over the aws cli's 8 MiB threshold, `aws s3 cp s3://… s3://…` is a
/// multipart upload of UploadPartCopy ranges. Issue 18 does not require
/// UploadPartCopy, but "anything unsupported answers S3's NotImplemented,
/// never a wrong success": either the copy is exact, or the cli reports
/// NotImplemented and nothing is stored.
#[test]
fn aws_cli_large_server_side_copy_is_exact_or_not_implemented() {
    require_aws();
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let w = work_dir(&c);
        let big = random(20 * MIB);
        write(&w.join("big.bin"), &big);
        aws_ok(&gw, &w, &["s3", "mb", "s3://photos"]);
        aws_ok(&gw, &w, &["s3", "mb", "s3://other"]);
        aws_ok(&gw, &w, &["s3", "cp", "big.bin", "s3://photos/big.bin"]);
        let o = aws(
            &gw,
            &w,
            &[
                "s3",
                "cp",
                "s3://photos/big.bin",
                "s3://other/x/big-copy.bin",
            ],
        );
        if o.status.success() {
            assert!(
                vault_get(&c, "other/x/big-copy.bin") == big,
                "the server-side copy"
            );
            assert_eq!(vault_files(&c, "other"), set(&["other/x/big-copy.bin"]));
        } else {
            assert!(
                stderr(&o).contains("(NotImplemented) when calling the UploadPartCopy operation"),
                "aws s3 cp s3->s3 failed otherwise: {}",
                stderr(&o)
            );
            assert_eq!(vault_files(&c, "other"), BTreeSet::new());
        }
        assert_eq!(vault_files(&c, "photos"), set(&["photos/big.bin"]));
        assert_spool_clean(&c);
        stop(gw);
    });
}

/// A top-level folder that `vault-client put -r` made, with a name S3 would
/// not allow for a bucket it creates ("Photos": upper case), is a bucket:
/// listed, read, and copied within; and a file that `vault-client put`
/// stores while the gateway runs is listed within 2 s.
#[test]
fn aws_cli_sees_folders_and_files_of_vault_client() {
    require_aws();
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        let w = work_dir(&c);
        let a = random(3000);
        write(&w.join("Photos/2024/a.jpg"), &a);
        let photos = w.join("Photos");
        ok(&c.client(PASSWORD, &["put", "-r", photos.to_str().unwrap()]));
        assert_eq!(vault_list(&c), vec!["Photos/2024/a.jpg".to_string()]);
        let gw = Gateway::start(&c, PASSWORD, &[]);

        let out = aws_ok(&gw, &w, &["s3", "ls"]);
        let buckets: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        assert_eq!(buckets, vec!["Photos"], "aws s3 ls: {out}");
        let out = aws_ok(&gw, &w, &["s3", "ls", "--recursive", "s3://Photos/"]);
        assert!(out.trim_end().ends_with(" 3000 2024/a.jpg"), "{out}");
        aws_ok(
            &gw,
            &w,
            &["s3", "cp", "s3://Photos/2024/a.jpg", "down/a.jpg"],
        );
        assert!(std::fs::read(w.join("down/a.jpg")).unwrap() == a);

        // Another client's PUT: listed within 2 s (polled, bounded).
        let b = random(1234);
        write(&w.join("Photos/2024/b.bin"), &b);
        let out = ok(&c.client(PASSWORD, &["put", "-r", photos.to_str().unwrap()]));
        assert!(out.contains("stored 1 file"), "put -r: {out}");
        let start = std::time::Instant::now();
        loop {
            let out = aws_ok(&gw, &w, &["s3", "ls", "--recursive", "s3://Photos/"]);
            if out.lines().any(|l| l.ends_with(" 1234 2024/b.bin")) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "b.bin, stored by vault-client, not listed by the gateway: {out}"
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "listed only after {:?}",
            start.elapsed()
        );

        // An upload into that folder (its name is no valid new S3 bucket
        // name, but the folder is a bucket all the same).
        let local = c.dir.path().join("b.jpg");
        std::fs::write(&local, &a[..1000]).unwrap();
        aws_ok(
            &gw,
            &w,
            &[
                "s3",
                "cp",
                local.to_str().unwrap(),
                "s3://Photos/2024/b.jpg",
            ],
        );
        assert!(
            vault_get(&c, "Photos/2024/b.jpg") == a[..1000],
            "the upload"
        );
        assert_spool_clean(&c);
        stop(gw);
    });
}
