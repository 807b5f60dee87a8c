//! The copy path against a rich schema, resumption after kill -9, and status while running.

use std::time::{Duration, Instant};

use crate::support::clusters::{fingerprint, fingerprint_tables, sequence_values, Pair};

/// Extra tables big enough to be split into several integer-key and ctid chunks.
const BIG_TABLES: &str = r#"
CREATE TABLE public.big_ints (id bigint PRIMARY KEY, payload text NOT NULL, n numeric);
INSERT INTO public.big_ints SELECT i, repeat(md5(i::text), 4), i * 1.5 FROM generate_series(1, 60000) i;
CREATE TABLE public.big_uuids (id uuid PRIMARY KEY, body text);
INSERT INTO public.big_uuids SELECT md5('u' || i)::uuid, repeat(md5(i::text), 6) FROM generate_series(1, 30000) i;
ANALYZE public.big_ints; ANALYZE public.big_uuids;
"#;

#[tokio::test(flavor = "multi_thread")]
async fn rich_schema_copies_and_verifies() {
    let pair = Pair::new("rich_copy").await;
    pair.load_rich_fixture().await;
    pair.source_owner()
        .await
        .batch_execute(BIG_TABLES)
        .await
        .expect("big tables");

    let run = pair.h2r(&[
        "replicate",
        "--until",
        "copied",
        "--jobs",
        "3",
        "--chunk-mb",
        "1",
    ]);
    run.expect_code(0);
    assert!(run.stdout.contains("the target is complete"), "{run:?}");

    // Independent comparison of every table and materialized view, and of sequences.
    let (src, tgt) = (pair.source_owner().await, pair.target_master().await);
    let (a, b) = (fingerprint(&src).await, fingerprint(&tgt).await);
    assert!(a.len() >= 20, "fixture has only {} relations", a.len());
    assert_eq!(a, b, "source and target differ");
    assert!(
        a.get("public.audit_log").is_some_and(|(n, _)| *n > 0),
        "audit rows must exist on the source"
    );
    assert!(
        a.get("billing.invoice_totals").is_some_and(|(n, _)| *n > 0),
        "materialized view refreshed"
    );
    assert_eq!(sequence_values(&src).await, sequence_values(&tgt).await);

    // Chunking really happened, each chunk is recorded once and done.
    let chunks = tgt
        .query(
            "SELECT t.table_name, c.kind, count(*), count(c.done_at), count(DISTINCT c.chunk_no)
               FROM heroku2rds.chunks c JOIN heroku2rds.tables t ON t.id = c.table_id GROUP BY 1, 2",
            &[],
        )
        .await
        .expect("chunks");
    let find = |name: &str| {
        chunks
            .iter()
            .find(|r| r.get::<_, String>(0) == name)
            .expect(name)
    };
    let ints = find("big_ints");
    assert_eq!(ints.get::<_, String>(1), "int");
    assert!(ints.get::<_, i64>(2) > 2, "big_ints in several chunks");
    let uuids = find("big_uuids");
    assert_eq!(uuids.get::<_, String>(1), "ctid");
    assert!(uuids.get::<_, i64>(2) > 2, "big_uuids in several chunks");
    for r in &chunks {
        assert_eq!(r.get::<_, i64>(2), r.get::<_, i64>(3), "every chunk done");
        assert_eq!(r.get::<_, i64>(2), r.get::<_, i64>(4), "every chunk once");
    }
    // Indexes, constraints and triggers exist on the target, and the key constraints are valid.
    let n: i64 = tgt
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal",
            &[],
        )
        .await
        .expect("triggers")
        .get(0);
    assert!(n >= 2, "user triggers restored after the copy");
    let fks: i64 = tgt
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated",
            &[],
        )
        .await
        .expect("fks")
        .get(0);
    assert!(fks >= 3, "foreign keys restored and validated: {fks}");

    // verify agrees, by its own method.
    pair.h2r(&["verify"]).expect_code(0);
    let report = pair.h2r(&["verify", "--json"]);
    report.expect_code(0);
    let j = report.json();
    assert_eq!(j["equal"], true);
    let big = j["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == "public.big_ints")
        .expect("big_ints");
    assert_eq!(big["source_rows"], 60000);
    assert_eq!(big["source_key_range"], serde_json::json!([1, 60000]));

    // status after success, and a re-run that does nothing.
    let status = pair.h2r(&["status", "--json"]);
    status.expect_code(0);
    let s = status.json();
    assert_eq!(s["phase"], "copied");
    assert_eq!(s["chunks_done"], s["chunks_total"]);
    let again = pair.h2r(&["replicate", "--until", "copied"]);
    again.expect_code(0);
    assert!(again.stdout.contains("nothing to do"), "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_during_copy_then_resume_copies_each_chunk_once() {
    let pair = Pair::new("kill_resume").await;
    pair.source_owner()
        .await
        .batch_execute(
            "CREATE TABLE public.t (id int PRIMARY KEY, body text NOT NULL);
             INSERT INTO public.t SELECT i, repeat(md5(i::text), 8) FROM generate_series(1, 400000) i;
             CREATE TABLE public.k (a text, b int, payload text, PRIMARY KEY (a, b));
             INSERT INTO public.k SELECT 'k' || (i % 100), i, repeat('x', 200) FROM generate_series(1, 100000) i;
             ANALYZE;",
        )
        .await
        .expect("data");

    let mut child = pair.spawn_h2r(&[
        "replicate",
        "--until",
        "copied",
        "--jobs",
        "2",
        "--chunk-mb",
        "2",
    ]);
    // Wait until some chunks are done (read by `status` from another process), then kill -9.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no progress seen");
        if child.try_wait().expect("wait").is_some() {
            panic!("replicate finished before it could be killed: make the data bigger");
        }
        let s = pair.h2r(&["status", "--json"]);
        if s.code == 0 {
            let j = s.json();
            let done = j["chunks_done"].as_i64().unwrap_or(0);
            if done >= 3 {
                assert!(
                    j["runner"]
                        .as_str()
                        .is_some_and(|r| r.contains("replicate")),
                    "{j}"
                );
                assert!(j["chunks_total"].as_i64().unwrap_or(0) > done);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second replicate against the same target refuses, naming the first.
    let second = pair.h2r(&["replicate", "--until", "copied"]);
    second.expect_code(2);
    assert!(
        second.stderr.contains("already running")
            && second.stderr.contains(&format!("pid {}", child.id())),
        "{}",
        second.stderr
    );
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    let tgt = pair.target_master().await;
    let before: i64 = tgt
        .query_one(
            "SELECT count(*) FROM heroku2rds.chunks WHERE done_at IS NOT NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    let total: i64 = tgt
        .query_one("SELECT count(*) FROM heroku2rds.chunks", &[])
        .await
        .expect("count")
        .get(0);
    assert!(
        before < total,
        "the kill happened mid-copy ({before}/{total})"
    );
    // Rows on the target are exactly those of the chunks recorded done: nothing half-copied.
    let recorded: i64 = tgt
        .query_one(
            "SELECT coalesce(sum(rows), 0)::bigint FROM heroku2rds.chunks",
            &[],
        )
        .await
        .expect("sum")
        .get(0);
    let present: i64 = tgt
        .query_one(
            "SELECT (SELECT count(*) FROM public.t) + (SELECT count(*) FROM public.k)",
            &[],
        )
        .await
        .expect("count rows")
        .get(0);
    assert_eq!(
        recorded, present,
        "rows on the target match the chunks recorded done"
    );

    let run = pair.h2r(&[
        "replicate",
        "--until",
        "copied",
        "--jobs",
        "2",
        "--chunk-mb",
        "2",
    ]);
    run.expect_code(0);
    assert!(run.stderr.contains("already done"), "{}", run.stderr);
    let done: Vec<(i64, i64)> = tgt
        .query("SELECT count(*), count(DISTINCT (table_id, chunk_no)) FROM heroku2rds.chunks WHERE done_at IS NOT NULL", &[])
        .await
        .expect("chunks")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(done, vec![(total, total)]);
    // No row twice (the primary keys were built after the copy, so duplicates would have failed
    // them) and the content is identical.
    let src = pair.source_owner().await;
    assert_eq!(fingerprint(&src).await, fingerprint(&tgt).await);
    pair.h2r(&["verify"]).expect_code(0);
}

/// Many tables against a target whose shared lock table is too small for the schema's one
/// transaction: refused before anything changes on either side (no capture on the source), with
/// the setting to use; with it, the copy completes and both sides are equal.
#[tokio::test(flavor = "multi_thread")]
async fn many_tables_beyond_the_targets_lock_budget_are_refused_then_fit_once_it_is_raised() {
    let pair = Pair::private("lock_budget").await;
    // 10 x (200 connections + 0 prepared) = 2,000 lock slots.
    let set_locks = |n: i64| {
        let target = pair.target;
        async move {
            target
                .admin("postgres")
                .await
                .batch_execute(&format!("ALTER SYSTEM SET max_locks_per_transaction = {n}"))
                .await
                .expect("set max_locks_per_transaction");
            target.restart();
        }
    };
    set_locks(10).await;
    // 700 tables, each with a TOAST table and its index: about 2,100 locks.
    pair.source_owner()
        .await
        .batch_execute(
            "DO $$ BEGIN FOR i IN 1..700 LOOP
               EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, note text); \
                               INSERT INTO t%s SELECT g, md5(g::text) FROM generate_series(1, 3) g', i, i);
             END LOOP; END $$;",
        )
        .await
        .expect("tables");

    let refused = pair.h2r(&["replicate", "--until", "copied"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused.stderr.contains("about 2100 locks") && refused.stderr.contains("holds 2000"),
        "{}",
        refused.stderr
    );
    let need: i64 = refused
        .stderr
        .split("max_locks_per_transaction = ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no setting in {}", refused.stderr));
    let src = pair.source.admin(&pair.name).await;
    let captured: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'heroku2rds'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(captured, 0, "capture was installed on the source");
    let tgt = pair.target.admin(&pair.name).await;
    let on_target: i64 = tgt
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_target, 0, "the target was changed");
    drop(tgt);

    set_locks(need).await;
    pair.h2r(&["replicate", "--until", "copied"]).expect_code(0);
    let tgt = pair.target.admin(&pair.name).await;
    assert_eq!(
        fingerprint_tables(&src).await,
        fingerprint_tables(&tgt).await
    );
    let copied: i64 = tgt
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(copied, 700);
}
