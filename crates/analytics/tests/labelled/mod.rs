//! A seeded generator of **labelled** users, to judge the models: normal archetypes (steady,
//! evenly active, bursty, travelling, shift workers) and attacks on such users (credential
//! stuffing, a takeover from a new IP, place and hour, a slow walk-in takeover, impossible
//! travel, a burst of failures), every event labelled normal or attack; and [`evaluate`],
//! which runs a model over them and counts, per archetype and per attack, what it flagged.
//!
//! A normal user has 300 normal events; an attacked user 200 normal events, the attack, and
//! 20 normal events after it (none after the walk-in, whose victim is gone). With `min_events`
//! 100, each user's first 100 events only learn. Events are StreamGuard events (`event_id`,
//! `timestamp`, `event_type`, `source_ip`, `user`, `status`, `threat_score`,
//! `metadata.geo_location`). The same seed gives the same events.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use colloquium_analytics::{Detector, Fields, Model, Observation, RobustDetector, Scorer, Weights};

/// How a normal user behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Archetype {
    /// Weekday office hours, an office IP and a VPN, one place.
    Steady,
    /// Nine hours, three IPs, two places and four event types, each equally often.
    EvenlyActive,
    /// Quiet days, then bursts of dozens of events within an hour.
    Bursty,
    /// Home and two other countries in turn, a new hotel IP every trip.
    Travelling,
    /// Day, evening and night shifts, a week each.
    ShiftWorker,
    /// A steady user who moves every two to four weeks: a new city and new IPs together, with
    /// the same hours, event types and failures.
    Relocating,
}

/// An attack on a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attack {
    /// Thirty failed logins within ten minutes from thirty IPs in other countries.
    CredentialStuffing,
    /// Ten events from a new IP in another country at 3 AM local time.
    Takeover,
    /// A new IP; then also a new place; then also 3 AM: eighty events per step at the user's
    /// pace, slow enough that the reference learns every step of it at threshold 0.7 for a
    /// steady user (as in its `poison/gradual-takeover`).
    SlowWalkIn,
    /// Three events from another country 20–40 minutes after one of the user's own.
    ImpossibleTravel,
    /// Twelve failed logins within five minutes from the user's own IP and place.
    FailureBurst,
}

/// Every archetype, in report order.
pub const ARCHETYPES: [Archetype; 6] = [
    Archetype::Steady,
    Archetype::EvenlyActive,
    Archetype::Bursty,
    Archetype::Travelling,
    Archetype::ShiftWorker,
    Archetype::Relocating,
];

/// Every attack, in report order.
pub const ATTACKS: [Attack; 5] = [
    Attack::CredentialStuffing,
    Attack::Takeover,
    Attack::SlowWalkIn,
    Attack::ImpossibleTravel,
    Attack::FailureBurst,
];

impl Archetype {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Archetype::Steady => "steady",
            Archetype::EvenlyActive => "evenly active",
            Archetype::Bursty => "bursty",
            Archetype::Travelling => "travelling",
            Archetype::ShiftWorker => "shift worker",
            Archetype::Relocating => "relocating",
        }
    }
}

impl Attack {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Attack::CredentialStuffing => "credential stuffing",
            Attack::Takeover => "takeover (new IP, place, hour)",
            Attack::SlowWalkIn => "slow walk-in takeover",
            Attack::ImpossibleTravel => "impossible travel",
            Attack::FailureBurst => "burst of failures",
        }
    }
}

/// One generated user: its events in time order, each with its label (`true`: attack).
#[derive(Clone, Debug)]
pub struct User {
    /// How it behaves normally.
    pub archetype: Archetype,
    /// The attack on it, if any.
    pub attack: Option<Attack>,
    /// Events and labels.
    pub events: Vec<(Value, bool)>,
}

/// What one event is, before it is JSON.
#[derive(Clone, Debug)]
struct Ev {
    ms: u64,
    kind: &'static str,
    ip: String,
    place: &'static str,
    failed: bool,
}

/// Events per step of the slow walk-in.
const WALK_STEP: usize = 80;
const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
/// 2026-01-05T00:00:00Z, a Monday.
const START: u64 = 1_767_571_200_000;
const FOREIGN: [&str; 5] = [
    "RU-MOW-Moscow",
    "CN-BJ-Beijing",
    "BR-SP-Sao Paulo",
    "NG-LA-Lagos",
    "VN-HN-Hanoi",
];

fn pick<T: Copy>(rng: &mut fastrand::Rng, weighted: &[(T, u32)]) -> T {
    let total: u32 = weighted.iter().map(|(_, w)| w).sum();
    let mut n = rng.u32(0..total.max(1));
    for (value, weight) in weighted {
        if n < *weight {
            return *value;
        }
        n -= weight;
    }
    weighted[0].0
}

fn ip(rng: &mut fastrand::Rng, first: u8) -> String {
    format!(
        "{first}.{}.{}.{}",
        rng.u8(1..255),
        rng.u8(1..255),
        rng.u8(1..255)
    )
}

/// Cities a relocating user moves between (one time zone, so its UTC hours stay the same).
const CITIES: [&str; 6] = [
    "US-MA-Boston",
    "US-PA-Philadelphia",
    "US-DC-Washington",
    "US-GA-Atlanta",
    "US-FL-Miami",
    "US-NC-Charlotte",
];

/// A normal user's behaviour, one day at a time.
struct Persona {
    archetype: Archetype,
    ips: Vec<String>,
    /// Travelling: the current trip's hotel IP and the trip it is for.
    hotel: (u64, String),
    /// Relocating: from which day it lives where, with its office and VPN IPs there.
    moves: Vec<(u64, &'static str, [String; 2])>,
}

/// Local time offsets of the places (hours east of UTC).
fn offset(place: &str) -> i64 {
    match place {
        "US-NY-New York" => -5,
        "US-NJ-Newark" => -5,
        "GB-LND-London" => 0,
        "DE-BE-Berlin" => 1,
        "DE-HH-Hamburg" => 1,
        city if CITIES.contains(&city) => -5,
        _ => 0,
    }
}

impl Persona {
    fn new(archetype: Archetype, rng: &mut fastrand::Rng) -> Self {
        let ips = (0..3).map(|_| ip(rng, 10)).collect();
        let mut moves = Vec::new();
        if archetype == Archetype::Relocating {
            let (mut day, mut city) = (0, rng.usize(0..CITIES.len()));
            while day < 400 {
                moves.push((day, CITIES[city], [ip(rng, 20), ip(rng, 20)]));
                day += rng.u64(14..=28);
                city = (city + rng.usize(1..CITIES.len())) % CITIES.len();
            }
        }
        Persona {
            archetype,
            ips,
            hotel: (u64::MAX, String::new()),
            moves,
        }
    }

    /// Where the user is on day `d`, and whether it is a trip (travelling only).
    fn place(&self, d: u64) -> &'static str {
        match self.archetype {
            Archetype::Steady => "US-NY-New York",
            Archetype::Relocating => self.home(d).1,
            Archetype::EvenlyActive => "US-NJ-Newark",
            Archetype::Bursty => "GB-LND-London",
            Archetype::ShiftWorker => "DE-HH-Hamburg",
            Archetype::Travelling => match (d % 7, (d / 7) % 2) {
                (0..=3, _) => "US-NY-New York",
                (_, 0) => "DE-BE-Berlin",
                _ => "GB-LND-London",
            },
        }
    }

    /// Relocating: where it lives on day `d`.
    fn home(&self, d: u64) -> &(u64, &'static str, [String; 2]) {
        let at = self.moves.partition_point(|(from, _, _)| *from <= d);
        &self.moves[at.saturating_sub(1)]
    }

    /// The events of day `d` (days from [`START`]), in time order.
    fn day(&mut self, rng: &mut fastrand::Rng, d: u64) -> Vec<Ev> {
        let place = self.place(d);
        // Local hour `h` (may be past 24) of day d, with a random minute, as epoch ms.
        let at = |h: i64, jitter: u64| {
            let local = d as i64 * DAY as i64 + h * HOUR as i64 - offset(place) * HOUR as i64;
            START + local.max(0) as u64 + jitter
        };
        let mut day = Vec::new();
        match self.archetype {
            Archetype::Steady | Archetype::Relocating => {
                if d % 7 < 5 {
                    for _ in 0..rng.usize(6..=10) {
                        let h = pick(
                            rng,
                            &[
                                (9, 1),
                                (10, 2),
                                (11, 2),
                                (12, 1),
                                (13, 1),
                                (14, 2),
                                (15, 2),
                                (16, 2),
                                (17, 1),
                            ],
                        );
                        let kind = pick(
                            rng,
                            &[
                                ("auth_attempt", 4),
                                ("file_access", 4),
                                ("network_connection", 1),
                                ("dns_query", 1),
                            ],
                        );
                        let ips = match self.archetype {
                            Archetype::Relocating => &self.home(d).2[..],
                            _ => &self.ips[..2],
                        };
                        let ip = ips[usize::from(rng.u8(0..10) >= 8)].clone();
                        let failed = kind == "auth_attempt" && rng.u8(0..100) < 2;
                        day.push(Ev {
                            ms: at(h, rng.u64(0..HOUR)),
                            kind,
                            ip,
                            place,
                            failed,
                        });
                    }
                }
            }
            Archetype::EvenlyActive => {
                const KINDS: [&str; 4] = [
                    "auth_attempt",
                    "file_access",
                    "network_connection",
                    "dns_query",
                ];
                for _ in 0..rng.usize(5..=7) {
                    let place = ["US-NJ-Newark", "US-NY-New York"][rng.usize(0..2)];
                    day.push(Ev {
                        ms: at(rng.i64(9..=17), rng.u64(0..HOUR)),
                        kind: KINDS[rng.usize(0..4)],
                        ip: self.ips[rng.usize(0..3)].clone(),
                        place,
                        failed: false,
                    });
                }
            }
            Archetype::Bursty => {
                let mut push = |rng: &mut fastrand::Rng, ms: u64, ips: &[String]| {
                    let kind = pick(
                        rng,
                        &[
                            ("network_connection", 4),
                            ("dns_query", 3),
                            ("file_access", 2),
                            ("auth_attempt", 1),
                        ],
                    );
                    day.push(Ev {
                        ms,
                        kind,
                        ip: ips[usize::from(rng.u8(0..10) >= 7)].clone(),
                        place,
                        failed: kind == "auth_attempt" && rng.u8(0..100) < 3,
                    });
                };
                if rng.u8(0..10) < 4 {
                    let start = at(rng.i64(8..=21), rng.u64(0..HOUR));
                    for _ in 0..rng.usize(20..=50) {
                        let ms = start + rng.u64(0..HOUR);
                        push(rng, ms, &self.ips);
                    }
                }
                for _ in 0..rng.usize(0..=2) {
                    let ms = at(rng.i64(8..=22), rng.u64(0..HOUR));
                    push(rng, ms, &self.ips);
                }
            }
            Archetype::Travelling => {
                let trip = d / 7;
                let away = d % 7 >= 4;
                if away && self.hotel.0 != trip {
                    self.hotel = (trip, ip(rng, 100));
                }
                for _ in 0..rng.usize(5..=8) {
                    let ip = if away {
                        self.hotel.1.clone()
                    } else {
                        self.ips[rng.usize(0..2)].clone()
                    };
                    let kind = pick(
                        rng,
                        &[
                            ("auth_attempt", 3),
                            ("file_access", 3),
                            ("network_connection", 2),
                            ("dns_query", 2),
                        ],
                    );
                    // Flights leave after 18:00 and land before 08:00: no two countries
                    // within hours of each other.
                    day.push(Ev {
                        ms: at(rng.i64(8..=17), rng.u64(0..HOUR)),
                        kind,
                        ip,
                        place,
                        failed: kind == "auth_attempt" && rng.u8(0..100) < 2,
                    });
                }
            }
            Archetype::ShiftWorker => {
                let start = [6, 14, 22][usize::try_from((d / 7) % 3).unwrap_or(0)];
                for _ in 0..rng.usize(7..=9) {
                    let kind = pick(
                        rng,
                        &[
                            ("process_execution", 4),
                            ("file_access", 3),
                            ("auth_attempt", 3),
                        ],
                    );
                    day.push(Ev {
                        ms: at(start + rng.i64(0..8), rng.u64(0..HOUR)),
                        kind,
                        ip: self.ips[usize::from(rng.u8(0..10) == 0)].clone(),
                        place,
                        failed: kind == "auth_attempt" && rng.u8(0..100) < 2,
                    });
                }
            }
        }
        day.sort_by_key(|e| e.ms);
        day
    }
}

/// A user's normal events, day after day.
struct Timeline {
    persona: Persona,
    day: u64,
    queue: std::collections::VecDeque<Ev>,
}

impl Timeline {
    fn take(&mut self, rng: &mut fastrand::Rng, n: usize) -> Vec<Ev> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.queue.pop_front() {
                Some(e) => out.push(e),
                None => {
                    let day = self.persona.day(rng, self.day);
                    self.queue.extend(day);
                    self.day += 1;
                }
            }
        }
        out
    }
}

/// Local 3 AM on the day of `ms`, for a user at `place`.
fn three_am(ms: u64, place: &str) -> u64 {
    let day = ms / DAY * DAY;
    let hour = (3 - offset(place)).rem_euclid(24) as u64;
    day + hour * HOUR + ms % HOUR
}

/// The attack events on a user whose normal events continue with `timeline`; normal events
/// interleaved with them are returned too (label `false`).
fn attack(
    rng: &mut fastrand::Rng,
    timeline: &mut Timeline,
    attack: Attack,
    after: u64,
) -> Vec<(Ev, bool)> {
    let foreign = FOREIGN[rng.usize(0..FOREIGN.len())];
    let attacker_ip = ip(rng, 45);
    let mut out = Vec::new();
    match attack {
        Attack::CredentialStuffing => {
            let t0 = after + rng.u64(HOUR..48 * HOUR);
            for i in 0..30u64 {
                out.push((
                    Ev {
                        ms: t0 + i * 20_000,
                        kind: "auth_attempt",
                        ip: ip(rng, 185),
                        place: FOREIGN[rng.usize(0..FOREIGN.len())],
                        failed: true,
                    },
                    true,
                ));
            }
        }
        Attack::Takeover => {
            let t0 = three_am(after + DAY, timeline.persona.place(timeline.day));
            for i in 0..10u64 {
                let kind = ["auth_attempt", "file_access", "process_execution"][(i % 3) as usize];
                out.push((
                    Ev {
                        ms: t0 + i * 12 * 60_000 + (i / 5) * DAY,
                        kind,
                        ip: attacker_ip.clone(),
                        place: foreign,
                        failed: false,
                    },
                    true,
                ));
            }
        }
        Attack::SlowWalkIn => {
            // The user's own rhythm, changed one dimension at a time; the user is gone.
            for (step, mut e) in timeline.take(rng, 3 * WALK_STEP).into_iter().enumerate() {
                e.ip = attacker_ip.clone();
                if step >= WALK_STEP {
                    e.place = foreign;
                }
                if step >= 2 * WALK_STEP {
                    e.ms = three_am(
                        e.ms,
                        timeline.persona.place(e.ms.saturating_sub(START) / DAY),
                    );
                }
                out.push((e, true));
            }
            out.sort_by_key(|(e, _)| e.ms);
        }
        Attack::ImpossibleTravel => {
            let normal = timeline.take(rng, 30);
            let chosen = [5, 15, 25];
            for (i, e) in normal.into_iter().enumerate() {
                if chosen.contains(&i) {
                    out.push((
                        Ev {
                            ms: e.ms + rng.u64(20..=40) * 60_000,
                            kind: "auth_attempt",
                            ip: ip(rng, 45),
                            place: if e.place.starts_with("US") {
                                "GB-LND-London"
                            } else {
                                "US-NY-New York"
                            },
                            failed: false,
                        },
                        true,
                    ));
                }
                out.push((e, false));
            }
            out.sort_by_key(|(e, _)| e.ms);
        }
        Attack::FailureBurst => {
            let normal = timeline.take(rng, 1);
            for e in normal {
                for i in 0..12u64 {
                    out.push((
                        Ev {
                            ms: e.ms + 60_000 + i * 25_000,
                            kind: "auth_attempt",
                            ip: e.ip.clone(),
                            place: e.place,
                            failed: true,
                        },
                        true,
                    ));
                }
                out.insert(0, (e, false));
            }
        }
    }
    out
}

fn to_json(user: &str, n: usize, e: &Ev, attack: bool) -> Value {
    json!({
        "event_id": format!("evt_{user}_{n}"),
        "timestamp": e.ms,
        "event_type": e.kind,
        "source_ip": e.ip,
        "user": user,
        "status": if e.failed { "failed" } else { "success" },
        "threat_score": if attack { 0.6 } else { 0.1 },
        "metadata": {"geo_location": e.place},
    })
}

/// `per_kind` normal users of each archetype and `per_kind` attacked users of each attack
/// (their victims' archetypes in turn), from `seed`.
pub fn generate(seed: u64, per_kind: usize) -> Vec<User> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let normal = ARCHETYPES
        .iter()
        .flat_map(|a| std::iter::repeat_n((*a, None), per_kind));
    let attacked = ATTACKS.iter().flat_map(|attack| {
        (0..per_kind).map(|i| (ARCHETYPES[i % ARCHETYPES.len()], Some(*attack)))
    });
    let mut users = Vec::new();
    for (archetype, attack_on) in normal.chain(attacked) {
        let name = format!("u{}", users.len());
        let mut timeline = Timeline {
            persona: Persona::new(archetype, &mut rng),
            day: rng.u64(0..7),
            queue: Default::default(),
        };
        let mut events: Vec<(Ev, bool)> = Vec::new();
        match attack_on {
            None => events.extend(timeline.take(&mut rng, 300).into_iter().map(|e| (e, false))),
            Some(kind) => {
                events.extend(timeline.take(&mut rng, 200).into_iter().map(|e| (e, false)));
                let after = events.last().map_or(START, |(e, _)| e.ms);
                let attacked = attack(&mut rng, &mut timeline, kind, after);
                let end = attacked.iter().map(|(e, _)| e.ms).max().unwrap_or(after);
                events.extend(attacked);
                if kind != Attack::SlowWalkIn {
                    let later = timeline.take(&mut rng, 40);
                    events.extend(
                        later
                            .into_iter()
                            .filter(|e| e.ms > end)
                            .take(20)
                            .map(|e| (e, false)),
                    );
                }
            }
        }
        let events = events
            .iter()
            .enumerate()
            .map(|(n, (e, label))| (to_json(&name, n, e, *label), *label))
            .collect();
        users.push(User {
            archetype,
            attack: attack_on,
            events,
        });
    }
    users
}

/// What one model did with one group of users.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// Normal events scored / flagged.
    pub normal: u64,
    /// Normal events flagged.
    pub false_positives: u64,
    /// Attack events.
    pub attacks: u64,
    /// Attack events flagged.
    pub caught: u64,
    /// Attacked users.
    pub users: u64,
    /// Attacked users with at least one attack event flagged.
    pub users_caught: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.normal += other.normal;
        self.false_positives += other.false_positives;
        self.attacks += other.attacks;
        self.caught += other.caught;
        self.users += other.users;
        self.users_caught += other.users_caught;
    }

    /// Flagged events that were attacks.
    pub fn precision(&self) -> f64 {
        let flagged = self.caught + self.false_positives;
        if flagged == 0 {
            return 1.0;
        }
        self.caught as f64 / flagged as f64
    }

    /// Attack events flagged.
    pub fn recall(&self) -> f64 {
        if self.attacks == 0 {
            return 0.0;
        }
        self.caught as f64 / self.attacks as f64
    }
}

/// Both models on the same users.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The generator's seed and users per kind.
    pub seed: u64,
    /// Users per archetype and per attack.
    pub per_kind: usize,
    /// The threshold both ran at.
    pub threshold: f64,
    /// Per model: normal users by archetype (all events normal).
    pub normal: HashMap<(Model, Archetype), Tally>,
    /// Per model: attacked users by attack (normal events before and after count as normal).
    pub attacked: HashMap<(Model, Attack), Tally>,
}

impl Report {
    /// The model's totals over every user.
    pub fn total(&self, model: Model) -> Tally {
        let mut total = Tally::default();
        for ((m, _), t) in &self.normal {
            if *m == model {
                total.add(t);
            }
        }
        for ((m, _), t) in &self.attacked {
            if *m == model {
                total.add(t);
            }
        }
        total
    }

    /// As Markdown tables.
    pub fn to_markdown(&self) -> String {
        let models = [Model::Streamguard, Model::Robust];
        let mut md = String::new();
        let _ = writeln!(
            md,
            "Seed {}, {} users per archetype and per attack, threshold {}, `min_events` 100 \
             (`cargo test -p colloquium-analytics --test model_comparison`).\n",
            self.seed, self.per_kind, self.threshold
        );
        md.push_str("| normal users | events scored | false positives: streamguard | robust |\n");
        md.push_str("|---|---:|---:|---:|\n");
        for a in ARCHETYPES {
            let t = |m| self.normal.get(&(m, a)).cloned().unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {} | {} ({:.1} %) | {} ({:.1} %) |",
                a.as_str(),
                t(models[0]).normal,
                t(models[0]).false_positives,
                percent(t(models[0]).false_positives, t(models[0]).normal),
                t(models[1]).false_positives,
                percent(t(models[1]).false_positives, t(models[1]).normal),
            );
        }
        md.push_str(
            "\n| attack | attack events | recall: streamguard | robust | users caught: streamguard | robust | false positives around it: streamguard | robust |\n",
        );
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for a in ATTACKS {
            let t = |m| self.attacked.get(&(m, a)).cloned().unwrap_or_default();
            let (s, r) = (t(models[0]), t(models[1]));
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} % | {:.1} % | {}/{} | {}/{} | {} | {} |",
                a.as_str(),
                s.attacks,
                100.0 * s.recall(),
                100.0 * r.recall(),
                s.users_caught,
                s.users,
                r.users_caught,
                r.users,
                s.false_positives,
                r.false_positives,
            );
        }
        md.push_str("\n| all users | false positives | precision | recall |\n");
        md.push_str("|---|---:|---:|---:|\n");
        for m in models {
            let t = self.total(m);
            let _ = writeln!(
                md,
                "| {} | {} of {} normal events | {:.1} % | {:.1} % |",
                m.as_str(),
                t.false_positives,
                t.normal,
                100.0 * t.precision(),
                100.0 * t.recall(),
            );
        }
        md
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Runs both models (defaults, `threshold`, `min_events` 100) over seeded users.
pub fn evaluate(seed: u64, per_kind: usize, threshold: f64) -> Report {
    let users = generate(seed, per_kind);
    let mut report = Report {
        seed,
        per_kind,
        threshold,
        ..Report::default()
    };
    let weights = Weights::default();
    tally_users(&Detector::new(100, threshold, weights), &users, &mut report);
    tally_users(
        &RobustDetector::new(100, threshold, weights),
        &users,
        &mut report,
    );
    report
}

/// Each user through `detector` with a profile of its own, counted into `report`.
fn tally_users<D: Scorer>(detector: &D, users: &[User], report: &mut Report) {
    let fields = Fields::default();
    for user in users {
        let mut profile = D::Profile::default();
        let mut tally = Tally::default();
        for (event, attack) in &user.events {
            let Ok(obs) = Observation::parse(event, &fields) else {
                continue;
            };
            let verdict = detector.observe(&mut profile, &obs);
            if verdict.score.is_none() {
                continue;
            }
            if *attack {
                tally.attacks += 1;
                tally.caught += u64::from(verdict.anomaly);
            } else {
                tally.normal += 1;
                tally.false_positives += u64::from(verdict.anomaly);
            }
        }
        match user.attack {
            None => report
                .normal
                .entry((D::MODEL, user.archetype))
                .or_default()
                .add(&tally),
            Some(attack) => {
                tally.users = 1;
                tally.users_caught = u64::from(tally.caught > 0);
                report
                    .attacked
                    .entry((D::MODEL, attack))
                    .or_default()
                    .add(&tally);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_users_in_time_order_with_their_labels() {
        let (a, b) = (generate(7, 2), generate(7, 2));
        assert_eq!(a.len(), (ARCHETYPES.len() + ATTACKS.len()) * 2);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.events, y.events);
            let times: Vec<u64> = x
                .events
                .iter()
                .map(|(e, _)| e["timestamp"].as_u64().unwrap_or(0))
                .collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "{:?}", x.archetype);
            assert_eq!(
                x.events.iter().any(|(_, attack)| *attack),
                x.attack.is_some()
            );
        }
        assert_ne!(generate(8, 2)[0].events, a[0].events);
    }
}
