//! The admin API under `/admin`, on the admin listener only.

use actix_web::web;

/// Mounts the admin API (on the admin listener's app).
pub fn configure(_cfg: &mut web::ServiceConfig) {}
