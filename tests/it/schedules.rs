//! Schedules over HTTP: writing, reading, listing and deleting them (with the next five fire
//! times), the refusals that name their field, and firing: once per slot with two nodes on
//! one database, no overlap under `skip`, only the latest missed slot after downtime.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::backend::{Backend, TestDatabase};
use crate::helpers::{
    TestApp, expect_problem, max_overlap, millis, spawn_app, spawn_app_on, wait_for,
};

async fn put(app: &TestApp, name: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(app.url(&format!("/v1/schedules/{name}")))
        .json(body)
        .send()
        .await
        .expect("PUT")
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.expect("JSON")
}

/// Every task the schedule `name` fired, as listed (finished or not).
async fn fired(app: &TestApp, name: &str) -> Vec<Value> {
    let page = get_json(app, &format!("/v1/tasks?label=schedule:{name}&limit=500")).await;
    page["tasks"].as_array().expect("tasks").clone()
}

/// The slot of a fired task, in milliseconds.
fn slot(task: &Value) -> i64 {
    millis(&task["labels"], "schedule_slot")
}

/// How many tasks each slot got.
fn per_slot(tasks: &[Value]) -> BTreeMap<i64, usize> {
    let mut slots = BTreeMap::new();
    for task in tasks {
        *slots.entry(slot(task)).or_insert(0) += 1;
    }
    slots
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A PUT creates (201) then replaces (200); every answer shows the next five slots of the
/// cron in its zone; the list pages by name; a DELETE leaves 404 behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_written_read_listed_and_deleted() {
    let app = spawn_app().await;
    let body = json!({
        "cron": "30 9 * * MON-FRI",
        "timezone": "America/New_York",
        "task": {"kind": "echo", "input": {"report": "daily"}, "queue": "reports"},
        "paused": true
    });
    let created = put(&app, "weekday-report", &body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["overlap"], "skip");
    assert_eq!(created["catch_up"], "latest");
    assert_eq!(created["last_run"], Value::Null);
    assert_eq!(created["task"]["queue"], "reports");
    let times: Vec<chrono::DateTime<chrono_tz::Tz>> = created["next_fire_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono_tz::America::New_York)
        })
        .collect();
    assert_eq!(times.len(), 5);
    assert!(times.windows(2).all(|w| w[0] < w[1]));
    for time in &times {
        use chrono::{Datelike, Timelike};
        assert_eq!(
            (time.hour(), time.minute(), time.second()),
            (9, 30, 0),
            "{time}"
        );
        assert!(time.weekday().num_days_from_monday() < 5, "{time}");
    }

    let replaced = put(
        &app,
        "weekday-report",
        &json!({"cron": "0 0 * * *", "task": {"kind": "echo"}, "paused": true}),
    )
    .await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let one = get_json(&app, "/v1/schedules/weekday-report").await;
    assert_eq!(one["cron"], "0 0 * * *");
    assert_eq!(one["created_at"], created["created_at"]);
    assert_eq!(one["next_fire_times"].as_array().unwrap().len(), 5);

    put(
        &app,
        "another",
        &json!({"cron": "0 0 * * *", "task": {"kind": "echo"}, "paused": true}),
    )
    .await;
    let first = get_json(&app, "/v1/schedules?limit=1").await;
    assert_eq!(first["schedules"][0]["name"], "another");
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_owned();
    let second = get_json(&app, &format!("/v1/schedules?limit=1&cursor={cursor}")).await;
    assert_eq!(second["schedules"][0]["name"], "weekday-report");

    let deleted = app
        .client
        .delete(app.url("/v1/schedules/weekday-report"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = app.get("/v1/schedules/weekday-report").await;
    expect_problem(gone, 404, "schedule_not_found").await;
}

/// A bad cron, an unknown zone, a bad queue, an unknown option value or a `run_at` are 422
/// naming the field; an unknown kind is `unknown_kind`; a bad name is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let task = json!({"kind": "echo"});
    let cases = [
        (
            json!({"cron": "61 * * * *", "task": task}),
            "invalid_request",
            "cron",
            "61 * * * *",
        ),
        (
            json!({"cron": "* * *", "task": task}),
            "invalid_request",
            "cron",
            "3 fields",
        ),
        (
            json!({"cron": "0 0 30 2 *", "task": task}),
            "invalid_request",
            "cron",
            "matches no instant",
        ),
        (
            json!({"cron": "* * * * *", "timezone": "Mars/Olympus", "task": task}),
            "invalid_request",
            "timezone",
            "Mars/Olympus",
        ),
        (
            json!({"cron": "* * * * *", "task": {"kind": "echo", "queue": "a/b"}}),
            "invalid_request",
            "task.queue",
            "may only contain",
        ),
        (
            json!({"cron": "* * * * *", "task": {"kind": "echo", "run_at": "2030-01-01T00:00:00Z"}}),
            "invalid_request",
            "task.run_at",
            "each slot",
        ),
        (
            json!({"cron": "* * * * *", "task": task, "overlap": "sometimes"}),
            "invalid_request",
            "overlap",
            "sometimes",
        ),
        (
            json!({"cron": "* * * * *", "task": task, "catch_up": "all"}),
            "invalid_request",
            "catch_up",
            "all",
        ),
        (
            json!({"cron": "* * * * *", "task": {"kind": "teleport"}}),
            "unknown_kind",
            "kind",
            "teleport",
        ),
    ];
    for (body, code, field, said) in cases {
        let problem = expect_problem(put(&app, "bad", &body).await, 422, code).await;
        let error = &problem["errors"][0];
        assert_eq!(error["field"], field, "{problem}");
        assert!(
            error["message"].as_str().unwrap().contains(said),
            "{problem}"
        );
    }
    expect_problem(
        put(&app, "a%20b", &json!({"cron": "* * * * *", "task": task})).await,
        400,
        "invalid_path",
    )
    .await;
    expect_problem(
        app.get("/v1/schedules/bad").await,
        404,
        "schedule_not_found",
    )
    .await;
}

/// An every-second schedule with `overlap: skip` and a task longer than a second never runs
/// two of its tasks at once, and its last run shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_runs_one_at_a_time() {
    let app = spawn_app().await;
    let body = json!({
        "cron": "* * * * * *",
        "task": {"kind": "sleep", "input": {"ms": 2500}, "queue": "slow"}
    });
    assert_eq!(put(&app, "slow", &body).await.status(), StatusCode::CREATED);
    let tasks = wait_for("two finished runs", || async {
        let tasks = fired(&app, "slow").await;
        let done = tasks.iter().filter(|t| t["state"] == "succeeded").count();
        (done >= 2).then_some(tasks)
    })
    .await;
    let finished: Vec<Value> = tasks
        .into_iter()
        .filter(|t| t["state"] == "succeeded")
        .collect();
    assert_eq!(max_overlap(&finished), 1, "{finished:?}");
    // Each run was fired only after the one before had finished.
    let mut by_slot = finished.clone();
    by_slot.sort_by_key(slot);
    for pair in by_slot.windows(2) {
        assert!(millis(&pair[1], "created_at") >= millis(&pair[0], "finished_at"));
    }
    let schedule = get_json(&app, "/v1/schedules/slow").await;
    assert!(schedule["last_run"]["id"].is_string(), "{schedule}");
}

/// After downtime only the latest missed slot fires: a server stopped for several slots of
/// an every-second schedule fires none of the missed ones but the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_latest_missed_slot_fires_after_a_restart() {
    let mut app = spawn_app().await;
    let body = json!({"cron": "* * * * * *", "overlap": "allow", "task": {"kind": "echo"}});
    put(&app, "tick", &body).await;
    wait_for("a first slot", || async {
        (!fired(&app, "tick").await.is_empty()).then_some(())
    })
    .await;
    let database_url = app.database_url.clone();
    let database = app.take_database();
    app.stop().await;
    let stopped_at = now_ms();
    // Three slots pass while no server runs.
    wait_for("downtime of 3.5 s", || async {
        (now_ms() >= stopped_at + 3_500).then_some(())
    })
    .await;
    let restarted_at = now_ms();
    let app = spawn_app_on(&database_url, |_| {}).await;
    let tasks = wait_for("a slot after the restart", || async {
        let tasks = fired(&app, "tick").await;
        tasks.iter().any(|t| slot(t) > stopped_at).then_some(tasks)
    })
    .await;
    let missed: Vec<i64> = per_slot(&tasks)
        .into_keys()
        .filter(|&s| s > stopped_at && s <= restarted_at - 1_000)
        .collect();
    assert!(missed.is_empty(), "missed slots fired: {missed:?}");
    drop(database);
}

/// Two nodes on one database fire an every-two-seconds schedule: every slot has one task.
/// Always PostgreSQL (the store several nodes share), as the other multi-node tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_fire_each_slot_once() {
    let database = TestDatabase::fresh(Backend::Postgres).await;
    let one = spawn_app_on(&database.url, |_| {}).await;
    let two = spawn_app_on(&database.url, |_| {}).await;
    let body = json!({"cron": "*/2 * * * * *", "overlap": "allow", "task": {"kind": "echo"}});
    assert_eq!(
        put(&one, "every-two", &body).await.status(),
        StatusCode::CREATED
    );
    let tasks = wait_for("four slots fired", || async {
        let tasks = fired(&two, "every-two").await;
        (per_slot(&tasks).len() >= 4).then_some(tasks)
    })
    .await;
    let slots = per_slot(&tasks);
    let doubled: Vec<_> = slots.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "slots with two tasks: {doubled:?}");
    assert!(slots.keys().all(|s| s % 2_000 == 0), "{slots:?}");
    let schedule = get_json(&one, "/v1/schedules/every-two").await;
    assert!(schedule["last_run"]["state"].is_string(), "{schedule}");
}

/// A key limited to some queues writes schedules only for tasks of its queues (403 naming
/// the queue otherwise), and cannot see, replace or delete another queue's schedule (404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_scoped_key_manages_only_its_schedules() {
    let app = spawn_app().await;
    let admin = crate::auth::keyed(&crate::auth::key(&app, "admin", "admin", "").await);
    let tenant_key = crate::auth::key(&app, "tenant", "submit,read", "a-*").await;
    let tenant = crate::auth::keyed(&tenant_key);
    let body = |queue: &str| json!({"cron": "0 0 * * *", "paused": true, "task": {"kind": "echo", "queue": queue}});
    let url = |name: &str| app.url(&format!("/v1/schedules/{name}"));
    let own = tenant
        .put(url("own"))
        .json(&body("a-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::CREATED);
    let other = tenant
        .put(url("other"))
        .json(&body("b"))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(other, 403, "queue_forbidden").await;
    assert_eq!(problem["errors"][0]["field"], "queue");
    let theirs = admin
        .put(url("theirs"))
        .json(&body("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::CREATED);

    let hidden = tenant.get(url("theirs")).send().await.unwrap();
    expect_problem(hidden, 404, "schedule_not_found").await;
    let replaced = tenant
        .put(url("theirs"))
        .json(&body("a-1"))
        .send()
        .await
        .unwrap();
    expect_problem(replaced, 403, "queue_forbidden").await;
    let deleted = tenant.delete(url("theirs")).send().await.unwrap();
    expect_problem(deleted, 404, "schedule_not_found").await;
    let listed = crate::auth::get_json(&tenant, app.url("/v1/schedules")).await;
    let names: Vec<&str> = listed["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["own"]);
}
