//! Protocol logic with no web types: parameter newtypes, PKCE, redirect-URI
//! rules, scopes, resource indicators, JWTs and the metadata documents. Everything here is testable
//! without HTTP.

pub mod client;
pub mod client_assertion;
pub mod client_document;
pub mod jwt;
pub mod metadata;
pub mod pkce;
pub mod redirect_uri;
pub mod resource;
pub mod scope;
pub mod user_policy;

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
