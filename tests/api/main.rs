//! Integration tests: the proxy on a real port, a mock upstream OAuth
//! provider on another, and HTTP between them. One binary (one link).

mod backend_double;
mod document_host;
mod helpers;
mod mock_upstream;
mod redis_server;

mod admin_api;
mod admin_backfill;
mod admin_listener;
mod allowed_users;
mod audit_events;
mod audit_trail;
mod authorize;
mod browser_session;
mod cli;
mod client_address;
mod client_documents;
mod discovery;
mod document_consent;
mod expiry;
mod flows;
mod gateway;
mod jwks;
mod mcp_headers;
mod mcp_server;
mod metrics;
mod private_key_jwt;
mod readiness;
mod refresh_policy;
mod register;
mod request_id;
mod revocation;
mod service;
mod storage;
mod store_contract;
mod tls;
mod token;
mod tool_scopes;
mod upstream_errors;
