//! The console (`GET /`) in a real headless chromium (see `browser`): it lists queues, shows
//! a submitted task appear and finish live, cancels a running task, lists a task's children, pauses and limits a
//! queue, pages through 10,000 tasks, pauses a schedule, asks for a key, works under a path
//! prefix and shows the server's problem+json words when an action fails. Each test saves screenshots;
//! with `TASKD_SCREENSHOTS=docs/console` they are the pictures of docs/console.md.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::auth::{key, keyed};
use crate::browser::Browser;
use crate::helpers::{TestApp, spawn_app, spawn_app_with, wait_for};

/// Opens the console at `view` (a `#/…` hash) and waits until its event stream is live, so
/// no event after this returns is missed.
async fn open(app: &TestApp, prefix: &str, view: &str) -> Browser {
    let browser = Browser::open().await;
    browser.goto(&format!("{}{prefix}/{view}", app.base)).await;
    browser.wait_text("#live", "live").await;
    browser
}

/// The queue `name`, as the API serves it.
async fn queue(app: &TestApp, name: &str) -> Value {
    let queues: Value = app.get("/v1/queues").await.json().await.unwrap();
    queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no queue {name} in {queues}"))
}

/// A task submitted over HTTP shows up in the live table and reaches `succeeded` there
/// without a reload; its page shows its result and event timeline; the queues view lists
/// its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_task_appears_and_finishes_live() {
    let app = spawn_app().await;
    let browser = open(&app, "", "#/tasks").await;
    browser.wait_text("#tasks tbody", "No tasks match").await;
    // The kind field suggests the registered kinds.
    wait_for("the kinds as suggestions", || async {
        let script =
            "return [...document.querySelectorAll('#kind-choices option')].map((o) => o.value);";
        let kinds = browser.run(script, vec![]).await;
        kinds.as_array()?.contains(&json!("sleep")).then_some(())
    })
    .await;

    for n in 1..=3 {
        app.submit(json!({"kind": "echo", "input": {"order": n}, "queue": "orders", "labels": {"tenant": "acme"}}))
            .await;
    }
    app.submit(json!({"kind": "fail", "input": {"message": "card declined"}, "max_attempts": 1, "queue": "billing"}))
        .await;
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 2000}}))
        .await;
    let id = task["id"].as_str().unwrap();
    let state = format!("tr[data-id='{id}'] .state");
    browser.wait_text(&state, "running").await;
    wait_for("a progress bar past 10%", || async {
        let script = "const bar = document.querySelector(arguments[0]); \
                      return bar ? parseFloat(bar.style.width) : 0;";
        let bar = json!(format!("tr[data-id='{id}'] .progress .bar > div"));
        let percent = browser.run(script, vec![bar]).await.as_f64()?;
        (percent > 10.0).then_some(())
    })
    .await;
    browser.screenshot("tasks").await;
    browser.wait_text(&state, "succeeded").await;
    assert_eq!(app.task(id).await["state"], "succeeded");

    browser.click(&format!("tr[data-id='{id}'] a")).await;
    browser.wait_text("#outcome", "slept_ms").await;
    browser.wait_text("#timeline", "succeeded").await;
    let timeline = browser.text("#timeline").await.unwrap();
    assert!(
        timeline.contains("queued") && timeline.contains("running"),
        "{timeline}"
    );
    browser.screenshot("task").await;

    // The queues, with a trend: two waves of tasks while the page samples.
    browser.click("nav a[data-view='queues']").await;
    browser.wait_text("tr[data-queue='orders']", "orders").await;
    browser
        .wait_text("tr[data-queue='default']", "default")
        .await;
    for (wave, samples) in [(6, 2), (12, 4)] {
        let tasks: Vec<Value> = (0..wave)
            .map(|n| json!({"kind": "echo", "input": n, "queue": "orders"}))
            .collect();
        let response = app
            .post_json("/v1/tasks/batch", &json!({"tasks": tasks}))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        wait_for("the trend to sample", || async {
            let script =
                "return Number(document.querySelector('.summary svg')?.dataset.samples ?? 0);";
            let taken = browser.run(script, vec![]).await.as_u64()?;
            (taken >= samples).then_some(())
        })
        .await;
    }
    browser.screenshot("queues").await;
    browser.close().await;
}

/// The Cancel button of a running task's page cancels it: the API then says `cancelled`;
/// Retry runs it again, and the page follows the new attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_is_cancelled_from_its_page() {
    let app = spawn_app().await;
    // The browser first: waiting for its turn (`browser`) must not eat into the task's run.
    let browser = open(&app, "", "#/queues").await;
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 600_000}}))
        .await;
    let id = task["id"].as_str().unwrap();
    app.wait_state(id, "running").await;

    browser.goto(&format!("{}/#/tasks/{id}", app.base)).await;
    browser.wait_text("#progress", "slept").await;
    browser.click("#cancel").await;
    assert_eq!(app.wait_terminal(id).await["state"], "cancelled");
    browser.wait_text("#timeline", "cancelled").await;
    browser.screenshot("cancelled").await;

    // Retry queues it again, and the page follows the new attempt live.
    browser.click("#retry").await;
    app.wait_state(id, "running").await;
    browser
        .wait_text("#timeline li:first-child", "running")
        .await;
    browser.close().await;
}

/// A task's page lists its children (the tasks that name it in `after`) and links to them;
/// a child's page links back to its parents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_page_lists_its_children_and_parents() {
    let app = spawn_app().await;
    let browser = open(&app, "", "#/queues").await;
    let response = app
        .post_json(
            "/v1/tasks/batch",
            &json!({"tasks": [
                {"kind": "sha256", "input": {"data": "order 42"}},
                {"kind": "sha256", "after": ["$0"], "input_from": "$0"},
                {"kind": "echo", "input": "audit", "after": ["$0"], "after_policy": "all_finished"},
            ]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let tasks: Value = response.json().await.unwrap();
    let id = |n: usize| tasks["tasks"][n]["id"].as_str().unwrap().to_owned();
    for n in 0..3 {
        app.wait_terminal(&id(n)).await;
    }

    browser
        .goto(&format!("{}/#/tasks/{}", app.base, id(0)))
        .await;
    for n in 1..3 {
        browser
            .wait_text(
                &format!("#children li[data-child='{}']", id(n)),
                "succeeded",
            )
            .await;
    }
    browser
        .run(
            "document.querySelector('#children').scrollIntoView({block: 'end'});",
            vec![],
        )
        .await;
    browser.screenshot("dependencies").await;
    browser
        .click(&format!("#children li[data-child='{}'] a", id(1)))
        .await;
    browser.wait_text("#outcome", "digest").await;
    let short = format!("{}…", &id(0)[..8]);
    let fields = browser.wait_text("dl.fields", &short).await;
    assert!(fields.contains("input from"), "{fields}");
    browser.close().await;
}

/// Pause and the settings form change the queue (the API says so), and a queue of 10,000
/// tasks is shown one page at a time, paged with the API's cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_is_paused_and_limited_from_the_page() {
    let app = spawn_app().await;
    crate::helpers::patch_queue(&app, "bulk", json!({"paused": true})).await;
    for chunk in 0..10 {
        let tasks: Vec<Value> = (0..1000)
            .map(|n| json!({"kind": "echo", "input": {"n": chunk * 1000 + n}, "queue": "bulk"}))
            .collect();
        let response = app
            .post_json("/v1/tasks/batch", &json!({"tasks": tasks}))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    app.submit(json!({"kind": "echo", "input": {}, "queue": "orders"}))
        .await;

    let browser = open(&app, "", "#/queues").await;
    browser.wait_text("tr[data-queue='bulk']", "10000").await;
    browser.click("tr[data-queue='orders'] button.pause").await;
    wait_for("orders to be paused", || async {
        (queue(&app, "orders").await["paused"] == true).then_some(())
    })
    .await;
    browser.wait_text("tr[data-queue='orders']", "paused").await;

    browser
        .click("tr[data-queue='orders'] button.edit-queue")
        .await;
    browser
        .fill("#queue-editor input[name=concurrency]", "3")
        .await;
    browser.fill("#queue-editor input[name=limit]", "50").await;
    browser
        .fill("#queue-editor input[name=per_ms]", "1000")
        .await;
    browser.click("#queue-editor button.primary").await;
    wait_for("the limits to be saved", || async {
        let orders = queue(&app, "orders").await;
        (orders["concurrency"] == 3 && orders["rate"] == json!({"limit": 50, "per_ms": 1000}))
            .then_some(())
    })
    .await;
    browser
        .wait_text("tr[data-queue='orders']", "concurrency 3")
        .await;
    browser.screenshot("queues-paused").await;

    browser.click("tr[data-queue='bulk'] a").await;
    browser.wait_text(".pager", "page 1 · 50 tasks").await;
    browser.click("#older").await;
    browser.wait_text(".pager", "page 2 · 50 tasks").await;
    let rows = browser
        .run(
            "return document.querySelectorAll('#tasks tbody tr').length;",
            vec![],
        )
        .await;
    assert_eq!(rows, json!(50));
    browser.close().await;
}

/// On a server with keys the page asks for one, and works once it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_for_a_key_and_works_with_it() {
    let app = spawn_app().await;
    let secret = key(&app, "console", "admin", "").await;
    let submitted = keyed(&secret)
        .post(app.url("/v1/tasks"))
        .json(&json!({"kind": "echo", "input": {}, "queue": "reports"}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), StatusCode::ACCEPTED);

    let browser = Browser::open().await;
    browser.goto(&format!("{}/", app.base)).await;
    wait_for("the key prompt", || async {
        browser.shown("#key").await.then_some(())
    })
    .await;
    browser
        .fill("#key input[name=secret]", "tdk_not-a-key")
        .await;
    browser.screenshot("key").await;
    browser.fill("#key input[name=secret]", &secret).await;
    browser.click("#key button").await;
    browser
        .wait_text("tr[data-queue='reports']", "reports")
        .await;
    browser.wait_text("#live", "live").await;
    assert!(!browser.shown("#key").await);
    browser.close().await;
}

/// Under `--base-path /taskd` the page, its calls and its event stream work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_under_a_base_path() {
    let app = spawn_app_with(|c| c.base_path = "/taskd".parse().unwrap()).await;
    let browser = open(&app, "/taskd", "#/tasks").await;
    let response = app
        .post_json(
            "/taskd/v1/tasks",
            &json!({"kind": "echo", "input": {"hello": "prefix"}}),
        )
        .await;
    let task: Value = response.json().await.unwrap();
    let id = task["id"].as_str().unwrap();
    browser
        .wait_text(&format!("tr[data-id='{id}'] .state"), "succeeded")
        .await;
    browser.click("nav a[data-view='queues']").await;
    browser
        .wait_text("tr[data-queue='default']", "default")
        .await;
    assert!(!browser.shown("#problem").await);
    browser.close().await;
}

/// A failing action shows the server's problem+json title and detail: retrying a
/// succeeded task from the bulk bar answers 409, and the banner says what the API says.
/// The task's input, markup meant to run, is shown as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_action_shows_the_servers_problem() {
    let app = spawn_app().await;
    let markup = "<img src=x onerror=\"document.title='injected'\">";
    let task = app
        .submit(json!({"kind": "echo", "input": {"html": markup}}))
        .await;
    let id = task["id"].as_str().unwrap();
    app.wait_terminal(id).await;

    let browser = open(&app, "", "#/tasks").await;
    browser
        .click(&format!("tr[data-id='{id}'] input[type=checkbox]"))
        .await;
    browser.click("#bulk-retry").await;
    let banner = browser
        .wait_text("#problem-text", "retry of 1 of 1 tasks failed")
        .await;

    let answer = app
        .post_json(&format!("/v1/tasks/{id}/retry"), &json!({}))
        .await;
    assert_eq!(answer.status(), StatusCode::CONFLICT);
    let problem: Value = answer.json().await.unwrap();
    let (title, detail) = (
        problem["title"].as_str().unwrap(),
        problem["detail"].as_str().unwrap(),
    );
    assert!(banner.contains(&format!("{title}: {detail}")), "{banner}");
    assert!(browser.shown("#problem").await);
    browser.screenshot("problem").await;

    // Task data is text on the page, never markup.
    browser.click(&format!("tr[data-id='{id}'] a")).await;
    browser.wait_text("#input", "<img src=x onerror=").await;
    let injected = browser
        .run(
            "return document.querySelectorAll('main img').length;",
            vec![],
        )
        .await;
    assert_eq!(injected, json!(0));
    assert_ne!(
        browser.run("return document.title;", vec![]).await,
        json!("injected")
    );
    browser.close().await;
}

/// The schedules view lists a schedule with its next runs, and Pause pauses it (the API
/// says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_listed_and_paused_from_the_page() {
    let app = spawn_app().await;
    let schedule = json!({"cron": "0 3 * * *", "timezone": "Europe/Paris",
                          "task": {"kind": "echo", "input": {"report": "daily"}, "queue": "reports"}});
    let response = app
        .client
        .put(app.url("/v1/schedules/nightly-report"))
        .json(&schedule)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    let browser = open(&app, "", "#/schedules").await;
    browser
        .wait_text("tr[data-schedule='nightly-report']", "active")
        .await;
    browser
        .click("tr[data-schedule='nightly-report'] button")
        .await;
    wait_for("the schedule to be paused", || async {
        let schedule: Value = app
            .get("/v1/schedules/nightly-report")
            .await
            .json()
            .await
            .unwrap();
        (schedule["paused"] == true).then_some(())
    })
    .await;
    browser
        .wait_text("tr[data-schedule='nightly-report']", "paused")
        .await;
    browser.screenshot("schedules").await;
    browser.close().await;
}
