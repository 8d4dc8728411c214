//! How the stage's state is stored: one row per open window, and one for the watermark.

use colloquium_windows::Open;

use crate::state::Codec;

use super::aggregates::WindowAgg;

/// One open window, as stored: its end and what it holds (binary: written per event).
pub(super) const WINDOW_ROW: Codec<(i64, Open<WindowAgg>)> = Codec::binary("window", 3);
/// The watermark as stored: the current one and each source's largest event time.
pub(super) type ClockRow = (Option<i64>, Vec<(String, i64)>);
pub(super) const CLOCK_ROW: Codec<ClockRow> = Codec::new("window watermark", 1);
/// State keys: `0x02` + key length (u32 BE) + grouping key + window start (i64 BE, sign bit
/// flipped) for a window; `0x01` for the watermark. `0x00` rows (a whole key's windows in one
/// row, rewritten on every change) are an earlier layout.
pub(super) const WINDOW_PREFIX: u8 = 2;
pub(super) const CLOCK_KEY: [u8; 1] = [1];

pub(super) fn window_key(key: &str, start: i64) -> Vec<u8> {
    let len = u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes();
    let start = ((start as u64) ^ (1 << 63)).to_be_bytes();
    [&[WINDOW_PREFIX][..], &len, key.as_bytes(), &start].concat()
}

/// The grouping key and window start of a window row's key (after its prefix byte).
pub(super) fn parse_window_key(rest: &[u8]) -> Option<(&[u8], i64)> {
    let len = usize::try_from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
    let key = rest.get(4..4 + len)?;
    let start: [u8; 8] = rest.get(4 + len..)?.try_into().ok()?;
    Some((key, (u64::from_be_bytes(start) ^ (1 << 63)) as i64))
}
