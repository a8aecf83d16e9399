//! A pending authorization, between `/authorize` and the upstream callback.

use serde::{Deserialize, Serialize};

use crate::oauth::pkce::CodeChallenge;
use crate::oauth::scope::Scopes;

/// One pending authorization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transaction {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub scopes: Scopes,
    pub resource: String,
    pub code_challenge: CodeChallenge,
    /// The proxy's own PKCE verifier for the upstream leg (absent when the
    /// client's challenge is forwarded).
    pub upstream_verifier: Option<String>,
    /// Anti-CSRF token for the consent form.
    pub csrf_token: String,
    /// Hash of the browser binding cookie the transaction belongs to.
    pub browser_hash: String,
    /// The user approved this client on the consent page (or consent is off).
    pub approved: bool,
}
