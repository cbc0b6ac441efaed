//! Incremental `text/event-stream` parser (WHATWG HTML, "server-sent
//! events", section "Parsing an event stream").
//!
//! Feed it byte chunks split anywhere; it yields complete events. It keeps
//! the stream state a reconnecting client needs: the last event id and the
//! `retry` reconnection time, both updated even by events that carry no
//! data (MCP "priming" events), which are never dispatched.
//!
//! Memory is bounded: one event (all its lines, including the line being
//! assembled) may not exceed `max_event_bytes`, otherwise [`SseError`].

use std::time::Duration;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The last event id at dispatch time (may be empty: no id seen yet, or
    /// reset by an empty `id:`). It persists across events, per WHATWG.
    pub id: String,
    /// The `event:` field; `message` when absent or empty.
    pub event: String,
    /// `data:` lines joined with `\n`. Never empty (such events are not
    /// dispatched).
    pub data: String,
    /// `retry:` set inside this event's block, in milliseconds.
    pub retry: Option<u64>,
}

/// The stream broke the per-event size limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event exceeds the limit of {limit} bytes")]
pub struct SseError {
    pub limit: usize,
}

/// The parser. One per HTTP response body.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// Bytes of the line being assembled (no terminator).
    line: Vec<u8>,
    /// The previous chunk ended with CR: a leading LF in the next chunk
    /// belongs to the same CRLF terminator.
    after_cr: bool,
    /// Up to 3 bytes held back at stream start until we know whether they
    /// are a UTF-8 BOM. `None` once decided.
    bom_probe: Option<Vec<u8>>,
    // Per-event buffers.
    data: String,
    event_type: String,
    event_retry: Option<u64>,
    /// Bytes of complete lines already accounted to the current event.
    event_bytes: usize,
    // Stream state.
    last_event_id: String,
    retry: Option<u64>,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            bom_probe: Some(Vec::with_capacity(3)),
            data: String::new(),
            event_type: String::new(),
            event_retry: None,
            event_bytes: 0,
            last_event_id: String::new(),
            retry: None,
        }
    }

    /// A parser for a reconnection: the last event id carries over (WHATWG
    /// keeps it across reconnections of one EventSource).
    pub fn resuming(max_event_bytes: usize, last_event_id: &str, retry: Option<u64>) -> Self {
        let mut p = Self::new(max_event_bytes);
        p.last_event_id = last_event_id.to_owned();
        p.retry = retry;
        p
    }

    /// The last event id seen on the stream (empty when none).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time the server asked for with `retry:`.
    pub fn retry(&self) -> Option<Duration> {
        self.retry.map(Duration::from_millis)
    }

    /// Feeds one chunk; complete events are appended to `out`. After an
    /// error the stream must be abandoned.
    pub fn feed<E: Extend<Event>>(&mut self, chunk: &[u8], out: &mut E) -> Result<(), SseError> {
        let mut chunk = chunk;
        if let Some(mut probe) = self.bom_probe.take() {
            let take = (3 - probe.len()).min(chunk.len());
            probe.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if probe.len() < 3 && BOM.starts_with(&probe) {
                self.bom_probe = Some(probe);
                return Ok(());
            }
            if probe.as_slice() != BOM {
                self.feed_lines(&probe, out)?;
            }
        }
        self.feed_lines(chunk, out)
    }

    /// End of stream. Per WHATWG an unterminated last event is discarded
    /// (and so are bytes held back while probing for a BOM: they can only
    /// be an unterminated line).
    pub fn finish(&mut self) {
        self.bom_probe = None;
        self.line.clear();
        self.reset_event();
    }

    fn feed_lines<E: Extend<Event>>(
        &mut self,
        mut rest: &[u8],
        out: &mut E,
    ) -> Result<(), SseError> {
        // An empty chunk says nothing about whether a CR was half of a CRLF
        // (found by the chunking property in mcp/fuzz.rs).
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let [b'\n', tail @ ..] = rest {
                rest = tail;
            }
        }
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.check_size(rest.len())?;
                    self.line.extend_from_slice(rest);
                    return Ok(());
                }
                Some(pos) => {
                    let (head, tail) = rest.split_at(pos);
                    self.check_size(head.len())?;
                    if self.line.is_empty() {
                        self.process_line(head, out);
                        self.event_bytes = self.event_bytes.saturating_add(head.len());
                    } else {
                        self.line.extend_from_slice(head);
                        let line = std::mem::take(&mut self.line);
                        self.process_line(&line, out);
                        self.event_bytes = self.event_bytes.saturating_add(line.len());
                        // Keep the allocation for the next long line.
                        self.line = line;
                        self.line.clear();
                    }
                    let terminator = tail[0];
                    rest = &tail[1..];
                    if terminator == b'\r' {
                        match rest.first() {
                            Some(b'\n') => rest = &rest[1..],
                            Some(_) => {}
                            None => self.after_cr = true,
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_size(&self, more: usize) -> Result<(), SseError> {
        let total = self
            .event_bytes
            .saturating_add(self.line.len())
            .saturating_add(more);
        if total > self.max_event_bytes {
            Err(SseError {
                limit: self.max_event_bytes,
            })
        } else {
            Ok(())
        }
    }

    fn process_line<E: Extend<Event>>(&mut self, line: &[u8], out: &mut E) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => self.event_type = String::from_utf8_lossy(value).into_owned(),
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
            }
            // An id containing NUL is ignored (WHATWG).
            b"id" if !value.contains(&0) => {
                self.last_event_id = String::from_utf8_lossy(value).into_owned();
            }
            // Only all-digit values count; too many digits saturate.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let ms = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(u64::MAX);
                self.retry = Some(ms);
                self.event_retry = Some(ms);
            }
            _ => {}
        }
    }

    fn dispatch<E: Extend<Event>>(&mut self, out: &mut E) {
        // WHATWG would dispatch `data:` alone as an event with empty data;
        // MCP uses exactly that shape for priming events, which carry no
        // message. So an event is dispatched only with non-empty data.
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        if !data.is_empty() {
            let event = if self.event_type.is_empty() {
                "message".to_owned()
            } else {
                std::mem::take(&mut self.event_type)
            };
            out.extend(std::iter::once(Event {
                id: self.last_event_id.clone(),
                event,
                data,
                retry: self.event_retry,
            }));
        }
        self.reset_event();
    }

    fn reset_event(&mut self) {
        self.data.clear();
        self.event_type.clear();
        self.event_retry = None;
        self.event_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]], limit: usize) -> Result<(Vec<Event>, SseParser), SseError> {
        let mut p = SseParser::new(limit);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out)?;
        }
        p.finish();
        Ok((out, p))
    }

    fn parse(s: &str) -> Vec<Event> {
        parse_chunks(&[s.as_bytes()], 1 << 20).unwrap().0
    }

    fn ev(id: &str, event: &str, data: &str, retry: Option<u64>) -> Event {
        Event {
            id: id.into(),
            event: event.into(),
            data: data.into(),
            retry,
        }
    }

    /// A stream exercising every rule at once: BOM, priming event, comments,
    /// CR / LF / CRLF, multi-line data, field without colon, no space after
    /// colon, two spaces after colon, retry, id with NUL, unknown fields.
    const SAMPLE: &[u8] = b"\xEF\xBB\xBFid: prime-1\r\nretry: 1500\r\ndata\r\n\r\n\
: a comment\n\
event: message\n\
data: {\"jsonrpc\":\"2.0\",\n\
data:\"id\":1}\n\
\n\
id: 2\rdata:  two spaces\r\rdata: x\r\nid: bad\0id\r\n\r\n\
retry: 12a\nevent: custom\nfoo: bar\ndata: last\n\n\
data: unterminated";

    fn sample_expected() -> Vec<Event> {
        vec![
            ev(
                "prime-1",
                "message",
                "{\"jsonrpc\":\"2.0\",\n\"id\":1}",
                None,
            ),
            ev("2", "message", " two spaces", None),
            ev("2", "message", "x", None),
            ev("2", "custom", "last", None),
        ]
    }

    #[test]
    fn sample_in_one_chunk() {
        let (events, p) = parse_chunks(&[SAMPLE], 1 << 20).unwrap();
        assert_eq!(events, sample_expected());
        assert_eq!(p.last_event_id(), "2");
        assert_eq!(p.retry(), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn every_split_point_gives_identical_events() {
        let expected = sample_expected();
        for i in 0..=SAMPLE.len() {
            let (events, p) = parse_chunks(&[&SAMPLE[..i], &SAMPLE[i..]], 1 << 20).unwrap();
            assert_eq!(events, expected, "split at {i}");
            assert_eq!(p.last_event_id(), "2", "split at {i}");
        }
        for i in 0..=SAMPLE.len() {
            for j in i..=SAMPLE.len() {
                let (events, _) =
                    parse_chunks(&[&SAMPLE[..i], &SAMPLE[i..j], &SAMPLE[j..]], 1 << 20).unwrap();
                assert_eq!(events, expected, "split at {i} and {j}");
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let chunks: Vec<&[u8]> = SAMPLE.chunks(1).collect();
        let (events, _) = parse_chunks(&chunks, 1 << 20).unwrap();
        assert_eq!(events, sample_expected());
    }

    #[test]
    fn crlf_lf_and_cr_line_endings_are_equivalent() {
        let lf = parse("event: a\ndata: 1\ndata: 2\n\n");
        let crlf = parse("event: a\r\ndata: 1\r\ndata: 2\r\n\r\n");
        let cr = parse("event: a\rdata: 1\rdata: 2\r\r");
        assert_eq!(lf, vec![ev("", "a", "1\n2", None)]);
        assert_eq!(lf, crlf);
        assert_eq!(lf, cr);
    }

    #[test]
    fn cr_at_chunk_end_and_lf_at_next_start_is_one_terminator() {
        let (events, _) =
            parse_chunks(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"], 1024).unwrap();
        assert_eq!(events, vec![ev("", "message", "a\nb", None)]);
    }

    #[test]
    fn comments_are_ignored() {
        assert_eq!(
            parse(": hello\n:\ndata: x\n: between\n\n"),
            vec![ev("", "message", "x", None)]
        );
        assert!(parse(": only a keep-alive\n\n").is_empty());
    }

    #[test]
    fn empty_data_priming_event_is_not_dispatched_but_updates_state() {
        let (events, p) = parse_chunks(&[b"id: 42\nretry: 250\ndata:\n\n"], 1024).unwrap();
        assert!(events.is_empty());
        assert_eq!(p.last_event_id(), "42");
        assert_eq!(p.retry(), Some(Duration::from_millis(250)));
        // Also with no data line at all.
        let (events, p) = parse_chunks(&[b"id: 7\n\n"], 1024).unwrap();
        assert!(events.is_empty());
        assert_eq!(p.last_event_id(), "7");
    }

    #[test]
    fn data_of_a_single_empty_line_plus_more_keeps_the_newline() {
        assert_eq!(
            parse("data\ndata: x\n\n"),
            vec![ev("", "message", "\nx", None)]
        );
        assert_eq!(
            parse("data:\ndata:\n\n"),
            vec![ev("", "message", "\n", None)]
        );
    }

    #[test]
    fn retry_only_when_all_digits() {
        let (_, p) = parse_chunks(
            &[b"retry: 10x\n\nretry: -5\n\nretry:\n\nretry: 1 \n\n"],
            1024,
        )
        .unwrap();
        assert_eq!(p.retry(), None);
        let events = parse("retry: 3000\ndata: a\n\n");
        assert_eq!(events, vec![ev("", "message", "a", Some(3000))]);
        let (_, p) = parse_chunks(&[b"retry: 99999999999999999999999\n\n"], 1024).unwrap();
        assert_eq!(p.retry(), Some(Duration::from_millis(u64::MAX)));
    }

    #[test]
    fn id_persists_resets_and_ignores_nul() {
        let events = parse("id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: x\0y\ndata: d\n\n");
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec!["1", "1", "", ""]);
    }

    #[test]
    fn space_after_colon_stripped_once_and_field_without_colon() {
        assert_eq!(parse("data:a\n\n")[0].data, "a");
        assert_eq!(parse("data:  a\n\n")[0].data, " a");
        // `data` alone contributes an empty line: empty data, not dispatched.
        assert!(parse("data\n\n").is_empty());
        assert!(parse("data: \n\n").is_empty());
        assert_eq!(parse("event\ndata: z\n\n")[0].event, "message");
    }

    #[test]
    fn bom_only_stripped_at_stream_start() {
        assert_eq!(parse("\u{feff}data: a\n\n")[0].data, "a");
        // A BOM later is data.
        assert_eq!(parse("data: \u{feff}a\n\n")[0].data, "\u{feff}a");
        // Partial BOM split over chunks.
        let (events, _) = parse_chunks(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"], 1024).unwrap();
        assert_eq!(events[0].data, "a");
        // Bytes that look like a BOM prefix but are not: kept.
        let (events, _) = parse_chunks(&[b"\xEF", b"data: a\n\n"], 1024).unwrap();
        assert!(
            events.is_empty(),
            "the field name is garbage, the event has no data"
        );
    }

    #[test]
    fn unterminated_event_at_eof_is_discarded() {
        assert!(parse("data: a\n").is_empty());
        assert!(parse("data: a").is_empty());
    }

    #[test]
    fn oversize_event_is_an_error() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        assert!(p.feed(b"data: 0123456\n\n", &mut out).is_ok());
        assert_eq!(out.len(), 1);
        // Spread over many lines: still counted per event.
        let err = p
            .feed(b"data: 0123\ndata: 4567\ndata: 89\n\n", &mut out)
            .unwrap_err();
        assert_eq!(err, SseError { limit: 16 });
        // One endless line without terminator.
        let mut p = SseParser::new(16);
        p.feed(b"data: 01234", &mut out).unwrap();
        let err = p.feed(b"56789abcdefg", &mut out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "an SSE event exceeds the limit of 16 bytes"
        );
    }

    #[test]
    fn size_resets_between_events() {
        let mut p = SseParser::new(12);
        let mut out = Vec::new();
        for _ in 0..100 {
            p.feed(b"data: 12345\n\n", &mut out).unwrap();
        }
        assert_eq!(out.len(), 100);
    }

    #[test]
    fn resuming_parser_keeps_the_last_id() {
        let mut p = SseParser::resuming(1024, "e-9", Some(10));
        let mut out = Vec::new();
        p.feed(b"data: a\n\n", &mut out).unwrap();
        assert_eq!(out[0].id, "e-9");
        assert_eq!(p.retry(), Some(Duration::from_millis(10)));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let (events, _) = parse_chunks(&[b"data: a\xFFb\n\n"], 1024).unwrap();
        assert_eq!(events[0].data, "a\u{FFFD}b");
    }
}
