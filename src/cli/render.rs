//! Shows the library's progress [`Event`]s: bars on a terminal (stderr), plain lines in logs
//! (stderr, a snapshot line every [`PLAIN_EVERY`] at most), JSON lines on stdout for `--json`.
//! Results stay on stdout; everything here is progress.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::pg::progress::{Event, Sink, Unit};
use crate::pg::status::{format_duration, Status};

/// How often plain mode prints a snapshot (or a count) line.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// Tables shown with a bar on a terminal; the rest are counted in the overall line.
const MAX_BARS: usize = 8;

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars redrawn in place on stderr.
    Terminal,
    /// Plain lines on stderr.
    Plain,
    /// JSON event lines on stdout.
    Json,
}

impl Mode {
    /// JSON lines when `json_lines`, bars when stderr is a terminal, plain lines otherwise.
    pub fn detect(json_lines: bool) -> Mode {
        if json_lines {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        }
    }
}

/// The sink that shows events in `mode`.
pub fn sink(mode: Mode) -> Box<dyn Sink> {
    match mode {
        Mode::Terminal => Box::new(Bars::new(terminal().clone())),
        Mode::Plain => Box::new(Lines::plain(std::io::stderr())),
        Mode::Json => Box::new(Lines::json(std::io::stdout())),
    }
}

/// The process's one set of terminal bars (on stderr), shared with the log writer so that log
/// lines are printed above the bars instead of through them.
fn terminal() -> &'static MultiProgress {
    static TERMINAL: OnceLock<MultiProgress> = OnceLock::new();
    TERMINAL.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// A `tracing` writer for stderr that hides the bars while a log line is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        terminal().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One line: where the copy and the follow stand.
pub fn summary_line(s: &Status) -> String {
    let pct = percent(s.chunks_done, s.chunks_total);
    let mut line = format!(
        "[{}] copy {pct:.0}% ({}/{} chunks, {} rows, {:.1} MB, {:.1} MB/s, eta {})",
        s.phase,
        s.chunks_done,
        s.chunks_total,
        s.rows,
        s.bytes as f64 / 1e6,
        s.bytes_per_second / 1e6,
        s.eta_seconds.map_or("-".into(), format_duration)
    );
    if let Some(b) = s.backlog {
        let _ = write!(
            line,
            "; follow: {b} change(s) waiting, oldest {}, {} applied{}",
            s.oldest_change_s.map_or("-".into(), format_duration),
            s.applied_changes,
            if s.caught_up { ", caught up" } else { "" }
        );
    }
    line
}

fn percent(done: i64, total: i64) -> f64 {
    if total > 0 {
        100.0 * done as f64 / total as f64
    } else {
        100.0
    }
}

/// `3/10 tables`, `12.3 MB of 40.0 MB`, `12.3 MB`.
fn count_line(unit: Unit, done: u64, total: Option<u64>) -> String {
    match (unit, total) {
        (Unit::Items(what), Some(t)) => format!("{done}/{t} {what}"),
        (Unit::Items(what), None) => format!("{done} {what}"),
        (Unit::Bytes, Some(t)) => format!("{:.1} MB of {:.1} MB", mb(done), mb(t)),
        (Unit::Bytes, None) => format!("{:.1} MB", mb(done)),
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// The JSON line of an event; None for events JSON output leaves out (rendered text, counts,
/// the final snapshot: `--json` ends with the command's own result).
fn json_line(e: &Event) -> Option<serde_json::Value> {
    match e {
        Event::Step { phase, message } => {
            Some(json!({"event": "step", "phase": phase, "message": message}))
        }
        Event::Info { phase, message } => {
            Some(json!({"event": "info", "phase": phase, "message": message}))
        }
        Event::Waiting { message } => Some(json!({"event": "waiting", "message": message})),
        Event::Snapshot(s) => Some(json!({
            "event": "progress",
            "phase": s.phase,
            "chunks_done": s.chunks_done,
            "chunks_total": s.chunks_total,
            "rows": s.rows,
            "bytes": s.bytes,
            "eta_seconds": s.eta_seconds,
            "backlog": s.backlog,
            "oldest_change_s": s.oldest_change_s,
            "caught_up": s.caught_up,
            "applied_changes": s.applied_changes,
        })),
        Event::Finished(_) | Event::Advance { .. } | Event::Text(_) => None,
    }
}

/// Line renderers: plain text for logs and pipes, or JSON lines.
pub struct Lines<W: Write + Send> {
    json: bool,
    state: Mutex<LineState<W>>,
}

/// What a snapshot counts (chunks, rows, changes applied, backlog): no line while it stays put.
type Moved = (i64, i64, i64, Option<i64>);

struct LineState<W> {
    out: W,
    last_waiting: String,
    /// When the last snapshot line was printed, and what it counted.
    last_snapshot: Option<(Instant, Moved)>,
    /// When each phase's last count line was printed.
    last_count: HashMap<String, Instant>,
}

impl<W: Write + Send> Lines<W> {
    /// Plain lines into `out`.
    pub fn plain(out: W) -> Self {
        Self::new(out, false)
    }

    /// JSON lines into `out`.
    pub fn json(out: W) -> Self {
        Self::new(out, true)
    }

    fn new(out: W, json: bool) -> Self {
        Lines {
            json,
            state: Mutex::new(LineState {
                out,
                last_waiting: String::new(),
                last_snapshot: None,
                last_count: HashMap::new(),
            }),
        }
    }

    /// The writer back (tests read what was written).
    pub fn into_inner(self) -> W {
        let state = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        state.out
    }

    fn plain_text(st: &mut LineState<W>, e: Event, now: Instant) -> Option<String> {
        match e {
            Event::Step { message, .. } => Some(format!("\n==> {message}")),
            Event::Info { message, .. } => Some(format!("    {message}")),
            Event::Waiting { .. } => None,
            Event::Snapshot(s) => {
                // A line now and then, and none while nothing moves (a follower at rest).
                let key = (s.chunks_done, s.rows, s.applied_changes, s.backlog);
                let due = st
                    .last_snapshot
                    .is_none_or(|(at, k)| now.duration_since(at) >= PLAIN_EVERY && k != key);
                due.then(|| {
                    st.last_snapshot = Some((now, key));
                    summary_line(&s)
                })
            }
            Event::Finished(s) => Some(summary_line(&s)),
            Event::Advance {
                phase,
                unit,
                done,
                total,
            } => {
                let complete = total.is_some_and(|t| done >= t);
                let due = st
                    .last_count
                    .get(&phase)
                    .is_none_or(|at| now.duration_since(*at) >= PLAIN_EVERY);
                (due || complete).then(|| {
                    st.last_count.insert(phase.clone(), now);
                    format!("    {phase}: {}", count_line(unit, done, total))
                })
            }
            Event::Text(t) => Some(t.trim_end_matches('\n').to_string()),
        }
    }
}

impl<W: Write + Send> Sink for Lines<W> {
    fn emit(&self, e: Event) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Event::Waiting { message } = &e {
            // Repeated messages are shown once.
            if *message == st.last_waiting {
                return;
            }
            st.last_waiting = message.clone();
        }
        let line = if self.json {
            json_line(&e).map(|v| v.to_string())
        } else if let Event::Waiting { message } = e {
            Some(message)
        } else {
            Self::plain_text(&mut st, e, Instant::now())
        };
        if let Some(line) = line {
            let _ = writeln!(st.out, "{line}");
            let _ = st.out.flush();
        }
    }
}

/// Bars on the terminal: an overall line and a bar per table being copied (rows, bytes, rate,
/// ETA), a bar per counted phase, a spinner while waiting; steps and details printed above.
pub struct Bars {
    multi: MultiProgress,
    state: Mutex<BarState>,
}

#[derive(Default)]
struct BarState {
    waiting: Option<(String, ProgressBar)>,
    overall: Option<ProgressBar>,
    tables: HashMap<String, ProgressBar>,
    counts: HashMap<String, ProgressBar>,
}

impl BarState {
    fn clear_waiting(&mut self) {
        if let Some((_, b)) = self.waiting.take() {
            b.finish_and_clear();
        }
    }

    fn clear_replication(&mut self) {
        for (_, b) in self.tables.drain() {
            b.finish_and_clear();
        }
        if let Some(b) = self.overall.take() {
            b.finish_and_clear();
        }
    }

    fn clear_all(&mut self) {
        self.clear_waiting();
        self.clear_replication();
        // Counts stay on screen, finished where they stopped.
        for (_, b) in self.counts.drain() {
            b.abandon();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#>.")
}

impl Bars {
    /// Bars drawn by `multi`.
    pub fn new(multi: MultiProgress) -> Self {
        Bars {
            multi,
            state: Mutex::new(BarState::default()),
        }
    }

    fn println(&self, text: &str) {
        let _ = self.multi.println(text);
    }

    fn snapshot(&self, st: &mut BarState, s: &Status) {
        st.clear_waiting();
        let overall = st.overall.get_or_insert_with(|| {
            self.multi
                .add(ProgressBar::new(1).with_style(style("[{bar:24.cyan/blue}] {wide_msg}")))
        });
        overall.set_length(s.chunks_total.max(1) as u64);
        overall.set_position(if s.chunks_total > 0 {
            s.chunks_done as u64
        } else {
            1
        });
        // Tables still copying get a bar, as many as fit; finished ones leave.
        let copying: Vec<_> = s
            .tables
            .iter()
            .filter(|t| t.chunks_total > 0 && t.chunks_done < t.chunks_total)
            .collect();
        let shown: Vec<_> = copying.iter().take(MAX_BARS).collect();
        st.tables.retain(|name, b| {
            let keep = shown.iter().any(|t| &t.table == name);
            if !keep {
                b.finish_and_clear();
            }
            keep
        });
        for t in &shown {
            let bar = st.tables.entry(t.table.clone()).or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(1).with_style(style(
                    "  {prefix:32!} [{bar:24}] {percent:>3}% {bytes:>10} {binary_bytes_per_sec:>12} eta {eta:>4}  {msg}",
                )));
                b.set_prefix(t.table.clone());
                b
            });
            bar.set_length(t.est_bytes.max(t.bytes).max(1) as u64);
            bar.set_position(t.bytes.max(0) as u64);
            bar.set_message(format!("{} rows", t.rows));
        }
        let mut msg = summary_line(s);
        if copying.len() > shown.len() {
            let _ = write!(msg, "; {} more table(s)", copying.len() - shown.len());
        }
        overall.set_message(msg);
    }

    fn count(&self, st: &mut BarState, phase: String, unit: Unit, done: u64, total: Option<u64>) {
        st.clear_waiting();
        let bar = st.counts.entry(phase.clone()).or_insert_with(|| {
            let template = match (unit, total) {
                (Unit::Bytes, Some(_)) => {
                    "{prefix:>10} [{bar:24}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
                }
                (Unit::Bytes, None) => {
                    "{spinner} {prefix:>8} {bytes} {binary_bytes_per_sec} {elapsed}"
                }
                (Unit::Items(_), Some(_)) => "{prefix:>10} [{bar:24}] {pos}/{len} {msg} {elapsed}",
                (Unit::Items(_), None) => "{spinner} {prefix:>8} {pos} {msg} {elapsed}",
            };
            let b = self
                .multi
                .add(ProgressBar::new(total.unwrap_or(0)).with_style(style(template)));
            b.set_prefix(phase);
            if let Unit::Items(what) = unit {
                b.set_message(what);
            }
            if total.is_none() {
                b.enable_steady_tick(Duration::from_millis(200));
            }
            b
        });
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(done);
        if total.is_some_and(|t| done >= t) {
            bar.finish();
        }
    }
}

impl Sink for Bars {
    fn emit(&self, e: Event) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            Event::Step { message, .. } => {
                st.clear_all();
                self.println(&format!("\n==> {message}"));
            }
            Event::Info { message, .. } => self.println(&format!("    {message}")),
            Event::Waiting { message } => {
                if st.waiting.as_ref().is_some_and(|(m, _)| *m == message) {
                    return;
                }
                st.clear_waiting();
                let b = self
                    .multi
                    .add(ProgressBar::new_spinner().with_style(style("{spinner} {wide_msg}")));
                b.set_message(message.clone());
                b.enable_steady_tick(Duration::from_millis(120));
                st.waiting = Some((message, b));
            }
            Event::Snapshot(s) => self.snapshot(&mut st, &s),
            Event::Finished(s) => {
                st.clear_waiting();
                st.clear_replication();
                self.println(&summary_line(&s));
            }
            Event::Advance {
                phase,
                unit,
                done,
                total,
            } => self.count(&mut st, phase, unit, done, total),
            Event::Text(t) => self.println(t.trim_end_matches('\n')),
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        st.clear_waiting();
        st.clear_replication();
        for (_, b) in st.counts.drain() {
            b.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::status::TableProgress;

    fn status(tables: Vec<TableProgress>) -> Status {
        Status {
            source: "postgresql://app@h:5432/db".into(),
            phase: "copying".into(),
            runner: None,
            worker_source_outdated: false,
            worker_report: None,
            verification: None,
            chunks_done: tables.iter().map(|t| t.chunks_done).sum(),
            chunks_total: tables.iter().map(|t| t.chunks_total).sum(),
            rows: tables.iter().map(|t| t.rows).sum(),
            bytes: tables.iter().map(|t| t.bytes).sum(),
            copy_seconds: 10.0,
            bytes_per_second: 2e6,
            rows_per_second: 1000.0,
            eta_seconds: Some(65.0),
            schema_items_done: 0,
            backlog: Some(12),
            oldest_change_s: Some(3.0),
            caught_up: false,
            applied_changes: 40,
            apply_rate: None,
            stopped_reason: None,
            follow_updated_s: Some(1.0),
            tables,
        }
    }

    fn table(name: &str, done: i64, total: i64, rows: i64) -> TableProgress {
        TableProgress {
            table: name.into(),
            mode: "copy".into(),
            chunks_done: done,
            chunks_total: total,
            rows,
            bytes: rows * 100,
            est_bytes: total * 1000,
        }
    }

    fn snapshot(s: &Status) -> Event {
        Event::Snapshot(Box::new(s.clone()))
    }

    fn text(l: Lines<Vec<u8>>) -> String {
        String::from_utf8(l.into_inner()).expect("utf-8")
    }

    #[test]
    fn the_summary_line_says_copy_and_follow() {
        let s = status(vec![
            table("public.orders", 1, 4, 500),
            table("public.users", 2, 2, 70),
        ]);
        let line = summary_line(&s);
        assert!(
            line.starts_with("[copying] copy 50% (3/6 chunks, 570 rows"),
            "{line}"
        );
        assert!(line.contains("2.0 MB/s, eta 1m 05s"), "{line}");
        assert!(
            line.contains("; follow: 12 change(s) waiting, oldest 3s, 40 applied"),
            "{line}"
        );
        let mut s = s;
        s.caught_up = true;
        assert!(summary_line(&s).ends_with("40 applied, caught up"));
    }

    #[test]
    fn plain_lines_show_steps_details_and_a_snapshot_now_and_then() {
        let l = Lines::plain(Vec::new());
        let sink: &dyn Sink = &l;
        sink.step("replicate", "[3/6] replicate: in this process");
        sink.info("replicate", "caught up: every table copied");
        sink.waiting("starting replication");
        sink.waiting("starting replication");
        let s = status(vec![table("public.orders", 1, 4, 500)]);
        sink.emit(snapshot(&s));
        // Within PLAIN_EVERY: not again.
        sink.emit(snapshot(&s));
        sink.emit(Event::Finished(Box::new(s.clone())));
        sink.emit(Event::Text("the plan\n  - create a bucket\n".into()));
        let out = text(l);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "",
                "==> [3/6] replicate: in this process",
                "    caught up: every table copied",
                "starting replication",
                &summary_line(&s),
                &summary_line(&s),
                "the plan",
                "  - create a bucket",
            ],
            "{out}"
        );
    }

    #[test]
    fn plain_snapshots_wait_for_the_interval_and_for_a_change() {
        let l = Lines::plain(Vec::new());
        let long_ago = Instant::now() - PLAIN_EVERY - Duration::from_secs(1);
        let s = status(vec![table("public.orders", 1, 4, 500)]);
        let mut st = l.state.lock().expect("lock");
        let key = (s.chunks_done, s.rows, s.applied_changes, s.backlog);
        st.last_snapshot = Some((long_ago, key));
        let now = Instant::now();
        assert_eq!(
            Lines::plain_text(&mut st, snapshot(&s), now),
            None,
            "nothing moved"
        );
        let mut moved = s.clone();
        moved.applied_changes += 1;
        assert!(Lines::plain_text(&mut st, snapshot(&moved), now).is_some());
        assert_eq!(
            Lines::plain_text(&mut st, snapshot(&moved), now),
            None,
            "too soon"
        );
    }

    #[test]
    fn plain_counts_are_throttled_but_the_last_is_shown() {
        let l = Lines::plain(Vec::new());
        let sink: &dyn Sink = &l;
        sink.advance("verify", Unit::Items("tables"), 1, Some(3));
        sink.advance("verify", Unit::Items("tables"), 2, Some(3));
        sink.advance("verify", Unit::Items("tables"), 3, Some(3));
        sink.advance("archive", Unit::Bytes, 2_500_000, None);
        let out = text(l);
        assert_eq!(
            out,
            "    verify: 1/3 tables\n    verify: 3/3 tables\n    archive: 2.5 MB\n"
        );
    }

    #[test]
    fn json_lines_keep_the_event_names_and_fields() {
        let l = Lines::json(Vec::new());
        let sink: &dyn Sink = &l;
        sink.step("plan", "[1/6] plan");
        sink.info("plan", "detail");
        sink.waiting("starting replication");
        sink.waiting("starting replication");
        let s = status(vec![table("public.orders", 1, 4, 500)]);
        sink.emit(snapshot(&s));
        sink.emit(Event::Finished(Box::new(s)));
        sink.emit(Event::Text("the plan".into()));
        sink.advance("verify", Unit::Items("tables"), 1, Some(3));
        let out = text(l);
        let events: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(events.len(), 4, "{out}");
        assert_eq!(
            events[0],
            json!({"event": "step", "phase": "plan", "message": "[1/6] plan"})
        );
        assert_eq!(
            events[1],
            json!({"event": "info", "phase": "plan", "message": "detail"})
        );
        assert_eq!(
            events[2],
            json!({"event": "waiting", "message": "starting replication"})
        );
        assert_eq!(
            events[3],
            json!({
                "event": "progress", "phase": "copying", "chunks_done": 1, "chunks_total": 4,
                "rows": 500, "bytes": 50000, "eta_seconds": 65.0, "backlog": 12,
                "oldest_change_s": 3.0, "caught_up": false, "applied_changes": 40,
            })
        );
    }

    #[test]
    fn bars_follow_the_tables_being_copied() {
        let bars = Bars::new(MultiProgress::with_draw_target(ProgressDrawTarget::hidden()));
        let tables: Vec<_> = (0..12)
            .map(|i| table(&format!("public.t{i:02}"), 0, 2, 10))
            .collect();
        bars.emit(snapshot(&status(tables.clone())));
        {
            let st = bars.state.lock().expect("lock");
            assert_eq!(st.tables.len(), MAX_BARS);
            let msg = st.overall.as_ref().expect("overall").message();
            assert!(msg.ends_with("; 4 more table(s)"), "{msg}");
        }
        let mut later = tables;
        for t in later.iter_mut().take(10) {
            t.chunks_done = 2;
        }
        bars.emit(snapshot(&status(later.clone())));
        {
            let st = bars.state.lock().expect("lock");
            let mut names: Vec<_> = st.tables.keys().cloned().collect();
            names.sort();
            assert_eq!(names, ["public.t10", "public.t11"]);
        }
        bars.emit(Event::Finished(Box::new(status(later))));
        let st = bars.state.lock().expect("lock");
        assert!(st.tables.is_empty() && st.overall.is_none());
    }
}
