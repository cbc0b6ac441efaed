//! Long-lived HTTP/1.1 responses on a connection of their own, read with
//! buffers sized for what an idle stream holds (ADR 0027).
//!
//! A push stream (the 2025 GET stream, a 2026-07-28 `subscriptions/listen`)
//! stays open for the life of a session and is silent nearly all of that
//! time. Sent through awc, each one keeps the connection's framing buffers
//! (actix-codec reserves 8 KiB to read and 8 KiB to write) and the whole
//! response head for as long as it is open: about 19 KiB per stream, which
//! is 190 MB at 10,000 upstreams (ADR 0027). Here the request is
//! encoded and the response decoded by actix-http's own HTTP/1.1 client
//! codec (no hand-written parsing), but on buffers of our own:
//!
//! - the request is written once and its buffer dropped;
//! - the response head is decoded into a buffer that is dropped once the
//!   body starts, and only the status and the few headers the transports
//!   read are kept;
//! - the body is read through a stack buffer and copied only while a read
//!   is being decoded: an idle stream holds no read buffer at all.
//!
//! The connection comes from an awc `Connector` of this thread (TLS, the
//! connect timeout, no ALPN `h2`: a stream must be HTTP/1.1 to be read this
//! way) and is never pooled: dropping the body closes it. Redirects are
//! never followed (a 3xx is the response, as on every other request).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_codec::{Decoder, Encoder};
use actix_http::body::BodySize;
use actix_http::h1::{ClientCodec, ClientPayloadCodec};
use actix_http::{RequestHead, RequestHeadType};
use actix_service::Service;
use awc::error::{ConnectError, PayloadError, SendRequestError};
use awc::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use awc::http::{Method, StatusCode, Uri, Version};
use awc::{Connect, Connector};
use bytes::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use futures_util::{FutureExt, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// What one read takes from the socket (on the stack: an idle stream
/// holds none of it).
const READ_CHUNK: usize = 4 * 1024;

/// actix-http's client codec grows a read buffer whose capacity falls
/// below 2 KiB to 32 KiB (`h1::reserve_readbuf`); every buffer handed to
/// it keeps at least this much spare, so it never does.
const CODEC_LOW_WATER: usize = 2 * 1024;

/// A response head larger than this is refused (actix-http's own bound
/// for a head it decodes).
const MAX_HEAD: usize = 128 * 1024;

/// The headers a stream's caller may read; the rest of the head is
/// dropped once it is decoded.
const KEPT: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::WWW_AUTHENTICATE,
    header::LOCATION,
    HeaderName::from_static("mcp-session-id"),
];

/// A connection as awc's connector hands it out (plain or TLS).
trait StreamIo: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> StreamIo for T {}

type Connected = LocalBoxFuture<'static, Result<Box<dyn StreamIo>, ConnectError>>;
type Connecting = Rc<dyn Fn(Connect) -> Connected>;

thread_local! {
    static CONNECTORS: RefCell<HashMap<Duration, Connecting>> = RefCell::new(HashMap::new());
}

/// This thread's connector for `connect_timeout` (the timeout is baked
/// into an awc connector, as for [`super::http::client`]).
fn connector(connect_timeout: Duration) -> Connecting {
    CONNECTORS.with(|all| {
        Rc::clone(all.borrow_mut().entry(connect_timeout).or_insert_with(|| {
            // As for the pooled client: make sure rustls has a provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let service = Rc::new(
                Connector::new()
                    .timeout(connect_timeout)
                    .handshake_timeout(connect_timeout)
                    .max_http_version(Version::HTTP_11)
                    .limit(0)
                    .finish(),
            );
            Rc::new(move |target: Connect| -> Connected {
                let service = Rc::clone(&service);
                async move {
                    let io = service.call(target).await?;
                    Ok(Box::new(io) as Box<dyn StreamIo>)
                }
                .boxed_local()
            })
        }))
    })
}

/// One request whose response is read as a stream.
pub(crate) struct StreamRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Bytes>,
    pub connect_timeout: Duration,
    /// Bounds the connect, the request and the response head.
    pub head_timeout: Duration,
}

/// A response whose head has been read; the body is still on the wire.
pub(crate) struct StreamResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: StreamBody,
}

impl StreamResponse {
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers kept from the head ([`KEPT`]).
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub(crate) fn into_body(self) -> StreamBody {
        self.body
    }

    pub(crate) fn body_mut(&mut self) -> &mut StreamBody {
        &mut self.body
    }
}

/// Sends `req` on a connection of its own and reads the response head.
/// Errors are awc's, so the transports map them as they map every other.
pub(crate) async fn open(req: StreamRequest) -> Result<StreamResponse, SendRequestError> {
    let after = req.head_timeout;
    match tokio::time::timeout(after, open_within(req)).await {
        Ok(opened) => opened,
        Err(_) => Err(SendRequestError::Timeout),
    }
}

async fn open_within(req: StreamRequest) -> Result<StreamResponse, SendRequestError> {
    let host = match req.uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str())
            .map_err(|e| SendRequestError::Url(awc::error::InvalidUrl::HttpError(e.into())))?,
        None => return Err(SendRequestError::Url(awc::error::InvalidUrl::MissingHost)),
    };
    let connect = connector(req.connect_timeout);
    let mut io = connect(Connect {
        uri: req.uri.clone(),
        addr: None,
    })
    .await?;

    let mut head = RequestHead::default();
    head.method = req.method;
    head.uri = req.uri;
    head.version = Version::HTTP_11;
    head.headers.insert(header::HOST, host);
    head.headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("mcp-discovery/", env!("CARGO_PKG_VERSION"))),
    );
    for (name, value) in req.headers {
        head.headers.insert(name, value);
    }
    let size = match &req.body {
        Some(body) => BodySize::Sized(body.len() as u64),
        None => BodySize::None,
    };
    let mut codec = ClientCodec::default();
    let mut out = BytesMut::with_capacity(512 + req.body.as_ref().map_or(0, Bytes::len));
    codec
        .encode(
            actix_http::h1::Message::Item((RequestHeadType::Owned(head), size)),
            &mut out,
        )
        .map_err(SendRequestError::Send)?;
    if let Some(body) = &req.body {
        out.extend_from_slice(body);
    }
    io.write_all(&out).await.map_err(SendRequestError::Send)?;
    io.flush().await.map_err(SendRequestError::Send)?;
    drop(out);

    // The head, read into a buffer of its own; what follows it in the
    // last read is the start of the body.
    let mut buf = BytesMut::new();
    let head = loop {
        if let Some(head) = codec.decode(&mut buf).map_err(SendRequestError::Response)? {
            break head;
        }
        if buf.len() > MAX_HEAD {
            return Err(SendRequestError::Response(
                actix_http::error::ParseError::TooLarge,
            ));
        }
        buf.reserve(READ_CHUNK + CODEC_LOW_WATER);
        let n = futures_util::future::poll_fn(|cx| read_into(&mut io, cx, &mut buf))
            .await
            .map_err(|e| SendRequestError::Connect(ConnectError::Io(e)))?;
        if n == 0 {
            return Err(SendRequestError::Connect(ConnectError::Disconnected));
        }
    };
    let mut headers = HeaderMap::with_capacity(KEPT.len());
    for name in KEPT {
        if let Some(value) = head.headers().get(&name) {
            headers.insert(name, value.clone());
        }
    }
    let codec = match codec.message_type() {
        actix_http::h1::MessageType::None => None,
        _ => Some(codec.into_payload_codec()),
    };
    let rest = if buf.is_empty() {
        BytesMut::new()
    } else {
        let mut rest = BytesMut::with_capacity(buf.len() + CODEC_LOW_WATER);
        rest.extend_from_slice(&buf);
        rest
    };
    Ok(StreamResponse {
        status: head.status,
        headers,
        body: StreamBody {
            done: codec.is_none(),
            codec,
            io,
            buf: rest,
        },
    })
}

/// Reads once from `io` through a stack buffer and appends what came to
/// `buf`, keeping the codec's low water mark spare.
fn read_into(
    io: &mut Box<dyn StreamIo>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    let mut scratch = [0u8; READ_CHUNK];
    let mut read = ReadBuf::new(&mut scratch);
    match Pin::new(io).poll_read(cx, &mut read) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Ready(Ok(())) => {
            let filled = read.filled();
            if !filled.is_empty() {
                buf.reserve(filled.len() + CODEC_LOW_WATER);
                buf.extend_from_slice(filled);
            }
            Poll::Ready(Ok(filled.len()))
        }
    }
}

/// The body of a [`StreamResponse`]: chunks as they arrive. Dropping it
/// closes the connection.
pub(crate) struct StreamBody {
    io: Box<dyn StreamIo>,
    /// `None` when the response has no body.
    codec: Option<ClientPayloadCodec>,
    /// Bytes read but not decoded yet; empty (no allocation) between
    /// reads once everything has been decoded.
    buf: BytesMut,
    done: bool,
}

impl StreamBody {
    /// The next chunk, `None` at the end of the body.
    pub(crate) fn next_chunk(
        &mut self,
    ) -> impl Future<Output = Option<Result<Bytes, PayloadError>>> + '_ {
        futures_util::StreamExt::next(self)
    }

    fn decoded(&mut self, eof: bool) -> Option<Result<Bytes, PayloadError>> {
        let codec = self.codec.as_mut()?;
        let decoded = if eof {
            codec.decode_eof(&mut self.buf)
        } else {
            codec.decode(&mut self.buf)
        };
        if self.buf.is_empty() {
            // Frees the read's copy once the last chunk of it is dropped.
            self.buf = BytesMut::new();
        }
        match decoded {
            Ok(Some(Some(chunk))) => Some(Ok(chunk)),
            Ok(Some(None)) => {
                self.done = true;
                None
            }
            Ok(None) if eof => {
                // The close ends the body, even one cut short of its
                // length or last chunk, as awc reads it: a listen cut so
                // is reopened at once and refetched (ADR 0015), and the
                // GET stream's end is a failure anyway. Bytes left that
                // the codec cannot use are an error (above).
                self.done = true;
                None
            }
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl Stream for StreamBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            // Decoded before every read, even from an empty buffer: a
            // length-delimited body ends without another byte.
            if let Some(item) = this.decoded(false) {
                return Poll::Ready(Some(item));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match read_into(&mut this.io, cx, &mut this.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(PayloadError::Io(e))));
                }
                Poll::Ready(Ok(0)) => {
                    let item = this.decoded(true);
                    this.done = true;
                    return Poll::Ready(item);
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    /// A peer on 127.0.0.1 that reads one request head (and `body_len`
    /// bytes of body), reports what it read, then plays `script`: each
    /// step is written on its own, after a short pause, so the client
    /// sees them as separate reads. The socket stays open afterwards
    /// unless `close` is set.
    fn peer(
        body_len: usize,
        script: Vec<Vec<u8>>,
        close: bool,
    ) -> (Uri, mpsc::Receiver<Vec<u8>>, thread::JoinHandle<()>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let uri: Uri = format!("http://{}/mcp?x=1", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let request = read_request(&mut socket, body_len);
            tx.send(request).unwrap();
            for step in script {
                thread::sleep(Duration::from_millis(20));
                if socket.write_all(&step).is_err() {
                    return;
                }
            }
            if close {
                return;
            }
            // Hold the connection until the client drops it.
            let mut rest = [0u8; 64];
            while matches!(socket.read(&mut rest), Ok(n) if n > 0) {}
        });
        (uri, rx, handle)
    }

    fn read_request(socket: &mut TcpStream, body_len: usize) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"\r\n\r\n") {
            assert_eq!(
                socket.read(&mut byte).unwrap(),
                1,
                "the request head ended early"
            );
            seen.push(byte[0]);
        }
        let mut body = vec![0u8; body_len];
        socket.read_exact(&mut body).unwrap();
        seen.extend_from_slice(&body);
        seen
    }

    fn get(uri: Uri) -> StreamRequest {
        StreamRequest {
            method: Method::GET,
            uri,
            headers: vec![(
                header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            )],
            body: None,
            connect_timeout: Duration::from_secs(2),
            head_timeout: Duration::from_secs(2),
        }
    }

    async fn collect(body: &mut StreamBody) -> Result<Vec<u8>, PayloadError> {
        let mut all = Vec::new();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), body.next_chunk())
            .await
            .expect("the body neither ended nor sent within 5 s")
        {
            all.extend_from_slice(&chunk?);
        }
        Ok(all)
    }

    const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
        x-other: dropped\r\nmcp-session-id: s-1\r\n";

    #[actix_rt::test]
    async fn a_chunked_body_across_reads_and_the_head_in_the_same_write() {
        let mut first = SSE_HEAD.to_vec();
        first.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n6\r\ndata: ");
        let script = vec![
            first,
            b"\r\n3\r\n".to_vec(),
            b"a\n\n\r\n".to_vec(),
            b"0\r\n\r\n".to_vec(),
        ];
        let (uri, _seen, peer) = peer(0, script, false);
        let resp = open(get(uri)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers().get("content-type").unwrap(),
            "text/event-stream"
        );
        assert_eq!(resp.headers().get("mcp-session-id").unwrap(), "s-1");
        assert!(
            resp.headers().get("x-other").is_none(),
            "only the kept headers stay"
        );
        let mut body = resp.into_body();
        assert_eq!(collect(&mut body).await.unwrap(), b"data: a\n\n");
        drop(body);
        peer.join().unwrap();
    }

    /// A body with a length ends when the length is read, though the
    /// connection stays open: without decoding before each read the
    /// stream would wait for a byte that never comes.
    #[actix_rt::test]
    async fn a_length_delimited_body_ends_without_a_close() {
        let mut first = SSE_HEAD.to_vec();
        first.extend_from_slice(b"content-length: 9\r\n\r\ndata");
        let (uri, _seen, peer) = peer(0, vec![first, b": a\n\n".to_vec()], false);
        let mut resp = open(get(uri)).await.unwrap();
        assert_eq!(collect(resp.body_mut()).await.unwrap(), b"data: a\n\n");
        drop(resp);
        peer.join().unwrap();
    }

    #[actix_rt::test]
    async fn a_body_delimited_by_the_close_ends_with_it() {
        // HTTP/1.0: an HTTP/1.1 response without a length has no body
        // (RFC 9112 section 6.3; actix-http reads it so, as awc does).
        let mut first = b"HTTP/1.0 200 OK\r\ncontent-type: text/event-stream\r\n".to_vec();
        first.extend_from_slice(b"\r\n");
        let (uri, _seen, peer) = peer(0, vec![first, b"data: a\n\n".to_vec()], true);
        let mut resp = open(get(uri)).await.unwrap();
        assert_eq!(collect(resp.body_mut()).await.unwrap(), b"data: a\n\n");
        peer.join().unwrap();
    }

    /// What goes on the wire: the method, the path and query, `Host`,
    /// our `User-Agent`, the caller's headers and the body with its
    /// length.
    #[actix_rt::test]
    async fn the_request_carries_host_headers_and_body() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen"}"#;
        let mut reply = SSE_HEAD.to_vec();
        reply.extend_from_slice(b"content-length: 0\r\n\r\n");
        let (uri, seen, peer) = peer(body.len(), vec![reply], false);
        let authority = uri.authority().unwrap().to_string();
        let mut req = get(uri);
        req.method = Method::POST;
        req.headers.push((
            HeaderName::from_static("mcp-protocol-version"),
            HeaderValue::from_static("2026-07-28"),
        ));
        req.body = Some(Bytes::from_static(body));
        let mut resp = open(req).await.unwrap();
        assert_eq!(collect(resp.body_mut()).await.unwrap(), b"");
        let request = String::from_utf8(seen.recv().unwrap()).unwrap();
        let lower = request.to_ascii_lowercase();
        assert!(
            request.starts_with("POST /mcp?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            lower.contains(&format!("host: {authority}\r\n")),
            "{request}"
        );
        assert!(lower.contains("user-agent: mcp-discovery/"), "{request}");
        assert!(lower.contains("accept: text/event-stream\r\n"), "{request}");
        assert!(
            lower.contains("mcp-protocol-version: 2026-07-28\r\n"),
            "{request}"
        );
        assert!(
            lower.contains(&format!("content-length: {}\r\n", body.len())),
            "{request}"
        );
        assert!(
            request.ends_with(std::str::from_utf8(body).unwrap()),
            "{request}"
        );
        drop(resp);
        peer.join().unwrap();
    }

    /// The point of the module: between reads an open stream holds no
    /// read buffer, however much went through it.
    #[actix_rt::test]
    async fn an_idle_stream_holds_no_read_buffer() {
        let mut first = SSE_HEAD.to_vec();
        first.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        let big = format!("{:x}\r\n{}\r\n", 20_000, "x".repeat(20_000)).into_bytes();
        let (uri, _seen, peer) = peer(0, vec![first, big], false);
        let mut resp = open(get(uri)).await.unwrap();
        let body = resp.body_mut();
        let mut got = 0;
        while got < 20_000 {
            got += body.next_chunk().await.unwrap().unwrap().len();
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(100), body.next_chunk())
                .await
                .is_err(),
            "the stream is open and silent"
        );
        assert_eq!(body.buf.capacity(), 0, "waiting holds no buffer either");
        drop(resp);
        peer.join().unwrap();
    }

    #[actix_rt::test]
    async fn a_head_that_never_comes_times_out() {
        let (uri, _seen, peer) = peer(0, vec![], false);
        let mut req = get(uri);
        req.head_timeout = Duration::from_millis(200);
        let err = open(req).await.err().unwrap();
        assert!(matches!(err, SendRequestError::Timeout), "{err}");
        peer.join().unwrap();
    }

    #[actix_rt::test]
    async fn an_endless_head_is_refused() {
        let mut steps = vec![b"HTTP/1.1 200 OK\r\n".to_vec()];
        for i in 0..10 {
            steps.push(format!("x-filler-{i}: {}\r\n", "y".repeat(16_000)).into_bytes());
        }
        let (uri, _seen, peer) = peer(0, steps, false);
        let mut req = get(uri);
        // Refused for its size, long before this.
        req.head_timeout = Duration::from_secs(20);
        let err = open(req).await.err().unwrap();
        assert!(matches!(err, SendRequestError::Response(_)), "{err}");
        peer.join().unwrap();
    }

    #[actix_rt::test]
    async fn a_close_before_the_head_is_a_disconnect() {
        let (uri, _seen, peer) = peer(0, vec![b"HTTP/1.1 200".to_vec()], true);
        let err = open(get(uri)).await.err().unwrap();
        assert!(
            matches!(err, SendRequestError::Connect(ConnectError::Disconnected)),
            "{err}"
        );
        peer.join().unwrap();
    }

    /// A chunked body cut by the close ends with what came, as through
    /// awc; a malformed chunk is an error.
    #[actix_rt::test]
    async fn a_cut_body_ends_and_a_malformed_one_fails() {
        let mut first = SSE_HEAD.to_vec();
        first.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n1");
        let (uri, _seen, cut) = peer(0, vec![first], true);
        let mut resp = open(get(uri)).await.unwrap();
        assert_eq!(collect(resp.body_mut()).await.unwrap(), b"abc");
        cut.join().unwrap();

        let mut first = SSE_HEAD.to_vec();
        first.extend_from_slice(b"transfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n");
        let (uri, _seen, peer) = peer(0, vec![first], false);
        let mut resp = open(get(uri)).await.unwrap();
        assert!(collect(resp.body_mut()).await.is_err());
        drop(resp);
        peer.join().unwrap();
    }
}
