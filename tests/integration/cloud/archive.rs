//! `heroku2rds archive` against the fake Heroku (real pg_dump backups behind a public URL), the
//! moto S3 emulator (bucket made by `provision`) and real Postgres clusters. Objects are read back
//! with boto3 (aws_tool.py), the backup with curl: both independent of heroku2rds's code. The
//! tests that read the fake's request log or inject faults have a fake of their own.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

use serde_json::{json, Value};

use crate::support::binary::{self, h2r_env, Run};
use crate::support::clusters::{restore_list, scratch_dir, Pair};
use crate::support::fake_heroku::{app_name, fake, Fake, TOKEN};
use crate::support::host::kill;
use crate::support::moto::{aws_env, moto, tool, unique, OPERATOR};

/// Environment with moto's credentials and the fake Heroku `f`.
fn env(f: &Fake) -> Vec<(String, String)> {
    let mut e = aws_env(moto(), "test", "test");
    for (k, v) in f.env(TOKEN) {
        e.push((k.to_string(), v));
    }
    e
}

fn h2r(env: &[(String, String)], args: &[&str]) -> Run {
    h2r_env(args, env)
}

/// Provisions the database side of migration `name` (which creates the archive bucket).
fn provision(env: &[(String, String)], name: &str) {
    h2r(
        env,
        &[
            "provision",
            "--name",
            name,
            "--operator-cidr",
            OPERATOR,
            "--source-size-gb",
            "1",
            "--source-major",
            "15",
            "--no-worker",
            "--yes",
        ],
    )
    .expect_code(0);
}

fn scratch(label: &str) -> std::path::PathBuf {
    scratch_dir(&format!("archive/{label}"))
}

fn sha256_file(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The object, downloaded by boto3; returns its metadata.
fn get_object(env: &[(String, String)], bucket: &str, key: &str, file: &std::path::Path) -> Value {
    tool(env, &["get", bucket, key, file.to_str().unwrap()])
}

fn unfinished_uploads(env: &[(String, String)], bucket: &str) -> Vec<Value> {
    tool(env, &["uploads", bucket]).as_array().unwrap().clone()
}

const TABLES: &str = "
    CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);
    INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 5000) g;
    CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers, total numeric);
    INSERT INTO orders SELECT g, 1 + g % 5000, g * 1.5 FROM generate_series(1, 20000) g;
";

#[tokio::test(flavor = "multi_thread")]
async fn archive_backup_is_byte_identical() {
    // Reads the request log (and empties it first): a fake of its own.
    let f = &Fake::private("archive-backup");
    let env = env(f);
    let pair = Pair::new("arch_backup").await;
    pair.source_owner()
        .await
        .batch_execute(TABLES)
        .await
        .unwrap();
    let app = app_name("arch-backup");
    f.post(
        "/apps",
        json!({ "name": app, "database_url": pair.source_url(), "backup_seconds": 2.0 }),
    )
    .await;
    let name = unique("arch");
    provision(&env, &name);
    f.admin(reqwest::Method::DELETE, "/requests", None).await;

    let started = std::time::Instant::now();
    let run = h2r(&env, &["archive", "--app", &app, "--name", &name, "--json"]);
    run.expect_code(0);
    eprintln!("archive via backup took {:?}", started.elapsed());
    let out = run.json();
    let (bucket, key) = (
        out["bucket"].as_str().unwrap(),
        out["key"].as_str().unwrap(),
    );
    assert!(bucket.starts_with(&format!("heroku2rds-{name}-")), "{out}");
    assert!(
        key.starts_with(&format!("archive/{app}-b001-")) && key.ends_with(".dump"),
        "{out}"
    );
    assert_eq!(out["source"], "backup b001");
    // Progress was shown while the backup ran.
    assert!(
        run.stderr.contains("bytes processed"),
        "no progress lines:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains(TOKEN) && !run.stdout.contains(TOKEN));

    // The tool never sent an Authorization header to the public URL.
    let public = f.requests("/__public/").await;
    assert!(!public.is_empty(), "the backup was not downloaded");
    for r in &public {
        assert_eq!(r["authorization"], "absent", "{r}");
        assert_eq!(r["server"], "public", "{r}");
        assert_eq!(r["status"], 200, "{r}");
    }
    assert!(!run.stderr.contains("X-Amz-"), "the signed URL was logged");

    // Both sides, downloaded independently.
    let dir = scratch(&app);
    let object = dir.join("object.dump");
    let head = get_object(&env, bucket, key, &object);
    let http = reqwest::Client::new();
    let signed: Value = http
        .post(format!(
            "{}/client/v11/apps/{app}/transfers/1/actions/public-url",
            f.url
        ))
        .header("Accept", "application/vnd.heroku+json; version=3")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let backup = dir.join("backup.dump");
    let ok = Command::new("curl")
        .args(["-sSf", "-o"])
        .arg(&backup)
        .arg(signed["url"].as_str().unwrap())
        .status()
        .unwrap();
    assert!(ok.success());
    let (a, b) = (
        std::fs::read(&object).unwrap(),
        std::fs::read(&backup).unwrap(),
    );
    assert!(b.len() > 10_000, "backup is {} bytes", b.len());
    assert!(
        a == b,
        "object ({} bytes) differs from the backup ({} bytes)",
        a.len(),
        b.len()
    );
    let sha = sha256_file(&object);
    assert_eq!(out["sha256"], sha.as_str());
    assert_eq!(out["bytes"], b.len() as u64);
    assert_eq!(head["metadata"]["sha256"], sha.as_str(), "{head}");
    assert_eq!(head["metadata"]["bytes"], b.len().to_string(), "{head}");
    let list = restore_list(&object);
    assert!(list.contains("TABLE DATA public orders"), "{list}");
    assert!(unfinished_uploads(&env, bucket).is_empty());

    // An existing backup by id: the same bytes again, under a new key, nothing captured.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let again = h2r(
        &env,
        &[
            "archive", "--app", &app, "--name", &name, "--backup", "b001", "--json",
        ],
    );
    again.expect_code(0);
    let again = again.json();
    assert_eq!(again["sha256"], sha.as_str());
    assert_ne!(again["key"], out["key"]);
    let transfers = f.state(&app).await["transfers"].as_array().unwrap().len();
    assert_eq!(transfers, 1, "--backup captured another backup");
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_via_pg_dump() {
    let f = fake();
    let env = env(f);
    let pair = Pair::new("arch_pgdump").await;
    pair.source_owner()
        .await
        .batch_execute(TABLES)
        .await
        .unwrap();
    let app = app_name("arch-pgdump");
    f.post(
        "/apps",
        json!({ "name": app, "database_url": pair.source_url() }),
    )
    .await;
    let name = unique("arch");
    provision(&env, &name);
    let run = h2r(
        &env,
        &[
            "archive", "--app", &app, "--name", &name, "--via", "pg_dump", "--json",
        ],
    );
    run.expect_code(0);
    let out = run.json();
    assert_eq!(out["source"], "pg_dump");
    assert!(!run.stderr.contains(&pair.source_url()));
    let object = scratch(&app).join("object.dump");
    let head = get_object(
        &env,
        out["bucket"].as_str().unwrap(),
        out["key"].as_str().unwrap(),
        &object,
    );
    let list = restore_list(&object);
    for t in ["TABLE DATA public customers", "TABLE DATA public orders"] {
        assert!(list.contains(t), "{t} missing:\n{list}");
    }
    let sha = sha256_file(&object);
    assert_eq!(out["sha256"], sha.as_str());
    assert_eq!(head["metadata"]["sha256"], sha.as_str());
    assert_eq!(head["size"], out["bytes"]);
    // No Heroku backup was captured.
    assert!(f.state(&app).await["transfers"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_leave_no_unfinished_upload() {
    // Injects a failing backup: a fake of its own.
    let f = &Fake::private("archive-failures");
    let env = env(f);
    let pair = Pair::new("arch_fail").await;
    // More than one 16 MiB part of incompressible data, then a table pg_dump cannot read
    // (row security forced on its owner; pg_dump runs with row_security off): pg_dump fails in
    // the middle of the stream, after a part was uploaded.
    pair.source_owner()
        .await
        .batch_execute(
            "CREATE TABLE a_big (id int, b bytea);
             INSERT INTO a_big SELECT g, decode(md5(random()::text) || md5(random()::text), 'hex')
               FROM generate_series(1, 700000) g;
             CREATE TABLE z_forced (id int);
             INSERT INTO z_forced VALUES (1);
             ALTER TABLE z_forced ENABLE ROW LEVEL SECURITY;
             ALTER TABLE z_forced FORCE ROW LEVEL SECURITY;
             CREATE POLICY none ON z_forced USING (false);",
        )
        .await
        .unwrap();
    let app = app_name("arch-fail");
    f.post(
        "/apps",
        json!({ "name": app, "database_url": pair.source_url() }),
    )
    .await;
    let name = unique("arch");
    provision(&env, &name);

    // --source: no Heroku token needed.
    let mut no_token: Vec<(String, String)> = aws_env(moto(), "test", "test");
    no_token.push(("HEROKU2RDS_SOURCE_URL".into(), pair.source_url()));
    no_token.push(("HOME".into(), "/nonexistent".into()));
    let run = h2r(
        &no_token,
        &[
            "archive", "--app", &app, "--name", &name, "--via", "pg_dump",
        ],
    );
    run.expect_code(5);
    assert!(
        run.stderr.contains("uploaded part 1"),
        "pg_dump failed before a part went up:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("pg_dump failed") && run.stderr.contains("row-level security"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("aborted the multipart upload"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(&pair.source_url()));
    let bucket = format!("heroku2rds-{name}-123456789012-us-east-2");
    assert!(unfinished_uploads(&env, &bucket).is_empty());

    // Interrupted (SIGINT) in the middle of the stream: aborted as well.
    let child = binary::command(
        [
            "archive", "--app", &app, "--name", &name, "--via", "pg_dump",
        ],
        &no_token,
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while unfinished_uploads(&env, &bucket).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no upload started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(kill(child.id(), "-INT"));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("interrupted") && stderr.contains("aborted the multipart upload"),
        "{stderr}"
    );
    assert!(unfinished_uploads(&env, &bucket).is_empty());

    // The backup fails on Heroku: a clear message, nothing uploaded.
    f.post("/faults", json!({ "backup_status": "failed", "app": app }))
        .await;
    let run = h2r(&env, &["archive", "--app", &app, "--name", &name]);
    run.expect_code(5);
    assert!(run.stderr.contains("backup b001 failed"), "{}", run.stderr);
    assert!(run.stderr.contains("fix:"), "{}", run.stderr);
    assert!(unfinished_uploads(&env, &bucket).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_bad_input() {
    let f = fake();
    let env = env(f);
    let pair = Pair::new("arch_bad").await;
    let app = app_name("arch-bad");
    f.post(
        "/apps",
        json!({ "name": app, "database_url": pair.source_url() }),
    )
    .await;
    // Provision never ran: no bucket.
    let name = unique("arch-none");
    let run = h2r(&env, &["archive", "--app", &app, "--name", &name]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("has no archive bucket"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("heroku2rds provision --name {name}")),
        "{}",
        run.stderr
    );
    // Nothing was captured on Heroku.
    assert!(f.state(&app).await["transfers"]
        .as_array()
        .unwrap()
        .is_empty());

    // A malformed backup id and a bad name: usage errors before anything is called.
    for args in [
        vec!["archive", "--app", &app, "--name", &name, "--backup", "x1"],
        vec!["archive", "--app", &app, "--name", "Bad_Name"],
    ] {
        let r = h2r(&env, &args);
        r.expect_code(2);
        assert!(r.stderr.contains("fix:"), "{args:?}: {}", r.stderr);
    }
}
