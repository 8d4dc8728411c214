//! RFC 6901 JSON Pointers, as `get` reads them.
//!
//! `""` is the whole value; every other pointer starts with `/`; `~1` is `/` and `~0` is `~`; an
//! array index is decimal without leading zeros (`-` and anything else is not an index). Parsing
//! happens once per literal pointer at compile time; walking happens per evaluation.

/// A parsed pointer: its reference tokens, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pointer(pub(crate) Box<[Box<str>]>);

/// Why a pointer string is not a JSON Pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PointerError {
    NoLeadingSlash,
    BadEscape,
}

impl PointerError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            PointerError::NoLeadingSlash => "a JSON Pointer must be empty or start with '/'",
            PointerError::BadEscape => "'~' must be followed by '0' or '1'",
        }
    }
}

/// Parses a pointer string into its unescaped tokens.
pub(crate) fn parse(text: &str) -> Result<Pointer, PointerError> {
    if text.is_empty() {
        return Ok(Pointer(Box::default()));
    }
    let Some(rest) = text.strip_prefix('/') else {
        return Err(PointerError::NoLeadingSlash);
    };
    let mut tokens = Vec::new();
    for raw in rest.split('/') {
        tokens.push(unescape(raw)?);
    }
    Ok(Pointer(tokens.into_boxed_slice()))
}

fn unescape(raw: &str) -> Result<Box<str>, PointerError> {
    if !raw.contains('~') {
        return Ok(raw.into());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return Err(PointerError::BadEscape),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out.into_boxed_str())
}

/// Reads an array index token: `0`, or decimal digits not starting with `0`.
pub(crate) fn array_index(token: &str) -> Option<usize> {
    let digits_only = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// Reads a `$` path index: plain decimal digits (leading zeros allowed, as the reference reads
/// them with a number parser; anything else is not an index).
pub(crate) fn var_index(token: &str) -> Option<usize> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        parse(text)
            .unwrap()
            .0
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn parses_rfc_6901_pointers() {
        assert!(tokens("").is_empty());
        assert_eq!(tokens("/"), [""]);
        assert_eq!(tokens("/a~1b/m~0n/~0~1"), ["a/b", "m~n", "~/"]);
        assert_eq!(tokens("/a//b"), ["a", "", "b"]);
        assert_eq!(parse("a"), Err(PointerError::NoLeadingSlash));
        assert_eq!(parse("/a~2"), Err(PointerError::BadEscape));
        assert_eq!(parse("/a~"), Err(PointerError::BadEscape));
    }

    #[test]
    fn array_indexes_are_strict() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("12"), Some(12));
        for bad in ["", "-", "01", "x", "1x", "-1", "99999999999999999999999"] {
            assert_eq!(array_index(bad), None, "{bad}");
        }
    }
}
