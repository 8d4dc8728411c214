//! Numbers that would not be stored as sent.
//!
//! Events are parsed into `serde_json::Value`, whose numbers are 64-bit integers or doubles.
//! JSON allows any decimal, and serde_json would round one that fits neither
//! (`123456789012345678901234567890` becomes `1.2345678901234568e29`, `1e-400` becomes `0`).
//! Rather than change a number silently, ingest rejects the event and says which number; a
//! client that needs such values sends them as strings. (serde_json's `arbitrary_precision`
//! would keep them, but it changes every number in the process, the Computo engine's too.)
//!
//! The check runs over the raw bytes of JSON that already parsed: a number token is read
//! outside strings, and only one with 16 or more significant digits, or an exponent near the
//! ends of the double range, is parsed and compared with what a double reads back as.

/// A number in a body that cannot be kept exactly.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "number {text} cannot be stored exactly (it fits neither a 64-bit integer nor a double); send it as a string"
)]
pub struct InexactNumber {
    /// The number as written (at most 64 characters of it).
    pub text: String,
}

/// Checks every number token of `json` (valid JSON) reads back as written.
pub fn check(json: &[u8]) -> Result<(), InexactNumber> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => i = string_end(json, i + 1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < json.len()
                    && matches!(json[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = &json[start..i];
                if !exact(token) {
                    let text = String::from_utf8_lossy(token).chars().take(64).collect();
                    return Err(InexactNumber { text });
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The index just past the string whose contents start at `i`.
fn string_end(json: &[u8], mut i: usize) -> usize {
    while let Some(at) = memchr::memchr2(b'"', b'\\', &json[i.min(json.len())..]) {
        let at = i + at;
        if json[at] == b'\\' {
            i = at + 2; // the escaped byte, whatever it is
        } else {
            return at + 1;
        }
    }
    json.len()
}

/// Whether `token` (a valid JSON number) survives serde_json's parse unchanged.
fn exact(token: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(token) else {
        return false;
    };
    let is_integer = !token.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
    let digits = token.iter().filter(|b| b.is_ascii_digit()).count();
    // serde_json keeps an integer that fits i64 or u64 exactly, and makes any other an f64.
    if is_integer && (digits <= 18 || text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok()) {
        return true;
    }
    let Some(written) = Decimal::parse(text) else {
        return false;
    };
    // Up to 15 significant digits within the normal range always read back the same.
    if written.digits.len() <= 15 && (-290..=290).contains(&written.exponent) {
        return true;
    }
    let Ok(value) = text.parse::<f64>() else {
        return false;
    };
    // `Display` for f64 prints the shortest decimal that reads back as the same double.
    value.is_finite() && Decimal::parse(&value.to_string()).is_some_and(|read| read == written)
}

/// A decimal as significant digits (no leading or trailing zeros) times 10^exponent.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    fn parse(text: &str) -> Option<Self> {
        let (negative, text) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(at) => (&text[..at], text[at + 1..].parse::<i64>().ok()?),
            None => (text, 0),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut digits: Vec<u8> = whole.bytes().chain(fraction.bytes()).collect();
        let mut exponent = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
        let leading = digits.iter().take_while(|d| **d == b'0').count();
        digits.drain(..leading);
        while digits.last() == Some(&b'0') {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            // Zero: sign and exponent do not matter.
            return Some(Self {
                negative: false,
                digits,
                exponent: 0,
            });
        }
        // The exponent of the leading digit, so that the range check above means something.
        let exponent = exponent + i64::try_from(digits.len()).ok()? - 1;
        Some(Self {
            negative,
            digits,
            exponent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_that_read_back_as_written_pass() {
        for ok in [
            "0",
            "-0",
            "42",
            "-9223372036854775808",
            "18446744073709551615",
            "0.1",
            "1e2",
            "1.5E-7",
            "0.30000000000000004",
            "3.141592653589793",
            "1e308",
            "2.2250738585072014e-308",
            "123456789012345680000",
            "100.000",
            "[1, 2.5, {\"a\": -3e-5}]",
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn numbers_that_would_change_are_named() {
        for (body, number) in [
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            ("{\"n\": 18446744073709551616}", "18446744073709551616"),
            ("[-9223372036854775809]", "-9223372036854775809"),
            ("{\"pi\": 3.14159265358979323846}", "3.14159265358979323846"),
            ("{\"tiny\": 1e-400}", "1e-400"),
            (
                "{\"x\": 0.1000000000000000055511151231257827}",
                "0.1000000000000000055511151231257827",
            ),
        ] {
            assert_eq!(
                check(body.as_bytes()).map_err(|e| e.text),
                Err(number.to_owned()),
                "{body}"
            );
        }
    }

    #[test]
    fn digits_inside_strings_are_not_numbers() {
        let body = br#"{"id": "123456789012345678901234567890", "q": "a\"1e-400\\", "n": 1}"#;
        assert_eq!(check(body), Ok(()));
    }
}
