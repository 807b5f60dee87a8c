//! `migrate` end to end on the stand-ins, as the rehearsal runs it: a private pair of clusters
//! (the "Heroku" database and the cluster behind the emulator's RDS instance, reached through
//! `--target-connect` like a tunnel), a private AWS emulator whose CreateDBInstance makes the
//! master user on that cluster, the fake Heroku with writer dynos, and the binary as a black box.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::binary::{self, h2r_env, Run};
use crate::support::clusters::{self, restore_list, root, rows, scratch_dir, Pair};
use crate::support::fake_heroku::{app_name, fake, quick, TOKEN};
use crate::support::moto::{aws_env, inventory, tool, unique, Moto, OPERATOR};
use crate::support::repo_file;
use crate::support::rng::{self, Rng};
use crate::support::workloads::{acks, wait_for_acks, SCHEMA, WRITER};

/// A table of `rows` rows of about 150 bytes, to make the copy take a while.
fn bulk(rows: u32) -> String {
    format!(
        "CREATE TABLE public.bulk (id bigint PRIMARY KEY, payload text NOT NULL);
         INSERT INTO public.bulk SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, {rows}) i;"
    )
}

struct Stage {
    pair: Pair,
    env: Vec<(String, String)>,
    app: String,
    name: String,
    ack: PathBuf,
}

fn endpoint(name: &str) -> String {
    format!("heroku2rds-{name}.aaaaaaaaaa.us-east-2.rds.amazonaws.com")
}

/// Clusters, emulator, app with two writer dynos (already writing), all private to the test.
async fn stage(tag: &str, extra_sql: &str) -> Stage {
    let pair = Pair::private(tag).await;
    pair.source_owner()
        .await
        .batch_execute(&format!("{SCHEMA}{extra_sql}"))
        .await
        .expect("schema");
    let backing = pair.target.url("postgres", "postgres");
    let moto = Moto::private(&[("HEROKU2RDS_RDS_BACKING", &backing)]);
    let name = unique(tag);
    let app = app_name(tag);
    let ack = root().dir.join(format!("{app}.acks"));
    let f = fake();
    f.post(
        "/apps",
        quick(json!({
            "name": app, "database_url": pair.source_url(),
            "config_vars": { "ACK_FILE": ack.display().to_string() },
            "formation": [
                { "type": "web", "quantity": 2, "size": "Standard-1X", "command": WRITER },
            ],
        })),
    )
    .await;
    // The dynos reach "RDS" by its endpoint name, which leads to the stand-in cluster.
    f.post(
        "/network",
        json!({ format!("{}:5432", endpoint(&name)): format!("127.0.0.1:{}", pair.target.port) }),
    )
    .await;
    let mut env = aws_env(&moto, "test", "test");
    env.extend(f.env(TOKEN).into_iter().map(|(k, v)| (k.to_string(), v)));
    env.push((
        "HEROKU2RDS_TARGET_CONNECT".into(),
        format!("127.0.0.1:{}", pair.target.port),
    ));
    env.push((
        "HEROKU2RDS_CA_BUNDLE".into(),
        root().ca.display().to_string(),
    ));
    wait_for_acks(&ack, 20, Duration::from_secs(60), "the dynos did not write").await;
    Stage {
        pair,
        env,
        app,
        name,
        ack,
    }
}

impl Stage {
    fn args(&self, runner: &str) -> Vec<String> {
        [
            "migrate",
            "--app",
            &self.app,
            "--name",
            &self.name,
            "--runner",
            runner,
            "--yes",
            "--json",
            "--operator-cidr",
            OPERATOR,
            "--keyless",
            "recopy",
            "--session-grace-s",
            "5",
            "--max-lag-s",
            "60",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn command(&self, args: &[String]) -> Command {
        let mut c = binary::command(args, &self.env);
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[String]) -> Run {
        Run::from_output(self.command(args).output().expect("run heroku2rds"))
    }

    /// Starts the binary with stdout and stderr going to files (so a kill cannot block a pipe).
    fn spawn(&self, args: &[String], log: &str) -> (Child, PathBuf) {
        let out = root().dir.join(format!("{}-{log}.out", self.name));
        let err = root().dir.join(format!("{}-{log}.err", self.name));
        let child = self
            .command(args)
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(std::fs::File::create(&err).expect("err"))
            .spawn()
            .expect("spawn heroku2rds");
        (child, out)
    }

    fn inventory(&self) -> serde_json::Map<String, Value> {
        inventory(&self.env, &self.name)
    }

    /// The target database as its superuser.
    async fn target(&self) -> tokio_postgres::Client {
        self.pair.target.admin("app").await
    }
}

/// The JSON event lines of a run's stdout.
fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn summary_of(run: &Run) -> Value {
    events(&run.stdout)
        .into_iter()
        .find(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary: {run:?}"))
}

/// Everything the migration promises, checked independently of heroku2rds.
async fn check_migrated(s: &Stage, summary: &Value) {
    let host = endpoint(&s.name);
    assert!(
        summary["downtime_s"].as_f64().is_some_and(|d| d > 0.0),
        "{summary}"
    );
    assert!(
        summary["database"]
            .as_str()
            .is_some_and(|d| d.contains(&host)),
        "{summary}"
    );
    let phases: Vec<&str> = summary["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .filter(|p| !p["finished_at"].is_null())
        .filter_map(|p| p["phase"].as_str())
        .collect();
    for p in ["provision", "replicate", "cutover", "archive"] {
        assert!(phases.contains(&p), "phase {p} not finished: {summary}");
    }

    // The app uses the new database; the old one stays reachable.
    let vars = fake().config(&s.app).await;
    let url = vars["DATABASE_URL"].as_str().expect("DATABASE_URL");
    assert!(
        url.contains(&host) && url.contains("sslmode=require"),
        "{url}"
    );
    assert!(
        vars["HEROKU2RDS_PREVIOUS_DATABASE_URL"]
            .as_str()
            .is_some_and(|u| u.contains(&format!(":{}/", s.pair.source.port))),
        "{vars}"
    );

    // Every acknowledged write is on the target; the source's rows all are; the rest of the
    // target's rows of the written tables came after the switch (new dyno boots).
    let acked = acks(&s.ack);
    let src = s.pair.source_owner().await;
    let tgt = s.target().await;
    let last_boot: i64 = src
        .query_one("SELECT coalesce(max(boot), 0) FROM public.writes", &[])
        .await
        .expect("max boot")
        .get(0);
    let on_target: std::collections::BTreeSet<(i64, i64)> = tgt
        .query("SELECT boot, n::bigint FROM public.writes", &[])
        .await
        .expect("target writes")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let missing: Vec<_> = acked.iter().filter(|a| !on_target.contains(a)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing on the target: {missing:?}"
    );
    assert!(
        acked.iter().any(|(b, _)| *b > last_boot),
        "no write reached the new database after the switch"
    );
    // On the source every row is "old"; on the target the old rows must be exactly those.
    let old = format!("boot IS NULL OR boot <= {last_boot}");
    for (table, filter) in [
        ("public.writes", old.as_str()),
        ("public.nokey", old.as_str()),
        ("public.items", "true"),
        ("public.items_summary", "true"),
    ] {
        assert_eq!(
            rows(&src, table, filter).await,
            rows(&tgt, table, filter).await,
            "{table} differs"
        );
    }
    // New rows continue the source's sequence (synced at the switch).
    let (src_max, tgt_min_new): (i64, Option<i64>) = (
        src.query_one("SELECT coalesce(max(id), 0) FROM public.writes", &[])
            .await
            .expect("max")
            .get(0),
        tgt.query_one(
            &format!("SELECT min(id) FROM public.writes WHERE boot > {last_boot}"),
            &[],
        )
        .await
        .expect("min new")
        .get(0),
    );
    assert!(
        tgt_min_new.is_some_and(|m| m > src_max),
        "{src_max} {tgt_min_new:?}"
    );

    // The archive: one object, its recorded checksum right, a valid custom-format dump.
    let a = &summary["archive"];
    let (bucket, key) = (
        a["bucket"].as_str().expect("bucket"),
        a["key"].as_str().expect("key"),
    );
    let file = root().dir.join(format!("{}.dump", s.name));
    let got = tool(&s.env, &["get", bucket, key, &file.display().to_string()]);
    let bytes = std::fs::read(&file).expect("archive file");
    use sha2::Digest;
    assert_eq!(
        got["metadata"]["sha256"],
        hex::encode(sha2::Sha256::digest(&bytes))
    );
    assert_eq!(a["sha256"], got["metadata"]["sha256"]);
    assert!(restore_list(&file).contains("TABLE DATA public writes"));
    assert_eq!(
        tool(&s.env, &["uploads", bucket]),
        json!([]),
        "unfinished uploads left"
    );

    // Exactly one of everything.
    let inv = s.inventory();
    let count = |kind: &str| inv.keys().filter(|k| k.contains(kind)).count();
    assert_eq!(count("/rds/"), 1, "{inv:?}");
    assert_eq!(count("/secret/"), 1, "{inv:?}");
    assert_eq!(count("s3/"), 1, "{inv:?}");
    let objects = inv
        .iter()
        .find(|(k, _)| k.starts_with("s3/"))
        .map(|(_, v)| v["objects"].clone())
        .expect("bucket");
    let archives: Vec<&Value> = objects
        .as_array()
        .expect("objects")
        .iter()
        .filter(|o| o.as_str().is_some_and(|k| k.starts_with("archive/")))
        .collect();
    assert_eq!(archives, vec![&json!(key)], "{objects}");
    // Nothing of the migration is left in the Heroku database's app state.
    let st = fake().state(&s.app).await;
    assert_eq!(st["maintenance"], false, "{st}");
}

/// Runs `args` to the end while sampling the process list: returns the run and every command
/// line seen meanwhile of the heroku2rds process and its descendants (pg_dump, ...).
fn run_watching_ps(s: &Stage, args: &[String], log: &str) -> (Run, Vec<String>) {
    let (mut child, out) = s.spawn(args, log);
    let mut seen = std::collections::BTreeSet::new();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        let ps = Command::new("ps")
            .args(["-eo", "pid=,ppid=,args="])
            .output()
            .expect("ps");
        let procs: Vec<(u32, u32, String)> = String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let pid = it.next()?.parse().ok()?;
                let ppid = it.next()?.parse().ok()?;
                Some((pid, ppid, it.collect::<Vec<_>>().join(" ")))
            })
            .collect();
        let mut tree = vec![child.id()];
        let mut i = 0;
        while i < tree.len() {
            for (pid, ppid, cmd) in &procs {
                if *ppid == tree[i] {
                    tree.push(*pid);
                }
                if *pid == tree[i] {
                    seen.insert(cmd.clone());
                }
            }
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = out.with_extension("err");
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    };
    (run, seen.into_iter().collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_local_end_to_end_then_teardown() {
    let s = stage("mig", "").await;
    let (run, commands) = run_watching_ps(&s, &s.args("local"), "e2e");
    run.expect_code(0);
    let summary = summary_of(&run);
    eprintln!(
        "measured: downtime {:.2}s, write freeze {:.2}s",
        summary["downtime_s"].as_f64().unwrap_or(-1.0),
        summary["write_freeze_s"].as_f64().unwrap_or(-1.0)
    );
    for p in summary["phases"].as_array().into_iter().flatten() {
        if p["phase"] == "cutover" {
            eprintln!("cutover steps: {}", p["detail"]["steps"]);
        }
    }
    check_migrated(&s, &summary).await;

    // The secrets the run used appear in no output channel: stdout (JSON events), stderr (logs),
    // the process list, the state tables on the target, status.
    let master = tool(
        &s.env,
        &["secret", &format!("heroku2rds/{}/rds-master", s.name)],
    );
    let master = master["password"]
        .as_str()
        .expect("master password")
        .to_string();
    let secrets = [root().password.as_str(), master.as_str(), TOKEN];
    let status = h2r_env(
        &["status", "--json"],
        &[(
            "HEROKU2RDS_TARGET_URL",
            s.pair.target.url("postgres", "app").as_str(),
        )],
    );
    status.expect_code(0);
    let tgt = s.target().await;
    let mut state = String::new();
    for r in tgt
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'heroku2rds'",
            &[],
        )
        .await
        .expect("state tables")
    {
        let t: String = r.get(0);
        let dump: Option<String> = tgt
            .query_one(
                &format!("SELECT string_agg(x::text, E'\\n') FROM heroku2rds.{t} x"),
                &[],
            )
            .await
            .expect("dump state")
            .get(0);
        state.push_str(&dump.unwrap_or_default());
    }
    assert!(state.contains(&s.app), "the state dump is empty: {state}");
    assert!(
        commands.iter().any(|c| c.contains("migrate")),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|c| c.contains("pg_dump")),
        "{commands:?}"
    );
    for (channel, text) in [
        ("stdout", run.stdout.clone()),
        ("stderr", run.stderr.clone()),
        ("process list", commands.join("\n")),
        ("state tables", state),
        ("status", format!("{}{}", status.stdout, status.stderr)),
    ] {
        for (i, secret) in secrets.iter().enumerate() {
            let at = text
                .find(secret)
                .map(|p| text[p.saturating_sub(60)..p].to_string());
            assert!(at.is_none(), "secret #{i} in {channel}, after {at:?}");
        }
    }
    let steps: Vec<String> = events(&run.stdout)
        .iter()
        .filter(|e| e["event"] == "step")
        .filter_map(|e| e["phase"].as_str().map(String::from))
        .collect();
    assert_eq!(
        steps,
        [
            "plan",
            "provision",
            "replicate",
            "cutover",
            "archive",
            "summary"
        ],
        "{}",
        run.stdout
    );

    // Again: nothing is repeated.
    let before = s.inventory();
    let again = s.run(&s.args("local"));
    again.expect_code(0);
    let second = summary_of(&again);
    assert_eq!(second["archive"], summary["archive"]);
    assert_eq!(second["downtime_s"], summary["downtime_s"]);
    assert_eq!(s.inventory(), before, "a re-run changed AWS");
    let steps: Vec<String> = events(&again.stdout)
        .iter()
        .filter(|e| e["event"] == "step")
        .filter_map(|e| e["phase"].as_str().map(String::from))
        .collect();
    assert_eq!(steps, ["plan", "summary"], "{}", again.stdout);

    // Teardown keeps exactly what the summary said is kept.
    let td = s.run(
        &["teardown", "--name", &s.name, "--yes", "--json"]
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
    );
    td.expect_code(0);
    let inv = s.inventory();
    let kinds: std::collections::BTreeSet<&str> = inv
        .keys()
        .map(|k| k.split('/').nth(1).unwrap_or(k))
        .collect();
    assert!(!inv.keys().any(|k| k.contains("/instance/")), "{inv:?}");
    assert!(!inv.keys().any(|k| k.ends_with("-worker")), "{inv:?}");
    for kept in ["rds", "secret", "paramgroup", "sg"] {
        assert!(kinds.contains(kept), "{kept} not kept: {inv:?}");
    }
    assert_eq!(
        inv.keys().filter(|k| k.starts_with("s3/")).count(),
        1,
        "{inv:?}"
    );
    for k in summary["kept"].as_array().expect("kept") {
        let k = k.as_str().unwrap_or_default();
        assert!(!k.contains("EC2 worker"), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_killed_at_ten_random_moments_completes() {
    // Enough data that the copy takes a few seconds, so kills land in every phase.
    let s = stage("kil", &bulk(60_000)).await;
    let seed = rng::seed("HEROKU2RDS_KILL_SEED");
    eprintln!("kill test: seed {seed} (HEROKU2RDS_KILL_SEED={seed} repeats it)");
    let mut rng = Rng::new(seed);
    let args = s.args("local");
    for i in 0..10 {
        let delay = Duration::from_millis(300 + rng.next(2500));
        let (mut child, out) = s.spawn(&args, &format!("kill{i}"));
        let deadline = Instant::now() + delay;
        let mut exited = None;
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait().expect("wait") {
                exited = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let last_phase = events(&std::fs::read_to_string(&out).unwrap_or_default())
            .iter()
            .rev()
            .find_map(|e| e["phase"].as_str().map(String::from))
            .unwrap_or_else(|| "before the first step".into());
        match exited {
            Some(st) => eprintln!(
                "kill {i}: exited by itself ({st}) within {delay:?}, last phase {last_phase}"
            ),
            None => eprintln!("kill {i}: SIGKILL after {delay:?}, in phase {last_phase}"),
        }
    }
    let run = s.run(&args);
    run.expect_code(0);
    let summary = summary_of(&run);
    check_migrated(&s, &summary).await;
    let (src, tgt) = (s.pair.source_owner().await, s.target().await);
    assert_eq!(
        rows(&src, "public.bulk", "true").await,
        rows(&tgt, "public.bulk", "true").await,
        "public.bulk differs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_on_the_worker_while_status_shows_progress() {
    // Enough rows that the copy is seen in progress.
    let s = stage("wrk", &bulk(150_000)).await;
    // The emulator's instances do not run: the stand-in does what the worker's user-data and
    // systemd unit do (fetch binary and job by their presigned URLs, check the SHA-256, run
    // `heroku2rds worker --job $CREDENTIALS_DIRECTORY/job`, restart on failure).
    let (standin, state) = start_standin(&s);

    let (mut migrate, out) = s.spawn(&s.args("ec2"), "ec2");
    // `status` from another process, reading the target only.
    let status_url = s.pair.target.url("postgres", "app");
    let mut seen_copying = false;
    let mut runner_seen = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    let code = loop {
        if let Some(st) = migrate.try_wait().expect("wait") {
            break st.code();
        }
        assert!(
            Instant::now() < deadline,
            "migrate --runner ec2 did not finish"
        );
        let st = h2r_env(
            &["status", "--json"],
            &[("HEROKU2RDS_TARGET_URL", status_url.as_str())],
        );
        if st.code == 0 {
            let v = st.json();
            if let Some(r) = v["runner"].as_str() {
                runner_seen = Some(r.to_string());
            }
            if v["phase"] == "copying" || v["chunks_done"].as_i64() < v["chunks_total"].as_i64() {
                seen_copying = true;
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(code, Some(0), "migrate failed:\n{stdout}");
    let runner = runner_seen.expect("status never showed a runner");
    assert!(
        !runner.contains(&format!("pid {}", migrate.id())),
        "the laptop ran replication itself: {runner}"
    );
    assert!(seen_copying, "status never showed the copy in progress");
    let progress = events(&stdout)
        .iter()
        .filter(|e| e["event"] == "progress")
        .count();
    assert!(progress > 0, "migrate showed no progress:\n{stdout}");
    let summary = summary_of(&Run {
        code: 0,
        stdout: stdout.clone(),
        stderr: String::new(),
    });
    check_migrated(&s, &summary).await;
    let (src, tgt) = (s.pair.source_owner().await, s.target().await);
    assert_eq!(
        rows(&src, "public.bulk", "true").await,
        rows(&tgt, "public.bulk", "true").await,
        "public.bulk differs"
    );

    // The worker ran from the job the laptop wrote, and teardown stops it.
    let logs = worker_logs(&state);
    assert!(logs.contains("running the job of migration"), "{logs}");
    assert!(
        !logs.contains(&root().password),
        "a password in the worker's log"
    );
    let td = s.run(
        &["teardown", "--name", &s.name, "--yes"]
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
    );
    td.expect_code(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let err = std::fs::read_to_string(state.join("standin.err")).unwrap_or_default();
        if err.contains("terminated") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker was not stopped: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(standin);
}

/// Heroku rotates the source's credentials while the worker follows under a live write load:
/// the app's DATABASE_URL changes and the worker's job still holds the old password, so its
/// follower is refused. A re-run of `migrate` hands the new URL to the same worker through the
/// target; it resumes from its records (nothing copied again) and the migration completes with
/// every acknowledged write on the target and both sides equal. The worker's binary comes from
/// a download URL (`--worker-binary-url`), as for an operator on macOS: nothing is uploaded.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_source_password_reaches_the_running_worker() {
    let s = stage("rot", &bulk(20_000)).await;
    let (standin, state) = start_standin(&s);
    let (binary_url, downloads) = serve_file(std::path::Path::new(binary::BIN));
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(binary::BIN).expect("read the binary"),
        ))
    };
    let mut env = s.env.clone();
    env.push(("HEROKU2RDS_SOURCE_URL".into(), s.pair.source_url()));
    let provision: Vec<String> = [
        "provision",
        "--name",
        &s.name,
        "--yes",
        "--operator-cidr",
        OPERATOR,
        "--keyless",
        "recopy",
        "--worker-binary-url",
        &binary_url,
        "--worker-binary-sha256",
        &sha,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let run = Run::from_output(
        binary::command(&provision, &env)
            .stdin(Stdio::null())
            .output()
            .expect("provision"),
    );
    run.expect_code(0);

    // The worker copies, then follows the dynos' writes.
    let status_url = s.pair.target.url("postgres", "app");
    let status = || {
        let st = h2r_env(
            &["status", "--json"],
            &[("HEROKU2RDS_TARGET_URL", status_url.as_str())],
        );
        (st.code == 0).then(|| st.json())
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if status()
            .is_some_and(|v| v["phase"] == "copied" && v["applied_changes"].as_i64() > Some(0))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never followed: {}",
            worker_logs(&state)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let instances = |inv: &serde_json::Map<String, Value>| -> Vec<String> {
        inv.keys()
            .filter(|k| k.contains("/instance/"))
            .cloned()
            .collect()
    };
    let before = instances(&s.inventory());
    assert_eq!(before.len(), 1, "{before:?}");
    let tgt = s.target().await;
    let copied_sql = "SELECT count(done_at), max(done_at)::text FROM heroku2rds.chunks";
    let copied: (i64, Option<String>) = {
        let r = tgt.query_one(copied_sql, &[]).await.expect("chunks");
        (r.get(0), r.get(1))
    };
    assert!(copied.0 > 0);

    // The rotation, as Heroku does it: a new password, every session of the role ended, the
    // add-on's URL changed (the dynos restart on a release with the new DATABASE_URL).
    let rotated = "rotated-Pw-9f3c1e";
    let new_url = s.pair.source_url().replacen(
        &format!(":{}@", root().password),
        &format!(":{rotated}@"),
        1,
    );
    assert_ne!(new_url, s.pair.source_url());
    let su = s.pair.source.admin(&s.pair.name).await;
    su.batch_execute(&format!(
        "ALTER ROLE app_owner PASSWORD '{rotated}';
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app_owner';"
    ))
    .await
    .expect("rotate");
    fake()
        .post(
            &format!("/apps/{}/database-url", s.app),
            json!({ "url": new_url }),
        )
        .await;
    let acks_at_rotation = acks(&s.ack).len();
    // The worker is refused and says so (and systemd, here the stand-in, restarts it).
    let deadline = Instant::now() + Duration::from_secs(90);
    while !worker_logs(&state).contains("does not accept the worker's URL") {
        assert!(
            Instant::now() < deadline,
            "the worker never noticed the rotation: {}",
            worker_logs(&state)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The laptop sees it too: the worker reports it on the target.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = h2r_env(
            &["status"],
            &[("HEROKU2RDS_TARGET_URL", status_url.as_str())],
        );
        if text
            .stdout
            .contains("worker:   cannot reach the source for")
        {
            assert!(
                !text.stdout.contains(rotated) && !text.stdout.contains(&root().password),
                "a password in status: {}",
                text.stdout
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never said the worker cannot reach the source: {}",
            text.stdout
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The dynos write again, with the new password.
    wait_for_acks(
        &s.ack,
        acks_at_rotation + 20,
        Duration::from_secs(60),
        "the dynos did not write after the rotation",
    )
    .await;

    // The re-run: migrate reads the new DATABASE_URL, hands it to the worker, waits until it
    // caught up, cuts over.
    let (mut migrate, out) = s.spawn(&s.args("ec2"), "rot");
    let deadline = Instant::now() + Duration::from_secs(300);
    let code = loop {
        if let Some(st) = migrate.try_wait().expect("wait") {
            break st.code();
        }
        assert!(Instant::now() < deadline, "migrate did not finish");
        std::thread::sleep(Duration::from_millis(300));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    assert_eq!(code, Some(0), "migrate failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("the source URL changed: handed to worker"),
        "{stderr}"
    );
    // The harness's own connections below use the original password.
    su.batch_execute(&format!(
        "ALTER ROLE app_owner PASSWORD '{}'",
        root().password
    ))
    .await
    .expect("restore the password");
    check_migrated(
        &s,
        &summary_of(&Run {
            code: 0,
            stdout: stdout.clone(),
            stderr: String::new(),
        }),
    )
    .await;
    assert!(
        acks(&s.ack).len() > acks_at_rotation,
        "no write acknowledged after the rotation"
    );

    // The same instance resumed: nothing copied again, the new URL taken in place.
    assert_eq!(instances(&s.inventory()), before);
    let after: (i64, Option<String>) = {
        let r = tgt.query_one(copied_sql, &[]).await.expect("chunks");
        (r.get(0), r.get(1))
    };
    assert_eq!(after, copied, "chunks were copied again");
    let logs = worker_logs(&state);
    assert!(
        logs.contains("using the one handed over through the target")
            || logs.contains("a new source URL was handed over"),
        "{logs}"
    );
    // Downloaded from the URL once, never uploaded to the bucket.
    assert_eq!(downloads.load(std::sync::atomic::Ordering::SeqCst), 1);
    let objects = s
        .inventory()
        .iter()
        .find(|(k, _)| k.starts_with("s3/"))
        .map(|(_, v)| v["objects"].to_string())
        .expect("bucket");
    assert!(!objects.contains("jobs/heroku2rds-"), "{objects}");
    // No secret anywhere: not the new password, not the old one.
    let standin_err = std::fs::read_to_string(state.join("standin.err")).unwrap_or_default();
    for (what, text) in [
        ("migrate's output", format!("{stdout}{stderr}")),
        (
            "provision's output",
            format!("{}{}", run.stdout, run.stderr),
        ),
        ("the worker's log", logs),
        ("the stand-in's log", standin_err),
    ] {
        assert!(!text.contains(rotated), "the new password in {what}");
        assert!(
            !text.contains(&root().password),
            "the old password in {what}"
        );
    }
    drop(standin);
}

/// The worker's half of a source URL hand-over, directly: `worker --job` follows a source; the
/// laptop's half (the library's sealing and record, as `provision` does it) stores a new URL on
/// the target before the password changes, and `status` says the worker runs on an outdated
/// URL. Then the password is rotated and the sessions ended: the same worker process takes the
/// new URL, resumes without copying again, `status` no longer says outdated, and both sides end
/// equal with every acknowledged write on the target.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_takes_a_handed_over_source_url_in_place() {
    use heroku2rds::aws::job::{Job, JOB_VERSION};
    use heroku2rds::pg::conn::ConnSpec;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let pair = Pair::private("hand").await;
    pair.source_owner()
        .await
        .batch_execute(
            "CREATE TABLE public.w (id bigserial PRIMARY KEY, v text NOT NULL);
             INSERT INTO public.w (v) SELECT md5(i::text) FROM generate_series(1, 5000) i;",
        )
        .await
        .expect("schema");
    let dir = scratch_dir("hand-worker");
    let job = Job {
        version: JOB_VERSION,
        migration: "hand".into(),
        source_url: pair.source_url(),
        target_url: pair.target_url(),
        jobs: Some(2),
        keyless: heroku2rds::pg::preflight::KeylessMode::Error,
        verify_rate: None,
        source_key: Some(Job::new_source_key().expect("key")),
    };
    let job_file = dir.join("job.json");
    std::fs::write(&job_file, job.to_bytes()).expect("job");
    let log = dir.join("worker.log");
    let worker = binary::spawn_h2r_logged::<&str, &str>(
        &["worker", "--job", &job_file.display().to_string()],
        &[],
        &log,
    );
    let mut worker = StopOnDrop(worker);

    // Writes through a session the rotation does not touch (the superuser's); each logged
    // once the database acknowledged it.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, su) = (stop.clone(), pair.source.admin(&pair.name).await);
        tokio::spawn(async move {
            let mut acked = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let v = format!("w{}", acked.len());
                if let Ok(r) = su
                    .query_one("INSERT INTO public.w (v) VALUES ($1) RETURNING id", &[&v])
                    .await
                {
                    acked.push(r.get::<_, i64>(0));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };
    let status_url = pair.target_url();
    let status = || {
        let st = h2r_env(
            &["status", "--json"],
            &[("HEROKU2RDS_TARGET_URL", status_url.as_str())],
        );
        (st.code == 0).then(|| st.json())
    };
    let wait_for = |what: &str, ok: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if status().is_some_and(|v| ok(&v)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait_for("the worker never followed", &|v| {
        v["phase"] == "copied" && v["applied_changes"].as_i64() > Some(0)
    });
    let tgt = pair.target.admin(&pair.name).await;
    let copied_sql = "SELECT count(done_at), max(done_at)::text FROM heroku2rds.chunks";
    let chunks = |r: tokio_postgres::Row| -> (i64, Option<String>) { (r.get(0), r.get(1)) };
    let copied = chunks(tgt.query_one(copied_sql, &[]).await.expect("chunks"));

    // The laptop's half, before the rotation: the new URL, sealed, on the target.
    let rotated = "handed-Pw-41d2";
    let new_url = pair.source_url().replacen(
        &format!(":{}@", root().password),
        &format!(":{rotated}@"),
        1,
    );
    let sealed = job.seal_source(&new_url).expect("seal").expect("a key");
    let mut laptop = pair.target_master().await;
    let identity = heroku2rds::pg::replicate::source_identity(
        &ConnSpec::parse(&new_url, "source").expect("url"),
    );
    let generation = heroku2rds::pg::store::put_worker_source(
        &mut laptop,
        &job.source_key_id().expect("key id"),
        &sealed,
        &identity,
    )
    .await
    .expect("hand over");
    assert_eq!(generation, 1);
    let sealed_on_target: Vec<u8> = tgt
        .query_one("SELECT sealed FROM heroku2rds.worker_source", &[])
        .await
        .expect("record")
        .get(0);
    assert!(!String::from_utf8_lossy(&sealed_on_target).contains(rotated));
    let st = status().expect("status");
    assert_eq!(st["worker_source_outdated"], true, "{st}");
    let text = h2r_env(
        &["status"],
        &[("HEROKU2RDS_TARGET_URL", status_url.as_str())],
    );
    assert!(
        text.stdout.contains("runs on an outdated source URL"),
        "{}",
        text.stdout
    );

    // The rotation: the worker's sessions end, the old password no longer works.
    let su = pair.source.admin(&pair.name).await;
    su.batch_execute(&format!(
        "ALTER ROLE app_owner PASSWORD '{rotated}';
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app_owner';"
    ))
    .await
    .expect("rotate");
    wait_for("the worker never took the new URL", &|v| {
        v["worker_source_outdated"] == false
    });
    let applied = status().expect("status")["applied_changes"].as_i64();
    wait_for("the worker did not resume applying", &|v| {
        v["applied_changes"].as_i64() > applied
    });
    stop.store(true, Ordering::SeqCst);
    let acked = writer.await.expect("writer");
    assert!(!acked.is_empty());
    // Caught up: both sides equal (an independent fingerprint), every acknowledged write there.
    let src_admin = pair.source.admin(&pair.name).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (a, b) = (
            clusters::fingerprint_tables(&src_admin).await,
            clusters::fingerprint_tables(&tgt).await,
        );
        if a == b {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "source and target differ: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let on_target: std::collections::BTreeSet<i64> = tgt
        .query("SELECT id FROM public.w", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(acked.iter().all(|id| on_target.contains(id)));
    assert_eq!(
        chunks(tgt.query_one(copied_sql, &[]).await.expect("chunks")),
        copied,
        "chunks were copied again"
    );
    // The same process: it resumed in place (no restart needed).
    assert!(matches!(worker.0.try_wait(), Ok(None)), "the worker exited");
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logs.contains("a new source URL was handed over (generation 1): resuming with it"),
        "{logs}"
    );
    assert!(
        !logs.contains(rotated) && !logs.contains(&root().password),
        "a password in the worker's log"
    );
    drop(worker);
}

/// Starts the EC2 worker stand-in for the stage's migration (AWS settings only in its
/// environment); returns it (stopped however the test ends: a failed assertion must not leave
/// it running) and its state directory (logs).
fn start_standin(s: &Stage) -> (StopOnDrop, PathBuf) {
    let state = scratch_dir(&format!("{}-standin", s.name));
    let aws_only: Vec<(String, String)> = s
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .cloned()
        .collect();
    let standin = Command::new(repo_file("localstack/ec2-worker-standin"))
        .args(["--migration", &s.name, "--state-dir"])
        .arg(&state)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .envs(aws_only.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(state.join("standin.err")).expect("log"))
        .spawn()
        .expect("start the EC2 worker stand-in");
    (StopOnDrop(standin), state)
}

/// Every worker log in the stand-in's state directory, concatenated.
fn worker_logs(state: &std::path::Path) -> String {
    std::fs::read_dir(state)
        .expect("state")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

/// Serves one file over HTTP on 127.0.0.1 (the operator's release download, for
/// `--worker-binary-url`); counts the requests. The thread lives as long as the test process.
fn serve_file(path: &std::path::Path) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://127.0.0.1:{}/heroku2rds",
        listener.local_addr().expect("addr").port()
    );
    let bytes = std::fs::read(path).expect("read the file to serve");
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = std::io::BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            // The request line and headers, up to the blank line.
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            let _ = conn
                .write_all(head.as_bytes())
                .and_then(|()| conn.write_all(&bytes));
        }
    });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_binary_with_a_wrong_checksum_stops_migrate_early_and_a_rerun_replaces_the_worker()
{
    let s = stage("sha", "").await;
    // migrate provisions and launches the worker; nothing plays it yet.
    let (mut migrate, out) = s.spawn(&s.args("ec2"), "sha");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (bucket, binary_key) = loop {
        assert!(
            matches!(migrate.try_wait(), Ok(None)),
            "migrate ended before launching the worker: {}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "no worker was launched");
        let inv = s.inventory();
        let bucket = inv.iter().find(|(k, _)| k.starts_with("s3/"));
        let launched = inv.keys().any(|k| k.contains("/instance/"));
        if let (Some((k, v)), true) = (bucket, launched) {
            let key = v["objects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o.as_str())
                .find(|o| o.starts_with("jobs/heroku2rds-"))
                .map(str::to_string);
            if let Some(key) = key {
                break (k.trim_start_matches("s3/").to_string(), key);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    // The object the worker downloads is not the binary the laptop hashed.
    tool(
        &s.env,
        &[
            "put",
            &bucket,
            &binary_key,
            "#!/bin/sh
echo tampered
",
        ],
    );
    let (standin, state) = start_standin(&s);
    let started = Instant::now();
    let code = loop {
        if let Some(st) = migrate.try_wait().expect("wait") {
            break st.code();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "migrate kept waiting after a failed bootstrap (its worker-start timeout is 20 minutes)"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    assert_eq!(code, Some(5), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("worker bootstrap failed") && stderr.contains("SHA-256 is wrong"),
        "{stderr}"
    );
    assert!(stderr.contains("migrate` again"), "{stderr}");
    assert!(!stderr.contains("X-Amz-Signature"), "{stderr}");
    let standin_log = std::fs::read_to_string(state.join("standin.err")).unwrap_or_default();
    assert!(
        standin_log.contains("does not match its SHA-256"),
        "{standin_log}"
    );

    // A re-run terminates that worker, launches a new one (with the binary uploaded again) and
    // migrates.
    let again = s.run(&s.args("ec2"));
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stderr.contains("terminated") && again.stderr.contains("its bootstrap failed"),
        "{}",
        again.stderr
    );
    let standin_log = std::fs::read_to_string(state.join("standin.err")).unwrap_or_default();
    assert!(standin_log.contains("instance terminated"), "{standin_log}");
    assert!(standin_log.contains("bootstrap done"), "{standin_log}");
    let inv = s.inventory();
    assert_eq!(
        inv.keys().filter(|k| k.contains("/instance/")).count(),
        1,
        "{inv:?}"
    );
    check_migrated(&s, &summary_of(&again)).await;
    drop(standin);
}

/// A child process sent SIGTERM and reaped when dropped, unless it has already ended.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
}
