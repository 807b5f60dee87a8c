//! The fake Heroku (localstack/heroku/fake_heroku/, a Python package) on free ports: one shared by the tests that
//! only touch apps of their own, and private ones for the tests that inject faults, change the
//! rate limit or read the request log (all three are global to a server, so sharing them would
//! make tests count each other's requests and take each other's faults). A watchdog stops every
//! fake (and its dynos) when the test process ends, however it ends; a private one stops when
//! it is dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use heroku2rds::heroku::client::{self, Client, Secret, TokenSource};
use serde_json::{json, Value};

use crate::support::binary::{h2r_env, Run};
use crate::support::clusters::{root, scratch_dir, Pair};
use crate::support::host::{after_exit, free_port, kill};
use crate::support::repo_file;

/// The token the fake accepts out of the box.
pub const TOKEN: &str = "fake-heroku-token-0000-0000-000000000000";

/// A running fake Heroku.
pub struct Fake {
    pub url: String,
    http: reqwest::Client,
    dir: PathBuf,
    /// Set for a private fake: stopped on drop.
    child: Option<Child>,
}

/// The fake shared by the tests of this process: for tests that only create and read apps of
/// their own (see [`Fake::private`] for the others).
pub fn fake() -> &'static Fake {
    static FAKE: OnceLock<Fake> = OnceLock::new();
    FAKE.get_or_init(|| {
        let (fake, child) = Fake::start("fake-heroku");
        // Never dropped: the watchdog stops it.
        std::mem::forget(child);
        fake
    })
}

impl Fake {
    /// A fake of the calling test's own, stopped when dropped: for a test that injects faults,
    /// changes the rate limit or counts requests.
    pub fn private(label: &str) -> Fake {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let (mut fake, child) = Fake::start(&format!("fake-heroku-{label}-{n}"));
        fake.child = Some(child);
        fake
    }

    fn start(name: &str) -> (Fake, Child) {
        let heroku_dir = repo_file("localstack/heroku");
        let (port, public) = (free_port(), free_port());
        let dir = scratch_dir(name);
        let log = std::fs::File::create(dir.join("log")).expect("fake log");
        let child = Command::new("setsid")
            .arg("python3")
            .arg("-u")
            .args(["-m", "fake_heroku"])
            .current_dir(&heroku_dir)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--public-port", &public.to_string()])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("FAKE_HEROKU_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the fake Heroku (python3)");
        // Stops the fake (which stops its dynos) when this process ends.
        after_exit(
            "stops the fake Heroku",
            &format!(
                "kill -TERM {fake} 2>/dev/null; sleep 3; kill -KILL {fake} 2>/dev/null",
                fake = child.id()
            ),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the fake Heroku did not start; see {}",
                dir.join("log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let fake = Fake {
            url,
            // Shared by tests that each run their own tokio runtime: a pooled connection belongs
            // to the runtime that opened it and dies with it, so keep none.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
            dir,
            child: None,
        };
        (fake, child)
    }

    /// Calls the admin API. Faults, the rate limit, the request log and resets are global to a
    /// server: only a private fake takes them.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        assert!(
            self.child.is_some()
                || !["/faults", "/rate-limit", "/requests", "/reset"]
                    .iter()
                    .any(|p| path.starts_with(p)),
            "{method} {path} on the shared fake Heroku would reach every test: use Fake::private"
        );
        let mut b = self
            .http
            .request(method.clone(), format!("{}/__fake{path}", self.url));
        if let Some(body) = body {
            b = b.json(&body);
        }
        let resp = b
            .send()
            .await
            .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "admin {method} {path}: {status} {v}");
        v
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.admin(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Value {
        self.admin(reqwest::Method::GET, path, None).await
    }

    /// The app's state as the fake holds it.
    pub async fn state(&self, app: &str) -> Value {
        self.get(&format!("/apps/{app}/state")).await
    }

    /// The app's config vars, unredacted.
    pub async fn config(&self, app: &str) -> Value {
        self.get(&format!("/apps/{app}/config-vars")).await
    }

    /// Requests logged for paths containing `needle` (a private fake's: see [`Fake::admin`]).
    pub async fn requests(&self, needle: &str) -> Vec<Value> {
        self.get("/requests")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["path"].as_str().is_some_and(|p| p.contains(needle)))
            .collect()
    }

    /// Environment pointing the binary at the fake with `token`.
    pub fn env(&self, token: &str) -> Vec<(&'static str, String)> {
        vec![
            ("HEROKU_API_URL", self.url.clone()),
            ("HEROKU_DATA_API_URL", self.url.clone()),
            ("HEROKU_API_KEY", token.to_string()),
        ]
    }

    /// A library client for the fake.
    pub fn client(&self, token: &str) -> Client {
        let cfg = client::Config::new(
            Some(&self.url),
            Some(&self.url),
            Secret::new(token),
            TokenSource::Env,
        )
        .expect("config");
        Client::new(cfg).expect("client")
    }

    /// What the tests compare to prove "nothing changed on the app".
    pub async fn shape(&self, app: &str) -> AppShape {
        let s = self.state(app).await;
        let mut formation: Vec<(String, i64, String)> = s["formation"]
            .as_array()
            .expect("formation")
            .iter()
            .map(|f| {
                (
                    f["type"].as_str().unwrap_or_default().to_string(),
                    f["quantity"].as_i64().unwrap_or(-1),
                    f["size"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        formation.sort();
        let mut attachments: Vec<String> = s["attachments"]
            .as_array()
            .expect("attachments")
            .iter()
            .map(|a| a["name"].as_str().unwrap_or_default().to_string())
            .collect();
        attachments.sort();
        AppShape {
            maintenance: s["maintenance"].as_bool().expect("maintenance"),
            formation,
            database_url: self.config(app).await["DATABASE_URL"]
                .as_str()
                .map(str::to_string),
            attachments,
        }
    }

    /// Runs the binary against the fake with `token` and the pair as the target.
    pub fn h2r(&self, pair: &Pair, token: &str, args: &[&str]) -> Run {
        let mut env: Vec<(&str, String)> = self.env(token);
        env.push(("HEROKU2RDS_TARGET_URL", pair.target_url()));
        h2r_env(args, &env)
    }
}

/// A private fake stops (and stops its dynos) with its test; a failed test keeps its log.
impl Drop for Fake {
    fn drop(&mut self) {
        let Some(child) = &mut self.child else {
            return;
        };
        if std::thread::panicking() {
            root().keep(
                &format!(
                    "the log of a failed test's fake Heroku: {}",
                    self.dir.join("log").display()
                ),
                &[],
            );
        }
        kill(child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What the tests compare to prove "nothing changed on the app".
#[derive(Debug, PartialEq)]
pub struct AppShape {
    pub maintenance: bool,
    pub formation: Vec<(String, i64, String)>,
    pub database_url: Option<String>,
    pub attachments: Vec<String>,
}

/// `body` (an app for `POST /apps`) with dynos that start and stop quickly and quick releases.
pub fn quick(mut body: Value) -> Value {
    let o = body.as_object_mut().expect("object");
    o.insert("dyno_start_seconds".into(), json!(0.3));
    o.insert("dyno_stop_grace_seconds".into(), json!(0.5));
    o.insert("release_seconds".into(), json!(0.5));
    body
}

/// A unique app name for this test process.
pub fn app_name(base: &str) -> String {
    format!("{base}-{}", std::process::id() % 100_000)
}
