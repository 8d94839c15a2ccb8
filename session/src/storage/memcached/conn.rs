//! One multiplexed connection to a memcached node, on the meta protocol.
//!
//! memcached answers the commands of one connection in the order it received them, so any
//! number of requests can share a connection: each sends its command and waits for the
//! answer in its place in line. Two tasks drive the connection: a writer that sends the
//! commands queued since its last write in one write (under load, one system call for
//! many requests), and a reader that parses the answers and hands each to the request
//! first in line.
//!
//! async-memcached, which the store used before, holds a connection for the whole of an
//! operation: with 16 pooled connections, a memcached answering 300 ms late served about 53
//! operations a second, and most session requests under load got 503.
//!
//! A request that gives up waiting (a timeout) leaves its place in line: its answer is read
//! and dropped when it comes, and the connection stays in step. A connection whose socket
//! broke fails every request in line at once and is closed for good; the store opens
//! another.

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use futures_util::future::{self, Either};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, oneshot},
};

/// The most bytes of commands the writer gathers for one write.
const MAX_BATCH: usize = 64 * 1024;
/// What the reader asks the socket for at least, per read.
const READ_CHUNK: usize = 16 * 1024;

/// A command's answer: its first line (without the line end) and, for `VA`, the value.
pub(super) struct Reply {
    line: Vec<u8>,
    value: Option<Vec<u8>>,
}

impl Reply {
    /// The status: `VA`, `HD`, `EN`, `NS`, `EX`, `NF`, `MN`, or an error line's first word
    /// (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`).
    pub(super) fn status(&self) -> &[u8] {
        self.line.split(|&b| b == b' ').next().unwrap_or_default()
    }

    /// The value of the return flag `flag` (the token after the letter), if the answer has
    /// it.
    pub(super) fn flag(&self, flag: u8) -> Option<&[u8]> {
        let mut tokens = self.line.split(|&b| b == b' ').skip(1);
        if self.line.starts_with(b"VA ") {
            tokens.next(); // the value's size
        }
        tokens
            .find(|token| token.first() == Some(&flag))
            .map(|token| &token[1..])
    }

    /// A numeric return flag.
    pub(super) fn number<T: std::str::FromStr>(&self, flag: u8) -> Option<T> {
        std::str::from_utf8(self.flag(flag)?).ok()?.parse().ok()
    }

    /// The value, for a `VA` answer.
    pub(super) fn take_value(&mut self) -> Option<Vec<u8>> {
        self.value.take()
    }

    /// Whether the answer is `ERROR` or `CLIENT_ERROR`: the server did not take the command
    /// as it was sent. (`SERVER_ERROR`, such as an item over the size limit, answers a
    /// command the server read whole.)
    pub(super) fn is_protocol_error(&self) -> bool {
        matches!(self.status(), b"ERROR" | b"CLIENT_ERROR")
    }

    /// The whole first line, for error messages.
    pub(super) fn line(&self) -> String {
        String::from_utf8_lossy(&self.line).into_owned()
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("line", &self.line())
            .field("value_len", &self.value.as_ref().map(Vec::len))
            .finish()
    }
}

/// Why a command got no answer: the connection closed (with the cause, when known).
#[derive(Debug, Clone, thiserror::Error)]
#[error("memcached connection closed: {0}")]
pub(super) struct Closed(Arc<str>);

type Answer = Result<Reply, Closed>;

struct Request {
    command: Vec<u8>,
    answer: oneshot::Sender<Answer>,
}

/// The requests in line for an answer, in the order their commands were sent.
struct Line {
    waiting: VecDeque<oneshot::Sender<Answer>>,
    /// Set once the connection broke; then nothing joins the line.
    closed: Option<Closed>,
}

struct Shared {
    line: Mutex<Line>,
    /// Whether the connection broke, read without the lock by [`Connection::is_closed`].
    broken: AtomicBool,
}

impl Shared {
    fn line(&self) -> std::sync::MutexGuard<'_, Line> {
        // Nothing panics under the lock; a poisoned line is still in step.
        self.line.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the connection for `cause`: every request in line fails.
    fn close(&self, cause: &str) {
        let closed = Closed(cause.into());
        let waiting = {
            let mut line = self.line();
            if line.closed.is_none() {
                line.closed = Some(closed.clone());
            }
            std::mem::take(&mut line.waiting)
        };
        self.broken.store(true, Ordering::Release);
        for answer in waiting {
            let _ = answer.send(Err(closed.clone()));
        }
    }
}

/// A connection that any number of requests share; clones are handles to the same one.
#[derive(Clone)]
pub(super) struct Connection {
    requests: mpsc::UnboundedSender<Request>,
    shared: Arc<Shared>,
}

impl Connection {
    /// Starts the tasks that drive a connection on `reader` and `writer` (the halves of one
    /// socket), on the current tokio runtime.
    pub(super) fn start<R, W>(reader: R, writer: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (requests, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            line: Mutex::new(Line {
                waiting: VecDeque::new(),
                closed: None,
            }),
            broken: AtomicBool::new(false),
        });
        let (alive, ended) = oneshot::channel::<()>();
        tokio::spawn(write(writer, queue, Arc::clone(&shared), alive));
        tokio::spawn(read(reader, Arc::clone(&shared), ended));
        Self { requests, shared }
    }

    /// Sends `command` (one or more complete meta commands' bytes, each expecting one
    /// answer; here always one) and waits for its answer.
    ///
    /// # Errors
    ///
    /// When the connection closed before the answer came.
    pub(super) async fn call(&self, command: Vec<u8>) -> Answer {
        let (answer, answered) = oneshot::channel();
        if self.requests.send(Request { command, answer }).is_err() {
            return Err(Closed("the connection's tasks ended".into()));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(Closed("the connection's tasks ended".into())))
    }

    /// Whether the connection is closed for good: a new one is needed.
    pub(super) fn is_closed(&self) -> bool {
        self.shared.broken.load(Ordering::Acquire) || self.requests.is_closed()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// The writer: sends what is queued, in batches, after putting each request in line.
/// Ends when every handle is gone (then it shuts the socket's sending side, so the server
/// closes the connection) or the connection broke.
async fn write<W: AsyncWrite + Unpin>(
    mut socket: W,
    mut queue: mpsc::UnboundedReceiver<Request>,
    shared: Arc<Shared>,
    _done: oneshot::Sender<()>,
) {
    let mut answers = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut batch = first.command;
        answers.push(first.answer);
        while batch.len() < MAX_BATCH {
            let Ok(next) = queue.try_recv() else { break };
            batch.extend_from_slice(&next.command);
            answers.push(next.answer);
        }
        {
            let mut line = shared.line();
            if let Some(closed) = &line.closed {
                let closed = closed.clone();
                drop(line);
                for answer in answers.drain(..) {
                    let _ = answer.send(Err(closed.clone()));
                }
                return;
            }
            line.waiting.extend(answers.drain(..));
        }
        let sent = async {
            socket.write_all(&batch).await?;
            socket.flush().await
        };
        if let Err(err) = sent.await {
            shared.close(&format!("cannot send: {err}"));
            return;
        }
    }
    let _ = socket.shutdown().await;
}

/// The reader: parses answers as they come and hands each to the request first in line.
/// Ends when the socket closes or breaks, when an answer cannot be parsed or has no request
/// waiting for it, or once the writer ended (no handle left, so no one waits).
async fn read<R: AsyncRead + Unpin>(
    mut socket: R,
    shared: Arc<Shared>,
    mut writer_gone: oneshot::Receiver<()>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut start = 0;
    loop {
        loop {
            match parse(&buf[start..]) {
                Ok(Some((reply, used))) => {
                    start += used;
                    let Some(answer) = shared.line().waiting.pop_front() else {
                        shared.close(&format!("an answer no command asked for: {}", reply.line()));
                        return;
                    };
                    // An error line says the server did not read the command as sent: it
                    // may answer the rest of it too (a value read as a command), and every
                    // answer after it would go to the wrong request. The connection closes.
                    let out_of_step = reply.is_protocol_error().then(|| reply.line());
                    // The request may have stopped waiting (a timeout): its answer is dropped.
                    let _ = answer.send(Ok(reply));
                    if let Some(line) = out_of_step {
                        shared.close(&format!("closed after the error answer {line:?}"));
                        return;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    shared.close(&err);
                    return;
                }
            }
        }
        if start == buf.len() {
            buf.clear();
        } else if start > 0 {
            buf.drain(..start);
        }
        start = 0;
        buf.reserve(READ_CHUNK);
        let read = std::pin::pin!(socket.read_buf(&mut buf));
        let read = match future::select(read, &mut writer_gone).await {
            Either::Left((read, _)) => read,
            Either::Right(_) => return,
        };
        match read {
            Ok(0) => {
                shared.close("closed by the server");
                return;
            }
            Ok(_) => {}
            Err(err) => {
                shared.close(&format!("cannot receive: {err}"));
                return;
            }
        }
    }
}

/// The first complete answer in `bytes` and the number of bytes it took; `None` if more
/// bytes are needed.
///
/// # Errors
///
/// When the bytes are not a meta protocol answer: the connection is out of step.
fn parse(bytes: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &bytes[..end];
    let head = end + 2;
    if !line.starts_with(b"VA ") {
        let reply = Reply {
            line: line.to_vec(),
            value: None,
        };
        return Ok(Some((reply, head)));
    }
    let size = line[3..]
        .split(|&b| b == b' ')
        .next()
        .and_then(|size| std::str::from_utf8(size).ok()?.parse::<usize>().ok())
        .ok_or_else(|| format!("a value without a size: {}", String::from_utf8_lossy(line)))?;
    let total = head + size + 2;
    if bytes.len() < total {
        return Ok(None);
    }
    if &bytes[head + size..total] != b"\r\n" {
        return Err("a value not followed by a line end".to_owned());
    }
    let reply = Reply {
        line: line.to_vec(),
        value: Some(bytes[head..head + size].to_vec()),
    };
    Ok(Some((reply, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_whole_or_not_at_all() {
        assert!(parse(b"").unwrap().is_none());
        assert!(parse(b"HD c12").unwrap().is_none());
        let (reply, used) = parse(b"HD c12 f3\r\nEN\r\n").unwrap().unwrap();
        assert_eq!((reply.status(), used), (&b"HD"[..], 11));
        assert_eq!(reply.number::<u64>(b'c'), Some(12));
        assert_eq!(reply.number::<u32>(b'f'), Some(3));
        assert_eq!(reply.flag(b't'), None);

        let answer = b"VA 5 f7 c9\r\nab\r\nc\r\nMN\r\n";
        for cut in 0..answer.len() - 4 {
            assert!(parse(&answer[..cut]).unwrap().is_none(), "{cut}");
        }
        let (mut reply, used) = parse(answer).unwrap().unwrap();
        assert_eq!(used, answer.len() - 4);
        assert_eq!(reply.status(), b"VA");
        assert_eq!(reply.number::<u32>(b'f'), Some(7));
        assert_eq!(reply.number::<u64>(b'c'), Some(9));
        assert_eq!(reply.take_value().unwrap(), b"ab\r\nc");

        let (reply, _) = parse(b"SERVER_ERROR object too large for cache\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(reply.status(), b"SERVER_ERROR");
        assert!(parse(b"VA x\r\n").is_err());
        assert!(parse(b"VA 1\r\nabc\r\n").is_err());
    }

    #[tokio::test]
    async fn requests_share_one_connection_in_order_and_fail_together_when_it_breaks() {
        let (client, mut server) = tokio::io::duplex(1024);
        let (reader, writer) = tokio::io::split(client);
        let conn = Connection::start(reader, writer);
        let calls = futures_util::future::join_all(
            (0..3).map(|n| conn.call(format!("mn {n}\r\n").into_bytes())),
        );
        let serve = async {
            let mut got = Vec::new();
            while got.len() < 15 {
                let mut buf = [0; 64];
                let n = server.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            // Answered in order; the requests were queued in order.
            server
                .write_all(b"HD a0\r\nHD a1\r\nHD a2\r\n")
                .await
                .unwrap();
            got
        };
        let (answers, got) = tokio::join!(calls, serve);
        assert_eq!(got, b"mn 0\r\nmn 1\r\nmn 2\r\n");
        for (n, answer) in answers.into_iter().enumerate() {
            assert_eq!(
                answer.unwrap().flag(b'a').unwrap(),
                n.to_string().as_bytes()
            );
        }

        let pending = conn.call(b"mn\r\n".to_vec());
        let close = async {
            let mut buf = [0; 8];
            let _ = server.read(&mut buf).await;
            drop(server);
        };
        let (answer, ()) = tokio::join!(pending, close);
        assert!(answer.unwrap_err().to_string().contains("closed"));
        assert!(conn.is_closed());
        assert!(conn.call(b"mn\r\n".to_vec()).await.is_err());
    }

    /// memcached before 1.6.10 answered a set in today's form with `CLIENT_ERROR`, then read
    /// its value as a command and answered `ERROR`: one command, two answers. The request
    /// behind must fail, not take the stray answer for its own.
    #[tokio::test]
    async fn an_error_answer_closes_the_connection_so_no_answer_goes_astray() {
        let (client, mut server) = tokio::io::duplex(1024);
        let (reader, writer) = tokio::io::split(client);
        let conn = Connection::start(reader, writer);
        let calls = futures_util::future::join(
            conn.call(b"ms k 2 T9\r\n{}\r\n".to_vec()),
            conn.call(b"mg other v\r\n".to_vec()),
        );
        let serve = async {
            let mut got = Vec::new();
            while !got.ends_with(b"mg other v\r\n") {
                let mut buf = [0; 64];
                let n = server.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            server
                .write_all(b"CLIENT_ERROR invalid flag\r\nERROR\r\nVA 2\r\n{}\r\n")
                .await
                .unwrap();
            server
        };
        let ((set, get), _server) = tokio::join!(calls, serve);
        assert_eq!(set.unwrap().status(), b"CLIENT_ERROR");
        assert!(get.unwrap_err().to_string().contains("CLIENT_ERROR"));
        assert!(conn.is_closed());
    }
}
