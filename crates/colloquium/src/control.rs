//! The control plane's clock: judges the node's load every `control.interval`, and exports
//! the lanes and the level as metrics.

use std::time::Duration;

use colloquium_router::{Lanes, Shed};
use colloquium_telemetry::MetricsRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// `colloquium_control_*` and `colloquium_lane_*`.
#[derive(Clone)]
pub struct ControlMetrics {
    level: Gauge,
    transitions: Counter,
    depth: Family<LaneLabels, Gauge>,
    capacity: Family<LaneLabels, Gauge>,
    admitted: Family<LaneLabels, Counter>,
    shed: Family<ShedLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabels {
    lane: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    lane: &'static str,
    cause: &'static str,
}

impl ControlMetrics {
    /// Registers the control-plane and lane metrics.
    pub fn register(registry: &MetricsRegistry) -> Self {
        let m = ControlMetrics {
            level: Gauge::default(),
            transitions: Counter::default(),
            depth: Family::default(),
            capacity: Family::default(),
            admitted: Family::default(),
            shed: Family::default(),
        };
        registry.register("control", |r| {
            r.register(
                "level",
                "The control plane's level: 0 HEALTHY, 1 ELEVATED, 2 DEGRADED, 3 CRITICAL, 4 EMERGENCY",
                m.level.clone(),
            );
            r.register(
                "transitions",
                "Level changes since start",
                m.transitions.clone(),
            );
        });
        registry.register("lane", |r| {
            r.register(
                "depth",
                "Events of the lane durable but not yet passed by the slowest pipeline",
                m.depth.clone(),
            );
            r.register("capacity", "The lane's capacity", m.capacity.clone());
            r.register(
                "admitted",
                "Events of the lane stored in the log",
                m.admitted.clone(),
            );
            r.register(
                "shed",
                "Events shed from the lane (dead-lettered with reason overflow, or dropped by UDP), by cause",
                m.shed.clone(),
            );
        });
        m
    }

    /// Brings the metrics to what `lanes` says now.
    fn update(&self, lanes: &Lanes) {
        let state = lanes.state();
        self.level.set(i64::from(state.control.level.number()));
        add_up(&self.transitions, state.control.transitions);
        for lane in &state.lanes {
            let labels = LaneLabels {
                lane: lane.lane.as_str(),
            };
            self.depth
                .get_or_create(&labels)
                .set(i64::try_from(lane.depth).unwrap_or(i64::MAX));
            self.capacity
                .get_or_create(&labels)
                .set(i64::try_from(lane.capacity).unwrap_or(i64::MAX));
            add_up(&self.admitted.get_or_create(&labels), lane.admitted);
            for cause in Shed::ALL {
                let labels = ShedLabels {
                    lane: lane.lane.as_str(),
                    cause: cause.as_str(),
                };
                let total = lane.shed.get(cause.as_str()).copied().unwrap_or(0);
                add_up(&self.shed.get_or_create(&labels), total);
            }
        }
    }
}

/// Moves a counter up to a running total.
fn add_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// Judges the load every `interval` until the node stops.
pub async fn run(lanes: Lanes, interval: Duration, metrics: ControlMetrics) {
    // The first tick is at once: every lane is in /metrics from the start.
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        lanes.judge();
        metrics.update(&lanes);
    }
}
