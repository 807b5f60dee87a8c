//! `verify` finds each planted difference on the target and names the key.

use crate::support::binary::h2r_env;
use crate::support::clusters::{root, scratch_dir, Pair, SOURCE_OWNER, TARGET_MASTER};

/// (column, a value of its type that the planted row did not have).
const PLANTS: &[(&str, &str)] = &[
    ("mood", "'meh'"),
    ("moods", "'{meh,meh,meh}'"),
    ("pct", "42"),
    ("addr", "ROW('9 Planted Rd', 'X', '0')::public.address"),
    ("addrs", "ARRAY[ROW('p', 'q', 'r')::public.address]"),
    ("ints", "'{9,9,9}'"),
    ("texts", "'{planted}'"),
    ("i4r", "'[100,200)'"),
    ("tsr", "'[2001-01-01,2001-01-02)'"),
    ("fr", "'[9.5,9.75]'"),
    ("doc", "'{\"planted\": true}'"),
    ("email", "'PLANTED@example.org'"),
    ("attrs", "'planted=>1'"),
    ("raw", "'\\xdeadbeef'"),
    ("num", "12345.678"),
    ("f8", "3.14159"),
    ("f4", "2.5"),
    ("ts", "'1999-12-31 23:59:59'"),
    ("tstz", "'1999-12-31 23:59:59+00'"),
    ("d", "'1999-12-31'"),
    ("t", "'12:34:56'"),
    ("ttz", "'12:34:56+01'"),
    ("iv", "'42 days'"),
    ("ip", "'10.9.9.9'"),
    ("net", "'10.9.0.0/16'"),
    ("u", "'00000000-0000-0000-0000-000000000042'"),
    ("flag", "true"),
    ("note", "'planted'"),
];

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_every_planted_difference() {
    let pair = Pair::new("verify_plants").await;
    pair.load_rich_fixture().await;
    pair.source_owner()
        .await
        .batch_execute(
            "CREATE TABLE public.plain (id int PRIMARY KEY, v text);
             INSERT INTO public.plain SELECT i, 'v' || i FROM generate_series(1, 5000) i;
             UPDATE public.plain SET v = '' WHERE id = 77;
             CREATE TABLE public.nokey (a int, b text);
             INSERT INTO public.nokey SELECT i % 50, 'row ' || i FROM generate_series(1, 500) i;",
        )
        .await
        .expect("extra tables");
    pair.h2r(&["replicate", "--keyless", "recopy"])
        .expect_code(0);
    pair.h2r(&["verify"]).expect_code(0);

    let tgt = pair.target_master().await;
    tgt.batch_execute("SET session_replication_role = replica")
        .await
        .expect("replica role");
    let mut expected: Vec<(String, String, &str)> = Vec::new();
    let mut used: Vec<i32> = vec![-1];
    let mut zoo_keys: Vec<String> = Vec::new();
    for (col, value) in PLANTS {
        let id: i32 = tgt
            .query_one(
                &format!(
                    "SELECT min(id) FROM public.type_zoo WHERE {col} IS DISTINCT FROM {value} AND NOT (id = ANY($1))"
                ),
                &[&used],
            )
            .await
            .unwrap_or_else(|e| panic!("pick a row for {col}: {e}"))
            .get(0);
        used.push(id);
        tgt.execute(
            &format!("UPDATE public.type_zoo SET {col} = {value} WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap_or_else(|e| panic!("plant {col}: {e}"));
        zoo_keys.push(format!("id={id}"));
    }
    tgt.batch_execute(
        r#"DELETE FROM public.plain WHERE id = 10;
           INSERT INTO public.plain VALUES (900001, 'extra');
           UPDATE public.plain SET v = NULL WHERE id = 77;
           UPDATE public.documents SET body = overlay(body placing 'X' from 60000 for 1) WHERE id = 1;
           UPDATE "Sales Data"."Order Lines" SET "Description" = 'planted'
            WHERE ("Order ID", "Line No") = (SELECT "Order ID", "Line No" FROM "Sales Data"."Order Lines" ORDER BY 1, 2 LIMIT 1);
           UPDATE "Sales Data"."Regions" SET "Display Name" = 'planted' WHERE "Region Code" = 'q''uote';
           UPDATE public.nokey SET b = 'planted' WHERE ctid = (SELECT min(ctid) FROM public.nokey);"#,
    )
    .await
    .expect("plant differences");
    let first_line: (i32, i32) = tgt
        .query_one(
            r#"SELECT "Order ID", "Line No" FROM "Sales Data"."Order Lines" ORDER BY 1, 2 LIMIT 1"#,
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("first line");
    expected.push(("public.plain".into(), "id=10".into(), "missing_on_target"));
    expected.push(("public.plain".into(), "id=900001".into(), "extra_on_target"));
    expected.push(("public.plain".into(), "id=77".into(), "changed"));
    expected.push(("public.documents".into(), "id=1".into(), "changed"));
    expected.push((
        "Sales Data.Order Lines".into(),
        format!("Order ID,Line No=({},{})", first_line.0, first_line.1),
        "changed",
    ));
    expected.push((
        "Sales Data.Regions".into(),
        "Region Code=q'uote".into(),
        "changed",
    ));

    let run = pair.h2r(&["verify", "--json"]);
    run.expect_code(1);
    let report = run.json();
    assert_eq!(report["equal"], false);
    let tables = report["tables"].as_array().expect("tables");
    let table = |name: &str| {
        tables
            .iter()
            .find(|t| t["table"] == name)
            .unwrap_or_else(|| panic!("{name} in report"))
    };
    for (t, key, kind) in &expected {
        let diffs = table(t)["differences"].as_array().expect("differences");
        assert!(
            diffs
                .iter()
                .any(|d| d["key"] == key.as_str() && d["kind"] == *kind),
            "{t}: expected {kind} {key} in {}",
            table(t)
        );
    }
    // type_zoo: one changed row per column kind; all found, the first 20 reported.
    let zoo = table("public.type_zoo");
    assert_eq!(
        zoo["differences_found"],
        PLANTS.len(),
        "exactly the planted rows differ: {zoo}"
    );
    let reported = zoo["differences"].as_array().expect("zoo");
    assert_eq!(reported.len(), 20);
    for d in reported {
        assert!(
            zoo_keys.iter().any(|k| d["key"] == k.as_str()) && d["kind"] == "changed",
            "{d}"
        );
    }
    for smallest in ["id=1", "id=2", "id=9"] {
        assert!(
            reported.iter().any(|d| d["key"] == smallest),
            "{smallest} reported first: {zoo}"
        );
    }
    let nokey = table("public.nokey");
    assert_eq!(
        nokey["differences"].as_array().expect("nokey").len(),
        2,
        "one row missing, one extra: {nokey}"
    );
    // Tables without plants stay equal.
    for clean in [
        "public.customers",
        "public.events_2024",
        "public.measurements",
        "billing.invoices",
    ] {
        assert!(
            table(clean)["differences"]
                .as_array()
                .expect("d")
                .is_empty(),
            "{clean}"
        );
        assert_eq!(table(clean)["mismatched_ranges"], 0, "{clean}");
    }
    // The human report names the keys too.
    let text = pair.h2r(&["verify"]);
    text.expect_code(1);
    assert!(
        text.stdout.contains("missing on target: id=10"),
        "{}",
        text.stdout
    );
}

/// Passwords need not be in URLs or arguments: a pg service file names the source, the password
/// file holds the passwords (used only when no one else may read it).
#[tokio::test(flavor = "multi_thread")]
async fn urls_from_a_service_file_and_a_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let pair = Pair::new("verify_files").await;
    pair.load_rich_fixture().await;
    pair.h2r(&["replicate", "--until", "copied"]).expect_code(0);
    let dir = scratch_dir("libpq-files");
    let services = dir.join("pg_service.conf");
    std::fs::write(
        &services,
        format!(
            "[h2r_source]\nhost=localhost\nport={}\ndbname={}\nuser={SOURCE_OWNER}\nsslmode=verify-full\nsslrootcert={}\n",
            pair.source.port,
            pair.name,
            root().ca.display()
        ),
    )
    .unwrap();
    let pgpass = dir.join("pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "localhost:{}:*:{SOURCE_OWNER}:{pw}\nlocalhost:{}:{}:{TARGET_MASTER}:{pw}\n",
            pair.source.port,
            pair.target.port,
            pair.name,
            pw = root().password
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let target = format!(
        "postgresql://{TARGET_MASTER}@localhost:{}/{}?sslmode=verify-full&sslrootcert={}",
        pair.target.port,
        pair.name,
        root().ca.display()
    );
    let env = |pass: &std::path::Path| {
        vec![
            (
                "HEROKU2RDS_SOURCE_URL",
                "postgresql://?service=h2r_source".to_string(),
            ),
            ("HEROKU2RDS_TARGET_URL", target.clone()),
            ("PGSERVICEFILE", services.display().to_string()),
            ("PGPASSFILE", pass.display().to_string()),
        ]
    };
    let run = |pass: &std::path::Path| h2r_env(&["verify"], &env(pass));
    let ok = run(&pgpass);
    ok.expect_code(0);
    assert!(ok.stdout.contains("source and target are equal"), "{ok:?}");
    assert!(!format!("{}{}", ok.stdout, ok.stderr).contains(&root().password));

    // A password file others may read is ignored, as libpq does: no password, said clearly.
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = run(&pgpass);
    refused.expect_code(2);
    assert!(refused.stderr.contains("chmod 0600"), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("asks for a password and none was given"),
        "{}",
        refused.stderr
    );

    // An unknown service is a usage error naming it.
    let e = h2r_env(
        &["status"],
        &[
            ("HEROKU2RDS_TARGET_URL", "postgresql://?service=nope"),
            ("PGSERVICEFILE", services.to_str().unwrap()),
        ],
    );
    e.expect_code(2);
    assert!(
        e.stderr.contains("service \"nope\" is not defined"),
        "{}",
        e.stderr
    );
}
