//! The cutover against the fake Heroku and real clusters: end to end while the app's dynos write,
//! rollback after a failure at each step before the point of no return, and continuation after
//! a failure past it.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::binary::{self, Run};
use crate::support::clusters::{root, rows, Pair};
use crate::support::fake_heroku::{app_name, fake, quick, Fake, TOKEN};
use crate::support::host::kill;
use crate::support::workloads::{acks, wait_for_acks, SCHEMA, WRITER};

#[tokio::test(flavor = "multi_thread")]
async fn cutover_end_to_end_while_the_app_writes() {
    let f = fake();
    let pair = Pair::new("cut_e2e").await;
    pair.source_owner()
        .await
        .batch_execute(SCHEMA)
        .await
        .expect("schema");
    pair.h2r(&["replicate", "--until", "copied", "--keyless", "recopy"])
        .expect_code(0);
    // The live follower, as the worker would run it.
    let follower = pair.spawn_h2r(&["replicate", "--until", "forever", "--keyless", "recopy"]);

    let app = app_name("e2e-app");
    let ack = root().dir.join(format!("{app}.acks"));
    f.post(
        "/apps",
        quick(json!({
            "name": app, "database_url": pair.source_url(),
            "config_vars": { "ACK_FILE": ack.display().to_string() },
            "formation": [
                { "type": "web", "quantity": 2, "size": "Standard-1X", "command": WRITER },
                { "type": "worker", "quantity": 1, "size": "Standard-2X", "command": "sleep 600" }
            ],
        })),
    )
    .await;
    let before = f.shape(&app).await;
    wait_for_acks(&ack, 40, Duration::from_secs(60), "the dynos did not write").await;

    let run = f.h2r(
        &pair,
        TOKEN,
        &[
            "cutover",
            "--app",
            &app,
            "--yes",
            "--json",
            "--session-grace-s",
            "5",
            "--max-lag-s",
            "60",
        ],
    );
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["outcome"], "completed", "{report}");
    let downtime = report["downtime_s"].as_f64().expect("downtime");
    let freeze = report["write_freeze_s"].as_f64().expect("write freeze");
    eprintln!("measured: downtime {downtime:.2}s, write freeze {freeze:.2}s");
    let at = |s: &serde_json::Value| s["at"].as_f64().unwrap_or_default();
    if let Some(steps) = report["steps"].as_array() {
        let t0 = steps.first().map(at).unwrap_or_default();
        let line: Vec<String> = steps
            .iter()
            .map(|s| format!("{} +{:.2}", s["step"].as_str().unwrap_or("?"), at(s) - t0))
            .collect();
        eprintln!("steps: {}", line.join(", "));
    }
    assert!(
        downtime > 0.0 && freeze > 0.0 && freeze <= downtime,
        "{report}"
    );
    assert!(
        !run.stdout.contains(&root().password),
        "password in the report"
    );
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    assert_eq!(steps.first(), Some(&"checked"));
    assert_eq!(steps.last(), Some(&"completed"));
    assert!(steps.contains(&"point-of-no-return"));

    // The app: DATABASE_URL is the target, the Heroku database still attached under another
    // name, formation and maintenance as before.
    let after = f.shape(&app).await;
    assert_eq!(
        after.database_url.as_deref(),
        Some(pair.target_url().as_str())
    );
    assert_eq!(after.formation, before.formation);
    assert!(!after.maintenance);
    assert!(
        after
            .attachments
            .contains(&"HEROKU2RDS_PREVIOUS_DATABASE".to_string()),
        "{after:?}"
    );
    assert!(
        !after.attachments.contains(&"DATABASE".to_string()),
        "{after:?}"
    );
    assert_eq!(
        f.config(&app).await["HEROKU2RDS_PREVIOUS_DATABASE_URL"].as_str(),
        Some(pair.source_url().as_str())
    );
    let state = f.state(&app).await;
    let up = state["dynos"]
        .as_array()
        .expect("dynos")
        .iter()
        .filter(|d| d["state"] == "up")
        .count();
    assert_eq!(up, 3, "{}", state["dynos"]);

    // The dynos now write to the target: let them, then stop everything.
    let n_before_stop = acks(&ack).len();
    wait_for_acks(
        &ack,
        n_before_stop + 20,
        Duration::from_secs(30),
        "the dynos did not write after the switch",
    )
    .await;
    // The follower stopped by itself at the switch (exit 3: its systemd unit does not restart
    // it), saying why.
    let out = follower.wait_with_output().expect("follower");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("switched"));
    heroku2rds::heroku::app::App::new(&f.client(TOKEN), &app)
        .scale(&[heroku2rds::heroku::app::Process {
            process_type: "web".into(),
            quantity: 0,
            size: "Standard-1X".into(),
        }])
        .await
        .expect("scale down");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = f.state(&app).await;
        if !s["dynos"]
            .as_array()
            .expect("dynos")
            .iter()
            .any(|d| d["type"] == "web")
        {
            break;
        }
        assert!(Instant::now() < deadline, "web dynos did not stop");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every acknowledged write is on the target.
    let (src, tgt) = (pair.source_owner().await, pair.target_master().await);
    let on_target: BTreeSet<(i64, i64)> = tgt
        .query("SELECT boot, n FROM public.writes", &[])
        .await
        .expect("target writes")
        .iter()
        .map(|r| (r.get(0), i64::from(r.get::<_, i32>(1))))
        .collect();
    let all = acks(&ack);
    let missing: Vec<&(i64, i64)> = all.iter().filter(|a| !on_target.contains(a)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes missing on the target: {:?}",
        missing.len(),
        all.len(),
        &missing[..missing.len().min(5)]
    );
    // The target equals the source as of the switch (independent comparison), and the writes
    // after it continue the source's sequence.
    let boots: Vec<i64> = src
        .query("SELECT DISTINCT boot FROM public.writes", &[])
        .await
        .expect("boots")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let list = boots
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let pre = format!("boot IN ({list})");
    assert_eq!(
        rows(&src, "public.writes", "true").await,
        rows(&tgt, "public.writes", &pre).await
    );
    assert_eq!(
        rows(&src, "public.nokey", "true").await,
        rows(&tgt, "public.nokey", &format!("boot IS NULL OR {pre}")).await
    );
    assert_eq!(
        rows(&src, "public.items", "true").await,
        rows(&tgt, "public.items", "true").await
    );
    assert_eq!(
        rows(&src, "public.items_summary", "true").await,
        rows(&tgt, "public.items_summary", "true").await
    );
    let max_src: i64 = src
        .query_one("SELECT max(id) FROM public.writes", &[])
        .await
        .expect("max")
        .get(0);
    let min_new: Option<i64> = tgt
        .query_one(
            &format!("SELECT min(id) FROM public.writes WHERE NOT ({pre})"),
            &[],
        )
        .await
        .expect("min")
        .get(0);
    assert!(
        min_new.is_some_and(|m| m > max_src),
        "post-switch ids {min_new:?} continue after {max_src}"
    );

    // A re-run says it is done.
    let again = f.h2r(&pair, TOKEN, &["cutover", "--app", &app, "--yes"]);
    again.expect_code(0);
    assert!(
        again.stdout.contains("already completed"),
        "{}",
        again.stdout
    );
}

fn rolled_back(run: &Run, code: i32, needles: &[&str]) {
    run.expect_code(code);
    for n in needles {
        assert!(run.stderr.contains(n), "expected `{n}` in:\n{}", run.stderr);
    }
}

async fn outcome(pair: &Pair) -> Option<String> {
    pair.target_master()
        .await
        .query_one(
            "SELECT outcome FROM heroku2rds.cutovers ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .expect("outcome")
        .get(0)
}

async fn wait_step(pair: &Pair, step: &str, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
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
            return;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "cutover exited before {step}"
        );
        assert!(Instant::now() < deadline, "cutover did not reach {step}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_before_the_point_of_no_return_roll_back_and_after_it_continue() {
    // Injects faults (and clears them, which is global to a server): a fake of its own.
    let f = &Fake::private("cutover-faults");
    let pair = Pair::new("cut_faults").await;
    pair.source_owner()
        .await
        .batch_execute(SCHEMA)
        .await
        .expect("schema");
    pair.h2r(&["replicate", "--until", "caught-up", "--keyless", "recopy"])
        .expect_code(0);
    let app = app_name("fault-app");
    f.post(
        "/apps",
        quick(json!({
            "name": app, "database_url": pair.source_url(),
            "formation": [
                { "type": "web", "quantity": 2, "size": "Standard-1X", "command": "sleep 600" },
                { "type": "worker", "quantity": 1, "size": "Standard-2X", "command": "sleep 600" }
            ],
        })),
    )
    .await;
    let before = f.shape(&app).await;
    let base = ["cutover", "--app", &app, "--yes", "--session-grace-s", "2"];

    // A 500 at each step's endpoint (as often as the client tries).
    let faults = [
        ("PATCH", format!("^/apps/{app}$"), 6, "PATCH /apps/"),
        (
            "PATCH",
            format!("^/apps/{app}/formation$"),
            6,
            "/formation answered 500",
        ),
        // Twelve: the plan's estimate reads the dynos first (and assumes their times when it
        // cannot), then the freeze's wait for the dynos must fail too.
        (
            "GET",
            format!("^/apps/{app}/dynos$"),
            12,
            "/dynos answered 500",
        ),
        (
            "POST",
            "^/addon-attachments$".to_string(),
            1,
            "POST /addon-attachments answered 500",
        ),
    ];
    for (method, path, times, said) in &faults {
        f.post(
            "/faults",
            json!({ "method": method, "path_regex": path, "status": 500, "times": times }),
        )
        .await;
        let run = f.h2r(&pair, TOKEN, &base);
        rolled_back(&run, 5, &["cutover rolled back", said]);
        f.admin(reqwest::Method::DELETE, "/faults", None).await;
        assert_eq!(
            f.shape(&app).await,
            before,
            "after a 500 on {method} {path}"
        );
        assert_eq!(outcome(&pair).await.as_deref(), Some("rolled-back"));
    }

    // A difference planted on the target: the final verification catches it.
    let tgt = pair.target_master().await;
    tgt.batch_execute("UPDATE public.items SET v = 'planted' WHERE id = 7")
        .await
        .expect("plant");
    let run = f.h2r(&pair, TOKEN, &base);
    rolled_back(
        &run,
        1,
        &[
            "cutover rolled back",
            "final verification found differences",
            "public.items",
        ],
    );
    assert_eq!(f.shape(&app).await, before, "after a verification mismatch");
    tgt.batch_execute("UPDATE public.items SET v = md5('7') WHERE id = 7")
        .await
        .expect("unplant");

    // Killed while waiting for an app session to end: the re-run rolls back.
    let source_url = pair.source_url();
    let mut session = Command::new("psql")
        .args([source_url.as_str(), "-qc", "SELECT pg_sleep(600)"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("an app session");
    let spawn = |grace: &str| {
        let mut env = f.env(TOKEN);
        env.push(("HEROKU2RDS_TARGET_URL", pair.target_url()));
        binary::command(
            [
                "cutover",
                "--app",
                &app,
                "--yes",
                "--session-grace-s",
                grace,
            ],
            &env,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cutover")
    };
    let mut child = spawn("120");
    wait_step(&pair, "dynos-stopped", &mut child).await;
    // A second cutover of the same migration refuses while this one runs, naming it, and
    // changes nothing.
    let second = f.h2r(&pair, TOKEN, &base);
    second.expect_code(2);
    assert!(
        second.stderr.contains("already running")
            && second.stderr.contains(&format!("pid {}", child.id())),
        "{}",
        second.stderr
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    // The server notices the dead process's sessions (and its lock) a moment later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mid = f.shape(&app).await;
    assert!(mid.maintenance, "killed mid-way: maintenance is on");
    assert!(
        mid.formation.iter().all(|p| p.1 == 0),
        "killed mid-way: scaled down {mid:?}"
    );
    let run = f.h2r(&pair, TOKEN, &base);
    rolled_back(
        &run,
        5,
        &[
            "rolled back the interrupted cutover",
            "run `heroku2rds cutover` again",
        ],
    );
    assert_eq!(f.shape(&app).await, before, "after a killed cutover");

    // SIGTERM (as Ctrl-C) during the same wait: it rolls back by itself.
    let mut child = spawn("120");
    wait_step(&pair, "dynos-stopped", &mut child).await;
    kill(child.id(), "-TERM");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("cutover rolled back") && stderr.contains("interrupted"),
        "{stderr}"
    );
    assert_eq!(f.shape(&app).await, before, "after Ctrl-C");
    let _ = session.kill();
    let _ = session.wait();

    // Past the point of no return a failure does not roll back; the re-run finishes the switch.
    f.post(
        "/faults",
        json!({ "method": "PATCH", "path_regex": format!("^/apps/{app}/config-vars$"), "status": 500, "times": 6 }),
    )
    .await;
    let run = f.h2r(&pair, TOKEN, &base);
    run.expect_code(5);
    assert!(
        run.stderr.contains("past the point of no return"),
        "{}",
        run.stderr
    );
    f.admin(reqwest::Method::DELETE, "/faults", None).await;
    let mid = f.shape(&app).await;
    assert!(
        mid.maintenance && mid.database_url.is_none(),
        "stopped after detaching: {mid:?}"
    );
    let run = f.h2r(&pair, TOKEN, &["cutover", "--app", &app, "--yes", "--json"]);
    run.expect_code(0);
    assert_eq!(run.json()["outcome"], "completed");
    let after = f.shape(&app).await;
    assert_eq!(
        after.database_url.as_deref(),
        Some(pair.target_url().as_str())
    );
    assert_eq!(
        (after.maintenance, &after.formation),
        (false, &before.formation)
    );
}
