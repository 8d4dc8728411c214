//! The spend ledger: a budget that is never exceeded, never leaked, and survives restarts.
//!
//! A call **reserves** its worst case (its counted prompt tokens and `max_tokens` at the
//! model's prices) before it is sent, and **settles** to its real cost from the provider's
//! `usage` after; a call that failed, timed out or was refused **releases** its reservation.
//! The check is against settled spend plus every open reservation, under one lock, so 50 calls
//! at once cannot each see room that only one of them has (the overshoot LLM gateways have
//! public reports of).
//!
//! A call whose worst case fits the settled spend but not the open reservations waits for them
//! to settle rather than being refused: reservations are worst cases, and the spend they settle
//! to is usually lower, so every call the budget can afford is made. A call whose worst case
//! does not fit even the settled spend is refused (`budget_exhausted`) when `auto_stop` is set;
//! without it budgets are advisory: counted, warned about once a day, never enforced.
//!
//! Budgets are per UTC day: for the node, and optionally per pipeline. A reservation is charged
//! to the day it was made. Spend and open reservations are written (synced) to the store before
//! a call goes out; a reservation still open when the ledger opens belongs to a call that was in
//! flight when the node died, and counts at its reservation.
//!
//! A [`Reservation`] dropped without settling is released: no code path, cancelled future or
//! panic leaks one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use colloquium_event::{EventId, IdGenerator, Timestamp};
use colloquium_storage::{Account, LedgerRows, LedgerWrite, OpenReservation};
use tokio::sync::Notify;

use crate::money::Nanos;

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// The UTC day of `t`, in days since 1970-01-01.
pub fn day_of(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis() / DAY_MS).unwrap_or(i64::MAX)
}

/// Where the ledger reads the time (injected in tests: the day rolls over at UTC midnight).
pub type Clock = fn() -> Timestamp;

/// The budgets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// The node's budget per UTC day (`None`: unlimited, still counted).
    pub daily: Option<Nanos>,
    /// Budgets per UTC day of single pipelines.
    pub per_pipeline: BTreeMap<String, Nanos>,
    /// The share of a budget at which a warning is logged (once per budget and day).
    pub alert_at: f64,
    /// Refuse calls past a budget; without it budgets are only warned about.
    pub auto_stop: bool,
}

/// Why a call was not given a reservation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    /// The call's worst case does not fit what is left today.
    #[error(
        "the {scope} budget of {budget} for today is spent: {spent} settled, the call may cost up to {worst}"
    )]
    Exhausted {
        /// `node`, or `pipeline <name>`.
        scope: String,
        /// The budget.
        budget: Nanos,
        /// What today's settled calls cost.
        spent: Nanos,
        /// The refused call's worst case.
        worst: Nanos,
    },
    /// The ledger could not be written: the call is not made (a call the ledger has not
    /// recorded could be lost across a crash).
    #[error("the spend ledger could not be written: {0}")]
    Store(String),
}

/// Where the ledger persists (the node's store; a test's stand-in).
pub trait LedgerStore: Send + Sync + 'static {
    /// Every spend row and open reservation.
    fn load(&self) -> Result<LedgerRows, String>;
    /// Applies `writes` atomically; durably (synced) when `durable`.
    fn write(&self, writes: &[LedgerWrite], durable: bool) -> Result<(), String>;
}

impl LedgerStore for colloquium_storage::Store {
    fn load(&self) -> Result<LedgerRows, String> {
        self.ledger().map_err(|e| e.to_string())
    }

    fn write(&self, writes: &[LedgerWrite], durable: bool) -> Result<(), String> {
        self.write_ledger(writes, durable)
            .map_err(|e| e.to_string())
    }
}

impl LedgerStore for Box<dyn LedgerStore> {
    fn load(&self) -> Result<LedgerRows, String> {
        (**self).load()
    }

    fn write(&self, writes: &[LedgerWrite], durable: bool) -> Result<(), String> {
        (**self).write(writes, durable)
    }
}

/// A ledger kept in memory only, for `colloquium validate` and `colloquium test`: nothing
/// is kept across runs.
#[derive(Default)]
pub struct MemoryLedger(Mutex<LedgerRows>);

impl LedgerStore for MemoryLedger {
    fn load(&self) -> Result<LedgerRows, String> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn write(&self, writes: &[LedgerWrite], _durable: bool) -> Result<(), String> {
        let mut rows = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for write in writes {
            match write {
                LedgerWrite::Open { id, reservation } => {
                    rows.open.push((*id, reservation.clone()));
                }
                LedgerWrite::Close { id } => rows.open.retain(|(open, _)| open != id),
                LedgerWrite::Spend {
                    day,
                    account,
                    total,
                } => {
                    rows.spend.retain(|(d, a, _)| (d, a) != (day, account));
                    rows.spend.push((*day, account.clone(), *total));
                }
            }
        }
        Ok(())
    }
}

/// Today's spend for the API and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Today {
    /// The UTC day.
    pub day: i64,
    /// Settled spend, by pipeline.
    pub spent: BTreeMap<String, Nanos>,
    /// Open reservations, by pipeline.
    pub reserved: BTreeMap<String, Nanos>,
}

/// The ledger; clone it freely (a handle).
#[derive(Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Woken when a reservation settles or is released: waiting calls look again.
    freed: Notify,
    store: Box<dyn LedgerStore>,
    limits: Limits,
    clock: Clock,
    ids: IdGenerator,
    /// Counts budgets passing their alert threshold, once set.
    alerts: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
}

#[derive(Default)]
struct State {
    /// Settled spend by (day, account).
    spent: HashMap<(i64, Account), Nanos>,
    open: HashMap<EventId, OpenReservation>,
    /// Budgets warned about, by (day, scope).
    alerted: Vec<(i64, String)>,
}

impl State {
    /// Settled spend and open reservations on `day`, of `pipeline` or of all.
    fn totals(&self, day: i64, pipeline: Option<&str>) -> (Nanos, Nanos) {
        let mine = |d: i64, p: &str| d == day && pipeline.is_none_or(|want| want == p);
        let spent = self
            .spent
            .iter()
            .filter(|((d, a), _)| mine(*d, &a.pipeline))
            .fold(Nanos::ZERO, |sum, (_, n)| sum.plus(*n));
        let reserved = self
            .open
            .values()
            .filter(|o| mine(o.day, &o.account.pipeline))
            .fold(Nanos::ZERO, |sum, o| sum.plus(Nanos(o.amount)));
        (spent, reserved)
    }
}

/// What a budget says of a call's worst case.
#[derive(Debug, PartialEq)]
enum Fit {
    Fits,
    /// Fits the settled spend, not the open reservations: wait for them.
    Waits,
    /// Does not fit even the settled spend.
    Never(BudgetError),
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens the ledger on `store`. Reservations left open by a process that died are counted
    /// at their amount (their calls may have been made and billed) and closed.
    pub fn open(
        store: impl LedgerStore,
        limits: Limits,
        clock: Clock,
    ) -> Result<Ledger, BudgetError> {
        let rows = store.load().map_err(BudgetError::Store)?;
        let mut state = State::default();
        for (day, account, total) in rows.spend {
            state.spent.insert((day, account), Nanos(total));
        }
        let mut writes = Vec::new();
        for (id, open) in rows.open {
            let spent = state
                .spent
                .entry((open.day, open.account.clone()))
                .or_default();
            *spent = spent.plus(Nanos(open.amount));
            tracing::warn!(pipeline = %open.account.pipeline, provider = %open.account.provider, reserved = %Nanos(open.amount), "a call was in flight when the node stopped: counted at its reservation");
            writes.push(LedgerWrite::Close { id });
            writes.push(LedgerWrite::Spend {
                day: open.day,
                account: open.account,
                total: spent.0,
            });
        }
        if !writes.is_empty() {
            store.write(&writes, true).map_err(BudgetError::Store)?;
        }
        Ok(Ledger {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                freed: Notify::new(),
                store: Box::new(store),
                limits,
                clock,
                ids: IdGenerator::default(),
                alerts: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Counts each budget passing its alert threshold in `counter` (a metric).
    pub fn count_alerts_in(&self, counter: prometheus_client::metrics::counter::Counter) {
        let _ = self.shared.alerts.set(counter);
    }

    /// The budgets.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves `worst` for a call of `account`, waiting while open reservations hold the
    /// room it needs; refused when even settled spend leaves none (with `auto_stop`).
    pub async fn reserve(
        &self,
        account: &Account,
        worst: Nanos,
    ) -> Result<Reservation, BudgetError> {
        loop {
            // Registered before looking, so a release between the look and the wait wakes it.
            let freed = self.shared.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some((reservation, open)) = self.try_reserve(account, worst)? {
                return self.make_durable(reservation, open).await;
            }
            freed.await;
        }
    }

    /// One look: a reservation (held in memory) with what is to be written of it, `None` to
    /// wait, or the refusal.
    fn try_reserve(
        &self,
        account: &Account,
        worst: Nanos,
    ) -> Result<Option<(Reservation, OpenReservation)>, BudgetError> {
        let limits = &self.shared.limits;
        let pipeline = account.pipeline.as_str();
        let now = (self.shared.clock)();
        let day = day_of(now);
        let mut state = self.lock();
        // Warnings are once per day: earlier days' are done with.
        state.alerted.retain(|(d, _)| *d == day);
        let mut budgets = Vec::new();
        if let Some(daily) = limits.daily {
            budgets.push(("node".to_owned(), daily, state.totals(day, None)));
        }
        if let Some(budget) = limits.per_pipeline.get(pipeline) {
            let scope = format!("pipeline {pipeline}");
            budgets.push((scope, *budget, state.totals(day, Some(pipeline))));
        }
        let mut fit = Fit::Fits;
        for (scope, budget, (spent, reserved)) in &budgets {
            let this = if spent.plus(worst) > *budget {
                Fit::Never(BudgetError::Exhausted {
                    scope: scope.clone(),
                    budget: *budget,
                    spent: *spent,
                    worst,
                })
            } else if spent.plus(*reserved).plus(worst) > *budget {
                Fit::Waits
            } else {
                Fit::Fits
            };
            if matches!(this, Fit::Never(_)) || (this == Fit::Waits && fit == Fit::Fits) {
                fit = this;
            }
        }
        match fit {
            Fit::Never(error) if limits.auto_stop => return Err(error),
            Fit::Waits if limits.auto_stop => return Ok(None),
            Fit::Never(error) => {
                // Advisory: said once a day, the call goes on.
                let key = (day, error.to_string());
                if !state
                    .alerted
                    .iter()
                    .any(|(d, s)| (*d, s) == (key.0, &key.1))
                {
                    tracing::warn!(%error, "over budget (auto_stop is off: the call is made)");
                    state.alerted.push(key);
                }
            }
            _ => {}
        }
        for (scope, budget, (spent, reserved)) in &budgets {
            let used = spent.plus(*reserved).plus(worst);
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let threshold = (budget.0 as f64 * limits.alert_at) as u64;
            if limits.alert_at > 0.0 && used.0 >= threshold {
                let key = (day, format!("alert {scope}"));
                if !state.alerted.contains(&key) {
                    tracing::warn!(scope = %scope, budget = %budget, used = %used, "AI spend passed the budget's alert threshold");
                    if let Some(alerts) = self.shared.alerts.get() {
                        alerts.inc();
                    }
                    state.alerted.push(key);
                }
            }
        }
        let id = self
            .shared
            .ids
            .next_ids(now, 1)
            .first()
            .copied()
            .unwrap_or_else(|| EventId::min_at(now));
        let open = OpenReservation {
            day,
            account: account.clone(),
            amount: worst.0,
        };
        // Held in memory now (so no other call takes the room); durable before the call
        // goes out (`make_durable`).
        state.open.insert(id, open.clone());
        let reservation = Reservation {
            id,
            worst,
            ledger: Some(self.clone()),
        };
        Ok(Some((reservation, open)))
    }

    /// Writes `reservation` synced before it is handed out, on a blocking thread when in a
    /// runtime: concurrent calls' writes then share RocksDB's group commit (one fsync for
    /// several) instead of queueing behind each other's fsync on the caller's thread.
    async fn make_durable(
        &self,
        reservation: Reservation,
        open: OpenReservation,
    ) -> Result<Reservation, BudgetError> {
        let write = vec![LedgerWrite::Open {
            id: reservation.id,
            reservation: open,
        }];
        let ledger = self.clone();
        let written = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn_blocking(move || ledger.shared.store.write(&write, true))
                .await
                .unwrap_or_else(|e| Err(e.to_string())),
            Err(_) => self.shared.store.write(&write, true),
        };
        match written {
            Ok(()) => Ok(reservation),
            // Dropped: released in memory (its close is written too, harmlessly).
            Err(error) => Err(BudgetError::Store(error)),
        }
    }

    /// Closes reservation `id`, charging `cost` to its day (none for a release).
    fn close(&self, id: EventId, cost: Option<Nanos>) {
        {
            let mut state = self.lock();
            let Some(open) = state.open.remove(&id) else {
                return;
            };
            let mut writes = vec![LedgerWrite::Close { id }];
            if let Some(cost) = cost {
                let spent = state
                    .spent
                    .entry((open.day, open.account.clone()))
                    .or_default();
                *spent = spent.plus(cost);
                writes.push(LedgerWrite::Spend {
                    day: open.day,
                    account: open.account,
                    total: spent.0,
                });
            }
            // Not synced: lost in a crash, the reservation is counted at its amount on the next
            // start, never less than the call cost (a later synced write syncs it too).
            if let Err(error) = self.shared.store.write(&writes, false) {
                // Kept in memory either way; a restart counts the reservation at its amount.
                tracing::error!(%error, "the spend ledger could not be written");
            }
        }
        self.shared.freed.notify_waiters();
    }

    /// Today's settled spend and open reservations, by pipeline.
    pub fn today(&self) -> Today {
        let day = day_of((self.shared.clock)());
        let state = self.lock();
        let mut today = Today {
            day,
            ..Today::default()
        };
        for ((d, account), spent) in &state.spent {
            if *d == day {
                let sum = today.spent.entry(account.pipeline.clone()).or_default();
                *sum = sum.plus(*spent);
            }
        }
        for open in state.open.values().filter(|o| o.day == day) {
            let reserved = today
                .reserved
                .entry(open.account.pipeline.clone())
                .or_default();
            *reserved = reserved.plus(Nanos(open.amount));
        }
        today
    }

    /// Settled spend by (day, account), every day the ledger holds.
    pub fn history(&self) -> BTreeMap<(i64, Account), Nanos> {
        let state = self.lock();
        state.spent.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// A call's reservation: settle it to the real cost, or release it. Dropped without either, it
/// is released.
#[derive(Debug)]
pub struct Reservation {
    id: EventId,
    worst: Nanos,
    ledger: Option<Ledger>,
}

impl Reservation {
    /// What it holds.
    pub fn worst(&self) -> Nanos {
        self.worst
    }

    /// The call was made: charges `cost` (from the provider's usage) instead of the worst case.
    /// A cost above the worst case (a provider counting differently) is charged as it is.
    pub fn settle(mut self, cost: Nanos) {
        if let Some(ledger) = self.ledger.take() {
            ledger.close(self.id, Some(cost));
        }
    }

    /// The call was not made or not billed: frees the reservation.
    pub fn release(mut self) {
        if let Some(ledger) = self.ledger.take() {
            ledger.close(self.id, None);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(ledger) = self.ledger.take() {
            ledger.close(self.id, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    /// The injected time, in ms.
    static NOW: AtomicU64 = AtomicU64::new(1_767_225_600_000); // 2026-01-01T00:00:00Z
    fn clock() -> Timestamp {
        Timestamp::from_millis(NOW.load(Ordering::Relaxed))
    }

    fn store() -> (tempfile::TempDir, colloquium_storage::Store) {
        let dir = tempfile::tempdir().unwrap();
        let metrics = colloquium_storage::StorageMetrics::register(
            &colloquium_telemetry::MetricsRegistry::default(),
        );
        let options = colloquium_storage::StoreOptions {
            sync: false,
            ..colloquium_storage::StoreOptions::new(dir.path())
        };
        (
            dir,
            colloquium_storage::Store::open(options, metrics).unwrap(),
        )
    }

    fn account(pipeline: &str) -> Account {
        Account {
            pipeline: pipeline.into(),
            provider: "openai".into(),
            model: "m".into(),
        }
    }

    fn usd(text: &str) -> Nanos {
        Nanos::parse_usd(text).unwrap()
    }

    fn limits(daily: &str) -> Limits {
        Limits {
            daily: Some(usd(daily)),
            auto_stop: true,
            alert_at: 0.8,
            ..Limits::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_concurrent_calls_never_overspend_and_every_affordable_call_is_made() {
        let (_dir, store) = store();
        let ledger = Ledger::open(store.clone(), limits("1.00"), Timestamp::now).unwrap();
        let (worst, real) = (usd("0.10"), usd("0.03"));
        let made = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..50)
            .map(|n| {
                let (ledger, made) = (ledger.clone(), made.clone());
                tokio::spawn(async move {
                    let reservation = ledger.reserve(&account("p"), worst).await?;
                    made.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1 + n % 7)).await;
                    reservation.settle(real);
                    Ok::<_, BudgetError>(())
                })
            })
            .collect();
        let mut refused = 0;
        for call in calls {
            if let Err(BudgetError::Exhausted { .. }) = call.await.unwrap() {
                refused += 1;
            }
        }
        // A call fits while settled spend + its worst case ≤ $1.00: 30 calls settle $0.90,
        // the 31st fits exactly ($0.90 + $0.10), the 32nd would not ($0.93 + $0.10).
        assert_eq!(made.load(Ordering::Relaxed), 31);
        assert_eq!(refused, 19);
        let today = ledger.today();
        assert_eq!(today.spent["p"], usd("0.93"));
        assert!(today.reserved.is_empty(), "no reservation leaked");
        assert!(today.spent["p"] <= usd("1.00"));
    }

    #[tokio::test]
    async fn a_failed_call_releases_and_a_dropped_reservation_is_released() {
        let (_dir, store) = store();
        let ledger = Ledger::open(store.clone(), limits("0.25"), Timestamp::now).unwrap();
        let first = ledger.reserve(&account("p"), usd("0.20")).await.unwrap();
        first.release();
        let second = ledger.reserve(&account("p"), usd("0.20")).await.unwrap();
        drop(second); // a cancelled call
        let third = ledger.reserve(&account("p"), usd("0.20")).await.unwrap();
        third.settle(usd("0.20"));
        let refused = ledger.reserve(&account("p"), usd("0.10")).await;
        assert!(
            matches!(refused, Err(BudgetError::Exhausted { .. })),
            "{refused:?}"
        );
        assert_eq!(ledger.today().spent["p"], usd("0.20"));
        assert!(store.ledger().unwrap().open.is_empty());
    }

    #[tokio::test]
    async fn spend_and_calls_in_flight_survive_a_restart() {
        let (_dir, store) = store();
        let ledger = Ledger::open(store.clone(), limits("1.00"), Timestamp::now).unwrap();
        ledger
            .reserve(&account("p"), usd("0.30"))
            .await
            .unwrap()
            .settle(usd("0.10"));
        // In flight when the process dies: neither settled nor released.
        std::mem::forget(ledger.reserve(&account("p"), usd("0.40")).await.unwrap());
        drop(ledger);
        let reopened = Ledger::open(store.clone(), limits("1.00"), Timestamp::now).unwrap();
        // Counted at its reservation: 0.10 + 0.40.
        assert_eq!(reopened.today().spent["p"], usd("0.50"));
        assert!(store.ledger().unwrap().open.is_empty());
        let refused = reopened.reserve(&account("p"), usd("0.60")).await;
        assert!(refused.is_err(), "0.50 + 0.60 > 1.00");
        assert!(reopened.reserve(&account("p"), usd("0.50")).await.is_ok());
    }

    #[tokio::test]
    async fn the_day_rolls_over_at_utc_midnight_and_pipelines_have_their_own_budgets() {
        let (_dir, store) = store();
        NOW.store(1_767_225_600_000 + DAY_MS - 1_000, Ordering::Relaxed); // 23:59:59
        let mut limits = limits("1.00");
        limits.per_pipeline.insert("cheap".into(), usd("0.10"));
        let ledger = Ledger::open(store, limits, clock).unwrap();
        ledger
            .reserve(&account("cheap"), usd("0.05"))
            .await
            .unwrap()
            .settle(usd("0.05"));
        let late = ledger
            .reserve(&account("cheap"), usd("0.05"))
            .await
            .unwrap();
        let refused = ledger.reserve(&account("cheap"), usd("0.06")).await;
        assert!(
            refused.is_err(),
            "the pipeline's budget: 0.05 + 0.06 > 0.10"
        );
        assert!(
            ledger.reserve(&account("other"), usd("0.50")).await.is_ok(),
            "only the node's"
        );
        NOW.store(1_767_225_600_000 + DAY_MS, Ordering::Relaxed); // midnight
        // A call reserved yesterday is charged to yesterday, even settled today.
        late.settle(usd("0.05"));
        let today = ledger.today();
        assert_eq!(today.day, 20_455);
        assert!(today.spent.is_empty());
        assert!(
            ledger.reserve(&account("cheap"), usd("0.10")).await.is_ok(),
            "a new day"
        );
        assert_eq!(
            ledger.history().get(&(20_454, account("cheap"))),
            Some(&usd("0.10"))
        );
    }

    #[tokio::test]
    async fn without_auto_stop_a_budget_only_warns() {
        let (_dir, store) = store();
        let mut limits = limits("0.10");
        limits.auto_stop = false;
        let ledger = Ledger::open(store, limits, Timestamp::now).unwrap();
        for _ in 0..3 {
            ledger
                .reserve(&account("p"), usd("0.08"))
                .await
                .unwrap()
                .settle(usd("0.08"));
        }
        assert_eq!(ledger.today().spent["p"], usd("0.24"));
    }
}
