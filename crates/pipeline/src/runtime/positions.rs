//! Where a pipeline (or the router) is in each priority lane.
//!
//! Events of one lane are processed in id order, but lanes move at their own pace (realtime
//! ahead of a backed-up batch lane), so a checkpoint keeps one position per lane: every event
//! *of that lane* up to it has been passed. The log is read from the lowest of them.

use colloquium_event::{EventId, Lane};
use colloquium_storage::Checkpoint;

/// One position per lane (`None`: nothing passed yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Positions([Option<EventId>; 3]);

impl Positions {
    /// From a stored checkpoint (one written before lanes has every lane at `position`).
    pub(super) fn of(checkpoint: &Checkpoint) -> Self {
        Positions(checkpoint.lanes.unwrap_or([checkpoint.position; 3]))
    }

    /// Every lane at `position`.
    #[cfg(test)]
    pub(super) fn at(position: Option<EventId>) -> Self {
        Positions([position; 3])
    }

    /// The checkpoint to store (`lanes` only when they differ).
    pub(super) fn checkpoint(self, stopped: Option<String>) -> Checkpoint {
        let low = self.low();
        Checkpoint {
            position: low,
            lanes: self.0.iter().any(|p| *p != low).then_some(self.0),
            stopped,
        }
    }

    /// The lowest: every event up to it, of any lane, has been passed.
    pub(super) fn low(self) -> Option<EventId> {
        // `None` sorts first: nothing passed in some lane.
        self.0.into_iter().min().flatten()
    }

    /// Whether event `id` of `lane` is still ahead.
    pub(super) fn before(self, lane: Lane, id: EventId) -> bool {
        self.0[lane.index()].is_none_or(|at| at < id)
    }

    /// Moves `lane` past `id` (never back); returns whether it moved.
    pub(super) fn pass(&mut self, lane: Lane, id: EventId) -> bool {
        let moved = self.before(lane, id);
        if moved {
            self.0[lane.index()] = Some(id);
        }
        moved
    }

    /// Moves every lane in `drained` past `id`.
    pub(super) fn pass_drained(&mut self, drained: [bool; 3], id: EventId) {
        for lane in Lane::ALL {
            if drained[lane.index()] {
                self.pass(lane, id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquium_event::Timestamp;

    #[test]
    fn lanes_move_on_their_own_and_the_checkpoint_keeps_the_lowest() {
        let id = |ms| EventId::min_at(Timestamp::from_millis(ms));
        let old = Checkpoint {
            position: Some(id(5)),
            lanes: None,
            stopped: None,
        };
        let mut p = Positions::of(&old);
        assert_eq!(p, Positions::at(Some(id(5))));
        assert_eq!(p.checkpoint(None), old, "equal lanes store as before");
        assert!(p.pass(Lane::Realtime, id(9)));
        assert!(!p.pass(Lane::Realtime, id(7)), "never back");
        assert!(p.before(Lane::Batch, id(6)) && !p.before(Lane::Realtime, id(8)));
        let stored = p.checkpoint(None);
        assert_eq!(stored.position, Some(id(5)));
        assert_eq!(Positions::of(&stored), p);
        p.pass_drained([false, true, true], id(9));
        assert_eq!(p, Positions::at(Some(id(9))));
        assert_eq!(Positions::default().low(), None);
    }
}
