//! The discovery documents: RFC 8414 authorization server metadata and
//! RFC 9728 protected resource metadata.

use serde_json::{json, Value};

use crate::config::Config;
use crate::oauth::scope::{authorization_server_scopes, resource_scopes};

/// RFC 8414 §2 metadata. `issuer` is exactly the configured base URL.
pub fn authorization_server(config: &Config, has_jwks: bool) -> Value {
    let mut document = json!({
        "issuer": config.issuer,
        "authorization_endpoint": config.url_for("/authorize"),
        "token_endpoint": config.url_for("/token"),
        "registration_endpoint": config.url_for("/register"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "service_documentation": "https://modelcontextprotocol.io/specification/draft/basic/authorization",
        // RFC 9207: every authorization response carries `iss`.
        "authorization_response_iss_parameter_supported": true,
        "revocation_endpoint": config.url_for("/revoke"),
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint": config.url_for("/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "bearer"],
    });
    if config.client_documents.enabled {
        // MCP authorization 2026-07-28: clients use a document client id
        // only when this is advertised (with `none` among the methods).
        document["client_id_metadata_document_supported"] = true.into();
        // RFC 7523 §2.2 for document clients with keys (RFC 8414 §2: the
        // algorithms go with the method).
        let algorithms = json!(crate::oauth::client_assertion::ALLOWED_ALGORITHM_NAMES);
        for endpoint in ["token_endpoint", "revocation_endpoint", "introspection_endpoint"] {
            if let Some(methods) = document[format!("{endpoint}_auth_methods_supported")].as_array_mut() {
                methods.push("private_key_jwt".into());
            }
            document[format!("{endpoint}_auth_signing_alg_values_supported")] = algorithms.clone();
        }
    }
    if has_jwks {
        document["jwks_uri"] = config.url_for("/jwks.json").into();
    }
    // SEP-2207: `offline_access` is offered here (so never an empty list,
    // even with no scope configured), and only here.
    document["scopes_supported"] = authorization_server_scopes(&config.scopes).into();
    document
}

/// `scopes_supported` only when there are scopes (`offline_access` is never
/// the resource's, SEP-2207): an empty list would say
/// that no scope may be asked for (RFC 8414 §2, RFC 9728 §2 make the member
/// optional), and the Python MCP SDK turns it into a registration with
/// `"scope": ""`.
fn with_scopes(mut document: Value, scopes: &[String]) -> Value {
    let scopes = resource_scopes(scopes);
    if !scopes.is_empty() {
        document["scopes_supported"] = scopes.into();
    }
    document
}

/// RFC 9728 §2 metadata for the guarded MCP endpoint.
pub fn protected_resource(config: &Config) -> Value {
    let document = json!({
        "resource": config.resource(),
        "authorization_servers": [config.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP server",
    });
    with_scopes(document, &config.scopes)
}

/// The absolute URL of the RFC 9728 document for the MCP endpoint (the
/// path-inserted form, RFC 9728 §3.1).
pub fn protected_resource_url(config: &Config) -> String {
    let origin = config.base_url.origin().ascii_serialization();
    let base_path = config.base_url.path().trim_end_matches('/');
    format!(
        "{origin}/.well-known/oauth-protected-resource{base_path}{}",
        config.mcp_path
    )
}
