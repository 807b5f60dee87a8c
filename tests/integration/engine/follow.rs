//! Change capture and apply under a live workload, during the copy and while following.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::support::clusters::{fingerprint_tables, sequence_values, Pair};
use crate::support::host::kill;
use crate::support::rng::Rng;

const LIVE_TABLES: &str = r#"
CREATE TABLE public.w_items (id bigint PRIMARY KEY, qty int NOT NULL, body text);
INSERT INTO public.w_items SELECT i, i % 100, CASE WHEN i % 500 = 0 THEN repeat(md5(i::text), 4000) ELSE md5(i::text) END
  FROM generate_series(1, 40000) i;
CREATE TABLE public.w_parent (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.w_child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES public.w_parent ON DELETE CASCADE, v text);
CREATE TABLE public.w_scratch (id int PRIMARY KEY, v text);
INSERT INTO public.w_scratch SELECT i, 'v' || i FROM generate_series(1, 100) i;
ANALYZE;
"#;

async fn workload(pair: &Pair, stop: Arc<AtomicBool>, ops: Arc<AtomicU64>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    // A: items: inserts, updates (TOASTed too), key changes, deletes, delete-and-reinsert.
    {
        let (c, stop, ops) = (pair.source_owner().await, stop.clone(), ops.clone());
        set.spawn(async move {
            let mut rng = Rng::new(1);
            let mut next_id = 2_000_000i64;
            while !stop.load(Ordering::Relaxed) {
                let id = 1 + rng.next(40_000) as i64;
                let sql = match rng.next(7) {
                    0 => { next_id += 1; format!("INSERT INTO public.w_items VALUES ({next_id}, 1, 'new')") }
                    1 => format!("UPDATE public.w_items SET qty = qty + 1 WHERE id = {id}"),
                    2 => format!("UPDATE public.w_items SET body = repeat(md5(random()::text), 3000) WHERE id = {id}"),
                    3 => { next_id += 1; format!("UPDATE public.w_items SET id = {next_id} WHERE id = {id}") }
                    4 => format!("DELETE FROM public.w_items WHERE id = {id}"),
                    5 => format!("BEGIN; DELETE FROM public.w_items WHERE id = {id}; INSERT INTO public.w_items VALUES ({id}, 7, 'reinserted'); COMMIT"),
                    _ => format!("BEGIN; DELETE FROM public.w_items WHERE id = {id}; COMMIT; INSERT INTO public.w_items VALUES ({id}, 8, 'again') ON CONFLICT (id) DO UPDATE SET qty = 9"),
                };
                c.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                ops.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // B: cascading deletes, multi-table transactions, a deferred foreign-key cycle.
    {
        let (c, stop, ops) = (pair.source_owner().await, stop.clone(), ops.clone());
        set.spawn(async move {
            let mut n = 0i32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let sql = format!(
                    "BEGIN;
                     INSERT INTO public.w_parent VALUES ({n}, 'p{n}');
                     INSERT INTO public.w_child SELECT {n} * 10 + i, {n}, 'c' FROM generate_series(0, 4) i;
                     COMMIT;
                     DELETE FROM public.w_parent WHERE id = {d};
                     BEGIN;
                     INSERT INTO public.employees (id, department_id, name, hired_on) VALUES (10000 + {n}, 1000 + {n}, 'e', '2024-01-01');
                     INSERT INTO public.departments VALUES (1000 + {n}, 'd{n}', 10000 + {n});
                     COMMIT;
                     INSERT INTO public.customers (email, name) VALUES ('live{n}@example.com', 'Live {n}');
                     INSERT INTO public.orders (customer_id, \"order\", quantity) SELECT id, {n}, 1 FROM public.customers WHERE email = 'live{n}@example.com';
                     DELETE FROM public.customers WHERE email = 'live{d}@example.com';",
                    d = n - 3
                );
                c.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                ops.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // C: partitions (inserts and rows moving between partitions), a unique-index-keyed table with
    // timestamptz keys, a text-keyed table.
    {
        let (c, stop, ops) = (pair.source_owner().await, stop.clone(), ops.clone());
        set.spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let sql = format!(
                    "INSERT INTO public.events VALUES (100000 + {n}, '2023-06-01'::date + ({n} % 900), 'live', NULL);
                     UPDATE public.events SET event_date = '2025-03-01' WHERE id = {n} AND kind <> 'moved';
                     UPDATE public.events SET kind = 'moved' WHERE id = {n};
                     INSERT INTO public.measurements (sensor, taken_at, reading) VALUES ('live', '2030-01-01 00:00:00+00'::timestamptz + {n} * interval '1.5 seconds', {n});
                     UPDATE public.measurements SET reading = -1 WHERE sensor = 'sensor-{s}' AND taken_at = (SELECT min(taken_at) FROM public.measurements WHERE sensor = 'sensor-{s}');
                     UPDATE \"Sales Data\".\"Regions\" SET \"Display Name\" = 'live {n}' WHERE \"Region Code\" = 'q''uote';",
                    s = n % 10
                );
                c.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                ops.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // D: truncate and refill.
    {
        let (c, stop, ops) = (pair.source_owner().await, stop.clone(), ops.clone());
        set.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let sql = format!(
                    "TRUNCATE public.w_scratch; INSERT INTO public.w_scratch SELECT i, 'round {n}' FROM generate_series(1, 50 + {n} % 7) i;"
                );
                c.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                ops.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
    }
    // E: transactions that take change-log ids first and commit last.
    {
        let (c, stop, ops) = (pair.source_owner().await, stop.clone(), ops.clone());
        set.spawn(async move {
            let mut n = 5_000_000i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                c.batch_execute(&format!("BEGIN; INSERT INTO public.w_items VALUES ({n}, 0, 'held'); UPDATE public.w_items SET qty = -1 WHERE id = 17;"))
                    .await
                    .expect("held begin");
                tokio::time::sleep(Duration::from_millis(700)).await;
                c.batch_execute(&format!("UPDATE public.w_items SET body = 'held {n}' WHERE id = {n}; COMMIT")).await.expect("held commit");
                ops.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    set
}

#[tokio::test(flavor = "multi_thread")]
async fn live_workload_during_copy_and_follow_ends_equal() {
    let pair = Pair::new("live_follow").await;
    pair.load_rich_fixture().await;
    pair.source_owner()
        .await
        .batch_execute(LIVE_TABLES)
        .await
        .expect("live tables");

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let writers = workload(&pair, stop.clone(), ops.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut child = pair.spawn_h2r(&[
        "replicate",
        "--until",
        "forever",
        "--jobs",
        "2",
        "--chunk-mb",
        "1",
        "--verify-rate-mb",
        "50",
    ]);
    // Let it copy and then follow for a while under load.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut following_since: Option<Instant> = None;
    let mut last = serde_json::Value::Null;
    loop {
        if Instant::now() > deadline {
            kill(child.id(), "-TERM");
            let out = child.wait_with_output().expect("output");
            let log = String::from_utf8_lossy(&out.stderr);
            let warnings: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .take(10)
                .collect();
            panic!(
                "replicate did not reach the follow phase: {last}\n{}",
                warnings.join("\n")
            );
        }
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            panic!(
                "replicate exited early ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let s = pair.h2r(&["status", "--json"]);
        // Background verification runs under the workload: nothing in flight may be reported
        // as a difference.
        let json = if s.code == 0 {
            s.json()
        } else {
            serde_json::Value::Null
        };
        let v = &json["verification"];
        last = v.clone();
        assert!(
            v.is_null() || v["difference_count"] == 0,
            "a false difference under the live workload: {v}"
        );
        if s.code == 0 && s.json()["phase"] == "copied" && s.json()["follow_updated_s"].is_number()
        {
            let since = *following_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(6) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut writers = writers;
    while let Some(r) = writers.join_next().await {
        r.expect("a writer failed");
    }
    assert!(
        ops.load(Ordering::SeqCst) > 200,
        "the workload ran ({} ops)",
        ops.load(Ordering::SeqCst)
    );

    // With the writers stopped, the follower still running: every range gets proven, and no
    // difference was ever reported.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = pair.h2r(&["status", "--json"]);
        s.expect_code(0);
        let v = s.json()["verification"].clone();
        assert_eq!(v["difference_count"], 0, "a false difference: {v}");
        if v["ranges"].as_i64().is_some_and(|n| n > 0) && v["verified_ranges"] == v["ranges"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "background verification did not cover every range once the writers stopped: {v}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // SIGTERM stops following cleanly between batches.
    kill(child.id(), "-TERM");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "replicate --until forever after SIGTERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run = pair.h2r(&["replicate", "--until", "caught-up"]);
    run.expect_code(0);
    let status = pair.h2r(&["status", "--json"]).json();
    assert_eq!(status["caught_up"], true, "{status}");
    assert_eq!(status["backlog"], 0, "{status}");
    assert!(
        status["applied_changes"].as_i64().unwrap_or(0) > 100,
        "{status}"
    );

    let (src, tgt) = (pair.source_owner().await, pair.target_master().await);
    let (a, b) = (
        fingerprint_tables(&src).await,
        fingerprint_tables(&tgt).await,
    );
    let differing: Vec<&String> = a.keys().filter(|k| a.get(*k) != b.get(*k)).collect();
    assert!(
        differing.is_empty(),
        "tables differ after catching up: {differing:?}"
    );
    assert_eq!(a.len(), b.len());
    let (ss, ts) = (sequence_values(&src).await, sequence_values(&tgt).await);
    for (name, (v, _)) in &ss {
        assert!(
            ts.get(name).is_some_and(|(t, _)| t >= v),
            "sequence {name}: target {:?} < source {v}",
            ts.get(name)
        );
    }
    pair.h2r(&["verify"]).expect_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_change_stops_apply_and_clean_removes_everything() {
    let pair = Pair::new("guard_clean").await;
    pair.source_owner()
        .await
        .batch_execute("CREATE TABLE public.g (id int PRIMARY KEY, v text); INSERT INTO public.g SELECT i, 'x' FROM generate_series(1, 100) i;")
        .await
        .expect("setup");
    pair.h2r(&["replicate", "--until", "caught-up"])
        .expect_code(0);
    // clean refuses while a replicate runs (unless --force).
    let mut child = pair.spawn_h2r(&["replicate", "--until", "forever"]);
    wait_following(&pair, &mut child).await;
    let refused = pair.h2r(&["clean"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("already running") && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    kill(child.id(), "-TERM");
    assert!(child.wait().expect("wait").success());

    let src = pair.source_owner().await;
    src.batch_execute("UPDATE public.g SET v = 'y' WHERE id = 1; ALTER TABLE public.g ADD COLUMN extra int DEFAULT 5;")
        .await
        .expect("ddl");
    let run = pair.h2r(&["replicate", "--until", "caught-up"]);
    run.expect_code(3);
    assert!(
        run.stderr.contains("public.g") && run.stderr.contains("column \"extra\""),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("apply the same DDL"), "{}", run.stderr);
    let status = pair.h2r(&["status", "--json"]).json();
    assert!(
        status["stopped_reason"]
            .as_str()
            .is_some_and(|r| r.contains("extra")),
        "{status}"
    );
    // Nothing was applied past the schema change.
    let v: String = pair
        .target_master()
        .await
        .query_one("SELECT v FROM public.g WHERE id = 1", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(v, "x");

    // clean: refuses under a running replicate, then removes every object of the tool.
    pair.h2r(&["clean"]).expect_code(0);
    pair.h2r(&["clean"]).expect_code(0);
    let left: i64 = src
        .query_one(
            "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'heroku2rds')
                  + (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'heroku2rds%')
                  + (SELECT count(*) FROM pg_proc WHERE proname LIKE 'capture%' AND pronamespace::regnamespace::text = 'heroku2rds')",
            &[],
        )
        .await
        .expect("catalog")
        .get(0);
    assert_eq!(left, 0, "objects of the tool left on the source");
    let t: i64 = pair
        .target_master()
        .await
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'heroku2rds'",
            &[],
        )
        .await
        .expect("catalog")
        .get(0);
    assert_eq!(t, 0, "state left on the target");
}

/// A writer that keeps going through server restarts (reconnecting), for fault tests.
async fn resilient_writer(pair_url: String, stop: Arc<AtomicBool>, ops: Arc<AtomicU64>) {
    let spec = heroku2rds::pg::conn::ConnSpec::parse(&pair_url, "source").expect("url");
    let mut rng = Rng::new(7);
    let mut client = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            match spec.connect().await {
                Ok(c) => client = Some(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let c = client.as_ref().expect("connected");
        let id = 1 + rng.next(20_000) as i64;
        let sql = match rng.next(5) {
            0 => format!("UPDATE public.r SET v = v + 1 WHERE id = {id}"),
            1 => format!("DELETE FROM public.r WHERE id = {id}"),
            2 => format!("INSERT INTO public.r VALUES ({id}, 0) ON CONFLICT (id) DO UPDATE SET v = -1"),
            3 => format!("INSERT INTO public.r2 VALUES ('k{id}', 'x') ON CONFLICT (k) DO UPDATE SET v = public.r2.v || 'y'"),
            _ => format!("UPDATE public.r SET id = id + 100000 WHERE id = {id}"),
        };
        match c.batch_execute(&sql).await {
            Ok(()) => {
                ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {}
            Err(_) => client = None,
        }
    }
}

/// Waits until the child (spawned just before) is following: the follow figures on the target
/// were written after it started.
async fn wait_following(pair: &Pair, child: &mut std::process::Child) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "replicate did not start following"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "replicate exited early"
        );
        let s = pair.h2r(&["status", "--json"]);
        if s.code == 0 {
            let age = s.json()["follow_updated_s"].as_f64();
            if age.is_some_and(|a| a < started.elapsed().as_secs_f64() - 0.5) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_and_server_restarts_during_follow_lose_nothing() {
    let pair = Pair::private("faults").await;
    pair.source_owner()
        .await
        .batch_execute(
            "CREATE TABLE public.r (id bigint PRIMARY KEY, v int NOT NULL);
             INSERT INTO public.r SELECT i, 0 FROM generate_series(1, 20000) i;
             CREATE TABLE public.r2 (k text PRIMARY KEY, v text);",
        )
        .await
        .expect("setup");
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(resilient_writer(
        pair.source_url(),
        stop.clone(),
        ops.clone(),
    ));

    let mut child = pair.spawn_h2r(&["replicate", "--until", "forever"]);
    wait_following(&pair, &mut child).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    child.kill().expect("kill -9 during follow");
    child.wait().expect("reap");

    let mut child = pair.spawn_h2r(&["replicate", "--until", "forever"]);
    wait_following(&pair, &mut child).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    pair.source.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pair.target.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    if child.try_wait().expect("wait").is_some() {
        let out = child.wait_with_output().expect("output");
        panic!(
            "replicate did not survive the restarts: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    assert!(ops.load(Ordering::SeqCst) > 100, "the writer ran");
    kill(child.id(), "-TERM");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("reconnecting"),
        "the restarts were noticed: {stderr}"
    );

    pair.h2r(&["replicate", "--until", "caught-up"])
        .expect_code(0);
    let (src, tgt) = (pair.source_owner().await, pair.target_master().await);
    assert_eq!(
        fingerprint_tables(&src).await,
        fingerprint_tables(&tgt).await
    );
    pair.h2r(&["verify"]).expect_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn capture_install_never_blocks_writers_longer_than_the_lock_timeout() {
    let pair = Pair::new("lock_wait").await;
    pair.source_owner()
        .await
        .batch_execute("CREATE TABLE public.lk (id serial PRIMARY KEY, v int); INSERT INTO public.lk (v) SELECT 1 FROM generate_series(1, 1000);")
        .await
        .expect("setup");
    // A long transaction holds a lock that trigger creation conflicts with.
    let holder = pair.source_owner().await;
    holder
        .batch_execute("BEGIN; INSERT INTO public.lk (v) VALUES (0);")
        .await
        .expect("hold");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let c = pair.source_owner().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                c.batch_execute("INSERT INTO public.lk (v) VALUES (2)")
                    .await
                    .expect("app insert");
                worst = worst.max(t0.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (worst, n)
        })
    };
    let child = pair.spawn_h2r(&["replicate", "--until", "copied", "--lock-timeout-ms", "300"]);
    // Keep the lock until the tool has met it (however long its schema dump takes on a busy
    // machine), given way (which it reports) and come back for it, then release it.
    let watcher = pair.source_owner().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    for want_waiting in [true, false, true] {
        loop {
            let waiting: bool = watcher
                .query_one(
                    "SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                     WHERE NOT l.granted AND a.application_name LIKE 'heroku2rds%'",
                    &[],
                )
                .await
                .expect("locks")
                .get(0);
            if waiting == want_waiting {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replicate never waited for the lock (or never came back for it)"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    holder.batch_execute("COMMIT").await.expect("release");
    let out = child.wait_with_output().expect("replicate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("public.lk is locked by pid"),
        "waits are reported: {stderr}"
    );
    stop.store(true, Ordering::SeqCst);
    let (worst, n) = writer.await.expect("writer");
    assert!(n > 20, "the application kept writing ({n} inserts)");
    assert!(
        worst < Duration::from_millis(1300),
        "an application insert waited {worst:?} (lock timeout 300 ms)"
    );

    pair.h2r(&["replicate", "--until", "caught-up"])
        .expect_code(0);
    let (src, tgt) = (pair.source_owner().await, pair.target_master().await);
    assert_eq!(
        fingerprint_tables(&src).await,
        fingerprint_tables(&tgt).await
    );
}
