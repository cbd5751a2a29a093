//! The browser editor (SPEC §8): the bundle built from `web/` is embedded in
//! the binary, so running the server needs no Node and no files beside it.
//! `/` and `/d/{doc}` get `index.html` (the page routes itself); the files
//! under `assets/` and `favicon.svg` are served at their own paths. Names carrying a content
//! hash (`app-3F2A9C1B.js`) are cached for a year; the rest are revalidated.
//!
//! `TANDEM_WEB_DIR` serves the bundle from a folder instead, for working on
//! the editor without rebuilding the server.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;
use crate::state::AppState;

#[derive(rust_embed::RustEmbed)]
#[folder = "../web/dist"]
struct Embedded;

/// Where the bundle's files come from.
#[derive(Debug, Clone)]
pub enum WebAssets {
    Embedded,
    Dir(PathBuf),
}

struct Asset {
    body: Cow<'static, [u8]>,
    /// Strong validator; `None` when read from a folder.
    etag: Option<String>,
}

impl WebAssets {
    fn get(&self, path: &str) -> Option<Asset> {
        match self {
            WebAssets::Embedded => Embedded::get(path).map(|file| Asset {
                etag: Some(format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]))),
                body: file.data,
            }),
            WebAssets::Dir(dir) => {
                let relative = Path::new(path);
                // Only plain names below the folder: no `..`, no absolute paths.
                if !relative
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))
                {
                    return None;
                }
                std::fs::read(dir.join(relative)).ok().map(|bytes| Asset {
                    body: Cow::Owned(bytes),
                    etag: None,
                })
            }
        }
    }
}

/// `GET /` and `GET /d/{doc}`: the single page.
pub async fn page(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    serve(&req, &state.web, "index.html")
}

/// `GET /assets/{file}` and `GET /favicon.svg`: the bundle's other files.
pub async fn file(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let path = req.path().trim_start_matches('/').to_owned();
    serve(&req, &state.web, &path)
}

fn serve(req: &HttpRequest, assets: &WebAssets, path: &str) -> Result<HttpResponse, ApiError> {
    let asset = assets.get(path).ok_or_else(|| {
        if path == "index.html" {
            tracing::error!(?assets, "the web bundle has no index.html");
        }
        ApiError::NotFound("no such route".into())
    })?;
    let cache = if is_hashed(path) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = HttpResponse::Ok();
    response
        .content_type(content_type(path))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if let Some(etag) = &asset.etag {
        let matches = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        if let Ok(value) = HeaderValue::from_str(etag) {
            response.insert_header((header::ETAG, value));
        }
        if matches {
            return Ok(response
                .status(actix_web::http::StatusCode::NOT_MODIFIED)
                .finish());
        }
    }
    Ok(response.body(asset.body.into_owned()))
}

/// `name-HASH.ext`, the hash being 8 or more capitals and digits, as
/// esbuild writes it.
fn is_hashed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.split('.').next().unwrap_or(name);
    stem.rsplit_once('-').is_some_and(|(_, hash)| {
        hash.len() >= 8
            && hash
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names() {
        assert!(is_hashed("assets/app-3F2A9C1B.js"));
        assert!(is_hashed("assets/editor-ABCDEFGH12.css"));
        assert!(!is_hashed("index.html"));
        assert!(!is_hashed("favicon.svg"));
        assert!(!is_hashed("assets/my-app.js"));
    }

    #[test]
    fn folder_paths_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.js"), "x").unwrap();
        let assets = WebAssets::Dir(dir.path().to_path_buf());
        assert!(assets.get("a.js").is_some());
        assert!(assets.get("../a.js").is_none());
        assert!(assets.get("/etc/passwd").is_none());
    }

    #[test]
    fn the_embedded_bundle_has_an_index() {
        assert!(WebAssets::Embedded.get("index.html").is_some());
    }
}
