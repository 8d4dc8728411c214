//! Wires ingest to storage: a batch is accepted once the store has made it durable, through
//! the priority lanes (what a full lane or the control plane sheds goes to the dead-letter
//! queue instead of the log).

use colloquium_event::{Event, Lane, Position, PositionedBatch, Priority, Reason, Reservation};
use colloquium_ingest::{Accept, AcceptError, Durable};
use colloquium_pipeline::RuntimeHandle;
use colloquium_router::{Admission, Lanes, Shed};
use colloquium_storage::{StorageError, Store};

/// Appends accepted batches to the event log.
///
/// Requests already in flight when shutdown starts still complete here: the server stops
/// reading new requests, and the store closes only after in-flight ones are answered.
#[derive(Clone)]
pub struct StoreAccept {
    pub store: Store,
    /// Woken after each durable batch.
    pub pipelines: RuntimeHandle,
    /// Depth, admission and shed counts.
    pub lanes: Lanes,
}

impl Accept for StoreAccept {
    fn full(&self, priorities: &mut dyn Iterator<Item = Priority>) -> Option<Lane> {
        self.lanes.full(priorities)
    }

    fn dropped(&self, priorities: &mut dyn Iterator<Item = Priority>) {
        for priority in priorities {
            self.lanes.shed(self.lanes.lane(priority), Shed::Dropped, 1);
        }
    }

    /// Events a full `drop_newest` lane refuses, or the control plane sheds or diverts, are
    /// dead-lettered (reason `overflow`, replayable) after the rest is appended. A lane that
    /// pushes back was asked about before the ids were taken ([`Accept::full`]); if it filled
    /// since, the batch still goes in (a block lane's capacity is exceeded by at most what was
    /// in flight), because refusing it now would hold ids that every reader waits for.
    async fn accept(&self, events: Vec<Event>, ids: Reservation) -> Result<(), AcceptError> {
        let Admitted {
            take,
            shed,
            admitted,
        } = self.admit(events);
        // The log first: its ids settle as soon as it is written, not after the dead letters
        // too (every reader waits for them, realtime included).
        if take.is_empty() {
            drop(ids);
        } else {
            let stored = self.store.append_settling(take.into(), ids).await;
            stored.map_err(refused)?;
            for lane in Lane::ALL {
                self.lanes.admitted(lane, admitted[lane.index()]);
            }
            self.pipelines.notify();
        }
        // Should this fail, the batch is refused although its taken part is in the log: the
        // client's retry stores that part twice (at least once, never lost).
        if !shed.is_empty() {
            self.shed(shed).await?;
        }
        Ok(())
    }

    /// A `persist: false` source's events: through the lanes like any (what they shed is a
    /// durable dead letter), then to the pipelines in memory only. They take no lane capacity
    /// (they wait in no log).
    async fn publish(&self, events: Vec<Event>, ids: Reservation) -> Result<(), AcceptError> {
        let Admitted { take, shed, .. } = self.admit(events);
        if take.is_empty() {
            drop(ids);
        } else {
            self.store.publish_volatile(take.into(), ids);
            self.pipelines.notify();
        }
        if !shed.is_empty() {
            self.shed(shed).await?;
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        event: Event,
        reason: Reason,
        error: String,
    ) -> Result<(), AcceptError> {
        self.put_dead_letters(vec![(event, reason, error)]).await
    }

    /// What the lanes shed joins the batch's own dead letters, in the same write as its
    /// events and positions: a crash cannot keep the position and lose the shed events.
    fn accept_positioned(
        &self,
        source: &'static str,
        batch: PositionedBatch,
        ids: Reservation,
    ) -> Result<Durable, AcceptError> {
        let PositionedBatch {
            events,
            mut dead_letters,
            positions,
            chain,
        } = batch;
        let Admitted {
            take,
            shed,
            admitted,
        } = self.admit(events);
        let counts = self.shed_letters(shed, &mut dead_letters);
        let batch = PositionedBatch {
            events: take,
            dead_letters,
            positions,
            chain,
        };
        let durable = self
            .store
            .queue_positioned(source, batch, ids)
            .map_err(refused)?;
        let this = self.clone();
        Ok(Box::pin(async move {
            durable.await.map_err(refused)?;
            for lane in Lane::ALL {
                this.lanes.admitted(lane, admitted[lane.index()]);
            }
            this.count_shed(counts);
            this.pipelines.notify();
            Ok(())
        }))
    }

    fn positions(&self, source: &str) -> Result<Vec<Position>, AcceptError> {
        self.store.positions(source).map_err(refused)
    }
}

/// A batch through the lanes' gate.
struct Admitted {
    take: Vec<Event>,
    shed: Vec<(Lane, Shed, Event)>,
    /// Taken events per lane.
    admitted: [u64; 3],
}

impl StoreAccept {
    fn admit(&self, events: Vec<Event>) -> Admitted {
        let mut gate = self.lanes.gate();
        let mut batch = Admitted {
            take: Vec::with_capacity(events.len()),
            shed: Vec::new(),
            admitted: [0; 3],
        };
        for event in events {
            let lane = self.lanes.lane(event.metadata.priority);
            match gate.admit(event.metadata.priority) {
                Admission::Take | Admission::Wait(_) => {
                    batch.admitted[lane.index()] += 1;
                    batch.take.push(event);
                }
                Admission::Shed(cause) => batch.shed.push((lane, cause, event)),
            }
        }
        batch
    }

    /// Dead-letters what admission shed, then counts it.
    async fn shed(&self, shed: Vec<(Lane, Shed, Event)>) -> Result<(), AcceptError> {
        let mut letters = Vec::with_capacity(shed.len());
        let counts = self.shed_letters(shed, &mut letters);
        self.put_dead_letters(letters).await?;
        self.count_shed(counts);
        Ok(())
    }

    /// Turns what admission shed into `overflow` dead letters (pushed to `letters`); returns
    /// what to count once they are stored.
    fn shed_letters(
        &self,
        shed: Vec<(Lane, Shed, Event)>,
        letters: &mut Vec<(Event, Reason, String)>,
    ) -> Vec<(Lane, Shed)> {
        let mut counts = Vec::with_capacity(shed.len());
        for (lane, cause, event) in shed {
            counts.push((lane, cause));
            let error = cause.error(lane, self.lanes.spec(lane).capacity);
            letters.push((event, Reason::Overflow, error));
        }
        counts
    }

    fn count_shed(&self, counts: Vec<(Lane, Shed)>) {
        for (lane, cause) in counts {
            self.lanes.shed(lane, cause, 1);
        }
    }

    async fn put_dead_letters(
        &self,
        letters: Vec<(Event, Reason, String)>,
    ) -> Result<(), AcceptError> {
        let store = self.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.put_dead_letters(letters))
            .await
            .map_err(|e| AcceptError::Unavailable(e.to_string()))?;
        stored.map(drop).map_err(refused)
    }
}

/// What a client is told when the store refused a write. The details (file paths, RocksDB's
/// words) are logged by the store, not sent.
fn refused(e: StorageError) -> AcceptError {
    match e {
        StorageError::Closed => AcceptError::ShuttingDown,
        StorageError::Busy => AcceptError::Overloaded,
        other => AcceptError::Unavailable(other.public_message().to_owned()),
    }
}
