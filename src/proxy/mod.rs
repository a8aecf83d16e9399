//! [`OAuthProxy`]: the library face of the service, with the methods of the
//! original `OAuthProxy` class. The HTTP handlers in `routes` parse requests,
//! call these methods and turn the outcomes into responses.
//!
//! One file per flow: `start` (start-up, the store actors and their
//! per-thread replicas, shutdown), `registration`, `authorize` (authorize and
//! consent), `callback`, `token` (client authentication and the grants), and
//! `resource` for the resource-server side (bearer checks for the MCP
//! endpoint, revocation, introspection). `types` holds the request and
//! response types they share.

pub mod admin;
mod authorize;
mod callback;
mod client_assertions;
mod memo;
mod readiness;
mod registration;
mod resource;
mod start;
mod token;
mod types;
pub mod upstream_refresh;

pub use readiness::NotReady;
pub use resource::{AccessGrant, BearerRefused, IntrospectionCaller};
pub use start::{OAuthProxy, Recorder, StartError, StoreActors};
pub use types::{
    AuthorizeOutcome, AuthorizeQueryError, AuthorizeRequest, BrowserContext, CallbackParams, ClientCredentials,
    ClientInformation, CodeExchange, ConsentForm, ConsentOutcome, ConsentPrompt, DocumentConsent, RefreshExchange,
    TokenResponse, MAX_AUTHORIZE_QUERY, MAX_STATE, PENDING_FULL_RETRY_AFTER,
};
