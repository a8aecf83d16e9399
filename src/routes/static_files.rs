//! Static assets for the pages, served from `OAUTH_PROXY_STATIC_DIR` so
//! operators can restyle the consent screen without a rebuild; the built-in
//! stylesheet is used when the directory lacks it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const BUILT_IN_CSS: &str = include_str!("../../static/consent.css");
/// Files larger than this are not loaded (assets, not downloads).
const MAX_ASSET_BYTES: u64 = 2 * 1024 * 1024;

/// Assets loaded once at start-up.
#[derive(Clone, Default)]
pub struct StaticAssets {
    files: Arc<HashMap<String, (&'static str, Vec<u8>)>>,
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or_default() {
        "css" => "text/css; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

impl StaticAssets {
    /// Loads the regular files directly in `dir` (no sub-directories, so no
    /// path can escape it).
    pub fn load(dir: &Path) -> StaticAssets {
        let mut files = HashMap::new();
        files.insert(
            "consent.css".to_string(),
            (content_type("consent.css"), BUILT_IN_CSS.as_bytes().to_vec()),
        );
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let Ok(meta) = entry.metadata() else { continue };
                    let name = entry.file_name().to_string_lossy().to_string();
                    if !meta.is_file() || meta.len() > MAX_ASSET_BYTES || name.starts_with('.') {
                        continue;
                    }
                    if let Ok(bytes) = std::fs::read(entry.path()) {
                        files.insert(name.clone(), (content_type(&name), bytes));
                    }
                }
            }
            Err(_) => log::info!(
                "static directory {} not found; using the built-in stylesheet",
                dir.display()
            ),
        }
        StaticAssets { files: Arc::new(files) }
    }
}

pub async fn serve(name: web::Path<String>, assets: web::Data<StaticAssets>) -> HttpResponse {
    match assets.files.get(name.as_str()) {
        Some((content_type, bytes)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, *content_type))
            .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(bytes.clone()),
        None => HttpResponse::NotFound().finish(),
    }
}
