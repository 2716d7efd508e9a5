//! Conformance: API keys (stored by hash, one active key per name, revoked not deleted,
//! last use only moving forward) and listings narrowed to a key's queues.

use std::sync::Arc;

use serde_json::json;
use taskd::access::{KeyRecord, QueueScope, hash_secret};
use taskd::store::{StoreError, TaskFilter, TaskStore};

use super::{insert, list, task};

fn key(name: &str, secret: &str) -> KeyRecord {
    KeyRecord {
        name: name.to_owned(),
        hash: hash_secret(secret),
        scopes: "read,submit".parse().unwrap(),
        queues: QueueScope::parse_list("reports,tenant-a-*").unwrap(),
        created_at: 1_000,
        last_used_at: None,
        expires_at: Some(9_000),
        revoked_at: None,
    }
}

/// A key reads back whole by its hash; a second active key of one name is refused; a revoke
/// keeps the row (so keys still exist) and frees the name; last use never moves back.
pub async fn keys_are_named_once_revoked_and_kept(store: Arc<dyn TaskStore>) {
    assert!(!store.keys_exist().await.unwrap());
    let first = key("ci", "tdk_first");
    store.key_insert(first.clone()).await.unwrap();
    assert!(store.keys_exist().await.unwrap());
    assert_eq!(
        store.key_by_hash(first.hash.clone()).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.key_by_hash(hash_secret("tdk_other")).await.unwrap(),
        None
    );
    let taken = store.key_insert(key("ci", "tdk_second")).await;
    assert!(matches!(taken, Err(StoreError::KeyNameTaken(name)) if name == "ci"));

    store.key_used(first.hash.clone(), 5_000).await.unwrap();
    store.key_used(first.hash.clone(), 4_000).await.unwrap();
    let read = store
        .key_by_hash(first.hash.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.last_used_at, Some(5_000));

    assert!(store.key_revoke("ci".into(), 6_000).await.unwrap());
    assert!(!store.key_revoke("ci".into(), 7_000).await.unwrap());
    let revoked = store
        .key_by_hash(first.hash.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(6_000));
    assert!(
        store.keys_exist().await.unwrap(),
        "a revoked key still counts"
    );
    let second = KeyRecord {
        created_at: 2_000,
        ..key("ci", "tdk_second")
    };
    store.key_insert(second).await.unwrap();
    let names: Vec<(String, bool)> = store
        .keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.name, k.revoked_at.is_some()))
        .collect();
    assert_eq!(names, [("ci".to_owned(), true), ("ci".to_owned(), false)]);
}

/// A listing narrowed to a scope's queues holds exactly their tasks, by name or by prefix,
/// and a scope without patterns matches nothing of other queues.
pub async fn listings_keep_to_a_scope(store: Arc<dyn TaskStore>) {
    for queue in ["reports", "reports2", "tenant-a-x", "tenant-b", "tenant_a"] {
        insert(&store, task(queue, "echo", json!(queue))).await;
    }
    let filter = |queues: &str| TaskFilter {
        limit: 100,
        queues: QueueScope::parse_list(queues).unwrap(),
        ..TaskFilter::default()
    };
    let queues_of = |tasks: Vec<taskd::task::Task>| {
        let mut names: Vec<String> = tasks.into_iter().map(|t| t.queue.to_string()).collect();
        names.sort();
        names
    };
    let scoped = list(&store, filter("reports,tenant-a-*")).await;
    assert_eq!(queues_of(scoped), ["reports", "tenant-a-x"]);
    assert_eq!(list(&store, filter("*")).await.len(), 5);
    assert_eq!(list(&store, filter("")).await.len(), 5);
    assert!(list(&store, filter("nothing-*")).await.is_empty());
}
