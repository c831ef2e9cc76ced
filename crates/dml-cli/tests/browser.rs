//! A small WebDriver client for testing the HTML pages dml writes in a real browser: headless
//! Chromium driven by `chromedriver` over the W3C WebDriver protocol (JSON over local HTTP,
//! spoken with `ureq`).
//!
//! ```ignore
//! let Some(browser) = Browser::start() else { return }; // skipped: no Chromium here
//! browser.goto(&file_url(&dir.join("index.html")));
//! browser.wait_until("document.body.dataset.ready === 'true'", Duration::from_secs(10));
//! let rows = browser.eval("document.querySelectorAll('tr').length");
//! browser.click("#classes th[data-key='size']");
//! browser.screenshot(&out.join("page.png"));
//! ```
//!
//! # When Chromium is missing
//!
//! [`Browser::start`] needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's
//! `chromium` and `chromium-driver` packages; `DML_CHROMIUM` and `DML_CHROMEDRIVER` name other
//! paths). When either is missing:
//!
//! - with `DML_REQUIRE_BROWSER` set (to anything but empty or `0`), the test fails with a
//!   message saying how to install them. `.ci/run` installs both and sets the variable, so in
//!   CI a browser test can never be skipped;
//! - otherwise one line on stderr says the browser test was skipped and why, `start` returns
//!   `None` and the test returns early, so `cargo test --workspace` passes on a machine without
//!   Chromium.
//!
//! A browser that is installed but does not start is always a failure.
//!
//! # Network
//!
//! A session started with [`Browser::start`] has no network: every host name (IP literals
//! included) resolves to nothing and anything proxied goes to a closed port, so only `file:`
//! and `data:` URLs load. [`Network::Loopback`] lets `127.0.0.1` through, for pages served by
//! dml itself. Every URL the page requests, loaded or refused, is recorded from chromedriver's
//! performance log ([`Browser::requested_urls`]); errors the page logs are in
//! [`Browser::console_errors`].
//!
//! # Failures
//!
//! The methods do not return errors: a WebDriver error, a JavaScript exception or a timeout
//! panics with what was asked, what was expected and what came back, which is the test's
//! failure message. Dropping the [`Browser`] ends the session and kills chromedriver.

use std::cell::RefCell;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts chromedriver.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How to get both, for the failure and skip messages.
const INSTALL_HINT: &str = "install them with `apt-get install -y chromium chromium-driver` \
    (Debian/Ubuntu), or set DML_CHROMIUM and DML_CHROMEDRIVER to a Chromium and its chromedriver";

/// The W3C key of an element reference in a WebDriver reply.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Largest WebDriver reply read (a full-page screenshot in base64 stays far below).
const MAX_REPLY_BYTES: u64 = 256 << 20;
/// How long chromedriver may take to answer `/status` after it starts.
const DRIVER_START: Duration = Duration::from_secs(15);
/// How often [`Browser::wait_until`] evaluates its condition.
const POLL: Duration = Duration::from_millis(10);
/// How long [`time_to_ready`] waits for a page before failing.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What a session may reach besides `file:` and `data:` URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Nothing: every host name and IP fails to resolve, proxied requests fail.
    None,
    /// `127.0.0.1` only (a server started by the test); every other host fails.
    Loopback,
}

impl Network {
    /// The Chromium switches that shut the network.
    fn switches(self) -> [&'static str; 3] {
        match self {
            // `<-loopback>` removes Chromium's implicit proxy bypass of localhost, so even
            // loopback requests go to the dead proxy.
            Network::None => [
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "--proxy-server=127.0.0.1:9",
                "--proxy-bypass-list=<-loopback>",
            ],
            Network::Loopback => [
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--proxy-server=127.0.0.1:9",
                "--proxy-bypass-list=127.0.0.1",
            ],
        }
    }
}

/// A chromedriver child process, killed when dropped.
struct Driver {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The process may already have exited; there is nothing else to do about it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium session (see the module documentation).
pub struct Browser {
    agent: ureq::Agent,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    /// Every URL requested so far (the performance log is drained on each read).
    requests: RefCell<Vec<String>>,
    /// Every SEVERE browser-log message so far (drained likewise).
    errors: RefCell<Vec<String>>,
    /// Declared last: dropped after [`Browser::drop`] has ended the session.
    _driver: Driver,
}

/// An HTTP method of the WebDriver commands used here.
#[derive(Debug, Clone, Copy)]
enum Method {
    Get,
    Post,
    Delete,
}

/// Whether `DML_REQUIRE_BROWSER` asks for a failure instead of a skip.
fn browser_required() -> bool {
    std::env::var_os("DML_REQUIRE_BROWSER").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `var` if set and non-empty, else `default`.
fn path_from_env(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(default),
    }
}

/// The browser and driver binaries, or why they cannot be used (skip or fail, by
/// `DML_REQUIRE_BROWSER`).
fn find_binaries() -> Result<(PathBuf, PathBuf), String> {
    let chromium = path_from_env("DML_CHROMIUM", CHROMIUM);
    let driver = path_from_env("DML_CHROMEDRIVER", CHROMEDRIVER);
    let missing: Vec<String> = [&chromium, &driver]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        Ok((chromium, driver))
    } else {
        Err(format!("{} not found", missing.join(" and ")))
    }
}

/// The first line of a WebDriver error message (chromedriver appends session info and a
/// native stack trace).
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// At most `max` characters of `text`, for messages.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// One WebDriver request: the reply's `value`, or a message naming the command and the error.
fn request(
    agent: &ureq::Agent,
    method: Method,
    url: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let what = format!("{method:?} {url}");
    let reply = match method {
        Method::Get => agent.get(url).call(),
        Method::Delete => agent.delete(url).call(),
        Method::Post => {
            let body = body.map_or_else(|| "{}".to_owned(), Value::to_string);
            agent.post(url).content_type("application/json").send(body)
        }
    };
    let mut reply = reply.map_err(|e| format!("{what}: {e}"))?;
    let status = reply.status();
    let text = reply
        .body_mut()
        .with_config()
        .limit(MAX_REPLY_BYTES)
        .read_to_string()
        .map_err(|e| format!("{what}: reading the reply: {e}"))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{what}: the reply is not JSON ({e}): {}", clip(&text, 300)))?;
    let value = json.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    let error = value["error"].as_str().unwrap_or("error");
    let message = first_line(value["message"].as_str().unwrap_or(""));
    Err(format!("{what}: HTTP {status}: {error}: {message}"))
}

/// A local TCP port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("browser: no free local port for chromedriver: {e}"));
    match listener.local_addr() {
        Ok(addr) => addr.port(),
        Err(e) => panic!("browser: no local address for chromedriver's port: {e}"),
    }
}

/// Starts chromedriver and waits until it accepts sessions.
fn start_driver(agent: &ureq::Agent, binary: &Path) -> Driver {
    let mut last_error = String::new();
    // The port is free when picked but may be taken before chromedriver binds it: retry.
    for _ in 0..3 {
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("browser: cannot run {}: {e}", binary.display()));
        let mut driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while started.elapsed() < DRIVER_START {
            match driver.child.try_wait() {
                Ok(Some(status)) => {
                    last_error = format!("chromedriver exited with {status}");
                    break;
                }
                Ok(None) => {}
                Err(e) => panic!("browser: cannot wait for chromedriver: {e}"),
            }
            match request(agent, Method::Get, &format!("{}/status", driver.base), None) {
                Ok(status) if status["ready"] == true => return driver,
                Ok(status) => last_error = format!("not ready: {status}"),
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!(
        "browser: {} did not start within {DRIVER_START:?} (last: {last_error})",
        binary.display()
    )
}

/// A `file:` URL of `path` (made absolute against the current folder), percent-encoded.
pub fn file_url(path: &Path) -> String {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(path),
            Err(e) => panic!(
                "browser: no current folder to resolve {}: {e}",
                path.display()
            ),
        }
    };
    let mut url = String::from("file://");
    for &byte in absolute.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

/// How long `url` takes from navigation to `document.body.dataset.ready === "true"` in a fresh
/// headless Chromium, or `None` when the browser test is skipped (see the module
/// documentation). Not ready within a minute fails the test.
pub fn time_to_ready(url: &str) -> Option<Duration> {
    Browser::start().map(|browser| browser.time_to_ready(url, READY_TIMEOUT))
}

impl Browser {
    /// A headless Chromium session with no network, or `None` when Chromium is missing and
    /// `DML_REQUIRE_BROWSER` is not set (see the module documentation).
    pub fn start() -> Option<Browser> {
        Browser::start_with(Network::None)
    }

    /// A headless Chromium session that may reach `network`, or `None` as for [`start`].
    ///
    /// [`start`]: Browser::start
    pub fn start_with(network: Network) -> Option<Browser> {
        let (chromium, driver_binary) = match find_binaries() {
            Ok(found) => found,
            Err(why) if browser_required() => {
                panic!("browser: DML_REQUIRE_BROWSER is set but {why}: {INSTALL_HINT}")
            }
            Err(why) => {
                let test = std::thread::current().name().unwrap_or("?").to_owned();
                eprintln!(
                    "browser test skipped ({test}): {why}; {INSTALL_HINT}; \
                     DML_REQUIRE_BROWSER=1 makes this a failure"
                );
                return None;
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let driver = start_driver(&agent, &driver_binary);
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            "--allow-file-access-from-files",
        ];
        args.extend(network.switches());
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
            "timeouts": {"script": 30_000, "pageLoad": 60_000, "implicit": 0},
        }}});
        let url = format!("{}/session", driver.base);
        let session = match request(&agent, Method::Post, &url, Some(&capabilities)) {
            Ok(value) => match value["sessionId"].as_str() {
                Some(id) => format!("{}/session/{id}", driver.base),
                None => panic!("browser: new session without an id: {value}"),
            },
            Err(e) => panic!("browser: {} does not start: {e}", chromium.display()),
        };
        Some(Browser {
            agent,
            session,
            requests: RefCell::new(Vec::new()),
            errors: RefCell::new(Vec::new()),
            _driver: driver,
        })
    }

    /// Sends a command of this session (`path` after `/session/ID`).
    fn command(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        request(
            &self.agent,
            method,
            &format!("{}{path}", self.session),
            body.as_ref(),
        )
    }

    /// Like [`Browser::command`], failing the test on an error; `what` says what was asked.
    fn must(&self, what: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        self.command(method, path, body)
            .unwrap_or_else(|e| panic!("browser: {what}: {e}"))
    }

    /// Opens `url` and waits for its load event (`file_url` makes one of a path).
    pub fn goto(&self, url: &str) {
        self.must(
            &format!("open {url}"),
            Method::Post,
            "/url",
            Some(json!({"url": url})),
        );
    }

    /// The URL of the current page.
    pub fn url(&self) -> String {
        let value = self.must("read the URL", Method::Get, "/url", None);
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` as the body of a function called with `args`; its return value as JSON,
    /// or the exception's message.
    fn try_execute(&self, script: &str, args: &[Value]) -> Result<Value, String> {
        let body = json!({"script": script, "args": args});
        self.command(Method::Post, "/execute/sync", Some(body))
    }

    /// Runs `script` as the body of a function called with `args` (`arguments[0]`, ...) and
    /// returns its `return` value as JSON; an exception fails the test.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.try_execute(script, args)
            .unwrap_or_else(|e| panic!("browser: script failed on {}: {e}\n{script}", self.url()))
    }

    /// The value of the JavaScript expression `expression`, as JSON.
    pub fn eval(&self, expression: &str) -> Value {
        self.execute(&format!("return ({expression});"), &[])
    }

    /// Waits until the JavaScript expression `condition` is truthy, evaluating it every few
    /// milliseconds; after `timeout` the test fails with the condition, the last value or
    /// exception, and the page's errors.
    pub fn wait_until(&self, condition: &str, timeout: Duration) {
        let script = format!("return !!({condition});");
        let started = Instant::now();
        let last = loop {
            let reply = self.try_execute(&script, &[]);
            if reply == Ok(Value::Bool(true)) {
                return;
            }
            if started.elapsed() >= timeout {
                break reply;
            }
            std::thread::sleep(POLL);
        };
        let last = match last {
            Ok(value) => format!("it was {value}"),
            Err(e) => format!("it threw: {e}"),
        };
        panic!(
            "browser: waited {timeout:?} for `{condition}` on {}: {last}; the page's errors: {:?}",
            self.url(),
            self.console_errors()
        );
    }

    /// The WebDriver reference of the element matching `selector`; none fails the test.
    fn element(&self, selector: &str) -> String {
        let body = json!({"using": "css selector", "value": selector});
        let value = self.must(
            &format!("find `{selector}`"),
            Method::Post,
            "/element",
            Some(body),
        );
        match value[ELEMENT_KEY].as_str() {
            Some(id) => id.to_owned(),
            None => panic!("browser: find `{selector}`: no element reference in {value}"),
        }
    }

    /// Clicks the element matching `selector` (scrolled into view) as a user would.
    pub fn click(&self, selector: &str) {
        let id = self.element(selector);
        let path = format!("/element/{id}/click");
        self.must(
            &format!("click `{selector}`"),
            Method::Post,
            &path,
            Some(json!({})),
        );
    }

    /// The viewport position of the point (`x`, `y`) CSS pixels from the top-left corner of
    /// the element matching `selector`, scrolled into view first.
    fn viewport_point(&self, selector: &str, x: f64, y: f64) -> (i64, i64) {
        let script = "const e = document.querySelector(arguments[0]);
            if (!e) return null;
            e.scrollIntoView({block: 'center', inline: 'center'});
            const r = e.getBoundingClientRect();
            return [r.left, r.top];";
        let corner = self.execute(script, &[json!(selector)]);
        match (corner[0].as_f64(), corner[1].as_f64()) {
            (Some(left), Some(top)) => ((left + x).round() as i64, (top + y).round() as i64),
            _ => panic!("browser: no element matches `{selector}` on {}", self.url()),
        }
    }

    /// Performs W3C pointer actions: a move to the viewport point (`x`, `y`), then `then`.
    fn pointer(&self, what: &str, x: i64, y: i64, then: &[Value]) {
        let mut steps = vec![
            json!({"type": "pointerMove", "duration": 0, "origin": "viewport",
            "x": x, "y": y}),
        ];
        steps.extend_from_slice(then);
        let body = json!({"actions": [{"type": "pointer", "id": "mouse",
            "parameters": {"pointerType": "mouse"}, "actions": steps}]});
        self.must(what, Method::Post, "/actions", Some(body));
    }

    /// Moves the mouse to (`x`, `y`) CSS pixels from the top-left corner of the element
    /// matching `selector` (mouse events as a user's).
    #[allow(dead_code)]
    pub fn hover_at(&self, selector: &str, x: f64, y: f64) {
        let (vx, vy) = self.viewport_point(selector, x, y);
        self.pointer(&format!("hover `{selector}` at ({x}, {y})"), vx, vy, &[]);
    }

    /// Clicks at (`x`, `y`) CSS pixels from the top-left corner of the element matching
    /// `selector`, with real mouse events (for a canvas: a point of a plot).
    pub fn click_at(&self, selector: &str, x: f64, y: f64) {
        let (vx, vy) = self.viewport_point(selector, x, y);
        let press = [
            json!({"type": "pointerDown", "button": 0}),
            json!({"type": "pointerUp", "button": 0}),
        ];
        self.pointer(&format!("click `{selector}` at ({x}, {y})"), vx, vy, &press);
    }

    /// Writes a PNG screenshot of the viewport to `path` and returns its bytes.
    pub fn screenshot(&self, path: &Path) -> Vec<u8> {
        let value = self.must("take a screenshot", Method::Get, "/screenshot", None);
        let Some(text) = value.as_str() else {
            panic!(
                "browser: the screenshot is not a base64 string: {}",
                clip(&value.to_string(), 200)
            );
        };
        let png = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_else(|e| panic!("browser: the screenshot is not base64: {e}"));
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)
                .unwrap_or_else(|e| panic!("browser: cannot create {}: {e}", folder.display()));
        }
        std::fs::write(path, &png)
            .unwrap_or_else(|e| panic!("browser: cannot write {}: {e}", path.display()));
        png
    }

    /// The entries of chromedriver's log `kind` ("browser", "performance") since the last read.
    fn log(&self, kind: &str) -> Vec<Value> {
        let value = self.must(
            &format!("read the {kind} log"),
            Method::Post,
            "/se/log",
            Some(json!({"type": kind})),
        );
        match value {
            Value::Array(entries) => entries,
            other => panic!(
                "browser: the {kind} log is not a list: {}",
                clip(&other.to_string(), 200)
            ),
        }
    }

    /// Every URL the session's pages requested so far, in order (page loads, images, scripts,
    /// fetches; refused ones included), from the DevTools `Network.requestWillBeSent` events.
    pub fn requested_urls(&self) -> Vec<String> {
        let mut requests = self.requests.borrow_mut();
        for entry in self.log("performance") {
            let Some(message) = entry["message"].as_str() else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<Value>(message) else {
                panic!(
                    "browser: a performance log entry is not JSON: {}",
                    clip(message, 200)
                );
            };
            let event = &event["message"];
            if event["method"] == "Network.requestWillBeSent"
                && let Some(url) = event["params"]["request"]["url"].as_str()
            {
                requests.push(url.to_owned());
            }
        }
        requests.clone()
    }

    /// Every error the session's pages logged so far: uncaught exceptions, `console.error`,
    /// failed loads (the browser log's SEVERE entries).
    pub fn console_errors(&self) -> Vec<String> {
        let mut errors = self.errors.borrow_mut();
        for entry in self.log("browser") {
            if entry["level"] == "SEVERE" {
                errors.push(entry["message"].as_str().unwrap_or_default().to_owned());
            }
        }
        errors.clone()
    }

    /// How long `url` takes from the start of navigation to
    /// `document.body.dataset.ready === "true"` (wall clock, as a user waits: loading, parsing,
    /// scripts and drawing); the page stays open. Not ready within `timeout` fails the test.
    pub fn time_to_ready(&self, url: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        self.goto(url);
        self.wait_until(
            "document.body && document.body.dataset.ready === 'true'",
            timeout.saturating_sub(started.elapsed()),
        );
        started.elapsed()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium; the driver is killed next (field drop). An error here cannot be
        // reported better than by the test that is already failing or done.
        let _ = request(&self.agent, Method::Delete, &self.session, None);
    }
}

/// Checks of the harness itself, on pages written here.
mod tests {
    use super::*;

    /// A page that declares itself ready 200 ms after loading is timed at about that.
    #[test]
    fn times_a_page_to_ready() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let page = dir.path().join("slow page.html");
        let html = "<!doctype html><body><script>
            setTimeout(() => { document.body.dataset.ready = 'true'; }, 200);
            </script></body>";
        std::fs::write(&page, html).expect("the page is written");
        let Some(time) = time_to_ready(&file_url(&page)) else {
            return;
        };
        assert!(
            time >= Duration::from_millis(200) && time < Duration::from_secs(10),
            "a page ready 200 ms after its load took {time:?}"
        );
    }

    /// A local HTTP server answering every connection with `body`, on a thread.
    fn serve(body: &'static str) -> u16 {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
        let port = listener.local_addr().expect("its address").port();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut buffer = [0; 4096];
                let _ = stream.read(&mut buffer);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        port
    }

    /// Without network a page on 127.0.0.1 does not load (and its request is recorded); with
    /// loopback it does, while other hosts stay unreachable.
    #[test]
    fn shuts_the_network() {
        let port = serve("<!doctype html><title>served</title>");
        let url = format!("http://127.0.0.1:{port}/");
        let Some(offline) = Browser::start() else {
            return;
        };
        let refused = offline.command(Method::Post, "/url", Some(json!({"url": url})));
        assert!(refused.is_err(), "{url} loaded without network");
        assert!(
            offline.requested_urls().contains(&url),
            "{url} is not among the requests {:?}",
            offline.requested_urls()
        );
        drop(offline);
        let Some(local) = Browser::start_with(Network::Loopback) else {
            return;
        };
        local.goto(&url);
        assert_eq!(local.eval("document.title"), "served");
        let far = local.command(
            Method::Post,
            "/url",
            Some(json!({"url": "http://example.com/"})),
        );
        assert!(far.is_err(), "example.com loaded with loopback only");
    }
}
