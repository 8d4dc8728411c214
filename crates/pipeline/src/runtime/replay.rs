//! Dead letters asked for again (`POST /api/dlq/{id}/replay`), run inside a worker's step.

use colloquium_storage::{NewDeadLetter, PipelineCommit, StorageError};

use super::worker::{RoutedBySink, Worker, record_failures};
use crate::topology::{Delivery, Take};

impl Worker {
    /// Replays the dead letters asked for into this step: a stage or routing failure runs
    /// again through its pipeline (or through routing), a sink failure goes to the pipeline's
    /// sinks again. The commit removes each replayed dead letter with its request, so a replay
    /// happens once however often it is asked for.
    pub(super) async fn replay(
        &mut self,
        commit: &mut PipelineCommit,
        routed: &mut RoutedBySink,
    ) -> Result<(), StorageError> {
        for id in self.store.pending_replays()? {
            let Some(letter) = self.store.dead_letter(id)? else {
                commit.replayed.push(id);
                continue;
            };
            let index = letter
                .pipeline
                .as_ref()
                .and_then(|p| self.slots.iter().position(|l| *l.name == **p));
            let source_id = letter.event.id;
            let sink_failure = letter.reason.is_sink_failure();
            match index {
                // Another worker's, or held back while its pipeline is stopped (replayed after
                // it restarts).
                Some(i) if !self.slots[i].own => continue,
                Some(i) if self.topology.pipelines()[i].stopped().is_some() => continue,
                None if !self.routes => continue,
                Some(i) if sink_failure => {
                    self.to_sinks(i, source_id, vec![letter.event], routed);
                }
                Some(i) => {
                    let pipeline = &mut self.topology.pipelines_mut()[i];
                    let outcome = if pipeline.is_batched() {
                        let mut outcomes = pipeline.process_batch(vec![letter.event]).await;
                        outcomes.pop().unwrap_or_default()
                    } else {
                        pipeline.process(&letter.event)
                    };
                    record_failures(outcome.failures, commit);
                    self.to_sinks(i, source_id, outcome.outputs, routed);
                    self.to_side_sinks(i, source_id, outcome.side, routed);
                }
                // `no_route`, or a pipeline that no longer exists: route it afresh. Matching
                // pipelines of other workers get it handed over, to run with their state.
                None => {
                    let reason = letter.reason;
                    for i in self.topology.matching(&letter.event) {
                        if !self.slots[i].own {
                            commit.handoffs.push(NewDeadLetter {
                                reason,
                                error: letter.error.clone(),
                                pipeline: Some(self.slots[i].name.to_string()),
                                stage: None,
                                attempts: letter.attempts,
                                event: letter.event.clone(),
                            });
                        }
                    }
                    let slots = &self.slots;
                    let take = |i: usize| match slots.get(i) {
                        Some(slot) if slot.own && slot.batched => Take::Later,
                        Some(slot) if slot.own => Take::Now,
                        _ => Take::No,
                    };
                    let Delivery {
                        mut outputs,
                        side,
                        failures,
                        deferred,
                        event,
                        ..
                    } = self.topology.process_gated(letter.event, &take, true);
                    for (i, side) in side {
                        self.to_side_sinks(i, source_id, side, routed);
                    }
                    record_failures(failures, commit);
                    if let Some(event) = event {
                        for i in deferred {
                            let pipeline = &mut self.topology.pipelines_mut()[i];
                            let outcome = pipeline.process_batch(vec![event.clone()]).await;
                            for outcome in outcome {
                                record_failures(outcome.failures, commit);
                                outputs.push((i, outcome.outputs));
                                self.to_side_sinks(i, source_id, outcome.side, routed);
                            }
                        }
                    }
                    for (i, events) in outputs {
                        self.to_sinks(i, source_id, events, routed);
                    }
                }
            }
            commit.replayed.push(id);
        }
        Ok(())
    }
}
