//! The cutover against writers beyond the app's dynos, as on the real Heroku: a second process
//! type writing through the connection pooler's variable, a second app attached to the same
//! database, a Scheduler job, an autoscaler that scales a worker back up, a release command that
//! writes, and a client outside Heroku that reconnects for every write. Without consent the
//! cutover refuses before changing anything, naming each attachment; with it, it completes and no
//! acknowledged write is lost (checked independently: every logged write is on the target). After
//! the switch the old database refuses writes and the follower has stopped for good, so nothing
//! written on RDS is ever replaced from the old database. A release command that fails after the
//! switch is recovered by a re-run.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use heroku2rds::pg::conn::ConnSpec;
use serde_json::json;

use crate::support::clusters::{root, Pair};
use crate::support::fake_heroku::{app_name, fake, quick, AppShape, TOKEN};
use crate::support::workloads::{acks, wait_for_acks, SCHEMA, WRITER};

/// [`WRITER`] through another variable.
fn writer_via(var: &str) -> String {
    WRITER.replace("$DATABASE_URL", &format!("${var}"))
}

/// One acknowledged insert (a Scheduler job or a release command), logged like [`WRITER`]'s.
const ONE_WRITE: &str = r#"boot=$(date +%s%N)
psql "$DATABASE_URL" -qtAX -v ON_ERROR_STOP=1 -c "INSERT INTO public.writes (boot, n, dyno) VALUES ($boot, 1, '$DYNO')" >/dev/null 2>&1 && echo "$boot 1" >> "$ACK_FILE"
exit 0"#;

/// A client outside Heroku: a new connection for every write, every 50 ms, until stopped.
/// Returns the (boot, n) it saw acknowledged, with the time each insert ran (the database's
/// clock, seconds since the epoch).
fn external_writer(
    url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<((i64, i64), f64)>> {
    tokio::spawn(async move {
        let boot: i64 = 7_000_000_000 + i64::from(std::process::id());
        let mut acked = Vec::new();
        let mut n = 0i64;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let spec = ConnSpec::parse(&url, "external writer").expect("url");
            if let Ok(c) = spec.connect().await {
                let sql = format!(
                    "INSERT INTO public.writes (boot, n, dyno) VALUES ({boot}, {n}, 'external')
                     RETURNING extract(epoch FROM clock_timestamp())::float8"
                );
                if let Ok(row) = c.query_one(&sql, &[]).await {
                    acked.push(((boot, n), row.get(0)));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acked
    })
}

/// The spans in which a cutover's write fence was up: from its `fenced` step to its rollback,
/// or on for good when it was not rolled back.
async fn fenced_spans(pair: &Pair) -> Vec<(f64, f64)> {
    pair.target_master()
        .await
        .query(
            "SELECT extract(epoch FROM f.at)::float8,
                    coalesce(extract(epoch FROM r.at)::float8, 'infinity'::float8)
               FROM heroku2rds.cutover_steps f
               LEFT JOIN heroku2rds.cutover_steps r ON r.cutover_id = f.cutover_id AND r.step = 'rollback-started'
              WHERE f.step = 'fenced'",
            &[],
        )
        .await
        .expect("fenced spans")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// No write of `acked` ran while a fence was up: independent of the tool's own verification,
/// which a write landing between it and the switch would escape.
fn assert_none_while_fenced(acked: &[((i64, i64), f64)], spans: &[(f64, f64)]) {
    assert!(!spans.is_empty(), "no cutover raised the fence");
    let through: Vec<&((i64, i64), f64)> = acked
        .iter()
        .filter(|(_, at)| spans.iter().any(|(from, to)| at >= from && at < to))
        .collect();
    assert!(
        through.is_empty(),
        "{} write(s) got through the fence (spans {spans:?}): {:?}",
        through.len(),
        &through[..through.len().min(5)]
    );
}

async fn on_target(pair: &Pair) -> BTreeSet<(i64, i64)> {
    pair.target_master()
        .await
        .query("SELECT boot, n FROM public.writes", &[])
        .await
        .expect("target writes")
        .iter()
        .map(|r| (r.get(0), i64::from(r.get::<_, i32>(1))))
        .collect()
}

fn assert_all_on(target: &BTreeSet<(i64, i64)>, acked: &[(i64, i64)], who: &str) {
    let missing: Vec<&(i64, i64)> = acked.iter().filter(|a| !target.contains(a)).collect();
    assert!(
        missing.is_empty(),
        "{who}: {} of {} acknowledged writes missing on the target: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

async fn scale_all_to_zero(app: &str) {
    let f = fake();
    let client = f.client(TOKEN);
    let a = heroku2rds::heroku::app::App::new(&client, app);
    let zero: Vec<heroku2rds::heroku::app::Process> = a
        .formation()
        .await
        .expect("formation")
        .into_iter()
        .map(|p| heroku2rds::heroku::app::Process { quantity: 0, ..p })
        .collect();
    a.scale(&zero).await.expect("scale down");
}

#[tokio::test(flavor = "multi_thread")]
async fn cutover_fences_every_writer_and_moves_every_attachment() {
    let f = fake();
    let pair = Pair::new("cut_writers").await;
    pair.source_owner()
        .await
        .batch_execute(SCHEMA)
        .await
        .expect("schema");
    pair.h2r(&["replicate", "--until", "copied", "--keyless", "recopy"])
        .expect_code(0);
    let mut follower = pair.spawn_h2r(&["replicate", "--until", "forever", "--keyless", "recopy"]);

    let app = app_name("writers");
    let other = app_name("writers-admin");
    let ack = root().dir.join(format!("{app}.acks"));
    let other_ack = root().dir.join(format!("{other}.acks"));
    f.post(
        "/apps",
        quick(json!({
            "name": app, "database_url": pair.source_url(), "pooler": true,
            "config_vars": { "ACK_FILE": ack.display().to_string() },
            "formation": [
                { "type": "web", "quantity": 1, "size": "Standard-1X", "command": WRITER },
                { "type": "pooled", "quantity": 1, "size": "Standard-1X", "command": writer_via("DATABASE_CONNECTION_POOL_URL") },
                { "type": "worker", "quantity": 0, "size": "Standard-1X", "command": WRITER },
                { "type": "release", "quantity": 0, "size": "Standard-1X", "command": ONE_WRITE }
            ],
        })),
    )
    .await;
    let addon = f.state(&app).await["addons"][0]["id"]
        .as_str()
        .expect("addon id")
        .to_string();
    f.post(
        "/apps",
        quick(json!({
            "name": other,
            "attach_addon": { "addon": addon, "as": "DATABASE" },
            "config_vars": { "ACK_FILE": other_ack.display().to_string() },
            "formation": [
                { "type": "worker", "quantity": 1, "size": "Standard-1X", "command": WRITER }
            ],
        })),
    )
    .await;
    f.post(
        &format!("/apps/{app}/scheduler"),
        json!({ "command": ONE_WRITE, "every_seconds": 1.0 }),
    )
    .await;
    f.post(
        &format!("/apps/{app}/autoscaler"),
        json!({ "type": "worker", "quantity": 1, "every_seconds": 1.0, "service": "hirefire-resource" }),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let external = external_writer(pair.source_url(), stop.clone());
    wait_for_acks(
        &ack,
        30,
        Duration::from_secs(60),
        "the app's dynos did not write",
    )
    .await;
    wait_for_acks(
        &other_ack,
        10,
        Duration::from_secs(60),
        "the other app did not write",
    )
    .await;

    // Without consent: refused before anything changes, each attachment named with its fix.
    let shape = |s: AppShape| (s.maintenance, s.database_url, s.attachments);
    let (before, before_other) = (shape(f.shape(&app).await), shape(f.shape(&other).await));
    let base = [
        "cutover",
        "--app",
        &app,
        "--yes",
        "--session-grace-s",
        "2",
        "--max-lag-s",
        "60",
    ];
    let refused = f.h2r(&pair, TOKEN, &base);
    refused.expect_code(3);
    for needle in [
        "DATABASE_CONNECTION_POOL_URL",
        "--move-pooler",
        &format!("app {other} reaches the Heroku database as DATABASE_URL"),
        &format!("--include-app {other}"),
        "nothing was changed",
    ] {
        assert!(
            refused.stderr.contains(needle),
            "`{needle}` in:\n{}",
            refused.stderr
        );
    }
    assert_eq!(shape(f.shape(&app).await), before);
    assert_eq!(shape(f.shape(&other).await), before_other);

    // With consent: both apps frozen and switched together.
    let mut args = base.to_vec();
    args.extend(["--include-app", &other, "--move-pooler", "--json"]);
    let run = f.h2r(&pair, TOKEN, &args);
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["outcome"], "completed", "{report}");
    eprintln!(
        "measured: downtime {:?}s, write freeze {:?}s",
        report["downtime_s"], report["write_freeze_s"]
    );
    for (a, var) in [
        (&app, "DATABASE_URL"),
        (&app, "DATABASE_CONNECTION_POOL_URL"),
        (&other, "DATABASE_URL"),
    ] {
        assert_eq!(
            f.config(a).await[var].as_str(),
            Some(pair.target_url().as_str()),
            "{a} {var}"
        );
    }

    // The follower stopped by itself at the switch, for good, saying why.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = follower.try_wait().expect("follower") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the follower kept running after the switch"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.code(), Some(3), "the follower's exit status");
    let out = follower.wait_with_output().expect("follower output");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("switched"), "{said}");
    let again = pair.h2r(&["replicate", "--until", "forever"]);
    again.expect_code(3);
    assert!(again.stderr.contains("switched"), "{}", again.stderr);

    // The old database refuses writes, saying where the database went; RDS accepts them and
    // nothing from the old database replaces them.
    let old = pair.source_owner().await;
    let tgt = pair.target_master().await;
    tgt.batch_execute("INSERT INTO public.items VALUES (900001, 'written on RDS')")
        .await
        .expect("write on RDS");
    let e = old
        .batch_execute("INSERT INTO public.items VALUES (900001, 'written on Heroku')")
        .await
        .expect_err("the old database must refuse writes after the switch");
    let said = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        said.as_deref().is_some_and(|m| m.contains("has moved")),
        "{e:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v: String = tgt
        .query_one("SELECT v FROM public.items WHERE id = 900001", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(v, "written on RDS");

    // Stop every writer, then check every acknowledged write of each is on the target.
    stop.store(true, Ordering::SeqCst);
    let external_timed = external.await.expect("external writer");
    assert_none_while_fenced(&external_timed, &fenced_spans(&pair).await);
    let external_acks: Vec<(i64, i64)> = external_timed.iter().map(|(a, _)| *a).collect();
    f.admin(
        reqwest::Method::DELETE,
        &format!("/apps/{app}/scheduler"),
        None,
    )
    .await;
    f.admin(
        reqwest::Method::DELETE,
        &format!("/apps/{app}/autoscaler"),
        None,
    )
    .await;
    scale_all_to_zero(&app).await;
    scale_all_to_zero(&other).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let target = on_target(&pair).await;
    assert_all_on(
        &target,
        &acks(&ack),
        "the app (web, pooled, worker, scheduler, release)",
    );
    assert_all_on(&target, &acks(&other_ack), "the other app");
    assert_all_on(&target, &external_acks, "the external client");
    assert!(!external_acks.is_empty(), "the external client never wrote");
    // Every kind of writer did write (and what it wrote before the fence was moved).
    let tgt = pair.target_master().await;
    for prefix in [
        "web.",
        "pooled.",
        "worker.",
        "scheduler.",
        "release.",
        "external",
    ] {
        let n: i64 = tgt
            .query_one(
                "SELECT count(*) FROM public.writes WHERE dyno LIKE $1 || '%'",
                &[&prefix],
            )
            .await
            .expect("count")
            .get(0);
        assert!(n > 0, "no write from {prefix}* on the target");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_release_after_the_switch_is_recovered_by_a_rerun() {
    let f = fake();
    let pair = Pair::new("cut_release").await;
    pair.source_owner()
        .await
        .batch_execute(SCHEMA)
        .await
        .expect("schema");
    pair.h2r(&["replicate", "--until", "caught-up", "--keyless", "recopy"])
        .expect_code(0);
    let app = app_name("release-fails");
    let ack = root().dir.join(format!("{app}.acks"));
    let flag = root().dir.join(format!("{app}.fail"));
    std::fs::write(&flag, "").expect("flag");
    // The release command fails while the flag exists, once DATABASE_URL is the target.
    let target_port = url::Url::parse(&pair.target_url())
        .expect("url")
        .port()
        .expect("port");
    let release = format!(
        "case \"$DATABASE_URL\" in *:{target_port}/*) test ! -e {} ;; *) {ONE_WRITE} ;; esac",
        flag.display()
    );
    f.post(
        "/apps",
        quick(json!({
            "name": app, "database_url": pair.source_url(),
            "config_vars": { "ACK_FILE": ack.display().to_string() },
            "formation": [
                { "type": "web", "quantity": 1, "size": "Standard-1X", "command": WRITER },
                { "type": "release", "quantity": 0, "size": "Standard-1X", "command": release }
            ],
        })),
    )
    .await;
    wait_for_acks(&ack, 20, Duration::from_secs(60), "the dynos did not write").await;
    let base = ["cutover", "--app", &app, "--yes", "--session-grace-s", "2"];
    let first = f.h2r(&pair, TOKEN, &base);
    first.expect_code(5);
    assert!(
        first.stderr.contains("release phase")
            && first.stderr.contains("past the point of no return"),
        "{}",
        first.stderr
    );
    std::fs::remove_file(&flag).expect("flag");
    let again = f.h2r(&pair, TOKEN, &base);
    again.expect_code(0);
    assert!(
        again.stdout.contains("cutover complete"),
        "{}",
        again.stdout
    );
    assert_eq!(
        f.config(&app).await["DATABASE_URL"].as_str(),
        Some(pair.target_url().as_str())
    );
    let shape = f.shape(&app).await;
    assert!(!shape.maintenance);
    scale_all_to_zero(&app).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_all_on(&on_target(&pair).await, &acks(&ack), "the app");
}

/// Waits until the unfinished attempt recorded `step`; false when the cutover exited first.
async fn reached(pair: &Pair, step: &str, child: &mut std::process::Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(90);
    let tgt = pair.target_master().await;
    loop {
        let n: i64 = tgt
            .query_one(
                "SELECT count(*) FROM heroku2rds.cutover_steps s JOIN heroku2rds.cutovers c ON c.id = s.cutover_id
                  WHERE c.outcome IS NULL AND s.step = $1",
                &[&step],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if n > 0 {
            return true;
        }
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "the cutover did not reach {step}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cutover_killed_at_each_step_then_rerun_loses_nothing() {
    let f = fake();
    let pair = Pair::new("cut_kill9").await;
    pair.source_owner()
        .await
        .batch_execute(SCHEMA)
        .await
        .expect("schema");
    pair.h2r(&["replicate", "--until", "caught-up", "--keyless", "recopy"])
        .expect_code(0);
    let app = app_name("kill9");
    let ack = root().dir.join(format!("{app}.acks"));
    f.post(
        "/apps",
        quick(json!({
            "name": app, "database_url": pair.source_url(),
            "config_vars": { "ACK_FILE": ack.display().to_string() },
            "formation": [
                { "type": "web", "quantity": 1, "size": "Standard-1X", "command": WRITER },
                { "type": "release", "quantity": 0, "size": "Standard-1X", "command": ONE_WRITE }
            ],
        })),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let external = external_writer(pair.source_url(), stop.clone());
    wait_for_acks(&ack, 20, Duration::from_secs(60), "the dynos did not write").await;
    let mut env = f.env(TOKEN);
    env.push(("HEROKU2RDS_TARGET_URL", pair.target_url()));
    let args = [
        "cutover",
        "--app",
        app.as_str(),
        "--yes",
        "--session-grace-s",
        "1",
        // No follower runs: each attempt drains the change log itself, so the lag grows
        // between attempts.
        "--max-lag-s",
        "3600",
    ];
    let spawn = || {
        crate::support::binary::command(args, &env)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn cutover")
    };
    // Before the point of no return a kill -9 is rolled back by the next run (which then stops);
    // after it, the next run continues, and is killed again at the next step.
    let steps = [
        "previous-attached",
        "maintenance-on",
        "scaled-down",
        "dynos-stopped",
        "fenced",
        "sessions-ended",
        "drained",
        "matviews-refreshed",
        "verified",
        "point-of-no-return",
        "database-detached",
        "database-url-set",
        "release-succeeded",
        "formation-restored",
        "dynos-up",
    ];
    let mut killed = Vec::new();
    for step in steps {
        let mut child = spawn();
        if reached(&pair, step, &mut child).await {
            let _ = child.kill();
            killed.push(step);
        }
        child.wait().expect("reap");
        // The server notices the dead process's sessions (and its lock) a moment later.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Past the point of no return or not is what the target recorded: a kill aimed at the
        // last step before it can land just after it.
        let past: bool = pair
            .target_master()
            .await
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM heroku2rds.cutover_steps
                                 WHERE step = 'point-of-no-return'
                                   AND cutover_id = (SELECT max(id) FROM heroku2rds.cutovers))",
                &[],
            )
            .await
            .expect("point of no return")
            .get(0);
        if !past {
            assert_eq!(
                killed.last(),
                Some(&step),
                "the cutover exited before {step}"
            );
            let again = f.h2r(&pair, TOKEN, &args);
            assert!(
                again.stderr.contains("rolled back the interrupted cutover"),
                "after a kill at {step}: {}",
                again.stderr
            );
            // Rolled back: the app writes to the Heroku database again.
            let n = acks(&ack).len();
            wait_for_acks(
                &ack,
                n + 5,
                Duration::from_secs(60),
                "no writes after the rollback",
            )
            .await;
        }
    }
    assert!(killed.len() >= 10, "killed at {killed:?}");
    let last = f.h2r(&pair, TOKEN, &args);
    last.expect_code(0);
    assert_eq!(
        f.config(&app).await["DATABASE_URL"].as_str(),
        Some(pair.target_url().as_str())
    );
    let n = acks(&ack).len();
    wait_for_acks(
        &ack,
        n + 5,
        Duration::from_secs(60),
        "no writes after the switch",
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let external_timed = external.await.expect("external writer");
    assert_none_while_fenced(&external_timed, &fenced_spans(&pair).await);
    let external_acks: Vec<(i64, i64)> = external_timed.iter().map(|(a, _)| *a).collect();
    scale_all_to_zero(&app).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let target = on_target(&pair).await;
    assert_all_on(&target, &acks(&ack), "the app");
    assert_all_on(&target, &external_acks, "the external client");
    eprintln!("killed at {} steps: {killed:?}", killed.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn aliases_credentials_followers_private_spaces_and_short_tokens() {
    let f = fake();
    let pair = Pair::new("cut_alias").await;
    pair.source_owner()
        .await
        .batch_execute(SCHEMA)
        .await
        .expect("schema");
    pair.h2r(&["replicate", "--until", "caught-up", "--keyless", "recopy"])
        .expect_code(0);
    let app = app_name("alias");
    let ack = root().dir.join(format!("{app}.acks"));
    f.post(
        "/apps",
        quick(json!({
            "name": app, "database_url": pair.source_url(), "space": "acme-space",
            "config_vars": { "ACK_FILE": ack.display().to_string() },
            "formation": [
                { "type": "web", "quantity": 1, "size": "Private-S", "command": WRITER },
                { "type": "legacy", "quantity": 1, "size": "Private-S", "command": writer_via("HEROKU_POSTGRESQL_RED_URL") }
            ],
        })),
    )
    .await;
    let addon = f.state(&app).await["addons"][0]["id"]
        .as_str()
        .expect("addon id")
        .to_string();
    let client = f.client(TOKEN);
    let a = heroku2rds::heroku::app::App::new(&client, &app);
    a.attach(&addon, "HEROKU_POSTGRESQL_RED")
        .await
        .expect("colour alias");
    // A credential attachment, as `heroku addons:attach --credential analyst` makes it.
    let _: serde_json::Value = client
        .send(
            &heroku2rds::heroku::client::Request::new(
                reqwest::Method::POST,
                heroku2rds::heroku::client::Api::Platform,
                "/addon-attachments",
            )
            .json(json!({ "addon": addon, "app": app, "name": "ANALYST", "namespace": "credential:analyst", "confirm": app })),
        )
        .await
        .expect("credential attachment");
    // A follower of the database (the fake does not replicate: the URL is the leader's).
    f.post(
        &format!("/apps/{app}/addons"),
        json!({ "follows": addon, "attachment_name": "HEROKU_POSTGRESQL_BLUE" }),
    )
    .await;
    wait_for_acks(&ack, 30, Duration::from_secs(60), "the dynos did not write").await;
    let base = [
        "cutover",
        "--app",
        &app,
        "--yes",
        "--session-grace-s",
        "2",
        "--max-lag-s",
        "60",
    ];

    // A token that expires before the cutover could finish is refused, with the remedy.
    f.post(
        "/tokens",
        json!({ "token": format!("{app}-short"), "email": "owner@example.com", "expires_in": 600, "apps": ["*"] }),
    )
    .await;
    let mut consented = base.to_vec();
    consented.push("--move-aliases");
    let short = f.h2r(&pair, &format!("{app}-short"), &consented);
    short.expect_code(4);
    assert!(
        short.stderr.contains("expires in") && short.stderr.contains("authorizations:create"),
        "{}",
        short.stderr
    );

    // The alias in use refuses without consent; the dry run with it names the alias, the
    // follower and the Private Space.
    let before = f.shape(&app).await;
    let refused = f.h2r(&pair, TOKEN, &base);
    refused.expect_code(3);
    assert!(
        refused.stderr.contains("HEROKU_POSTGRESQL_RED_URL")
            && refused
                .stderr
                .contains("ANALYST_URL (a credential attachment")
            && refused.stderr.contains("--move-aliases"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("HEROKU_POSTGRESQL_BLUE_URL ("),
        "a follower is not an attachment of the database: {}",
        refused.stderr
    );
    assert_eq!(f.shape(&app).await, before);
    let mut args = base.to_vec();
    args.push("--move-aliases");
    let mut dry = args.clone();
    dry.push("--dry-run");
    let plan = f.h2r(&pair, TOKEN, &dry);
    plan.expect_code(0);
    for needle in ["HEROKU_POSTGRESQL_RED_URL", "follower", "Private Space"] {
        assert!(
            plan.stdout.contains(needle),
            "`{needle}` in the plan:\n{}",
            plan.stdout
        );
    }
    assert_eq!(f.shape(&app).await, before);

    let run = f.h2r(&pair, TOKEN, &args);
    run.expect_code(0);
    let cfg = f.config(&app).await;
    for var in ["DATABASE_URL", "HEROKU_POSTGRESQL_RED_URL", "ANALYST_URL"] {
        assert_eq!(cfg[var].as_str(), Some(pair.target_url().as_str()), "{var}");
    }
    // In a Private Space web kept running through the freeze: its formation never went to 0.
    let scaled: Vec<serde_json::Value> = pair
        .target_master()
        .await
        .query(
            "SELECT detail FROM heroku2rds.cutover_steps WHERE step = 'checked'",
            &[],
        )
        .await
        .expect("checked")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        scaled
            .iter()
            .any(|d| d["scope"]["apps"][0]["keep_running"] == json!(["web"])),
        "{scaled:?}"
    );
    let n = acks(&ack).len();
    wait_for_acks(
        &ack,
        n + 10,
        Duration::from_secs(60),
        "no writes after the switch",
    )
    .await;
    scale_all_to_zero(&app).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_all_on(
        &on_target(&pair).await,
        &acks(&ack),
        "the app (web, legacy via the alias)",
    );
    let tgt = pair.target_master().await;
    let legacy: i64 = tgt
        .query_one(
            "SELECT count(*) FROM public.writes WHERE dyno LIKE 'legacy.%'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert!(legacy > 0, "the alias writer never wrote");
}
