//! The application stand-ins that write while a migration runs: the web dynos of the fake
//! Heroku's apps, and the log of the writes they saw acknowledged (what must never be lost).

use std::path::Path;
use std::time::{Duration, Instant};

/// The stand-in for the app's web dynos: inserts through psql with $DATABASE_URL, and logs each
/// acknowledged (committed) write to $ACK_FILE as "boot n".
pub const WRITER: &str = r#"boot=$(date +%s%N); i=0
while true; do
  i=$((i+1))
  if psql "$DATABASE_URL" -qtAX -v ON_ERROR_STOP=1 -c "INSERT INTO public.writes (boot, n, dyno) VALUES ($boot, $i, '$DYNO'); INSERT INTO public.nokey VALUES ($i, 'w', $boot)" >/dev/null 2>&1; then
    echo "$boot $i" >> "$ACK_FILE"
  fi
  sleep 0.05
done"#;

/// The tables [`WRITER`] writes to, and a few more (a keyed one, a materialized view).
pub const SCHEMA: &str = "
CREATE TABLE public.writes (id bigserial PRIMARY KEY, boot bigint NOT NULL, n int NOT NULL, dyno text NOT NULL);
CREATE TABLE public.items (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO public.items SELECT i, md5(i::text) FROM generate_series(1, 2000) i;
CREATE TABLE public.nokey (a int, b text, boot bigint);
INSERT INTO public.nokey SELECT i, 'fixture', NULL FROM generate_series(1, 100) i;
CREATE MATERIALIZED VIEW public.items_summary AS SELECT count(*) AS n, max(id) AS top FROM public.items;
";

/// The writes the dynos logged as acknowledged: (boot, n).
pub fn acks(p: &Path) -> Vec<(i64, i64)> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// Waits until `ack` lists at least `n` acknowledged writes; fails saying `what` after `limit`.
pub async fn wait_for_acks(ack: &Path, n: usize, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    while acks(ack).len() < n {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
