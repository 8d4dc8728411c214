//! Request bodies into JSON-object payloads.
//!
//! Accepted shapes: one JSON object; a JSON array of objects; NDJSON (one object per line,
//! blank lines skipped). Any bad item rejects the whole body, so a batch is all-or-nothing.
//! A number that would not be kept exactly rejects it too ([`crate::numbers`]); of a key
//! repeated within one object, the last value is kept (as most JSON parsers do).

use colloquium_event::json_kind;
use serde_json::{Map, Value};

/// One event payload: always a JSON object.
pub type Payload = Map<String, Value>;

/// The body encodings `POST /events` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json` (or no content type): an object or an array of objects.
    Json,
    /// `application/x-ndjson`: one object per line.
    Ndjson,
}

impl BodyFormat {
    /// Picks the format from a `Content-Type` value; `None` for unsupported types.
    pub fn from_content_type(content_type: Option<&str>) -> Option<Self> {
        let Some(value) = content_type else {
            return Some(BodyFormat::Json);
        };
        let mime: mime::Mime = value.parse().ok()?;
        match mime.essence_str() {
            "application/json" => Some(BodyFormat::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines" => Some(BodyFormat::Ndjson),
            _ => None,
        }
    }
}

/// What is wrong with a body. Messages name the NDJSON line or array index.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Nothing but whitespace.
    #[error("request body is empty")]
    Empty,
    /// `[]` or NDJSON with only blank lines.
    #[error("batch contains no events")]
    EmptyBatch,
    /// Not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A number that would not be stored as sent.
    #[error(transparent)]
    Number(#[from] crate::numbers::InexactNumber),
    /// Valid JSON, but not an object or array of objects.
    #[error("expected a JSON object or an array of objects, got {0}")]
    NotObject(&'static str),
    /// An array item is not an object.
    #[error("item [{index}]: expected a JSON object, got {kind}")]
    ItemNotObject {
        /// Zero-based index in the array.
        index: usize,
        /// The JSON type found.
        kind: &'static str,
    },
    /// An NDJSON line is bad.
    #[error("line {line}: {message}")]
    Line {
        /// One-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

impl BodyError {
    /// Returns the one-based NDJSON line the error is on, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            BodyError::Line { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Parses `body` in `format` into payloads.
pub fn parse(body: &[u8], format: BodyFormat) -> Result<Vec<Payload>, BodyError> {
    let payloads = match format {
        BodyFormat::Json => parse_json(body)?,
        BodyFormat::Ndjson => parse_ndjson(body)?,
    };
    if payloads.is_empty() {
        return Err(BodyError::EmptyBatch);
    }
    Ok(payloads)
}

fn parse_json(body: &[u8]) -> Result<Vec<Payload>, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))?;
    crate::numbers::check(body)?;
    match value {
        Value::Object(map) => Ok(vec![map]),
        Value::Array(items) => {
            let mut payloads = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                match item {
                    Value::Object(map) => payloads.push(map),
                    other => {
                        return Err(BodyError::ItemNotObject {
                            index,
                            kind: json_kind(&other),
                        });
                    }
                }
            }
            Ok(payloads)
        }
        other => Err(BodyError::NotObject(json_kind(&other))),
    }
}

fn parse_ndjson(body: &[u8]) -> Result<Vec<Payload>, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let mut payloads = Vec::with_capacity(body.iter().filter(|b| **b == b'\n').count() + 1);
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line_no = i + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = serde_json::from_slice(line).map_err(|e| BodyError::Line {
            line: line_no,
            message: format!("invalid JSON: {e}"),
        })?;
        crate::numbers::check(line).map_err(|e| BodyError::Line {
            line: line_no,
            message: e.to_string(),
        })?;
        match value {
            Value::Object(map) => payloads.push(map),
            other => {
                return Err(BodyError::Line {
                    line: line_no,
                    message: format!("expected a JSON object, got {}", json_kind(&other)),
                });
            }
        }
    }
    Ok(payloads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_object_array_and_ndjson() {
        assert_eq!(parse(br#"{"a":1}"#, BodyFormat::Json).unwrap().len(), 1);
        assert_eq!(
            parse(br#"[{"a":1},{"b":2}]"#, BodyFormat::Json)
                .unwrap()
                .len(),
            2
        );
        let ndjson = b"{\"a\":1}\r\n\n{\"b\":2}\n";
        assert_eq!(parse(ndjson, BodyFormat::Ndjson).unwrap().len(), 2);
    }

    #[test]
    fn names_what_is_wrong() {
        let err = |body: &[u8], format| parse(body, format).unwrap_err().to_string();
        assert_eq!(err(b"  ", BodyFormat::Json), "request body is empty");
        assert_eq!(err(b"[]", BodyFormat::Json), "batch contains no events");
        assert!(err(b"{\"a\":", BodyFormat::Json).starts_with("invalid JSON: EOF while parsing"));
        assert_eq!(
            err(b"42", BodyFormat::Json),
            "expected a JSON object or an array of objects, got a number"
        );
        assert_eq!(
            err(b"[{}, 3]", BodyFormat::Json),
            "item [1]: expected a JSON object, got a number"
        );
        let bad_line = parse(b"{}\n\n{oops}\n{}", BodyFormat::Ndjson).unwrap_err();
        assert_eq!(bad_line.line(), Some(3));
        assert!(
            bad_line.to_string().starts_with("line 3: invalid JSON"),
            "{bad_line}"
        );
        assert_eq!(
            err(b"{}\n[1]", BodyFormat::Ndjson),
            "line 2: expected a JSON object, got an array"
        );
    }

    #[test]
    fn inexact_numbers_are_rejected_and_repeated_keys_keep_the_last_value() {
        let big = br#"{"n": 123456789012345678901234567890}"#;
        let error = parse(big, BodyFormat::Json).unwrap_err().to_string();
        assert!(
            error.starts_with("number 123456789012345678901234567890 cannot be stored exactly"),
            "{error}"
        );
        let line = parse(b"{}\n{\"n\": 1e-400}\n", BodyFormat::Ndjson).unwrap_err();
        assert_eq!(line.line(), Some(2), "{line}");
        let payloads = parse(br#"{"a": 1, "a": 2}"#, BodyFormat::Json).unwrap();
        assert_eq!(payloads[0]["a"], 2);
        assert_eq!(payloads[0].len(), 1);
    }

    #[test]
    fn content_types() {
        assert_eq!(BodyFormat::from_content_type(None), Some(BodyFormat::Json));
        assert_eq!(
            BodyFormat::from_content_type(Some("application/json; charset=utf-8")),
            Some(BodyFormat::Json)
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("application/x-ndjson")),
            Some(BodyFormat::Ndjson)
        );
        assert_eq!(BodyFormat::from_content_type(Some("text/plain")), None);
        assert_eq!(BodyFormat::from_content_type(Some("???")), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&body, BodyFormat::Json);
            let _ = parse(&body, BodyFormat::Ndjson);
        }

        #[test]
        fn ndjson_keeps_every_line(values in prop::collection::vec(0i64..1000, 1..50)) {
            let body: String = values.iter().map(|v| format!("{{\"v\":{v}}}\n")).collect();
            let payloads = parse(body.as_bytes(), BodyFormat::Ndjson).unwrap();
            let got: Vec<i64> = payloads.iter().map(|p| p["v"].as_i64().unwrap()).collect();
            prop_assert_eq!(got, values);
        }
    }
}
