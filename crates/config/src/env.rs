//! `${VAR}` substitution in config string values.
//!
//! `${VAR}` takes the variable (unset is an error), `${VAR:-fallback}` falls back when it is
//! unset or empty, and `$${` writes a literal `${`.

/// Why a string could not be substituted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// `${NAME}` names a variable that is not set and has no fallback.
    #[error("environment variable `{0}` is not set")]
    Unset(String),
    /// `${` without its closing `}`.
    #[error("unclosed `${{` (write `$${{` for a literal `${{`)")]
    Unclosed,
    /// `${}` or a name with characters other than letters, digits and `_`.
    #[error("invalid variable name `{0}`")]
    BadName(String),
}

/// Returns `input` with every `${...}` replaced using `lookup`.
pub fn substitute(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, EnvError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or(EnvError::Unclosed)?;
            let (name, fallback) = match after[..end].split_once(":-") {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (&after[..end], None),
            };
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(EnvError::BadName(name.to_owned()));
            }
            let value = match (lookup(name), fallback) {
                (Some(v), Some(f)) if v.is_empty() => f.to_owned(),
                (Some(v), _) => v,
                (None, Some(f)) => f.to_owned(),
                (None, None) => return Err(EnvError::Unset(name.to_owned())),
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("9000".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_variables_and_fallbacks() {
        assert_eq!(
            substitute("127.0.0.1:${PORT}", &env).unwrap(),
            "127.0.0.1:9000"
        );
        assert_eq!(substitute("${NOPE:-x}", &env).unwrap(), "x");
        assert_eq!(substitute("${EMPTY:-y}", &env).unwrap(), "y");
        assert_eq!(
            substitute("cost $5 $${PORT}", &env).unwrap(),
            "cost $5 ${PORT}"
        );
    }

    #[test]
    fn reports_unset_unclosed_and_bad_names() {
        assert_eq!(
            substitute("${NOPE}", &env),
            Err(EnvError::Unset("NOPE".into()))
        );
        assert_eq!(substitute("${PORT", &env), Err(EnvError::Unclosed));
        assert_eq!(
            substitute("${a b}", &env),
            Err(EnvError::BadName("a b".into()))
        );
        assert_eq!(
            substitute("${}", &env),
            Err(EnvError::BadName(String::new()))
        );
    }
}
