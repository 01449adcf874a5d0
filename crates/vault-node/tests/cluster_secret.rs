//! The cluster secret: every node of a cluster announces the same decoy
//! salt for an unknown name, as it does for a real account.

mod support;

use support::*;
use vault_node::secret::ClusterSecret;
use wire::AuthScheme;

/// The salt `node` announces for `user`.
async fn salt(node: &TestNode, user: &str) -> Vec<u8> {
    match node.client().await.hello(user).await.unwrap().1 {
        AuthScheme::Upgraded(k) => k.salt,
        AuthScheme::Legacy => panic!("{user} announced as legacy"),
    }
}

/// DFS1 and DFS2 of one cluster, each with its own root (and so its own
/// node secret), with the given cluster secrets.
fn two_nodes(
    cluster: &Cluster,
    secrets: [Option<ClusterSecret>; 2],
    roots: &tempfile::TempDir,
) -> Vec<TestNode> {
    secrets
        .into_iter()
        .enumerate()
        .map(|(i, secret)| {
            let mut config = cluster.config(i, &roots.path().join(format!("n{i}")));
            config.cluster_secret = secret;
            TestNode::spawn(config, cluster.certs.ca_cert_pem.clone())
        })
        .collect()
}

#[tokio::test]
async fn nodes_sharing_a_cluster_secret_announce_the_same_decoy_salt() {
    timed(async {
        let cluster = Cluster::new();
        let roots = tempfile::tempdir().unwrap();
        let shared = cluster.certs.cluster_secret.clone();
        let nodes = two_nodes(&cluster, [Some(shared.clone()), Some(shared)], &roots);
        assert_eq!(
            salt(&nodes[0], "mallory").await,
            salt(&nodes[1], "mallory").await
        );
        // Different names still get different salts.
        assert_ne!(
            salt(&nodes[0], "mallory").await,
            salt(&nodes[0], "trudy").await
        );
        // A real upgraded account: the same salt everywhere, too.
        assert_eq!(
            salt(&nodes[0], "carol").await,
            salt(&nodes[1], "carol").await
        );
        assert_eq!(salt(&nodes[0], "carol").await, cheap_kdf(7).salt);
    })
    .await
}

#[tokio::test]
async fn nodes_with_different_or_no_cluster_secrets_differ() {
    timed(async {
        let cluster = Cluster::new();
        let roots = tempfile::tempdir().unwrap();
        let other = ClusterSecret::random().unwrap();
        let nodes = two_nodes(
            &cluster,
            [Some(cluster.certs.cluster_secret.clone()), Some(other)],
            &roots,
        );
        assert_ne!(
            salt(&nodes[0], "mallory").await,
            salt(&nodes[1], "mallory").await
        );
        // Without a cluster secret each node falls back to its own secret.
        let roots = tempfile::tempdir().unwrap();
        let nodes = two_nodes(&cluster, [None, None], &roots);
        assert_ne!(
            salt(&nodes[0], "mallory").await,
            salt(&nodes[1], "mallory").await
        );
    })
    .await
}
