//! Bad input: a clear message naming the problem and the fix, the contract's exit code, no
//! secret in the output, and nothing changed on either server.

use crate::support::binary::h2r;
use crate::support::clusters::{root, Pair, INTRUDER, SOURCE_OWNER};
use crate::support::host::free_port;

async fn assert_untouched(pair: &Pair) {
    let tgt = pair.target_master().await;
    let n: i64 = tgt
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'",
            &[],
        )
        .await
        .expect("count target relations")
        .get(0);
    assert_eq!(n, 0, "the target was changed");
    let schemas: i64 = tgt
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'heroku2rds'",
            &[],
        )
        .await
        .expect("schemas")
        .get(0);
    assert_eq!(schemas, 0, "the target got a heroku2rds schema");
    let src = pair.source_owner().await;
    let s: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'heroku2rds'",
            &[],
        )
        .await
        .expect("schemas")
        .get(0);
    assert_eq!(s, 0, "the source got a heroku2rds schema");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let pair = Pair::new("bad_input").await;
    pair.source_owner()
        .await
        .batch_execute(
            "CREATE TABLE public.ok (id int PRIMARY KEY, v text); INSERT INTO public.ok VALUES (1, 'a');
             CREATE TABLE public.nokey (a int, b text); INSERT INTO public.nokey VALUES (1, 'x');
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO intruder;",
        )
        .await
        .expect("setup");
    let pw = root().password.clone();
    let (sp, tp) = (pair.source.port, pair.target.port);
    let ca = root().ca.display().to_string();
    let wrong_ca = root().wrong_ca.display().to_string();
    let db = pair.name.clone();
    let src = pair.source_url();
    let tgt = pair.target_url();
    let closed_port = free_port();
    let with = |user: &str, pass: &str, port: u16, dbname: &str, extra: &str| {
        format!("postgresql://{user}:{pass}@localhost:{port}/{dbname}?sslmode=verify-full&sslrootcert={ca}{extra}")
    };

    struct Case {
        name: &'static str,
        args: Vec<String>,
        code: i32,
        says: &'static [&'static str],
    }
    let replicate = |s: &str, t: &str| {
        vec![
            "replicate".into(),
            "--source".into(),
            s.to_string(),
            "--target".into(),
            t.to_string(),
        ]
    };
    let cases = vec![
        Case {
            name: "malformed URL",
            args: replicate(&format!("postgres//{SOURCE_OWNER}:{pw}@localhost/{db}"), &tgt),
            code: 2,
            says: &["not a valid PostgreSQL URL", "postgresql://USER:PASSWORD@HOST"],
        },
        Case {
            name: "unknown sslmode",
            args: replicate(&src.replace("verify-full", "maybe"), &tgt),
            code: 2,
            says: &["unknown sslmode", "verify-full"],
        },
        Case {
            name: "unreachable host",
            args: replicate(&with(SOURCE_OWNER, &pw, closed_port, &db, ""), &tgt),
            code: 5,
            says: &["cannot connect", "check the host and port"],
        },
        Case {
            name: "wrong password",
            args: replicate(&with(SOURCE_OWNER, "not-the-password", sp, &db, ""), &tgt),
            code: 4,
            says: &["password authentication failed", "check the password"],
        },
        Case {
            name: "missing database",
            args: replicate(&src, &with("rds_master", &pw, tp, "no_such_db", "")),
            code: 2,
            says: &["database \"no_such_db\" does not exist", "check the database name"],
        },
        Case {
            name: "plaintext to a TLS-only server",
            args: replicate(&format!("postgresql://{SOURCE_OWNER}:{pw}@localhost:{sp}/{db}?sslmode=disable"), &tgt),
            code: 4,
            says: &["refused the connection", "sslmode=require"],
        },
        Case {
            name: "certificate from an unknown CA",
            args: replicate(&src.replace(&ca, &wrong_ca), &tgt),
            code: 4,
            says: &["TLS failed", "sslrootcert"],
        },
        Case {
            name: "verify-full without a root certificate",
            args: replicate(&format!("postgresql://{SOURCE_OWNER}:{pw}@localhost:{sp}/{db}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"), &tgt),
            code: 2,
            says: &["needs root certificates", "sslrootcert="],
        },
        Case {
            name: "source role does not own the tables",
            args: replicate(&with(INTRUDER, &pw, sp, &db, ""), &tgt),
            code: 3,
            says: &["does not own 2 table(s)", "default credential"],
        },
        Case {
            name: "keyless table with --keyless error",
            args: replicate(&src, &tgt),
            code: 3,
            says: &["public.nokey has no primary key", "ALTER TABLE \"public\".\"nokey\" ADD COLUMN", "--keyless recopy"],
        },
        Case {
            name: "zero jobs",
            args: [replicate(&src, &tgt), vec!["--jobs".into(), "0".into()]].concat(),
            code: 2,
            says: &["--jobs must be at least 1"],
        },
        Case {
            name: "status of a target without a migration",
            args: vec!["status".into(), "--target".into(), tgt.clone()],
            code: 2,
            says: &["holds no heroku2rds migration"],
        },
        Case {
            name: "unknown --keyless value",
            args: [replicate(&src, &tgt), vec!["--keyless".into(), "sometimes".into()]].concat(),
            code: 2,
            says: &["invalid value 'sometimes'"],
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let run = h2r(&args);
        let all = format!("{}{}", run.stdout, run.stderr);
        if run.code != case.code {
            failures.push(format!(
                "{}: exit {} instead of {}: {all}",
                case.name, run.code, case.code
            ));
        }
        for s in case.says {
            if !all.contains(s) {
                failures.push(format!("{}: output lacks {s:?}: {all}", case.name));
            }
        }
        if all.contains(&pw) || all.contains("not-the-password") {
            failures.push(format!("{}: a password leaked: {all}", case.name));
        }
        assert_untouched(&pair).await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // A non-empty target without a migration is refused.
    pair.target_master()
        .await
        .batch_execute("CREATE TABLE public.stray (id int)")
        .await
        .expect("stray");
    let run = pair.h2r(&["replicate", "--keyless", "exclude"]);
    run.expect_code(2);
    assert!(run.stderr.contains("is not empty"), "{}", run.stderr);
    let n: i64 = pair
        .target_master()
        .await
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'heroku2rds'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_reports_every_kind_of_finding() {
    let pair = Pair::new("preflight_report").await;
    pair.source_owner()
        .await
        .batch_execute(
            "CREATE TABLE public.ok (id int PRIMARY KEY, v text, doubled int GENERATED ALWAYS AS (id * 2) STORED);
             INSERT INTO public.ok (id, v) SELECT i, 'v' FROM generate_series(1, 1000) i;
             CREATE TABLE public.nokey (a int, b text);
             CREATE TABLE public.uniq (a int NOT NULL, b int);
             CREATE UNIQUE INDEX uniq_a ON public.uniq (a);
             CREATE TABLE public.nullable_uniq (a int, b int);
             CREATE UNIQUE INDEX nullable_uniq_a ON public.nullable_uniq (a);
             CREATE UNLOGGED TABLE public.cache (k text PRIMARY KEY);
             CREATE TABLE public.p (id int, d date, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);
             CREATE TABLE public.p_default PARTITION OF public.p DEFAULT;
             SELECT lo_from_bytea(0, 'large object');
             ANALYZE;",
        )
        .await
        .expect("setup");
    // sslmode=require (TLS without verification, as Heroku's URLs) connects too.
    let require = pair
        .source_url()
        .split("?")
        .next()
        .expect("url")
        .to_string()
        + "?sslmode=require";
    let plain = h2r(&["preflight", "--source", &require]);
    plain.expect_code(3);
    assert!(plain.stdout.contains("BLOCKING"), "{}", plain.stdout);
    // A password on the command line is visible to every user: warned, without repeating it.
    assert!(
        plain
            .stderr
            .contains("--source carries a password on the command line")
            && plain.stderr.contains("HEROKU2RDS_SOURCE_URL"),
        "{}",
        plain.stderr
    );
    assert!(!plain.stderr.contains(&root().password));
    let run = pair.h2r(&["preflight", "--json"]);
    assert!(
        !run.stderr.contains("on the command line"),
        "{}",
        run.stderr
    );
    run.expect_code(3);
    let j = run.json();
    assert_eq!(j["blocked"], true);
    let findings = j["report"]["findings"].as_array().expect("findings");
    let has = |code: &str, severity: &str, text: &str| {
        findings.iter().any(|f| {
            f["code"] == code
                && f["severity"] == severity
                && f["message"].as_str().unwrap_or("").contains(text)
        })
    };
    assert!(
        has("keyless_table", "blocking", "public.nokey"),
        "{findings:?}"
    );
    assert!(
        has("keyless_table", "blocking", "public.nullable_uniq"),
        "a unique index over nullable columns is no key"
    );
    assert!(
        !has("keyless_table", "blocking", "public.uniq"),
        "a unique index over NOT NULL columns is a key"
    );
    assert!(has("large_objects", "blocking", "1 large object"));
    assert!(has("unlogged_table", "warning", "public.cache"));
    assert!(has("generated_columns", "info", "public.ok"));
    assert!(has("partitioned_tables", "info", "public.p"));
    let facts = &j["report"]["facts"];
    assert!(facts["source"]["free_connections"].as_i64().unwrap_or(0) > 100);
    assert_eq!(facts["source"]["major"], facts["target"]["major"]);
    let ok = facts["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["name"] == "ok")
        .expect("ok table");
    assert_eq!(ok["est_rows"], 1000);
    assert!(ok["bytes"].as_i64().unwrap_or(0) > 8192);
    assert_eq!(ok["key"], serde_json::json!(["id"]));
    let uniq = facts["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["name"] == "uniq")
        .expect("uniq");
    assert_eq!(
        uniq["key_kind"],
        serde_json::json!({"UniqueIndex": "uniq_a"})
    );
    // The human report shows the fix; with the blockers removed, preflight passes.
    let text = pair.h2r(&["preflight"]);
    text.expect_code(3);
    assert!(
        text.stdout.contains("BLOCKING") && text.stdout.contains("fix: ALTER TABLE"),
        "{}",
        text.stdout
    );
    pair.source_owner()
        .await
        .batch_execute(
            "SELECT lo_unlink(oid) FROM pg_largeobject_metadata; DROP TABLE public.nokey;
             ALTER TABLE public.nullable_uniq ALTER COLUMN a SET NOT NULL;",
        )
        .await
        .expect("fix");
    pair.h2r(&["preflight"]).expect_code(0);
}
