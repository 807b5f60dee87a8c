//! Continuous verification while following, and the cutover's final verification that relies on
//! it: differences planted on the target are found with their keys (in the background while
//! following, and at the freeze when a source write touched their range), a live workload never
//! raises a false one, and a kill -9 keeps what was proven.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::binary::spawn_h2r_logged;
use crate::support::clusters::{root, rows, Pair};
use crate::support::fake_heroku::{app_name, fake, quick, TOKEN};
use crate::support::host::kill;
use crate::support::rng::Rng;
use crate::support::workloads::{acks, wait_for_acks, SCHEMA, WRITER};

/// Tables with the three kinds of ranges: integer keys, a text key, a composite key.
const TABLES: &str = "
CREATE TABLE public.big (id bigint PRIMARY KEY, v text NOT NULL);
INSERT INTO public.big SELECT i, md5(i::text) FROM generate_series(1, 60000) i;
CREATE TABLE public.tagged (k text PRIMARY KEY, v int NOT NULL);
INSERT INTO public.tagged SELECT 'k-' || i, i FROM generate_series(1, 3000) i;
CREATE TABLE public.pairs (a int, b text, v int NOT NULL, PRIMARY KEY (a, b));
INSERT INTO public.pairs SELECT i % 300, 'b' || i, i FROM generate_series(1, 3000) i;
ANALYZE;
";

/// Busy writes on the three tables (never on the keys the test plants differences on: big ids
/// up to 100, tagged k-1 .. k-99, pairs a < 10), counted once acknowledged.
async fn busy(
    pair: &Pair,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let c = pair.source_owner().await;
    tokio::spawn(async move {
        let mut rng = Rng::new(7);
        let mut next = 1_000_000i64;
        while !stop.load(Ordering::Relaxed) {
            let id = 101 + rng.next(59_000) as i64;
            let k = 100 + rng.next(2_900);
            let a = 10 + rng.next(290);
            next += 1;
            let sql = match rng.next(6) {
                0 => format!("UPDATE public.big SET v = md5(random()::text) WHERE id = {id}"),
                1 => format!("INSERT INTO public.big VALUES ({next}, 'new')"),
                2 => format!("BEGIN; DELETE FROM public.big WHERE id = {id}; INSERT INTO public.big VALUES ({id}, 'again'); COMMIT"),
                3 => format!("UPDATE public.tagged SET v = v + 1 WHERE k = 'k-{k}'"),
                4 => format!("INSERT INTO public.tagged VALUES ('n-{next}', 1)"),
                _ => format!("UPDATE public.pairs SET v = v + 1 WHERE a = {a}"),
            };
            c.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            ops.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// The follower, logging to a file (a pipe nobody reads would block it).
fn follow(pair: &Pair) -> std::process::Child {
    spawn_h2r_logged(
        FOLLOW,
        &[
            ("HEROKU2RDS_SOURCE_URL", pair.source_url()),
            ("HEROKU2RDS_TARGET_URL", pair.target_url()),
        ],
        &follower_log(),
    )
}

fn follower_log() -> std::path::PathBuf {
    root().dir.join("verify_live.follower.log")
}

/// The end of the follower's log, for failure messages.
fn follower_tail() -> String {
    let log = std::fs::read_to_string(follower_log()).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn verification(pair: &Pair) -> Value {
    let s = pair.h2r(&["status", "--json"]);
    s.expect_code(0);
    s.json()["verification"].clone()
}

/// Waits until `done` holds for the verification status, asserting `always` on every reading.
async fn wait_verification(
    pair: &Pair,
    limit: Duration,
    what: &str,
    always: impl Fn(&Value),
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = verification(pair);
        always(&v);
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {v}\nthe follower's log ends with:\n{}",
            follower_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn no_difference(v: &Value) {
    assert!(
        v.is_null() || v["difference_count"] == 0,
        "a difference was reported under a live workload: {v}"
    );
}

fn differences(v: &Value) -> String {
    v["differences"].to_string()
}

const FOLLOW: &[&str] = &[
    "replicate",
    "--until",
    "forever",
    "--keyless",
    "recopy",
    "--verify-rate-mb",
    "20",
];

#[tokio::test(flavor = "multi_thread")]
async fn continuous_verification_finds_planted_differences_and_the_freeze_rechecks_what_changed() {
    let f = fake();
    let pair = Pair::new("verify_live").await;
    let src = pair.source_owner().await;
    src.batch_execute(SCHEMA).await.expect("schema");
    src.batch_execute(TABLES).await.expect("tables");
    pair.h2r(&["replicate", "--until", "copied", "--keyless", "recopy"])
        .expect_code(0);
    let mut follower = follow(&pair);

    // The app writes through its dyno; a busy client writes too.
    let app = app_name("verify-app");
    let ack = root().dir.join(format!("{app}.acks"));
    f.post(
        "/apps",
        quick(json!({
            "name": app, "database_url": pair.source_url(),
            "config_vars": { "ACK_FILE": ack.display().to_string() },
            "formation": [{ "type": "web", "quantity": 1, "size": "Standard-1X", "command": WRITER }],
        })),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let writer = busy(&pair, stop.clone(), ops.clone()).await;

    // Every range gets proven under the live workload, and nothing in flight is reported.
    let v = wait_verification(
        &pair,
        Duration::from_secs(180),
        "verification did not cover every range",
        no_difference,
        |v| {
            v["verified_ranges"].as_i64().is_some_and(|n| n > 0)
                && v["verified_ranges"] == v["ranges"]
        },
    )
    .await;
    assert!(v["tables"].as_i64().unwrap_or(0) >= 4, "{v}");
    // Keep going a while: re-checks of touched keys and ranges under load stay quiet.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        no_difference(&verification(&pair));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ops.load(Ordering::SeqCst) > 200, "the busy writer ran");

    // 1. Rows changed on the target behind the tool's back, while it follows: found with their
    // keys, and the cutover refuses to start.
    let tgt = pair.target_master().await;
    tgt.batch_execute(
        "UPDATE public.big SET v = 'planted' WHERE id = 7;
         DELETE FROM public.tagged WHERE k = 'k-3';
         UPDATE public.pairs SET v = -5 WHERE a = 4 AND b = 'b4';",
    )
    .await
    .expect("plant");
    let v = wait_verification(
        &pair,
        Duration::from_secs(120),
        "the planted differences were not found",
        |_| {},
        |v| {
            let d = differences(v);
            d.contains("public.big id=7")
                && d.contains("public.tagged k=k-3")
                && d.contains("public.pairs a,b=4,b4")
        },
    )
    .await;
    assert_eq!(v["difference_count"], 3, "{v}");
    let status = pair.h2r(&["status"]);
    assert!(status.stdout.contains("DIFFERENCE"), "{}", status.stdout);
    let before = f.shape(&app).await;
    let refused = f.h2r(
        &pair,
        TOKEN,
        &["cutover", "--app", &app, "--yes", "--max-lag-s", "60"],
    );
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(said.contains("public.big id=7"), "{said}");
    assert_eq!(
        f.shape(&app).await,
        before,
        "a refused cutover changed the app"
    );

    // Fixed on the target: the re-check clears them.
    tgt.batch_execute(
        "UPDATE public.big SET v = md5('7') WHERE id = 7;
         INSERT INTO public.tagged VALUES ('k-3', 3);
         UPDATE public.pairs SET v = 4 WHERE a = 4 AND b = 'b4';",
    )
    .await
    .expect("fix");
    wait_verification(
        &pair,
        Duration::from_secs(90),
        "the fixed rows were not cleared",
        |_| {},
        |v| v["difference_count"] == 0,
    )
    .await;

    // 2. kill -9 while verifying: what was proven stays proven.
    let proven = verification(&pair)["verified_ranges"]
        .as_i64()
        .expect("proven");
    follower.kill().expect("kill -9");
    follower.wait().expect("reap");
    let after_kill = verification(&pair);
    assert!(
        after_kill["verified_ranges"].as_i64().expect("proven") >= proven,
        "coverage lost by a kill -9: {proven} before, {after_kill}"
    );
    let mut follower = follow(&pair);
    wait_verification(
        &pair,
        Duration::from_secs(120),
        "coverage did not come back after the restart",
        no_difference,
        |v| v["verified_ranges"] == v["ranges"],
    )
    .await;

    // 3. A row changed on the target after its range was proven, then a source write in the same
    // range: the freeze scans the range again and finds it. The follower is stopped first, so
    // that only the freeze can find it.
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    kill(follower.id(), "-TERM");
    assert!(follower.wait().expect("follower").success());
    tgt.batch_execute("UPDATE public.big SET v = 'late' WHERE id = 15")
        .await
        .expect("plant late");
    src.batch_execute("UPDATE public.big SET v = 'touch' WHERE id = 16")
        .await
        .expect("touch");
    wait_for_acks(&ack, 20, Duration::from_secs(60), "the dyno did not write").await;
    let cut = |extra: &[&str]| {
        let mut args = vec![
            "cutover",
            "--app",
            &app,
            "--yes",
            "--json",
            "--session-grace-s",
            "5",
            "--max-lag-s",
            "120",
        ];
        args.extend_from_slice(extra);
        f.h2r(&pair, TOKEN, &args)
    };
    let run = cut(&[]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains("rolled back"), "{said}");
    assert!(
        said.contains("public.big") && said.contains("id=15"),
        "{said}"
    );
    let shape = f.shape(&app).await;
    assert_eq!(
        shape.database_url.as_deref(),
        Some(pair.source_url().as_str())
    );
    assert!(!shape.maintenance);

    // Fixed: the cutover goes through, and its final verification only covered what changed.
    tgt.batch_execute("UPDATE public.big SET v = md5('15') WHERE id = 15")
        .await
        .expect("fix late");
    let run = cut(&[]);
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["outcome"], "completed", "{report}");
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains("final verification:"), "{said}");

    // Independent check: every acknowledged write is on the target, and every table is equal.
    let writes: std::collections::BTreeSet<(i64, i64)> = tgt
        .query("SELECT boot, n FROM public.writes", &[])
        .await
        .expect("writes")
        .iter()
        .map(|r| (r.get(0), i64::from(r.get::<_, i32>(1))))
        .collect();
    let missing = acks(&ack)
        .into_iter()
        .filter(|a| !writes.contains(a))
        .count();
    // Writes acknowledged after the switch went to the target directly: none may be missing.
    assert_eq!(missing, 0, "acknowledged writes missing on the target");
    let boots: Vec<String> = src
        .query("SELECT DISTINCT boot::text FROM public.writes", &[])
        .await
        .expect("boots")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let pre = format!("boot IN ({})", boots.join(","));
    assert_eq!(
        rows(&src, "public.writes", "true").await,
        rows(&tgt, "public.writes", &pre).await
    );
    for t in [
        "public.big",
        "public.tagged",
        "public.pairs",
        "public.items",
    ] {
        assert_eq!(
            rows(&src, t, "true").await,
            rows(&tgt, t, "true").await,
            "{t}"
        );
    }
}
