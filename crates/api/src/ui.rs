//! The web dashboard: `GET /` and its assets at `GET /ui/{file}`, embedded in the binary
//! (`crates/api/ui/`, uPlot vendored there from npm by `scripts/vendor-ui.sh`): nothing is
//! fetched from elsewhere at run time, in debug builds too (`debug-embed`: without it a debug
//! binary reads them from the checkout it was built in, and serves 404 once that moves). The page itself is open (it holds no data); it reads
//! the node through the API with the token the user gives it, as any client does.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use crate::ApiError;

#[derive(RustEmbed)]
#[folder = "ui/"]
#[exclude = "package*.json"]
struct Assets;

/// Scripts, styles and data only from this node; the page may not be framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `GET /`: the dashboard.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, description = "The web dashboard", content_type = "text/html", body = String),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag")))]
pub async fn index(headers: HeaderMap) -> Result<Response, ApiError> {
    asset("index.html", &headers)
}

/// `GET /ui/{file}`: one of the dashboard's assets.
#[utoipa::path(get, path = "/ui/{file}", tag = "dashboard",
    params(("file" = String, Path, description = "The asset's name, e.g. `app.js`")),
    responses((status = 200, description = "The asset", content_type = "text/plain", body = String),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
        (status = 404, description = "No such asset", body = crate::openapi::ErrorBody)))]
pub async fn file(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    asset(&file, &headers)
}

fn asset(name: &str, request: &HeaderMap) -> Result<Response, ApiError> {
    let asset =
        Assets::get(name).ok_or_else(|| ApiError::NoSuch(format!("dashboard file `{name}`")))?;
    let etag = format!("\"{}\"", hex(&asset.metadata.sha256_hash()[..12]));
    let mut headers = HeaderMap::new();
    // Revalidated on every load (a node upgrade changes them), answered 304 when unchanged.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    let content_type = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            "text/html; charset=utf-8"
        }
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "text/plain; charset=utf-8",
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let unchanged = (request.get(header::IF_NONE_MATCH))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    Ok((headers, asset.data.into_owned()).into_response())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_embedded_and_nothing_else_is_needed() {
        let index = Assets::get("index.html").expect("index.html embedded");
        let html = String::from_utf8_lossy(&index.data);
        let mut loaded = 0;
        for part in html.split(['"', '\'']) {
            if let Some(file) = part.strip_prefix("/ui/") {
                assert!(
                    Assets::get(file).is_some(),
                    "{file} is loaded but not embedded"
                );
                loaded += 1;
            }
            assert!(
                !part.starts_with("http://")
                    && !part.starts_with("https://")
                    && !part.starts_with("//"),
                "the page loads {part} from elsewhere"
            );
        }
        assert_eq!(
            loaded, 5,
            "the icon, uPlot's script and style, the app's script and style"
        );
        assert!(
            Assets::get("package.json").is_none(),
            "build files are not served"
        );
    }
}
