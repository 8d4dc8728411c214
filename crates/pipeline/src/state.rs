//! Typed stage state: serde in, serde out, versioned, so stages never hand-roll a byte codec.
//!
//! A stage keeps its state as rows under its own keys (`StateWrite`), committed with the
//! pipeline's checkpoint. [`Codec`] turns a value into a row and back: a tag byte, the
//! stage's format version, then the value as JSON, or (a [`Codec::binary`], for rows written
//! per event) as postcard: compact, and about ten times faster than JSON for numbers. A row written by another version, or that
//! is not a row of this codec at all, comes back as a [`StageError::State`] naming what was
//! found: corrupt state stops the pipeline, it is never read as something else.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::stage::StageError;

/// First byte of every row a [`Codec`] writes; no JSON text and no row of the hand-rolled
/// layouts before it starts with it.
const TAG: u8 = 0xF5;
/// The same for binary rows.
const BINARY_TAG: u8 = 0xF6;

/// Encodes and decodes one kind of state row, `T`, at format version `version`.
pub struct Codec<T> {
    what: &'static str,
    version: u8,
    binary: bool,
    row: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> Codec<T> {
    /// A codec for rows of `what` (named in errors, e.g. `dedup segment`) at `version`.
    pub const fn new(what: &'static str, version: u8) -> Self {
        Codec {
            what,
            version,
            binary: false,
            row: PhantomData,
        }
    }

    /// A codec for rows of `what` at `version` in postcard, a binary serde format. `T` must not
    /// skip fields when it serializes (`skip_serializing_if`): nothing in the row says so.
    pub const fn binary(what: &'static str, version: u8) -> Self {
        Codec {
            what,
            version,
            binary: true,
            row: PhantomData,
        }
    }

    fn tag(&self) -> u8 {
        if self.binary { BINARY_TAG } else { TAG }
    }

    /// The row for `value`.
    pub fn encode(&self, value: &T) -> Vec<u8> {
        self.encode_as(value)
    }

    /// The row for `view`, a borrowed form of `T` that serializes exactly as `T` does (a
    /// stage writes its state from where it holds it, without copying it into a `T`).
    pub fn encode_as<V: Serialize>(&self, view: &V) -> Vec<u8> {
        let mut row = vec![self.tag(), self.version];
        // Writing to a Vec fails only for a value that cannot be JSON (a map with non-string
        // keys) or postcard (a sequence of unknown length), which a stage's own state types
        // never are.
        let written = if self.binary {
            postcard::to_io(view, &mut row)
                .map(drop)
                .map_err(|e| e.to_string())
        } else {
            serde_json::to_writer(&mut row, view).map_err(|e| e.to_string())
        };
        if let Err(error) = written {
            tracing::error!(what = self.what, %error, "stage state does not serialize");
        }
        row
    }

    /// The value of `row`.
    pub fn decode(&self, row: &[u8]) -> Result<T, StageError> {
        let corrupt = |message: String| StageError::State(format!("{}: {message}", self.what));
        match row {
            [tag, version, body @ ..] if *tag == self.tag() && *version == self.version => {
                let value = if self.binary {
                    postcard::from_bytes(body).map_err(|e| e.to_string())
                } else {
                    serde_json::from_slice(body).map_err(|e| e.to_string())
                };
                value.map_err(|e| corrupt(format!("unreadable row: {e}")))
            }
            [tag, version, ..] if *tag == self.tag() => Err(corrupt(format!(
                "written in format version {version}, this build reads version {}",
                self.version
            ))),
            _ => Err(corrupt("not a row of this stage".to_owned())),
        }
    }

    /// Whether `row` was written by a codec (of any version); stages that migrate rows of an
    /// earlier hand-rolled layout use it to tell the two apart.
    pub fn is_codec_row(row: &[u8]) -> bool {
        matches!(row.first(), Some(&TAG | &BINARY_TAG))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Row {
        keys: Vec<(String, u64)>,
    }

    #[test]
    fn rows_round_trip_and_anything_else_is_corrupt_state() {
        let codec = Codec::<Row>::new("test row", 1);
        let row = Row {
            keys: vec![("a".into(), 1), ("\"b\"".into(), u64::MAX)],
        };
        let bytes = codec.encode(&row);
        assert!(Codec::<Row>::is_codec_row(&bytes));
        assert_eq!(codec.decode(&bytes).unwrap(), row);

        let newer = Codec::<Row>::new("test row", 2);
        let error = newer.decode(&bytes).unwrap_err();
        assert_eq!(
            error.to_string(),
            "corrupt stage state: test row: written in format version 1, this build reads version 2"
        );
        for bad in [&b""[..], b"{}", &[TAG, 1, b'x'], &[TAG]] {
            let error = codec.decode(bad).unwrap_err();
            assert!(matches!(error, StageError::State(_)), "{bad:?}: {error}");
        }

        let binary = Codec::<Row>::binary("test row", 1);
        let compact = binary.encode(&row);
        assert!(Codec::<Row>::is_codec_row(&compact));
        assert!(compact.len() < bytes.len());
        assert_eq!(binary.decode(&compact).unwrap(), row);
        // A JSON row is not a binary one, nor the other way round, nor a cut row.
        assert!(binary.decode(&bytes).is_err());
        assert!(codec.decode(&compact).is_err());
        assert!(binary.decode(&compact[..compact.len() - 1]).is_err());
    }
}
