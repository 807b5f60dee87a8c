//! Fault injection (DESIGN.md, "Testing"), each scenario under a live workload on the source
//! (inserts, updates, deletes, key updates, multi-statement transactions) while `replicate`
//! copies and follows:
//!
//! - connections to the source, then to the target, cut at seeded random moments during the copy
//!   and while following, by an in-process TCP proxy ([`crate::support::proxy`]);
//! - connections reset (RST), and links that stall for longer than the tool's timeouts;
//! - a slow link;
//! - the source server and the target server restarted in the middle of the copy;
//! - `replicate` killed with SIGKILL at five seeded random moments and resumed each time;
//! - the target's disk filling up (a small tmpfs tablespace; needs root).
//!
//! Every scenario ends with zero differences after a resume, checked by the harness's own
//! fingerprint AND `heroku2rds verify`, or with a clean, reported failure followed by a resume
//! that reaches zero differences. Fault moments are logged on stderr with the seed: replay a
//! failure with `HEROKU2RDS_FAULT_SEED=<seed>` (the moments are drawn from it; how the tool and
//! the servers interleave with them still varies). `FAULTS_SHOW_LOGS=1` prints the tool's logs
//! of passing scenarios too, `FAULTS_TOOL_LOG=<filter>` sets the tool's log filter (for example
//! `info,heroku2rds::pg::conn::watchdog=debug`).
//!
//! The tool runs with a 3 s stall timeout and 3 s connect timeouts so that stalls "longer than
//! the tool's timeouts" fit in a test; its defaults are 60 s and 10 s.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use heroku2rds::pg::conn::ConnSpec;

use crate::support::binary::{h2r_env, spawn_h2r_logged, Run};
use crate::support::clusters::{fingerprint_tables, root, Pair};
use crate::support::host::{after_exit, is_root, kill};
use crate::support::proxy::{Proxy, Slow};
use crate::support::rng::{self, Rng};

/// Seconds a busy connection may go without a byte before the tool checks it
/// (`HEROKU2RDS_STALL_TIMEOUT_S`; its default is a minute), and the connect timeout of the URLs.
const STALL_TIMEOUT_S: &str = "3";
const CONNECT_TIMEOUT_S: u64 = 3;

fn base_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| rng::seed("HEROKU2RDS_FAULT_SEED"))
}

/// One random stream per scenario, from the seed and its name.
fn scenario_rng(name: &str) -> Rng {
    let seed = base_seed();
    // Printed by every scenario: the output of a failing test shows its own seed.
    eprintln!("[faults {name}] seed {seed} (replay with HEROKU2RDS_FAULT_SEED={seed})");
    Rng::derived(seed, name)
}

/// Rows of the main table; the other tables are sized from it.
const ROWS: i64 = 60_000;

fn data_sql(rows: i64) -> String {
    format!(
        "CREATE TABLE public.f_items (id bigint PRIMARY KEY, qty int NOT NULL, body text);
         INSERT INTO public.f_items SELECT i, i % 100, repeat(md5(i::text), 6) FROM generate_series(1, {rows}) i;
         CREATE TABLE public.f_pairs (a text NOT NULL, b int NOT NULL, v text, PRIMARY KEY (a, b));
         INSERT INTO public.f_pairs SELECT 'k' || (i % 50), i, repeat(md5(i::text), 3) FROM generate_series(1, {pairs}) i;
         CREATE TABLE public.f_log (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), note text);
         ANALYZE;",
        pairs = rows / 2
    )
}

/// The application: one session writing all the time, reconnecting when its connection is lost
/// (server restarts). Key updates on both tables, deletes and re-inserts, multi-statement
/// transactions.
async fn writer(url: String, rows: i64, mut rng: Rng, stop: Arc<AtomicBool>, ops: Arc<AtomicU64>) {
    let spec = ConnSpec::parse(&url, "source").unwrap();
    let mut client: Option<tokio_postgres::Client> = None;
    // New keys just past the loaded ones, so that integer-key chunks stay even.
    let mut next_id = rows + 1_000;
    let mut next_b = rows + 1_000;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = &client else {
            match spec.connect().await {
                Ok(c) => client = Some(c),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
            continue;
        };
        let id = 1 + rng.next(rows as u64) as i64;
        let b = 1 + rng.next((rows / 2) as u64) as i64;
        let a = format!("k{}", b % 50);
        let sql = match rng.next(10) {
            0 => {
                next_id += 1;
                format!("INSERT INTO public.f_items VALUES ({next_id}, 1, 'new')")
            }
            1 => format!("UPDATE public.f_items SET qty = qty + 1 WHERE id = {id}"),
            2 => format!(
                "UPDATE public.f_items SET body = md5(random()::text) WHERE id = {id}"
            ),
            3 => {
                next_id += 1;
                format!("UPDATE public.f_items SET id = {next_id} WHERE id = {id}")
            }
            4 => format!("DELETE FROM public.f_items WHERE id = {id}"),
            5 => {
                next_b += 1;
                format!("UPDATE public.f_pairs SET b = {next_b} WHERE a = '{a}' AND b = {b}")
            }
            6 => {
                next_b += 1;
                format!("UPDATE public.f_pairs SET a = 'moved', b = {next_b}, v = 'm' WHERE a = '{a}' AND b = {b}")
            }
            7 => format!(
                "BEGIN; DELETE FROM public.f_items WHERE id = {id};
                 INSERT INTO public.f_items VALUES ({id}, 7, 'reinserted') ON CONFLICT (id) DO UPDATE SET qty = 7;
                 UPDATE public.f_pairs SET v = 'tx' WHERE a = '{a}' AND b = {b}; COMMIT"
            ),
            8 => "INSERT INTO public.f_log (note) VALUES ('op');
                  DELETE FROM public.f_log WHERE id < (SELECT max(id) - 300 FROM public.f_log)"
                .to_string(),
            _ => format!("DELETE FROM public.f_pairs WHERE a = '{a}' AND b = {b}"),
        };
        match c.batch_execute(&sql).await {
            Ok(()) => {
                ops.fetch_add(1, Ordering::Relaxed);
            }
            // A lost connection (or a failed transaction left open): start a new session.
            Err(_) => client = None,
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
}

/// What the target's state says.
#[derive(Debug, Clone, Default)]
struct Progress {
    phase: Option<String>,
    done: i64,
    total: i64,
    /// Seconds since `replicate` last recorded follow figures.
    follow_age: Option<f64>,
}

impl Progress {
    fn copying(&self) -> bool {
        self.phase.as_deref() == Some("copying")
    }
    fn following_since(&self, since: Instant) -> bool {
        self.phase.as_deref() == Some("copied")
            && self
                .follow_age
                .is_some_and(|a| a < since.elapsed().as_secs_f64() - 0.3 && a < 3.0)
    }
    fn show(&self) -> String {
        format!(
            "phase {}, {}/{} chunks",
            self.phase.as_deref().unwrap_or("-"),
            self.done,
            self.total
        )
    }
}

async fn progress(target_url: &str) -> Progress {
    let Ok(Ok(c)) = tokio::time::timeout(
        Duration::from_secs(5),
        ConnSpec::parse(target_url, "target").unwrap().connect(),
    )
    .await
    else {
        return Progress::default();
    };
    let q = "SELECT m.phase, (SELECT count(done_at) FROM heroku2rds.chunks), (SELECT count(*) FROM heroku2rds.chunks),
                    (SELECT extract(epoch FROM now() - updated_at)::float8 FROM heroku2rds.follow)
               FROM heroku2rds.migration m";
    match c.query_opt(q, &[]).await {
        Ok(Some(r)) => Progress {
            phase: r.get(0),
            done: r.get(1),
            total: r.get(2),
            follow_age: r.get(3),
        },
        _ => Progress::default(),
    }
}

/// One background `replicate` (or other command), logging to a file.
struct Tool {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl Tool {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }
    fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
    /// Waits up to `limit` for the process to end.
    async fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
    fn term(&self) {
        kill(self.child.id(), "-TERM");
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A scenario: a pair of databases with data, an optional proxy in front of each server, the
/// writer, and the tool's runs.
struct Scenario {
    name: String,
    pair: Pair,
    src: Option<Proxy>,
    tgt: Option<Proxy>,
    rng: Rng,
    t0: Instant,
    runs: AtomicUsize,
    logs: std::sync::Mutex<Vec<PathBuf>>,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl Scenario {
    async fn new(
        name: &str,
        pair: Pair,
        rows: i64,
        proxy_source: bool,
        proxy_target: bool,
    ) -> Scenario {
        let t0 = Instant::now();
        pair.source_owner()
            .await
            .batch_execute(&data_sql(rows))
            .await
            .expect("data");
        let src = if proxy_source {
            Some(Proxy::start(&format!("{name} source"), pair.source.port).await)
        } else {
            None
        };
        let tgt = if proxy_target {
            Some(Proxy::start(&format!("{name} target"), pair.target.port).await)
        } else {
            None
        };
        let mut rng = scenario_rng(name);
        let writer_rng = Rng::new(rng.next(u64::MAX));
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let writer = Some(tokio::spawn(writer(
            pair.source_url(),
            rows,
            writer_rng,
            stop.clone(),
            ops.clone(),
        )));
        let s = Scenario {
            name: name.to_string(),
            pair,
            src,
            tgt,
            rng,
            t0,
            runs: AtomicUsize::new(0),
            logs: std::sync::Mutex::new(Vec::new()),
            stop,
            ops,
            writer,
        };
        s.note(&format!("{rows} rows loaded; the writer runs"));
        s
    }

    fn note(&self, msg: &str) {
        eprintln!(
            "[faults {} +{:.1}s] {msg}",
            self.name,
            self.t0.elapsed().as_secs_f64()
        );
    }

    fn source_url(&self) -> String {
        let url = match &self.src {
            Some(p) => p.url(&self.pair.source_url(), self.pair.source.port),
            None => self.pair.source_url(),
        };
        format!("{url}&connect_timeout={CONNECT_TIMEOUT_S}")
    }

    fn target_url(&self) -> String {
        let url = match &self.tgt {
            Some(p) => p.url(&self.pair.target_url(), self.pair.target.port),
            None => self.pair.target_url(),
        };
        format!("{url}&connect_timeout={CONNECT_TIMEOUT_S}")
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HEROKU2RDS_SOURCE_URL", self.source_url()),
            ("HEROKU2RDS_TARGET_URL", self.target_url()),
            ("HEROKU2RDS_STALL_TIMEOUT_S", STALL_TIMEOUT_S.to_string()),
            (
                "HEROKU2RDS_LOG",
                std::env::var("FAULTS_TOOL_LOG").unwrap_or_else(|_| "info".into()),
            ),
        ]
    }

    async fn h2r_async(&self, args: &[&str]) -> Run {
        let env = self.env();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            h2r_env(&args, &env)
        })
        .await
        .expect("run heroku2rds")
    }

    fn spawn(&self, args: &[&str]) -> Tool {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let log = root().dir.join(format!("{}-{n}.log", self.name));
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.logs.lock().unwrap().push(log.clone());
        Tool {
            child: spawn_h2r_logged(args, &env, &log),
            log,
            started: Instant::now(),
        }
    }

    fn replicate_forever(&self) -> Tool {
        self.spawn(&[
            "replicate",
            "--until",
            "forever",
            "--jobs",
            "2",
            "--chunk-mb",
            "1",
        ])
    }

    async fn progress(&self) -> Progress {
        progress(&self.pair.target_url()).await
    }

    /// Waits until `pred` holds; fails with the tool's log if it exits or `limit` passes.
    async fn wait_for(
        &self,
        tool: &mut Tool,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Progress) -> bool,
    ) -> Progress {
        let deadline = Instant::now() + limit;
        loop {
            let p = self.progress().await;
            if pred(&p) {
                return p;
            }
            if let Some(status) = tool.exited() {
                panic!(
                    "[{}] replicate exited ({status}) while waiting for {what} ({}):\n{}",
                    self.name,
                    p.show(),
                    tool.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "[{}] no {what} within {limit:?} ({}):\n{}",
                self.name,
                p.show(),
                tool.log()
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Every log of the tool so far.
    fn all_logs(&self) -> String {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the following `tool` with SIGTERM (it must still run: it was to survive the
    /// faults), stops the writer, resumes to caught-up, and compares source and target with the
    /// harness's fingerprint and with `verify`. Returns every log of the tool.
    async fn finish(mut self, mut tool: Tool) -> String {
        if let Some(status) = tool.exited() {
            panic!(
                "[{}] replicate did not survive the faults ({status}):\n{}",
                self.name,
                tool.log()
            );
        }
        let ops = self.stop_writer().await;
        tool.term();
        let status = tool.wait(Duration::from_secs(60)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "[{}] replicate after SIGTERM: {status:?}:\n{}",
            self.name,
            tool.log()
        );
        self.converge(ops).await;
        if std::env::var_os("FAULTS_SHOW_LOGS").is_some() {
            eprintln!("{}", self.all_logs());
        }
        self.all_logs()
    }

    /// Stops the writer; returns how many writes it made.
    async fn stop_writer(&mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.writer.take() {
            w.await.expect("the writer");
        }
        let ops = self.ops.load(Ordering::SeqCst);
        assert!(
            ops > 100,
            "[{}] the writer ran ({ops} operations)",
            self.name
        );
        ops
    }

    /// With the writer stopped: resume to caught-up, then compare.
    async fn converge(&self, ops: u64) {
        let run = self.h2r_async(&["replicate", "--until", "caught-up"]).await;
        assert_eq!(
            run.code, 0,
            "[{}] resume to caught-up:\n{}",
            self.name, run.stderr
        );
        let (src, tgt) = (
            self.pair.source_owner().await,
            self.pair.target_master().await,
        );
        let (a, b) = (
            fingerprint_tables(&src).await,
            fingerprint_tables(&tgt).await,
        );
        let differing: Vec<&String> = a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .collect();
        assert!(
            differing.is_empty(),
            "[{}] tables differ after the resume: {differing:?}\nsource {a:?}\ntarget {b:?}",
            self.name
        );
        let verify = self.h2r_async(&["verify"]).await;
        assert_eq!(
            verify.code, 0,
            "[{}] verify:\n{}\n{}",
            self.name, verify.stdout, verify.stderr
        );
        let items = a.get("public.f_items").map_or(0, |x| x.0);
        self.note(&format!(
            "zero differences ({} tables, {items} rows in f_items, {ops} writes applied) in {:.1}s",
            a.len(),
            self.t0.elapsed().as_secs_f64()
        ));
    }
}

/// The delays of the tool's reconnects, in order, with the error each answered.
fn reconnects(log: &str) -> Vec<(f64, String)> {
    log.lines()
        .filter_map(|l| {
            let (before, after) = l.split_once("; reconnecting in ")?;
            let secs = after.split('s').next()?.parse().ok()?;
            Some((secs, before.to_string()))
        })
        .collect()
}

/// Fires `fault` `n` times at seeded random moments while `when` holds and the proxy has a
/// connection open (so that every fault hits the tool); returns how many connections each hit.
#[allow(clippy::too_many_arguments)]
async fn faults_while(
    s: &mut Scenario,
    tool: &mut Tool,
    which: &str,
    n: usize,
    gap: (u64, u64),
    label: &str,
    when: impl Fn(&Progress, Instant) -> bool,
    fault: impl Fn(&Proxy) -> usize,
) -> Vec<usize> {
    let mut hits = Vec::new();
    for i in 0..n {
        let since = tool.started;
        let pause = s.rng.ms(gap.0, gap.1);
        let deadline = Instant::now() + Duration::from_secs(60);
        // The moment: `pause` after `when` holds, with a connection of the tool open, and `when`
        // still holding then.
        let p = loop {
            s.wait_for(tool, label, deadline - Instant::now(), |p| when(p, since))
                .await;
            tokio::time::sleep(pause).await;
            let proxy = if which == "source" { &s.src } else { &s.tgt };
            let proxy = proxy.as_ref().expect("proxy");
            while proxy.live() == 0 {
                assert!(Instant::now() < deadline, "the tool never reconnected");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let p = s.progress().await;
            if when(&p, since) {
                break p;
            }
        };
        let proxy = if which == "source" { &s.src } else { &s.tgt };
        let proxy = proxy.as_ref().expect("proxy");
        let hit = fault(proxy);
        s.note(&format!(
            "fault {}/{n} {label} on the {which}: {hit} connection(s) ({}), after {:?}",
            i + 1,
            p.show(),
            pause
        ));
        hits.push(hit);
        // Let the tool notice and reconnect before the next one.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    hits
}

fn copying(p: &Progress, _: Instant) -> bool {
    p.copying() && p.done >= 1
}

fn following(p: &Progress, since: Instant) -> bool {
    p.following_since(since)
}

async fn cuts_scenario(name: &str, which: &str) {
    let pair = Pair::new(name).await;
    let mut s = Scenario::new(name, pair, ROWS, which == "source", which == "target").await;
    // A WAN-like link (2 MB/s) so that the copy lasts long enough for several cuts.
    let link = if which == "source" { &s.src } else { &s.tgt };
    link.as_ref().expect("proxy").slow(Some(Slow {
        delay_per_chunk: Duration::ZERO,
        bytes_per_sec: 2_000_000,
    }));
    let mut tool = s.replicate_forever();
    let mut hits = Vec::new();
    if which == "target" {
        // First a cut with the port closed for 6 s: the reconnects meet refused connections, and
        // must back off with growing delays.
        hits.extend(
            faults_while(
                &mut s,
                &mut tool,
                which,
                1,
                (100, 600),
                "cut + 6 s refused, copying",
                copying,
                |p| {
                    let n = p.cut();
                    p.refuse(Duration::from_secs(6));
                    n
                },
            )
            .await,
        );
    }
    hits.extend(
        faults_while(
            &mut s,
            &mut tool,
            which,
            3,
            (200, 1500),
            "cut while copying",
            copying,
            Proxy::cut,
        )
        .await,
    );
    hits.extend(
        faults_while(
            &mut s,
            &mut tool,
            which,
            3,
            (200, 2000),
            "cut while following",
            following,
            Proxy::cut,
        )
        .await,
    );
    s.wait_for(&mut tool, "following again", Duration::from_secs(60), |p| {
        p.following_since(Instant::now() - Duration::from_secs(30))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = if which == "source" {
        s.src.as_ref()
    } else {
        s.tgt.as_ref()
    }
    .map(|p| p.stats())
    .unwrap_or_default();
    let log = s.finish(tool).await;
    let retries = reconnects(&log);
    let effective = hits.iter().filter(|h| **h > 0).count();
    eprintln!(
        "[faults {name}] {} faults cut {:?} connection(s) ({} accepted in all); the tool reconnected {} time(s) with delays {:?}",
        hits.len(),
        hits,
        stats.accepted,
        retries.len(),
        retries.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(
        !log.contains("connection stalled"),
        "cut connections are not mistaken for stalls:\n{log}"
    );
    assert!(
        retries.len() >= effective,
        "every fault that cut the tool's connections made it reconnect ({} of {effective}):\n{log}",
        retries.len()
    );
    if which == "target" {
        // The reconnects that met the closed port backed off with growing delays.
        let refused: Vec<f64> = retries
            .iter()
            .filter(|(_, e)| e.contains("refused"))
            .map(|r| r.0)
            .collect();
        assert!(
            refused.len() >= 2 && refused.windows(2).all(|w| w[1] > w[0]),
            "reconnects against a refusing server back off with growing delays: {refused:?}\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_source_connections_cut_during_copy_and_follow() {
    cuts_scenario("faults_src_cuts", "source").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_target_connections_cut_and_refused_during_copy_and_follow() {
    cuts_scenario("faults_tgt_cuts", "target").await;
}

/// Waits up to `d` (the length of a stall just started) for the tool to report a stalled
/// connection; returns after how long it did.
async fn stall_noticed(tool: &Tool, d: Duration) -> Option<Duration> {
    let before = tool.log().matches("connection stalled").count();
    let t = Instant::now();
    while t.elapsed() < d {
        if tool.log().matches("connection stalled").count() > before {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_resets_and_stalls_longer_than_the_timeouts() {
    let name = "faults_stalls";
    let pair = Pair::new(name).await;
    let mut s = Scenario::new(name, pair, ROWS, true, true).await;
    s.src.as_ref().expect("proxy").slow(Some(Slow {
        delay_per_chunk: Duration::ZERO,
        bytes_per_sec: 2_000_000,
    }));
    let mut tool = s.replicate_forever();

    // The whole link to the target goes silent during the copy (new connections too), for
    // longer than the stall timeout and the connect timeout together.
    let stall = Duration::from_secs(20);
    let p = s
        .wait_for(&mut tool, "the copy", Duration::from_secs(60), |p| {
            p.copying() && p.done >= 2
        })
        .await;
    tokio::time::sleep(s.rng.ms(0, 800)).await;
    s.tgt.as_ref().expect("proxy").stall(stall);
    s.note(&format!("target link stalled for {stall:?} ({})", p.show()));
    let target_stall = stall_noticed(&tool, stall).await;
    s.note(&format!(
        "stall of the target noticed after {target_stall:?}"
    ));
    while s.tgt.as_ref().expect("proxy").is_stalled() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Resets (RST), two on each side while following, in seeded order.
    let mut resets = Vec::new();
    let mut sides = vec!["source", "source", "target", "target"];
    for i in 0..4 {
        let which = sides.remove(s.rng.next(sides.len() as u64) as usize);
        resets.extend(
            faults_while(
                &mut s,
                &mut tool,
                which,
                1,
                (200, 1500),
                &format!("reset {}/4 while following", i + 1),
                following,
                Proxy::reset,
            )
            .await,
        );
    }

    // Then only the open connections to the source go silent (new ones work): the tool finds
    // out from the server what its session is doing.
    let stall = Duration::from_secs(12);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = s
            .wait_for(&mut tool, "following", Duration::from_secs(60), |p| {
                p.phase.as_deref() == Some("copied") && p.follow_age.is_some_and(|a| a < 1.0)
            })
            .await;
        // Following on two source connections (the run's and the follower's).
        if s.src.as_ref().expect("proxy").live() >= 2 {
            s.note(&format!("following ({})", p.show()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never following on two connections"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(s.rng.ms(0, 800)).await;
    s.src.as_ref().expect("proxy").stall_open(stall);
    let source_stall = stall_noticed(&tool, stall).await;
    s.note(&format!(
        "stall of the open source connections noticed after {source_stall:?}"
    ));
    s.wait_for(&mut tool, "following again", Duration::from_secs(60), |p| {
        p.following_since(Instant::now() - Duration::from_secs(30))
    })
    .await;
    let log = s.finish(tool).await;
    let retries = reconnects(&log);
    eprintln!(
        "[faults {name}] stalls noticed after {target_stall:?} (target, 20 s) and {source_stall:?} (source, 12 s); resets hit {resets:?} connection(s); {} reconnect(s) with delays {:?}",
        retries.len(),
        retries.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    // A stalled link must not hang the tool: it notices while the stall lasts, closes the
    // connection and reconnects.
    assert!(
        target_stall.is_some() && source_stall.is_some(),
        "the stalls went unnoticed (target {target_stall:?}, source {source_stall:?}):\n{log}"
    );
    assert!(
        log.contains("got no answer") || log.contains("no PostgreSQL handshake within"),
        "connections to the silent target timed out:\n{log}"
    );
    assert!(
        log.contains("waiting for us while we wait for it")
            || log.contains("blocked sending to us")
            || log.contains("session is gone"),
        "the server was asked about the silent source session:\n{log}"
    );
    let effective = resets.iter().filter(|h| **h > 0).count();
    assert!(
        retries.len() >= effective + 2,
        "every reset and stall made the tool reconnect:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_slow_link_copy_completes() {
    let name = "faults_slow";
    let pair = Pair::new(name).await;
    let mut s = Scenario::new(name, pair, 40_000, true, false).await;
    let cap = 1_500_000u64;
    s.src.as_ref().expect("proxy").slow(Some(Slow {
        delay_per_chunk: Duration::from_millis(5),
        bytes_per_sec: cap,
    }));
    let t = Instant::now();
    let mut tool = s.spawn(&[
        "replicate",
        "--until",
        "copied",
        "--jobs",
        "2",
        "--chunk-mb",
        "1",
    ]);
    let status = tool.wait(Duration::from_secs(150)).await;
    let took = t.elapsed();
    let log = tool.log();
    assert!(
        status.is_some_and(|st| st.success()),
        "the copy over a slow link: {status:?}\n{log}"
    );
    let bytes = s.src.as_ref().expect("proxy").stats().bytes;
    s.note(&format!(
        "copied over a {:.1} MB/s link in {:.1}s ({:.1} MB through the link)",
        cap as f64 / 1e6,
        took.as_secs_f64(),
        bytes as f64 / 1e6
    ));
    // It really was slow, and slow is not stalled: no connection was given up on.
    assert!(
        bytes > 5_000_000 && took.as_secs_f64() >= bytes as f64 / cap as f64 * 0.9,
        "the link was not slow ({bytes} bytes in {took:?})"
    );
    assert!(
        !log.contains("connection stalled") && reconnects(&log).is_empty(),
        "a slow link is not a lost one:\n{log}"
    );
    s.src.as_ref().expect("proxy").slow(None);
    let ops = s.stop_writer().await;
    s.converge(ops).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_source_and_target_restart_mid_copy() {
    let name = "faults_restarts";
    let pair = Pair::private(name).await;
    // A slow link to the source (through the proxy, which passes the server's own disconnects
    // on) keeps the copy going long enough for both restarts.
    let mut s = Scenario::new(name, pair, ROWS, true, false).await;
    s.src.as_ref().expect("proxy").slow(Some(Slow {
        delay_per_chunk: Duration::ZERO,
        bytes_per_sec: 2_000_000,
    }));
    let mut tool = s.replicate_forever();
    let mut restarts = Vec::new();
    for which in ["source", "target"] {
        let started = Instant::now();
        if which == "target" {
            // The target's restart hits a copy running again after the source's.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !tool.log().contains("resuming the migration") {
                assert!(
                    Instant::now() < deadline,
                    "no resume after the source's restart:\n{}",
                    tool.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let before = s.progress().await.done;
        let p = s
            .wait_for(&mut tool, "a chunk copied", Duration::from_secs(60), |p| {
                p.copying() && p.done > before
            })
            .await;
        tokio::time::sleep(s.rng.ms(0, 700)).await;
        let cluster = if which == "source" {
            s.pair.source
        } else {
            s.pair.target
        };
        s.note(&format!("restarting the {which} server ({})", p.show()));
        let t = Instant::now();
        tokio::task::spawn_blocking(move || cluster.restart())
            .await
            .expect("restart");
        restarts.push((which, t.elapsed(), started.elapsed()));
        s.note(&format!(
            "the {which} server is back after {:?}",
            t.elapsed()
        ));
    }
    let p = s.progress().await;
    assert!(
        p.copying(),
        "both restarts happened during the copy ({})",
        p.show()
    );
    let started = tool.started;
    s.wait_for(&mut tool, "following", Duration::from_secs(90), |p| {
        p.following_since(started)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = s.finish(tool).await;
    let retries = reconnects(&log);
    eprintln!(
        "[faults {name}] restarts {restarts:?}; {} reconnect(s) with delays {:?}",
        retries.len(),
        retries.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(
        retries.len() >= 2,
        "each restart made the tool reconnect:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_replicate_killed_at_five_random_moments() {
    let name = "faults_kill9";
    let pair = Pair::new(name).await;
    let mut s = Scenario::new(name, pair, ROWS, true, false).await;
    s.src.as_ref().expect("proxy").slow(Some(Slow {
        delay_per_chunk: Duration::ZERO,
        bytes_per_sec: 3_000_000,
    }));
    let mut kills = Vec::new();
    for k in 0..5 {
        let mut tool = s.replicate_forever();
        let started = tool.started;
        // The first two while copying (once this run has copied a chunk), the others while
        // following; each a seeded random time later.
        let p = if k < 2 {
            let before = s.progress().await.done;
            s.wait_for(&mut tool, "copying", Duration::from_secs(60), |p| {
                (p.copying() && p.done > before) || p.following_since(started)
            })
            .await
        } else {
            s.wait_for(&mut tool, "following", Duration::from_secs(90), |p| {
                p.following_since(started)
            })
            .await
        };
        let pause = s.rng.ms(0, 1500);
        tokio::time::sleep(pause).await;
        let at = s.progress().await;
        tool.kill9();
        s.note(&format!(
            "kill -9 #{} at {:.1}s into the run, {pause:?} after seeing {}: {}",
            k + 1,
            started.elapsed().as_secs_f64(),
            p.show(),
            at.show()
        ));
        kills.push(at.phase.clone().unwrap_or_default());
        // Rows on the target are exactly those of the chunks recorded done: nothing half-copied.
        if at.copying() {
            let tgt = s.pair.target_master().await;
            let r = tgt
                .query_one(
                    "SELECT (SELECT coalesce(sum(rows), 0)::bigint FROM heroku2rds.chunks WHERE done_at IS NOT NULL),
                            (SELECT count(*) FROM public.f_items) + (SELECT count(*) FROM public.f_pairs) + (SELECT count(*) FROM public.f_log)",
                    &[],
                )
                .await
                .expect("count");
            let (recorded, present): (i64, i64) = (r.get(0), r.get(1));
            let p = s.progress().await;
            if p.copying() {
                assert_eq!(
                    recorded,
                    present,
                    "after kill -9 #{}: rows on the target match the chunks recorded done",
                    k + 1
                );
            }
        }
    }
    eprintln!("[faults {name}] kill -9 in phases {kills:?}");
    assert!(
        kills.iter().any(|p| p == "copying") && kills.iter().any(|p| p == "copied"),
        "kills during the copy and while following: {kills:?}"
    );
    let mut tool = s.replicate_forever();
    let started = tool.started;
    s.wait_for(&mut tool, "following", Duration::from_secs(90), |p| {
        p.following_since(started)
    })
    .await;
    let log = s.finish(tool).await;
    assert!(
        log.contains("already done") || log.contains("resuming the migration"),
        "the runs resumed:\n{log}"
    );
}

/// A tmpfs mounted for the test, unmounted when dropped (and by a watchdog process if the test
/// process dies first).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: PathBuf, size_mb: u32) -> Tmpfs {
        std::fs::create_dir_all(&dir).expect("mount point");
        let run = |args: &[&str]| {
            let out = std::process::Command::new(args[0])
                .args(&args[1..])
                .output()
                .expect(args[0]);
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let d = dir.to_str().expect("utf-8 path");
        run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size_mb}m"),
            "tmpfs",
            d,
        ]);
        run(&["chown", "postgres:postgres", d]);
        after_exit(
            "unmounts the tmpfs",
            &format!("umount -l '{d}' 2>/dev/null"),
        );
        Tmpfs { dir }
    }

    fn resize(&self, size_mb: u32) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size_mb}m")])
            .arg(&self.dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_target_disk_fills_up() {
    if !is_root() {
        eprintln!(
            "SKIPPED faults_target_disk_fills_up: mounting a small tmpfs for the target's tablespace needs root"
        );
        return;
    }
    let name = "faults_disk";
    let pair = Pair::private(name).await;
    // The target database lives in a tablespace on a 30 MB tmpfs; the source holds more.
    let fs = Tmpfs::mount(root().dir.join(format!("{name}-tablespace")), 30);
    let admin = pair.target.admin("postgres").await;
    for sql in [
        format!("CREATE TABLESPACE small LOCATION '{}'", fs.dir.display()),
        format!("ALTER DATABASE {name} SET TABLESPACE small"),
    ] {
        admin.batch_execute(&sql).await.expect(&sql);
    }
    let mut s = Scenario::new(name, pair, 150_000, false, false).await;
    let t = Instant::now();
    let run = s
        .h2r_async(&[
            "replicate",
            "--until",
            "copied",
            "--jobs",
            "2",
            "--chunk-mb",
            "1",
        ])
        .await;
    s.note(&format!(
        "replicate on a full disk ended in {:.1}s with exit {}",
        t.elapsed().as_secs_f64(),
        run.code
    ));
    let err = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:") || l.trim_start().starts_with("fix:"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("[faults {name}] the tool said:\n{err}");
    // A clean, reported failure: exit 5, the full disk named, the fix (more storage) given, no
    // retrying a failure that retrying cannot fix.
    assert_eq!(run.code, 5, "exit code on a full disk:\n{}", run.stderr);
    assert!(
        err.contains("No space left on device") && err.contains("disk is full"),
        "the error names the full disk:\n{}",
        run.stderr
    );
    assert!(
        err.contains("fix:") && err.contains("storage"),
        "the fix says to grow the storage:\n{}",
        run.stderr
    );
    assert!(
        reconnects(&run.stderr).is_empty(),
        "a full disk is not retried:\n{}",
        run.stderr
    );
    // Nothing false recorded: the rows on the target are exactly those of the chunks recorded
    // done, and the copy is not marked complete.
    let p = s.progress().await;
    assert_eq!(p.phase.as_deref(), Some("copying"), "{}", p.show());
    assert!(p.done < p.total, "{}", p.show());
    let tgt = s.pair.target_master().await;
    let r = tgt
        .query_one(
            "SELECT (SELECT coalesce(sum(rows), 0)::bigint FROM heroku2rds.chunks WHERE done_at IS NOT NULL),
                    (SELECT count(*) FROM public.f_items) + (SELECT count(*) FROM public.f_pairs) + (SELECT count(*) FROM public.f_log)",
            &[],
        )
        .await
        .expect("count");
    let (recorded, present): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(
        recorded, present,
        "rows on the target match the chunks recorded done"
    );
    s.note(&format!(
        "{} recorded, {recorded} rows on the target; growing the disk to 200 MB",
        p.show()
    ));
    drop(tgt);

    fs.resize(200);
    let run = s
        .h2r_async(&[
            "replicate",
            "--until",
            "copied",
            "--jobs",
            "2",
            "--chunk-mb",
            "1",
        ])
        .await;
    assert_eq!(
        run.code, 0,
        "the resume after growing the disk:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("already done"), "{}", run.stderr);
    let ops = s.stop_writer().await;
    s.converge(ops).await;
    // Leave nothing in the tablespace before it goes away.
    drop(s);
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        "DROP TABLESPACE IF EXISTS small".to_string(),
    ] {
        let _ = admin.batch_execute(&sql).await;
    }
}
