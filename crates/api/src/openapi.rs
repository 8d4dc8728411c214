//! The OpenAPI 3.1 description of every route, `GET /api/openapi.json`.
//!
//! It cannot drift from the router: the handlers carry `#[utoipa::path]` annotations and are
//! mounted through utoipa-axum, which builds the router and the description together. What the
//! annotations do not say is filled in here from the one route table
//! ([`crate::routes::ROUTES`]): each operation's security (the bearer scheme with its scope),
//! the guard's `401`/`403`/`429` on every scoped operation, the store's `500`/`503` on every
//! operation, and the HTTP sources' ingest operations (their paths come from the config).

use colloquium_security::{Access, RouteTable};
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, PathItem, Ref, RefOr, Required};
use utoipa::{PartialSchema, ToSchema};

/// The one error shape every refusal and failure is answered with.
#[derive(ToSchema)]
#[allow(dead_code)] // a description of what handlers build, never built itself
pub struct ErrorBody {
    /// What went wrong, for people.
    error: String,
    /// A stable, machine-readable cause (`bad_request`, `not_found`, `missing_token`, …).
    reason: String,
    /// The scope a `403` needs.
    scope: Option<String>,
}

/// A free-form JSON object: a stored record whose fields depend on the stage or model that
/// made it (an anomaly, an analysis, a profile, the control plane, the config).
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct Record(#[allow(dead_code)] serde_json::Value);

/// A stored event (its fields in `docs/events.md`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Event {
    /// Its id: a ULID, time-ordered.
    id: String,
    /// The posted JSON object.
    #[schema(value_type = Object)]
    data: serde_json::Value,
    /// Source, priority, topic, times.
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
}

macro_rules! page {
    ($name:ident, $field:ident, $item:ty, $what:literal) => {
        #[doc = concat!("A page of ", $what, ": pass `next_cursor` as `cursor` for the next.")]
        #[derive(ToSchema)]
        #[allow(dead_code)]
        pub struct $name {
            #[doc = concat!("The ", $what, ".")]
            $field: Vec<$item>,
            /// `null` on the last page.
            next_cursor: Option<String>,
        }
    };
}

page!(EventPage, events, Event, "events");
page!(OutputPage, outputs, Record, "outputs");
page!(WindowPage, windows, Record, "window results");
page!(ResultPage, results, Record, "result rows");
page!(AnomalyPage, anomalies, Record, "anomaly records");
page!(DeadLetterPage, dead_letters, Record, "dead letters");

/// `{"count": N}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Count {
    /// How many.
    count: u64,
}

/// `{"replaying": N}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReplayingMany {
    /// How many dead letters the pipelines were asked to replay.
    replaying: u64,
}

/// `{"replaying": "<id>"}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReplayingOne {
    /// The dead letter's id.
    replaying: String,
}

/// Similar-event search results.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Similar {
    /// The `embed` stage's pipeline.
    pipeline: String,
    /// The `embed` stage's id.
    stage: String,
    /// `exact` or `graph`.
    method: String,
    /// How many vectors were searched.
    searched: u64,
    /// Nearest first: `{id, similarity, event}`.
    similar: Vec<Record>,
}

/// AI spend (`GET /api/ai/costs`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Costs {
    /// Whether the node has AI providers.
    configured: bool,
    /// `pipeline`, `provider` or `model`.
    by: String,
    /// Spend per group.
    groups: Vec<Record>,
    /// Spend per UTC day.
    days: Vec<Record>,
    /// The total in US dollars.
    total_usd: f64,
}

/// `GET /health`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `healthy`, `degraded` or `unhealthy`.
    status: String,
    /// Each component's status and reasons (with the `read` scope, or without tokens).
    #[schema(value_type = Option<Object>)]
    components: Option<serde_json::Value>,
}

/// `{"accepted": N, "ids": [...]}`: the events are durable.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Accepted {
    /// How many events.
    accepted: u64,
    /// Their ids, in order.
    ids: Vec<String>,
}

/// Schemas of the parameters handlers take as text and check themselves (so that a `400` names
/// the parameter in our words): each says exactly what its handler accepts.
pub mod param {
    use utoipa::openapi::schema::{
        KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
    };

    /// An event id: a ULID, 26 Crockford base-32 digits (either case), the first `0`–`7`.
    pub fn event_id() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$"))
            .description(Some("An event id (a ULID)"))
            .build()
    }

    /// Epoch milliseconds as `millis` says, or an RFC 3339 date-time.
    fn millis_or_date_time(millis: ObjectBuilder, description: &str) -> Schema {
        let date_time = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)));
        OneOfBuilder::new()
            .item(millis.schema_type(Type::Integer))
            .item(date_time)
            .description(Some(description))
            .build()
            .into()
    }

    /// An ingest-time bound: epoch milliseconds, or RFC 3339 (a time before 1970 is the epoch).
    pub fn time() -> Schema {
        let millis = ObjectBuilder::new()
            .minimum(Some(0))
            .maximum(Some(colloquium_event::Timestamp::MAX.as_millis() as f64));
        millis_or_date_time(millis, "Epoch milliseconds, or RFC 3339")
    }

    /// A result row's time bound: epoch milliseconds (negative before 1970), or RFC 3339.
    pub fn row_time() -> Schema {
        let millis =
            ObjectBuilder::new().format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)));
        millis_or_date_time(
            millis,
            "Epoch milliseconds (negative before 1970), or RFC 3339",
        )
    }

    fn one_of(values: &[&str]) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values.iter().copied()))
            .build()
    }

    /// `asc` or `desc`.
    pub fn order() -> Object {
        one_of(&["asc", "desc"])
    }

    /// An event priority.
    pub fn priority() -> Object {
        let names = colloquium_event::Priority::ALL.map(|p| p.as_str());
        one_of(&names)
    }

    /// A dead letter's reason.
    pub fn dlq_reason() -> Object {
        let names: Vec<&str> = colloquium_event::Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .collect();
        one_of(&names)
    }

    /// A page cursor (a stored key in hexadecimal): the page goes on after it.
    pub fn cursor() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^([0-9a-fA-F]{2})*$"))
            .description(Some("The `next_cursor` of the previous page"))
            .build()
    }

    /// How AI spend is grouped.
    pub fn cost_grouping() -> Object {
        one_of(&["pipeline", "provider", "model"])
    }
}

const BEARER: &str = "bearer";

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .into()
}

/// Fills in what the annotations leave to the route table: security, the guard's and the
/// store's error responses, the ingest operations at `ingest_paths`, the error schemas.
pub fn complete<'a>(
    mut api: OpenApi,
    table: &RouteTable,
    ingest_paths: impl IntoIterator<Item = &'a str>,
) -> OpenApi {
    api.info.title = "colloquium".into();
    api.info.description = Some(
        "Ingest, query and operate a colloquium node. Every route but /health and \
         /api/openapi.json needs a bearer token with its scope when the node has tokens."
            .into(),
    );
    for path in ingest_paths {
        api.paths
            .add_path_operation(path, vec![HttpMethod::Post], ingest_operation());
    }
    let components = api.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        BEARER.into(),
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    for (name, schema) in [
        ("ErrorBody", ErrorBody::schema()),
        ("Record", Record::schema()),
        ("Accepted", Accepted::schema()),
    ] {
        components.schemas.entry(name.into()).or_insert(schema);
    }
    for (path, item) in api.paths.paths.iter_mut() {
        for (method, operation) in operations(item) {
            let access = table.access(&method, path);
            secure(operation, access);
            // Every `{id}` of a route is an event's (a dead letter's id is its event's).
            for parameter in operation.parameters.iter_mut().flatten() {
                if parameter.name == "id" && parameter.parameter_in == ParameterIn::Path {
                    parameter.schema = Some(param::event_id().into());
                }
            }
            // Handlers in different modules share names (`list`): ids from the route instead.
            operation.operation_id = Some(operation_id(&method, path));
        }
    }
    api
}

/// `get_api_events_id` for `GET /api/events/{id}`: unique, as the routes are.
fn operation_id(method: &axum::http::Method, path: &str) -> String {
    let mut id = method.as_str().to_ascii_lowercase();
    for part in path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
    {
        id.push('_');
        id.push_str(part);
    }
    id
}

/// Each operation of `item` with its method.
fn operations(item: &mut PathItem) -> Vec<(axum::http::Method, &mut Operation)> {
    use axum::http::Method;
    [
        (Method::GET, item.get.as_mut()),
        (Method::POST, item.post.as_mut()),
        (Method::PUT, item.put.as_mut()),
        (Method::PATCH, item.patch.as_mut()),
        (Method::DELETE, item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, o)| Some((m, o?)))
    .collect()
}

fn secure(operation: &mut Operation, access: Option<Access>) {
    let responses = &mut operation.responses.responses;
    match access {
        Some(Access::Needs(scope)) => {
            operation.security = Some(vec![SecurityRequirement::new(BEARER, [scope.as_str()])]);
            responses
                .entry("401".into())
                .or_insert_with(|| error_response("No bearer token, or not a valid one"));
            responses.entry("403".into()).or_insert_with(|| {
                error_response(&format!("The token lacks the `{}` scope", scope.as_str()))
            });
            responses.entry("429".into()).or_insert_with(|| {
                error_response("Too many failed authentications from this address")
            });
        }
        // Open to anyone: an empty requirement (a token is optional).
        Some(Access::Open) => operation.security = Some(vec![SecurityRequirement::default()]),
        // Not in the table: the guard refuses it (the route-table test fails first).
        None => {}
    }
    responses
        .entry("500".into())
        .or_insert_with(|| error_response("The store failed"));
    responses
        .entry("503".into())
        .or_insert_with(|| error_response("The store is closing, or a lane is full"));
}

/// `POST <path>` of an HTTP source.
fn ingest_operation() -> Operation {
    let json = ContentBuilder::new()
        .schema(Some(
            utoipa::openapi::schema::OneOfBuilder::new()
                .item(utoipa::openapi::ObjectBuilder::new())
                .item(
                    utoipa::openapi::schema::ArrayBuilder::new()
                        .items(utoipa::openapi::ObjectBuilder::new())
                        .min_items(Some(1)),
                ),
        ))
        .build();
    let ndjson = ContentBuilder::new().schema(Some(String::schema())).build();
    let text_param = |name: &str, schema: RefOr<utoipa::openapi::schema::Schema>| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .schema(Some(schema))
            .build()
    };
    OperationBuilder::new()
        .tags(Some(vec!["ingest".to_owned()]))
        .summary(Some(
            "Ingest events: an object, an array of objects, or NDJSON",
        ))
        .parameters(Some(vec![
            text_param("priority", param::priority().into()),
            text_param("topic", String::schema()),
        ]))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", json)
                .content("application/x-ndjson", ndjson)
                .required(Some(Required::True))
                .build(),
        ))
        .response(
            "202",
            ResponseBuilder::new().description("Durable").content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Accepted")))
                    .build(),
            ),
        )
        .response(
            "400",
            error_response("Not JSON objects, or a bad parameter"),
        )
        .response("413", error_response("Larger than server.max_body_size"))
        .response(
            "415",
            error_response("Not application/json or application/x-ndjson"),
        )
        .build()
}

/// Every route the description holds, for the route-table test.
pub fn mounted(api: &OpenApi) -> Vec<(axum::http::Method, String)> {
    let mut all = Vec::new();
    for (path, item) in &api.paths.paths {
        let mut item = item.clone();
        for (method, _) in operations(&mut item) {
            all.push((method, path.clone()));
        }
    }
    all
}
