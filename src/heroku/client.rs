//! The HTTP client of the Heroku Platform API and the Heroku Postgres data API: authentication,
//! the API's headers, paging by `Range`/`Next-Range`, rate limits, retries of idempotent requests,
//! and Heroku's error bodies mapped to [`Error`]s that say what to do.
//!
//! The token travels only to the two configured Heroku API base URLs. Anything else (a backup's
//! signed download URL) goes through [`Client::download`], whose HTTP client has no credentials.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::{Cause, Error, Kind, Result};
use crate::retry::Backoff;

pub use super::poll::Pace;

/// The media type every request accepts; without it the API answers 406.
pub const ACCEPT_V3: &str = "application/vnd.heroku+json; version=3";
/// The default Platform API base URL.
pub const DEFAULT_API_URL: &str = "https://api.heroku.com";
/// The default Postgres data API base URL.
pub const DEFAULT_DATA_API_URL: &str = "https://api.data.heroku.com";

/// A secret string (the API token). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where the token came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// The `HEROKU_API_KEY` environment variable.
    Env,
    /// The `machine api.heroku.com` entry of `~/.netrc`.
    Netrc,
}

/// Everything the client needs, resolved by the binary (no environment is read in here).
#[derive(Debug, Clone)]
pub struct Config {
    /// Platform API base URL.
    pub api_url: Url,
    /// Data API base URL.
    pub data_url: Url,
    /// The API token.
    pub token: Secret,
    /// Where the token came from.
    pub token_source: TokenSource,
    /// Retry policy for idempotent requests.
    pub retry: RetryPolicy,
}

impl Config {
    /// Builds a config from raw values (`None` base URLs mean Heroku's).
    pub fn new(
        api_url: Option<&str>,
        data_url: Option<&str>,
        token: Secret,
        token_source: TokenSource,
    ) -> Result<Self> {
        let parse = |raw: Option<&str>, default: &str, var: &str| -> Result<Url> {
            let raw = raw.filter(|s| !s.is_empty()).unwrap_or(default);
            let url = Url::parse(raw.trim_end_matches('/')).map_err(|e| {
                Error::usage(format!("{var} is not a valid URL"))
                    .with_source(e)
                    .with_fix(format!(
                        "set {var} to a base URL such as {default}, or unset it"
                    ))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::usage(format!("{var} must be an http(s) URL")));
            }
            Ok(url)
        };
        Ok(Config {
            api_url: parse(api_url, DEFAULT_API_URL, "HEROKU_API_URL")?,
            data_url: parse(data_url, DEFAULT_DATA_API_URL, "HEROKU_DATA_API_URL")?,
            token,
            token_source,
            retry: RetryPolicy::default(),
        })
    }
}

/// Finds the API token: `HEROKU_API_KEY` first, else the `machine api.heroku.com` entry of the
/// given `.netrc` text.
pub fn resolve_token(env_key: Option<&str>, netrc: Option<&str>) -> Result<(Secret, TokenSource)> {
    if let Some(k) = env_key.map(str::trim).filter(|k| !k.is_empty()) {
        return Ok((Secret::new(k), TokenSource::Env));
    }
    if let Some(t) = netrc.and_then(|text| netrc_password(text, "api.heroku.com")) {
        return Ok((Secret::new(t), TokenSource::Netrc));
    }
    Err(Error::usage("no Heroku API token: HEROKU_API_KEY is not set and ~/.netrc has no entry for api.heroku.com")
        .with_fix("export HEROKU_API_KEY=\"$(heroku auth:token)\" (recent Heroku CLIs keep the token in the system keychain, not in ~/.netrc)"))
}

/// Reads `~/.netrc` if it exists (for [`resolve_token`]).
pub fn read_netrc(home: &Path) -> Option<String> {
    std::fs::read_to_string(home.join(".netrc")).ok()
}

/// The password of `machine` in a `.netrc` text (tokens separated by any whitespace).
pub fn netrc_password(text: &str, machine: &str) -> Option<String> {
    let mut tokens = text.split_whitespace();
    let mut in_machine = false;
    while let Some(t) = tokens.next() {
        match t {
            "machine" => in_machine = tokens.next() == Some(machine),
            "default" => in_machine = false,
            "password" if in_machine => return tokens.next().map(str::to_string),
            "login" | "password" | "account" => {
                tokens.next();
            }
            "macdef" => in_machine = false,
            _ => {}
        }
    }
    None
}

/// Which of the two APIs a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// The Platform API (apps, formation, dynos, config vars, add-ons).
    Platform,
    /// The Postgres data API (databases, backups).
    Data,
}

/// How retries back off: a few quick retries of idempotent requests after a server error or a
/// broken connection, and minutes of patience for the rate limit (429).
///
/// A 429 is answered before anything is carried out, so it is retried for every method. The
/// account's budget refills at about 75 requests a minute and is shared by every client of the
/// account (CI deploys, autoscalers, the dashboard), so a burst of someone else's can empty it
/// for minutes: the client waits up to [`RetryPolicy::rate_limit_budget`] in all (5 minutes by
/// default), honouring `Retry-After`, else backing off from 2 s to 30 s between tries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all after server errors and broken connections (1 = no retry).
    pub attempts: u32,
    /// First delay; doubled every retry.
    pub base: Duration,
    /// Longest single delay.
    pub max_delay: Duration,
    /// Longest total wait for the rate limit (429) on one request before giving up.
    pub rate_limit_budget: Duration,
    /// First wait after a 429 without `Retry-After`; doubled every time.
    pub rate_limit_first: Duration,
    /// Longest single wait after a 429 without `Retry-After`.
    pub rate_limit_max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            rate_limit_budget: Duration::from_secs(300),
            rate_limit_first: Duration::from_secs(2),
            rate_limit_max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0-based), or the server's `Retry-After` when it
    /// gave one (bounded by `max_delay`).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = Backoff::new(self.base, self.max_delay).nth(retry);
        retry_after.unwrap_or(exp).min(self.max_delay)
    }

    /// The wait before retrying after the `limited`-th 429 (0-based) of one request, having
    /// already waited `waited` for the rate limit; None once the budget is spent. `Retry-After`
    /// is honoured when the server gave one (at least 1 s, so that `0` cannot spin); otherwise
    /// the wait doubles from `rate_limit_first` up to `rate_limit_max_delay`. Either way the
    /// last wait is cut to what is left of the budget, so the total never exceeds it.
    pub fn rate_limit_delay(
        &self,
        limited: u32,
        retry_after: Option<Duration>,
        waited: Duration,
    ) -> Option<Duration> {
        let left = self.rate_limit_budget.saturating_sub(waited);
        if left.is_zero() {
            return None;
        }
        let d = match retry_after {
            Some(ra) => ra.max(Duration::from_secs(1)),
            None => Backoff::new(self.rate_limit_first, self.rate_limit_max_delay).nth(limited),
        };
        Some(d.min(left))
    }
}

/// What happened to one attempt, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// An HTTP status came back.
    Status(u16),
    /// The connection could not be made: the request never reached the server.
    ConnectFailed,
    /// The connection broke or timed out after the request may have been sent.
    Broken,
}

/// Whether to retry an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done: success, or a failure that retrying cannot fix.
    Stop,
    /// Try again after a backoff.
    Retry,
}

/// The one retry classifier. A request is retried when the server surely did not act on it
/// (429: refused before processing; no connection) or when acting twice is harmless (idempotent
/// requests after a 5xx or a broken connection). Everything else is final: a non-idempotent
/// POST whose outcome is unknown is never repeated blindly; its caller reads the state instead.
pub fn classify(attempt: Attempt, idempotent: bool) -> Verdict {
    match attempt {
        Attempt::Status(429) => Verdict::Retry,
        Attempt::ConnectFailed => Verdict::Retry,
        Attempt::Status(s) if (500..600).contains(&s) && idempotent => Verdict::Retry,
        Attempt::Broken if idempotent => Verdict::Retry,
        _ => Verdict::Stop,
    }
}

/// A request to one of the APIs.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    api: Api,
    path: String,
    body: Option<serde_json::Value>,
    headers: Vec<(&'static str, String)>,
    idempotent: bool,
}

impl Request {
    /// A request; GET, PUT, PATCH (the API's PATCHes set absolute values) and DELETE are
    /// idempotent, POST is not unless marked with [`Request::idempotent`].
    pub fn new(method: Method, api: Api, path: impl Into<String>) -> Self {
        let idempotent = method != Method::POST;
        Request {
            method,
            api,
            path: path.into(),
            body: None,
            headers: Vec::new(),
            idempotent,
        }
    }
    /// GET on the Platform API.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, Api::Platform, path)
    }
    /// With a JSON body.
    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }
    /// With an extra header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    /// Marks a POST as safe to repeat (e.g. an action whose second run changes nothing).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }
    fn describe(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// An error body of the API: `{"id": "...", "message": "..."}`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ApiErrorBody {
    /// Machine-readable id (`unauthorized`, `not_found`, ...).
    #[serde(default)]
    pub id: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
}

/// The client. Cheap to share by reference.
pub struct Client {
    http: reqwest::Client,
    download: reqwest::Client,
    config: Config,
    remaining: AtomicI64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "heroku::Client({}, {})",
            self.config.api_url, self.config.data_url
        )
    }
}

impl Client {
    /// A client for `config`.
    pub fn new(config: Config) -> Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_V3));
        let ua = format!("heroku2rds/{}", env!("CARGO_PKG_VERSION"));
        let build = |h: HeaderMap| {
            reqwest::Client::builder()
                .default_headers(h)
                .user_agent(ua.clone())
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| Error::other("cannot build the HTTP client").with_source(e))
        };
        Ok(Client {
            http: build(headers)?,
            // Only a user agent: no token, no Heroku Accept header.
            download: reqwest::Client::builder()
                .user_agent(ua.clone())
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| Error::other("cannot build the HTTP client").with_source(e))?,
            config,
            remaining: AtomicI64::new(-1),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The last `RateLimit-Remaining` seen (-1 before the first response).
    pub fn rate_limit_remaining(&self) -> i64 {
        self.remaining.load(Ordering::Relaxed)
    }

    fn url(&self, api: Api, path: &str) -> Result<Url> {
        let base = match api {
            Api::Platform => &self.config.api_url,
            Api::Data => &self.config.data_url,
        };
        let joined = format!("{}{}", base.as_str().trim_end_matches('/'), path);
        Url::parse(&joined)
            .map_err(|e| Error::other(format!("bad Heroku API path {path}")).with_source(e))
    }

    /// Sends a request, retrying what [`classify`] allows, and decodes the JSON answer.
    pub async fn send<T: DeserializeOwned>(&self, req: &Request) -> Result<T> {
        let (_, body) = self.send_raw(req, None).await?;
        decode(&body, req)
    }

    /// GET on the Platform API, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(&Request::get(path)).await
    }

    /// Every item of a list, following `Next-Range` while the API answers 206.
    pub async fn list<T: DeserializeOwned>(&self, req: &Request) -> Result<Vec<T>> {
        self.list_from(req, None).await
    }

    /// Every item of a list from a first `Range` (e.g. `version ]41..; max=200, order=asc`),
    /// following `Next-Range` while the API answers 206. `None` starts with the API's default.
    pub async fn list_from<T: DeserializeOwned>(
        &self,
        req: &Request,
        first_range: Option<&str>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut range: Option<String> = first_range.map(str::to_string);
        for _page in 0..10_000 {
            let (headers, body) = self.send_raw(req, range.as_deref()).await?;
            let mut items: Vec<T> = decode(&body, req)?;
            out.append(&mut items);
            match headers.status {
                StatusCode::PARTIAL_CONTENT => match headers.next_range {
                    Some(next) => range = Some(next),
                    None => return Ok(out),
                },
                _ => return Ok(out),
            }
        }
        Err(Error::other(format!(
            "{}: more than 10000 pages",
            req.describe()
        )))
    }

    /// One page of a list with an explicit `Range` (e.g. `version ..; max=1, order=desc`);
    /// returns whether more pages follow, and the items.
    pub async fn send_page<T: DeserializeOwned>(
        &self,
        req: &Request,
        range: &str,
    ) -> Result<(bool, Vec<T>)> {
        let (meta, body) = self.send_raw(req, Some(range)).await?;
        Ok((
            meta.status == StatusCode::PARTIAL_CONTENT,
            decode(&body, req)?,
        ))
    }

    async fn send_raw(&self, req: &Request, range: Option<&str>) -> Result<(Meta, bytes::Bytes)> {
        let url = self.url(req.api, &req.path)?;
        let policy = self.config.retry;
        let mut retry = 0u32;
        // 429s have a budget of their own (time, not attempts).
        let mut limited = 0u32;
        let mut waited_limited = Duration::ZERO;
        loop {
            let mut b = self.http.request(req.method.clone(), url.clone()).header(
                AUTHORIZATION,
                format!("Bearer {}", self.config.token.expose()),
            );
            for (k, v) in &req.headers {
                b = b.header(*k, v);
            }
            if let Some(r) = range {
                b = b.header("Range", r);
            }
            if let Some(body) = &req.body {
                b = b
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let (attempt, outcome) = match b.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let meta = Meta::of(&resp);
                    if let Some(r) = meta.remaining {
                        self.remaining.store(r, Ordering::Relaxed);
                        if r < 50 {
                            tracing::warn!("Heroku API rate limit: {r} request(s) left in this account's budget");
                        }
                    }
                    if let Some(w) = &meta.warning {
                        tracing::warn!("Heroku API: {w}");
                    }
                    let body = resp.bytes().await.unwrap_or_default();
                    (Attempt::Status(status.as_u16()), Ok((meta, body)))
                }
                Err(e) if e.is_connect() => (Attempt::ConnectFailed, Err(e)),
                Err(e) => (Attempt::Broken, Err(e)),
            };
            let last = retry + 1 >= policy.attempts;
            let verdict = classify(attempt, req.idempotent);
            match outcome {
                Ok((meta, body)) if meta.status.is_success() => return Ok((meta, body)),
                Ok((meta, body)) if meta.status == StatusCode::TOO_MANY_REQUESTS => {
                    if let Some(d) =
                        policy.rate_limit_delay(limited, meta.retry_after, waited_limited)
                    {
                        tracing::warn!(
                            "Heroku API rate limit reached ({} answered 429; the account's budget is shared by all its clients): waited {}s so far, retrying in {}s (gives up after {}s)",
                            req.describe(),
                            waited_limited.as_secs(),
                            d.as_secs_f64().ceil() as u64,
                            policy.rate_limit_budget.as_secs()
                        );
                        tokio::time::sleep(d).await;
                        limited += 1;
                        waited_limited += d;
                        continue;
                    }
                    let parsed: ApiErrorBody = serde_json::from_slice(&body).unwrap_or_default();
                    return Err(api_error(
                        meta.status.as_u16(),
                        &parsed,
                        &req.describe(),
                        meta.request_id.as_deref(),
                        self.config.token_source,
                    ));
                }
                Ok((meta, body)) => {
                    if verdict == Verdict::Retry && !last {
                        let d = policy.delay(retry, meta.retry_after);
                        tracing::info!(
                            "Heroku API {} answered {}; retrying in {:.1}s",
                            req.describe(),
                            meta.status.as_u16(),
                            d.as_secs_f64()
                        );
                        tokio::time::sleep(d).await;
                        retry += 1;
                        continue;
                    }
                    let parsed: ApiErrorBody = serde_json::from_slice(&body).unwrap_or_default();
                    return Err(api_error(
                        meta.status.as_u16(),
                        &parsed,
                        &req.describe(),
                        meta.request_id.as_deref(),
                        self.config.token_source,
                    ));
                }
                Err(e) => {
                    if verdict == Verdict::Retry && !last {
                        let d = policy.delay(retry, None);
                        tracing::info!(
                            "Heroku API {}: {}; retrying in {:.1}s",
                            req.describe(),
                            crate::error::error_chain(&e),
                            d.as_secs_f64()
                        );
                        tokio::time::sleep(d).await;
                        retry += 1;
                        continue;
                    }
                    let doubt = if attempt == Attempt::Broken && !req.idempotent {
                        " (the request may or may not have been carried out)"
                    } else {
                        ""
                    };
                    return Err(Error::other(format!(
                        "Heroku API {} failed{doubt}",
                        req.describe()
                    ))
                    .with_source(e)
                    .with_fix(
                        "check this machine's network access to the Heroku API, then re-run",
                    ));
                }
            }
        }
    }

    /// How long the client's token has left, read as `heroku auth:token` reads it: the entry of
    /// `GET /oauth/authorizations` whose access token is this client's. `Ok(None)` means no
    /// expiry (`expires_in` null) or unknown: the token is not among the account's
    /// authorizations (e.g. a key made some other way) or the endpoint is not available to it
    /// (403/404); both are logged at debug level. Any other error is returned.
    pub async fn token_expires_in(&self) -> Result<Option<Duration>> {
        let list = match self
            .list::<Authorization>(&Request::get("/oauth/authorizations"))
            .await
        {
            Ok(list) => list,
            Err(e)
                if matches!(
                    e.cause(),
                    Cause::Http {
                        status: 403 | 404,
                        ..
                    }
                ) =>
            {
                tracing::debug!(
                    "token lifetime unknown: GET /oauth/authorizations is not available ({})",
                    e.message()
                );
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match token_expiry(&list, self.config.token.expose()) {
            Some(expiry) => Ok(expiry),
            None => {
                tracing::debug!(
                    "token lifetime unknown: the token is not among the account's {} OAuth authorization(s)",
                    list.len()
                );
                Ok(None)
            }
        }
    }

    /// GETs a URL outside the Heroku APIs (a backup's signed URL) WITHOUT any credentials.
    pub async fn download(&self, url: &str) -> Result<reqwest::Response> {
        // The signed URL is a credential: reqwest's error names it, so only the chain below it
        // is kept.
        let resp = self.download.get(url).send().await.map_err(|e| {
            let e = e.without_url();
            Error::other("downloading the backup").with_source(e)
        })?;
        if !resp.status().is_success() {
            return Err(Error::other(format!(
                "downloading the backup: the server answered {}",
                resp.status()
            ))
            .with_cause(Cause::Http {
                status: resp.status().as_u16(),
                id: None,
            })
            .with_fix("signed backup URLs expire after about an hour: re-run to get a fresh one"));
        }
        Ok(resp)
    }
}

/// One entry of `GET /oauth/authorizations`, as far as the token's lifetime goes.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Authorization {
    /// The access token (null for some authorizations).
    #[serde(default)]
    pub access_token: Option<AccessToken>,
}

/// The access token of an [`Authorization`].
#[derive(Clone, Default, serde::Deserialize)]
pub struct AccessToken {
    /// The token itself (a secret: never printed).
    #[serde(default)]
    pub token: String,
    /// Seconds until it expires; null for tokens with an indefinite lifetime.
    #[serde(default)]
    pub expires_in: Option<i64>,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AccessToken([redacted], expires_in {:?})",
            self.expires_in
        )
    }
}

/// The lifetime of `token` among `authorizations`: `None` when it is not there, `Some(None)`
/// when it never expires, `Some(Some(left))` otherwise (an already expired one is zero).
pub fn token_expiry(authorizations: &[Authorization], token: &str) -> Option<Option<Duration>> {
    authorizations
        .iter()
        .filter_map(|a| a.access_token.as_ref())
        .find(|t| !t.token.is_empty() && t.token == token)
        .map(|t| {
            t.expires_in
                .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
        })
}

/// Refuses a token that expires before `needed` has passed (`expires_in` None: no expiry, or
/// unknown, see [`Client::token_expires_in`]). The refusal names both times and the remedies:
/// a long-lived token from `heroku authorizations:create`, or, for SSO accounts (which cannot
/// create one and whose tokens last 8 hours from login), a non-SSO account with access to the
/// app, or logging in again right before the cutover.
pub fn token_lasts(expires_in: Option<Duration>, needed: Duration) -> Result<()> {
    match expires_in {
        Some(left) if left < needed => Err(Error::new(
            Kind::Refused,
            format!(
                "the Heroku API token expires in {}, before the {} this run may need",
                approx(left),
                approx(needed)
            ),
        )
        .with_fix(
            "use a long-lived token: export HEROKU_API_KEY=\"$(heroku authorizations:create --short --description heroku2rds)\" \
             (it never expires unless given --expires-in); accounts with SSO cannot create one: use a non-SSO account with \
             access to the app, or log in again (`heroku login`) right before the cutover, since SSO tokens last 8 hours",
        )),
        _ => Ok(()),
    }
}

/// `3h 05m`, `12m`, `40s`: rounded to what a person compares.
fn approx(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m"),
        (h, m) if h < 48 => format!("{h}h {m:02}m"),
        (h, _) => format!("{} days", h / 24),
    }
}

/// What the client keeps of a response's status and headers.
#[derive(Debug)]
struct Meta {
    status: StatusCode,
    next_range: Option<String>,
    remaining: Option<i64>,
    retry_after: Option<Duration>,
    request_id: Option<String>,
    warning: Option<String>,
}

impl Meta {
    fn of(resp: &reqwest::Response) -> Meta {
        let h = resp.headers();
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Meta {
            status: resp.status(),
            next_range: get("next-range"),
            remaining: get("ratelimit-remaining").and_then(|v| v.trim().parse().ok()),
            retry_after: get("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
            request_id: get("request-id"),
            warning: get("warning-message").or_else(|| get("x-heroku-warning")),
        }
    }
}

fn decode<T: DeserializeOwned>(body: &[u8], req: &Request) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        Error::other(format!("Heroku API {}: unexpected answer", req.describe())).with_source(e)
    })
}

/// Maps an error status and body to an [`Error`] whose kind decides the exit code and whose fix
/// says what to do. Never includes the token.
pub fn api_error(
    status: u16,
    body: &ApiErrorBody,
    doing: &str,
    request_id: Option<&str>,
    token_source: TokenSource,
) -> Error {
    let id = if body.id.is_empty() {
        match status {
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            422 => "invalid_params",
            429 => "rate_limit",
            _ => "",
        }
    } else {
        body.id.as_str()
    };
    let said = if body.message.is_empty() {
        String::new()
    } else {
        format!(": {}", body.message)
    };
    let rid = request_id
        .map(|r| format!(" (Request-Id {r})"))
        .unwrap_or_default();
    let msg = format!("Heroku API {doing} answered {status} {id}{said}{rid}");
    let token_place = match token_source {
        TokenSource::Env => "the token in HEROKU_API_KEY",
        TokenSource::Netrc => "the token in ~/.netrc (machine api.heroku.com)",
    };
    let cause = Cause::Http {
        status,
        id: (!id.is_empty()).then(|| id.to_string()),
    };
    let mapped = match id {
        "unauthorized" => Error::new(Kind::Refused, format!("Heroku refused {token_place}: {msg}"))
            .with_fix("export a valid token: HEROKU_API_KEY=\"$(heroku auth:token)\" (CLI tokens expire after a year; `heroku authorizations:create` makes a long-lived one)"),
        "two_factor" => Error::new(Kind::Refused, format!("this app requires two-factor authentication: {msg}"))
            .with_fix("run a `heroku` command on the app and answer the second-factor prompt (that pre-authorizes it for a while), then re-run heroku2rds; or use a token of an account allowed without 2FA"),
        "forbidden" | "suspended" | "account_delinquent" | "delinquent" | "verification_needed" => {
            Error::new(Kind::Refused, format!("the Heroku account behind {token_place} may not do this: {msg}"))
                .with_fix("ask the app's owner for access (deploy and operate permissions on the app), or use the owner's token; an expired token can also answer 403: log in again (`heroku login`) and check the token with `heroku auth:token`")
        }
        "not_found" => Error::usage(msg)
            .with_fix("check the app name (--app) and that the token's account can see the app (`heroku apps`)"),
        "rate_limit" => Error::new(Kind::Refused, format!("the Heroku API rate limit is exhausted: {msg}"))
            .with_fix("wait a few minutes (the account's budget refills at about 75 requests a minute and is shared by every client of the account: CI deploys, autoscalers, the dashboard), then re-run"),
        "invalid_params" | "conflict" | "not_acceptable" | "unsupported_media_type" => {
            Error::new(Kind::Refused, msg).with_fix("Heroku refused the change; the message above says why")
        }
        _ if status >= 500 => Error::other(msg)
            .with_fix("Heroku had an internal error; check https://status.heroku.com and re-run"),
        _ if (400..500).contains(&status) => Error::new(Kind::Refused, msg),
        _ => Error::other(msg),
    };
    mapped.with_cause(cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{s:?}").contains("hunter2"));
        let cfg = Config::new(None, None, s, TokenSource::Env).expect("config");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn retry_table() {
        use Attempt::*;
        use Verdict::*;
        let table = [
            (Status(200), true, Stop),
            (Status(206), false, Stop),
            (Status(429), true, Retry),
            (Status(429), false, Retry),
            (Status(500), true, Retry),
            (Status(503), true, Retry),
            (Status(500), false, Stop),
            (Status(502), false, Stop),
            (Status(400), true, Stop),
            (Status(401), true, Stop),
            (Status(403), true, Stop),
            (Status(404), true, Stop),
            (Status(422), true, Stop),
            (ConnectFailed, true, Retry),
            (ConnectFailed, false, Retry),
            (Broken, true, Retry),
            (Broken, false, Stop),
        ];
        for (attempt, idempotent, want) in table {
            assert_eq!(
                classify(attempt, idempotent),
                want,
                "{attempt:?} idempotent={idempotent}"
            );
        }
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let p = RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            ..RetryPolicy::default()
        };
        let got: Vec<u64> = (0..7)
            .map(|i| p.delay(i, None).as_millis() as u64)
            .collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(300))),
            Duration::from_secs(8)
        );
        assert_eq!(p.delay(40, None), Duration::from_secs(8));
    }

    #[test]
    fn rate_limits_are_waited_out_for_minutes() {
        let p = RetryPolicy::default();
        // The whole schedule of one request that keeps getting 429s.
        let schedule = |retry_after: Option<Duration>| {
            let mut waited = Duration::ZERO;
            let mut delays = Vec::new();
            while let Some(d) = p.rate_limit_delay(delays.len() as u32, retry_after, waited) {
                delays.push(d.as_secs());
                waited += d;
                assert!(delays.len() < 1000, "never ends");
            }
            (delays, waited)
        };
        // No Retry-After: 2 s doubling to 30 s, exactly 5 minutes in all.
        let (d, total) = schedule(None);
        assert_eq!(
            d,
            [2, 4, 8, 16, 30, 30, 30, 30, 30, 30, 30, 30, 30],
            "{total:?}"
        );
        assert_eq!(total, Duration::from_secs(300));
        // Retry-After is honoured (even above 30 s); the last wait is cut to the budget.
        let (d, total) = schedule(Some(Duration::from_secs(45)));
        assert_eq!(d, [45, 45, 45, 45, 45, 45, 30]);
        assert_eq!(total, Duration::from_secs(300));
        let (d, _) = schedule(Some(Duration::from_secs(400)));
        assert_eq!(d, [300]);
        // Retry-After: 0 cannot spin: at least 1 s.
        let (d, total) = schedule(Some(Duration::ZERO));
        assert_eq!((d.len(), d[0]), (300, 1));
        assert_eq!(total, Duration::from_secs(300));
        // Budget spent (or overspent): give up.
        assert_eq!(p.rate_limit_delay(0, None, Duration::from_secs(300)), None);
        assert_eq!(p.rate_limit_delay(3, None, Duration::from_secs(301)), None);
        assert_eq!(
            p.rate_limit_delay(5, None, Duration::from_secs(299)),
            Some(Duration::from_secs(1))
        );
        // The old 5xx schedule is untouched.
        assert_eq!(p.delay(5, None), Duration::from_secs(8));
    }

    #[test]
    fn token_lifetimes() {
        let auth = |token: &str, expires_in: Option<i64>| Authorization {
            access_token: Some(AccessToken {
                token: token.into(),
                expires_in,
            }),
        };
        let list = vec![
            Authorization::default(),
            auth("", Some(5)),
            auth("other", Some(10)),
            auth("mine", Some(28_800)),
            auth("forever", None),
            auth("expired", Some(-3)),
        ];
        let h = |s| Some(Some(Duration::from_secs(s)));
        let table: &[(&str, Option<Option<Duration>>)] = &[
            ("mine", h(28_800)),
            ("other", h(10)),
            ("forever", Some(None)),
            ("expired", h(0)),
            ("unknown", None),
            // An empty token never matches an authorization without one.
            ("", None),
        ];
        for (token, want) in table {
            assert_eq!(token_expiry(&list, token), *want, "{token:?}");
        }
        assert!(
            !format!("{:?}", list[3]).contains("mine"),
            "no token in Debug"
        );
        // The shape of GET /oauth/authorizations.
        let parsed: Vec<Authorization> = serde_json::from_value(serde_json::json!([
            {"id": "a1", "access_token": null, "scope": ["global"]},
            {"id": "a2", "access_token": {"expires_in": 2592000, "id": "t2", "token": "tok"}},
            {"id": "a3", "access_token": {"expires_in": null, "id": "t3", "token": "tok3"}}
        ]))
        .expect("authorizations");
        assert_eq!(token_expiry(&parsed, "tok"), h(2_592_000));
        assert_eq!(token_expiry(&parsed, "tok3"), Some(None));
    }

    #[test]
    fn tokens_must_outlast_the_run() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        // (expires in, needed, accepted)
        let table = [
            (None, h(72), true),
            (Some(h(24 * 365)), h(72), true),
            (Some(h(72)), h(72), true),
            (Some(h(8)), h(2), true),
            (Some(h(8)), h(10), false),
            (Some(Duration::ZERO), Duration::from_secs(1), false),
            (Some(Duration::ZERO), Duration::ZERO, true),
        ];
        for (expires_in, needed, ok) in table {
            let got = token_lasts(expires_in, needed);
            assert_eq!(got.is_ok(), ok, "{expires_in:?} {needed:?}");
            if let Err(e) = got {
                assert_eq!(e.kind(), Kind::Refused);
                let fix = e.fix().unwrap_or("");
                assert!(fix.contains("heroku authorizations:create"), "{fix}");
                assert!(fix.contains("SSO") && fix.contains("8 hours"), "{fix}");
                assert!(fix.contains("non-SSO account"), "{fix}");
            }
        }
        let e = token_lasts(Some(Duration::from_secs(2 * 3600 + 300)), h(30)).expect_err("short");
        assert!(
            e.message().contains("2h 05m") && e.message().contains("30h 00m"),
            "{}",
            e.message()
        );
        assert_eq!(approx(Duration::from_secs(40)), "40s");
        assert_eq!(approx(Duration::from_secs(720)), "12m");
        assert_eq!(approx(h(24 * 365)), "365 days");
    }

    #[test]
    fn methods_default_idempotence() {
        assert!(Request::get("/apps").idempotent);
        assert!(Request::new(Method::PATCH, Api::Platform, "/x").idempotent);
        assert!(Request::new(Method::DELETE, Api::Platform, "/x").idempotent);
        assert!(!Request::new(Method::POST, Api::Platform, "/x").idempotent);
        assert!(
            Request::new(Method::POST, Api::Platform, "/x")
                .idempotent()
                .idempotent
        );
    }

    #[test]
    fn netrc_entries() {
        let text = "machine git.heroku.com\n  login a@b.c\n  password gitpw\nmachine api.heroku.com login a@b.c password apitoken\ndefault login x password y\n";
        assert_eq!(
            netrc_password(text, "api.heroku.com").as_deref(),
            Some("apitoken")
        );
        assert_eq!(
            netrc_password(text, "git.heroku.com").as_deref(),
            Some("gitpw")
        );
        assert_eq!(netrc_password(text, "other"), None);
        assert_eq!(netrc_password("", "api.heroku.com"), None);
        // A machine whose login is literally "password" is not confused.
        let tricky = "machine api.heroku.com login password password real";
        assert_eq!(
            netrc_password(tricky, "api.heroku.com").as_deref(),
            Some("real")
        );
    }

    #[test]
    fn token_resolution_order() {
        let netrc = "machine api.heroku.com login a password fromnetrc";
        let (t, s) = resolve_token(Some("fromenv"), Some(netrc)).expect("env");
        assert_eq!((t.expose(), s), ("fromenv", TokenSource::Env));
        let (t, s) = resolve_token(Some("  "), Some(netrc)).expect("netrc");
        assert_eq!((t.expose(), s), ("fromnetrc", TokenSource::Netrc));
        let e = resolve_token(None, None).expect_err("none");
        assert_eq!(e.kind(), Kind::Usage);
        assert!(e.fix().unwrap_or("").contains("heroku auth:token"));
    }

    #[test]
    fn error_bodies_map_to_kinds_and_fixes() {
        let body = |id: &str| ApiErrorBody {
            id: id.into(),
            message: "m".into(),
        };
        let cases = [
            (401, "unauthorized", Kind::Refused, "HEROKU_API_KEY"),
            (403, "two_factor", Kind::Refused, "second-factor"),
            (403, "forbidden", Kind::Refused, "access"),
            (404, "not_found", Kind::Usage, "app name"),
            (429, "rate_limit", Kind::Refused, "wait"),
            (422, "invalid_params", Kind::Refused, "refused"),
            (
                500,
                "internal_server_error",
                Kind::Other,
                "status.heroku.com",
            ),
            (401, "", Kind::Refused, "HEROKU_API_KEY"),
        ];
        for (status, id, kind, fix) in cases {
            let e = api_error(
                status,
                &body(id),
                "GET /apps/x",
                Some("rid-1"),
                TokenSource::Env,
            );
            assert_eq!(e.kind(), kind, "{status} {id}");
            assert!(
                e.fix().unwrap_or("").contains(fix),
                "{status} {id}: {:?}",
                e.fix()
            );
            assert!(e.message().contains("rid-1"));
        }
        let e = api_error(
            401,
            &body("unauthorized"),
            "GET /account",
            None,
            TokenSource::Netrc,
        );
        assert!(e.message().contains("~/.netrc"));
        // An expired token can answer 403 too: the fix says so.
        let e = api_error(
            403,
            &body("forbidden"),
            "GET /apps/x",
            None,
            TokenSource::Env,
        );
        let fix = e.fix().unwrap_or("");
        assert!(
            fix.contains("expired") && fix.contains("heroku auth:token"),
            "{fix}"
        );
    }

    #[test]
    fn error_statuses_record_status_and_id() {
        // (status, body id, kind, recorded id): an empty body id is implied by the status where
        // the API documents one.
        let cases: &[(u16, &str, Kind, Option<&str>)] = &[
            (401, "unauthorized", Kind::Refused, Some("unauthorized")),
            (401, "", Kind::Refused, Some("unauthorized")),
            (403, "", Kind::Refused, Some("forbidden")),
            (403, "suspended", Kind::Refused, Some("suspended")),
            (404, "", Kind::Usage, Some("not_found")),
            (409, "conflict", Kind::Refused, Some("conflict")),
            (418, "", Kind::Refused, None),
            (429, "", Kind::Refused, Some("rate_limit")),
            (503, "", Kind::Other, None),
            (503, "unavailable", Kind::Other, Some("unavailable")),
        ];
        for (status, id, kind, want) in cases {
            let body = ApiErrorBody {
                id: id.to_string(),
                message: String::new(),
            };
            let e = api_error(*status, &body, "GET /apps/x", None, TokenSource::Env);
            assert_eq!(e.kind(), *kind, "{status} {id}");
            assert_eq!(
                e.cause(),
                &Cause::Http {
                    status: *status,
                    id: want.map(str::to_string)
                },
                "{status} {id}"
            );
        }
    }

    #[test]
    fn base_urls_are_validated() {
        let t = || Secret::new("t");
        let c =
            Config::new(Some("http://127.0.0.1:4567/"), None, t(), TokenSource::Env).expect("ok");
        assert_eq!(c.api_url.as_str(), "http://127.0.0.1:4567/");
        assert_eq!(c.data_url.as_str(), "https://api.data.heroku.com/");
        assert_eq!(
            Config::new(Some("ftp://x"), None, t(), TokenSource::Env)
                .expect_err("scheme")
                .kind(),
            Kind::Usage
        );
        assert_eq!(
            Config::new(None, Some("not a url"), t(), TokenSource::Env)
                .expect_err("url")
                .kind(),
            Kind::Usage
        );
    }
}
