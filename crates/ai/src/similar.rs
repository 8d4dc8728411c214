//! Similar-event search over the vectors `embed` stages keep.
//!
//! One [`Index`] per `embed` stage (vectors of different models are not comparable), held in
//! memory, loaded from the stage's `embeddings` results table at start and added to as the
//! stage keeps more. Similarity is cosine (vectors are normalized once, when added).
//!
//! - Below [`EXACT_BELOW`] vectors a query scans them all: exact.
//! - From there on a query searches an HNSW graph (`instant-distance`) built over the vectors
//!   present when it was built, and scans the ones added since exactly; both are merged. The
//!   graph is rebuilt in the background once the vectors added since pass a tenth of it, so a
//!   query never waits for a build. Recall against exact search is measured in BENCHMARKS.md.
//!
//! Vectors whose rows retention deleted stay in the index until the next start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use colloquium_event::EventId;
use instant_distance::{Builder, HnswMap, Search};

/// Below this many vectors a query is an exact scan.
pub const EXACT_BELOW: usize = 20_000;

/// A normalized vector.
#[derive(Clone, Debug)]
pub struct Vector(Arc<[f32]>);

impl Vector {
    /// `values` scaled to length 1 (a zero vector stays zero).
    pub fn normalized(values: &[f32]) -> Vector {
        let norm = values.iter().map(|x| x * x).sum::<f32>().sqrt();
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        Vector(values.iter().map(|x| x * scale).collect())
    }

    /// Cosine similarity with `other` (both normalized).
    pub fn similarity(&self, other: &Vector) -> f32 {
        dot(&self.0, &other.0)
    }

    /// Its values.
    pub fn values(&self) -> &[f32] {
        &self.0
    }

    /// Its dimensions.
    pub fn dims(&self) -> usize {
        self.0.len()
    }
}

/// The dot product, in eight independent lanes: a float sum in one chain cannot be reordered
/// (so not vectorized) by the compiler, and was 4-cycle latency-bound per element.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

impl instant_distance::Point for Vector {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - self.similarity(other)
    }
}

/// How a query was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Every vector compared.
    Exact,
    /// The HNSW graph, plus an exact scan of the vectors added since it was built.
    Approximate,
}

impl Method {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Approximate => "approximate",
        }
    }
}

/// One stage's vectors.
pub struct Index {
    state: RwLock<State>,
    exact_below: usize,
    building: Mutex<bool>,
}

#[derive(Default)]
struct State {
    ids: Vec<EventId>,
    vectors: Vec<Vector>,
    positions: HashMap<EventId, usize>,
    /// The graph over positions `[0, graph.1)`.
    graph: Option<(Arc<HnswMap<Vector, usize>>, usize)>,
}

impl Default for Index {
    fn default() -> Self {
        Index::with_exact_below(EXACT_BELOW)
    }
}

impl Index {
    /// An index that scans exactly below `exact_below` vectors.
    pub fn with_exact_below(exact_below: usize) -> Index {
        Index {
            state: RwLock::default(),
            exact_below,
            building: Mutex::new(false),
        }
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.read().vectors.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The vector of event `id`.
    pub fn get(&self, id: EventId) -> Option<Vector> {
        let state = self.read();
        state.positions.get(&id).map(|&i| state.vectors[i].clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds (or replaces) the vector of event `id`; an error when its dimensions differ from
    /// the others'. May start a background rebuild of the graph (on a blocking thread).
    pub fn add(self: &Arc<Self>, id: EventId, values: &[f32]) -> Result<(), String> {
        if self.insert(id, values)? {
            self.rebuild_in_background();
        }
        Ok(())
    }

    /// Adds the vector without rebuilding the graph (bulk loads, then [`Index::build_now`]).
    pub fn add_without_rebuild(&self, id: EventId, values: &[f32]) -> Result<(), String> {
        self.insert(id, values).map(|_| ())
    }

    /// Adds the vector; whether the graph is due for a rebuild.
    fn insert(&self, id: EventId, values: &[f32]) -> Result<bool, String> {
        let vector = Vector::normalized(values);
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(first) = state.vectors.first()
                && first.dims() != vector.dims()
            {
                return Err(format!(
                    "a vector of {} dimensions among vectors of {}",
                    vector.dims(),
                    first.dims()
                ));
            }
            if let Some(&at) = state.positions.get(&id) {
                state.vectors[at] = vector;
                return Ok(false);
            }
            let at = state.vectors.len();
            state.ids.push(id);
            state.vectors.push(vector);
            state.positions.insert(id, at);
            let built = state.graph.as_ref().map_or(0, |(_, n)| *n);
            let n = state.vectors.len();
            Ok(n >= self.exact_below && n - built > built / 10)
        }
    }

    /// Builds the graph over every vector now, on a blocking thread (at most one at a time).
    fn rebuild_in_background(self: &Arc<Self>) {
        {
            let mut building = self.building.lock().unwrap_or_else(PoisonError::into_inner);
            if *building {
                return;
            }
            *building = true;
        }
        let index = self.clone();
        let build = move || {
            index.build_now();
            *index
                .building
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = false;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(build)),
            Err(_) => build(),
        }
    }

    /// Builds the graph over every vector now, on this thread.
    pub fn build_now(&self) {
        let points: Vec<Vector> = self.read().vectors.clone();
        let n = points.len();
        let positions: Vec<usize> = (0..n).collect();
        let graph = Builder::default().seed(7).build(points, positions);
        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .graph = Some((Arc::new(graph), n));
        tracing::debug!(vectors = n, "similar-event graph rebuilt");
    }

    /// The `k` nearest events to `query` by cosine similarity, best first, leaving out
    /// `except`; and how they were found.
    pub fn nearest(
        &self,
        query: &[f32],
        k: usize,
        except: Option<EventId>,
    ) -> (Vec<(EventId, f32)>, Method) {
        let query = Vector::normalized(query);
        let state = self.read();
        let n = state.vectors.len();
        let mut found: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
        let method = match &state.graph {
            Some((graph, built)) if n >= self.exact_below => {
                let mut search = Search::default();
                found.extend(
                    graph
                        .search(&query, &mut search)
                        .take(k + 1)
                        .map(|item| (*item.value, 1.0 - item.distance)),
                );
                scan(&state.vectors[*built..], *built, &query, &mut found);
                Method::Approximate
            }
            _ => {
                scan(&state.vectors, 0, &query, &mut found);
                Method::Exact
            }
        };
        found.sort_by(|a, b| b.1.total_cmp(&a.1));
        let best = found
            .into_iter()
            .map(|(at, score)| (state.ids[at], score))
            .filter(|(id, _)| Some(*id) != except)
            .take(k)
            .collect();
        (best, method)
    }
}

/// Adds the similarities of `vectors` (positions from `offset`) to `found`.
fn scan(vectors: &[Vector], offset: usize, query: &Vector, found: &mut Vec<(usize, f32)>) {
    found.extend(
        vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (offset + i, v.similarity(query))),
    );
}

/// The indexes of every `embed` stage, by (pipeline, stage), with the provider each embeds with
/// (for a query by text).
#[derive(Default)]
pub struct Indexes {
    stages: RwLock<Vec<StageIndex>>,
}

/// One `embed` stage's index.
#[derive(Clone)]
pub struct StageIndex {
    /// Its pipeline.
    pub pipeline: String,
    /// Its stage id.
    pub stage: String,
    /// The provider it embeds with.
    pub provider: String,
    /// Its vectors.
    pub index: Arc<Index>,
}

impl Indexes {
    /// The index of `pipeline`'s stage `stage`, created on first use (a reload keeps it).
    pub fn stage(&self, pipeline: &str, stage: &str, provider: &str) -> Arc<Index> {
        let mut stages = self.stages.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = stages
            .iter_mut()
            .find(|s| s.pipeline == pipeline && s.stage == stage)
        {
            found.provider = provider.to_owned();
            return found.index.clone();
        }
        let index = Arc::new(Index::default());
        stages.push(StageIndex {
            pipeline: pipeline.to_owned(),
            stage: stage.to_owned(),
            provider: provider.to_owned(),
            index: index.clone(),
        });
        index
    }

    /// The indexes of every `embeddings` table in `store` (at start). Rows that cannot be
    /// read are skipped and counted in the log; the graphs are built in the background.
    pub fn load(
        store: &colloquium_storage::Store,
    ) -> Result<Indexes, colloquium_storage::StorageError> {
        let indexes = Indexes::default();
        let (mut loaded, mut unreadable) = (0u64, 0u64);
        store.results_newest(
            crate::embed::EMBEDDINGS,
            None,
            None,
            None,
            |entry, value| {
                let read = serde_json::from_slice::<crate::embed::Embedding>(value)
                    .ok()
                    .and_then(|e| e.values().map(|v| (e, v)));
                let added = read.is_some_and(|(embedding, values)| {
                    indexes
                        .stage(&entry.pipeline, &entry.stage, &embedding.provider)
                        .insert(embedding.event_id, &values)
                        .is_ok()
                });
                if added {
                    loaded += 1;
                } else {
                    unreadable += 1;
                }
                true
            },
        )?;
        if unreadable > 0 {
            tracing::warn!(
                unreadable,
                "some stored embeddings could not be read: not searchable"
            );
        }
        for stage in indexes.all() {
            if stage.index.len() >= stage.index.exact_below {
                stage.index.rebuild_in_background();
            }
        }
        if loaded > 0 {
            tracing::info!(embeddings = loaded, "similar-event indexes loaded");
        }
        Ok(indexes)
    }

    /// Every stage's index.
    pub fn all(&self) -> Vec<StageIndex> {
        self.stages
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquium_event::Timestamp;

    fn id(n: u64) -> EventId {
        EventId::min_at(Timestamp::from_millis(n + 1))
    }

    /// `clusters` centres, each with `per` members close around it; a member's nearest
    /// neighbours are its own cluster's.
    fn seeded(clusters: usize, per: usize, dims: usize) -> Vec<(EventId, Vec<f32>)> {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut out = Vec::new();
        for c in 0..clusters {
            let centre: Vec<f32> = (0..dims).map(|_| rng.f32() * 2.0 - 1.0).collect();
            for m in 0..per {
                let v = centre
                    .iter()
                    .map(|x| x + (rng.f32() - 0.5) * 0.05)
                    .collect();
                out.push((id((c * per + m) as u64), v));
            }
        }
        out
    }

    #[test]
    fn the_lane_dot_product_equals_the_plain_one() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 / (i as f32 + 1.0)).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
    }

    #[test]
    fn exact_search_finds_the_known_neighbours_and_leaves_out_the_event_itself() {
        let index = Arc::new(Index::default());
        let data = seeded(20, 10, 32);
        for (id, v) in &data {
            index.add(*id, v).unwrap();
        }
        let (query_id, query) = &data[33]; // cluster 3
        let (found, method) = index.nearest(query, 9, Some(*query_id));
        assert_eq!(method, Method::Exact);
        let cluster: Vec<EventId> = data[30..40].iter().map(|(id, _)| *id).collect();
        assert_eq!(found.len(), 9);
        assert!(
            found
                .iter()
                .all(|(id, _)| cluster.contains(id) && id != query_id)
        );
        assert!(found.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        assert!(index.add(id(9_999), &[1.0; 3]).is_err(), "other dimensions");
    }

    #[test]
    fn approximate_search_keeps_recall_against_exact_on_seeded_clusters() {
        let data = seeded(200, 10, 64);
        let approximate = Arc::new(Index::with_exact_below(100));
        let exact = Arc::new(Index::with_exact_below(usize::MAX));
        for (id, v) in &data {
            // One build at the end (not one each time the tail passes a tenth).
            approximate.insert(*id, v).unwrap();
            exact.add(*id, v).unwrap();
        }
        approximate.build_now();
        let (mut hits, mut total) = (0, 0);
        for (query_id, query) in data.iter().step_by(17) {
            let (want, _) = exact.nearest(query, 9, Some(*query_id));
            let (got, method) = approximate.nearest(query, 9, Some(*query_id));
            assert_eq!(method, Method::Approximate);
            total += want.len();
            hits += got
                .iter()
                .filter(|g| want.iter().any(|w| w.0 == g.0))
                .count();
        }
        let recall = hits as f64 / total as f64;
        eprintln!("recall@9 on 2,000 seeded vectors of 64 dimensions: {recall:.3}");
        assert!(recall >= 0.95, "recall {recall}");
        // Added after the build: found by the exact scan of the tail.
        let late = data[5].1.iter().map(|x| x + 0.001).collect::<Vec<f32>>();
        approximate.add(id(50_000), &late).unwrap();
        let (got, _) = approximate.nearest(&data[5].1, 3, Some(data[5].0));
        assert!(got.iter().any(|(id, _)| *id == super::tests::id(50_000)));
    }
}
