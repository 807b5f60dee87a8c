//! Live progress of a replication, drawn from [`Status`] snapshots read off the target: bars
//! redrawn in place on a terminal, a plain line now and then otherwise, one JSON object per line
//! for `--json`. Rates are measured between snapshots, so they come from whichever process does
//! the copying (this one or the EC2 worker).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::pg::status::{format_duration, Status};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars redrawn in place (stdout is a terminal).
    Tty,
    /// A line every `PLAIN_EVERY` (logs, pipes).
    Plain,
    /// JSON event lines on stdout.
    Json,
}

/// How often plain mode prints.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// Tables shown with a bar; the rest are summed up in one line.
const MAX_BARS: usize = 8;
const BAR_WIDTH: usize = 24;

/// Per-table figures of the previous snapshot, for rates.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    rows: i64,
    bytes: i64,
}

/// The progress display.
pub struct Progress {
    mode: Mode,
    drawn_lines: usize,
    last_plain: Option<Instant>,
    last_message: String,
    prev: HashMap<String, Seen>,
    rates: HashMap<String, (f64, f64)>,
}

impl Progress {
    /// A display in `mode`.
    pub fn new(mode: Mode) -> Self {
        Progress {
            mode,
            drawn_lines: 0,
            last_plain: None,
            last_message: String::new(),
            prev: HashMap::new(),
            rates: HashMap::new(),
        }
    }

    /// Shows a one-line state while there is nothing to measure yet (e.g. the worker boots).
    /// Repeated messages are shown once.
    pub fn waiting(&mut self, message: &str) {
        if message == self.last_message {
            return;
        }
        self.last_message = message.to_string();
        match self.mode {
            Mode::Json => emit_json(&serde_json::json!({"event": "waiting", "message": message})),
            Mode::Tty => {
                let frame = format!("{message}\n");
                self.redraw(&frame);
            }
            Mode::Plain => println!("{message}"),
        }
    }

    /// Shows a snapshot.
    pub fn update(&mut self, s: &Status) {
        let now = Instant::now();
        for t in &s.tables {
            if let Some(p) = self.prev.get(&t.table) {
                let dt = now.duration_since(p.at).as_secs_f64();
                if dt > 0.2 {
                    let rows = (t.rows - p.rows).max(0) as f64 / dt;
                    let bytes = (t.bytes - p.bytes).max(0) as f64 / dt;
                    // Smooth a little so a bar's rate does not jump with every chunk.
                    let e = self.rates.entry(t.table.clone()).or_insert((rows, bytes));
                    *e = (0.5 * e.0 + 0.5 * rows, 0.5 * e.1 + 0.5 * bytes);
                }
            }
            self.prev.insert(
                t.table.clone(),
                Seen {
                    at: now,
                    rows: t.rows,
                    bytes: t.bytes,
                },
            );
        }
        match self.mode {
            Mode::Json => emit_json(&serde_json::json!({
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
            Mode::Tty => {
                let frame = frame(s, &self.rates);
                self.redraw(&frame);
            }
            Mode::Plain => {
                if self
                    .last_plain
                    .is_none_or(|t| now.duration_since(t) >= PLAIN_EVERY)
                {
                    self.last_plain = Some(now);
                    println!("{}", summary_line(s));
                }
            }
        }
    }

    /// Leaves the last frame on screen and prints one final line.
    pub fn finish(&mut self, s: &Status) {
        self.drawn_lines = 0;
        match self.mode {
            Mode::Json => {}
            _ => println!("{}", summary_line(s)),
        }
    }

    fn redraw(&mut self, frame: &str) {
        let mut out = std::io::stdout().lock();
        if self.drawn_lines > 0 {
            // Up to the first line of the previous frame, then clear to the end of the screen.
            let _ = write!(out, "\x1b[{}A\r\x1b[J", self.drawn_lines);
        }
        let _ = out.write_all(frame.as_bytes());
        let _ = out.flush();
        self.drawn_lines = frame.lines().count();
    }
}

fn emit_json(v: &serde_json::Value) {
    println!("{v}");
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

fn bar(fraction: f64) -> String {
    let full = ((fraction.clamp(0.0, 1.0)) * BAR_WIDTH as f64).round() as usize;
    format!("{}{}", "#".repeat(full), ".".repeat(BAR_WIDTH - full))
}

/// A terminal frame: the overall line, a bar per table still interesting (largest first), the
/// follow line. `rates` holds (rows/s, bytes/s) per table.
fn frame(s: &Status, rates: &HashMap<String, (f64, f64)>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}", summary_line(s));
    let mut shown = 0;
    let mut rest = (0usize, 0i64);
    for t in &s.tables {
        let done = t.chunks_total > 0 && t.chunks_done == t.chunks_total;
        if shown >= MAX_BARS || (done && s.tables.len() > MAX_BARS) {
            rest.0 += 1;
            rest.1 += t.rows;
            continue;
        }
        shown += 1;
        let (rows_s, bytes_s) = rates.get(&t.table).copied().unwrap_or((0.0, 0.0));
        let fraction = if t.chunks_total > 0 {
            t.chunks_done as f64 / t.chunks_total as f64
        } else {
            1.0
        };
        let left = (t.est_bytes - t.bytes).max(0) as f64;
        let eta = if done {
            "done".to_string()
        } else if bytes_s > 0.0 {
            format!("eta {}", format_duration(left / bytes_s))
        } else {
            "eta -".to_string()
        };
        let name: String = if t.table.chars().count() > 32 {
            let tail: String = t
                .table
                .chars()
                .rev()
                .take(31)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("…{tail}")
        } else {
            t.table.clone()
        };
        let _ = writeln!(
            o,
            "  {name:<32} [{}] {:>3.0}% {:>11} rows {:>9.0} rows/s  {eta}",
            bar(fraction),
            100.0 * fraction,
            t.rows,
            rows_s
        );
    }
    if rest.0 > 0 {
        let _ = writeln!(o, "  … {} more table(s), {} rows", rest.0, rest.1);
    }
    o
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

    #[test]
    fn frames_show_bars_rates_and_eta() {
        let s = status(vec![
            table("public.orders", 1, 4, 500),
            table("public.users", 2, 2, 70),
        ]);
        let mut rates = HashMap::new();
        rates.insert("public.orders".to_string(), (250.0, 1000.0));
        let f = frame(&s, &rates);
        let lines: Vec<&str> = f.lines().collect();
        assert_eq!(lines.len(), 3, "{f}");
        assert!(lines[0].contains("copy 50% (3/6 chunks, 570 rows"), "{f}");
        assert!(lines[0].contains("12 change(s) waiting"), "{f}");
        assert!(lines[0].contains("eta 1m 05s"), "{f}");
        assert!(
            lines[1].contains(&format!("[{}{}]", "#".repeat(6), ".".repeat(18))),
            "{f}"
        );
        assert!(lines[1].contains("250 rows/s"), "{f}");
        assert!(lines[2].contains("done"), "{f}");
    }

    #[test]
    fn many_tables_are_summed_up() {
        let tables = (0..20)
            .map(|i| table(&format!("public.t{i:02}"), 1, 1, 10))
            .collect();
        let f = frame(&status(tables), &HashMap::new());
        assert!(f.contains("… 20 more table(s), 200 rows"), "{f}");
        let tables = (0..20)
            .map(|i| table(&format!("public.t{i:02}"), 0, 1, 10))
            .collect();
        let f = frame(&status(tables), &HashMap::new());
        assert_eq!(f.lines().count(), 1 + MAX_BARS + 1, "{f}");
        assert!(f.contains("… 12 more table(s), 120 rows"), "{f}");
    }

    #[test]
    fn rates_come_from_successive_snapshots() {
        let mut p = Progress::new(Mode::Json);
        p.prev.insert(
            "public.orders".into(),
            Seen {
                at: Instant::now() - Duration::from_secs(2),
                rows: 0,
                bytes: 0,
            },
        );
        p.update(&status(vec![table("public.orders", 1, 4, 1000)]));
        let (rows_s, _) = p.rates["public.orders"];
        assert!((400.0..=500.0).contains(&rows_s), "{rows_s}");
    }
}
