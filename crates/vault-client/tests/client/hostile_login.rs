//! Logins that no pair of nodes can bend, throttles waited out, and the
//! first-vault race (issue 15, point 5 and the first-use regression).
//! Real nodes in-process (`vault_node::testing`); hostile proxies lie about
//! the login scheme and record what reaches them.

use std::sync::Arc;
use std::time::Duration;

use vault_client::vault::OpenError;
use vault_node::testing::lie::ClaimScheme;
use vault_node::testing::{self, timed, TestCluster};
use wire::{AuthScheme, Proof, Request, Response};

use super::common::*;

fn legacy_rule(err: &OpenError) -> bool {
    let text = err.to_string();
    text.contains("legacy") && text.contains("3 of 4")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claiming_legacy_on_a_fresh_machine_get_no_md5() {
    timed(async {
        let mut c = upgraded_alice("Saffron-99").await;
        let dfs1 = Arc::new(ClaimScheme::legacy());
        let dfs3 = Arc::new(ClaimScheme::legacy());
        let seen1 = c.make_hostile(0, dfs1.clone()).await.unwrap();
        let seen3 = c.make_hostile(2, dfs3.clone()).await.unwrap();
        c.stop(1).await.unwrap();
        c.stop(3).await.unwrap();
        // A machine that never logged in: no state file.
        let fresh = c.dir().join("fresh.state");
        let err = open_at(&c, "alice", "Saffron-99", Some(fresh))
            .await
            .unwrap_err();
        assert!(legacy_rule(&err), "{err}");
        assert!(err.to_string().contains("DFS1"), "{err}");
        assert!(err.to_string().contains("DFS3"), "{err}");
        assert!(dfs1.hits() > 0 && dfs3.hits() > 0, "the lie was staged");
        no_md5_reached(&seen1);
        no_md5_reached(&seen3);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_account_logs_in_by_md5_with_three_nodes_not_two() {
    timed(async {
        let mut c = TestCluster::start(&testing::md5_user("Alice", ALICE))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        put(&v, &c, "l.bin", b"legacy bytes").await;
        v.close();
        c.stop(3).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        assert_eq!(v.ready().count(), 3);
        get_ok(&v, &c, "l.bin", b"legacy bytes").await;
        v.close();
        // Two of four: the price of the rule, even for the real account.
        c.stop(2).await.unwrap();
        let err = open(&c, "alice", ALICE).await.unwrap_err();
        assert!(legacy_rule(&err), "{err}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_announcing_another_salt_for_a_known_account_gets_no_signature() {
    timed(async {
        let mut c = upgraded_alice("Saffron-99").await;
        // This client's state file now knows the account's parameters.
        open(&c, "alice", "Saffron-99").await.unwrap().close();
        let (_, scheme) = c.raw_client(1).await.unwrap().hello("alice").await.unwrap();
        let AuthScheme::Upgraded(mut other) = scheme else {
            panic!("{scheme:?}");
        };
        other.salt = vec![0x42; other.salt.len()];
        let lie = Arc::new(ClaimScheme::upgraded(other));
        let seen = c.make_hostile(1, lie.clone()).await.unwrap();
        let v = open(&c, "alice", "Saffron-99").await.unwrap();
        assert!(lie.hits() > 0);
        let down = v.unavailable();
        assert_eq!(down.len(), 1, "{down:?}");
        assert_eq!(down[0].0, "DFS2");
        assert!(
            down[0]
                .1
                .contains("differ from the ones this client knows for alice"),
            "{down:?}"
        );
        assert_eq!(v.ready().count(), 3);
        for (_, proof) in seen.logins() {
            assert!(
                !matches!(proof, Proof::Signature(_)),
                "a signature under the node's salt reached it"
            );
        }
        no_md5_reached(&seen);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_node_is_waited_out_not_given_up() {
    timed(async {
        let users = testing::md5_user("Alice", ALICE);
        let mut c = TestCluster::start_with([users.as_str(); 4], |i, cfg| {
            if i == 0 {
                cfg.throttle = vault_node::throttle::ThrottleConfig {
                    free_failures: 1,
                    base_delay: Duration::from_millis(1500),
                    max_ip_delay: Duration::from_millis(1500),
                    max_user_delay: Duration::from_millis(1500),
                    ..testing::tiny_throttle()
                };
            }
        })
        .await
        .unwrap();
        let seen = c.make_hostile(0, Arc::new(testing::Honest)).await.unwrap();
        // Failed logins for alice from this machine: DFS1 now throttles it.
        for _ in 0..2 {
            let raw = c.raw_client(0).await.unwrap();
            let _ = raw.login_md5("alice", "wrong-password").await.unwrap();
        }
        seen.clear();
        let v = open(&c, "alice", ALICE).await.unwrap();
        assert!(v.unavailable().is_empty(), "{:?}", v.unavailable());
        let throttled_first = seen.logins().len();
        assert!(
            throttled_first >= 2,
            "DFS1 was asked again after its throttle ({throttled_first} logins)"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_creating_one_vault_at_once_all_succeed() {
    timed(first_use_race(testing::plain_user("Alice", ALICE))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_creating_one_upgraded_vault_at_once_all_succeed() {
    timed(first_use_race(
        testing::upgraded_user("Alice", ALICE).unwrap(),
    ))
    .await
}

/// Storing the first record of an account made upgraded by `vault-node
/// user add` (its login key is the one the users file already checks)
/// logs none of the user's other connections out: clients creating one
/// upgraded vault at once used to log each other out this way, and then
/// misread their failed record reads as records the password does not open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_an_upgraded_vault_logs_no_other_session_out() {
    timed(async {
        let c = TestCluster::start(&testing::upgraded_user("Alice", ALICE).unwrap())
            .await
            .unwrap();
        let other = c.raw_client(0).await.unwrap();
        let login = other.login_signature("DFS1", "alice", ALICE).await.unwrap();
        assert!(matches!(login, Response::LoggedIn), "{login:?}");
        let before = other.call(&Request::GetRecord).await;
        assert!(matches!(before, Response::Record(None)), "{before:?}");
        let v = open(&c, "alice", ALICE).await.unwrap();
        match other.call(&Request::GetRecord).await {
            Response::Record(Some(r)) => assert_eq!(&r, v.record()),
            after => panic!("the other session was logged out: {after:?}"),
        }
    })
    .await
}

/// 8 clients of one new user open the vault and store a file each, all at
/// once: all succeed, every node holds the one record they all used, and
/// every file reads back from a fresh open.
async fn first_use_race(users: String) {
    {
        let c = Arc::new(TestCluster::start(&users).await.unwrap());
        let mut set = tokio::task::JoinSet::new();
        for k in 0..8u64 {
            let c = c.clone();
            set.spawn(async move {
                let v = open(&c, "alice", ALICE)
                    .await
                    .map_err(|e| format!("client {k}: {e}"))?;
                let name = format!("f{k}.txt");
                let p = write(&c, &name, &data(1000 + k as usize, k));
                vault_client::ops::put::put_file(&v, &p, progress())
                    .await
                    .map_err(|e| format!("client {k}: {e}"))?;
                let record = v.record().clone();
                v.close();
                Ok::<_, String>(record)
            });
        }
        let mut used = Vec::new();
        while let Some(r) = set.join_next().await {
            used.push(r.unwrap().unwrap());
        }
        // One master key: every client used the record every node holds.
        let on_disk: Vec<Vec<u8>> = (0..4)
            .map(|i| std::fs::read(record_file(&c, i, "alice")).unwrap())
            .collect();
        assert!(on_disk.iter().all(|b| *b == on_disk[0]), "nodes differ");
        assert!(used.iter().all(|r| *r == used[0]), "clients differ");
        // Every file reads back from a fresh open.
        let fresh = c.dir().join("fresh.state");
        let v = open_at(&c, "alice", ALICE, Some(fresh)).await.unwrap();
        assert_eq!(v.record(), &used[0]);
        for k in 0..8u64 {
            get_ok(&v, &c, &format!("f{k}.txt"), &data(1000 + k as usize, k)).await;
        }
    }
}
