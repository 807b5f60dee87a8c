//! Stall detection for database connections.
//!
//! TCP keepalives only prove that the kernel at the other end of the socket is alive. Through an
//! SSH tunnel, a proxy or a NAT that lost its mapping, a connection can stay open while nothing
//! moves on it any more; and statements run without a timeout (an index build may take hours),
//! so the tool would wait forever. Each connection's socket is therefore wrapped to record when
//! bytes last moved, and a watchdog task per connection notices when the tool has been waiting on
//! it for longer than the stall timeout (`HEROKU2RDS_STALL_TIMEOUT_S`, default 60 s). It then
//! asks the server, on a new connection, what that session is doing: a session that is working
//! (a long index build, a lock wait) is left alone; when the new connection cannot be made, the
//! session is gone, blocked sending to us, or idle while we wait for its answer, the connection
//! is closed (and the stuck session terminated when it can be), so that the caller sees a lost
//! connection and retries as after any other.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

use super::ConnSpec;

/// The environment variable that sets the stall timeout, in seconds.
pub const STALL_TIMEOUT_ENV: &str = "HEROKU2RDS_STALL_TIMEOUT_S";

/// How long the tool waits on a connection with no byte moving before it checks on it.
pub fn stall_timeout() -> Duration {
    static T: OnceLock<Duration> = OnceLock::new();
    *T.get_or_init(|| {
        std::env::var(STALL_TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(Duration::from_secs(60), Duration::from_secs)
    })
}

/// Milliseconds since the first call, never 0 (0 means "never").
fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// A process-wide order of events, to tell which of two came last.
fn next_event() -> u64 {
    static EVENTS: AtomicU64 = AtomicU64::new(1);
    EVENTS.fetch_add(1, Ordering::SeqCst)
}

/// Splits the server's side of the protocol into messages (a type byte and a length) to find
/// ReadyForQuery ('Z'), after which the connection is idle until the tool writes again.
#[derive(Debug, Default)]
struct Framer {
    header: [u8; 5],
    have: usize,
    remaining: usize,
}

impl Framer {
    /// Feeds bytes; returns whether a ReadyForQuery message began in them.
    fn feed(&mut self, mut data: &[u8]) -> bool {
        let mut ready = false;
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.remaining = (len as usize).saturating_sub(4);
                self.have = 0;
                ready |= self.header[0] == b'Z';
            }
        }
        ready
    }
}

/// What moved on one connection, and when.
#[derive(Debug, Default)]
pub struct Activity {
    /// When bytes last came in and went out on the socket.
    last_read: AtomicU64,
    last_write: AtomicU64,
    /// Since when a write has been waiting for room in the socket (0: none is).
    write_blocked_since: AtomicU64,
    /// The last read of the socket found nothing: the connection is waiting for bytes (false
    /// when it stopped reading because the tool is not consuming what it already got).
    read_waiting: AtomicBool,
    /// The protocol goes through TLS: the TLS layer reads messages, not the socket layer.
    tls: AtomicBool,
    /// Set once the session is set up: from then on, messages are followed.
    tracking: AtomicBool,
    framer: std::sync::Mutex<Framer>,
    /// Events (see [`next_event`]) of the last message written and the last ReadyForQuery
    /// read: a write after the last ReadyForQuery means an answer is due.
    wrote: AtomicU64,
    ready: AtomicU64,
    dead: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Activity {
    /// Starts following the protocol: the session is set up and idle.
    pub fn start_tracking(&self) {
        if let Ok(mut f) = self.framer.lock() {
            *f = Framer::default();
        }
        self.ready.store(next_event(), Ordering::SeqCst);
        self.tracking.store(true, Ordering::SeqCst);
    }

    /// Makes every further read and write fail, and wakes the connection so it notices.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.reader.wake();
        self.writer.wake();
    }

    /// Since when the tool has been waiting on this connection with nothing moving: it wrote a
    /// request whose answer has not ended (no ReadyForQuery since), and it is waiting to read or
    /// to write. None when it is idle, or when it stopped reading by itself (what it already
    /// received is not consumed yet: a COPY waiting for the other server).
    fn waiting_since(&self) -> Option<u64> {
        if !self.tracking.load(Ordering::SeqCst)
            || self.wrote.load(Ordering::SeqCst) <= self.ready.load(Ordering::SeqCst)
            || !(self.read_waiting.load(Ordering::SeqCst)
                || self.write_blocked_since.load(Ordering::SeqCst) != 0)
        {
            return None;
        }
        let (r, w) = self.moved();
        Some(r.max(w))
    }

    fn moved(&self) -> (u64, u64) {
        (
            self.last_read.load(Ordering::SeqCst),
            self.last_write.load(Ordering::SeqCst),
        )
    }

    fn read_messages(&self, data: &[u8]) {
        if !self.tracking.load(Ordering::SeqCst) || data.is_empty() {
            return;
        }
        let ready = self
            .framer
            .lock()
            .map(|mut f| f.feed(data))
            .unwrap_or(false);
        if ready {
            self.ready.store(next_event(), Ordering::SeqCst);
        }
    }

    fn wrote_messages(&self) {
        if self.tracking.load(Ordering::SeqCst) {
            self.wrote.store(next_event(), Ordering::SeqCst);
        }
    }

    fn dead_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the connection stalled (nothing moved on it) and was closed",
        )
    }
}

/// Where a [`Watched`] stream sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    /// On the socket: times the bytes; reads the messages too unless TLS is on.
    Socket,
    /// Above TLS: reads the messages.
    Tls,
}

/// A stream that records its traffic in an [`Activity`].
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    layer: Layer,
}

impl<S> Watched<S> {
    /// Wraps a socket.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched {
            inner,
            activity,
            layer: Layer::Socket,
        }
    }

    /// Whether this layer carries the protocol in clear.
    fn carries_messages(&self) -> bool {
        self.layer == Layer::Tls || !self.activity.tls.load(Ordering::SeqCst)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let a = self.activity.clone();
        let socket = self.layer == Layer::Socket;
        if socket && a.dead.load(Ordering::SeqCst) {
            return Poll::Ready(Err(Activity::dead_error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => {
                if socket {
                    a.read_waiting.store(true, Ordering::SeqCst);
                    a.reader.register(cx.waker());
                    if a.dead.load(Ordering::SeqCst) {
                        return Poll::Ready(Err(Activity::dead_error()));
                    }
                }
                Poll::Pending
            }
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if socket {
                    a.read_waiting.store(false, Ordering::SeqCst);
                    if !new.is_empty() {
                        a.last_read.store(now_ms(), Ordering::SeqCst);
                    }
                }
                if self.carries_messages() {
                    a.read_messages(new);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let a = self.activity.clone();
        let socket = self.layer == Layer::Socket;
        if socket && a.dead.load(Ordering::SeqCst) {
            return Poll::Ready(Err(Activity::dead_error()));
        }
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Pending => {
                if socket {
                    let _ = a.write_blocked_since.compare_exchange(
                        0,
                        now_ms(),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                    a.writer.register(cx.waker());
                    if a.dead.load(Ordering::SeqCst) {
                        return Poll::Ready(Err(Activity::dead_error()));
                    }
                }
                Poll::Pending
            }
            Poll::Ready(r) => {
                let wrote = matches!(r, Ok(n) if n > 0);
                if socket {
                    a.write_blocked_since.store(0, Ordering::SeqCst);
                    if wrote {
                        a.last_write.store(now_ms(), Ordering::SeqCst);
                    }
                }
                if wrote && self.carries_messages() {
                    a.wrote_messages();
                }
                Poll::Ready(r)
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.layer == Layer::Socket && self.activity.dead.load(Ordering::SeqCst) {
            return Poll::Ready(Err(Activity::dead_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: TlsStream + Unpin> TlsStream for Watched<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

/// A TLS connector whose streams are [`Watched`] above TLS, where the protocol is in clear.
pub struct WatchedTls<C> {
    inner: C,
    activity: Arc<Activity>,
}

impl<C> WatchedTls<C> {
    /// Wraps the streams `inner` makes.
    pub fn new(inner: C, activity: Arc<Activity>) -> Self {
        WatchedTls { inner, activity }
    }
}

impl<S, C> TlsConnect<S> for WatchedTls<C>
where
    C: TlsConnect<S>,
    C::Future: Send + 'static,
    C::Stream: Send + 'static,
    C::Error: 'static,
{
    type Stream = Watched<C::Stream>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, C::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let activity = self.activity;
        activity.tls.store(true, Ordering::SeqCst);
        let handshake = self.inner.connect(stream);
        Box::pin(async move {
            let s = handshake.await?;
            Ok(Watched {
                inner: s,
                activity,
                layer: Layer::Tls,
            })
        })
    }
}

/// What the server says about a session the tool has been waiting on.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Working (or unknown): keep waiting.
    Busy,
    /// Nothing will come: close the connection.
    Stalled(String),
}

/// Decides from the session's `state` and `wait_event` in pg_stat_activity (None: no such
/// session). Pure.
fn judge(row: Option<(Option<&str>, Option<&str>)>, write_blocked: bool) -> Verdict {
    let Some((state, wait)) = row else {
        return Verdict::Stalled("its server session is gone".into());
    };
    match (state, wait) {
        (Some("active"), Some("ClientWrite")) => {
            Verdict::Stalled("the server is blocked sending to us, but nothing arrives".into())
        }
        (Some("active"), Some("ClientRead")) if write_blocked => {
            Verdict::Stalled("the server is waiting for data that we cannot send".into())
        }
        (Some(s), _) if s.starts_with("idle") => Verdict::Stalled(format!(
            "the server session is {s}, waiting for us while we wait for it"
        )),
        _ => Verdict::Busy,
    }
}

/// Asks the server about session `pid` on a new connection (no longer than a connect timeout
/// plus 10 s); terminates the session when it is stuck.
async fn probe(spec: &ConnSpec, pid: i32, write_blocked: bool) -> Verdict {
    let check = async {
        let c = spec.connect_unwatched().await?;
        let row = c
            .query_opt(
                "SELECT state, wait_event FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .map_err(|e| super::query_error(e, "checking a silent session"))?;
        let verdict = judge(row.as_ref().map(|r| (r.get(0), r.get(1))), write_blocked);
        if row.is_some() && verdict != Verdict::Busy {
            // Its locks and open transaction go with it, for the retry.
            let _ = c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await;
        }
        Ok::<_, crate::error::Error>(verdict)
    };
    match tokio::time::timeout(spec.connect_timeout() + Duration::from_secs(10), check).await {
        Err(_) => Verdict::Stalled("a new connection to the server got no answer either".into()),
        Ok(Err(e)) if e.is_transient() => {
            Verdict::Stalled(format!("a new connection to the server failed too: {e:#}"))
        }
        // Refused for another reason (no free slots, privileges): not a proof of a stall.
        Ok(Err(e)) => {
            tracing::debug!("could not check on a silent session: {e:#}");
            Verdict::Busy
        }
        Ok(Ok(v)) => v,
    }
}

/// Watches one connection until it ends; closes it when it stalls.
pub async fn watch(spec: ConnSpec, pid: i32, activity: Weak<Activity>) {
    let limit = stall_timeout();
    let tick = (limit / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    let mut next_probe = 0u64;
    loop {
        tokio::time::sleep(tick).await;
        let Some(a) = activity.upgrade() else { return };
        if a.dead.load(Ordering::SeqCst) {
            return;
        }
        let Some(since) = a.waiting_since() else {
            continue;
        };
        let now = now_ms();
        let waited = now.saturating_sub(since);
        if waited < limit.as_millis() as u64 || now < next_probe {
            continue;
        }
        let moved = a.moved();
        let write_blocked = a.write_blocked_since.load(Ordering::SeqCst) != 0;
        drop(a);
        let verdict = probe(&spec, pid, write_blocked).await;
        let Some(a) = activity.upgrade() else { return };
        if a.moved() != moved {
            continue;
        }
        match verdict {
            Verdict::Busy => {
                tracing::debug!(
                    "{spec}: no byte for {}s, but the server is working on it",
                    waited / 1000
                );
                next_probe = now_ms() + limit.as_millis() as u64;
            }
            Verdict::Stalled(why) => {
                tracing::warn!(
                    "{spec}: connection stalled: nothing moved for {:.0}s while waiting for the server, and {why}; closing it",
                    waited as f64 / 1000.0
                );
                a.kill();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sessions_that_cannot_answer_are_judged_stalled() {
        let stalled = |v: Verdict| matches!(v, Verdict::Stalled(_));
        assert!(stalled(judge(None, false)));
        assert!(stalled(judge(
            Some((Some("active"), Some("ClientWrite"))),
            false
        )));
        assert!(stalled(judge(
            Some((Some("idle"), Some("ClientRead"))),
            false
        )));
        assert!(stalled(judge(
            Some((Some("idle in transaction"), Some("ClientRead"))),
            false
        )));
        assert!(stalled(judge(
            Some((Some("active"), Some("ClientRead"))),
            true
        )));
        // Working: a long index build, a lock wait, a COPY waiting for our next rows.
        assert_eq!(judge(Some((Some("active"), None)), false), Verdict::Busy);
        assert_eq!(
            judge(Some((Some("active"), Some("transactionid"))), false),
            Verdict::Busy
        );
        assert_eq!(
            judge(Some((Some("active"), Some("ClientRead"))), false),
            Verdict::Busy
        );
        // Not visible to this role: unknown, left alone.
        assert_eq!(judge(Some((None, None)), false), Verdict::Busy);
    }

    fn msg(t: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![t];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn ready_for_query_is_found_across_split_reads() {
        // RowDescription-like, DataRow with a 'Z' inside, CommandComplete, ReadyForQuery.
        let stream = [
            msg(b'T', b"abc"),
            msg(b'D', b"ZZZZZZZZZZ"),
            msg(b'C', b"SELECT 1\0"),
            msg(b'Z', b"I"),
        ]
        .concat();
        for split in 1..stream.len() {
            let mut f = Framer::default();
            let (a, b) = stream.split_at(split);
            let ready = [f.feed(a), f.feed(b)];
            let z_at = stream.len() - 6;
            let expect = if split >= z_at + 5 {
                [true, false]
            } else {
                [false, true]
            };
            assert_eq!(ready, expect, "split at {split}");
        }
        let mut f = Framer::default();
        assert!(!f.feed(&msg(b'D', b"Z\0\0\0\x05I")));
    }

    #[test]
    fn a_connection_is_waited_on_from_a_write_until_ready_for_query() {
        let a = Activity::default();
        a.wrote_messages();
        assert_eq!(a.waiting_since(), None, "not tracked during the handshake");
        a.start_tracking();
        assert_eq!(a.waiting_since(), None, "idle after set-up");
        a.last_write.store(now_ms(), Ordering::SeqCst);
        a.wrote_messages();
        a.read_waiting.store(true, Ordering::SeqCst);
        assert!(a.waiting_since().is_some(), "a query is out");
        a.read_messages(&msg(b'D', b"row"));
        assert!(a.waiting_since().is_some(), "still answering");
        a.read_waiting.store(false, Ordering::SeqCst);
        assert_eq!(
            a.waiting_since(),
            None,
            "not reading: the tool has not consumed what came"
        );
        a.write_blocked_since.store(now_ms(), Ordering::SeqCst);
        assert!(a.waiting_since().is_some(), "a write waits for room");
        a.write_blocked_since.store(0, Ordering::SeqCst);
        a.read_waiting.store(true, Ordering::SeqCst);
        a.read_messages(&msg(b'Z', b"T"));
        assert_eq!(a.waiting_since(), None, "answered: idle in a transaction");
    }

    #[tokio::test]
    async fn a_killed_connection_fails_its_pending_read() {
        use tokio::io::AsyncReadExt;
        let (client, _server) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut watched = Watched::new(client, activity.clone());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            watched.read(&mut buf).await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        activity.kill();
        let r = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the read ends")
            .expect("joined");
        assert_eq!(r.expect_err("fails").kind(), io::ErrorKind::TimedOut);
    }
}
