//! One HTTP/1.1 connection, and the clock every measurement reads.
//!
//! hyper's connection-level client, not a pooled one: a waiter owns exactly one connection,
//! a request goes out the moment it is sent, and nothing retries, pools or reorders behind
//! the measurement.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Microseconds since the Unix epoch: the wall clock, comparable with the server's
/// `finished_at` on the same machine.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// One open connection to the server.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn, Error> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        // The connection's I/O runs beside the caller; it ends when `sender` is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
        })
    }

    /// The server closed the connection (or its I/O failed): it can send nothing more.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends a request and returns the response head, its body still to be read.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>, Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        self.sender.ready().await?;
        Ok(self.sender.send_request(request).await?)
    }

    /// Sends a request and reads the whole answer.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let response = self.send(method, path, headers, body).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// A JSON request that must answer `expected`; returns the parsed answer.
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> Result<Value, Error> {
        let body = body.map(|value| Bytes::from(value.to_string()));
        let (status, answer) = self.call(method.clone(), path, &[], body).await?;
        if status != expected {
            let text = String::from_utf8_lossy(&answer);
            return Err(format!("{method} {path}: {status}, expected {expected}: {text}").into());
        }
        Ok(serde_json::from_slice(&answer)?)
    }
}

/// An RFC 3339 instant (as taskd serves `finished_at`) in microseconds since the epoch.
pub fn rfc3339_us(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.timestamp_micros())
}
