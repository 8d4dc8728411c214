//! What the `ai` and `embed` stages share: the node's gateway, `concurrency`, `when:` and
//! templates rendered from an event, and what a call that cannot be made does to the event.

use std::sync::Arc;

use colloquium_config::ConfigError;
use colloquium_event::{Event, Reason};
use colloquium_pipeline::stage::with_data;
use colloquium_pipeline::{BuildContext, CallResult, Failed, StageError};
use colloquium_router::Predicate;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

use crate::gateway::{Gateway, GatewayError};

/// Most calls a stage may keep in flight.
const MAX_CONCURRENCY: usize = 1024;

/// What an event does when no provider can answer or the budget is spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// Go on without the stage's result.
    #[default]
    Pass,
    /// Fail with `provider_unavailable` or `budget_exhausted` (replayable from the DLQ).
    Dlq,
}

/// The node's gateway, or why stage `kind` cannot be built without one.
pub(crate) fn gateway(cx: &BuildContext<'_>, kind: &str) -> Result<Arc<Gateway>, ConfigError> {
    cx.registry.service::<Gateway>().ok_or_else(|| {
        ConfigError::new(
            cx.at.clone(),
            format!("an `{kind}` stage needs a provider: add one under `ai.providers`"),
        )
    })
}

/// `concurrency`, checked.
pub(crate) fn concurrency(cx: &BuildContext<'_>, n: usize) -> Result<usize, ConfigError> {
    if n == 0 || n > MAX_CONCURRENCY {
        return Err(ConfigError::new(
            cx.key("concurrency"),
            format!("must be within 1–{MAX_CONCURRENCY}"),
        ));
    }
    Ok(n)
}

/// A stage's `when:` and its templates, compiled once.
pub(crate) struct Templates {
    when: Option<Predicate>,
    env: minijinja::Environment<'static>,
    pipeline: String,
}

impl Templates {
    /// Compiles `when` and the templates `(option name, source)`; errors at their key paths.
    pub(crate) fn build(
        cx: &BuildContext<'_>,
        when: Option<&Value>,
        sources: Vec<(&'static str, String)>,
    ) -> Result<Templates, ConfigError> {
        let when = when
            .map(|w| Predicate::compile(w, &cx.key("when"), cx.scripts))
            .transpose()?;
        let mut env = minijinja::Environment::new();
        for (name, source) in sources {
            env.add_template_owned(name, source)
                .map_err(|e| ConfigError::new(cx.key(name), format!("not a template: {e}")))?;
        }
        Ok(Templates {
            when,
            env,
            pipeline: cx.pipeline.to_string(),
        })
    }

    /// `Ok(None)` when `when:` is false for `event`; else the templates `names` rendered from
    /// it, in order: over `event` (its data), `metadata` (as scripts see it) and `id`.
    pub(crate) fn render(
        &self,
        event: &mut Event,
        names: &[&str],
    ) -> Result<Option<Vec<String>>, StageError> {
        if let Some(when) = &self.when
            && !with_data(event, &self.pipeline, |data, meta| when.matches(data, meta))?
        {
            return Ok(None);
        }
        let context = minijinja::context! {
            event => minijinja::Value::from_serialize(&event.data),
            metadata => minijinja::Value::from_serialize(event.script_metadata(&self.pipeline)),
            id => event.id.to_string(),
        };
        names
            .iter()
            .map(|name| {
                self.env
                    .get_template(name)
                    .and_then(|t| t.render(&context))
                    .map_err(|e| StageError::BadValue(format!("the {name} template failed: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// A call's result, already known.
pub(crate) fn ready(result: CallResult) -> BoxFuture<'static, CallResult> {
    Box::pin(std::future::ready(result))
}

/// What `error` (no answer) does to `event` under `policy`. A request the provider refused is
/// about this event: never passed over silently.
pub(crate) fn unavailable(event: Event, error: GatewayError, policy: OnUnavailable) -> CallResult {
    let reason = match &error {
        GatewayError::Budget(_) => Reason::BudgetExhausted,
        GatewayError::Unavailable(_) | GatewayError::Refused(_) => Reason::ProviderUnavailable,
    };
    if policy == OnUnavailable::Pass && !matches!(error, GatewayError::Refused(_)) {
        return Ok(vec![event]);
    }
    Err(Failed::new(
        StageError::External {
            reason,
            message: error.to_string(),
        },
        event,
    ))
}
