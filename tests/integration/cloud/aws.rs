//! plan / provision / teardown against the AWS emulator (moto server from localstack/), checked
//! with an independent boto3 inventory (aws_tool.py), and under IAM enforcement with exactly the
//! policy in policies/operator.json.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::binary::{h2r_env, Run};
use crate::support::clusters::{root, scratch_dir, Pair};
use crate::support::moto::{
    aws_env, enforce_iam, iam_user, inventory, moto, python, tool, unique, Moto, ADMIN_POLICY,
    OPERATOR,
};
use crate::support::repo_file;

fn run(env: &[(String, String)], extra: &[(&str, &str)], args: &[&str]) -> Run {
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(extra);
    h2r_env(args, &all)
}

fn provision_args<'a>(name: &'a str, key: &'a str) -> Vec<&'a str> {
    vec![
        "provision",
        "--name",
        name,
        "--replica-region",
        "us-east-1",
        "--operator-cidr",
        OPERATOR,
        "--ssh-public-key",
        key,
        "--yes",
        "--json",
    ]
}

fn ssh_key() -> PathBuf {
    static KEY: OnceLock<PathBuf> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = scratch_dir("ssh");
        let key = dir.join("id_ed25519");
        let ok = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "heroku2rds-test",
                "-f",
            ])
            .arg(&key)
            .status()
            .expect("ssh-keygen (openssh-client)");
        assert!(ok.success());
        dir.join("id_ed25519.pub")
    })
    .clone()
}

fn count_outcomes(run: &Run, outcome: &str) -> usize {
    run.json()["result"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["outcome"] == outcome)
        .count()
}

fn assert_rules_closed(inv: &serde_json::Map<String, Value>, name: &str) {
    let worker_sg = inv[&format!("us-east-2/sg/heroku2rds-{name}-worker")]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (k, v) in inv.iter().filter(|(k, _)| k.contains("/sg/")) {
        for rule in v["ingress"].as_array().unwrap() {
            let r = rule.as_str().unwrap();
            assert!(
                !r.ends_with(" 0.0.0.0/0") && !r.ends_with(" ::/0"),
                "{k} opens {r}"
            );
        }
    }
    let db: Vec<&str> = inv[&format!("us-east-2/sg/heroku2rds-{name}-db")]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let mut want = vec![format!("5432 {OPERATOR}"), format!("5432 {worker_sg}")];
    want.sort();
    assert_eq!(
        db, want,
        "the database group admits exactly the worker group and the operator"
    );
    let worker: Vec<&str> = inv[&format!("us-east-2/sg/heroku2rds-{name}-worker")]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        worker,
        vec![format!("22 {OPERATOR}")],
        "SSH only from the operator, only with a key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn provision_twice_then_teardown_in_steps() {
    let pair = Pair::new("aws_twice").await;
    let m = moto();
    let env = aws_env(m, "test", "test");
    let name = unique("twice");
    let key = ssh_key();
    let src = pair.source_url();
    let extra = [("HEROKU2RDS_SOURCE_URL", src.as_str())];

    // The plan before anything exists: everything to create.
    let plan = run(
        &env,
        &extra,
        &[
            "plan",
            "--name",
            &name,
            "--replica-region",
            "us-east-1",
            "--operator-cidr",
            OPERATOR,
            "--json",
        ],
    );
    plan.expect_code(0);
    let items = plan.json()["items"].as_array().unwrap().clone();
    assert!(
        items
            .iter()
            .all(|i| i["action"] == "create" || i["resource"] == "VPC and subnets"),
        "{items:?}"
    );
    assert_eq!(
        items
            .iter()
            .filter(|i| i["resource"] == "VPC and subnets" && i["action"] == "exists")
            .count(),
        2,
        "the default VPC of each region: {items:?}"
    );
    assert!(
        inventory(&env, &name).is_empty(),
        "plan must not create anything"
    );

    let first = run(&env, &extra, &provision_args(&name, key.to_str().unwrap()));
    first.expect_code(0);
    assert!(
        !first.stdout.contains(&pair.source_url()),
        "the source URL leaked into the output"
    );
    let inv1 = inventory(&env, &name);
    let kinds = |inv: &serde_json::Map<String, Value>, kind: &str| {
        inv.keys().filter(|k| k.contains(kind)).count()
    };
    assert_eq!(kinds(&inv1, "/sg/"), 3, "{inv1:#?}");
    assert_eq!(kinds(&inv1, "/rds/"), 2, "{inv1:#?}");
    assert_eq!(kinds(&inv1, "/instance/"), 1, "{inv1:#?}");
    assert_eq!(kinds(&inv1, "/secret/"), 1);
    assert_eq!(kinds(&inv1, "/paramgroup/"), 2, "one per region");
    assert_eq!(kinds(&inv1, "/subnetgroup/"), 2, "one per region");
    assert_eq!(kinds(&inv1, "/keypair/"), 1);
    let bucket = inv1
        .iter()
        .find(|(k, _)| k.starts_with("s3/"))
        .expect("bucket")
        .1
        .clone();
    assert_eq!(bucket["public_access_blocked"], true);
    assert_eq!(bucket["encryption"], "AES256");
    assert_eq!(
        bucket["objects"].as_array().unwrap().len(),
        2,
        "binary and job: {bucket}"
    );
    let primary = &inv1[&format!("us-east-2/rds/heroku2rds-{name}")];
    assert_eq!(primary["encrypted"], true);
    assert_eq!(primary["storage_type"], "gp3");
    assert_rules_closed(&inv1, &name);
    assert!(count_outcomes(&first, "created") >= 13, "{}", first.stdout);

    // The user-data the worker got: no secret in it.
    let secret_password = {
        let out = Command::new(python())
            .args(["-c", &format!(
                "import boto3,json;print(json.loads(boto3.client('secretsmanager',region_name='us-east-2').get_secret_value(SecretId='heroku2rds/{name}/rds-master')['SecretString'])['password'])"
            )])
            .envs(env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(secret_password.len(), 32);
    assert!(!first.stdout.contains(&secret_password) && !first.stderr.contains(&secret_password));
    let instance = inv1
        .keys()
        .find(|k| k.contains("/instance/"))
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let user_data = Command::new(python())
        .args(["-c", &format!(
            "import boto3,base64;print(base64.b64decode(boto3.client('ec2',region_name='us-east-2').describe_instance_attribute(InstanceId='{instance}',Attribute='userData')['UserData']['Value']).decode())"
        )])
        .envs(env.iter().map(|(k, v)| (k.clone(), v.clone())))
        .output()
        .unwrap();
    let user_data = String::from_utf8(user_data.stdout).unwrap();
    assert!(user_data.starts_with("#!/bin/bash"), "{user_data}");
    assert!(user_data.contains("readonly PG_MAJOR=15"), "{user_data}");
    assert!(
        !user_data.contains(&secret_password),
        "the master password is in the user-data"
    );
    assert!(
        !user_data.contains(&root().password),
        "the source password is in the user-data"
    );

    // Second run: nothing new.
    let second = run(&env, &extra, &provision_args(&name, key.to_str().unwrap()));
    second.expect_code(0);
    assert_eq!(count_outcomes(&second, "created"), 0, "{}", second.stdout);
    assert_eq!(
        inventory(&env, &name),
        inv1,
        "the second provision changed the inventory"
    );

    // The operator moved: the plan shows the change, provision swaps the rule.
    let moved = run(
        &env,
        &extra,
        &[
            "plan",
            "--name",
            &name,
            "--replica-region",
            "us-east-1",
            "--operator-cidr",
            "198.51.100.9",
            "--ssh-public-key",
            key.to_str().unwrap(),
        ],
    );
    moved.expect_code(0);
    assert!(
        moved.stdout.contains("allow 5432 from 198.51.100.9/32")
            && moved
                .stdout
                .contains(&format!("revoke 5432 from {OPERATOR}")),
        "{}",
        moved.stdout
    );

    // Teardown: the worker side goes, the database side stays; twice is harmless.
    let td = run(
        &env,
        &[],
        &[
            "teardown",
            "--name",
            &name,
            "--replica-region",
            "us-east-1",
            "--yes",
        ],
    );
    td.expect_code(0);
    assert!(
        td.stdout.contains("kept:") && td.stdout.contains("RDS primary"),
        "{}",
        td.stdout
    );
    let inv2 = inventory(&env, &name);
    let left: Vec<&String> = inv2.keys().collect();
    assert_eq!(kinds(&inv2, "/instance/"), 0, "{left:?}");
    assert_eq!(kinds(&inv2, "/keypair/"), 0, "{left:?}");
    assert!(
        !inv2.contains_key(&format!("us-east-2/sg/heroku2rds-{name}-worker")),
        "{left:?}"
    );
    assert_eq!(kinds(&inv2, "/rds/"), 2, "{left:?}");
    let bucket2 = inv2.iter().find(|(k, _)| k.starts_with("s3/")).unwrap().1;
    assert!(
        bucket2["objects"].as_array().unwrap().is_empty(),
        "job objects left: {bucket2}"
    );
    let db_rules = inv2[&format!("us-east-2/sg/heroku2rds-{name}-db")]["ingress"].clone();
    assert_eq!(db_rules, serde_json::json!([format!("5432 {OPERATOR}")]));
    let again = run(
        &env,
        &[],
        &[
            "teardown",
            "--name",
            &name,
            "--replica-region",
            "us-east-1",
            "--yes",
        ],
    );
    again.expect_code(0);
    assert_eq!(inventory(&env, &name), inv2);

    // Everything, deliberately: only the final snapshot stays.
    let all = run(
        &env,
        &[],
        &[
            "teardown",
            "--name",
            &name,
            "--replica-region",
            "us-east-1",
            "--include-replica",
            "--delete-target",
            "--yes",
            "--json",
        ],
    );
    all.expect_code(0);
    let inv3 = inventory(&env, &name);
    assert!(
        inv3.keys().all(|k| k.contains("/snapshot/")),
        "left after full teardown: {inv3:#?}"
    );
    assert_eq!(kinds(&inv3, "/snapshot/"), 1);
    let kept = all.json()["kept"].clone();
    assert!(kept.to_string().contains("final snapshot"), "{kept}");
    run(
        &env,
        &[],
        &[
            "teardown",
            "--name",
            &name,
            "--replica-region",
            "us-east-1",
            "--include-replica",
            "--delete-target",
            "--yes",
        ],
    )
    .expect_code(0);
}

/// An arm64 build of heroku2rds as an operator would give it (never downloaded here: the
/// plan and the refusals come before any launch).
const ARM_BINARY_URL: &str = "https://releases.example.com/heroku2rds-linux-arm64";
const ARM_BINARY_SHA: &str = "6f1ed002ab5595859014ebf0951522d9a4ed4f1f4bd5a6d0f5d56b1ec2bb1b3e";

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_changes_nothing() {
    let m = moto();
    let env = aws_env(m, "test", "test");
    let name = unique("bad");
    let base = [
        "--source-size-gb",
        "1",
        "--source-major",
        "15",
        "--no-worker",
        "--yes",
    ];
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "provision",
                "--name",
                &name,
                "--region",
                "us-east-9",
                "--operator-cidr",
                OPERATOR,
            ],
            2,
            "unknown AWS region \"us-east-9\"",
        ),
        (
            vec![
                "provision",
                "--name",
                &name,
                "--replica-region",
                "us-east-2",
                "--operator-cidr",
                OPERATOR,
            ],
            2,
            "is the primary's region",
        ),
        (
            vec!["provision", "--name", &name, "--operator-cidr", "0.0.0.0/0"],
            2,
            "range too wide",
        ),
        (
            vec![
                "provision",
                "--name",
                "Bad_Name",
                "--operator-cidr",
                OPERATOR,
            ],
            2,
            "invalid migration name",
        ),
        (
            vec![
                "provision",
                "--name",
                &name,
                "--operator-cidr",
                OPERATOR,
                "--engine-major",
                "13",
            ],
            2,
            "below the source's PostgreSQL 15",
        ),
        (
            vec!["teardown", "--name", &name, "--include-replica"],
            2,
            "needs the replica's region",
        ),
    ];
    for (args, code, msg) in cases {
        let mut all = args.clone();
        if args[0] == "provision" {
            all.extend_from_slice(&base);
        } else {
            all.push("--yes");
        }
        let r = run(&env, &[], &all);
        r.expect_code(code);
        assert!(r.stderr.contains(msg), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("fix:"),
            "{args:?}: no fix in {}",
            r.stderr
        );
    }
    // Settings AWS would refuse only after creating the groups, parameter group and secret:
    // checked first, each refused with what to pass, nothing created.
    let dir = scratch_dir("bad-settings");
    let config = |file: &str, body: &str| {
        let p = dir.join(file);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let no_backups = config("retention.toml", "[aws]\nbackup_retention_days = 0\n");
    let bad_db = config("dbname.toml", "[aws]\ndb_name = \"my-app\"\n");
    let settings: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--replica-region", "us-east-1", "--config", &no_backups, "--no-worker"],
            "a read replica needs them",
        ),
        (vec!["--config", &bad_db, "--no-worker"], "db_name \"my-app\""),
        (
            vec!["--storage-autoscaling-max-gb", "21", "--no-worker"],
            "at least 110% of the allocated 20 GiB",
        ),
        (
            vec![
                "--worker-arch",
                "arm64",
                "--worker-instance-type",
                "m7i.large",
                "--worker-binary-url",
                ARM_BINARY_URL,
                "--worker-binary-sha256",
                ARM_BINARY_SHA,
            ],
            "the worker type m7i.large runs x86_64, not arm64",
        ),
        (
            vec!["--db-instance-class", "db.x2iedn.large", "--no-worker"],
            "RDS offers no db.x2iedn.large for PostgreSQL 15 in us-east-2: pass --db-instance-class db.m7g.large",
        ),
        (
            vec!["--source-major", "13", "--engine-major", "13", "--no-worker"],
            "standard support of PostgreSQL 13 ended on 2026-02-28",
        ),
        (vec!["--multi-az", "--vpc-id", "vpc-0123456789abcdef0"], "--vpc-id needs --subnet-ids"),
    ];
    for (flags, msg) in settings {
        let mut all = vec![
            "provision",
            "--name",
            &name,
            "--operator-cidr",
            OPERATOR,
            "--source-size-gb",
            "1",
            "--yes",
        ];
        if !flags.contains(&"--source-major") {
            all.extend_from_slice(&["--source-major", "15"]);
        }
        all.extend_from_slice(&flags);
        let r = run(&env, &[], &all);
        r.expect_code(2);
        assert!(
            r.stderr.contains(msg),
            "{flags:?}: {msg:?} not in {}",
            r.stderr
        );
        assert!(
            inventory(&env, &name).is_empty(),
            "{flags:?} created something"
        );
    }
    // arm64 without a type: a Graviton type, accepted.
    let arm = run(
        &env,
        &[],
        &[
            "plan",
            "--name",
            &name,
            "--operator-cidr",
            OPERATOR,
            "--source-size-gb",
            "1",
            "--source-major",
            "15",
            "--worker-arch",
            "arm64",
            "--worker-binary-url",
            ARM_BINARY_URL,
            "--worker-binary-sha256",
            ARM_BINARY_SHA,
            "--json",
        ],
    );
    arm.expect_code(0);
    let items = arm.json()["items"].as_array().unwrap().clone();
    let worker = items
        .iter()
        .find(|i| i["resource"] == "EC2 worker")
        .unwrap();
    assert_eq!(worker["action"], "create", "{worker}");
    assert!(
        worker["detail"]
            .as_str()
            .unwrap()
            .starts_with("m7g.large (arm64)"),
        "{worker}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Without a terminal and without --yes, provision refuses instead of waiting.
    let db_only = ["provision", "--name", &name, "--operator-cidr", OPERATOR];
    let r = run(&env, &[], &[&db_only[..], &base[..base.len() - 1]].concat());
    r.expect_code(2);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert!(inventory(&env, &name).is_empty());

    // A security group with our name that we did not tag: refused, nothing created.
    tool(
        &env,
        &["untagged-sg", &format!("heroku2rds-{name}-db"), "us-east-2"],
    );
    let r = run(&env, &[], &[&db_only[..], &base[..]].concat());
    r.expect_code(2);
    assert!(
        r.stderr.contains("never adopts") && r.stderr.contains("nothing was changed"),
        "{}",
        r.stderr
    );
    assert!(
        inventory(&env, &name).is_empty(),
        "{:?}",
        inventory(&env, &name)
    );
}

/// Actions heroku2rds calls that moto 5.2.5 does not check under enforcement (seen: taking them
/// away changes nothing). The bucket inventory shows the calls happen (public access block and
/// default encryption are set).
const EMULATOR_UNCHECKED: &[&str] = &[
    "s3:PutBucketPublicAccessBlock",
    "s3:PutEncryptionConfiguration",
];

/// The actions of policies/operator.json that heroku2rds calls itself (statements whose Sid
/// starts with "Implicit" are required by AWS behind other calls and not checked by moto).
fn called_actions(policy: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for s in policy["Statement"].as_array().unwrap() {
        let sid = s["Sid"].as_str().unwrap();
        if sid.starts_with("Implicit") {
            continue;
        }
        // The archive's statement: provision and teardown never call its actions (its
        // s3:PutObject is also in `Objects`, which this test does check).
        if sid == "Archive" {
            continue;
        }
        for a in s["Action"].as_array().unwrap() {
            let a = a.as_str().unwrap();
            if !EMULATOR_UNCHECKED.contains(&a) {
                out.push(a.to_string());
            }
        }
    }
    out
}

fn without(policy: &Value, action: &str) -> Value {
    let mut p = policy.clone();
    for s in p["Statement"].as_array_mut().unwrap() {
        let actions = s["Action"].as_array_mut().unwrap();
        actions.retain(|a| a != action);
    }
    p["Statement"]
        .as_array_mut()
        .unwrap()
        .retain(|s| !s["Action"].as_array().unwrap().is_empty());
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_the_operator_policy_under_iam_enforcement() {
    let pair = Pair::new("aws_iam").await;
    // Enforcement is global to a moto server: this test gets its own.
    let m = Moto::private(&[]);
    let root_env = aws_env(&m, "test", "test");
    let scratch = scratch_dir("iam");
    let admin_env = iam_user(
        &m,
        &root_env,
        "admin",
        &ADMIN_POLICY.parse().unwrap(),
        &scratch,
    );
    // From now on every request is checked against IAM.
    enforce_iam(&m);

    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("policies/operator.json")).unwrap(),
    )
    .unwrap();
    let user_with = |label: &str, p: &Value| iam_user(&m, &admin_env, label, p, &scratch);
    let key = ssh_key();
    let src = pair.source_url();
    let extra = [("HEROKU2RDS_SOURCE_URL", src.as_str())];
    let sequence = |env: &[(String, String)], name: &str| -> Vec<Run> {
        let mut runs = Vec::new();
        for args in [
            provision_args(name, key.to_str().unwrap()),
            // The operator moved: exercises the rule revocation.
            vec![
                "provision",
                "--name",
                name,
                "--replica-region",
                "us-east-1",
                "--operator-cidr",
                "198.51.100.9/32",
                "--ssh-public-key",
                key.to_str().unwrap(),
                "--yes",
                "--json",
            ],
            vec![
                "teardown",
                "--name",
                name,
                "--replica-region",
                "us-east-1",
                "--include-replica",
                "--delete-target",
                "--yes",
            ],
        ] {
            let r = run(env, &extra, &args);
            let failed = r.code != 0;
            runs.push(r);
            if failed {
                break;
            }
        }
        runs
    };

    // With exactly the policy: the whole life cycle works.
    let full = user_with("full", &policy);
    let name = unique("iam");
    for r in sequence(&full, &name) {
        r.expect_code(0);
    }

    // A failure injected between steps (the RDS call refused), then a re-run with the full policy
    // converges, with no duplicates.
    let no_rds = user_with("no-rds", &without(&policy, "rds:CreateDBInstance"));
    let conv = unique("conv");
    let failed = run(
        &no_rds,
        &extra,
        &provision_args(&conv, key.to_str().unwrap()),
    );
    failed.expect_code(4);
    assert!(
        failed.stderr.contains("rds:CreateDBInstance"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("provision stopped after:")
            && failed.stderr.contains("database security group"),
        "created resources not reported: {}",
        failed.stderr
    );
    run(&full, &extra, &provision_args(&conv, key.to_str().unwrap())).expect_code(0);
    let inv = inventory(&admin_env, &conv);
    assert_eq!(
        inv.keys().filter(|k| k.contains("/sg/")).count(),
        3,
        "{inv:#?}"
    );
    assert_eq!(
        inv.keys().filter(|k| k.contains("/rds/")).count(),
        2,
        "{inv:#?}"
    );
    assert_eq!(
        inv.keys().filter(|k| k.contains("/instance/")).count(),
        1,
        "{inv:#?}"
    );
    run(
        &full,
        &extra,
        &[
            "teardown",
            "--name",
            &conv,
            "--replica-region",
            "us-east-1",
            "--include-replica",
            "--delete-target",
            "--yes",
        ],
    )
    .expect_code(0);

    // Each action, taken away alone, stops the tool with a message naming it. Four at a time.
    let actions = called_actions(&policy);
    let superfluous = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for (lane, chunk) in actions.chunks(actions.len().div_ceil(4)).enumerate() {
            let (user_with, sequence, superfluous, full, extra, admin_env, policy) = (
                &user_with,
                &sequence,
                &superfluous,
                &full,
                &extra,
                &admin_env,
                &policy,
            );
            scope.spawn(move || {
                for (j, action) in chunk.iter().enumerate() {
                    let i = lane * 100 + j;
                    let env = user_with(&format!("minus{i}"), &without(policy, action));
                    let name = unique(&format!("m{i}"));
                    let runs = sequence(&env, &name);
                    let last = runs.last().unwrap();
                    if last.code == 0 {
                        superfluous.lock().unwrap().push(action.clone());
                    } else {
                        assert_eq!(last.code, 4, "{action}: {}", last.stderr);
                        assert!(
                            last.stderr.contains(action.as_str()),
                            "{action} not named: {}",
                            last.stderr
                        );
                        assert!(!last.stderr.contains(&root().password), "password leaked");
                    }
                    // Clean up with the full policy (and prove it converges from wherever it stopped).
                    run(
                        full,
                        extra,
                        &[
                            "teardown",
                            "--name",
                            &name,
                            "--replica-region",
                            "us-east-1",
                            "--include-replica",
                            "--delete-target",
                            "--yes",
                        ],
                    )
                    .expect_code(0);
                    let left = inventory(admin_env, &name);
                    assert!(
                        left.keys().all(|k| k.contains("/snapshot/")),
                        "{action}: left {left:#?}"
                    );
                }
            });
        }
    });
    let superfluous = superfluous.into_inner().unwrap();
    assert!(
        superfluous.is_empty(),
        "policy grants actions heroku2rds never needed: {superfluous:?}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// An account without default VPCs (landing zones, Control Tower): `plan` names the problem and
/// the flags; given VPCs and subnets, provision converges (twice, the same inventory) and
/// teardown removes everything, under exactly policies/operator.json.
#[tokio::test(flavor = "multi_thread")]
async fn no_default_vpc_then_given_subnets_under_exactly_the_policy() {
    let m = Moto::private(&[]);
    let root_env = aws_env(&m, "test", "test");
    let scratch = scratch_dir("novpc");
    let admin = iam_user(
        &m,
        &root_env,
        "admin",
        &ADMIN_POLICY.parse().unwrap(),
        &scratch,
    );
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("policies/operator.json")).unwrap(),
    )
    .unwrap();
    let op = iam_user(&m, &admin, "operator", &policy, &scratch);
    enforce_iam(&m);
    for region in ["us-east-2", "us-east-1"] {
        assert_eq!(tool(&admin, &["no-default-vpc", region])["default_vpcs"], 0);
    }
    let key = ssh_key();
    let name = unique("novpc");
    // The worker's job needs a source URL; nothing connects to it during provision.
    let extra = [(
        "HEROKU2RDS_SOURCE_URL",
        "postgres://app:secret@127.0.0.1:1/app?sslmode=require",
    )];
    let base = |more: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--name",
            &name,
            "--replica-region",
            "us-east-1",
            "--operator-cidr",
            OPERATOR,
            "--ssh-public-key",
            key.to_str().unwrap(),
            "--source-size-gb",
            "1",
            "--source-major",
            "15",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(more.iter().map(|s| s.to_string()));
        v
    };
    let go = |cmd: &str, more: &[&str]| {
        let mut args = vec![cmd.to_string()];
        args.extend(base(more));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&op, &extra, &args)
    };
    let nothing_created = |why: &str| {
        let inv = inventory(&admin, &name);
        assert!(inv.is_empty(), "{why}: created {inv:#?}");
    };

    // Plan names the problem in both regions and the flags that solve it.
    let plan = go("plan", &[]);
    plan.expect_code(0);
    for want in [
        "no default VPC in us-east-2",
        "--vpc-id VPC --subnet-ids SUBNET,SUBNET",
        "no default VPC in us-east-1",
        "--replica-vpc-id VPC --replica-subnet-ids",
    ] {
        assert!(
            plan.stdout.contains(want),
            "{want:?} not in:\n{}",
            plan.stdout
        );
    }
    let refused = go("provision", &["--yes"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("no default VPC in us-east-2"),
        "{}",
        refused.stderr
    );
    nothing_created("provision without a VPC");

    let net = tool(&admin, &["network", "us-east-2", "10.20.0.0/16"]);
    let rnet = tool(&admin, &["network", "us-east-1", "10.30.0.0/16"]);
    let other = tool(&admin, &["network", "us-east-2", "10.40.0.0/16"]);
    let ids = |n: &Value| -> Vec<String> {
        n["subnets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let (vpc, subnets) = (net["vpc"].as_str().unwrap(), ids(&net));
    let (rvpc, rsubnets) = (rnet["vpc"].as_str().unwrap(), ids(&rnet));
    let subnet_list = subnets.join(",");
    let rsubnet_list = rsubnets.join(",");
    let replica_flags = [
        "--replica-vpc-id",
        rvpc,
        "--replica-subnet-ids",
        &rsubnet_list,
    ];

    // Bad network input: each a clear message, nothing created.
    let mixed = format!("{},{}", subnets[0], ids(&other)[1]);
    let one_zone = subnets[0].clone();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--vpc-id",
                "vpc-0123456789abcdef0",
                "--subnet-ids",
                &subnet_list,
            ],
            "not in --vpc-id vpc-0123456789abcdef0",
        ),
        (
            vec!["--subnet-ids", &rsubnet_list],
            "not found in us-east-2",
        ),
        (vec!["--subnet-ids", &mixed], "several VPCs"),
        (
            vec!["--subnet-ids", &one_zone],
            "at least two availability zones",
        ),
        (vec!["--vpc-id", vpc], "--vpc-id needs --subnet-ids"),
        (vec!["--subnet-ids", "subnet-x"], "is not a subnet id"),
    ];
    for (flags, want) in cases {
        let mut more = flags.clone();
        more.extend_from_slice(&replica_flags);
        more.push("--yes");
        let r = go("provision", &more);
        assert_eq!(r.code, 2, "{flags:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(want),
            "{flags:?}: {want:?} not in {}",
            r.stderr
        );
        nothing_created(&format!("{flags:?}"));
    }

    // Given VPCs and subnets: provision converges, twice to the same inventory.
    // An app range with host bits set: AWS stores it normalized, and so must we, or every
    // other run would revoke it.
    let mut more = vec!["--vpc-id", vpc, "--subnet-ids", &subnet_list];
    more.extend_from_slice(&replica_flags);
    more.extend_from_slice(&["--app-cidr", "198.51.100.77/28", "--yes", "--json"]);
    go("provision", &more).expect_code(0);
    let first = inventory(&admin, &name);
    for (k, v) in first.iter().filter(|(k, _)| k.contains("/sg/")) {
        let want = if k.starts_with("us-east-1/") {
            rvpc
        } else {
            vpc
        };
        assert_eq!(v["vpc"], want, "{k}");
    }
    let group = &first[&format!("us-east-2/subnetgroup/heroku2rds-{name}")];
    let mut sorted = subnets.clone();
    sorted.sort();
    assert_eq!(group["vpc"], vpc);
    assert_eq!(group["subnets"], serde_json::json!(sorted));
    let rgroup = &first[&format!("us-east-1/subnetgroup/heroku2rds-{name}")];
    assert_eq!(rgroup["vpc"], rvpc);
    let instance = first
        .iter()
        .find(|(k, _)| k.contains("/instance/"))
        .map(|(_, v)| v)
        .unwrap();
    assert_eq!(instance["subnet"], subnets[0].as_str(), "{instance}");
    assert_eq!(instance["vpc"], vpc);
    let again = go("provision", &more);
    again.expect_code(0);
    assert_eq!(count_outcomes(&again, "created"), 0, "{}", again.stdout);
    assert_eq!(
        inventory(&admin, &name),
        first,
        "a second provision changed something"
    );
    let third = go("provision", &more);
    third.expect_code(0);
    assert_eq!(count_outcomes(&third, "changed"), 0, "{}", third.stdout);
    let inv = inventory(&admin, &name);
    assert_eq!(inv, first, "a third provision changed something");
    let app_rules: Vec<&Value> = inv[&format!("us-east-2/sg/heroku2rds-{name}-db")]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.as_str().unwrap().contains("198.51.100."))
        .collect();
    assert_eq!(app_rules, vec!["5432 198.51.100.64/28"], "{inv:#?}");

    // Teardown removes everything (the final snapshot stays, as designed).
    run(
        &op,
        &extra,
        &[
            "teardown",
            "--name",
            &name,
            "--replica-region",
            "us-east-1",
            "--include-replica",
            "--delete-target",
            "--yes",
        ],
    )
    .expect_code(0);
    let left = inventory(&admin, &name);
    assert!(
        left.keys().all(|k| k.contains("/snapshot/")),
        "left {left:#?}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
