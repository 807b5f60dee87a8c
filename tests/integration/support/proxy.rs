//! An in-process TCP fault proxy for the fault-injection tests: it listens on a free loopback
//! port and forwards every connection to a cluster's port, and its handle injects faults between
//! the tool and the server:
//!
//! - [`Proxy::cut`]: close every open connection (FIN both ways) and keep accepting;
//! - [`Proxy::reset`]: the same with RST (`SO_LINGER` 0);
//! - [`Proxy::stall`]: forward nothing, in either direction and on new connections too, for a
//!   while; the connections stay open (as a tunnel whose far side went silent);
//! - [`Proxy::stall_open`]: the same for the connections open now only, new ones flow (as a NAT
//!   that lost the mappings of some flows);
//! - [`Proxy::slow`]: forward with a delay per chunk and a bandwidth cap shared by every
//!   connection (one slow link);
//! - [`Proxy::refuse`]: stop listening for a while (connection refused), then listen again on the
//!   same port.
//!
//! The harness's certificates name `localhost` and 127.0.0.1, so a URL that differs from the
//! cluster's only by the proxy's port still verifies.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How a slow link forwards.
#[derive(Debug, Clone, Copy)]
pub struct Slow {
    /// Added before each forwarded chunk (at most 16 KiB).
    pub delay_per_chunk: Duration,
    /// Bytes per second over all connections and both directions.
    pub bytes_per_sec: u64,
}

/// Counters of a proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed by cut or reset.
    pub closed_by_faults: u64,
    /// Connection attempts that met a closed port.
    pub refusals: u64,
    /// Bytes forwarded, both directions.
    pub bytes: u64,
}

struct Shared {
    name: String,
    upstream: u16,
    /// (generation, with RST): every change closes the connections open at that moment.
    kill: watch::Sender<(u64, bool)>,
    stalled: watch::Sender<Stall>,
    stall_until: Mutex<Option<Instant>>,
    next_seq: AtomicU64,
    refuse_until: watch::Sender<Option<Instant>>,
    slow: Mutex<Option<Slow>>,
    /// When the shared slow link is next free.
    link_free: Mutex<Instant>,
    live: AtomicUsize,
    accepted: AtomicU64,
    closed: AtomicU64,
    refused_windows: AtomicU64,
    bytes: AtomicU64,
}

/// A running proxy; dropping it stops accepting and closes its connections.
pub struct Proxy {
    /// The port to give the tool.
    pub port: u16,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        let (gen, _) = *self.shared.kill.borrow();
        let _ = self.shared.kill.send((gen + 1, false));
        let _ = self.shared.stalled.send(Stall::default());
    }
}

/// Which connections forward nothing.
#[derive(Debug, Clone, Copy, Default)]
struct Stall {
    /// Every connection, new ones included.
    all: bool,
    /// Connections numbered below this one.
    below: u64,
}

impl Stall {
    fn holds(&self, seq: u64) -> bool {
        self.all || seq < self.below
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn bind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("[proxy] rebinding 127.0.0.1:{port}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the proxy cannot listen on 127.0.0.1:{port} again: {e}"),
        }
    }
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:upstream`; `name` prefixes its log lines.
    pub async fn start(name: &str, upstream: u16) -> Proxy {
        let listener = bind(0).await;
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            upstream,
            kill: watch::channel((0, false)).0,
            stalled: watch::channel(Stall::default()).0,
            stall_until: Mutex::new(None),
            next_seq: AtomicU64::new(0),
            refuse_until: watch::channel(None).0,
            slow: Mutex::new(None),
            link_free: Mutex::new(Instant::now()),
            live: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            refused_windows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, port, shared.clone()));
        Proxy {
            port,
            shared,
            accept,
        }
    }

    /// `url` with its port replaced by the proxy's.
    pub fn url(&self, url: &str, cluster_port: u16) -> String {
        let from = format!("localhost:{cluster_port}/");
        assert!(
            url.contains(&from),
            "{url} does not name port {cluster_port}"
        );
        url.replacen(&from, &format!("localhost:{}/", self.port), 1)
    }

    /// Connections open right now.
    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> Stats {
        Stats {
            accepted: self.shared.accepted.load(Ordering::SeqCst),
            closed_by_faults: self.shared.closed.load(Ordering::SeqCst),
            refusals: self.shared.refused_windows.load(Ordering::SeqCst),
            bytes: self.shared.bytes.load(Ordering::SeqCst),
        }
    }

    fn kill(&self, rst: bool) -> usize {
        let n = self.live();
        let (gen, _) = *self.shared.kill.borrow();
        let _ = self.shared.kill.send((gen + 1, rst));
        n
    }

    /// Closes every open connection (FIN both ways); returns how many were open.
    pub fn cut(&self) -> usize {
        let n = self.kill(false);
        eprintln!("[proxy {}] cut {n} connection(s)", self.shared.name);
        n
    }

    /// Closes every open connection with RST; returns how many were open.
    pub fn reset(&self) -> usize {
        let n = self.kill(true);
        eprintln!("[proxy {}] reset {n} connection(s)", self.shared.name);
        n
    }

    /// Forwards nothing for `d` (open and new connections alike); they stay open.
    pub fn stall(&self, d: Duration) {
        self.stall_some(
            d,
            Stall {
                all: true,
                below: 0,
            },
            "every connection, new ones too,",
        );
    }

    /// Forwards nothing for `d` on the connections open now; new connections flow.
    pub fn stall_open(&self, d: Duration) {
        let below = self.shared.next_seq.load(Ordering::SeqCst);
        self.stall_some(d, Stall { all: false, below }, "the open connections");
    }

    fn stall_some(&self, d: Duration, stall: Stall, what: &str) {
        let until = Instant::now() + d;
        *lock(&self.shared.stall_until) = Some(until);
        let _ = self.shared.stalled.send(stall);
        eprintln!(
            "[proxy {}] stalling {what} ({} open) for {:.1}s",
            self.shared.name,
            self.live(),
            d.as_secs_f64()
        );
        let shared = self.shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until.into()).await;
            let mut s = lock(&shared.stall_until);
            if s.is_some_and(|u| u <= Instant::now()) {
                *s = None;
                let _ = shared.stalled.send(Stall::default());
                eprintln!("[proxy {}] stall over", shared.name);
            }
        });
    }

    /// True while stalled.
    pub fn is_stalled(&self) -> bool {
        let s = *self.shared.stalled.borrow();
        s.all || s.below > 0
    }

    /// Makes the link slow (or fast again with None).
    pub fn slow(&self, slow: Option<Slow>) {
        *lock(&self.shared.slow) = slow;
        *lock(&self.shared.link_free) = Instant::now();
        eprintln!("[proxy {}] slow link: {slow:?}", self.shared.name);
    }

    /// Stops listening for `d` (new connections are refused), then listens again.
    pub fn refuse(&self, d: Duration) {
        let _ = self.shared.refuse_until.send(Some(Instant::now() + d));
        self.shared.refused_windows.fetch_add(1, Ordering::SeqCst);
        eprintln!(
            "[proxy {}] refusing new connections for {:.1}s",
            self.shared.name,
            d.as_secs_f64()
        );
    }
}

async fn accept_loop(mut listener: TcpListener, port: u16, shared: Arc<Shared>) {
    let mut refuse = shared.refuse_until.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(client, shared.clone()));
            }
            changed = refuse.changed() => {
                if changed.is_err() {
                    return;
                }
                let until = *refuse.borrow_and_update();
                if let Some(until) = until {
                    drop(listener);
                    tokio::time::sleep_until(until.into()).await;
                    listener = bind(port).await;
                    eprintln!("[proxy {}] accepting again", shared.name);
                }
            }
        }
    }
}

struct Live<'a>(&'a AtomicUsize);
impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    let mut kill = shared.kill.subscribe();
    kill.borrow_and_update();
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", shared.upstream)).await else {
        // The server is down: the client sees the connection close, as it would.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let seq = shared.next_seq.fetch_add(1, Ordering::SeqCst);
    shared.live.fetch_add(1, Ordering::SeqCst);
    let _live = Live(&shared.live);
    let killed = {
        let (cr, cw) = client.split();
        let (ur, uw) = up.split();
        let both = async { tokio::join!(pump(cr, uw, &shared, seq), pump(ur, cw, &shared, seq)) };
        tokio::select! {
            _ = both => None,
            _ = kill.changed() => Some(kill.borrow().1),
        }
    };
    if let Some(rst) = killed {
        shared.closed.fetch_add(1, Ordering::SeqCst);
        if rst {
            let _ = client.set_zero_linger();
            let _ = up.set_zero_linger();
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    shared: &Shared,
    seq: u64,
) {
    let mut stalled = shared.stalled.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let _ = stalled.wait_for(|s| !s.holds(seq)).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let slow = *lock(&shared.slow);
        if let Some(s) = slow {
            let ready = {
                let mut free = lock(&shared.link_free);
                let start = (*free).max(Instant::now());
                *free = start + Duration::from_secs_f64(n as f64 / s.bytes_per_sec.max(1) as f64);
                *free
            };
            tokio::time::sleep_until((ready + s.delay_per_chunk).into()).await;
        }
        let _ = stalled.wait_for(|s| !s.holds(seq)).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        shared.bytes.fetch_add(n as u64, Ordering::SeqCst);
    }
}
