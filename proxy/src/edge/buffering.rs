//! Request buffering (`limits.request_buffering`, on by default as in nginx): the edge reads a
//! request's body whole, checking its framing and declared length as it goes, before anything
//! goes upstream. A slow upload then holds a client connection and some memory or disk at the
//! edge, never a tunnel stream or a backend connection; and a body that ends short, breaks its
//! chunking or disagrees with its content-length reaches no backend at all.
//!
//! Pingora opens the upstream stream before it reads a body, and reads it only into that
//! stream. So the buffered request is handed to the edge's own proxy as a Pingora subrequest
//! whose body is the buffered one (sent on as one Content-Length body), and the subrequest's
//! answer is written to the client. Up to `request_buffer_memory` bytes stay in memory; a larger
//! body goes on to an unlinked temporary file, read back in pieces as the subrequest takes them.

use std::io::SeekFrom;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use pingora_core::protocols::http::HttpTask;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::Session;
use pingora_proxy::subrequest::{BodyMode, Ctx as SubrequestCtx};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use crate::config::limits::Limits;

/// What marks a subrequest as one carrying a body the edge already holds whole.
#[derive(Debug)]
pub struct Replayed {
    len: u64,
    /// Set by the subrequest when the tunnel failed before any answer and Pingora cannot send
    /// the body again itself (it keeps 64 KB of a body for that): the edge, which holds all of
    /// it, then sends the request again as a new subrequest instead of passing the error on.
    resend: Option<Arc<AtomicBool>>,
}

impl Replayed {
    /// The marker, if `session` is a subrequest carrying a buffered body.
    pub fn of(session: &Session) -> Option<&Replayed> {
        session.subrequest_ctx.as_ref()?.user_ctx()?.downcast_ref::<Replayed>()
    }

    /// Frames the subrequest's body by its length: it parsed the client's head, which may say
    /// chunked; the tunnel and the backend get a Content-Length, as from nginx.
    pub fn frame(session: &mut Session) -> Result<()> {
        let Some(len) = Replayed::of(session).map(|r| r.len) else { return Ok(()) };
        frame_by_length(session.req_header_mut(), len)
    }

    /// Whether this try asked to be sent again (its error answer is not the client's).
    pub fn resending(&self) -> bool {
        self.resend.as_ref().is_some_and(|r| r.load(Ordering::Acquire))
    }

    /// Asks for the request to be sent again whole, if another try is left.
    pub fn ask_resend(&self) {
        if let Some(r) = &self.resend {
            r.store(true, Ordering::Release);
        }
    }
}

/// A request's body framed by its length, which the edge knows once it holds the body.
fn frame_by_length(req: &mut pingora_http::RequestHeader, len: u64) -> Result<()> {
    req.remove_header(&http::header::TRANSFER_ENCODING);
    req.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
    Ok(())
}

/// Tries of a buffered request whose tunnel failed before any answer, Pingora's retries aside.
const SENDS: usize = 3;

/// A request body read whole.
#[derive(Debug, Default)]
pub struct Buffered {
    /// Joined: the pieces a client sent (one byte each, perhaps) go on as one piece, never as
    /// that many tiny DATA frames (see `coalesce`).
    memory: bytes::BytesMut,
    file: Option<tokio::fs::File>,
    len: u64,
}

/// Why a body was not read whole: the answer the client gets (nothing went upstream).
#[derive(Debug)]
pub enum Unread {
    /// Over `limits.max_body`: 413.
    TooLarge(u64),
    /// No piece within `limits.body_timeout`: 408.
    Slow(Duration),
    /// The client's framing broke or it went away: 400 (if it is still there to read it).
    Broken(String),
    /// The temporary file could not be written: 500.
    Storage(String),
}

impl Unread {
    pub fn status(&self) -> u16 {
        match self {
            Unread::TooLarge(_) => 413,
            Unread::Slow(_) => 408,
            Unread::Broken(_) => 400,
            Unread::Storage(_) => 500,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Unread::TooLarge(_) => "limit",
            Unread::Slow(_) => "body_timeout",
            Unread::Broken(_) => "framing",
            Unread::Storage(_) => "buffer",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Unread::TooLarge(max) => format!("request body over {max} bytes"),
            Unread::Slow(t) => format!("no request body data for {t:?}"),
            Unread::Broken(why) => format!("request body not read whole: {why}"),
            Unread::Storage(why) => format!("request body not buffered: {why}"),
        }
    }
}

impl Buffered {
    pub fn len(&self) -> u64 {
        self.len
    }

    async fn push(&mut self, piece: Bytes, limits: &Limits) -> std::result::Result<(), Unread> {
        self.len += piece.len() as u64;
        if self.len > limits.max_body {
            return Err(Unread::TooLarge(limits.max_body));
        }
        if self.file.is_none() && self.len <= limits.request_buffer_memory {
            self.memory.extend_from_slice(&piece);
            return Ok(());
        }
        if self.file.is_none() {
            let file = tempfile::tempfile_in(&limits.request_buffer_dir).map_err(|e| {
                Unread::Storage(format!("temporary file in {}: {e}", limits.request_buffer_dir.display()))
            })?;
            self.file = Some(tokio::fs::File::from_std(file));
        }
        let file = self.file.as_mut().expect("made above");
        file.write_all(&piece).await.map_err(|e| Unread::Storage(format!("writing the temporary file: {e}")))
    }

    /// Made ready to be sent, as often as needed.
    async fn hold(mut self) -> std::io::Result<Held> {
        let file = match self.file.take() {
            Some(mut f) => {
                f.flush().await?;
                Some(f.into_std().await)
            }
            None => None,
        };
        Ok(Held { memory: self.memory.freeze(), file, len: self.len })
    }
}

/// A buffered body, ready to be sent.
#[derive(Debug)]
struct Held {
    memory: Bytes,
    file: Option<std::fs::File>,
    len: u64,
}

impl Held {
    /// The body, piece by piece, into `tx`, then its end.
    async fn send(&self, tx: &tokio::sync::mpsc::Sender<HttpTask>) -> std::io::Result<()> {
        if !self.memory.is_empty() && tx.send(HttpTask::Body(Some(self.memory.clone()), false)).await.is_err() {
            return Ok(());
        }
        if let Some(file) = &self.file {
            // A second handle on the same open file, read from its start.
            let mut file = tokio::fs::File::from_std(file.try_clone()?);
            file.seek(SeekFrom::Start(0)).await?;
            loop {
                let mut piece = vec![0u8; 64 << 10];
                let n = file.read(&mut piece).await?;
                if n == 0 {
                    break;
                }
                piece.truncate(n);
                if tx.send(HttpTask::Body(Some(piece.into()), false)).await.is_err() {
                    return Ok(());
                }
            }
        }
        let _ = tx.send(HttpTask::Body(None, true)).await;
        Ok(())
    }
}

/// Reads the request's body whole, within `limits`.
pub async fn read_whole(session: &mut Session, limits: &Limits) -> std::result::Result<Buffered, Unread> {
    let mut body = Buffered::default();
    loop {
        let piece = tokio::time::timeout(limits.body_timeout, session.downstream_session.read_request_body())
            .await
            .map_err(|_| Unread::Slow(limits.body_timeout))?
            .map_err(|e| Unread::Broken(e.to_string()))?;
        match piece {
            Some(piece) => body.push(piece, limits).await?,
            None => return Ok(body),
        }
    }
}

/// Sends the request with `body` through this edge's own proxy as a subrequest and writes its
/// answer to the client (again as a new subrequest when one asks, see [`Replayed`]). Ok(true):
/// the request is answered.
pub async fn replay(session: &mut Session, body: Buffered) -> Result<bool> {
    // The subrequest parses its head from this one's, framed by the length now known.
    frame_by_length(session.downstream_session.req_header_mut(), body.len())?;
    let held = Arc::new(body.hold().await.map_err(|e| Error::because(ErrorType::InternalError, "request body", e))?);
    for send in 1..=SENDS {
        let resend = (send < SENDS).then(|| Arc::new(AtomicBool::new(false)));
        let marker = Replayed { len: held.len, resend: resend.clone() };
        match send_once(session, held.clone(), marker, resend.as_deref()).await? {
            Some(answered) => return Ok(answered),
            None => crate::metrics::RETRIES.inc(),
        }
    }
    Error::e_explain(ErrorType::InternalError, "a buffered request asked to be sent again after its last try")
}

/// One subrequest: Some(true) once its answer is written; None when it asked to be sent again
/// (its error answer is dropped, the client sees nothing of it).
async fn send_once(
    session: &mut Session,
    held: Arc<Held>,
    marker: Replayed,
    resend: Option<&AtomicBool>,
) -> Result<Option<bool>> {
    let Some(spawner) = session.subrequest_spawner.as_ref() else {
        return Error::e_explain(ErrorType::InternalError, "request buffering without a subrequest spawner");
    };
    // An HTTP/2 request is written out with its version, which no HTTP/1 parser takes, and
    // without a Host: the subrequest gets HTTP/1.1 and the authority as Host.
    let req = session.downstream_session.req_header_mut();
    let version = req.version;
    if version == http::Version::HTTP_2 {
        if let Some(authority) = req.uri.authority().map(|a| a.as_str().to_string())
            && !req.headers.contains_key(http::header::HOST)
        {
            req.insert_header(http::header::HOST, authority)?;
        }
        req.set_version(http::Version::HTTP_11);
    }
    let ctx = SubrequestCtx::builder().body_mode(BodyMode::ExpectBody).user_ctx(Box::new(marker)).build();
    let (subrequest, handle) = spawner.create_subrequest(session.as_downstream(), ctx);
    session.downstream_session.req_header_mut().set_version(version);
    let (tx, mut rx, wants_body, mut proxy_error) =
        (handle.tx, handle.rx, handle.subreq_wants_body, handle.subreq_proxy_error);
    let run = tokio::spawn(subrequest.run());
    // The subrequest takes a closed channel for a client gone: `tx` stays open here until
    // the answer is written, the feed has a copy.
    let feed_tx = tx.clone();
    let feed = tokio::spawn(async move {
        // Only once the subrequest reads (it may answer first, e.g. from a refusal).
        if wants_body.await.is_ok()
            && let Err(e) = held.send(&feed_tx).await
        {
            log::warn!("buffered request body not read back: {e}");
        }
    });
    let answered = async {
        let mut first = true;
        while let Some(task) = rx.recv().await {
            if first && resend.is_some_and(|r| r.load(Ordering::Acquire)) {
                return Ok(None);
            }
            first = false;
            let mut tasks = vec![task];
            while let Ok(more) = rx.try_recv() {
                tasks.push(more);
            }
            if session.write_response_tasks(tasks).await? {
                return Ok(Some(true));
            }
        }
        Ok::<Option<bool>, Box<Error>>(Some(false))
    }
    .await;
    feed.abort();
    // Unless answered, the subrequest is left to end by itself: its next write finds the
    // channel closed (a client gone, or an error answer nobody reads).
    drop(rx);
    match answered? {
        Some(true) => {
            let _ = run.await;
            Ok(Some(true))
        }
        None => Ok(None),
        Some(false) => {
            drop(tx);
            match proxy_error.try_recv() {
                Ok(e) => Err(e),
                Err(_) => Error::e_explain(
                    ErrorType::InternalError,
                    "the buffered request's subrequest ended without an answer",
                ),
            }
        }
    }
}
