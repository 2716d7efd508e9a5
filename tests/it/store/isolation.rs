//! Poison isolation in the stores' combined writes: submits that arrive together share one
//! transaction, and a row the database refuses fails only the call that brought it.

use futures::future::join_all;
use taskd::store::StoreError;
use taskd::task::Callback;

use super::*;

/// A task whose row the database itself refuses: `max_attempts >= 1` is a CHECK of both
/// schemas, which the API's parsing would never let through.
fn refused_by_the_database(queue: &str) -> NewTask {
    NewTask {
        max_attempts: 0,
        ..task(queue, "echo", json!("poison"))
    }
}

/// A callback secret holding U+0000: PostgreSQL's `text` refuses it, SQLite stores it.
fn nul_secret(queue: &str) -> NewTask {
    NewTask {
        callback: Some(Callback {
            url: "http://127.0.0.1:9/hook".into(),
            secret: Some("a\u{0}b".into()),
        }),
        ..task(queue, "echo", json!("nul"))
    }
}

/// Thirty submits at once, two of them poisoned (one a batch whose second task is bad):
/// the poisoned calls fail and store nothing, every other call is stored.
pub async fn a_refused_row_fails_only_its_own_call(store: Arc<dyn TaskStore>) {
    let calls: Vec<Vec<NewTask>> = (0..30)
        .map(|i| match i {
            7 => vec![refused_by_the_database("poison")],
            19 => vec![
                task("poison", "echo", json!(i)),
                refused_by_the_database("poison"),
            ],
            23 => vec![nul_secret("nul")],
            _ => vec![
                task("good", "echo", json!(i)),
                task("good", "echo", json!(-i)),
            ],
        })
        .collect();
    let answers = join_all(calls.into_iter().map(|tasks| {
        let store = Arc::clone(&store);
        async move { store.insert(tasks, ROOMY).await }
    }))
    .await;
    for (i, answer) in answers.iter().enumerate() {
        match i {
            7 | 19 => assert!(
                matches!(answer, Err(StoreError::Backend(_))),
                "call {i}: {answer:?}"
            ),
            // PostgreSQL refuses it; SQLite stores it: either way, alone.
            23 => {}
            _ => assert_eq!(answer.as_ref().expect("a good call").len(), 2, "call {i}"),
        }
    }
    let stored = |queue: &str| TaskFilter {
        queue: Some(super::queue(queue)),
        limit: 100,
        ..TaskFilter::default()
    };
    assert_eq!(list(&store, stored("good")).await.len(), 54);
    assert!(
        list(&store, stored("poison")).await.is_empty(),
        "all or nothing per call"
    );
    let nul_stored = list(&store, stored("nul")).await.len();
    assert_eq!(nul_stored, usize::from(answers[23].is_ok()));
}
