//! The loop answering a request under a static route (see `statics`): it never reaches
//! Python. The head is written at once and the body goes with `sendfile(2)`; what a slow
//! client does not take waits in the connection's outbox while the loop serves others.

use std::borrow::Cow;
use std::os::fd::AsFd;
use std::time::Instant;

use super::dispatch::Served;
use super::event_loop::EventLoop;
use super::statics::Reply;
use crate::http::{RequestHead, ResponseSpec};
use crate::wsgi::Outcome;

impl EventLoop<'_> {
    /// Answers a request under a static route from the loop, and goes on with the
    /// connection as after an app's response.
    pub(super) fn serve_static(&mut self, idx: usize, head: &RequestHead) -> Served {
        let started = Instant::now();
        let Some(reply) = self.statics.as_ref().map(|s| s.reply(head)) else {
            return Served::Closed;
        };
        let (status, headers, file, text) = match reply {
            Reply::Refused => {
                let page = crate::http::error_page(400, "Bad Request", "Invalid path");
                return self.reject(idx, &page);
            }
            Reply::File {
                status,
                headers,
                body,
            } => (status, headers, body, ""),
            Reply::Short {
                status,
                mut headers,
                body,
            } => {
                let length = Cow::Owned(body.len().to_string());
                headers.push(("Content-Type", Cow::Borrowed("text/plain; charset=utf-8")));
                headers.push(("Content-Length", length));
                (status, headers, None, body)
            }
        };
        // A request body is not read: the connection closes after the answer.
        let has_body = head.content_length() != Some(0);
        let keep_alive = head.keep_alive && !head.must_close && !has_body && self.may_keep_alive();
        let is_head = &*head.method == "HEAD";
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        let spec = ResponseSpec {
            version: head.version,
            is_head,
            keep_alive,
            status,
            headers: &pairs,
        };
        let mut out = Vec::with_capacity(512);
        let Ok(plan) = crate::http::encode_head(&mut out, &spec, &crate::http::date::now()) else {
            return self.reject(
                idx,
                &crate::http::error_page(500, "Internal Server Error", ""),
            );
        };
        if !is_head {
            out.extend_from_slice(text.as_bytes());
        }
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return Served::Closed;
        };
        // The head is consumed; a pipelined request after it stays (a body is not read:
        // the connection closes then).
        let consumed = head.head_len.min(conn.buf.len());
        conn.buf.drain(..consumed);
        let io = conn.io.clone();
        let mut sent = text.len() as u64;
        let mut result = io.write_all(&mut [std::io::IoSlice::new(&out)], self.timeouts.head);
        if let (Ok(()), Some((file, offset, count)), false) = (&result, &file, is_head) {
            result = if io.is_tls() {
                // TLS encrypts in user space: the file is read and written in pieces.
                copy_file(&io, file, *offset, *count, self.timeouts.head)
            } else {
                io.send_file(file.as_fd(), *offset, *count)
            };
            sent = *count;
        }
        let code = plan.code;
        let logged = || {
            headers
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.to_string()))
                .collect()
        };
        let env = std::sync::Arc::clone(&conn.env);
        self.runtime.log_response(
            head,
            &env,
            code,
            if is_head { 0 } else { sent },
            logged,
            started,
        );
        drop(file);
        let outcome = match result {
            Ok(()) if plan.keep_alive => Outcome::KeepAlive,
            Ok(())
            | Err(crate::transport::IoError::Closed(_) | crate::transport::IoError::TimedOut) => {
                Outcome::Close
            }
            Err(crate::transport::IoError::Signal(e)) => {
                return self.stopped_while_writing(idx, &e);
            }
        };
        self.request_done(idx, outcome)
    }
}

/// Sends `count` bytes of `file` from `offset` through `io` by reading them (for TLS).
fn copy_file(
    io: &crate::transport::Transport,
    file: &std::os::fd::OwnedFd,
    offset: i64,
    count: u64,
    timeout: std::time::Duration,
) -> Result<(), crate::transport::IoError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(
        file.try_clone()
            .map_err(crate::transport::IoError::Closed)?,
    );
    let mut buf = vec![0u8; 64 * 1024];
    let (mut at, end) = (offset.unsigned_abs(), offset.unsigned_abs() + count);
    while at < end {
        let want = usize::try_from(end - at)
            .unwrap_or(buf.len())
            .min(buf.len());
        let n = match file.read_at(&mut buf[..want], at) {
            Ok(0) => {
                // Shorter than announced: the framing cannot be kept.
                let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return Err(crate::transport::IoError::Closed(eof));
            }
            Ok(n) => n,
            Err(e) => return Err(crate::transport::IoError::Closed(e)),
        };
        io.write_all(&mut [std::io::IoSlice::new(&buf[..n])], timeout)?;
        at += n as u64;
    }
    Ok(())
}
