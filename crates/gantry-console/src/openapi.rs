//! The OpenAPI 3 description of the API, built from one table of endpoints
//! (the same table the API tests walk, so a route cannot go undocumented).

use axum::Json;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy)]
pub enum Permission {
    /// No login needed.
    Public,
    /// Any logged-in identity.
    LoggedIn,
    /// `subscribe` on the namespace paths the request names (per value).
    Subscribe,
    /// `subscribe` on `$SYS/#` (broker statistics).
    Sys,
    /// `admin` on an `$admin/…` resource.
    Admin(&'static str),
}

impl Permission {
    fn text(self) -> String {
        match self {
            Permission::Public => "none".into(),
            Permission::LoggedIn => "any logged-in identity".into(),
            Permission::Subscribe => {
                "subscribe permission on the paths asked for (values the caller may not read are left out; naming one exactly is 403)".into()
            }
            Permission::Sys => "subscribe on `$SYS/#`".into(),
            Permission::Admin(r) => format!("admin on `{r}`"),
        }
    }
}

/// One query parameter.
pub struct Param {
    pub name: &'static str,
    pub required: bool,
    pub description: &'static str,
    /// `string`, `integer`, `boolean`; `array` for a repeated parameter.
    pub kind: &'static str,
}

const fn p(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        required: false,
        description,
        kind: "string",
    }
}

const fn req(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        required: true,
        description,
        kind: "string",
    }
}

const fn int(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        required: false,
        description,
        kind: "integer",
    }
}

/// One endpoint.
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub permission: Permission,
    pub params: &'static [Param],
    /// The answer's content type when not JSON.
    pub produces: Option<&'static str>,
}

const TIME: &str = "RFC 3339, Unix milliseconds, `now`, or relative (`-15m`, `-2h`, `-7d`)";
const PERIOD: &str = "current-shift (default), last-shift, shift:DATE/NAME, today, yesterday, day:DATE, week, last-week or FROM..TO";

/// Every endpoint the console serves.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "post",
        path: "/api/v1/login",
        tag: "session",
        summary: "Log in with a user name and password (the MQTT identities); sets the session cookie and returns a bearer token.",
        permission: Permission::Public,
        params: &[],
        produces: None,
    },
    Endpoint {
        method: "post",
        path: "/api/v1/logout",
        tag: "session",
        summary: "End the session.",
        permission: Permission::Public,
        params: &[],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/me",
        tag: "session",
        summary: "The logged-in identity, its roles and what it may use.",
        permission: Permission::LoggedIn,
        params: &[],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/namespace",
        tag: "namespace",
        summary: "Children of a namespace path, paged, with live value, quality, age and contract.",
        permission: Permission::Subscribe,
        params: &[
            p("path", "The parent path; empty for the enterprises."),
            int(
                "limit",
                "At most this many children (default 200, max 1000).",
            ),
            p(
                "after",
                "Continue after this child name (`next_after` of the previous page).",
            ),
        ],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/namespace/search",
        tag: "namespace",
        summary: "Paths containing every word of the query.",
        permission: Permission::Subscribe,
        params: &[
            req("q", "Words, case-insensitive."),
            int("limit", "At most this many results (default 50, max 500)."),
        ],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/tag",
        tag: "namespace",
        summary: "One tag: live value, contract, source, equipment, last dead letter, KPI unit.",
        permission: Permission::Subscribe,
        params: &[req("path", "The tag's topic.")],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/history/raw",
        tag: "history",
        summary: "Stored values in a range.",
        permission: Permission::Subscribe,
        params: &[
            req("path", "A topic or an MQTT filter."),
            p("from", TIME),
            p("to", TIME),
            int(
                "limit",
                "At most this many values per series (default 10000, max 100000).",
            ),
        ],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/history/aggregate",
        tag: "history",
        summary: "Aggregates per bucket (min, max, avg, twa, first, last, count, time-in-state).",
        permission: Permission::Subscribe,
        params: &[
            req("path", "A topic or an MQTT filter."),
            p("from", TIME),
            p("to", TIME),
            p("bucket", "A width (`5m`) or `auto`."),
            p("agg", "Comma-separated aggregates (default min,max,avg)."),
            int(
                "max_buckets",
                "With bucket=auto: about this many buckets (default 600).",
            ),
        ],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/history/snapshot",
        tag: "history",
        summary: "The value in force of every matching series at one instant.",
        permission: Permission::Subscribe,
        params: &[req("path", "A topic or an MQTT filter."), p("at", TIME)],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/kpi/units",
        tag: "kpi",
        summary: "Work units and the paths KPIs are computed for (units, lines, areas, sites).",
        permission: Permission::Subscribe,
        params: &[],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/kpi",
        tag: "kpi",
        summary: "ISO 22400 KPIs of a unit or roll-up over a period, with elements and inputs.",
        permission: Permission::Subscribe,
        params: &[
            req("path", "A work unit, line, area or site."),
            p("period", PERIOD),
        ],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/kpi/explain",
        tag: "kpi",
        summary: "One KPI explained: formula, inputs, intervals and downtime by reason.",
        permission: Permission::Subscribe,
        params: &[
            req("path", "A work unit, line, area or site."),
            p(
                "kpi",
                "oee (default), availability, effectiveness, quality, throughput, scrap_ratio, technical_efficiency, mtbf, mttr, energy_per_good_unit",
            ),
            p("period", PERIOD),
        ],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/dead-letters",
        tag: "operations",
        summary: "The last dead letter of every topic, newest first, with the contract statistics.",
        permission: Permission::Subscribe,
        params: &[
            int("limit", "At most this many (default 200)."),
            p("path", "Only topics at or below this path."),
        ],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/connectors",
        tag: "operations",
        summary: "Connector health as each connector publishes it.",
        permission: Permission::Subscribe,
        params: &[],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/broker",
        tag: "operations",
        summary: "Broker, historian, contract, audit and console statistics.",
        permission: Permission::Sys,
        params: &[],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/clients",
        tag: "operations",
        summary: "MQTT clients and sessions.",
        permission: Permission::Sys,
        params: &[],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/users",
        tag: "administration",
        summary: "Identities (without password hashes).",
        permission: Permission::Admin("$admin/users"),
        params: &[],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/roles",
        tag: "administration",
        summary: "Built-in and site roles with their permissions.",
        permission: Permission::Admin("$admin/roles"),
        params: &[],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/audit",
        tag: "administration",
        summary: "The audit log, newest first, and the verification of its hash chain.",
        permission: Permission::Admin("$admin/audit"),
        params: &[
            int(
                "limit",
                "At most this many records (default 200, max 5000).",
            ),
            p(
                "category",
                "Only this category (authentication, authorization, command, config, …).",
            ),
            Param {
                name: "verify",
                required: false,
                description: "Verify the chain (default true).",
                kind: "boolean",
            },
        ],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/api/v1/live",
        tag: "live",
        summary: "Server-Sent Events: changes at and below the watched paths, coalesced per interval.",
        permission: Permission::Subscribe,
        params: &[Param {
            name: "path",
            required: true,
            description: "A path to watch; repeat for up to 16.",
            kind: "array",
        }],
        produces: Some("text/event-stream"),
    },
    Endpoint {
        method: "get",
        path: "/metrics",
        tag: "operations",
        summary: "Prometheus metrics.",
        permission: Permission::Sys,
        params: &[],
        produces: Some("text/plain"),
    },
    Endpoint {
        method: "get",
        path: "/api/v1/openapi.json",
        tag: "session",
        summary: "This document.",
        permission: Permission::Public,
        params: &[],
        produces: None,
    },
    Endpoint {
        method: "get",
        path: "/healthz",
        tag: "operations",
        summary: "Liveness: `ok` while the console serves.",
        permission: Permission::Public,
        params: &[],
        produces: Some("text/plain"),
    },
];

fn error_response(description: &str) -> serde_json::Value {
    serde_json::json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

/// The whole document.
pub fn document() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for e in ENDPOINTS {
        let parameters: Vec<serde_json::Value> = e
            .params
            .iter()
            .map(|p| {
                let schema = if p.kind == "array" {
                    serde_json::json!({"type": "array", "items": {"type": "string"}})
                } else {
                    serde_json::json!({"type": p.kind})
                };
                let mut param = serde_json::json!({
                    "name": p.name, "in": "query", "required": p.required,
                    "description": p.description, "schema": schema,
                });
                if p.kind == "array" {
                    param["style"] = "form".into();
                    param["explode"] = true.into();
                }
                param
            })
            .collect();
        let mut parameters = parameters;
        if e.path.contains("{name}") {
            parameters.push(serde_json::json!({
                "name": "name", "in": "path", "required": true,
                "description": "The identity's name.", "schema": {"type": "string"},
            }));
        }
        let content = match e.produces {
            Some(t) => serde_json::json!({ t: {"schema": {"type": "string"}} }),
            None => serde_json::json!({"application/json": {"schema": {"type": "object"}}}),
        };
        let mut responses = serde_json::Map::new();
        let ok = if e.path == "/api/v1/logout" {
            "204"
        } else {
            "200"
        };
        responses.insert(
            ok.into(),
            serde_json::json!({"description": "OK", "content": content}),
        );
        responses.insert(
            "400".into(),
            error_response("Bad request: the message names the parameter."),
        );
        if !matches!(e.permission, Permission::Public) || e.path == "/api/v1/login" {
            responses.insert(
                "401".into(),
                error_response("Not logged in, or the session expired."),
            );
        }
        if matches!(
            e.permission,
            Permission::Subscribe | Permission::Sys | Permission::Admin(_)
        ) {
            responses.insert(
                "403".into(),
                error_response("The identity lacks the permission; the message names it."),
            );
        }
        let mut op = serde_json::json!({
            "tags": [e.tag],
            "summary": e.summary,
            "description": format!("Permission: {}.", e.permission.text()),
            "operationId": format!("{}_{}", e.method, e.path.trim_start_matches('/').replace(['/', '-', '.'], "_")),
            "parameters": parameters,
            "responses": responses,
        });
        if matches!(e.permission, Permission::Public) {
            op["security"] = serde_json::json!([]);
        }
        if e.path.ends_with("/roles") && e.method == "post" {
            op["requestBody"] = serde_json::json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RoleChange"}}},
            });
        }
        if e.path == "/api/v1/login" {
            op["requestBody"] = serde_json::json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Login"}}},
            });
            op["responses"]["429"] =
                error_response("Too many failed logins from this address: retry later.");
        }
        let entry = paths
            .entry(e.path.to_owned())
            .or_insert_with(|| serde_json::json!({}));
        entry[e.method] = op;
    }
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Gantry API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The Unified Namespace of one plant: browse the live namespace, query the historian, read KPIs with their explanations, dead letters, connector and broker health, clients, identities and the audit log. Log in with the MQTT identities; every call is checked against the same roles and ACLs. See docs/api.md.",
        },
        "servers": [{"url": "/"}],
        "security": [{"session": []}, {"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": crate::auth::COOKIE_NAME},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["status", "code", "message"],
                        "properties": {
                            "status": {"type": "integer"},
                            "code": {"type": "string", "enum": ["bad_request", "unauthorized", "forbidden", "not_found", "method_not_allowed", "too_many_requests", "unavailable", "internal"]},
                            "message": {"type": "string"},
                        },
                    }},
                },
                "RoleChange": {
                    "type": "object",
                    "properties": {"grant": {"type": "string"}, "revoke": {"type": "string"}},
                },
                "Login": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {"username": {"type": "string"}, "password": {"type": "string", "format": "password"}},
                },
                "Live": {
                    "type": "object",
                    "properties": {
                        "value": {},
                        "quality": {"type": "string", "enum": ["good", "uncertain", "bad"]},
                        "timestamp_ms": {"type": "integer", "nullable": true},
                        "received_ms": {"type": "integer"},
                        "age_ms": {"type": "integer"},
                        "stale": {"type": "boolean"},
                        "retained": {"type": "boolean"},
                    },
                },
            },
        },
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Json<serde_json::Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_is_in_the_document_once() {
        let doc = document();
        let paths = doc["paths"].as_object().map_or(0, |p| {
            p.values()
                .map(|v| v.as_object().map_or(0, |o| o.len()))
                .sum()
        });
        assert_eq!(paths, ENDPOINTS.len());
        assert_eq!(
            doc["paths"]["/api/v1/login"]["post"]["security"],
            serde_json::json!([])
        );
        assert!(doc["paths"]["/api/v1/users"]["get"]["responses"]["403"].is_object());
    }
}
