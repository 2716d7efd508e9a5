//! A real headless browser for the console's tests: Debian's `chromium`, driven over
//! WebDriver through `chromedriver` (package `chromium-driver`, which `.ci/run` installs).
//! A missing driver fails the test with what to install; it does not skip it.
//!
//! Each [`Browser`] runs its own chromedriver on a free port with a fresh profile directory,
//! in a process group of its own, so dropping it (a test that panicked included) ends the
//! driver and the browser it started. The browser tests take [`Browser::open`]'s lock one at
//! a time: two chromiums at once on a loaded 2-core machine only make both slow.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

use crate::helpers::wait_for;
use crate::proxies::free_port;

/// One browser at a time (see the module's note); held by each [`Browser`] until dropped.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    pub client: Client,
    // Declared after the client: dropped after it.
    _driver: Driver,
    _profile: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Browser {
    /// Starts chromedriver and a headless chromium with a 1280x800 window.
    pub async fn open() -> Browser {
        let turn = ONE_AT_A_TIME.lock().await;
        let driver_path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.to_owned());
        assert!(
            std::path::Path::new(&driver_path).exists(),
            "{driver_path} is missing: the console's browser tests need Debian's chromium and \
             chromedriver (`apt-get install -y chromium chromium-driver`; .ci/run does it)"
        );
        let port = free_port();
        let driver = Driver(
            Command::new(&driver_path)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{driver_path} does not start: {e}")),
        );
        let profile = tempfile::tempdir().unwrap();
        let browser = Browser {
            client: connect(port, &profile).await,
            _driver: driver,
            _profile: profile,
            _turn: turn,
        };
        browser.viewport(1280, 800).await;
        browser
    }

    /// Sizes the window so that the page itself (what a screenshot shows) is `width` x `height`.
    async fn viewport(&self, width: u32, height: u32) {
        let chrome = self
            .run(
                "return [outerWidth - innerWidth, outerHeight - innerHeight];",
                vec![],
            )
            .await;
        let extra = |i: usize| u32::try_from(chrome[i].as_u64().unwrap_or(0)).unwrap_or(0);
        self.client
            .set_window_size(width + extra(0), height + extra(1))
            .await
            .expect("the window resizes");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn run(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .expect("the script runs")
    }

    /// The text of the first element matching `css`; None when there is none.
    pub async fn text(&self, css: &str) -> Option<String> {
        let script =
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;";
        self.run(script, vec![json!(css)])
            .await
            .as_str()
            .map(str::to_owned)
    }

    /// Whether an element matches `css` and is shown (neither it nor a parent is `hidden`).
    pub async fn shown(&self, css: &str) -> bool {
        let script =
            "const e = document.querySelector(arguments[0]); return !!(e && e.offsetParent);";
        self.run(script, vec![json!(css)]).await == json!(true)
    }

    /// Waits until the text at `css` contains `want`; answers the text.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        let what = format!("`{want}` in {css}");
        wait_for(&what, || async {
            self.text(css).await.filter(|text| text.contains(want))
        })
        .await
    }

    /// Clicks the element at `css` as a user does, once it is there and enabled (the page
    /// re-renders some tables every few seconds, so a found element may go stale: retried).
    pub async fn click(&self, css: &str) {
        wait_for(&format!("{css} to be clickable"), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            if !element.is_enabled().await.ok()? {
                return None;
            }
            element.click().await.ok()
        })
        .await;
    }

    /// Types `text` into the field at `css`, replacing what it held.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.expect(css);
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    /// Saves a PNG of the window as `name`.png in `$TASKD_SCREENSHOTS` (docs/console when
    /// making the docs' pictures), or else in a temporary directory.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = std::env::var_os("TASKD_SCREENSHOTS")
            .map_or_else(|| std::env::temp_dir().join("taskd-console"), PathBuf::from);
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session (the browser quits), then the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// A running chromedriver, in a process group of its own with the browsers it starts.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the chromium it started.
        let group = i32::try_from(self.0.id()).expect("a pid fits i32");
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// A WebDriver session on the chromedriver at `port`, once it answers.
async fn connect(port: u16, profile: &tempfile::TempDir) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,800", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object literal")
    };
    let url = format!("http://127.0.0.1:{port}");
    wait_for("chromedriver to answer", || async {
        let status = reqwest::get(format!("{url}/status")).await.ok()?;
        let status: Value = status.json().await.ok()?;
        (status["value"]["ready"] == true).then_some(())
    })
    .await;
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("chromedriver starts no {CHROMIUM}: {e}"))
}
