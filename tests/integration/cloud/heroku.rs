//! The Heroku client against the fake Heroku (localstack/heroku): headers, paging, 429, error
//! bodies; and the cutover's bad input: clear messages, exit codes 2 or 4, no change to the app.
//! The tests that inject faults, change the rate limit or read the request log have a fake of
//! their own.

use std::time::{Duration, Instant};

use heroku2rds::heroku::client::Request;
use serde_json::{json, Value};

use crate::support::binary::{h2r_env, Run};
use crate::support::clusters::{restore_list, root, Pair};
use crate::support::fake_heroku::{app_name, fake, Fake, TOKEN};

#[tokio::test(flavor = "multi_thread")]
async fn client_headers_paging_rate_limit_and_errors() {
    // Counts requests, empties the rate-limit bucket and injects faults: a fake of its own.
    let f = &Fake::private("client");
    let prefix = app_name("pg");
    for i in 0..230 {
        f.post("/apps", json!({ "name": format!("{prefix}-{i:03}") }))
            .await;
    }
    let c = f.client(TOKEN);
    f.admin(reqwest::Method::DELETE, "/requests", None).await;
    let apps: Vec<Value> = c.list(&Request::get("/apps")).await.expect("list apps");
    let ours = apps
        .iter()
        .filter(|a| a["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
        .count();
    assert_eq!(ours, 230, "every app across pages");
    let log: Vec<Value> = f
        .requests("/apps")
        .await
        .into_iter()
        .filter(|r| r["path"] == "/apps")
        .collect();
    assert!(log.len() >= 2, "paged: {log:?}");
    assert!(log[0]["range"].is_null(), "{:?}", log[0]);
    assert!(
        log[1]["range"]
            .as_str()
            .is_some_and(|r| r.starts_with("id ]")),
        "the second page asks for Next-Range: {:?}",
        log[1]
    );
    for r in &log {
        assert_eq!(r["accept"], "application/vnd.heroku+json; version=3", "{r}");
        assert_eq!(r["authorization"], "valid", "{r}");
        assert!(
            r["user_agent"]
                .as_str()
                .is_some_and(|u| u.starts_with("heroku2rds/")),
            "{r}"
        );
        assert!(matches!(r["status"].as_i64(), Some(200 | 206)), "{r}");
    }
    assert!(c.rate_limit_remaining() > 0);

    // A body carries Content-Type.
    let name = format!("{prefix}-000");
    heroku2rds::heroku::app::App::new(&c, &name)
        .set_maintenance(true)
        .await
        .expect("maintenance");
    let patch = f.requests(&format!("/apps/{name}")).await;
    let last = patch.last().expect("logged");
    assert_eq!(last["method"], "PATCH");
    assert!(
        last["content_type"]
            .as_str()
            .is_some_and(|t| t.starts_with("application/json")),
        "{last}"
    );

    // 429: the bucket is empty; the client backs off until it refills.
    f.post(
        "/rate-limit",
        json!({ "remaining": 0, "refill_per_second": 2 }),
    )
    .await;
    let t0 = Instant::now();
    let info: Value = c.get(&format!("/apps/{name}")).await.expect("after 429");
    f.post(
        "/rate-limit",
        json!({ "remaining": 4500, "refill_per_second": 1.25 }),
    )
    .await;
    assert_eq!(info["maintenance"], true);
    let statuses: Vec<i64> = f
        .requests(&format!("/apps/{name}"))
        .await
        .iter()
        .filter(|r| r["method"] == "GET")
        .map(|r| r["status"].as_i64().unwrap_or(0))
        .collect();
    assert!(
        statuses.contains(&429) && statuses.last() == Some(&200),
        "{statuses:?}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(400), "it backed off");

    // A 500 on an idempotent request is retried; on a POST it is not.
    f.post(
        "/faults",
        json!({ "method": "GET", "path_regex": format!("^/apps/{name}$"), "status": 503, "times": 2 }),
    )
    .await;
    let _: Value = c.get(&format!("/apps/{name}")).await.expect("retried GET");
    f.post(
        "/faults",
        json!({ "method": "POST", "path_regex": "^/addon-attachments$", "status": 500, "times": 1 }),
    )
    .await;
    let before = f.requests("/addon-attachments").await.len();
    let e = heroku2rds::heroku::app::App::new(&c, &name)
        .attach("nonexistent", "X")
        .await
        .expect_err("500 on POST");
    assert_eq!(
        f.requests("/addon-attachments").await.len(),
        before + 1,
        "POST not repeated"
    );
    assert!(e.message().contains("500"), "{}", e.message());

    // Error bodies.
    let e = f
        .client("wrong-token")
        .get::<Value>("/account")
        .await
        .expect_err("401");
    assert_eq!(e.kind(), heroku2rds::error::Kind::Refused);
    assert!(e.message().contains("HEROKU_API_KEY") && !e.message().contains("wrong-token"));
    let e = c
        .get::<Value>("/apps/no-such-app-here")
        .await
        .expect_err("404");
    assert_eq!(e.kind(), heroku2rds::error::Kind::Usage);
    assert!(e.fix().unwrap_or("").contains("app name"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cutover_bad_input_is_refused_clearly_and_changes_nothing() {
    let f = fake();
    let pair = Pair::new("cut_bad").await;
    pair.source_owner()
        .await
        .batch_execute("CREATE TABLE public.t (id int PRIMARY KEY, v text); INSERT INTO public.t VALUES (1, 'a');")
        .await
        .expect("setup");
    pair.h2r(&["replicate", "--until", "caught-up"])
        .expect_code(0);
    let app = app_name("bad-app");
    let quick = json!({ "dyno_start_seconds": 0.2, "dyno_stop_grace_seconds": 0.5, "release_seconds": 0.3 });
    let mut body = json!({
        "name": app, "database_url": pair.source_url(),
        "formation": [{ "type": "web", "quantity": 1, "size": "Standard-1X", "command": "sleep 600" }],
    });
    body.as_object_mut()
        .expect("obj")
        .extend(quick.as_object().expect("obj").clone());
    f.post("/apps", body).await;
    let before = f.shape(&app).await;
    assert_eq!(
        before.database_url.as_deref(),
        Some(pair.source_url().as_str())
    );

    let base = ["cutover", "--app", &app, "--yes"];
    let check = |run: Run, code: i32, needles: &[&str]| {
        run.expect_code(code);
        for n in needles {
            assert!(run.stderr.contains(n), "expected `{n}` in:\n{}", run.stderr);
        }
        assert!(
            !run.stderr.contains(&root().password),
            "a password leaked:\n{}",
            run.stderr
        );
        assert!(
            !run.stderr.contains(TOKEN),
            "the token leaked:\n{}",
            run.stderr
        );
    };

    // Invalid token (401).
    check(
        f.h2r(&pair, "not-a-valid-token", &base),
        4,
        &[
            "Heroku refused the token in HEROKU_API_KEY",
            "heroku auth:token",
        ],
    );
    // No access to the app (403).
    f.post(
        "/tokens",
        json!({ "token": "other-apps-token", "apps": ["someone-elses-app"] }),
    )
    .await;
    check(
        f.h2r(&pair, "other-apps-token", &base),
        4,
        &["403", "may not do this", "access"],
    );
    // Two-factor required.
    f.post(
        "/tokens",
        json!({ "token": "two-factor-token", "two_factor_required": true }),
    )
    .await;
    check(
        f.h2r(&pair, "two-factor-token", &base),
        4,
        &["two-factor", "second-factor prompt"],
    );
    // Unknown app (404).
    check(
        f.h2r(
            &pair,
            TOKEN,
            &["cutover", "--app", "no-such-app-x1", "--yes"],
        ),
        2,
        &["404", "check the app name"],
    );
    // An app without Heroku Postgres.
    let plain = app_name("plain-app");
    f.post("/apps", json!({ "name": plain })).await;
    check(
        f.h2r(&pair, TOKEN, &["cutover", "--app", &plain, "--yes"]),
        2,
        &[&format!("app {plain} has no Heroku Postgres add-on")],
    );
    // Two Postgres add-ons, neither attached as DATABASE: which one?
    let two = app_name("two-db-app");
    f.post(
        "/apps",
        json!({ "name": two, "databases": [
            { "url": pair.source_url(), "attachment_name": "HEROKU_POSTGRESQL_BLUE" },
            { "url": pair.target_url(), "attachment_name": "HEROKU_POSTGRESQL_RED" }
        ] }),
    )
    .await;
    let two_before = f.shape(&two).await;
    check(
        f.h2r(&pair, TOKEN, &["cutover", "--app", &two, "--yes"]),
        2,
        &[
            "2 Heroku Postgres add-ons",
            "HEROKU_POSTGRESQL_BLUE",
            "HEROKU_POSTGRESQL_RED",
            "--addon",
        ],
    );
    assert_eq!(f.shape(&two).await, two_before);
    // No terminal and no --yes: refuse.
    check(
        f.h2r(&pair, TOKEN, &["cutover", "--app", &app]),
        2,
        &["no terminal", "--yes"],
    );
    // The app would get a URL without TLS.
    let plain_url = pair
        .target_url()
        .replace("sslmode=verify-full", "sslmode=disable");
    check(
        f.h2r(
            &pair,
            TOKEN,
            &[
                "cutover",
                "--app",
                &app,
                "--yes",
                "--target-app-url",
                &plain_url,
            ],
        ),
        2,
        &["sslmode=disable", "TLS"],
    );
    // --source names another database than DATABASE_URL.
    let mut other = h2r_env(
        &["cutover", "--app", &app, "--yes"],
        &[
            ("HEROKU_API_URL", f.url.as_str()),
            ("HEROKU_DATA_API_URL", f.url.as_str()),
            ("HEROKU_API_KEY", TOKEN),
            ("HEROKU2RDS_TARGET_URL", pair.target_url().as_str()),
            ("HEROKU2RDS_SOURCE_URL", pair.target_url().as_str()),
        ],
    );
    other.stderr = other.stderr.replace(&pair.target_url(), "");
    check(other, 3, &["not ready", "--source is", "DATABASE_URL"]);
    // A dry run changes nothing and lists the steps.
    let dry = f.h2r(&pair, TOKEN, &["cutover", "--app", &app, "--dry-run"]);
    dry.expect_code(0);
    assert!(dry.stdout.contains("POINT OF NO RETURN"), "{}", dry.stdout);

    assert_eq!(f.shape(&app).await, before, "the app changed");
    let releases = f.state(&app).await["releases"].clone();
    assert_eq!(
        releases.as_array().map(Vec::len),
        Some(2),
        "no release was made: {releases}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_download_never_carries_the_token() {
    use heroku2rds::heroku::app::App;
    use heroku2rds::heroku::backups::Backups;
    // Reads the request log: a fake of its own.
    let f = &Fake::private("backup");
    let pair = Pair::new("backup_dl").await;
    pair.source_owner()
        .await
        .batch_execute("CREATE TABLE public.b (id int PRIMARY KEY, v text); INSERT INTO public.b SELECT i, md5(i::text) FROM generate_series(1, 2000) i;")
        .await
        .expect("setup");
    let app = app_name("backup-app");
    f.post(
        "/apps",
        json!({ "name": app, "database_url": pair.source_url(), "backup_seconds": 1.0 }),
    )
    .await;
    let c = f.client(TOKEN);
    let db = App::new(&c, &app).database(None).await.expect("database");
    let b = Backups::new(&c, &app, &db.addon.id);
    let t = b.capture().await.expect("capture");
    let mut seen = Vec::new();
    let done = b
        .wait(
            &t.uuid,
            Duration::from_millis(200),
            Duration::from_secs(60),
            |t| seen.push(t.processed_bytes),
        )
        .await
        .expect("backup");
    assert!(
        seen.len() > 1 && seen.windows(2).all(|w| w[0] <= w[1]),
        "progress grows: {seen:?}"
    );
    let url = b.public_url(done.num).await.expect("public url");
    let bytes = c
        .download(&url)
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(bytes.len() as i64, done.processed_bytes);
    assert!(
        bytes.starts_with(b"PGDMP"),
        "a pg_dump custom-format archive"
    );
    let file = root().dir.join(format!("{app}.dump"));
    std::fs::write(&file, &bytes).expect("write dump");
    assert!(restore_list(&file).contains("TABLE DATA public b"));

    let public = f.requests("/__public/backups/").await;
    assert!(!public.is_empty(), "the download was logged");
    for r in &public {
        assert_eq!(
            r["authorization"], "absent",
            "the token went to the download host: {r}"
        );
    }
    let data = f
        .requests(&format!("/client/v11/apps/{app}/transfers"))
        .await;
    assert!(!data.is_empty());
    for r in &data {
        assert_eq!(r["authorization"], "valid", "{r}");
    }
}
