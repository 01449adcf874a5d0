//! `vault-client serve` as a process: started on ports the system picks,
//! its announced addresses read from its output, stopped by its pid.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::{bin, Cluster, Running, REGISTRY};

/// The S3 secret the tests give the gateway (`VAULT_S3_SECRET`).
pub const SECRET: &str = "test-secret-key-0123456789abcdef";

/// A running gateway.
pub struct Gateway {
    /// `http://127.0.0.1:PORT` of the S3 endpoint.
    pub s3: String,
    /// The `web:` line's URL, token included.
    pub web: String,
    /// The S3 access key it announced (the vault user).
    pub access_key: String,
    /// The S3 secret key.
    pub secret: String,
    /// Its standard output after the two announced lines, line by line.
    pub lines: mpsc::Receiver<String>,
    /// Its standard error so far (read as it comes, so the pipe never
    /// fills and blocks the gateway).
    pub stderr: Arc<Mutex<Vec<u8>>>,
    /// The process.
    pub proc: Running,
}

/// How long a gateway may take to announce itself.
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(60);

impl Gateway {
    /// Starts `vault-client serve` on loopback port 0 for both endpoints,
    /// with the cluster's dfc.conf, `password` and [`SECRET`]; `extra` are
    /// more environment variables (a `None` value removes one).
    pub fn start(cluster: &Cluster, password: &str, extra: &[(&str, Option<&str>)]) -> Gateway {
        Self::start_args(
            cluster,
            password,
            extra,
            &["serve", "--s3", "127.0.0.1:0", "--web", "127.0.0.1:0"],
        )
    }

    /// [`Gateway::start`] with other arguments.
    pub fn start_args(
        cluster: &Cluster,
        password: &str,
        extra: &[(&str, Option<&str>)],
        args: &[&str],
    ) -> Gateway {
        let mut cmd = Command::new(bin("vault-client"));
        cmd.arg("-c")
            .arg(&cluster.dfc)
            .args(args)
            .current_dir(cluster.dir.path())
            .env_remove("VAULT_NEW_PASSWORD")
            .env("VAULT_PASSWORD", password)
            .env("VAULT_S3_SECRET", SECRET);
        for (k, v) in extra {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn vault-client serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut err_pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = std::io::Read::read(&mut err_pipe, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            });
        }
        let pid = child.id();
        let child = Arc::new(Mutex::new(Some(child)));
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.clone());
        let proc = Running {
            pid,
            child,
            what: "serve".into(),
        };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut s3, mut web, mut access_key, mut secret) = (None, None, None, None);
        while s3.is_none() || web.is_none() {
            let line = match lines.recv_timeout(ANNOUNCE_TIMEOUT) {
                Ok(line) => line,
                Err(_) => {
                    let _ = proc.kill();
                    panic!(
                        "the gateway did not announce itself: {}",
                        String::from_utf8_lossy(&stderr.lock().unwrap_or_else(|e| e.into_inner()))
                    );
                }
            };
            if let Some(rest) = line.strip_prefix("s3: ") {
                let words: Vec<&str> = rest.split_whitespace().collect();
                s3 = Some(words[0].to_string());
                let after = |w: &str| {
                    words
                        .iter()
                        .position(|x| *x == w)
                        .and_then(|i| words.get(i + 1))
                        .map(|s| s.to_string())
                };
                access_key = after("access-key");
                secret = after("secret-key");
            } else if let Some(rest) = line.strip_prefix("web: ") {
                web = Some(rest.trim().to_string());
            }
        }
        Gateway {
            s3: s3.expect("s3 line"),
            web: web.expect("web line"),
            access_key: access_key.expect("access key on the s3 line"),
            secret: secret.unwrap_or_else(|| SECRET.to_string()),
            lines,
            stderr,
            proc,
        }
    }

    /// The web page's token, from the `web:` line.
    pub fn token(&self) -> String {
        self.web
            .split("token=")
            .nth(1)
            .expect("token in the web URL")
            .to_string()
    }

    /// The private spool folder beside the cluster's dfc.conf.
    pub fn spool(cluster: &Cluster) -> PathBuf {
        let mut s = cluster.dfc.clone().into_os_string();
        s.push(".spool");
        PathBuf::from(s)
    }

    /// Stops it with SIGTERM and returns its output (it must exit by
    /// itself), its standard error included.
    pub fn stop(self) -> Output {
        super::signal_pid(self.proc.pid, "TERM");
        let mut out = self.proc.wait();
        out.stderr = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        out
    }
}

/// Fails the test unless `cmd args` runs and succeeds, saying that `what`
/// is missing and `install` (how to install it).
pub fn require(what: &str, cmd: &str, args: &[&str], install: &str) {
    let ran = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ran,
        "{what} is missing on this machine (`{cmd} {}` failed): {install}",
        args.join(" ")
    );
}
