//! Submit, look up, await, fetch results, list, kinds, health.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    expect_problem, park_echo_tasks, patch_queue, spawn_app, spawn_app_with, wait_for,
};

/// A submit answers 202 with Location and the stored task (queued, or running if a free
/// worker started it); the long-poll resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_then_wait_for_the_result() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            "/v1/tasks",
            &json!({"kind": "sha256", "input": {"data": "hello", "rounds": 1000}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let task: Value = response.json().await.unwrap();
    let id = task["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/tasks/{id}"));
    assert_eq!(task["queue"], "default");
    assert_eq!(task["kind"], "sha256");
    // Stored queued, or (a worker was free) started in the same commit.
    let stored = (task["state"].as_str(), task["attempt"].as_u64());
    assert!(
        matches!(
            stored,
            (Some("queued"), Some(0)) | (Some("running"), Some(1))
        ),
        "{task}"
    );
    assert!(task["created_at"].is_string());
    let version = uuid::Uuid::parse_str(id).unwrap().get_version_num();
    assert_eq!(version, 7, "ids are UUIDv7");

    let done = app.wait_terminal(id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 1);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    let digest = done["result"]["digest"].as_str().unwrap();
    assert_eq!(digest.len(), 64);

    let result = app.get(&format!("/v1/tasks/{id}/result")).await;
    assert_eq!(result.status(), StatusCode::OK);
    let result: Value = result.json().await.unwrap();
    assert_eq!(result, done["result"]);
}

/// sha256 computes the real digest: one round of "abc" is the well-known test vector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_matches_the_test_vector() {
    let app = spawn_app().await;
    let task = app
        .submit(json!({"kind": "sha256", "input": {"data": "abc", "rounds": 1}}))
        .await;
    let done = app.wait_terminal(task["id"].as_str().unwrap()).await;
    assert_eq!(
        done["result"]["digest"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// Echo returns its input; a named queue is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_returns_its_input_on_a_named_queue() {
    let app = spawn_app().await;
    let input = json!({"nested": {"list": [1, 2, 3]}, "text": "héllo"});
    let task = app
        .submit(json!({"kind": "echo", "input": input, "queue": "emails"}))
        .await;
    assert_eq!(task["queue"], "emails");
    let done = app.wait_terminal(task["id"].as_str().unwrap()).await;
    assert_eq!(done["result"], input);
}

/// A failing task ends failed with {type, message}; its /result is a 409 problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_has_an_error_and_no_result() {
    let app = spawn_app().await;
    let task = app
        .submit(json!({"kind": "fail", "input": {"message": "boom"}}))
        .await;
    let id = task["id"].as_str().unwrap();
    let done = app.wait_terminal(id).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["error"], json!({"type": "fail", "message": "boom"}));
    assert!(done["result"].is_null());
    let response = app.get(&format!("/v1/tasks/{id}/result")).await;
    expect_problem(response, 409, "task_failed").await;
}

/// /result of an unfinished task is 202 with Retry-After: 1, or the seconds until a scheduled
/// one is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_of_an_unfinished_task_is_202() {
    let app = spawn_app().await;
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 60_000}}))
        .await;
    let id = task["id"].as_str().unwrap();
    let response = app.get(&format!("/v1/tasks/{id}/result")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert!(matches!(body["state"].as_str(), Some("queued" | "running")));

    // Scheduled two minutes out: come back when it is due, not every second.
    let later = app
        .submit(json!({"kind": "echo", "delay_ms": 120_000}))
        .await;
    let id = later["id"].as_str().unwrap();
    let response = app.get(&format!("/v1/tasks/{id}/result")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((100..=120).contains(&retry_after), "{retry_after}");
}

/// `?wait=N` returns after about N seconds with the current state when the task goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_that_times_out_returns_the_current_state() {
    let app = spawn_app().await;
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 60_000}}))
        .await;
    let id = task["id"].as_str().unwrap();
    let started = std::time::Instant::now();
    let now = app.task_waiting(id, 1).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert!(matches!(now["state"].as_str(), Some("queued" | "running")));
}

/// Many waiters on one task all get the finished task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiters_on_one_task_all_resolve() {
    let app = spawn_app().await;
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 300}}))
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url(&format!("/v1/tasks/{id}?wait=30"));
            tokio::spawn(async move {
                let task: Value = client.get(url).send().await.unwrap().json().await.unwrap();
                task
            })
        })
        .collect();
    for waiter in waiters {
        let task = waiter.await.unwrap();
        assert_eq!(task["state"], "succeeded", "{task}");
    }
}

/// The value of the gauge of open long-polls on a `/metrics` page.
fn open_long_polls(page: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix("taskd_open_long_polls "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// With hundreds of long-polls parked on tasks that cannot run yet, a task that ends answers
/// its own long-poll while the others stay parked; when the parked tasks then all end at
/// once, each long-poll gets its own finished task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_answered_while_hundreds_stay_parked() {
    // A wait longer than the test: a parked long-poll ends only with its task.
    let app = spawn_app_with(|config| {
        config.workers = 16;
        config.max_wait = std::time::Duration::from_secs(600);
    })
    .await;
    let ids = park_echo_tasks(&app, "parked", 300).await;
    let parked: Vec<_> = ids
        .iter()
        .map(|id| {
            let client = app.client.clone();
            let url = app.url(&format!("/v1/tasks/{id}?wait=600"));
            tokio::spawn(async move {
                let response = client.get(url).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                response.json::<Value>().await.unwrap()
            })
        })
        .collect();
    wait_for("300 parked long-polls", || async {
        let page = app.get("/metrics").await.text().await.unwrap();
        (open_long_polls(&page) >= 300).then_some(())
    })
    .await;

    let lone = app.submit(json!({"kind": "echo", "input": "lone"})).await;
    let answered = app.task_waiting(lone["id"].as_str().unwrap(), 600).await;
    assert_eq!(answered["state"], "succeeded", "{answered}");
    assert!(
        parked.iter().all(|waiter| !waiter.is_finished()),
        "the parked long-polls still wait"
    );

    patch_queue(&app, "parked", json!({"paused": false})).await;
    for (id, waiter) in ids.iter().zip(parked) {
        let task = waiter.await.unwrap();
        assert_eq!(task["id"], id.as_str());
        assert_eq!(task["state"], "succeeded", "{task}");
    }
}

/// A long-poll still honours `If-None-Match`: the representation it would answer with,
/// already known to the client, is a 304 without a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_not_modified_for_a_known_representation() {
    let app = spawn_app().await;
    let task = app.submit(json!({"kind": "echo", "input": "tag"})).await;
    let id = task["id"].as_str().unwrap();
    app.wait_terminal(id).await;
    let url = app.url(&format!("/v1/tasks/{id}?wait=5"));
    let first = app.client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let again = app
        .client
        .get(&url)
        .header("if-none-match", format!("\"other\", {etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
}

/// Listing is newest first, filters by state, kind and queue, and pages with a cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_pages() {
    let app = spawn_app_with(|config| config.workers = 1).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let task = app
            .submit(json!({"kind": "echo", "input": {"n": n}, "queue": "listing"}))
            .await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_terminal(id).await;
    }
    app.submit(json!({"kind": "fail", "queue": "other"})).await;

    let page: Value = app
        .get("/v1/tasks?queue=listing&limit=2")
        .await
        .json()
        .await
        .unwrap();
    let got: Vec<&str> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[4].as_str(), ids[3].as_str()]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let mut seen = got.len();
    let mut cursor = cursor.to_owned();
    loop {
        let page: Value = app
            .get(&format!("/v1/tasks?queue=listing&limit=2&cursor={cursor}"))
            .await
            .json()
            .await
            .unwrap();
        seen += page["tasks"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, 5);

    let echo: Value = app
        .get("/v1/tasks?kind=echo&state=succeeded")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(echo["tasks"].as_array().unwrap().len(), 5);
    assert!(echo["next_cursor"].is_null());
    let other: Value = app.get("/v1/tasks?queue=other").await.json().await.unwrap();
    assert_eq!(other["tasks"][0]["kind"], "fail");
}

/// The cursor carries the filters: `?cursor=…` alone goes on listing the same state and
/// kind (the README's walk-through), repeating them is fine, and changing one is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_keeps_the_filters_of_its_listing() {
    let app = spawn_app().await;
    let mut wanted = Vec::new();
    for n in 0..3 {
        let task = app
            .submit(json!({"kind": "sha256", "input": {"data": "x"}}))
            .await;
        wanted.push(task["id"].as_str().unwrap().to_owned());
        let echo = app.submit(json!({"kind": "echo", "input": n})).await;
        let failed = app
            .submit(json!({"kind": "fail", "input": {"message": "no"}}))
            .await;
        for id in [&echo["id"], &failed["id"]] {
            app.wait_terminal(id.as_str().unwrap()).await;
        }
    }
    for id in &wanted {
        app.wait_terminal(id).await;
    }
    let page: Value = app
        .get("/v1/tasks?state=succeeded&kind=sha256&limit=2")
        .await
        .json()
        .await
        .unwrap();
    let mut listed: Vec<Value> = page["tasks"].as_array().unwrap().clone();
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a full page")
        .to_owned();
    let next: Value = app
        .get(&format!("/v1/tasks?cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    listed.extend(next["tasks"].as_array().unwrap().iter().cloned());
    assert!(next["next_cursor"].is_null(), "{next}");
    let kinds: Vec<(&Value, &Value)> = listed.iter().map(|t| (&t["kind"], &t["state"])).collect();
    assert!(
        kinds
            .iter()
            .all(|(k, s)| *k == "sha256" && *s == "succeeded"),
        "{kinds:?}"
    );
    let mut ids: Vec<&str> = listed.iter().map(|t| t["id"].as_str().unwrap()).collect();
    ids.reverse();
    assert_eq!(ids, wanted);

    let repeated = app
        .get(&format!(
            "/v1/tasks?state=succeeded&limit=5&cursor={cursor}"
        ))
        .await;
    assert_eq!(repeated.status(), StatusCode::OK);
    for changed in ["state=failed", "kind=echo", "queue=default", "label=a:b"] {
        let response = app
            .get(&format!("/v1/tasks?{changed}&cursor={cursor}"))
            .await;
        let problem = crate::helpers::expect_problem(response, 400, "invalid_query").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("cursor"),
            "{problem}"
        );
    }
    // A bare task id is not a cursor (it would carry no filters).
    let response = app.get(&format!("/v1/tasks?cursor={}", wanted[0])).await;
    crate::helpers::expect_problem(response, 400, "invalid_query").await;
}

/// /v1/kinds lists the built-in kinds, each with a JSON Schema of its input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_are_described_with_schemas() {
    let app = spawn_app().await;
    let body: Value = app.get("/v1/kinds").await.json().await.unwrap();
    let kinds: Vec<&str> = body["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    for builtin in ["echo", "fail", "http", "sha256", "sleep"] {
        assert!(kinds.contains(&builtin), "{builtin} in {kinds:?}");
    }
    let sleep = body["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "sleep")
        .unwrap();
    assert_eq!(sleep["input_schema"]["properties"]["ms"]["type"], "integer");
    assert_eq!(sleep["input_schema"]["required"], json!(["ms"]));
}

/// Health and readiness answer 200 on a running server; responses carry a request id,
/// and a given one is propagated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_request_ids() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
    assert!(health.headers().contains_key("x-request-id"));
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
}

/// `GET /` serves the dashboard page, which reads only the public API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served() {
    let app = spawn_app().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("\"v1/queues\"") && page.contains("\"v1/events\""));
    assert!(
        page.contains(r#"<base href="/">"#),
        "its URLs are relative to the root"
    );
}

/// A task that reports progress and ends before the next flush keeps its last report, and
/// percents are recorded without float noise (two decimals at most).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_progress_survives_a_quick_end() {
    let app = spawn_app().await;
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 20}}))
        .await;
    let done = app.wait_terminal(task["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded");
    let percent = done["progress"]["percent"]
        .as_f64()
        .expect("the last progress is kept");
    assert_eq!((percent * 100.0).round() / 100.0, percent, "{percent}");
}
