//! The gateway in front of nodes that lie or die: a GET it cannot complete
//! with authenticated bytes is cut short (never finished with wrong bytes),
//! one bad copy is replaced by the other, and a node that comes back is
//! used again without restarting the gateway. Real binaries; boto3 as the
//! S3 client (`.ci/install-gateway-deps` installs it).

use std::process::Command;
use std::time::{Duration, Instant};

use vault_node::store::offline;
use vault_tests::gateway::Gateway;
use vault_tests::{ok, random, with_timeout, Cluster};

const LIMIT: Duration = Duration::from_secs(240);
const PASSWORD: &str = "Crimson33";

/// Runs a boto3 snippet against `gw` (`s3` is the client, `out` a dict
/// printed as JSON); returns the parsed output.
fn boto3(gw: &Gateway, snippet: &str) -> serde_json::Value {
    boto3_with(gw, &gw.secret, snippet)
}

/// [`boto3`] with the secret key `secret`.
fn boto3_with(gw: &Gateway, secret: &str, snippet: &str) -> serde_json::Value {
    let script = format!(
        r#"
import json, os, sys
import boto3, botocore
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["GW"], region_name="us-east-1",
    aws_access_key_id=os.environ["AK"], aws_secret_access_key=os.environ["SK"],
    config=Config(s3={{"addressing_style": "path"}}, retries={{"max_attempts": 1}}))
out = {{}}
{snippet}
print(json.dumps(out))
"#
    );
    let o = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .env("GW", &gw.s3)
        .env("AK", &gw.access_key)
        .env("SK", secret)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("python3 (run .ci/install-gateway-deps)");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "boto3 snippet failed (boto3 missing? run .ci/install-gateway-deps):\n{}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("JSON from the snippet")
}

/// Flips one byte `from_end` bytes before the end of every blob over
/// 100 KB that node `i` holds for Alice (the parts, not the manifests);
/// how many.
fn corrupt_parts(c: &mut Cluster, i: usize, from_end: usize) -> usize {
    c.with_disk(i, |root| {
        let mut n = 0;
        for id in offline::blob_ids(root, "alice").unwrap() {
            let mut bytes = offline::read_blob(root, "alice", &id).unwrap().unwrap();
            if bytes.len() > 100_000 {
                let at = bytes.len() - from_end;
                bytes[at] ^= 0x40;
                offline::write_blob(root, "alice", &id, &bytes).unwrap();
                n += 1;
            }
        }
        n
    })
}

/// Stores `data` as `b/f.bin` with the command line (a folder, so S3
/// reaches it as bucket `b`).
fn put_file(c: &Cluster, data: &[u8]) {
    let dir = c.dir.path().join("src/b");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f.bin"), data).unwrap();
    ok(&c.client(PASSWORD, &["put", "-r", dir.to_str().unwrap()]));
}

/// GETs `b/f.bin` through a presigned URL with urllib: the bytes that
/// arrived, and whether the transfer ended in an error.
const READ_ALL: &str = r#"
import urllib.request, http.client
url = s3.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "f.bin"}, ExpiresIn=300)
got = bytearray()
err = None
try:
    with urllib.request.urlopen(url, timeout=60) as r:
        out["status"] = r.status
        out["length"] = int(r.headers["Content-Length"])
        while True:
            piece = r.read(65536)
            if not piece:
                break
            got += piece
except (http.client.IncompleteRead, ConnectionError, OSError) as e:
    if isinstance(e, http.client.IncompleteRead):
        got += e.partial
    err = type(e).__name__
# http.client's read(n) returns b"" on a connection closed early instead
# of raising: the Content-Length is what tells a truncated body.
if err is None and len(got) < out.get("length", 0):
    err = "closed before Content-Length"
out["error"] = err
out["got"] = bytes(got).hex()
"#;

#[test]
fn a_get_the_nodes_cannot_authenticate_is_cut_short_never_wrong() {
    with_timeout(LIMIT, || {
        let mut c = Cluster::start();
        let data = random(1_000_000);
        put_file(&c, &data);
        // Every copy of every part has a bad byte in its last chunk: the
        // first chunks of part 1 authenticate, then nothing more does.
        let mut flipped = 0;
        for i in 0..4 {
            flipped += corrupt_parts(&mut c, i, 100);
        }
        assert_eq!(flipped, 8, "four parts, two copies each");
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let out = boto3(&gw, READ_ALL);
        assert_eq!(out["status"], 200);
        assert_eq!(out["length"], 1_000_000);
        let got = hex_decode(out["got"].as_str().unwrap());
        assert!(
            !out["error"].is_null(),
            "the transfer must fail, not end as if complete ({} bytes)",
            got.len()
        );
        assert!(got.len() < data.len(), "{} bytes", got.len());
        assert_eq!(
            got[..],
            data[..got.len()],
            "every byte that arrived is the file's"
        );
        // Whole chunks only: what arrived ends on a 64 KiB boundary.
        assert_eq!(got.len() % 65536, 0, "{} bytes", got.len());
        // boto3's own GET fails too.
        let out = boto3(
            &gw,
            r#"
try:
    s3.get_object(Bucket="b", Key="f.bin")["Body"].read()
    out["ok"] = True
except Exception as e:
    out["ok"] = False
    out["e"] = type(e).__name__
"#,
        );
        assert_eq!(out["ok"], false, "{out}");
        let _ = gw.stop();
    });
}

#[test]
fn one_bad_copy_is_replaced_by_the_other_through_the_gateway() {
    with_timeout(LIMIT, || {
        let mut c = Cluster::start();
        let data = random(1_000_000);
        put_file(&c, &data);
        // DFS1 holds a bad copy of each of its parts, mid-blob.
        assert_eq!(corrupt_parts(&mut c, 0, 150_000), 2);
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let out = boto3(&gw, READ_ALL);
        assert!(out["error"].is_null(), "{}", out["error"]);
        assert_eq!(hex_decode(out["got"].as_str().unwrap()), data);
        // A range inside a bad copy's part, also from the other copy.
        let out = boto3(
            &gw,
            r#"
r = s3.get_object(Bucket="b", Key="f.bin", Range="bytes=100000-400000")
out["got"] = r["Body"].read().hex()
out["range"] = r["ContentRange"]
"#,
        );
        assert_eq!(out["range"], "bytes 100000-400000/1000000");
        assert_eq!(
            hex_decode(out["got"].as_str().unwrap()),
            data[100_000..=400_000]
        );
        let _ = gw.stop();
    });
}

#[test]
fn a_restarted_node_is_used_again_without_restarting_the_gateway() {
    with_timeout(LIMIT, || {
        let mut c = Cluster::start();
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let put = r#"
s3.create_bucket(Bucket="bkt") if "bkt" not in [x["Name"] for x in s3.list_buckets()["Buckets"]] else None
try:
    s3.put_object(Bucket="bkt", Key="k", Body=b"hello")
    out["ok"] = True
except Exception as e:
    out["ok"] = False
    out["e"] = str(e)
"#;
        assert_eq!(boto3(&gw, put)["ok"], true);
        // DFS3 dies and comes back on its address: the gateway's session
        // to it is gone; a PUT (all four nodes) fails until it logs in again.
        c.kill(2);
        let down = boto3(&gw, put);
        assert_eq!(down["ok"], false, "a PUT with a node down is refused");
        assert!(down["e"].as_str().unwrap().contains("DFS3"), "{down}");
        c.restart(2);
        let started = Instant::now();
        loop {
            if boto3(&gw, put)["ok"] == true {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the gateway never used the restarted node again"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let list = ok(&c.client(PASSWORD, &["list"]));
        assert!(list.contains("bkt/k"), "{list}");
        let _ = gw.stop();
    });
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn serve_refuses_other_machines_unless_allowed_and_keeps_its_secret_private() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        // Not loopback, no --allow-remote: refused, nothing listens.
        let o = c.client(
            PASSWORD,
            &["serve", "--s3", "0.0.0.0:0", "--web", "127.0.0.1:0"],
        );
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("0.0.0.0:0") && err.contains("--allow-remote"),
            "{err}"
        );
        // The S3 secret may not be the vault password.
        let o = c.client_env(
            &[("VAULT_PASSWORD", PASSWORD), ("VAULT_S3_SECRET", PASSWORD)],
            &["serve", "--s3", "127.0.0.1:0", "--web", "127.0.0.1:0"],
            None,
        );
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("must not be the vault password"),
            "{o:?}"
        );
        // No VAULT_S3_SECRET: one is made, printed once, kept 0600.
        let gw = Gateway::start(&c, PASSWORD, &[("VAULT_S3_SECRET", None)]);
        let made = gw.secret.clone();
        assert!(made.len() >= 32, "{made}");
        let _ = gw.stop();
        let kept = c.dir.path().join("dfc.conf.s3-secret");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&kept).unwrap().trim(), made);
        // The next start uses it without printing it.
        let gw = Gateway::start(&c, PASSWORD, &[("VAULT_S3_SECRET", None)]);
        assert_eq!(gw.secret, vault_tests::gateway::SECRET, "not printed again");
        let out = boto3_with(
            &gw,
            &made,
            r#"out["buckets"] = len(s3.list_buckets()["Buckets"])"#,
        );
        assert_eq!(out["buckets"], 0);
        let _ = gw.stop();
    });
}

#[test]
fn serve_degraded_stores_with_a_node_down_and_repair_completes_it() {
    with_timeout(LIMIT, || {
        let mut c = Cluster::start();
        c.kill(2);
        let gw = Gateway::start_args(
            &c,
            PASSWORD,
            &[],
            &[
                "serve",
                "--s3",
                "127.0.0.1:0",
                "--web",
                "127.0.0.1:0",
                "--degraded",
            ],
        );
        let out = boto3(
            &gw,
            r#"
s3.create_bucket(Bucket="bkt")
s3.put_object(Bucket="bkt", Key="k", Body=b"stored with DFS3 down")
out["body"] = s3.get_object(Bucket="bkt", Key="k")["Body"].read().decode()
"#,
        );
        assert_eq!(out["body"], "stored with DFS3 down");
        let _ = gw.stop();
        c.restart(2);
        // DFS3's copies are missing until repair restores them.
        let check = c.client(PASSWORD, &["check"]);
        assert_eq!(check.status.code(), Some(1), "{check:?}");
        ok(&c.client(PASSWORD, &["repair"]));
        ok(&c.client(PASSWORD, &["check"]));
    });
}
