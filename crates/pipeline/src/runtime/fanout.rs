//! Results to their sinks: balanced over a pipeline's sinks, then one `send` per sink.

use colloquium_event::{Event, EventId};
use colloquium_router::Pick;
use colloquium_storage::PipelineCommit;

use super::worker::{RoutedBySink, StepError, Worker};
use crate::events::SinkLabels;
use crate::sink::Routed;
use crate::stage::SideOutput;

/// Where side outputs' indexes start among an input's results, so a `store` sink that gets
/// both keeps them apart.
const SIDE_INDEX: u32 = 1 << 31;

impl Worker {
    /// Routes pipeline `i`'s results for input `source_id` to its sinks (balanced).
    pub(super) fn to_sinks(
        &self,
        i: usize,
        source_id: EventId,
        events: Vec<Event>,
        routed: &mut RoutedBySink,
    ) {
        let Some(slot) = self.slots.get(i) else {
            return;
        };
        let count = slot.sinks.len();
        for (index, output) in events.into_iter().enumerate() {
            let pick = slot.balancer.pick_by(|p| output.data_pointer(p), count);
            let chosen = |k: &usize| pick == Pick::All || pick == Pick::One(*k);
            // The last chosen sink takes the result itself; only the others get copies.
            let last = (0..count).rev().find(chosen);
            let mut output = Some(output);
            for (k, name) in slot.sinks.iter().enumerate() {
                if !chosen(&k) {
                    continue;
                }
                let event = if Some(k) == last {
                    output.take()
                } else {
                    output.clone()
                };
                let Some(event) = event else { break };
                let routed_event = Routed {
                    pipeline: slot.name.clone(),
                    source_id,
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    event,
                };
                // Per output event: look the sink up before allocating its name as a key.
                match routed.get_mut(name) {
                    Some(batch) => batch.push(routed_event),
                    None => drop(routed.insert(name.clone(), vec![routed_event])),
                }
            }
        }
    }

    /// Routes pipeline `i`'s side outputs for input `source_id` to every sink each names.
    pub(super) fn to_side_sinks(
        &self,
        i: usize,
        source_id: EventId,
        side: Vec<SideOutput>,
        routed: &mut RoutedBySink,
    ) {
        let Some(slot) = self.slots.get(i) else {
            return;
        };
        for (n, output) in side.into_iter().enumerate() {
            let index = SIDE_INDEX | u32::try_from(n).unwrap_or(u32::MAX >> 1);
            for name in output.sinks.iter() {
                let routed_event = Routed {
                    pipeline: slot.name.clone(),
                    source_id,
                    index,
                    event: output.event.clone(),
                };
                routed.entry(name.clone()).or_default().push(routed_event);
            }
        }
    }

    /// Hands each sink its results, counting them. A sink that waits holds only this worker,
    /// whose pipelines all use it or only commit (see `placement`).
    pub(super) async fn send(
        &mut self,
        routed: RoutedBySink,
        commit: &mut PipelineCommit,
    ) -> Result<(), StepError> {
        for (name, batch) in routed {
            if let Some(sink) = self.topology.sink_mut(&name) {
                let sent = u64::try_from(batch.len()).unwrap_or(u64::MAX);
                sink.send(batch, commit).await?;
                let labels = SinkLabels { sink: name };
                self.metrics.sink_events.get_or_create(&labels).inc_by(sent);
                #[allow(clippy::cast_precision_loss)] // a batch size, far below 2^52
                self.metrics
                    .sink_batch
                    .get_or_create(&labels)
                    .observe(sent as f64);
            }
        }
        Ok(())
    }
}
