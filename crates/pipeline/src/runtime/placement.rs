//! Which pipelines share a worker.
//!
//! Pipelines that use the same exclusive sink (one instance per name: a file, an endpoint),
//! as a sink of their own or through a stage's side outputs (`alert`), must run on one worker. A group that may wait (an exclusive sink, which delivers outside, or
//! a batched pipeline: an async stage or a retry backoff) gets a worker of its own, so while it
//! waits no other pipeline does. The rest, which only compute and commit, are spread evenly
//! over one worker per core.

use std::collections::BTreeMap;

use colloquium_config::Config;

use crate::registry::Registry;
use crate::sink::Placement;
use crate::topology::Topology;

/// One worker's share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    /// Per pipeline (config order): whether this worker runs it.
    pub own: Vec<bool>,
    /// Whether it records routing failures and keeps the router's checkpoint (exactly one
    /// worker does; a worker that never waits, when there is one).
    pub routes: bool,
}

/// Splits the pipelines into worker groups (see the module docs).
pub(super) fn worker_groups(
    config: &Config,
    topology: &Topology,
    registry: &Registry,
    threads: usize,
) -> Vec<Group> {
    let count = config.pipelines.len();
    // Union-find over pipelines, joined by the exclusive sinks they share.
    let mut parent: Vec<usize> = (0..count).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let exclusive = |sink: &str| {
        config.sinks.get(sink).is_some_and(|s| {
            registry.placement(&s.kind).unwrap_or(Placement::Exclusive) == Placement::Exclusive
        })
    };
    let mut waits = vec![false; count];
    let mut holder: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, p) in config.pipelines.iter().enumerate() {
        let built = topology.pipelines().get(i);
        waits[i] = built.is_some_and(|p| p.is_batched());
        // Its own sinks and those its stages send side outputs to (an `alert`'s).
        let side = built
            .into_iter()
            .flat_map(|p| p.side_sinks())
            .flat_map(|(_, s)| s);
        for sink in p.sinks.iter().chain(side).filter(|s| exclusive(s)) {
            waits[i] = true;
            if let Some(&other) = holder.get(sink.as_str()) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, other));
                parent[a] = b;
            } else {
                holder.insert(sink, i);
            }
        }
    }
    let mut components: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..count {
        components.entry(root(&mut parent, i)).or_default().push(i);
    }
    let (waiting, computing): (Vec<Vec<usize>>, Vec<Vec<usize>>) = components
        .into_values()
        .partition(|c| c.iter().any(|i| waits[*i]));

    // Computing components: largest first, each to the least loaded of one worker per core.
    let mut computing = computing;
    computing.sort_by_key(|c| std::cmp::Reverse(c.len()));
    let workers = threads.clamp(1, computing.len().max(1));
    let mut groups: Vec<Group> = Vec::new();
    if !computing.is_empty() {
        let mut load = vec![0usize; workers];
        groups = vec![
            Group {
                own: vec![false; count],
                routes: false,
            };
            workers
        ];
        for component in computing {
            let w = (0..workers).min_by_key(|w| load[*w]).unwrap_or(0);
            load[w] += component.len();
            for i in component {
                groups[w].own[i] = true;
            }
        }
    }
    for component in waiting {
        let mut own = vec![false; count];
        for i in component {
            own[i] = true;
        }
        groups.push(Group { own, routes: false });
    }
    if let Some(first) = groups.first_mut() {
        first.routes = true;
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::{file::FileConfig, http::HttpConfig, store::StoreConfig};
    use crate::stages::transform::TransformConfig;

    #[test]
    fn pipelines_that_may_wait_get_their_own_worker_and_share_exclusive_sinks() {
        let yaml = "sinks: {db: {type: store}, out: {type: file, path: out.ndjson}, web: {type: http, url: 'http://127.0.0.1:9/'}}\npipelines:\n  - {name: a, sinks: [out]}\n  - {name: b, sinks: [db]}\n  - {name: c, sinks: [db, out]}\n  - {name: d, sinks: [db]}\n  - {name: e, sinks: [web]}\n  - {name: f, sinks: [db]}\n  - name: g\n    on_error: {retry: {max_attempts: 3, backoff: 10ms}}\n    stages: [{type: transform, script: [$input]}]\n    sinks: [db]\n";
        let config = colloquium_config::from_str(yaml, &|_| None).unwrap();
        let registry = Registry::default()
            .stage::<TransformConfig>()
            .sink::<StoreConfig>()
            .sink::<FileConfig>()
            .sink::<HttpConfig>();
        let topology = Topology::build(&config, &registry).unwrap();
        let groups = worker_groups(&config, &topology, &registry, 2);
        let names = |g: &Group| -> String {
            config
                .pipelines
                .iter()
                .zip(&g.own)
                .filter(|(_, own)| **own)
                .map(|(p, _)| p.name.as_str())
                .collect()
        };
        let shown: Vec<String> = groups.iter().map(names).collect();
        // b, d, f only compute: spread over the two cores. a and c share the file sink; e
        // waits on its endpoint; g waits out its retries: each waiting group alone.
        assert_eq!(shown, ["bf", "d", "ac", "e", "g"], "{groups:?}");
        assert!(groups[0].routes && groups.iter().filter(|g| g.routes).count() == 1);
        for i in 0..config.pipelines.len() {
            assert_eq!(groups.iter().filter(|g| g.own[i]).count(), 1);
        }
        assert_eq!(worker_groups(&config, &topology, &registry, 1).len(), 4);
    }
}
