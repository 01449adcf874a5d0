//! The cluster secret: every node of a cluster announces the same decoy
//! salt for an unknown name, as it does for a real account.

use vault_node::secret::ClusterSecret;
use vault_node::testing::{cheap_kdf, timed, users_text, TestCluster};
use wire::AuthScheme;

/// The salt node `i` announces for `user`.
async fn salt(c: &TestCluster, i: usize, user: &str) -> Vec<u8> {
    match c.raw_client(i).await.unwrap().hello(user).await.unwrap().1 {
        AuthScheme::Upgraded(k) => k.salt,
        AuthScheme::Legacy => panic!("{user} announced as legacy"),
    }
}

/// Four nodes of one cluster, each with its own root (and so its own node
/// secret), node `i` with cluster secret `secrets[i]`.
async fn cluster(secrets: [Option<ClusterSecret>; 4]) -> TestCluster {
    let users = users_text();
    TestCluster::start_with([&users[..]; 4], |i, config| {
        config.cluster_secret = secrets[i].clone();
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn nodes_sharing_a_cluster_secret_announce_the_same_decoy_salt() {
    timed(async {
        let shared = ClusterSecret::random().unwrap();
        let nodes = cluster([(); 4].map(|()| Some(shared.clone()))).await;
        assert_eq!(
            salt(&nodes, 0, "mallory").await,
            salt(&nodes, 1, "mallory").await
        );
        // Different names still get different salts.
        assert_ne!(
            salt(&nodes, 0, "mallory").await,
            salt(&nodes, 0, "trudy").await
        );
        // A real upgraded account: the same salt everywhere, too.
        assert_eq!(
            salt(&nodes, 0, "carol").await,
            salt(&nodes, 1, "carol").await
        );
        assert_eq!(salt(&nodes, 0, "carol").await, cheap_kdf(7).salt);
    })
    .await
}

#[tokio::test]
async fn nodes_with_different_or_no_cluster_secrets_differ() {
    timed(async {
        let one = ClusterSecret::random().unwrap();
        let other = ClusterSecret::random().unwrap();
        let nodes = cluster([Some(one), Some(other), None, None]).await;
        assert_ne!(
            salt(&nodes, 0, "mallory").await,
            salt(&nodes, 1, "mallory").await
        );
        // Without a cluster secret each node falls back to its own secret.
        assert_ne!(
            salt(&nodes, 2, "mallory").await,
            salt(&nodes, 3, "mallory").await
        );
    })
    .await
}
