//! The console's files, compiled into the binary: no front-end build step
//! and nothing to install next to Gantry.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

fn file(body: &'static str, content_type: &'static str, cache: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// `GET /`.
pub async fn index() -> Response {
    file(INDEX_HTML, "text/html; charset=utf-8", "no-cache")
}

/// `GET /assets/{name}`.
pub async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match name.as_str() {
        "app.js" => file(APP_JS, "text/javascript; charset=utf-8", "no-cache"),
        "app.css" => file(APP_CSS, "text/css; charset=utf-8", "no-cache"),
        "favicon.svg" => file(FAVICON_SVG, "image/svg+xml", "max-age=86400"),
        _ => crate::error::ApiError::NotFound(format!("no console file {name:?}")).into_response(),
    }
}
