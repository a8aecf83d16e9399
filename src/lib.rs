//! mcp-oauth-proxy: an OAuth 2.1 authorization server that sits in front of an
//! upstream OAuth provider and an MCP server.
//!
//! MCP clients register dynamically with the proxy, the user approves them on a
//! consent page, signs in upstream with the proxy's single pre-registered
//! client, and receives either the proxy's own short-lived JWTs (token swap, the
//! default) or the upstream tokens themselves (pass-through).
//!
//! The crate is both the service binary and a library: [`OAuthProxy`] holds the
//! protocol methods, [`startup::configure_routes`] mounts every endpoint on an
//! actix-web `App`.
#![forbid(unsafe_code)]

pub mod actors;
pub mod audit;
pub mod cli;
pub mod client_address;
pub mod client_documents;
pub mod config;
pub mod crypto;
pub mod error;
pub mod gateway;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod proxy;
pub mod rate_limit;
pub mod records;
pub mod routes;
pub mod startup;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod views;

pub use config::Config;
pub use error::Error;
pub use proxy::OAuthProxy;
