//! Content routing: which pipelines an event goes to.
//!
//! An event goes to every pipeline whose `from` lists its source (or is empty) and whose
//! `when` matches its data. An event that matches none is unroutable (`no_route`); a `when`
//! script that fails is that pipeline's routing error (`route_error`) and never stops the
//! event from reaching the other pipelines. What happens next (the dead-letter queue, the
//! pipelines themselves) is the caller's.
//!
//! - [`predicate`]: `when:` as a Computo script or a shorthand.
//! - [`balance`]: spreading results over a pipeline's sinks.
//! - [`lanes`]: the priority lanes: depth, admission, what was shed.
//! - [`control`]: the five-level backpressure control plane.
#![warn(missing_docs)]

pub mod balance;
pub mod control;
pub mod lanes;
pub mod predicate;

use std::sync::Arc;

use colloquium_config::{Config, ConfigError, ScriptLibrary};
use computo::EvalError;
use serde_json::Value;

pub use balance::{Balancer, Pick};
pub use control::{ControlPlane, Level};
pub use lanes::{Admission, Consumer, Gate, Lanes, Shed};
pub use predicate::Predicate;

/// One pipeline's entry in the routing table.
#[derive(Debug, Clone)]
pub struct Route {
    /// The pipeline's name.
    pub pipeline: Arc<str>,
    /// Sources it takes events from (empty: all).
    pub from: Vec<String>,
    /// Which events it takes.
    pub when: Predicate,
}

/// The routing table: one route per pipeline, in config order.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// How one route judged an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The pipeline takes it.
    Match,
    /// It does not.
    NoMatch,
    /// The `when` script failed on it.
    Error(EvalError),
}

/// Where one event goes: a verdict per route, in the order of [`Router::routes`].
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// One verdict per route.
    pub verdicts: Vec<Verdict>,
}

impl Routing {
    /// Indexes of the routes that take the event.
    pub fn matched(&self) -> impl Iterator<Item = usize> + '_ {
        self.verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| **v == Verdict::Match)
            .map(|(i, _)| i)
    }

    /// True when no route takes the event and none failed on it: `no_route`.
    pub fn is_unroutable(&self) -> bool {
        self.verdicts.iter().all(|v| *v == Verdict::NoMatch)
    }
}

impl Router {
    /// Builds the table from the config's pipelines, compiling every `when`.
    pub fn build(config: &Config, scripts: &ScriptLibrary) -> Result<Self, Vec<ConfigError>> {
        let mut routes = Vec::new();
        let mut errors = Vec::new();
        for (i, pipeline) in config.pipelines.iter().enumerate() {
            let when = match &pipeline.when {
                None => Ok(Predicate::Const(true)),
                Some(when) => Predicate::compile(when, &format!("pipelines[{i}].when"), scripts),
            };
            match when {
                Ok(when) => routes.push(Route {
                    pipeline: Arc::from(pipeline.name.as_str()),
                    from: pipeline.from.clone(),
                    when,
                }),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Router { routes })
        } else {
            Err(errors)
        }
    }

    /// The routes, in config order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Judges one event from `source` with this data. `meta` builds script input 1 (the event's
    /// metadata); it is called at most once, and only if a `when` script runs.
    pub fn route(&self, source: &str, data: &Value, meta: impl FnOnce() -> Value) -> Routing {
        let mut meta = Some(meta);
        let mut built: Option<Value> = None;
        let mut get_meta = || -> Value {
            if built.is_none() {
                built = meta.take().map(|f| f());
            }
            built.clone().unwrap_or(Value::Null)
        };
        let verdicts = self
            .routes
            .iter()
            .map(|route| {
                if !route.from.is_empty() && !route.from.iter().any(|s| s == source) {
                    return Verdict::NoMatch;
                }
                match route.when.matches(data, &mut get_meta) {
                    Ok(true) => Verdict::Match,
                    Ok(false) => Verdict::NoMatch,
                    Err(e) => Verdict::Error(e),
                }
            })
            .collect();
        Routing { verdicts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquium_config::Balance;
    use serde_json::json;

    fn router(yaml: &str) -> Router {
        let config = colloquium_config::from_str(yaml, &|_| None).unwrap();
        let scripts = ScriptLibrary::compile(&config).unwrap();
        Router::build(&config, &scripts).unwrap()
    }

    const TABLE: &str = r#"
sources:
  http: {type: http}
  mobile: {type: http}
scripts:
  is_big: [">", ["get", ["$input"], "/amount"], 1000]
pipelines:
  - name: orders
    when: {equals: ["/type", "order"]}
  - name: big
    when: is_big
  - name: mobile_only
    from: [mobile]
  - name: by_meta
    when: ["==", ["get", ["$inputs"], "/1/source"], "http"]
"#;

    fn verdicts(r: &Router, source: &str, data: Value) -> Vec<&'static str> {
        let routing = r.route(source, &data, || json!({"source": source}));
        routing
            .verdicts
            .iter()
            .map(|v| match v {
                Verdict::Match => "match",
                Verdict::NoMatch => "-",
                Verdict::Error(_) => "error",
            })
            .collect()
    }

    #[test]
    fn routing_truth_table() {
        let r = router(TABLE);
        //                          orders   big      mobile_only by_meta
        // Several pipelines take one event.
        assert_eq!(
            verdicts(&r, "http", json!({"type": "order", "amount": 5000})),
            ["match", "match", "-", "match"]
        );
        // `from` filters by source; metadata reaches scripts as input 1.
        assert_eq!(
            verdicts(&r, "mobile", json!({"type": "order", "amount": 1})),
            ["match", "-", "match", "-"]
        );
        // A predicate error stays with its pipeline; the others still judge the event.
        assert_eq!(
            verdicts(&r, "http", json!({"type": "order"})),
            ["match", "error", "-", "match"]
        );
        // No match at all.
        let unroutable = router(
            "pipelines:\n  - {name: a, when: {exists: \"/x\"}}\n  - {name: b, when: false}\n",
        );
        let routing = unroutable.route("http", &json!({"y": 1}), || Value::Null);
        assert!(routing.is_unroutable());
        assert_eq!(routing.matched().count(), 0);
        // An error is not `no_route`.
        let routing = r.route(
            "mobile",
            &json!({"type": "refund"}),
            || json!({"source": "mobile"}),
        );
        assert!(
            !routing.is_unroutable(),
            "big failed on a missing amount: {routing:?}"
        );
        assert_eq!(routing.matched().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn metadata_is_built_once_and_only_for_scripts() {
        let r = router("pipelines:\n  - {name: a, when: {exists: \"/x\"}}\n");
        let routing = r.route("http", &json!({"x": 1}), || {
            panic!("no script needs metadata")
        });
        assert_eq!(routing.matched().count(), 1);
        let r = router(TABLE);
        let mut calls = 0;
        r.route("http", &json!({"type": "order", "amount": 2}), || {
            calls += 1;
            json!({"source": "http"})
        });
        assert_eq!(calls, 1);
    }

    #[test]
    fn shorthands() {
        let cases = [
            (json!({"equals": ["/n", 1]}), json!({"n": 1.0}), true),
            (
                json!({"equals": ["/a/b", "x"]}),
                json!({"a": {"b": "x"}}),
                true,
            ),
            (json!({"equals": ["/n", 1]}), json!({"n": "1"}), false),
            (json!({"exists": "/n"}), json!({"n": null}), true),
            (json!({"exists": "/n"}), json!({}), false),
            (
                json!({"in": ["/c", ["FI", "SE"]]}),
                json!({"c": "SE"}),
                true,
            ),
            (
                json!({"in": ["/c", ["FI", "SE"]]}),
                json!({"c": "NO"}),
                false,
            ),
            (
                json!({"regex": ["/e", "@example\\.com$"]}),
                json!({"e": "a@example.com"}),
                true,
            ),
            (
                json!({"regex": ["/e", "@example\\.com$"]}),
                json!({"e": 7}),
                false,
            ),
            (json!({"gt": ["/n", 10]}), json!({"n": 11}), true),
            (json!({"gte": ["/n", 10]}), json!({"n": 10}), true),
            (json!({"lt": ["/n", 10]}), json!({"n": "5"}), false),
            (json!({"lte": ["/n", 10.5]}), json!({"n": 10.5}), true),
            (
                json!({"all": [{"exists": "/a"}, {"not": {"equals": ["/b", 0]}}]}),
                json!({"a": 1, "b": 1}),
                true,
            ),
            (
                json!({"all": [{"exists": "/a"}, {"not": {"equals": ["/b", 0]}}]}),
                json!({"a": 1, "b": 0}),
                false,
            ),
            (
                json!({"any": [{"exists": "/z"}, {"exists": "/a"}]}),
                json!({"a": 1}),
                true,
            ),
            (json!(true), json!({}), true),
        ];
        let scripts = ScriptLibrary::default();
        for (when, data, expected) in cases {
            let p = Predicate::compile(&when, "when", &scripts).unwrap();
            assert_eq!(
                p.matches(&data, &mut || Value::Null).unwrap(),
                expected,
                "{when} on {data}"
            );
        }
    }

    #[test]
    fn bad_predicates_are_config_errors_at_their_key_path() {
        let scripts = ScriptLibrary::default();
        let cases = [
            (
                json!({"equals": "/x"}),
                "when.equals: expected [pointer, value]",
            ),
            (
                json!({"exists": "x"}),
                "when.exists: `x` is not a JSON pointer",
            ),
            (json!({"regex": ["/x", "("]}), "when.regex: bad regex"),
            (
                json!({"gt": ["/x", "ten"]}),
                "when.gt: expected [pointer, number]",
            ),
            (json!({"all": []}), "when.all: expected a non-empty list"),
            (
                json!({"any": [{"equals": ["/a", 1]}, {"bogus": 1}]}),
                "when.any[1].bogus: unknown predicate `bogus`",
            ),
            (
                json!({"a": 1, "b": 2}),
                "when: expected a Computo expression",
            ),
            (json!(7), "when: expected a Computo expression"),
            (json!("nope"), "when: no script named `nope`"),
            (
                json!(["frob"]),
                "when: script does not compile: unknown operator `frob`",
            ),
        ];
        for (when, expected) in cases {
            let message = Predicate::compile(&when, "when", &scripts)
                .unwrap_err()
                .to_string();
            assert!(message.starts_with(expected), "{when}: {message}");
        }
    }

    #[test]
    fn key_hash_balancing_is_stable() {
        let b = Balancer::new(Balance::KeyHash, Some("/customer"));
        let picks: Vec<Pick> = (0..20)
            .map(|i| b.pick(&json!({"customer": format!("c{i}")}), 3))
            .collect();
        // The same key always lands on the same sink, and the keys spread over all three.
        for (i, pick) in picks.iter().enumerate() {
            let data = json!({"customer": format!("c{i}"), "other": i});
            assert_eq!(b.pick(&data, 3), *pick);
        }
        for sink in 0..3 {
            assert!(picks.contains(&Pick::One(sink)), "{picks:?}");
        }
        // Pinned values (FNV-1a of the key's JSON, modulo the sink count): a change of hash
        // would move every customer to another sink after an upgrade.
        let pinned = [0, 1, 2, 3].map(|i| b.pick(&json!({"customer": format!("c{i}")}), 7));
        assert_eq!(pinned, [3, 2, 1, 5].map(Pick::One));
        // A missing key always picks the same sink.
        assert_eq!(b.pick(&json!({}), 3), b.pick(&json!({"x": 1}), 3));

        let rr = Balancer::new(Balance::RoundRobin, None);
        let turns: Vec<Pick> = (0..4).map(|_| rr.pick(&json!({}), 2)).collect();
        assert_eq!(
            turns,
            [Pick::One(0), Pick::One(1), Pick::One(0), Pick::One(1)]
        );
        assert_eq!(
            Balancer::new(Balance::FanOut, None).pick(&json!({}), 3),
            Pick::All
        );
    }
}
