//! The node's own metrics read back as values: `GET /api/overview` (and through it the dashboard
//! and `colloquium top`) shows the same numbers `/metrics` exports, from one source.

/// One sample of the text exposition: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name (with its `_total`, `_sum`… suffix).
    pub name: String,
    /// Label pairs, in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        (self.labels.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of a Prometheus or OpenMetrics text exposition (comments skipped; a line this
/// does not understand is skipped too: the text is our own encoder's).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches(',');
            if let Some(after) = inner.strip_prefix('}') {
                break after;
            }
            let eq = inner.find('=')?;
            let key = inner[..eq].to_owned();
            let (value, after) = quoted(inner[eq + 1..].strip_prefix('"')?)?;
            labels.push((key, value));
            inner = after;
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A label value up to its closing quote (escapes `\\`, `\"`, `\n` undone), and the rest.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_and_values_with_escapes() {
        let text = "# HELP x y\ncolloquium_a_total 3\ncolloquium_b{pipeline=\"p\",stage=\"a\\\"b\\\\c\"} 2.5\nlat_bucket{le=\"+Inf\"} 7\nbad line\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "colloquium_a_total");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].label("pipeline"), Some("p"));
        assert_eq!(samples[1].label("stage"), Some("a\"b\\c"));
        assert_eq!(samples[1].value, 2.5);
        assert_eq!(samples[2].label("le"), Some("+Inf"));
    }
}
