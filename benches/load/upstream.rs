//! The benchmark's mock upstream OAuth provider: the two endpoints a flow and
//! a refresh use, with the checks a real provider makes (client credentials,
//! single-use codes bound to their redirect URI and PKCE challenge, rotating
//! refresh tokens), and nothing the benchmark does not need.
//!
//! It shares core 1 with the load generator, so it is as lean as the driver:
//! a plain HTTP/1.1 keep-alive server (httparse) on the load generator's own
//! thread. As an actix-web server on a thread of its own it took about 40% of
//! core 1 in the full-flow rows, more than the driver's user time, and each
//! request the proxy sent it woke that thread. The tests' provider
//! (`tests/api/mock_upstream.rs`) records every call for assertions and is
//! slower still.
//!
//! Refresh tokens carry this process's random mark instead of being stored,
//! so `/token` can be measured alone with one refresh token (the headroom
//! row): every token the proxy gets is new, as with a rotating provider.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_rt::net::{TcpListener, TcpStream};
use actix_rt::task::JoinHandle;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const CLIENT_ID: &str = "upstream-client";
pub const CLIENT_SECRET: &str = "bench-upstream-client-secret";

/// Codes not redeemed within this long, or beyond the newest this many, are
/// forgotten (a real provider's codes expire too); keeps the headroom row's
/// memory bounded.
const CODE_LIFETIME: Duration = Duration::from_secs(60);
const MOST_CODES: usize = 100_000;

/// Largest request head or form body it reads (the proxy's are well under).
const MAX_REQUEST: usize = 16 * 1024;

struct IssuedCode {
    redirect_uri: String,
    challenge: String,
}

/// Unredeemed codes, and the order they were issued in for expiry.
#[derive(Default)]
struct Codes {
    by_code: HashMap<String, IssuedCode>,
    issued: VecDeque<(Instant, String)>,
}

impl Codes {
    fn insert(&mut self, code: String, issued: IssuedCode) {
        while let Some((at, oldest)) = self.issued.front() {
            if at.elapsed() < CODE_LIFETIME && self.issued.len() < MOST_CODES {
                break;
            }
            self.by_code.remove(oldest);
            self.issued.pop_front();
        }
        self.issued.push_back((Instant::now(), code.clone()));
        self.by_code.insert(code, issued);
    }

    /// Redeemed codes stay in `issued` until they age out; removing them
    /// from the map is what makes them single use.
    fn redeem(&mut self, code: &str) -> Option<IssuedCode> {
        self.by_code.remove(code)
    }
}

struct Provider {
    /// A random mark in every token, so tokens from an earlier run are refused.
    mark: String,
    counter: Cell<u64>,
    codes: RefCell<Codes>,
    basic_authorization: String,
    id_token: String,
}

impl Provider {
    fn next_serial(&self) -> u64 {
        let serial = self.counter.get();
        self.counter.set(serial + 1);
        serial
    }
}

pub struct FastUpstream {
    base_url: String,
    mark: String,
    id_token_length: usize,
    accepting: JoinHandle<()>,
}

impl FastUpstream {
    /// Binds `127.0.0.1:0` and serves on the current thread (an actix System
    /// or tokio `LocalSet`): nothing here may block that thread while the
    /// proxy can call the upstream.
    pub fn start() -> FastUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("mock upstream binds");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let base_url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let mark = format!("{:016x}", rand::random::<u64>());
        let id_token = id_token(&base_url);
        let id_token_length = id_token.len();
        let provider = Rc::new(Provider {
            mark: mark.clone(),
            counter: Cell::new(0),
            codes: RefCell::default(),
            basic_authorization: basic_authorization(),
            id_token,
        });
        let listener = TcpListener::from_std(listener).expect("a tokio listener");
        let accepting = actix_rt::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                actix_rt::spawn(serve(stream, provider.clone()));
            }
        });
        FastUpstream {
            base_url,
            mark,
            id_token_length,
            accepting,
        }
    }

    pub fn authorization_endpoint(&self) -> String {
        format!("{}/authorize", self.base_url)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.base_url)
    }

    /// Bytes of one token set as issued around the `serial`th token: what a
    /// stored grant holds of the upstream's own.
    pub fn token_set_bytes(&self, serial: u64) -> usize {
        let access = format!("at-{}-{serial}", self.mark).len();
        let refresh = format!("rt-{}-{serial}", self.mark).len();
        access + refresh + self.id_token_length
    }

    /// A refresh token this provider accepts, to measure `/token` alone.
    pub fn a_refresh_token(&self) -> String {
        format!("rt-{}-0", self.mark)
    }

    /// Stops accepting; open connections end when their clients close them.
    pub async fn stop(self) {
        self.accepting.abort();
    }
}

/// The `Authorization` header of the proxy's token requests (client_secret_basic).
pub fn basic_authorization() -> String {
    format!("Basic {}", STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")))
}

/// An OIDC ID token like a real provider's (HS256 with the client secret), made
/// once: the proxy reads its claims unverified.
fn id_token(issuer: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": issuer, "aud": CLIENT_ID, "sub": "user-123", "email": "user@example.com",
        "email_verified": true, "name": "Test User", "preferred_username": "user",
        "iat": now, "exp": now + 86_400,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(CLIENT_SECRET.as_bytes()),
    )
    .expect("an ID token")
}

/// One request as the endpoints see it.
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a [u8],
    authorization: &'a [u8],
    body: &'a [u8],
}

/// An answer: status line, extra headers, JSON body (possibly empty).
struct Answer<'a> {
    status: &'static str,
    headers: Vec<(&'static str, Cow<'a, str>)>,
    body: Cow<'a, str>,
}

fn json(status: &'static str, body: String) -> Answer<'static> {
    Answer {
        status,
        headers: vec![("Content-Type", Cow::Borrowed("application/json"))],
        body: Cow::Owned(body),
    }
}

fn oauth_error(error: &str, description: &str) -> Answer<'static> {
    json(
        "400 Bad Request",
        serde_json::json!({ "error": error, "error_description": description }).to_string(),
    )
}

/// Serves one keep-alive connection until the client closes it or sends
/// something this server does not read.
async fn serve(mut stream: TcpStream, provider: Rc<Provider>) {
    let mut buffer = Vec::with_capacity(4096);
    let mut output = Vec::with_capacity(2048);
    loop {
        let (consumed, close) = loop {
            match parse_and_answer(&buffer, &provider, &mut output) {
                Parsed::Answered { consumed, close } => break (consumed, close),
                Parsed::Partial if buffer.len() > MAX_REQUEST => return,
                Parsed::Partial => {
                    buffer.reserve(4096);
                    match stream.read_buf(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
                Parsed::Malformed => {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    return;
                }
            }
        };
        buffer.drain(..consumed);
        if stream.write_all(&output).await.is_err() || close {
            return;
        }
    }
}

enum Parsed {
    Answered { consumed: usize, close: bool },
    Partial,
    Malformed,
}

/// Parses the first request in `input`; when it is whole, writes its answer
/// into `output`.
fn parse_and_answer(input: &[u8], provider: &Provider, output: &mut Vec<u8>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let head_length = match request.parse(input) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Malformed,
    };
    let (mut content_length, mut authorization, mut close) = (0usize, &b""[..], false);
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(length) => content_length = length,
                None => return Parsed::Malformed,
            }
        } else if header.name.eq_ignore_ascii_case("authorization") {
            authorization = header.value;
        } else if header.name.eq_ignore_ascii_case("connection") {
            close = header.value.eq_ignore_ascii_case(b"close");
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Malformed;
        }
    }
    if content_length > MAX_REQUEST {
        return Parsed::Malformed;
    }
    if input.len() < head_length + content_length {
        return Parsed::Partial;
    }
    let target = request.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = Request {
        method: request.method.unwrap_or(""),
        path,
        query: query.as_bytes(),
        authorization,
        body: &input[head_length..head_length + content_length],
    };
    let answer = match (request.method, request.path) {
        ("GET", "/authorize") => authorize(&request, provider),
        ("POST", "/token") => token(&request, provider),
        _ => json("404 Not Found", r#"{"error":"not_found"}"#.to_string()),
    };
    output.clear();
    let _ = write!(output, "HTTP/1.1 {}\r\n", answer.status);
    for (name, value) in &answer.headers {
        let _ = write!(output, "{name}: {value}\r\n");
    }
    let _ = write!(output, "Content-Length: {}\r\n\r\n", answer.body.len());
    output.extend_from_slice(answer.body.as_bytes());
    Parsed::Answered {
        consumed: head_length + content_length,
        close,
    }
}

/// The form fields an endpoint reads, by name, borrowed where unescaped.
fn fields<'a, const N: usize>(input: &'a [u8], names: [&str; N]) -> [Cow<'a, str>; N] {
    let mut values: [Cow<'a, str>; N] = std::array::from_fn(|_| Cow::Borrowed(""));
    for (name, value) in url::form_urlencoded::parse(input) {
        if let Some(index) = names.iter().position(|n| *n == name) {
            values[index] = value;
        }
    }
    values
}

fn authorize<'a>(request: &Request<'a>, provider: &Provider) -> Answer<'a> {
    let [client_id, response_type, method, challenge, state, redirect_uri] = fields(
        request.query,
        [
            "client_id",
            "response_type",
            "code_challenge_method",
            "code_challenge",
            "state",
            "redirect_uri",
        ],
    );
    if client_id != CLIENT_ID || response_type != "code" {
        return oauth_error("invalid_request", "unknown client or response_type");
    }
    if method != "S256" || challenge.is_empty() || state.is_empty() {
        return oauth_error("invalid_request", "PKCE S256 and state are required");
    }
    if !(redirect_uri.starts_with("http://") || redirect_uri.starts_with("https://")) || redirect_uri.contains('#') {
        return oauth_error("invalid_request", "redirect_uri is not an absolute URL");
    }
    let code = format!("code-{}-{}", provider.mark, provider.next_serial());
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!(
        "{redirect_uri}{separator}code={code}&state={}",
        url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
    );
    provider.codes.borrow_mut().insert(
        code,
        IssuedCode {
            redirect_uri: redirect_uri.into_owned(),
            challenge: challenge.into_owned(),
        },
    );
    Answer {
        status: "302 Found",
        headers: vec![("Location", Cow::Owned(location))],
        body: Cow::Borrowed(""),
    }
}

fn token<'a>(request: &Request<'a>, provider: &Provider) -> Answer<'a> {
    if request.authorization != provider.basic_authorization.as_bytes() {
        return json("401 Unauthorized", r#"{"error":"invalid_client"}"#.to_string());
    }
    let [grant_type, code, verifier, redirect_uri, refresh_token] = fields(
        request.body,
        ["grant_type", "code", "code_verifier", "redirect_uri", "refresh_token"],
    );
    match &*grant_type {
        "authorization_code" => {
            let Some(issued) = provider.codes.borrow_mut().redeem(&code) else {
                return oauth_error("invalid_grant", "unknown or used code");
            };
            let verified = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
            if issued.redirect_uri != redirect_uri || verified != issued.challenge {
                return oauth_error("invalid_grant", "redirect_uri or PKCE verifier does not match");
            }
        }
        "refresh_token" => {
            let issued_here = refresh_token
                .strip_prefix("rt-")
                .is_some_and(|rest| rest.starts_with(provider.mark.as_str()));
            if !issued_here {
                return oauth_error("invalid_grant", "unknown refresh token");
            }
        }
        _ => return oauth_error("unsupported_grant_type", "authorization_code or refresh_token"),
    }
    let serial = provider.next_serial();
    // Every value is made of URL-safe characters (the mark is hex, the ID
    // token base64url): no JSON escaping is needed. An ID token on every
    // answer, refreshes included, as the tests' provider.
    let mark = &provider.mark;
    let body = format!(
        r#"{{"access_token":"at-{mark}-{serial}","token_type":"Bearer","expires_in":3600,"scope":"openid","refresh_token":"rt-{mark}-{serial}","id_token":"{}"}}"#,
        provider.id_token
    );
    let mut answer = json("200 OK", body);
    answer.headers.push(("Cache-Control", Cow::Borrowed("no-store")));
    answer
}
