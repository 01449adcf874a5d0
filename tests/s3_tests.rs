//! A vendored subset of ceph/s3-tests (`tests/s3tests/`, Python, pytest and
//! boto3) against a real gateway (`vault-client serve`) over four real
//! nodes: bucket listing (v1 and v2), object write, read, head, delete and
//! metadata, ranged GETs, multipart, DeleteObjects and CopyObject.
//!
//! `tests/s3tests/expectations.txt` names every vendored test once:
//! - `pass`: must pass (the list this test asserts);
//! - `skip`: not run, a deliberate limitation of the vault (the reason says
//!   which);
//! - `bug`: runs, may fail: a gateway bug not fixed yet (the reason says
//!   what); one that passes is reported so it can be promoted.
//!
//! The Python packages are not Rust: `pip install -r
//! tests/s3tests/requirements.txt` installs them. A machine without them
//! fails this test, saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vault_tests::gateway::Gateway;
use vault_tests::*;

/// The whole test, cluster start and gateway included.
const LIMIT: Duration = Duration::from_secs(720);
/// The pytest run alone (run.py kills it after this).
const PYTEST_LIMIT: Duration = Duration::from_secs(540);
const PASSWORD: &str = "Crimson33";
/// The ceph/s3-tests commit the tests were copied from.
const UPSTREAM: &str = "ceph/s3-tests@8f0ae7b404a3a2fcf7038bf1e6bf29544fe9b6a3";

fn s3tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("s3tests")
}

/// What `expectations.txt` says of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Pass,
    Skip,
    Bug,
}

/// `expectations.txt`: test name -> (what is expected, the reason).
fn expectations() -> BTreeMap<String, (Expect, String)> {
    let path = s3tests_dir().join("expectations.txt");
    let text = std::fs::read_to_string(&path).expect("read expectations.txt");
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (status, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim_start();
        let (name, reason) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let reason = reason.trim().to_string();
        let status = match status {
            "pass" => Expect::Pass,
            "skip" => Expect::Skip,
            "bug" => Expect::Bug,
            other => panic!("expectations.txt line {}: bad status {other:?}", i + 1),
        };
        assert!(
            !name.is_empty(),
            "expectations.txt line {}: no test name",
            i + 1
        );
        assert!(
            status == Expect::Pass || !reason.is_empty(),
            "expectations.txt line {}: {name} needs a reason",
            i + 1
        );
        assert!(
            out.insert(name.to_string(), (status, reason)).is_none(),
            "expectations.txt: {name} listed twice"
        );
    }
    out
}

/// Fails the test unless python3 can import what the vendored tests need.
fn require_python_packages() {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import pytest, boto3, botocore, munch, requests, pytz, isodate, dateutil",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the s3-tests' Python packages are missing on this machine: run \
         `python3 -m pip install -r tests/s3tests/requirements.txt`"
    );
}

#[test]
fn s3_tests_subset() {
    with_timeout(LIMIT, run_subset);
}

fn run_subset() {
    require_python_packages();
    let expected = expectations();

    let cluster = Cluster::start();
    // s3s logs every error answer at ERROR level (hundreds here: many
    // tests expect errors), and the harness reads the gateway's stderr only
    // when it stops: a full pipe would block the gateway. Its own warnings
    // stay on.
    let gw = Gateway::start(&cluster, PASSWORD, &[("RUST_LOG", Some("warn,s3s=off"))]);
    let results = cluster.dir.path().join("s3tests-results.txt");

    let started = Instant::now();
    let mut cmd = Command::new("python3");
    cmd.arg(s3tests_dir().join("run.py"))
        .args(["--endpoint", &gw.s3])
        .args(["--access-key", &gw.access_key])
        .args(["--secret-key", &gw.secret])
        .arg("--results")
        .arg(&results)
        .args(["--timeout", &PYTEST_LIMIT.as_secs().to_string()])
        .args(["--", "--tb=line", "--durations=8"])
        .current_dir(cluster.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("run tests/s3tests/run.py");
    // run.py bounds pytest itself; this bound is for run.py.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(PYTEST_LIMIT + Duration::from_secs(60))
        .expect("run.py did not stop after its own bound")
        .expect("run.py output");
    let elapsed = started.elapsed();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    println!("{}", String::from_utf8_lossy(&out.stderr));

    let text = std::fs::read_to_string(&results).unwrap_or_default();
    let mut got = BTreeMap::new();
    for line in text.lines() {
        if let Some((name, outcome)) = line.split_once(' ') {
            got.insert(name.to_string(), outcome.trim().to_string());
        }
    }

    let count = |o: &str| got.values().filter(|v| v.as_str() == o).count();
    let (passed, failed, skipped) = (count("passed"), count("failed"), count("skipped"));
    let ran = passed + failed;
    let mut problems = Vec::new();
    let mut promoted = Vec::new();
    let mut bugs_failing = Vec::new();
    for (name, (status, reason)) in &expected {
        let outcome = got.get(name).map(String::as_str).unwrap_or("not run");
        match (status, outcome) {
            (Expect::Pass, "passed") | (Expect::Skip, "skipped") => {}
            (Expect::Bug, "passed") => promoted.push(name.clone()),
            (Expect::Bug, "failed") => bugs_failing.push(format!("{name}: {reason}")),
            (status, outcome) => problems.push(format!("{name}: expected {status:?}, {outcome}")),
        }
    }
    for name in got.keys() {
        if !expected.contains_key(name) {
            problems.push(format!("{name}: not in expectations.txt"));
        }
    }

    let must = expected
        .values()
        .filter(|(s, _)| *s == Expect::Pass)
        .count();
    println!(
        "s3-tests ({UPSTREAM}, vendored subset of {} tests): {passed} passed, \
         {failed} failed, {skipped} skipped (deliberate limitations) in {:.0} s; \
         {ran} run, {must} required to pass",
        expected.len(),
        elapsed.as_secs_f64()
    );
    if !bugs_failing.is_empty() {
        println!("known gateway bugs, still failing:");
        for b in &bugs_failing {
            println!("  {b}");
        }
    }
    if !promoted.is_empty() {
        println!(
            "now passing, promote to `pass` in expectations.txt: {}",
            promoted.join(", ")
        );
    }
    let stopped = gw.stop();
    let log = String::from_utf8_lossy(&stopped.stderr);
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    if !problems.is_empty() && !tail.is_empty() {
        println!("gateway stderr, last lines:");
        for line in tail.iter().rev() {
            println!("  {line}");
        }
    }
    assert!(
        problems.is_empty(),
        "s3-tests: {} unexpected outcome(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
