//! `model: robust`: StreamGuard's per-entity baseline in spirit — learn an entity's hours,
//! source IPs, places and event types, score what departs from them, learn only what looks
//! normal — with the reference's measured flaws fixed (`anomaly-scoring.md` §6):
//!
//! - **Rarity relative to the entity's own spread.** A value's component is how much rarer it
//!   is than the entity's *typical* value, on a log scale from "as common as typical" (0) to
//!   "never seen" (1). The typical probability is the collision probability Σ pᵢ² of the
//!   entity's values, so an entity spread evenly over nine hours and three IPs scores 0 on its
//!   ordinary events (the reference: 0.62–0.65, flagged).
//! - **Smoothed frequencies.** Every count gets one pseudo-event, so a value seen once is
//!   always less surprising than one never seen (the reference: `1/N` < 0.01 for N > 100).
//!   Hours share with their neighbours (half weight), so 08:00 is not alien to a 9-to-5 user.
//!   Places are counted among events that have one.
//! - **Decay.** Counts fade with a half-life in event time (`half_life_days`, 30), so a
//!   profile follows a genuine, lasting change (forward decay: a later event weighs more;
//!   nothing is rewritten per event).
//! - **New since the baseline.** Each IP and place remembers the day it first appeared after
//!   the baseline was ready; it stays *new* for `settle_days` (30), also when the events that
//!   brought it were flagged and not learned (so is a value under 1 % of its dimension, and an
//!   hour whose time component is 0.5 or more). Two of hour, IP and place new at once score
//!   0.75, all three 0.9: a takeover walked in one change at a time (IP, then place, then hour) is
//!   caught at its second step, where the reference learns every step. A genuine change that
//!   lasts is flagged until it settles, then learned.
//! - **Relocation.** A new place that behaves like the entity (usual hour and type, no failure,
//!   no impossible travel) for `relocate_events` (5) events over `relocate_days` (1) is learned
//!   at once, with the new IPs that came with it: a user who moves is flagged for a day, not
//!   a month. An attacker who imitates the user that well from a new place is caught on its
//!   first events and then learned: the trade-off `docs/anomaly-models.md` describes.
//! - **Failure bursts, not lone failures.** Failures are counted with a short half-life
//!   (`burst_minutes`, 10); `burst_failures` (5) of them score 0.7, more approach 1. A lone
//!   failure weighs by how rarely the entity fails.
//! - **Impossible travel.** A place in another country (the text before the first `-`:
//!   `US-CA-San Francisco` is `US`) within `travel_hours` (1) of the entity's last event with a
//!   place scores 0.8.
//!
//! The score is the largest of the weighted profile sum and the three signals. As in the
//! reference, the first `min_events` events of an entity are learned without scoring, and an
//! event scoring at or above the threshold is not learned.

use serde::{Deserialize, Serialize};

use crate::observation::Observation;
use crate::score::{Components, ReasonCode, Score, Signals, Verdict, Weights, severity};
use crate::values::Values;

/// The `robust` model's own settings (`anomaly: {model: robust, robust: {…}}`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RobustSettings {
    /// Counts halve every this many days of event time.
    pub half_life_days: f64,
    /// Days a value first seen after the baseline was ready stays new.
    pub settle_days: f64,
    /// Failures within about `burst_minutes` that make a burst.
    pub burst_failures: f64,
    /// The half-life of the burst count, in minutes.
    pub burst_minutes: f64,
    /// Hours within which a change of country is impossible travel.
    pub travel_hours: f64,
    /// A new place is learned (with the new IPs that came with it) once it has brought
    /// `relocate_events` events that look like the entity (usual hour and type, no failure, no
    /// impossible travel) over at least this many days; a departing event at it starts again.
    pub relocate_days: f64,
    /// See `relocate_days`.
    pub relocate_events: u16,
}

impl Default for RobustSettings {
    fn default() -> Self {
        RobustSettings {
            half_life_days: 30.0,
            settle_days: 30.0,
            burst_failures: 5.0,
            burst_minutes: 10.0,
            travel_hours: 1.0,
            relocate_days: 1.0,
            relocate_events: 5,
        }
    }
}

impl RobustSettings {
    /// The first setting out of range, named, if any.
    pub fn invalid(&self) -> Option<(&'static str, &'static str)> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.half_life_days) {
            return Some(("half_life_days", "must be a number of days above 0"));
        }
        if !(self.settle_days.is_finite() && self.settle_days >= 0.0) {
            return Some(("settle_days", "must be a number of days from 0"));
        }
        if !(self.burst_failures.is_finite() && self.burst_failures >= 1.0) {
            return Some(("burst_failures", "must be at least 1"));
        }
        if !positive(self.burst_minutes) {
            return Some(("burst_minutes", "must be a number of minutes above 0"));
        }
        if !(self.travel_hours.is_finite() && self.travel_hours >= 0.0) {
            return Some(("travel_hours", "must be a number of hours from 0"));
        }
        if !(self.relocate_days.is_finite() && self.relocate_days >= 0.0) {
            return Some(("relocate_days", "must be a number of days from 0"));
        }
        if self.relocate_events == 0 {
            return Some(("relocate_events", "must be at least 1"));
        }
        None
    }
}

/// One value of a dimension: its decayed weight, when it was last seen (the profile's event
/// count, for least-recently-seen eviction) and the day it first appeared after the baseline
/// was ready (0: part of the baseline).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Decayed event weight (0 for a value only flagged events brought).
    pub weight: f32,
    /// The profile's learned-event count when last seen.
    pub last: u32,
    /// Day number (epoch days) it first appeared after the baseline was ready; 0 if before.
    pub since: u16,
    /// While new: events that looked like the entity and brought it (see `relocate_days`).
    /// It fits in what was padding: a tally is still 12 bytes.
    pub calm: u16,
}

/// A tally as profiles stored it before relocation learning (format 3 of the `anomaly`
/// stage's rows), read into a [`Tally`] with no calm events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyTally {
    /// As [`Tally::weight`].
    pub weight: f32,
    /// As [`Tally::last`].
    pub last: u32,
    /// As [`Tally::since`].
    pub since: u16,
}

impl From<LegacyTally> for Tally {
    fn from(t: LegacyTally) -> Self {
        Tally {
            weight: t.weight,
            last: t.last,
            since: t.since,
            calm: 0,
        }
    }
}

/// The values of one dimension, with their total and sum of squares (for the typical
/// probability, kept as they change rather than summed per event).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dimension<T = Tally> {
    /// By value.
    pub values: Values<T>,
    /// Σ weight.
    pub total: f64,
    /// Σ weight².
    pub squares: f64,
}

impl Dimension {
    fn add(&mut self, value: &str, weight: f32, now: u32, since: u16, cap: usize) -> u32 {
        let mut evicted = 0;
        if self.values.get(value).is_none() {
            // Least recently seen first, until there is room for one more under `cap`.
            while self.values.len() >= cap.max(1) {
                let Some(t) = self.values.remove_min_by_key(|t| t.last) else {
                    break;
                };
                let w = f64::from(t.weight);
                self.total -= w;
                self.squares -= w * w;
                evicted += 1;
            }
            let fresh = Tally {
                weight: 0.0,
                last: now,
                since,
                calm: 0,
            };
            self.values.insert(value, fresh);
        }
        if let Some(tally) = self.values.get_mut(value) {
            let before = f64::from(tally.weight);
            tally.weight += weight;
            tally.last = now;
            let after = f64::from(tally.weight);
            self.total += after - before;
            self.squares += after * after - before * before;
        }
        evicted
    }

    fn scale(&mut self, factor: f64) {
        for tally in self.values.kept_mut() {
            tally.weight = (f64::from(tally.weight) * factor) as f32;
        }
        self.total *= factor;
        self.squares *= factor * factor;
    }

    /// Rarity of `value` (see [`rarity`]) with smoothing `alpha`, and its share of the total.
    /// Makes every value `which` picks part of the baseline, weighing the calm events it
    /// brought at `weight` each.
    fn adopt(&mut self, which: impl Fn(&Tally) -> bool, weight: f32) {
        for tally in self.values.kept_mut() {
            if which(tally) {
                let before = f64::from(tally.weight);
                tally.weight += f32::from(tally.calm) * weight;
                tally.since = 0;
                tally.calm = 0;
                let after = f64::from(tally.weight);
                self.total += after - before;
                self.squares += after * after - before * before;
            }
        }
    }

    fn judge(&self, value: &str, alpha: f64) -> (f64, f64, Option<u16>) {
        let tally = self.values.get(value);
        let count = tally.map_or(0.0, |t| f64::from(t.weight));
        if self.total <= 0.0 {
            return (1.0, 0.0, tally.map(|t| t.since));
        }
        let norm = self.total + alpha * (self.values.len() as f64 + 1.0);
        let typical = self.squares / (self.total * self.total);
        let component = rarity((count + alpha) / norm, alpha / norm, typical);
        (component, count / self.total, tally.map(|t| t.since))
    }
}

/// How much rarer a value of probability `p` is than the entity's `typical` value, on a log
/// scale where `p ≥ typical` is 0 and `p_unseen` (a value never seen) is 1.
fn rarity(p: f64, p_unseen: f64, typical: f64) -> f64 {
    if p >= typical || typical <= p_unseen {
        return 0.0;
    }
    ((typical / p).ln() / (typical / p_unseen).ln()).clamp(0.0, 1.0)
}

/// A value with under this share of its dimension counts as unseen for "new since baseline".
const SEEN_SHARE: f64 = 0.01;
/// Forward-decay exponent past which weights are scaled back (2^40: far from f32's range).
const RESCALE_AT: f64 = 40.0;
const MS_PER_DAY: f64 = 86_400_000.0;

/// One entity's learned profile for the `robust` model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RobustProfile<T = Tally> {
    /// Decayed event weight per UTC hour of day.
    pub hours: [f32; 24],
    /// Source IPs.
    pub ips: Dimension<T>,
    /// Places (of events that have one).
    pub places: Dimension<T>,
    /// Event types.
    pub types: Dimension<T>,
    /// Decayed weight of failed events.
    pub failures: f64,
    /// Events learned.
    pub events: u64,
    /// Scoring has started.
    pub ready: bool,
    /// Forward-decay origin (epoch ms): an event at `t` weighs 2^((t − anchor) / half-life).
    pub anchor_ms: u64,
    /// Failures in the burst horizon (decayed) as of `burst_ms`.
    pub recent_failures: f32,
    /// When `recent_failures` was last updated.
    pub burst_ms: u64,
    /// The country of the last event with a place, and its time.
    pub last_country: String,
    /// When.
    pub last_place_ms: u64,
}

impl From<Dimension<LegacyTally>> for Dimension {
    fn from(d: Dimension<LegacyTally>) -> Self {
        Dimension {
            values: d.values.map(Tally::from),
            total: d.total,
            squares: d.squares,
        }
    }
}

impl From<RobustProfile<LegacyTally>> for RobustProfile {
    fn from(p: RobustProfile<LegacyTally>) -> Self {
        RobustProfile {
            hours: p.hours,
            ips: p.ips.into(),
            places: p.places.into(),
            types: p.types.into(),
            failures: p.failures,
            events: p.events,
            ready: p.ready,
            anchor_ms: p.anchor_ms,
            recent_failures: p.recent_failures,
            burst_ms: p.burst_ms,
            last_country: p.last_country,
            last_place_ms: p.last_place_ms,
        }
    }
}

fn day_of(ms: u64) -> u16 {
    u16::try_from(ms / 86_400_000).unwrap_or(u16::MAX).max(1)
}

/// A place's country: its text before the first `-`.
fn country(place: &str) -> &str {
    place.split('-').next().unwrap_or(place)
}

impl RobustProfile {
    /// The weight of an event at `ms` (scaling the profile back first if it grew too far).
    fn weight(&mut self, ms: u64, half_life_ms: f64) -> f64 {
        if self.events == 0 && self.anchor_ms == 0 {
            self.anchor_ms = ms;
        }
        let exponent = (ms as f64 - self.anchor_ms as f64) / half_life_ms;
        if exponent > RESCALE_AT {
            let factor = (-exponent).exp2();
            for h in &mut self.hours {
                *h = (f64::from(*h) * factor) as f32;
            }
            for d in [&mut self.ips, &mut self.places, &mut self.types] {
                d.scale(factor);
            }
            self.failures *= factor;
            self.anchor_ms = ms;
            return 1.0;
        }
        exponent.max(-RESCALE_AT).exp2()
    }

    fn total(&self) -> f64 {
        self.hours.iter().map(|h| f64::from(*h)).sum()
    }

    /// Adds `obs` at `weight` (0: only start the clocks of its new values).
    fn add(&mut self, obs: &Observation<'_>, weight: f64, cap: usize) -> u32 {
        let since = if self.ready { day_of(obs.time_ms) } else { 0 };
        self.hours[obs.hour] += weight as f32;
        let now = u32::try_from(self.events).unwrap_or(u32::MAX);
        let w = weight as f32;
        let mut evicted = self.ips.add(obs.ip, w, now, since, cap);
        if !obs.place.is_empty() {
            evicted += self.places.add(obs.place, w, now, since, cap);
        }
        evicted += self.types.add(obs.kind, w, now, since, cap);
        if obs.failed {
            self.failures += weight;
        }
        evicted
    }

    /// Keeps the burst count and the last place current with `obs` (every accepted event).
    fn track(&mut self, obs: &Observation<'_>, settings: &RobustSettings) {
        self.recent_failures = self.recent_at(obs.time_ms, settings) + f32::from(obs.failed);
        self.burst_ms = self.burst_ms.max(obs.time_ms);
        if !obs.place.is_empty() {
            self.last_country.clear();
            self.last_country.push_str(country(obs.place));
            self.last_place_ms = obs.time_ms;
        }
    }

    /// The burst count decayed to `ms`.
    fn recent_at(&self, ms: u64, settings: &RobustSettings) -> f32 {
        let minutes = ms.saturating_sub(self.burst_ms) as f64 / 60_000.0;
        (f64::from(self.recent_failures) * (-minutes / settings.burst_minutes).exp2()) as f32
    }
}

/// The `robust` detector's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RobustDetector {
    /// Events a profile learns before scoring starts (0 acts as 1).
    pub min_events: u64,
    /// Most distinct IPs, places and event types a profile keeps, each.
    pub max_values: usize,
    threshold: f64,
    /// Weights of the profile components.
    pub weights: Weights,
    /// The model's own settings.
    pub settings: RobustSettings,
}

impl RobustDetector {
    /// A detector; `threshold` is clamped to [0, 1].
    pub fn new(min_events: u64, threshold: f64, weights: Weights) -> Self {
        RobustDetector {
            min_events,
            max_values: crate::DEFAULT_MAX_VALUES,
            threshold: threshold.clamp(0.0, 1.0),
            weights,
            settings: RobustSettings::default(),
        }
    }

    /// With `settings`.
    pub fn with_settings(mut self, settings: RobustSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Keeps at most `n` distinct values per dimension in each profile (at least 1).
    pub fn with_max_values(mut self, n: usize) -> Self {
        self.max_values = n.max(1);
        self
    }

    /// The threshold in use.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    fn half_life_ms(&self) -> f64 {
        self.settings.half_life_days * MS_PER_DAY
    }

    /// Scores `obs` against `profile` (once ready) and learns it when it should.
    pub fn observe(&self, profile: &mut RobustProfile, obs: &Observation<'_>) -> Verdict {
        let weight = profile.weight(obs.time_ms, self.half_life_ms());
        if !profile.ready {
            let evicted = profile.add(obs, weight, self.max_values);
            profile.events += 1;
            profile.track(obs, &self.settings);
            if profile.events >= self.min_events {
                profile.ready = true;
            }
            return Verdict {
                score: None,
                anomaly: false,
                learned: true,
                evicted,
            };
        }
        let score = self.score_at(profile, obs, weight);
        let learned = score.score < self.threshold;
        let evicted = if learned {
            let evicted = profile.add(obs, weight, self.max_values);
            profile.events += 1;
            evicted
        } else {
            // Start the clocks of its new values, so a lasting change settles.
            let evicted = profile.add(obs, 0.0, self.max_values);
            self.settle(profile, obs, &score, weight);
            evicted
        };
        profile.track(obs, &self.settings);
        Verdict {
            anomaly: score.score >= self.threshold,
            score: Some(score),
            learned,
            evicted,
        }
    }

    /// A flagged event at a place new since the baseline: counts towards learning the place
    /// as a relocation when it looks like the entity (usual hour and type, no failure, no
    /// impossible travel), and starts the count again when it does not. Once the place has
    /// `relocate_events` such events over `relocate_days`, it and the new IPs that came with
    /// it join the baseline, each with the weight of the events it brought.
    fn settle(&self, profile: &mut RobustProfile, obs: &Observation<'_>, score: &Score, w: f64) {
        let s = &self.settings;
        let Some(place) = (!obs.place.is_empty())
            .then(|| profile.places.values.get_mut(obs.place))
            .flatten()
            .filter(|t| t.since > 0)
        else {
            return;
        };
        let c = &score.components;
        let travel = score.signals.as_ref().is_some_and(|x| x.travel > 0.0);
        if c.time >= 0.5 || c.kind >= 0.5 || obs.failed || travel {
            place.calm = 0;
            return;
        }
        place.calm = place.calm.saturating_add(1);
        let arrived = place.since;
        let days = f64::from(day_of(obs.time_ms).saturating_sub(arrived));
        let ready = place.calm >= s.relocate_events && days >= s.relocate_days;
        if let Some(ip) = profile.ips.values.get_mut(obs.ip)
            && ip.since > 0
        {
            ip.calm = ip.calm.saturating_add(1);
        }
        if !ready {
            return;
        }
        let w = w as f32;
        profile
            .places
            .adopt(|t| t.since >= arrived && t.calm > 0, w);
        profile.ips.adopt(|t| t.since >= arrived && t.calm > 0, w);
    }

    /// The score of `obs` against `profile` as it stands (the profile is not changed).
    pub fn score(&self, profile: &RobustProfile, obs: &Observation<'_>) -> Score {
        let exponent = (obs.time_ms as f64 - profile.anchor_ms as f64) / self.half_life_ms();
        self.score_at(profile, obs, exponent.clamp(-RESCALE_AT, RESCALE_AT).exp2())
    }

    fn score_at(&self, p: &RobustProfile, obs: &Observation<'_>, alpha: f64) -> Score {
        let s = &self.settings;
        let today = day_of(obs.time_ms);
        let is_new = |share: f64, since: Option<u16>| {
            share < SEEN_SHARE
                || since.is_some_and(|d| d > 0 && f64::from(today - d.min(today)) < s.settle_days)
        };
        // Hours, each sharing half its weight with both neighbours.
        let total = p.total();
        let smoothed = |h: usize| {
            f64::from(p.hours[h])
                + 0.5 * (f64::from(p.hours[(h + 23) % 24]) + f64::from(p.hours[(h + 1) % 24]))
        };
        let norm = 2.0 * total + 24.0 * alpha;
        let typical: f64 = (0..24)
            .map(|h| ((smoothed(h) + alpha) / norm).powi(2))
            .sum();
        let time = rarity((smoothed(obs.hour) + alpha) / norm, alpha / norm, typical);
        let (ip, ip_share, ip_since) = p.ips.judge(obs.ip, alpha);
        let (location, place_share, place_since) = if obs.place.is_empty() {
            (0.0, 1.0, None)
        } else {
            p.places.judge(obs.place, alpha)
        };
        let (kind, _, _) = p.types.judge(obs.kind, alpha);
        let failure = if obs.failed && total > 0.0 {
            (1.0 - (p.failures + alpha) / (total + 2.0 * alpha)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let components = Components {
            time,
            ip,
            location,
            kind,
            failure,
        };
        let w = &self.weights;
        let profile = (time * w.time
            + ip * w.ip
            + location * w.location
            + kind * w.kind
            + failure * w.failure)
            .clamp(0.0, 1.0);
        // An hour is new when it is rare for the entity: hours are few and neighbours share,
        // so a clock per hour would mostly flag a traveller's shifted day.
        let new_hour = time >= 0.5;
        let new_ip = is_new(ip_share, ip_since);
        let new_place = !obs.place.is_empty() && is_new(place_share, place_since);
        let new_since_baseline = match u8::from(new_hour) + u8::from(new_ip) + u8::from(new_place) {
            0 | 1 => 0.0,
            2 => 0.75,
            _ => 0.9,
        };
        let recent = f64::from(p.recent_at(obs.time_ms, s)) + 1.0;
        let failure_burst = if obs.failed && recent >= s.burst_failures {
            0.7 + 0.3 * (1.0 - s.burst_failures / recent)
        } else {
            0.0
        };
        let travel = if !obs.place.is_empty()
            && !p.last_country.is_empty()
            && country(obs.place) != p.last_country
            && (obs.time_ms.abs_diff(p.last_place_ms) as f64) < s.travel_hours * 3_600_000.0
        {
            0.8
        } else {
            0.0
        };
        let score = profile
            .max(new_since_baseline)
            .max(failure_burst)
            .max(travel);
        let (mut codes, mut reasons) = severity(score);
        let rare = [
            (
                time,
                ReasonCode::Time,
                format!("unusual time: {:02}:00 UTC", obs.hour),
            ),
            (ip, ReasonCode::Ip, format!("unusual source IP: {}", obs.ip)),
            (
                location,
                ReasonCode::Location,
                format!("unusual place: {}", obs.place),
            ),
            (
                kind,
                ReasonCode::Type,
                format!("unusual event type: {}", obs.kind),
            ),
            (
                failure,
                ReasonCode::Failure,
                "a failure from an entity that rarely fails".to_owned(),
            ),
        ];
        for (component, code, text) in rare {
            if component >= 0.5 {
                codes.push(code);
                reasons.push(text);
            }
        }
        if new_since_baseline > 0.0 {
            let which: Vec<&str> = [(new_hour, "hour"), (new_ip, "IP"), (new_place, "place")]
                .into_iter()
                .filter_map(|(new, name)| new.then_some(name))
                .collect();
            codes.push(ReasonCode::NewSinceBaseline);
            reasons.push(format!("new since the baseline: {}", which.join(", ")));
        }
        if failure_burst > 0.0 {
            codes.push(ReasonCode::FailureBurst);
            reasons.push(format!(
                "{recent:.0} failures within about {} minutes",
                s.burst_minutes
            ));
        }
        if travel > 0.0 {
            codes.push(ReasonCode::ImpossibleTravel);
            reasons.push(format!(
                "{} within {} h of an event from {}",
                country(obs.place),
                s.travel_hours,
                p.last_country
            ));
        }
        Score {
            score,
            components,
            signals: Some(Signals {
                profile,
                new_since_baseline,
                failure_burst,
                travel,
            }),
            codes,
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fields;
    use serde_json::{Value, json};

    const DAY: u64 = 86_400_000;
    /// 2026-01-05T00:00Z.
    const T0: u64 = 1_767_571_200_000;

    fn event(ms: u64, ip: &str, place: &str, status: &str) -> Value {
        json!({"event_id": "evt_1", "timestamp": ms, "event_type": "auth_attempt",
            "source_ip": ip, "user": "alice", "status": status, "threat_score": 0.1,
            "metadata": {"geo_location": place}})
    }

    fn observe(d: &RobustDetector, p: &mut RobustProfile, e: &Value) -> Verdict {
        let fields = Fields::default();
        let obs = Observation::parse(e, &fields).unwrap();
        d.observe(p, &obs)
    }

    fn score(d: &RobustDetector, p: &RobustProfile, e: &Value) -> Score {
        let fields = Fields::default();
        d.score(p, &Observation::parse(e, &fields).unwrap())
    }

    /// `n` events a day apart at 10:00, from `ip` at `place`.
    fn steady(d: &RobustDetector, p: &mut RobustProfile, from: u64, n: u64, ip: &str) {
        for i in 0..n {
            observe(
                d,
                p,
                &event(from + i * DAY + 10 * 3_600_000, ip, "US-CA-SF", "success"),
            );
        }
    }

    #[test]
    fn an_evenly_spread_user_scores_nothing_on_ordinary_events() {
        let d = RobustDetector::new(100, 0.5, Weights::default());
        let mut p = RobustProfile::default();
        let ips = ["10.1.1.1", "10.1.1.2", "10.1.1.3"];
        let places = ["US-NJ-Newark", "US-NY-New York"];
        for i in 0..180u64 {
            let ms = T0 + (i / 6) * DAY + (9 + i % 9) * 3_600_000;
            let e = event(
                ms,
                ips[(i % 3) as usize],
                places[(i % 2) as usize],
                "success",
            );
            let v = observe(&d, &mut p, &e);
            if let Some(s) = v.score {
                assert!(s.score < 0.1, "event {i}: {s:?}");
                assert!(!v.anomaly && v.learned);
            }
        }
    }

    #[test]
    fn a_value_seen_once_is_less_surprising_than_one_never_seen() {
        let d = RobustDetector::new(100, 0.7, Weights::default());
        let mut p = RobustProfile::default();
        steady(&d, &mut p, T0, 150, "10.0.0.1");
        let later = T0 + 150 * DAY + 10 * 3_600_000;
        let unseen = score(&d, &p, &event(later, "10.9.9.9", "US-CA-SF", "success"));
        observe(&d, &mut p, &event(later, "10.0.0.2", "US-CA-SF", "success"));
        let once = score(&d, &p, &event(later + 1, "10.0.0.2", "US-CA-SF", "success"));
        assert_eq!(unseen.components.ip, 1.0);
        assert!(once.components.ip < unseen.components.ip, "{once:?}");
        assert!(once.components.ip > 0.5, "still rare: {once:?}");
    }

    #[test]
    fn a_walk_in_one_change_at_a_time_is_flagged_at_its_second_step_and_a_lasting_change_settles() {
        // The walk-in's second step (a new place with the new IP, at the usual hour) from day
        // `i` on, one event a day; returns the day it is learned, if it is.
        let walk_in = |d: &RobustDetector, odd_hour_on: Option<u64>| {
            let mut p = RobustProfile::default();
            steady(d, &mut p, T0, 100, "10.0.0.1");
            // Step 1: a new IP alone is learned.
            let step1 = T0 + 100 * DAY;
            for i in 0..10 {
                let e = event(
                    step1 + i * DAY + 36_000_000,
                    "45.1.1.1",
                    "US-CA-SF",
                    "success",
                );
                let v = observe(d, &mut p, &e);
                assert!(!v.anomaly, "{v:?}");
            }
            // Step 2, ten days later: a new place with that IP, new.
            let step2 = step1 + 10 * DAY + 36_000_000;
            let v = observe(
                d,
                &mut p,
                &event(step2, "45.1.1.1", "RU-MOW-Moscow", "success"),
            );
            let s = v.score.unwrap();
            assert!(v.anomaly && !v.learned, "{s:?}");
            assert!(s.codes.contains(&ReasonCode::NewSinceBaseline), "{s:?}");
            assert_eq!(s.signals.unwrap().new_since_baseline, 0.75);
            (1..60).find(|i| {
                // 03:00 instead of 10:00 on that day: not how the user behaves.
                let at = if odd_hour_on == Some(*i) {
                    step2 - 7 * 3_600_000
                } else {
                    step2
                };
                let e = event(at + i * DAY, "45.1.1.1", "RU-MOW-Moscow", "success");
                observe(d, &mut p, &e).learned
            })
        };
        let d = RobustDetector::new(100, 0.5, Weights::default());
        // Behaving like the user for `relocate_events` (5) events over a day or more (days 0 to
        // 4): learned as a relocation from the next one on.
        assert_eq!(walk_in(&d, None), Some(5));
        // An event at an odd hour from the new place (day 3) starts the count again: five more
        // (days 4 to 8) before it is learned.
        assert_eq!(walk_in(&d, Some(3)), Some(9));
        // Without relocation learning, a lasting change is learned once it settles.
        let mut off = d;
        off.settings.relocate_events = u16::MAX;
        let learned_at = walk_in(&off, None).expect("learned once settled");
        assert!(
            (15..=35).contains(&learned_at),
            "learned on day {learned_at}"
        );
    }

    #[test]
    fn a_burst_of_failures_is_flagged_a_lone_failure_is_not() {
        let d = RobustDetector::new(100, 0.7, Weights::default());
        let mut p = RobustProfile::default();
        steady(&d, &mut p, T0, 120, "10.0.0.1");
        let t = T0 + 120 * DAY + 10 * 3_600_000;
        let lone = observe(&d, &mut p, &event(t, "10.0.0.1", "US-CA-SF", "failed"));
        assert!(!lone.anomaly, "{lone:?}");
        let burst: Vec<bool> = (1..=6)
            .map(|i| {
                observe(
                    &d,
                    &mut p,
                    &event(t + DAY + i * 20_000, "10.0.0.1", "US-CA-SF", "failed"),
                )
                .anomaly
            })
            .collect();
        // Decayed with a 10-minute half-life, the sixth failure in 100 s is past 5.
        assert_eq!(burst, [false, false, false, false, false, true]);
    }

    #[test]
    fn another_country_within_the_hour_is_impossible_travel() {
        let d = RobustDetector::new(100, 0.7, Weights::default());
        let mut p = RobustProfile::default();
        // A user at home in the US and in GB in turn, a day apart: both places are known.
        for i in 0..120u64 {
            let place = if i % 2 == 0 {
                "US-CA-SF"
            } else {
                "GB-LND-London"
            };
            observe(
                &d,
                &mut p,
                &event(T0 + i * DAY + 36_000_000, "10.0.0.1", place, "success"),
            );
        }
        let t = T0 + 120 * DAY + 36_000_000;
        assert!(!observe(&d, &mut p, &event(t, "10.0.0.1", "US-CA-SF", "success")).anomaly);
        let v = observe(
            &d,
            &mut p,
            &event(t + 1_800_000, "10.0.0.1", "GB-LND-London", "success"),
        );
        let s = v.score.unwrap();
        assert!(v.anomaly, "{s:?}");
        assert_eq!(s.codes, [ReasonCode::High, ReasonCode::ImpossibleTravel]);
        // The next day, the same trip is ordinary.
        let v = observe(
            &d,
            &mut p,
            &event(t + DAY, "10.0.0.1", "US-CA-SF", "success"),
        );
        assert!(!v.anomaly, "{v:?}");
    }

    #[test]
    fn old_habits_fade_with_the_half_life() {
        let d = RobustDetector::new(10, 0.99, Weights::default());
        let mut p = RobustProfile::default();
        steady(&d, &mut p, T0, 30, "10.0.0.1");
        steady(&d, &mut p, T0 + 30 * DAY, 30, "10.0.0.2");
        let at = |days: u64| {
            event(
                T0 + days * DAY + 36_000_000,
                "10.0.0.1",
                "US-CA-SF",
                "success",
            )
        };
        let soon = score(&d, &p, &at(60)).components.ip;
        // 300 days of the new IP later, the old one is as good as forgotten.
        steady(&d, &mut p, T0 + 60 * DAY, 300, "10.0.0.2");
        let late = score(&d, &p, &at(361)).components.ip;
        assert!(soon < 0.3 && late > 0.9, "{soon} then {late}");
    }

    #[test]
    fn weights_rescale_far_from_the_anchor_and_scores_stay_the_same() {
        let d = RobustDetector::new(10, 0.7, Weights::default());
        let mut p = RobustProfile::default();
        steady(&d, &mut p, T0, 20, "10.0.0.1");
        // Forty-one half-lives later the weights are scaled back; the profile still works.
        let far = T0 + 41 * 30 * DAY;
        steady(&d, &mut p, far, 20, "10.0.0.1");
        assert_eq!(p.anchor_ms, far + 36_000_000);
        assert!(p.hours.iter().all(|h| h.is_finite()));
        let s = score(
            &d,
            &p,
            &event(
                far + 20 * DAY + 36_000_000,
                "10.0.0.1",
                "US-CA-SF",
                "success",
            ),
        );
        assert!(s.score < 0.05, "{s:?}");
    }

    #[test]
    fn values_past_the_cap_evict_the_least_recently_seen() {
        let d = RobustDetector::new(1, 0.99, Weights::default()).with_max_values(2);
        let mut p = RobustProfile::default();
        let mut evicted = 0;
        for (i, ip) in ["1.1.1.1", "2.2.2.2", "1.1.1.1", "3.3.3.3"]
            .iter()
            .enumerate()
        {
            evicted +=
                observe(&d, &mut p, &event(T0 + i as u64 * DAY, ip, "US", "success")).evicted;
        }
        assert_eq!(evicted, 1);
        let ips: Vec<&str> = p.ips.values.iter().map(|(k, _)| k).collect();
        assert_eq!(ips, ["1.1.1.1", "3.3.3.3"]);
        let sum: f64 = p.ips.values.iter().map(|(_, t)| f64::from(t.weight)).sum();
        assert!(
            (p.ips.total - sum).abs() < 1e-6,
            "the total follows evictions"
        );
    }

    #[test]
    fn settings_out_of_range_are_named() {
        let mut s = RobustSettings::default();
        assert_eq!(s.invalid(), None);
        s.half_life_days = 0.0;
        assert_eq!(s.invalid().map(|(k, _)| k), Some("half_life_days"));
        s = RobustSettings {
            burst_failures: 0.5,
            ..RobustSettings::default()
        };
        assert_eq!(s.invalid().map(|(k, _)| k), Some("burst_failures"));
        s = RobustSettings {
            relocate_days: f64::NAN,
            ..RobustSettings::default()
        };
        assert_eq!(s.invalid().map(|(k, _)| k), Some("relocate_days"));
        s = RobustSettings {
            relocate_events: 0,
            ..RobustSettings::default()
        };
        assert_eq!(s.invalid().map(|(k, _)| k), Some("relocate_events"));
    }

    #[test]
    fn a_tally_stays_12_bytes_and_a_profile_stored_before_relocation_reads_the_same() {
        assert_eq!(std::mem::size_of::<Tally>(), 12);
        let d = RobustDetector::new(10, 0.7, Weights::default());
        let mut p = RobustProfile::default();
        steady(&d, &mut p, T0, 30, "10.0.0.1");
        // The same profile as the format before `calm` wrote it.
        let legacy = RobustProfile::<LegacyTally> {
            hours: p.hours,
            ips: legacy(&p.ips),
            places: legacy(&p.places),
            types: legacy(&p.types),
            failures: p.failures,
            events: p.events,
            ready: p.ready,
            anchor_ms: p.anchor_ms,
            recent_failures: p.recent_failures,
            burst_ms: p.burst_ms,
            last_country: p.last_country.clone(),
            last_place_ms: p.last_place_ms,
        };
        let old = postcard::to_allocvec(&legacy).unwrap();
        let read: RobustProfile<LegacyTally> = postcard::from_bytes(&old).unwrap();
        assert_eq!(RobustProfile::from(read), p);
    }

    fn legacy(d: &Dimension) -> Dimension<LegacyTally> {
        Dimension {
            values: d.values.clone().map(|t| LegacyTally {
                weight: t.weight,
                last: t.last,
                since: t.since,
            }),
            total: d.total,
            squares: d.squares,
        }
    }
}
