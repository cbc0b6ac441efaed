//! What a server says about itself (`initialize` or `server/discover`),
//! clipped to bounded sizes, whichever era said it.

use std::sync::Arc;

use serde_json::Value;

use super::super::ServerInfo;

/// Most bytes of `instructions` kept (cut on a char boundary).
pub(crate) const MAX_INSTRUCTIONS_BYTES: usize = 64 * 1024;
/// Most characters of one string of `serverInfo` kept.
const SERVER_INFO_STRING_MAX: usize = 1024;
/// Most fields of `serverInfo` kept; longer field names are dropped.
const SERVER_INFO_FIELDS_MAX: usize = 32;
const SERVER_INFO_KEY_MAX: usize = 64;
/// A nested `serverInfo` value (e.g. `icons`) larger than this, serialized,
/// is dropped.
const SERVER_INFO_NESTED_MAX: usize = 4 * 1024;
/// `capabilities` larger than this, serialized, keep only their names.
pub(crate) const CAPABILITIES_MAX: usize = 64 * 1024;

/// Counts serialized bytes without keeping them.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn serialized_len(value: &Value) -> usize {
    let mut count = ByteCount(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// `text` cut to at most `max` bytes, on a char boundary.
fn clip_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

/// `serverInfo` with every string clipped, at most a few fields, and
/// nested values only when small: a few KiB at most, whatever was sent.
fn clip_server_info(value: Value) -> Value {
    let Value::Object(map) = value else {
        return Value::Null;
    };
    let clipped = map
        .into_iter()
        .filter(|(key, _)| key.len() <= SERVER_INFO_KEY_MAX)
        .filter_map(|(key, value)| {
            let value = match value {
                Value::String(s) => {
                    Value::String(super::super::error::clip(&s, SERVER_INFO_STRING_MAX))
                }
                v @ (Value::Array(_) | Value::Object(_)) => {
                    if serialized_len(&v) > SERVER_INFO_NESTED_MAX {
                        return None;
                    }
                    v
                }
                v => v,
            };
            Some((key, value))
        })
        .take(SERVER_INFO_FIELDS_MAX)
        .collect();
    Value::Object(clipped)
}

/// `capabilities` whole when small; else only the names (`has_capability`
/// still answers), each with an empty object.
fn clip_capabilities(value: Value) -> Value {
    match value {
        Value::Object(map) if serialized_len(&Value::Object(map.clone())) > CAPABILITIES_MAX => {
            // The capabilities the engine reads first, then others.
            const KNOWN: [&str; 3] = ["tools", "prompts", "resources"];
            let (known, other): (Vec<_>, Vec<_>) = map
                .into_iter()
                .filter(|(key, _)| key.len() <= SERVER_INFO_KEY_MAX)
                .partition(|(key, _)| KNOWN.contains(&key.as_str()));
            Value::Object(
                known
                    .into_iter()
                    .chain(other)
                    .take(SERVER_INFO_FIELDS_MAX)
                    .map(|(key, _)| (key, Value::Object(serde_json::Map::new())))
                    .collect(),
            )
        }
        Value::Object(map) => Value::Object(map),
        _ => Value::Object(serde_json::Map::new()),
    }
}

/// A [`ServerInfo`] from what the server sent: `instructions` clipped to
/// [`MAX_INSTRUCTIONS_BYTES`], `serverInfo` to a few KiB, `capabilities`
/// to their names when large.
pub(crate) fn server_info(
    protocol_version: String,
    capabilities: Value,
    server_info: Value,
    instructions: Option<Value>,
    transport: &'static str,
) -> ServerInfo {
    let instructions = match instructions {
        Some(Value::String(text)) => Some(Arc::from(clip_bytes(text, MAX_INSTRUCTIONS_BYTES))),
        _ => None,
    };
    ServerInfo {
        protocol_version,
        server_info: Arc::new(clip_server_info(server_info)),
        capabilities: Arc::new(clip_capabilities(capabilities)),
        instructions,
        transport,
    }
}
