//! A small, strict HTTP/1.1 server loop for the API socket (keep-alive, `Content-Length`
//! bodies only, like Firecracker's micro_http).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

/// One parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `PUT`, `PATCH`, …
    pub method: String,
    /// Absolute path, without query.
    pub path: String,
    /// Body, when one was sent (`None` when absent or empty).
    pub body: Option<Vec<u8>>,
}

/// One response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// JSON body, if any.
    pub body: Option<String>,
}

impl Response {
    /// 204.
    pub fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
        }
    }

    /// 200 with a JSON body.
    pub fn ok(body: String) -> Self {
        Self {
            status: 200,
            body: Some(body),
        }
    }

    /// An error with Firecracker's `{"fault_message": …}` body.
    pub fn fault(status: u16, msg: &str) -> Self {
        let body = serde_json::json!({ "fault_message": msg }).to_string();
        Self {
            status,
            body: Some(body),
        }
    }
}

/// Reason phrase as Firecracker's log prints it.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload too large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Unknown",
    }
}

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 51_200; // Firecracker's default http-api-max-payload-size.

/// What reading a request produced.
#[derive(Debug)]
pub enum ReadOutcome {
    /// A request.
    Request(Request),
    /// A malformed request: answer it and close.
    Bad(Response),
    /// Peer closed.
    Closed,
}

/// Reads one request from `reader`.
pub fn read_request(reader: &mut BufReader<UnixStream>) -> std::io::Result<ReadOutcome> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader.by_ref().take(4096).read_until(b'\n', &mut line)?;
        if n == 0 {
            if head.is_empty() {
                return Ok(ReadOutcome::Closed);
            }
            return Ok(ReadOutcome::Bad(Response::fault(400, "Invalid request.")));
        }
        if line == b"\r\n" || line == b"\n" {
            if head.is_empty() {
                continue;
            }
            break;
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            return Ok(ReadOutcome::Bad(Response::fault(400, "Invalid request.")));
        }
    }
    let Ok(text) = String::from_utf8(head) else {
        return Ok(ReadOutcome::Bad(Response::fault(400, "Invalid request.")));
    };
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(ReadOutcome::Bad(Response::fault(400, "Invalid request.")));
    };
    if version.trim_end() != "HTTP/1.1" && version.trim_end() != "HTTP/1.0" {
        return Ok(ReadOutcome::Bad(Response::fault(
            400,
            "Unsupported HTTP version.",
        )));
    }
    let mut content_length = 0usize;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            return Ok(ReadOutcome::Bad(Response::fault(400, "Invalid header.")));
        };
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim();
        if k == "content-length" {
            let Ok(n) = v.parse::<usize>() else {
                return Ok(ReadOutcome::Bad(Response::fault(400, "Invalid header.")));
            };
            content_length = n;
        } else if k == "transfer-encoding" && !v.eq_ignore_ascii_case("identity") {
            return Ok(ReadOutcome::Bad(Response::fault(
                400,
                "Invalid header. Reason: Transfer-Encoding is not supported",
            )));
        }
    }
    if content_length > MAX_BODY {
        return Ok(ReadOutcome::Bad(Response::fault(
            413,
            &format!(
                "Request payload with size {content_length} is larger than the limit of {MAX_BODY} allowed by server.\nAll previous unanswered requests will be dropped."
            ),
        )));
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    let path = uri.split('?').next().unwrap_or("").to_owned();
    Ok(ReadOutcome::Request(Request {
        method: method.to_owned(),
        path,
        body: if body.is_empty() { None } else { Some(body) },
    }))
}

/// Writes `resp` to `w`.
pub fn write_response(w: &mut impl Write, resp: &Response) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nServer: Firecracker API\r\nConnection: keep-alive\r\n",
        resp.status,
        reason(resp.status)
    );
    match &resp.body {
        Some(b) => {
            out.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ));
        }
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    w.write_all(out.as_bytes())?;
    w.flush()
}

/// A blocking client call, for tests and the benchmark: one request on a fresh connection.
pub fn call(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut len = 0usize;
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l)? == 0 {
            break;
        }
        let t = l.trim_end();
        if t.is_empty() {
            break;
        }
        if let Some((k, v)) = t.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
