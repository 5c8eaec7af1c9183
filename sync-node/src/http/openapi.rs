//! The API's OpenAPI 3.1 document (`GET /api/openapi.json`), built with utoipa from the access
//! table — the one list of every route, which the access test checks against the router's
//! source both ways — so a route cannot exist without being documented. And a reference page
//! (`GET /api/docs`): plain HTML rendered here, no script.
//!
//! Each operation gets its path parameters, its credential (public; any session or API key; a
//! session or a key with the named Immich permission or `all`; login sessions only; ML keys),
//! a JSON body where the method takes one (multipart for uploads), and Immich's error shape
//! `{statusCode, error, message}`. Request and response bodies are described as JSON objects:
//! their exact shapes are Immich's (its OpenAPI spec) where the route is Immich's.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Required,
    ResponseBuilder, ResponsesBuilder, Schema,
};

use crate::http::access::{Access, ACCESS};
use crate::http::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(reference_page))
}

fn method(m: &str) -> HttpMethod {
    match m {
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "DELETE" => HttpMethod::Delete,
        "PATCH" => HttpMethod::Patch,
        _ => HttpMethod::Get,
    }
}

/// The tag of a path: its first segment (`assets`, `albums`…; `tessera/x` → `tessera-x`).
pub fn tag_of(path: &str) -> String {
    let mut segs = path.trim_start_matches('/').split('/');
    match segs.next() {
        Some("tessera") => format!("tessera-{}", segs.next().unwrap_or("misc")),
        Some(s) => s.to_owned(),
        None => "misc".into(),
    }
}

fn access_text(a: Access) -> String {
    match a {
        Access::Public => "Public: no credential needed.".into(),
        Access::Signed => "Any signed-in session or API key of the user.".into(),
        Access::Perm(p) => format!("A session, or an API key with `{p}` (or `all`)."),
        Access::All => "A session, or an API key with `all`.".into(),
        Access::Ml => "An ML node's API key (`ml` permission).".into(),
        Access::Session => "A login session only (API keys are refused).".into(),
    }
}

fn any_object() -> ObjectBuilder {
    ObjectBuilder::new().description(Some("JSON"))
}

fn error_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .property(
            "statusCode",
            ObjectBuilder::new().schema_type(SchemaType::Type(Type::Integer)),
        )
        .property(
            "error",
            ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)),
        )
        .property(
            "message",
            ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)),
        )
        .required("message")
        .into()
}

/// The whole document.
pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    for (m, p, access) in ACCESS {
        let mut op = OperationBuilder::new()
            .operation_id(Some(format!(
                "{}{}",
                m.to_lowercase(),
                p.replace(['/', '-', '{', '}'], "_")
            )))
            .tag(tag_of(p))
            .summary(Some(format!("{m} /api{p}")))
            .description(Some(access_text(*access)));
        let mut rest = *p;
        while let Some(i) = rest.find('{') {
            let Some(j) = rest[i..].find('}') else { break };
            let name = &rest[i + 1..i + j];
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(
                        ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)),
                    )),
            );
            rest = &rest[i + j..];
        }
        if matches!(*m, "POST" | "PUT" | "PATCH" | "DELETE") {
            let content = if *p == "/assets" && *m == "POST" {
                ("multipart/form-data", any_object())
            } else if p.starts_with("/tessera/") && p.ends_with("/sync") {
                ("application/octet-stream", ObjectBuilder::new())
            } else {
                ("application/json", any_object())
            };
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        content.0,
                        ContentBuilder::new().schema(Some(content.1)).build(),
                    )
                    .required(Some(Required::False))
                    .build(),
            ));
        }
        let ok_type = match *p {
            "/sync/stream" => "application/jsonlines+json",
            "/docs" => "text/html",
            _ => "application/json",
        };
        op = op.responses(
            ResponsesBuilder::new()
                .response(
                    "2XX",
                    ResponseBuilder::new()
                        .description("Success")
                        .content(ok_type, ContentBuilder::new().build()),
                )
                .response(
                    "default",
                    ResponseBuilder::new()
                        .description("An error in Immich's shape")
                        .content(
                            "application/json",
                            ContentBuilder::new().schema(Some(error_schema())).build(),
                        ),
                )
                .build(),
        );
        let security: Vec<SecurityRequirement> = match access {
            Access::Public => vec![SecurityRequirement::default()],
            Access::Session => vec![
                SecurityRequirement::new("bearer", Vec::<String>::new()),
                SecurityRequirement::new("cookie", Vec::<String>::new()),
            ],
            Access::Ml => vec![SecurityRequirement::new("api_key", Vec::<String>::new())],
            _ => vec![
                SecurityRequirement::new("bearer", Vec::<String>::new()),
                SecurityRequirement::new("cookie", Vec::<String>::new()),
                SecurityRequirement::new("api_key", Vec::<String>::new()),
            ],
        };
        op = op.securities(Some(security));
        paths.add_path_operation(format!("/api{p}"), vec![method(m)], op.build());
    }
    let components = ComponentsBuilder::new()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        )
        .security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        )
        .security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("immich_access_token"))),
        )
        .schema("Error", error_schema())
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Tessera sync node")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Tessera's HTTP API: Immich's API (3.2.2) where Immich has the operation, \
                     Tessera's own under /api/tessera. Ids are BLAKE3/hex.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The reference page: every operation by tag, with its credential.
async fn reference_page() -> impl IntoResponse {
    let mut by_tag: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (m, p, access) in ACCESS {
        by_tag.entry(tag_of(p)).or_default().push(format!(
            "<tr><td class=m>{m}</td><td><code>/api{}</code></td><td>{}</td></tr>",
            esc(p),
            esc(&access_text(*access))
        ));
    }
    let mut body = String::new();
    for (tag, rows) in &by_tag {
        body.push_str(&format!(
            "<h2 id=\"{t}\">{t}</h2><table>{}</table>",
            rows.join(""),
            t = esc(tag)
        ));
    }
    let toc: Vec<String> = by_tag
        .keys()
        .map(|t| format!("<a href=\"#{t}\">{t}</a>", t = esc(t)))
        .collect();
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Tessera API</title>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\"><style>\
         body{{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1000px;padding:20px;\
         background:#0f1114;color:#e8eaed}}a{{color:#7aa2f7;margin-right:10px}}\
         table{{border-collapse:collapse;width:100%}}td{{padding:4px 8px;border-bottom:1px solid #2a2e35;\
         vertical-align:top}}td.m{{font-weight:600;width:70px}}code{{font-size:13px}}h2{{margin-top:28px}}\
         </style></head><body><h1>Tessera API</h1><p>{n} operations. Machine-readable: \
         <a href=\"/api/openapi.json\">/api/openapi.json</a> (OpenAPI 3.1). Bodies follow Immich's \
         API where the operation is Immich's.</p><p>{}</p>{body}</body></html>",
        toc.join(" "),
        n = ACCESS.len()
    );
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'",
        )],
        Html(html),
    )
}
