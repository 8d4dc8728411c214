//! `totals`: a stage that is not shipped, written as a newcomer would, to show that a stage's
//! queryable results need its own file and one registration line. It sums `/amount` per
//! `/account` and keeps each account's running total in its `totals` table (at the event's
//! time); events pass through unchanged.

use std::collections::HashMap;

use colloquium_config::ConfigError;
use colloquium_event::Event;
use colloquium_pipeline::{
    BuildContext, BuiltStage, Failed, ResultRow, Stage, StageConfig, StageContext, StageError,
};
use serde::{Deserialize, Serialize};

/// `{type: totals}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalsConfig {}

impl StageConfig for TotalsConfig {
    const KIND: &'static str = "totals";
    fn build(self, _cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        Ok(BuiltStage::sync(Totals::default()))
    }
}

#[derive(Default)]
struct Totals {
    sums: HashMap<String, f64>,
}

/// One row of the `totals` table.
#[derive(Serialize)]
struct Total<'a> {
    account: &'a str,
    total: f64,
}

impl Stage for Totals {
    fn process(&mut self, event: Event, cx: &mut StageContext<'_>) -> Result<(), Box<Failed>> {
        let account = event.data_pointer("/account").and_then(|v| v.as_str());
        let amount = event
            .data_pointer("/amount")
            .and_then(serde_json::Value::as_f64);
        let (Some(account), Some(amount)) = (account, amount) else {
            let error = StageError::BadValue("totals: needs /account and /amount".into());
            return Err(Failed::new(error, event));
        };
        let account = account.to_owned();
        let total = self.sums.entry(account.clone()).or_default();
        *total += amount;
        let row = ResultRow {
            key: account.clone(),
            at: i64::try_from(event.timestamp.as_millis()).unwrap_or(i64::MAX),
            id: None,
        };
        let kept = Total {
            account: &account,
            total: *total,
        };
        cx.keep_json("totals", row, &kept);
        cx.emit(event);
        Ok(())
    }
}
