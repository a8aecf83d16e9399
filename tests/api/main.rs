//! Integration tests: the proxy on a real port, a mock upstream OAuth
//! provider on another, and HTTP between them. One binary (one link).

mod helpers;
mod mock_upstream;

mod authorize;
mod discovery;
mod expiry;
mod flows;
mod register;
mod service;
mod token;
mod upstream_errors;
