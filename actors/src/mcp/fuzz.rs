//! Fuzz targets on the stable toolchain (proptest): what an upstream sends
//! reaches these parsers first. Each property runs `cases(N)` cases in
//! `cargo test` (a few seconds); `PROPTEST_CASES=100000` runs longer (see
//! the README, "Fuzzing"). A failure prints the minimized input; it becomes
//! a plain `#[test]` below.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::auth::parse_token_response;
use super::jsonrpc::{encode_notification, encode_request, parse_messages, Incoming};
use super::sse::{Event, SseParser};

/// `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// JSON values without floats (whose text form does not round-trip
/// exactly), nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ------------------------------------------------------------------ SSE

/// Bytes shaped like an event stream (fields, comments, blank lines, every
/// line terminator, a BOM, multi-byte UTF-8, junk) rather than uniform
/// noise, which would almost never form an event.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "[a-z0-9 {}\":é€]{0,20}".prop_map(|v| format!("data: {v}").into_bytes()),
        "[a-z0-9]{0,8}".prop_map(|v| format!("data:{v}").into_bytes()),
        "[a-z0-9]{0,8}".prop_map(|v| format!("id: {v}").into_bytes()),
        "[a-z]{0,8}".prop_map(|v| format!("event: {v}").into_bytes()),
        "[0-9]{0,22}".prop_map(|v| format!("retry: {v}").into_bytes()),
        ".{0,10}".prop_map(|v| format!(":{v}").into_bytes()),
        Just(b"data".to_vec()),
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    let terminator = prop_oneof![Just(&b"\n"[..]), Just(&b"\r"[..]), Just(&b"\r\n"[..])];
    (
        any::<bool>(),
        prop::collection::vec((line, terminator), 0..24),
    )
        .prop_map(|(bom, lines)| {
            let mut out = if bom {
                b"\xEF\xBB\xBF".to_vec()
            } else {
                Vec::new()
            };
            for (line, end) in lines {
                out.extend_from_slice(&line);
                out.extend_from_slice(end);
            }
            out
        })
}

/// Everything a run of the parser shows: the events, whether and when it
/// failed, and the stream state a reconnection would carry.
#[derive(Debug, PartialEq)]
struct Run {
    events: Vec<Event>,
    failed: bool,
    last_event_id: String,
    retry: Option<std::time::Duration>,
}

fn run_sse(chunks: &[&[u8]], limit: usize) -> Run {
    let mut parser = SseParser::new(limit);
    let mut events = Vec::new();
    let mut failed = false;
    for chunk in chunks {
        if parser.feed(chunk, &mut events).is_err() {
            failed = true;
            break;
        }
    }
    if !failed {
        parser.finish();
    }
    Run {
        events,
        failed,
        last_event_id: parser.last_event_id().to_owned(),
        retry: parser.retry(),
    }
}

/// `bytes` cut at the given points (taken modulo its length, sorted).
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points {
        out.push(&bytes[start..p]);
        start = p;
    }
    out.push(&bytes[start..]);
    out
}

proptest! {
    #![proptest_config(cases(512))]

    /// The same bytes split anywhere (including empty chunks and one byte
    /// at a time) give the same events, the same failure, the same state.
    #[test]
    fn sse_is_chunking_invariant(
        bytes in sse_stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        limit in prop_oneof![Just(1usize << 20), 8usize..96],
    ) {
        let whole = run_sse(&[&bytes], limit);
        let pieces = run_sse(&split(&bytes, &cuts), limit);
        prop_assert_eq!(&whole, &pieces);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&whole, &run_sse(&bytewise, limit));
        for event in &whole.events {
            prop_assert!(!event.data.is_empty());
            prop_assert!(!event.event.is_empty());
        }
    }

    /// Arbitrary bytes never panic, and no event is larger than the limit.
    #[test]
    fn sse_never_panics_on_noise(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        limit in 1usize..256,
    ) {
        let run = run_sse(&[&bytes], limit);
        for event in &run.events {
            prop_assert!(event.data.len() <= limit, "{} > {limit}", event.data.len());
        }
    }
}

// ------------------------------------------------------------- JSON-RPC

/// One message as it could come from a server, with what it must parse to.
#[derive(Clone, Debug)]
enum Message {
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    Notification {
        method: String,
        params: Option<Value>,
    },
    Result {
        id: Value,
        result: Value,
    },
    Error {
        id: Value,
        code: i64,
        message: String,
        data: Option<Value>,
    },
}

fn rpc_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,10}".prop_map(Value::String),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let params = || prop::option::of(json_value());
    prop_oneof![
        (rpc_id(), ".{1,16}", params()).prop_map(|(id, method, params)| Message::Request {
            id,
            method,
            params
        }),
        (".{1,16}", params()).prop_map(|(method, params)| Message::Notification { method, params }),
        (rpc_id(), json_value()).prop_map(|(id, result)| Message::Result { id, result }),
        (
            rpc_id(),
            any::<i64>(),
            ".{0,16}",
            prop::option::of(json_value())
        )
            .prop_map(|(id, code, message, data)| Message::Error {
                id,
                code,
                message,
                data
            }),
    ]
}

impl Message {
    fn to_json(&self) -> Value {
        let mut v = match self {
            Message::Request { id, method, params } => {
                json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            }
            Message::Notification { method, params } => {
                json!({"jsonrpc": "2.0", "method": method, "params": params})
            }
            Message::Result { id, result } => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Message::Error {
                id,
                code,
                message,
                data,
            } => {
                let mut error = json!({"code": code, "message": message});
                if let Some(data) = data {
                    error["data"] = data.clone();
                }
                json!({"jsonrpc": "2.0", "id": id, "error": error})
            }
        };
        // An absent `params` is left out, not sent as null.
        if v.get("params").is_some_and(Value::is_null) {
            if let Some(map) = v.as_object_mut() {
                map.remove("params");
            }
        }
        v
    }

    /// Whether `incoming` is this message.
    fn check(&self, incoming: &Incoming) -> Result<(), TestCaseError> {
        match (self, incoming) {
            (
                Message::Request { id, method, params },
                Incoming::Request {
                    id: i,
                    method: m,
                    params: p,
                },
            ) => {
                prop_assert_eq!(id, i);
                prop_assert_eq!(method, m);
                prop_assert_eq!(params.as_ref().filter(|p| !p.is_null()), p.as_ref());
            }
            (
                Message::Notification { method, params },
                Incoming::Notification {
                    method: m,
                    params: p,
                },
            ) => {
                prop_assert_eq!(method, m);
                prop_assert_eq!(params.as_ref().filter(|p| !p.is_null()), p.as_ref());
            }
            (
                Message::Result { id, result },
                Incoming::Response {
                    id: i,
                    reply: Ok(raw),
                },
            ) => {
                prop_assert_eq!(id, i);
                let got: Value = serde_json::from_str(raw.get())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(result, &got);
            }
            (
                Message::Error {
                    id, code, message, ..
                },
                Incoming::Response {
                    id: i,
                    reply: Err(e),
                },
            ) => {
                prop_assert_eq!(id, i);
                let shown = format!("{e:?}");
                prop_assert!(shown.contains(&code.to_string()), "{shown}");
                let _ = message;
            }
            (want, got) => prop_assert!(false, "{want:?} parsed as {got:?}"),
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(cases(512))]

    /// parse(serialize(x)) == x, for one message and for a batch.
    #[test]
    fn jsonrpc_round_trips(messages in prop::collection::vec(message(), 1..6)) {
        for m in &messages {
            let bytes = serde_json::to_vec(&m.to_json()).unwrap();
            let parsed = parse_messages(&bytes, "fuzz").unwrap();
            prop_assert_eq!(parsed.len(), 1);
            m.check(&parsed[0])?;
        }
        let batch = Value::Array(messages.iter().map(Message::to_json).collect());
        let parsed = parse_messages(&serde_json::to_vec(&batch).unwrap(), "fuzz").unwrap();
        prop_assert_eq!(parsed.len(), messages.len());
        for (m, p) in messages.iter().zip(&parsed) {
            m.check(p)?;
        }
    }

    /// What the engine sends parses back to what it meant.
    #[test]
    fn jsonrpc_encoders_round_trip(
        id in any::<u64>(),
        method in ".{1,16}",
        params in prop::option::of(json_value()),
    ) {
        let want = Message::Request { id: Value::from(id), method: method.clone(), params: params.clone() };
        let parsed = parse_messages(&encode_request(id, &method, params.as_ref()).unwrap(), "fuzz").unwrap();
        want.check(&parsed[0])?;
        let want = Message::Notification { method: method.clone(), params: params.clone() };
        let parsed = parse_messages(&encode_notification(&method, params.as_ref()).unwrap(), "fuzz").unwrap();
        want.check(&parsed[0])?;
    }

    /// Any JSON, and any bytes, give messages or an error, never a panic.
    #[test]
    fn jsonrpc_never_panics(value in json_value(), noise in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_messages(&serde_json::to_vec(&value).unwrap(), "fuzz");
        let _ = parse_messages(&noise, "fuzz");
    }
}

// ------------------------------------------------------- token response

proptest! {
    #![proptest_config(cases(512))]

    /// A token response with any `expires_in` (number, string, huge,
    /// negative, float, junk) parses or fails, never panics; a number or a
    /// numeric string that fits is taken as said.
    #[test]
    fn token_response_is_parsed_or_refused(
        token in ".{0,16}",
        expires in prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "[0-9]{0,25}".prop_map(Value::String),
            json_value(),
        ],
        extra in json_value(),
    ) {
        let body = json!({"access_token": token, "expires_in": expires, "token_type": "Bearer", "x": extra});
        let parsed = parse_token_response(&serde_json::to_vec(&body).unwrap()).unwrap();
        prop_assert_eq!(&parsed.access_token, &token);
        let fits = match &expires {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse::<u64>().ok(),
            _ => None,
        };
        match (&expires, fits) {
            (_, Some(seconds)) => prop_assert_eq!(parsed.expires_in, Some(seconds)),
            // Negative: already expired.
            (Value::Number(n), None) if n.as_i64().is_some() => {
                prop_assert_eq!(parsed.expires_in, Some(0))
            }
            // Too many digits for u64: saturates (the refresher clamps it).
            (Value::String(s), None) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                prop_assert_eq!(parsed.expires_in, Some(u64::MAX))
            }
            (Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_), None) => {
                prop_assert_eq!(parsed.expires_in, None)
            }
            _ => {}
        }
    }

    #[test]
    fn token_response_noise_never_panics(value in json_value(), noise in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_token_response(&serde_json::to_vec(&value).unwrap());
        let _ = parse_token_response(&noise);
    }
}

// ------------------------------------------------- minimized regressions

/// Found by `sse_is_chunking_invariant`: a CR at the end of one chunk, then
/// an empty chunk, then the LF: the empty chunk made the parser forget the
/// CR, so CRLF counted as two line ends (a blank line) and dispatched the
/// event early, split in two.
#[test]
fn sse_empty_chunk_between_cr_and_lf_keeps_one_line_end() {
    let bytes = b"data: a\r\nevent: e\ndata: b\n\n";
    let cut = 8; // just after the CR
    let whole = run_sse(&[bytes], 1 << 20);
    let pieces = run_sse(&[&bytes[..cut], b"", &bytes[cut..]], 1 << 20);
    assert_eq!(whole, pieces);
    assert_eq!(pieces.events.len(), 1);
    assert_eq!(pieces.events[0].data, "a\nb");
    assert_eq!(pieces.events[0].event, "e");
}
