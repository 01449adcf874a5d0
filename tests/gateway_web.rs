//! The gateway's web page (`vault-client serve --web`, issue 18): its
//! session, DNS-rebinding and CSRF defences over plain HTTP, and the page
//! itself in a real browser (headless Chromium driven by Selenium:
//! `tests/gateway/web_selenium.py`). Each test starts four real nodes and
//! a gateway on loopback ports the system picks.
//!
//! The browser is not Rust: `.ci/install-gateway-deps` installs chromium,
//! chromium-driver and selenium. A machine without them fails the browser
//! test, saying so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vault_tests::gateway::Gateway;
use vault_tests::*;

const LIMIT: Duration = Duration::from_secs(300);
const PASSWORD: &str = "Crimson33";
const INSTALL: &str = "run `.ci/install-gateway-deps` (as root) to install what the \
     browser test drives (chromium, chromium-driver, python3 selenium)";
const SELENIUM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway/web_selenium.py");

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header names lower-case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The web endpoint, and what was answered so far (every answer is
/// checked for CORS headers at the end).
struct Web {
    /// `127.0.0.1:PORT`.
    addr: String,
    token: String,
    answers: Vec<(String, Answer)>,
}

impl Web {
    fn new(gw: &Gateway) -> Web {
        let addr = gw
            .web
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
            .expect("web URL")
            .to_string();
        Web {
            addr,
            token: gw.token(),
            answers: Vec::new(),
        }
    }

    /// Sends one request (HTTP/1.1, `Connection: close`) with `Host: host`
    /// (`None`: none at all) and `headers`; reads the whole answer.
    fn raw(
        &mut self,
        method: &str,
        target: &str,
        host: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> &Answer {
        let mut s = TcpStream::connect(&self.addr).expect("connect to the web endpoint");
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut req = format!("{method} {target} HTTP/1.1\r\n");
        if let Some(h) = host {
            req.push_str(&format!("Host: {h}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || matches!(method, "PUT" | "POST") {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).expect("send request");
        // The server may refuse before reading the body: a failed write
        // then is fine, the answer tells.
        let _ = s.write_all(body);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let answer = parse(&raw).unwrap_or_else(|| {
            panic!(
                "{method} {target}: not an HTTP answer: {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
        self.answers.push((format!("{method} {target}"), answer));
        &self.answers.last().unwrap().1
    }

    /// A request with the right Host header.
    fn req(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> &Answer {
        let host = self.addr.clone();
        self.raw(method, target, Some(&host), headers, body)
    }

    /// Opens a session with the token: the cookie (`name=value`) and the
    /// session's CSRF token (from the redirect's `Location: /#k=CSRF`).
    fn login(&mut self) -> (String, String) {
        let target = format!("/?token={}", self.token);
        let a = self.req("GET", &target, &[], b"");
        assert_eq!(a.status, 303, "the token visit redirects: {a:?}");
        let cookie = a
            .header("set-cookie")
            .expect("a session cookie")
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_string();
        let csrf = a
            .header("location")
            .and_then(|l| l.strip_prefix("/#k="))
            .expect("the redirect's Location is /#k=CSRF")
            .to_string();
        assert!(csrf.len() >= 32, "a long CSRF token: {csrf}");
        (cookie, csrf)
    }

    /// No answer so far carried a CORS header.
    fn assert_no_cors(&self) {
        assert!(self.answers.len() > 5, "answers were recorded");
        for (what, a) in &self.answers {
            for (k, _) in &a.headers {
                assert!(
                    !k.starts_with("access-control-"),
                    "{what} answered the CORS header {k}"
                );
            }
        }
    }
}

/// Parses a whole HTTP/1.1 answer (`Content-Length` or read to close; no
/// chunked bodies: the gateway sends lengths).
fn parse(raw: &[u8]) -> Option<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Some(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..nl]).ok()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// The vault's names, as `vault-client list` prints them.
fn vault_list(c: &Cluster) -> Vec<String> {
    let o = c.client(PASSWORD, &["list"]);
    ok(&o).lines().map(str::to_string).collect()
}

/// `vault-client get name`: its bytes.
fn vault_get(c: &Cluster, name: &str) -> Vec<u8> {
    let out = c.dir.path().join("vault-get.out");
    let _ = std::fs::remove_file(&out);
    ok(&c.client(PASSWORD, &["get", name, "-o", out.to_str().unwrap()]));
    let bytes = std::fs::read(&out).expect("read the file got");
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// Stores `files` (name, bytes) with `vault-client put -r` of a folder
/// made of them in the cluster's dir.
fn vault_put_tree(c: &Cluster, top: &str, files: &[(&str, &[u8])]) {
    for (name, bytes) in files {
        let p = c.dir.path().join(top).join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    ok(&c.client(PASSWORD, &["put", "-r", top]));
}

/// The token, the session cookie, the Host check and the headers every
/// answer carries.
#[test]
fn session_host_and_headers() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        vault_put_tree(&c, "docs", &[("a.txt", b"alpha\n")]);
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let mut w = Web::new(&gw);

        // Without the token or a session: 403, and no details.
        for target in [
            "/",
            "/app.js",
            "/api/list",
            "/api/status",
            "/api/file?name=docs/a.txt",
        ] {
            let a = w.req("GET", target, &[], b"");
            assert_eq!(a.status, 403, "GET {target} without a session: {a:?}");
            assert!(!a.text().contains("docs"), "no details: {}", a.text());
        }
        // A wrong token, and a made-up cookie.
        let a = w.req("GET", "/?token=0123456789abcdef0123456789abcdef", &[], b"");
        assert_eq!(a.status, 403, "a wrong token: {a:?}");
        assert!(
            a.header("set-cookie").is_none(),
            "no cookie for a wrong token"
        );
        let a = w.req(
            "GET",
            "/api/list",
            &[("Cookie", "vault_session=0123456789abcdef")],
            b"",
        );
        assert_eq!(a.status, 403, "a made-up session: {a:?}");

        // The token: a cookie (HttpOnly, SameSite=Strict) and a redirect
        // to the page without the token.
        let target = format!("/?token={}", w.token);
        let token = w.token.clone();
        let a = w.req("GET", &target, &[], b"");
        assert_eq!(a.status, 303, "{a:?}");
        let location = a.header("location").unwrap_or("");
        assert!(
            location.starts_with("/#k=") && !location.contains(&token),
            "a redirect to the page, the CSRF token in the fragment: {location}"
        );
        let set = a.header("set-cookie").expect("Set-Cookie").to_string();
        let attrs: Vec<String> = set.split(';').map(|s| s.trim().to_string()).collect();
        assert!(attrs.iter().any(|s| s == "HttpOnly"), "{set}");
        assert!(attrs.iter().any(|s| s == "SameSite=Strict"), "{set}");
        assert!(attrs.iter().any(|s| s == "Path=/"), "{set}");
        assert!(!set.contains(&token), "the cookie is not the token");
        let (cookie, csrf) = w.login();
        let auth = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];

        // The page, its script and the API, with the security headers.
        let a = w.req("GET", "/", &[("Cookie", &cookie)], b"");
        assert_eq!(a.status, 200);
        assert!(a.text().contains("type=\"file\""), "{}", a.text());
        assert!(a.text().contains("multiple"));
        assert!(
            !a.text().contains("<script>") && !a.text().contains("<style>"),
            "no inline script or style (the CSP forbids them)"
        );
        for target in ["/", "/app.js", "/app.css", "/api/list", "/api/status"] {
            let a = w.req("GET", target, &auth, b"");
            assert_eq!(a.status, 200, "GET {target}: {}", a.text());
            let csp = a.header("content-security-policy").unwrap_or("");
            assert!(csp.contains("default-src 'self'"), "{target}: CSP {csp:?}");
            assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
            assert_eq!(a.header("cache-control"), Some("no-store"));
        }
        let a = w.req("GET", "/api/list", &auth, b"");
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("list JSON");
        assert_eq!(v["folders"], serde_json::json!(["docs"]), "{v}");
        let a = w.req("GET", "/api/list?prefix=docs/", &auth, b"");
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("list JSON");
        assert_eq!(v["files"][0]["name"], "docs/a.txt", "{v}");
        assert_eq!(v["files"][0]["size"], 6, "{v}");
        let a = w.req("GET", "/api/status", &auth, b"");
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("status JSON");
        let nodes = v["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 4, "{v}");
        assert!(nodes.iter().all(|n| n["up"] == true), "{v}");
        // Download: an attachment, the same bytes.
        let a = w.req("GET", "/api/file?name=docs%2Fa.txt", &auth, b"");
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b"alpha\n");
        assert!(a
            .header("content-disposition")
            .unwrap_or("")
            .starts_with("attachment"));
        assert_eq!(a.header("content-type"), Some("application/octet-stream"));
        // Errors: JSON with a status.
        let a = w.req("GET", "/api/file?name=docs/missing", &auth, b"");
        assert_eq!(a.status, 404, "{}", a.text());
        assert!(a.text().contains("\"error\""), "{}", a.text());
        let a = w.req("GET", "/api/file?name=docs/../a.txt", &auth, b"");
        assert_eq!(a.status, 400, "{}", a.text());
        let a = w.req("GET", "/api/list?prefix=nowhere", &auth, b"");
        assert_eq!(a.status, 404, "{}", a.text());

        // DNS rebinding: a foreign Host is refused, cookie or token or not.
        let port = w.addr.rsplit(':').next().unwrap().to_string();
        let evil = format!("evil.example:{port}");
        for (target, headers) in [
            ("/", vec![("Cookie", cookie.as_str())]),
            ("/api/list", auth.to_vec()),
            ("/api/file?name=docs/a.txt", auth.to_vec()),
            (target.as_str(), vec![]),
        ] {
            let a = w.raw("GET", target, Some(&evil), &headers, b"");
            assert!(
                a.status == 421 || a.status == 403,
                "Host {evil}, GET {target}: {a:?}"
            );
            assert!(a.header("set-cookie").is_none());
            assert!(!a.text().contains("alpha") && !a.text().contains("docs"));
        }
        for host in [
            Some("127.0.0.1:1".to_string()),
            Some(format!("127.0.0.2:{port}")),
            Some(format!("127.0.0.1:{port}.evil.example")),
            None,
        ] {
            let a = w.raw("GET", "/api/list", host.as_deref(), &auth, b"");
            assert!(
                a.status == 421 || a.status == 403 || a.status == 400,
                "Host {host:?}: {a:?}"
            );
        }
        // localhost on the bound port is the same server (loopback bind).
        let a = w.raw(
            "GET",
            "/api/list",
            Some(&format!("localhost:{port}")),
            &auth,
            b"",
        );
        assert_eq!(a.status, 200, "{a:?}");

        w.assert_no_cors();
        assert!(gw.stop().status.success());
    });
}

/// State-changing requests need the session's CSRF token (and no foreign
/// Origin); with it an upload is a vault file `vault-client` reads.
#[test]
fn csrf_and_upload() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        vault_put_tree(&c, "docs", &[("keep.txt", b"keep me\n")]);
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let mut w = Web::new(&gw);
        let (cookie, csrf) = w.login();
        let (_other_cookie, other_csrf) = w.login();
        assert_ne!(csrf, other_csrf, "each session has its own CSRF token");
        let before = vault_list(&c);
        assert_eq!(before, vec!["docs/keep.txt".to_string()]);

        let data = random(3 << 20);
        let wrong = "0".repeat(csrf.len());
        let origin = format!("http://{}", w.addr);
        // Without the token, with a wrong one, with another session's, and
        // with the right one but a foreign Origin.
        let attempts: Vec<Vec<(&str, &str)>> = vec![
            vec![("Cookie", &cookie)],
            vec![("Cookie", &cookie), ("X-CSRF-Token", &wrong)],
            vec![("Cookie", &cookie), ("X-CSRF-Token", "")],
            vec![("Cookie", &cookie), ("X-CSRF-Token", &other_csrf)],
            vec![
                ("Cookie", &cookie),
                ("X-CSRF-Token", &csrf),
                ("Origin", "http://evil.example"),
            ],
            vec![("X-CSRF-Token", &csrf)],
        ];
        for headers in &attempts {
            for (method, target, body) in [
                ("PUT", "/api/file?name=docs/new.bin", &data[..]),
                ("DELETE", "/api/file?name=docs/keep.txt", &b""[..]),
                ("POST", "/api/folder?name=made", &b""[..]),
                ("DELETE", "/api/folder?name=docs", &b""[..]),
            ] {
                let a = w.req(method, target, headers, body);
                assert_eq!(a.status, 403, "{method} {target} with {headers:?}: {a:?}");
            }
        }
        assert_eq!(vault_list(&c), before, "nothing changed");

        // With the token: an upload (3 MiB, streamed) ...
        let good = [
            ("Cookie", cookie.as_str()),
            ("X-CSRF-Token", csrf.as_str()),
            ("Origin", origin.as_str()),
            ("Content-Type", "application/x-test"),
        ];
        let a = w.req("PUT", "/api/file?name=docs/new%20file.bin", &good, &data);
        assert_eq!(a.status, 201, "{}", a.text());
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON");
        assert_eq!(v["etag"], md5_hex(&data), "{v}");
        let after = vault_list(&c);
        assert_eq!(
            after,
            vec!["docs/keep.txt".to_string(), "docs/new file.bin".to_string()]
        );
        assert_eq!(
            vault_get(&c, "docs/new file.bin"),
            data,
            "get: the same bytes"
        );
        let a = w.req(
            "GET",
            "/api/file?name=docs/new%20file.bin",
            &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
            b"",
        );
        assert_eq!(a.status, 200);
        assert!(a.body == data, "download: the same bytes");
        // ... a bad name changes nothing ...
        for bad in ["docs/../x", "/abs", "docs//x", "docs/x/", "a%01b", ""] {
            let a = w.req("PUT", &format!("/api/file?name={bad}"), &good, b"x");
            assert_eq!(a.status, 400, "PUT {bad:?}: {}", a.text());
            assert!(a.text().contains("\"error\""), "{}", a.text());
        }
        assert_eq!(vault_list(&c), after, "bad names changed nothing");
        // ... a folder made and removed, a file deleted.
        let a = w.req("POST", "/api/folder?name=made", &good, b"");
        assert_eq!(a.status, 201, "{}", a.text());
        assert!(
            vault_list(&c).iter().any(|n| n.starts_with("made")),
            "folder made"
        );
        let a = w.req("DELETE", "/api/folder?name=docs", &good, b"");
        assert_eq!(a.status, 409, "a folder with files stays: {}", a.text());
        let a = w.req("DELETE", "/api/folder?name=made", &good, b"");
        assert_eq!(a.status, 200, "{}", a.text());
        let a = w.req("DELETE", "/api/file?name=docs/keep.txt", &good, b"");
        assert_eq!(a.status, 200, "{}", a.text());
        let a = w.req("DELETE", "/api/file?name=docs/keep.txt", &good, b"");
        assert_eq!(a.status, 404, "{}", a.text());
        assert_eq!(vault_list(&c), vec!["docs/new file.bin".to_string()]);

        w.assert_no_cors();
        assert!(gw.stop().status.success());
        // The spool is emptied (only its lock stays).
        let left: Vec<_> = std::fs::read_dir(Gateway::spool(&c))
            .expect("spool")
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "lock")
            .collect();
        assert!(left.is_empty(), "spool left {left:?}");
    });
}

/// The security review's replay: another server on this host receives
/// the session cookie (cookies are not tied to a port) and replays it with
/// our Host. The cookie alone opens only the page shell, which holds no
/// secret; every `/api/` request, GETs included, needs the CSRF token
/// too, and a download link's `k` opens only its own file in its own
/// session.
#[test]
fn replayed_cookie_reads_nothing() {
    with_timeout(LIMIT, || {
        let c = Cluster::start();
        vault_put_tree(
            &c,
            "docs",
            &[("a.txt", b"alpha secret\n"), ("b.txt", b"beta secret\n")],
        );
        let gw = Gateway::start(&c, PASSWORD, &[]);
        let mut w = Web::new(&gw);
        let (cookie, csrf) = w.login();
        let (other_cookie, other_csrf) = w.login();
        let only_cookie = [("Cookie", cookie.as_str())];

        // The page shell answers the cookie, and holds no CSRF token.
        for target in ["/", "/app.js", "/app.css"] {
            let a = w.req("GET", target, &only_cookie, b"");
            assert_eq!(a.status, 200, "GET {target} with the cookie: {a:?}");
            assert!(
                !a.text().contains(&csrf) && !a.text().contains(&other_csrf),
                "GET {target} with the cookie shows a CSRF token"
            );
            assert!(a.header("set-cookie").is_none());
        }
        let a = w.req("GET", "/", &only_cookie, b"");
        let page = a.text();
        assert!(!page.contains(&w.token), "the page has no login token");

        // The API with the cookie alone, a wrong token, another session's
        // token, or an empty one: 403, and nothing of the vault.
        let wrong = "0".repeat(csrf.len());
        let other_cookie_own = [
            ("Cookie", other_cookie.as_str()),
            ("X-CSRF-Token", csrf.as_str()),
        ];
        let refused: Vec<Vec<(&str, &str)>> = vec![
            only_cookie.to_vec(),
            vec![("Cookie", &cookie), ("X-CSRF-Token", &wrong)],
            vec![("Cookie", &cookie), ("X-CSRF-Token", "")],
            vec![("Cookie", &cookie), ("X-CSRF-Token", &other_csrf)],
            other_cookie_own.to_vec(),
            vec![("X-CSRF-Token", &csrf)],
        ];
        for headers in &refused {
            for target in [
                "/api/list",
                "/api/list?prefix=docs",
                "/api/status",
                "/api/file?name=docs/a.txt",
                "/api/file?name=docs%2Fa.txt",
                "/api/nowhere",
            ] {
                let a = w.req("GET", target, headers, b"");
                assert_eq!(a.status, 403, "GET {target} with {headers:?}: {a:?}");
                let t = a.text();
                assert!(
                    !t.contains("docs") && !t.contains("secret") && !t.contains("node"),
                    "GET {target}: no details: {t}"
                );
            }
        }

        // With the token: the listing, each file with its download key.
        let auth = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
        let a = w.req("GET", "/api/list?prefix=docs", &auth, b"");
        assert_eq!(a.status, 200, "{}", a.text());
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("list JSON");
        let key = |name: &str| -> String {
            v["files"]
                .as_array()
                .expect("files")
                .iter()
                .find(|f| f["name"] == name)
                .and_then(|f| f["k"].as_str())
                .unwrap_or_else(|| panic!("a download key for {name}: {v}"))
                .to_string()
        };
        let (ka, kb) = (key("docs/a.txt"), key("docs/b.txt"));
        assert_ne!(ka, kb, "each file its own key");
        assert!(!ka.contains(&csrf) && !csrf.contains(&ka));
        // A download link (no header): its file, in its session.
        let link = format!("/api/file?name=docs%2Fa.txt&k={ka}");
        let a = w.req("GET", &link, &only_cookie, b"");
        assert_eq!(a.status, 200, "the download link: {}", a.text());
        assert_eq!(a.body, b"alpha secret\n");
        // The key opens no other file, no other route, not without the
        // cookie nor with another session's; the CSRF token itself is no
        // download key.
        for (target, headers) in [
            (
                format!("/api/file?name=docs%2Fb.txt&k={ka}"),
                &only_cookie[..],
            ),
            (
                format!("/api/file?name=docs%2Fa.txt&k={kb}"),
                &only_cookie[..],
            ),
            (
                format!("/api/file?name=docs%2Fa.txt&k={csrf}"),
                &only_cookie[..],
            ),
            (format!("/api/file?name=docs%2Fa.txt&k={ka}"), &[][..]),
            (
                format!("/api/file?name=docs%2Fa.txt&k={ka}"),
                &[("Cookie", other_cookie.as_str())][..],
            ),
            (format!("/api/list?prefix=docs&k={ka}"), &only_cookie[..]),
            (format!("/api/list?prefix=docs&k={csrf}"), &only_cookie[..]),
            (format!("/api/status?k={csrf}"), &only_cookie[..]),
        ] {
            let a = w.req("GET", &target, headers, b"");
            assert_eq!(a.status, 403, "GET {target} with {headers:?}: {a:?}");
            assert!(!a.text().contains("secret"));
        }
        // A key is no use for a change either.
        let a = w.req("DELETE", &link, &only_cookie, b"");
        assert_eq!(a.status, 403, "DELETE with a download key: {a:?}");
        assert_eq!(
            vault_list(&c),
            vec!["docs/a.txt".to_string(), "docs/b.txt".to_string()]
        );

        w.assert_no_cors();
        assert!(gw.stop().status.success());
    });
}

/// Fails the test unless `cmd args` runs and succeeds.
fn require(what: &str, cmd: &str, args: &[&str]) {
    vault_tests::gateway::require(what, cmd, args, INSTALL);
}

/// The browser script, stopped when the test ends however it ends: its
/// standard input closed (it then quits Chromium and exits), then killed
/// by its pid if it has not exited.
struct Script {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Script {
    /// The next `CHECK step` line (other lines are progress, echoed).
    fn next_check(&mut self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(200);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => match l.strip_prefix("CHECK ") {
                    Some(step) => return Some(step.to_string()),
                    None => eprintln!("web_selenium.py: {l}"),
                },
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("web_selenium.py: no progress"),
            }
        }
    }

    fn answer(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("script stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .expect("answer the script");
    }

    /// Waits for its exit: its status and standard error.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        self.stdin = None;
        while self.lines.recv_timeout(Duration::from_secs(60)).is_ok() {}
        let status = wait_bounded(&mut self.child, Duration::from_secs(60));
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        (status, stderr.join().unwrap_or_default())
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("reap the script");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.stdin = None;
        if matches!(self.child.try_wait(), Ok(None)) {
            wait_bounded(&mut self.child, Duration::from_secs(30));
        }
    }
}

/// The page in headless Chromium: status, into a folder, upload two
/// files, download one, delete one; `vault-client list` agrees between.
#[test]
fn browser() {
    with_timeout(LIMIT, || {
        require("chromium", "chromium", &["--version"]);
        require("chromedriver", "chromedriver", &["--version"]);
        require("selenium", "python3", &["-c", "import selenium"]);

        let c = Cluster::start();
        vault_put_tree(&c, "docs", &[("readme.txt", b"read me\n")]);
        let gw = Gateway::start(&c, PASSWORD, &[]);

        let up = tempfile::tempdir().expect("temp dir");
        let down = tempfile::tempdir().expect("temp dir");
        let alpha = random(700 * 1024 + 13);
        let beta = b"beta, a small text file\n".to_vec();
        let alpha_path = up.path().join("alpha.bin");
        let beta_path = up.path().join("beta.txt");
        std::fs::write(&alpha_path, &alpha).unwrap();
        std::fs::write(&beta_path, &beta).unwrap();

        let mut child = Command::new("python3")
            .arg(SELENIUM)
            .arg(&gw.web)
            .arg(down.path())
            .arg("docs")
            .arg(&alpha_path)
            .arg(&beta_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3: {e}: {INSTALL}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let stdin = child.stdin.take();
        let mut script = Script {
            child,
            stdin,
            lines,
            stderr,
        };

        let names = |c: &Cluster| -> Vec<String> { vault_list(c) };
        match script.next_check().as_deref() {
            Some("uploaded") => {}
            other => {
                let (status, err) = script.finish();
                panic!("web_selenium.py stopped before the upload ({other:?}, {status}): {err}");
            }
        }
        assert_eq!(
            names(&c),
            vec!["docs/alpha.bin", "docs/beta.txt", "docs/readme.txt"],
            "vault-client list after the upload"
        );
        assert!(
            vault_get(&c, "docs/alpha.bin") == alpha,
            "alpha.bin's bytes"
        );
        assert_eq!(vault_get(&c, "docs/beta.txt"), beta, "beta.txt's bytes");
        script.answer("ok");

        match script.next_check().as_deref() {
            Some("deleted") => {}
            other => {
                let (status, err) = script.finish();
                panic!("web_selenium.py stopped before the delete ({other:?}, {status}): {err}");
            }
        }
        assert_eq!(
            names(&c),
            vec!["docs/alpha.bin", "docs/readme.txt"],
            "vault-client list after the delete"
        );
        script.answer("ok");

        let (status, err) = script.finish();
        assert!(status.success(), "web_selenium.py failed ({status}): {err}");
        let got = std::fs::read(down.path().join("alpha.bin")).expect("the downloaded file");
        assert!(got == alpha, "the browser downloaded other bytes");
        assert!(gw.stop().status.success());
    });
}
