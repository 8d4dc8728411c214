//! The route table: every route of both listeners and the scope it needs, in one place.
//!
//! Routers are built with utoipa-axum, which records every route it mounts in the OpenAPI
//! description ([`crate::openapi`]), so a test can prove that every mounted route is in
//! [`ROUTES`]; at run time the guard refuses a route that is not (`colloquium_security::guard`). Routes of HTTP sources (`POST /events` and named ones) are
//! added at start by [`table`], all `ingest`.

use axum::http::Method;
use colloquium_config::Scope;
use colloquium_security::{Access, RouteTable};

const READ: Access = Access::Needs(Scope::Read);
const ADMIN: Access = Access::Needs(Scope::Admin);

/// Each route (method, path pattern) of the API and admin listeners and what it needs.
pub const ROUTES: &[(Method, &str, Access)] = &[
    (Method::GET, "/health", Access::Open),
    (Method::GET, "/", Access::Open),
    (Method::GET, "/ui/{file}", Access::Open),
    (Method::GET, "/api/openapi.json", Access::Open),
    (Method::GET, "/metrics", READ),
    (Method::GET, "/api/overview", READ),
    (Method::GET, "/api/events", READ),
    (Method::GET, "/api/events/stream", READ),
    (Method::GET, "/api/tap", READ),
    (Method::GET, "/api/events/{id}", READ),
    (Method::GET, "/api/events/{id}/similar", READ),
    (Method::POST, "/api/events/similar", READ),
    (Method::GET, "/api/outputs", READ),
    (Method::GET, "/api/windows", READ),
    (Method::GET, "/api/results/{pipeline}/{stage}/{table}", READ),
    (Method::GET, "/api/anomalies", READ),
    (Method::GET, "/api/anomalies/high-score", READ),
    (Method::GET, "/api/anomalies/count", READ),
    (Method::GET, "/api/anomalies/{id}", READ),
    (Method::GET, "/api/users/{user}/baseline", READ),
    (Method::GET, "/api/dlq", READ),
    (Method::POST, "/api/dlq/replay", ADMIN),
    (Method::DELETE, "/api/dlq/{id}", ADMIN),
    (Method::POST, "/api/dlq/{id}/replay", ADMIN),
    (Method::GET, "/api/ai/costs", READ),
    (Method::GET, "/api/analyses/{id}", READ),
    (Method::GET, "/api/control", READ),
    (Method::POST, "/api/control", ADMIN),
    (Method::GET, "/admin/config", ADMIN),
    (Method::POST, "/admin/reload", ADMIN),
    (Method::POST, "/admin/backup", ADMIN),
    (Method::GET, "/admin/backup", ADMIN),
];

/// The route table of a node whose HTTP sources are at `ingest_paths` (each `POST`).
pub fn table<'a>(ingest_paths: impl IntoIterator<Item = &'a str>) -> RouteTable {
    let mut table = RouteTable::new(ROUTES);
    for path in ingest_paths {
        table.insert(Method::POST, path, Access::Needs(Scope::Ingest));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mounted route is in the table with a scope, and every table entry is mounted:
    /// a route added without a scope fails here.
    #[test]
    fn every_mounted_route_is_in_the_route_table_and_back() {
        let mut mounted = crate::openapi::mounted(crate::routes().get_openapi());
        mounted.extend(crate::openapi::mounted(
            crate::admin::routes().get_openapi(),
        ));
        let table = table([]);
        for (method, path) in &mounted {
            assert!(
                table.access(method, path).is_some(),
                "{method} {path} is mounted but has no scope in api::routes::ROUTES"
            );
        }
        for (method, path, _) in ROUTES {
            assert!(
                mounted.iter().any(|(m, p)| m == method && p == path),
                "{method} {path} is in the route table but not mounted"
            );
        }
        assert_eq!(mounted.len(), ROUTES.len(), "a route is mounted twice");
    }

    #[test]
    fn sources_are_ingest_and_head_is_get() {
        let table = table(["/events", "/hooks/github"]);
        assert_eq!(
            table.access(&Method::POST, "/hooks/github"),
            Some(Access::Needs(Scope::Ingest))
        );
        assert_eq!(table.access(&Method::HEAD, "/api/events"), Some(READ));
        assert_eq!(table.access(&Method::GET, "/hooks/github"), None);
    }
}
