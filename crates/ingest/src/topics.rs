//! A frame source's `topics:` table: exact topics and MQTT-style patterns (`+` one level, `#`
//! the rest, last only) mapped to a priority, which may only **raise** a client's own.
//!
//! Every matching entry counts, and the frame gets the most urgent of its own priority and
//! theirs. A topic no entry matches keeps the client's priority: the original's unknown-topic
//! lookup silently upgraded `low` and `batch` to `medium`, an accident we do not copy.

use std::collections::{BTreeMap, HashMap};

use colloquium_config::ConfigError;
use colloquium_event::Priority;

use crate::frame::priority_byte;

/// One level of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`: any one level.
    One,
    /// `#`: this level and every one after (also none).
    Rest,
}

/// The compiled table.
#[derive(Debug, Clone, Default)]
pub struct TopicTable {
    exact: HashMap<String, Priority>,
    patterns: Vec<(Vec<Level>, Priority)>,
}

impl TopicTable {
    /// Compiles `topics` (pattern → priority name), naming every bad entry under `at`.
    pub fn compile(topics: &BTreeMap<String, String>, at: &str) -> Result<Self, Vec<ConfigError>> {
        let mut table = TopicTable::default();
        let mut errors = Vec::new();
        for (pattern, priority) in topics {
            let key = format!("{at}.topics.{pattern}");
            let priority = match priority.parse::<Priority>() {
                Ok(p) => p,
                Err(e) => {
                    errors.push(ConfigError::new(key, e.to_string()));
                    continue;
                }
            };
            let levels: Vec<&str> = pattern.split('/').collect();
            let mut compiled = Vec::with_capacity(levels.len());
            let mut bad = pattern.is_empty().then_some("an empty topic");
            for (i, level) in levels.iter().enumerate() {
                compiled.push(match *level {
                    "+" => Level::One,
                    "#" if i + 1 == levels.len() => Level::Rest,
                    "#" => {
                        bad = Some("`#` may only be the last level");
                        break;
                    }
                    l if l.contains(['+', '#']) => {
                        bad = Some("`+` and `#` must be a whole level");
                        break;
                    }
                    l => Level::Exact(l.to_owned()),
                });
            }
            if let Some(why) = bad {
                errors.push(ConfigError::new(key, why));
            } else if compiled.iter().all(|l| matches!(l, Level::Exact(_))) {
                table.exact.insert(pattern.clone(), priority);
            } else {
                table.patterns.push((compiled, priority));
            }
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }

    /// The priority a frame of `topic` sent as `client` gets.
    pub fn raise(&self, topic: &str, client: Priority) -> Priority {
        if self.exact.is_empty() && self.patterns.is_empty() {
            return client;
        }
        let urgent = |a: Priority, b: Priority| {
            if priority_byte(b) > priority_byte(a) {
                b
            } else {
                a
            }
        };
        let mut priority = client;
        if let Some(p) = self.exact.get(topic) {
            priority = urgent(priority, *p);
        }
        for (levels, p) in &self.patterns {
            if matches(levels, topic) {
                priority = urgent(priority, *p);
            }
        }
        priority
    }
}

fn matches(levels: &[Level], topic: &str) -> bool {
    let mut parts = topic.split('/');
    for level in levels {
        match level {
            Level::Rest => return true,
            Level::One => {
                if parts.next().is_none() {
                    return false;
                }
            }
            Level::Exact(want) => {
                if parts.next() != Some(want.as_str()) {
                    return false;
                }
            }
        }
    }
    parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str)]) -> TopicTable {
        let topics = entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TopicTable::compile(&topics, "sources.s").unwrap()
    }

    #[test]
    fn exact_and_wildcard_entries_only_raise() {
        let t = table(&[
            ("alarms/#", "critical"),
            ("sensors/+/temp", "high"),
            ("sensors/kitchen/temp", "medium"),
            ("bulk", "batch"),
        ]);
        use Priority::*;
        assert_eq!(t.raise("alarms/fire/floor1", Low), Critical);
        assert_eq!(
            t.raise("alarms", Batch),
            Critical,
            "`#` also matches the parent"
        );
        assert_eq!(t.raise("sensors/attic/temp", Low), High);
        // Both the exact entry and the pattern match: the most urgent wins.
        assert_eq!(t.raise("sensors/kitchen/temp", Batch), High);
        assert_eq!(
            t.raise("sensors/attic/temp/raw", Low),
            Low,
            "`+` is one level"
        );
        // Never lowered; an unknown topic keeps the client's priority (the original raised
        // low and batch to medium there).
        assert_eq!(t.raise("bulk", Critical), Critical);
        assert_eq!(t.raise("unknown", Low), Low);
        assert_eq!(t.raise("unknown", Batch), Batch);
    }

    #[test]
    fn bad_entries_are_named() {
        let topics = [
            ("a/#/b", "high"),
            ("a+/b", "high"),
            ("x", "urgent"),
            ("", "low"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let errors = TopicTable::compile(&topics, "sources.s").unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 4, "{shown:?}");
        assert!(
            shown.iter().any(|e| e.contains("sources.s.topics.a/#/b")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.contains("invalid priority `urgent`")),
            "{shown:?}"
        );
    }
}
