//! The multi-step load generator's HTTP/1.1 client: one keep-alive
//! connection per load loop and server, each request written whole, each
//! answer parsed with httparse. awc did the same job with several times the
//! CPU, on the core the load generator shares with the mock upstream, and
//! brought that core near saturation in the full-flow rows, when the load
//! generator must not be what limits a row.

use actix_rt::net::TcpStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest answer head the driver reads (the proxy's are well under 2 KiB).
const MAX_HEAD: usize = 16 * 1024;

/// One answer: what the flows look at.
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    /// `name=value` of each `Set-Cookie`.
    pub cookies: Vec<String>,
    pub body: Vec<u8>,
}

/// A user agent: follows absolute URLs to any server on 127.0.0.1, with one
/// keep-alive connection to each.
#[derive(Default)]
pub struct Agent {
    /// By origin (`http://127.0.0.1:port`); a flow touches two.
    connections: Vec<(String, Connection)>,
}

impl Agent {
    pub async fn get(&mut self, url: &str, cookie: Option<&str>) -> Result<Answer, String> {
        let (connection, target) = self.connection(url)?;
        connection.get(target, cookie).await
    }

    pub async fn post(&mut self, url: &str, content_type: &str, body: &[u8]) -> Result<Answer, String> {
        let (connection, target) = self.connection(url)?;
        connection.post(target, content_type, body).await
    }

    /// The connection for the URL's origin, and the request target.
    fn connection<'u>(&mut self, url: &'u str) -> Result<(&mut Connection, &'u str), String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("not an http:// URL: {url}"))?;
        let origin_length = "http://".len() + rest.find('/').unwrap_or(rest.len());
        let (origin, target) = url.split_at(origin_length);
        let target = if target.is_empty() { "/" } else { target };
        let index = match self.connections.iter().position(|(o, _)| o == origin) {
            Some(index) => index,
            None => {
                self.connections.push((origin.to_string(), Connection::new(origin)));
                self.connections.len() - 1
            }
        };
        Ok((&mut self.connections[index].1, target))
    }
}

/// A keep-alive connection to one server, opened on first use and again
/// after the server closes it.
struct Connection {
    /// `127.0.0.1:port`
    address: String,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
    request: Vec<u8>,
}

impl Connection {
    /// `origin` is `http://127.0.0.1:port`.
    fn new(origin: &str) -> Connection {
        Connection {
            address: origin.trim_start_matches("http://").to_string(),
            stream: None,
            buffer: Vec::with_capacity(4096),
            request: Vec::with_capacity(1024),
        }
    }

    async fn get(&mut self, target: &str, cookie: Option<&str>) -> Result<Answer, String> {
        self.start_request("GET", target);
        if let Some(cookie) = cookie.filter(|c| !c.is_empty()) {
            self.header("Cookie", cookie);
        }
        self.send(b"").await
    }

    async fn post(&mut self, target: &str, content_type: &str, body: &[u8]) -> Result<Answer, String> {
        self.start_request("POST", target);
        self.header("Content-Type", content_type);
        self.send(body).await
    }

    fn start_request(&mut self, method: &str, target: &str) {
        self.request.clear();
        self.request
            .extend_from_slice(format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.address).as_bytes());
    }

    fn header(&mut self, name: &str, value: &str) {
        self.request
            .extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }

    async fn send(&mut self, body: &[u8]) -> Result<Answer, String> {
        self.request
            .extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        self.request.extend_from_slice(body);
        // A kept-alive connection the server has closed fails on first use:
        // one retry on a new connection.
        let reused = self.stream.is_some();
        match self.exchange().await {
            Err(_) if reused => {
                self.stream = None;
                self.exchange().await
            }
            other => other,
        }
    }

    async fn exchange(&mut self) -> Result<Answer, String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.address)
                .await
                .map_err(|e| format!("connect {}: {e}", self.address))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            self.stream = Some(stream);
            self.buffer.clear();
        }
        let stream = self.stream.as_mut().unwrap();
        if let Err(e) = stream.write_all(&self.request).await {
            self.stream = None;
            return Err(format!("write: {e}"));
        }
        let answer = read_answer(stream, &mut self.buffer).await;
        match &answer {
            Ok((_, keep_alive)) if *keep_alive => {}
            _ => self.stream = None,
        }
        answer.map(|(answer, _)| answer)
    }
}

/// Reads one answer (with a `Content-Length` body, as every server here
/// sends); also whether the connection stays open.
async fn read_answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(Answer, bool), String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(buffer).map_err(|e| format!("bad answer: {e}"))? {
            httparse::Status::Complete(head_length) => {
                let mut answer = Answer {
                    status: response.code.unwrap_or(0),
                    location: None,
                    cookies: Vec::new(),
                    body: Vec::new(),
                };
                let (mut length, mut keep_alive) = (None, true);
                for header in response.headers.iter() {
                    let value = std::str::from_utf8(header.value).map_err(|e| e.to_string())?;
                    if header.name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse::<usize>().ok();
                    } else if header.name.eq_ignore_ascii_case("location") {
                        answer.location = Some(value.to_string());
                    } else if header.name.eq_ignore_ascii_case("set-cookie") {
                        answer
                            .cookies
                            .push(value.split(';').next().unwrap_or_default().to_string());
                    } else if header.name.eq_ignore_ascii_case("connection") {
                        keep_alive = !value.eq_ignore_ascii_case("close");
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err("the driver reads Content-Length bodies only".into());
                    }
                }
                let length = length.unwrap_or(0);
                while buffer.len() < head_length + length {
                    read_more(stream, buffer).await?;
                }
                answer.body = buffer[head_length..head_length + length].to_vec();
                buffer.drain(..head_length + length);
                return Ok((answer, keep_alive));
            }
            httparse::Status::Partial if buffer.len() > MAX_HEAD => return Err("answer head too large".into()),
            httparse::Status::Partial => read_more(stream, buffer).await?,
        }
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    buffer.reserve(4096);
    match stream.read_buf(buffer).await {
        Ok(0) => Err("the server closed the connection".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read: {e}")),
    }
}
