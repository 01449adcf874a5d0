//! Running `rotate` again after it finished (issue 16, point 3): said so,
//! nothing changed, and the new password reaches no node as an MD5 and
//! only nodes that announce the upgraded login. Real nodes in-process
//! (`vault_node::testing`); proxies record what reaches each node.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vault_client::config::ClientConfig;
use vault_client::net::client_endpoint;
use vault_client::ops::{self, OpError};
use vault_client::vault::{OpenError, OpenOptions};
use vault_node::testing::lie::{ClaimScheme, ForgeRecord};
use vault_node::testing::{self, timed, Lie, Observed, Reply, TestCluster, Verdict};
use wire::{AuthScheme, Proof, Request, Response};
use zeroize::Zeroizing;

use super::common::*;

const NEW: &str = "Topaz-12";

/// ROTATE with `cfg` and the state file `state` (`None`: beside dfc.conf).
async fn rotate_with(
    c: &TestCluster,
    cfg: &ClientConfig,
    state: Option<PathBuf>,
    old: &str,
    new: &str,
) -> Result<ops::rotate::RotateReport, OpError> {
    let endpoint = client_endpoint(c.ca_pem().as_bytes()).unwrap();
    let options = OpenOptions {
        state,
        limits: limits(),
    };
    let (old, new) = (Zeroizing::new(old.into()), Zeroizing::new(new.into()));
    ops::rotate::rotate(&endpoint, cfg, &old, &new, &options).await
}

fn records(c: &TestCluster) -> Vec<Vec<u8>> {
    (0..4)
        .map(|i| std::fs::read(record_file(c, i, "alice")).unwrap())
        .collect()
}

fn auth_failed(r: &Result<ops::rotate::RotateReport, OpError>) -> bool {
    matches!(r, Err(OpError::Open(OpenError::AuthFailed)))
}

/// Every node behind an honest proxy, to count what reaches it.
async fn watch_all(c: &mut TestCluster) -> Vec<Arc<Observed>> {
    let mut seen = Vec::new();
    for i in 0..4 {
        seen.push(c.make_hostile(i, Arc::new(testing::Honest)).await.unwrap());
    }
    seen
}

fn logins(seen: &[Arc<Observed>]) -> Vec<usize> {
    seen.iter().map(|s| s.logins().len()).collect()
}

fn no_md5_of(seen: &Observed, password: &str) {
    let md5 = vault_client::config::md5_hex(password.as_bytes());
    for (_, proof) in seen.logins() {
        if let Proof::LegacyMd5(d) = proof {
            assert_ne!(hex::encode(d), md5, "the new password's MD5 reached a node");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_rotation_run_again_says_so_and_changes_nothing() {
    timed(async {
        let c = upgraded_alice(NEW).await;
        let before = records(&c);
        let r = rotate(&c, "alice", ALICE, NEW).await.unwrap();
        assert!(r.already, "{r:?}");
        assert!(
            r.nodes.is_empty() && !r.resumed && !r.config_updated,
            "{r:?}"
        );
        assert_eq!(records(&c), before, "a node's key record changed");
        open(&c, "alice", NEW).await.unwrap().close();

        // dfc.conf still holding the old password (a plain line) is
        // rewritten, as the finished rotation would have done.
        let path = c
            .write_dfc("alice", Some(&format!("Password: {ALICE}")))
            .unwrap();
        let cfg = ClientConfig::load(&path).unwrap();
        let r = rotate_with(&c, &cfg, None, ALICE, NEW).await.unwrap();
        assert!(r.already && r.config_updated, "{r:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("Password: {NEW}\n")), "{text}");
        assert!(!text.contains(ALICE), "{text}");
        assert_eq!(records(&c), before, "a node's key record changed");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_still_refused() {
    timed(async {
        let mut c = upgraded_alice(NEW).await;
        let before = records(&c);
        let seen = watch_all(&mut c).await;
        // This client knows the nodes' login key: a wrong new password is
        // refused without a second login on any node.
        for (old, new) in [("Wrong-Old-1", "Wrong-New-2"), (ALICE, "Wrong-New-2")] {
            let r = rotate(&c, "alice", old, new).await;
            assert!(auth_failed(&r), "{old} -> {new}: {r:?}");
        }
        assert_eq!(logins(&seen), [2, 2, 2, 2]);
        // A machine that never logged in asks the nodes, and still gets the
        // same answer.
        let fresh = c.dir().join("fresh.state");
        let r = rotate_with(
            &c,
            &config(&c, "alice"),
            Some(fresh),
            "Wrong-Old-1",
            "Wrong-New-2",
        )
        .await;
        assert!(auth_failed(&r), "{r:?}");
        assert_eq!(records(&c), before, "a node's key record changed");
        for s in &seen {
            no_md5_reached(s);
        }
        open(&c, "alice", NEW).await.unwrap().close();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_claiming_legacy_get_nothing_of_the_new_password() {
    timed(async {
        let mut c = upgraded_alice(NEW).await;
        // Three nodes claim the legacy login to a machine that never logged
        // in: they get the old password's MD5 (the documented price of a
        // legacy majority) and refuse it, the fourth refuses the old
        // password's signature. The new password is not tried at all.
        let mut seen = Vec::new();
        for i in 0..3 {
            let lie = Arc::new(ClaimScheme::legacy());
            seen.push(c.make_hostile(i, lie).await.unwrap());
        }
        seen.push(c.make_hostile(3, Arc::new(testing::Honest)).await.unwrap());
        let fresh = c.dir().join("fresh.state");
        let r = rotate_with(&c, &config(&c, "alice"), Some(fresh), ALICE, NEW).await;
        assert!(auth_failed(&r), "{r:?}");
        assert_eq!(logins(&seen), [1, 1, 1, 1], "a login after the refusal");
        for s in &seen {
            no_md5_of(s, NEW);
        }

        // Two nodes claiming it to this machine (which knows the account is
        // upgraded) get no login at all, the other two refuse the old
        // password: the answer is today's, and the new password is not
        // tried on the two honest ones either.
        for s in &seen {
            s.clear();
        }
        c.make_hostile(1, Arc::new(testing::Honest)).await.unwrap();
        let r = rotate(&c, "alice", ALICE, NEW).await;
        assert!(auth_failed(&r), "{r:?}");
        assert_eq!(logins(&seen), [0, 1, 0, 1], "a login after the refusal");
    })
    .await
}

/// Answers the first `Hello` honestly and claims the legacy login after:
/// a node that lets the old password be refused by signature, then asks
/// for the new one's MD5.
#[derive(Default)]
struct LegacyAfterFirst {
    hellos: AtomicUsize,
}

impl Lie for LegacyAfterFirst {
    fn on_response(&self, req: &Request, resp: Response, bulk: Vec<u8>) -> Reply {
        match (req, resp) {
            (Request::Hello { .. }, Response::Challenge { challenge, scheme }) => {
                let scheme = if self.hellos.fetch_add(1, Ordering::SeqCst) == 0 {
                    scheme
                } else {
                    AuthScheme::Legacy
                };
                Reply::Send(Response::Challenge { challenge, scheme }, bulk)
            }
            (_, resp) => Reply::Send(resp, bulk),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_turning_legacy_for_the_new_password_get_no_md5() {
    timed(async {
        let mut c = upgraded_alice(NEW).await;
        let mut seen = Vec::new();
        for i in 0..4 {
            let lie = Arc::new(LegacyAfterFirst::default());
            seen.push(c.make_hostile(i, lie).await.unwrap());
        }
        // A machine that never logged in: nothing local says the account is
        // upgraded, and all four nodes claim the legacy login the second
        // time. The new password's MD5 still goes nowhere.
        let fresh = c.dir().join("fresh.state");
        let r = rotate_with(&c, &config(&c, "alice"), Some(fresh), ALICE, NEW).await;
        assert!(auth_failed(&r), "{r:?}");
        for s in &seen {
            assert_eq!(
                s.count(|r| matches!(r, Request::Hello { .. })),
                2,
                "the lie was staged"
            );
            no_md5_reached(s);
            assert_eq!(s.logins().len(), 1, "a login after the refusal");
        }
    })
    .await
}

/// Refuses every login itself (the real node never sees it).
struct RefuseLogins;

impl Lie for RefuseLogins {
    fn on_request(&self, req: &Request, _bulk: &[u8]) -> Verdict {
        match req {
            Request::Login { .. } => Verdict::Answer(Reply::Send(
                Response::Error {
                    code: wire::ErrorCode::AuthFailed,
                    message: "Invalid Username/Password".into(),
                },
                vec![],
            )),
            _ => Verdict::Forward,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_done_needs_three_nodes_holding_a_record_that_opens() {
    timed(async {
        let mut c = upgraded_alice(NEW).await;
        // Two nodes refuse every password: two that take the new one are
        // not a majority of the configured four.
        c.make_hostile(0, Arc::new(RefuseLogins)).await.unwrap();
        c.make_hostile(1, Arc::new(RefuseLogins)).await.unwrap();
        let r = rotate(&c, "alice", ALICE, NEW).await;
        assert!(auth_failed(&r), "{r:?}");

        // Three take it, but two of them serve a record the new password
        // does not open (a forgery): one node holds the trusted record.
        c.make_hostile(1, Arc::new(testing::Honest)).await.unwrap();
        let forge = |real: Option<wire::UserRecord>| {
            real.map(|mut r| {
                r.wrapped_key[0] ^= 1;
                r
            })
        };
        c.make_hostile(2, Arc::new(ForgeRecord::new(forge)))
            .await
            .unwrap();
        c.make_hostile(3, Arc::new(ForgeRecord::new(forge)))
            .await
            .unwrap();
        let r = rotate(&c, "alice", ALICE, NEW).await;
        assert!(auth_failed(&r), "{r:?}");

        // With DFS1 honest again, three nodes hold it: done.
        c.make_hostile(0, Arc::new(testing::Honest)).await.unwrap();
        c.make_hostile(3, Arc::new(testing::Honest)).await.unwrap();
        let r = rotate(&c, "alice", ALICE, NEW).await.unwrap();
        assert!(r.already, "{r:?}");
    })
    .await
}
