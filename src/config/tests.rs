//! The configuration reader's rules, through `Config::from_lookup`.

use super::*;
use std::collections::HashMap;
use std::time::Duration;

use secrecy::ExposeSecret;

fn config_from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut map: HashMap<String, String> = [
        ("OAUTH_PROXY_BASE_URL", "https://mcp.example.com"),
        (
            "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
            "https://github.com/login/oauth/authorize",
        ),
        (
            "OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT",
            "https://github.com/login/oauth/access_token",
        ),
        ("OAUTH_PROXY_UPSTREAM_CLIENT_ID", "id"),
        ("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET", "secret"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in pairs {
        map.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|name| map.get(name).cloned())
}

#[test]
fn defaults_follow_the_contract() {
    let config = config_from(&[]).unwrap();
    assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(config.issuer, "https://mcp.example.com");
    assert_eq!(config.resource(), "https://mcp.example.com/mcp");
    assert_eq!(config.redirect_path, "/oauth/callback");
    assert!(config.token_swap && config.consent_required && !config.forward_pkce);
    assert_eq!(config.lifetimes.access_token, Duration::from_secs(3600));
    assert_eq!(config.lifetimes.refresh_token, Duration::from_secs(2_592_000));
    assert_eq!(config.lifetimes.authorization_code, Duration::from_secs(300));
    assert_eq!(config.lifetimes.transaction, Duration::from_secs(600));
    assert_eq!(config.lifetimes.grant_max, Duration::from_secs(7_776_000));
    assert_eq!(config.lifetimes.unapproved_transaction, Duration::from_secs(120));
    assert_eq!(config.max_pending_authorizations, 10_000);
    assert_eq!(config.upstream.auth_method, UpstreamAuthMethod::ClientSecretBasic);
    assert_eq!(config.custom_claims, ["sub", "email", "name", "preferred_username"]);
    assert_eq!(config.provider_name, "github.com");
}

#[test]
fn a_bad_value_names_its_variable() {
    let err = config_from(&[("OAUTH_PROXY_ACCESS_TOKEN_TTL", "soon")]).unwrap_err();
    assert_eq!(err.variable, "OAUTH_PROXY_ACCESS_TOKEN_TTL");
    let err = config_from(&[("OAUTH_PROXY_JWT_SIGNING_KEY", "short")]).unwrap_err();
    assert_eq!(err.variable, "OAUTH_PROXY_JWT_SIGNING_KEY");
    let err = config_from(&[("OAUTH_PROXY_BASE_URL", "")]).unwrap_err();
    assert_eq!(err.variable, "OAUTH_PROXY_BASE_URL");
    let err = config_from(&[("OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS", "state=x")]).unwrap_err();
    assert_eq!(err.variable, "OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS");
}

#[test]
fn the_grant_max_lifetime_is_whole_seconds_and_never_zero() {
    let config = config_from(&[("OAUTH_PROXY_GRANT_MAX_LIFETIME", "86400")]).unwrap();
    assert_eq!(config.lifetimes.grant_max, Duration::from_secs(86_400));
    for bad in ["0", "-1", "90d", "1.5"] {
        let err = config_from(&[("OAUTH_PROXY_GRANT_MAX_LIFETIME", bad)]).unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_GRANT_MAX_LIFETIME", "`{bad}`");
    }
}

#[test]
fn lists_split_on_commas_and_spaces() {
    let config = config_from(&[("OAUTH_PROXY_UPSTREAM_SCOPES", "read:user, user:email  repo")]).unwrap();
    assert_eq!(config.upstream.scopes, ["read:user", "user:email", "repo"]);
    assert_eq!(config.scopes, config.upstream.scopes);
}

#[test]
fn trusted_proxies_are_a_cidr_list_and_a_bad_entry_stops_start_up() {
    let config = config_from(&[("OAUTH_PROXY_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1 2001:db8::/32")]).unwrap();
    assert!(config.trusted_proxies.contains("10.1.1.1".parse().unwrap()));
    assert!(config.trusted_proxies.contains("192.0.2.1".parse().unwrap()));
    assert!(config.trusted_proxies.contains("2001:db8::7".parse().unwrap()));
    assert!(!config.trusted_proxies.contains("192.0.2.2".parse().unwrap()));
    assert!(
        config_from(&[]).unwrap().trusted_proxies.is_empty(),
        "unset: no proxy is trusted"
    );
    let err = config_from(&[("OAUTH_PROXY_TRUSTED_PROXIES", "10.0.0.0/8, lb.internal")]).unwrap_err();
    assert_eq!(err.variable, "OAUTH_PROXY_TRUSTED_PROXIES");
    assert!(err.problem.contains("lb.internal"), "{}", err.problem);
}

#[test]
fn the_authorize_rate_limit_is_generous_by_default_and_0_turns_it_off() {
    assert_eq!(config_from(&[]).unwrap().authorize_rate_limit, 120);
    let config = config_from(&[("OAUTH_PROXY_AUTHORIZE_RATE_LIMIT", "0")]).unwrap();
    assert_eq!(config.authorize_rate_limit, 0);
    let err = config_from(&[("OAUTH_PROXY_AUTHORIZE_RATE_LIMIT", "-1")]).unwrap_err();
    assert_eq!(err.variable, "OAUTH_PROXY_AUTHORIZE_RATE_LIMIT");
}

#[test]
fn secrets_are_hidden_in_debug_output() {
    let config = config_from(&[("OAUTH_PROXY_JWT_SIGNING_KEY", "a-signing-key-that-is-long-enough-123")]).unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("a-signing-key-that-is-long-enough-123"));
    assert!(!printed.contains("\"secret\""));
}

/// A file under the temp directory holding `content`, unique to the test.
fn temp_file(name: &str, content: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("mcp-oauth-proxy-config-{}-{name}", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

const SLASHED_KEY: &str = "ab/cd+ef.gh/ij+kl/mn+op/qr+st/uv+wx/yz+01/2=";

#[test]
fn a_secret_value_with_slashes_and_dots_is_used_as_given() {
    assert_eq!(SLASHED_KEY.len(), 44);
    let config = config_from(&[
        ("OAUTH_PROXY_JWT_PREVIOUS_KEY", SLASHED_KEY),
        ("OAUTH_PROXY_JWT_SIGNING_KEY", SLASHED_KEY),
        ("OAUTH_PROXY_ENCRYPTION_KEY", "./looks/like/a/path/but/is/a/key.0123"),
        ("OAUTH_PROXY_INTROSPECTION_SECRET", SLASHED_KEY),
    ])
    .unwrap();
    assert_eq!(config.jwt.previous_key.unwrap().expose_secret(), SLASHED_KEY);
    assert!(matches!(config.jwt.signing_key, KeySetting::Given(ref k) if k.expose_secret() == SLASHED_KEY));
    assert!(matches!(
        config.encryption,
        EncryptionSetting::Key(KeySetting::Given(ref k)) if k.expose_secret() == "./looks/like/a/path/but/is/a/key.0123"
    ));
    assert_eq!(config.introspection_secret.unwrap().expose_secret(), SLASHED_KEY);
}

#[test]
fn every_secret_can_come_from_its_file_twin_less_one_trailing_newline() {
    let unix = temp_file("unix-newline", format!("{SLASHED_KEY}\n").as_bytes());
    let windows = temp_file("windows-newline", format!("{SLASHED_KEY}\r\n").as_bytes());
    let two = temp_file("two-newlines", format!("{SLASHED_KEY}\n\n").as_bytes());
    let config = config_from(&[
        ("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET", ""),
        ("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET_FILE", &unix),
        ("OAUTH_PROXY_JWT_SIGNING_KEY_FILE", &windows),
        ("OAUTH_PROXY_ENCRYPTION_KEY_FILE", &unix),
        ("OAUTH_PROXY_CONSENT_SIGNING_KEY_FILE", &windows),
        ("OAUTH_PROXY_JWT_PREVIOUS_KEY_FILE", &unix),
        ("OAUTH_PROXY_INTROSPECTION_SECRET_FILE", &two),
    ])
    .unwrap();
    assert_eq!(config.upstream.client_secret.expose_secret(), SLASHED_KEY);
    for setting in [
        &config.jwt.signing_key,
        &config.consent_signing_key,
        match &config.encryption {
            EncryptionSetting::Key(key) => key,
            EncryptionSetting::Disabled => panic!("encryption stays on"),
        },
    ] {
        assert!(matches!(setting, KeySetting::Given(k) if k.expose_secret() == SLASHED_KEY));
    }
    assert_eq!(config.jwt.previous_key.unwrap().expose_secret(), SLASHED_KEY);
    // Only one newline goes: the second is the secret's.
    assert_eq!(
        config.introspection_secret.unwrap().expose_secret(),
        format!("{SLASHED_KEY}\n")
    );
}

#[test]
fn a_private_key_pem_comes_from_its_file_as_written() {
    let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
    let file = temp_file("private.pem", pem.as_bytes());
    let config = config_from(&[
        ("OAUTH_PROXY_JWT_ALGORITHM", "EdDSA"),
        ("OAUTH_PROXY_JWT_PRIVATE_KEY_FILE", &file),
    ])
    .unwrap();
    assert_eq!(
        config.jwt.private_key_pem.unwrap().expose_secret(),
        pem.trim_end_matches('\n')
    );
    // Given directly, a PEM with literal `\n` keeps working as before.
    let config = config_from(&[
        ("OAUTH_PROXY_JWT_ALGORITHM", "EdDSA"),
        (
            "OAUTH_PROXY_JWT_PRIVATE_KEY",
            "-----BEGIN PRIVATE KEY-----\\nMC4CAQAwBQYDK2VwBCIEIA==\\n-----END PRIVATE KEY-----",
        ),
    ])
    .unwrap();
    assert!(config
        .jwt
        .private_key_pem
        .unwrap()
        .expose_secret()
        .contains("-----\nMC4"));
}

#[test]
fn a_path_in_a_pem_variable_points_at_its_file_twin() {
    for (name, path) in [
        ("OAUTH_PROXY_JWT_PRIVATE_KEY", "/etc/mcp-oauth-proxy/jwt.pem"),
        ("OAUTH_PROXY_JWT_PREVIOUS_KEY", "/etc/mcp-oauth-proxy/old-jwt.pem"),
    ] {
        let err = config_from(&[("OAUTH_PROXY_JWT_ALGORITHM", "ES256"), (name, path)]).unwrap_err();
        assert_eq!(err.variable, name);
        assert!(err.problem.contains(&format!("{name}_FILE")), "{err}");
    }
}

#[test]
fn a_secret_and_its_file_twin_together_are_refused_naming_both() {
    let file = temp_file("both", SLASHED_KEY.as_bytes());
    for name in [
        "OAUTH_PROXY_JWT_SIGNING_KEY",
        "OAUTH_PROXY_ENCRYPTION_KEY",
        "OAUTH_PROXY_CONSENT_SIGNING_KEY",
        "OAUTH_PROXY_UPSTREAM_CLIENT_SECRET",
        "OAUTH_PROXY_JWT_PRIVATE_KEY",
        "OAUTH_PROXY_JWT_PREVIOUS_KEY",
        "OAUTH_PROXY_INTROSPECTION_SECRET",
    ] {
        let twin = format!("{name}_FILE");
        let err = config_from(&[(name, SLASHED_KEY), (&twin, &file)]).unwrap_err();
        assert_eq!(err.variable, name);
        assert!(err.to_string().contains(&twin), "{err}");
    }
}

#[test]
fn an_unreadable_or_empty_secret_file_is_refused_naming_the_file_variable() {
    let empty = temp_file("empty", b"");
    let newline_only = temp_file("newline-only", b"\n");
    for path in [empty.as_str(), newline_only.as_str(), "/nonexistent/secret"] {
        let err = config_from(&[("OAUTH_PROXY_CONSENT_SIGNING_KEY_FILE", path)]).unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_CONSENT_SIGNING_KEY_FILE", "{err}");
        assert!(err.problem.contains(path), "{err}");
    }
    // A short key from a file is refused naming the file variable.
    let short = temp_file("short", b"short\n");
    let err = config_from(&[("OAUTH_PROXY_JWT_SIGNING_KEY_FILE", &short)]).unwrap_err();
    assert_eq!(err.variable, "OAUTH_PROXY_JWT_SIGNING_KEY_FILE");
}

#[test]
fn consent_off_is_refused_while_any_redirect_host_is_open() {
    for patterns in [
        None,
        Some("https://*"),
        Some("https://app.example.com/cb https://*.example.com/cb"),
        Some("http://127.0.0.1:* cursor://*"),
    ] {
        let mut settings = vec![("OAUTH_PROXY_CONSENT_REQUIRED", "false")];
        if let Some(patterns) = patterns {
            settings.push(("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS", patterns));
        }
        let err = config_from(&settings).unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_CONSENT_REQUIRED", "{patterns:?}");
        assert!(
            err.problem.contains("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS"),
            "{err}"
        );
        assert_eq!(err.to_string().lines().count(), 1);
    }
}

#[test]
fn consent_off_is_allowed_with_pinned_or_loopback_redirect_hosts() {
    let config = config_from(&[
        ("OAUTH_PROXY_CONSENT_REQUIRED", "false"),
        (
            "OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS",
            "https://app.example.com/cb http://127.0.0.1:* http://localhost:*/callback",
        ),
    ])
    .unwrap();
    assert!(!config.consent_required);
    // With consent on, open patterns stay allowed.
    assert!(config_from(&[("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS", "https://*")]).is_ok());
}

#[test]
fn required_mcp_scopes_must_be_advertised() {
    let err = config_from(&[
        ("OAUTH_PROXY_UPSTREAM_SCOPES", "read:user user:email"),
        ("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "read:user repo"),
    ])
    .unwrap_err();
    assert_eq!(err.variable, "OAUTH_PROXY_MCP_REQUIRED_SCOPES");
    assert!(
        err.problem.contains("`repo`") && err.problem.contains("OAUTH_PROXY_UPSTREAM_SCOPES"),
        "{err}"
    );
    let err = config_from(&[
        ("OAUTH_PROXY_UPSTREAM_SCOPES", "read:user repo"),
        ("OAUTH_PROXY_SCOPES", "mcp:read"),
        ("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "repo"),
    ])
    .unwrap_err();
    assert!(err.problem.contains("OAUTH_PROXY_SCOPES="), "{err}");
    // A subset, or nothing advertised at all, is fine.
    assert!(config_from(&[
        ("OAUTH_PROXY_SCOPES", "mcp:read mcp:write"),
        ("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "mcp:read"),
    ])
    .is_ok());
    assert!(config_from(&[("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "mcp:read")]).is_ok());
}

#[test]
fn tool_scopes_must_be_advertised_need_token_swap_and_be_well_formed() {
    let config = config_from(&[
        ("OAUTH_PROXY_SCOPES", "mcp:read mcp:write mcp:admin"),
        ("OAUTH_PROXY_MCP_TOOL_SCOPES", "delete_*=mcp:admin write_*=mcp:write"),
        ("OAUTH_PROXY_MCP_FILTER_TOOLS_LIST", "true"),
    ])
    .unwrap();
    assert_eq!(
        config.gateway.tool_scopes.required("delete_repo").to_oauth_string(),
        "mcp:admin"
    );
    assert!(config.gateway.filter_tools_list);
    let err = config_from(&[
        ("OAUTH_PROXY_SCOPES", "mcp:read"),
        ("OAUTH_PROXY_MCP_TOOL_SCOPES", "delete_*=mcp:admin"),
    ])
    .unwrap_err();
    assert_eq!(err.variable, "OAUTH_PROXY_MCP_TOOL_SCOPES");
    assert!(err.problem.contains("`mcp:admin`"), "{err}");
    let err = config_from(&[
        ("OAUTH_PROXY_SCOPES", "mcp:admin"),
        ("OAUTH_PROXY_MCP_TOOL_SCOPES", "delete_*=mcp:admin"),
        ("OAUTH_PROXY_ENABLE_TOKEN_SWAP", "false"),
    ])
    .unwrap_err();
    assert!(err.problem.contains("token swap"), "{err}");
    let err = config_from(&[("OAUTH_PROXY_MCP_TOOL_SCOPES", "delete_*")]).unwrap_err();
    assert!(err.problem.contains("`delete_*`"), "{err}");
}

#[test]
fn a_bad_extra_ca_file_is_refused_naming_the_variable() {
    let empty = temp_file("ca-empty.pem", b"");
    let not_pem = temp_file("ca-not-pem.pem", b"hello\n");
    for path in [empty.as_str(), not_pem.as_str(), "/nonexistent/ca.pem"] {
        let err = config_from(&[("OAUTH_PROXY_EXTRA_CA_FILE", path)]).unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_EXTRA_CA_FILE");
        assert!(err.problem.contains(path), "{err}");
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = temp_file("ca.pem", params.self_signed(&key).unwrap().pem().as_bytes());
    let config = config_from(&[("OAUTH_PROXY_EXTRA_CA_FILE", &ca)]).unwrap();
    assert_eq!(config.outbound_tls.extra_roots(), 1);
    assert_eq!(config_from(&[]).unwrap().outbound_tls.extra_roots(), 0);
}

#[test]
fn the_gateway_body_cap_defaults_to_4_mib_and_must_be_positive() {
    assert_eq!(config_from(&[]).unwrap().gateway.max_body, 4_194_304);
    let set = config_from(&[("OAUTH_PROXY_MCP_MAX_BODY", "1024")]).unwrap();
    assert_eq!(set.gateway.max_body, 1024);
    for bad in ["0", "-1", "4MiB"] {
        let error = config_from(&[("OAUTH_PROXY_MCP_MAX_BODY", bad)]).unwrap_err();
        assert_eq!(error.variable, "OAUTH_PROXY_MCP_MAX_BODY", "{bad}");
    }
}

#[test]
fn the_mcp_server_url_may_not_carry_a_query_or_fragment() {
    for url in ["http://127.0.0.1:3000/mcp?key=1", "http://127.0.0.1:3000/mcp#x"] {
        let error = config_from(&[("OAUTH_PROXY_MCP_UPSTREAM_URL", url)]).unwrap_err();
        assert_eq!(error.variable, "OAUTH_PROXY_MCP_UPSTREAM_URL", "{url}");
    }
    assert!(config_from(&[("OAUTH_PROXY_MCP_UPSTREAM_URL", "http://127.0.0.1:3000/mcp")]).is_ok());
}

#[test]
fn the_pending_authorization_cap_is_read_and_cannot_be_turned_off() {
    let config = config_from(&[("OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS", "250")]).unwrap();
    assert_eq!(config.max_pending_authorizations, 250);
    for bad_value in ["0", "-1", "many"] {
        let err = config_from(&[("OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS", bad_value)]).unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS", "{bad_value}");
    }
}

#[test]
fn several_bad_values_are_named_one_at_a_time_in_a_fixed_order() {
    // Each bad value in the order the sections are read; fixing the one named
    // brings up the next.
    let mut settings = vec![
        ("OAUTH_PROXY_BIND", "nowhere"),
        ("OAUTH_PROXY_WORKERS", "0"),
        ("OAUTH_PROXY_BASE_URL", "ftp://mcp.example.com"),
        ("OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT", "not a url"),
        ("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT_AUTH_METHOD", "private_key_jwt"),
        ("OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS", "state=x"),
        ("OAUTH_PROXY_UPSTREAM_USERINFO_ENDPOINT", "nope"),
        ("OAUTH_PROXY_UPSTREAM_REVOCATION_ENDPOINT", "nope"),
        ("OAUTH_PROXY_UPSTREAM_CLIENT_ID", " "),
        ("OAUTH_PROXY_UPSTREAM_TIMEOUT", "0"),
        ("OAUTH_PROXY_REDIRECT_PATH", "callback"),
        ("OAUTH_PROXY_MCP_PATH", "/"),
        ("OAUTH_PROXY_ACCESS_TOKEN_TTL", "soon"),
        ("OAUTH_PROXY_GRANT_MAX_LIFETIME", "0"),
        ("OAUTH_PROXY_JWT_SIGNING_KEY", "short"),
        ("OAUTH_PROXY_ENCRYPTION_KEY", "short"),
        ("OAUTH_PROXY_CONSENT_SIGNING_KEY", "short"),
        ("OAUTH_PROXY_STORAGE", "s3://bucket"),
        ("OAUTH_PROXY_JWT_ALGORITHM", "RS256"),
        ("OAUTH_PROXY_JWT_PRIVATE_KEY", "/etc/mcp-oauth-proxy/jwt.pem"),
        ("OAUTH_PROXY_JWT_PREVIOUS_KEY", "short"),
        // Read with the gateway section (tool scopes need token swap).
        ("OAUTH_PROXY_ENABLE_TOKEN_SWAP", "maybe"),
        ("OAUTH_PROXY_MCP_UPSTREAM_URL", "http://127.0.0.1:3000/mcp?key=1"),
        ("OAUTH_PROXY_MCP_MAX_BODY", "0"),
        ("OAUTH_PROXY_MCP_CONNECT_TIMEOUT", "0"),
        ("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "repo"),
        ("OAUTH_PROXY_INTROSPECTION_SECRET", "short"),
        ("OAUTH_PROXY_CONSENT_REQUIRED", "maybe"),
        ("OAUTH_PROXY_EXTRA_CA_FILE", "/nonexistent/ca.pem"),
        ("OAUTH_PROXY_MAX_CLIENTS", "lots"),
        ("OAUTH_PROXY_REGISTRATION_RATE_LIMIT", "-1"),
        ("OAUTH_PROXY_TRUSTED_PROXIES", "lb.internal"),
        ("OAUTH_PROXY_AUTHORIZE_RATE_LIMIT", "-1"),
        ("OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS", "0"),
        ("OAUTH_PROXY_FORWARD_PKCE", "maybe"),
        ("OAUTH_PROXY_DISABLE_THP", "maybe"),
    ];
    let expected: Vec<&str> = settings.iter().map(|(name, _)| *name).collect();
    // Not an error by itself: the scopes the required one is checked against.
    settings.push(("OAUTH_PROXY_UPSTREAM_SCOPES", "read:user"));
    for name in expected {
        let err = config_from(&settings).unwrap_err();
        assert_eq!(err.variable, name, "{err}");
        settings.retain(|(set, _)| *set != name);
    }
    assert!(config_from(&settings).is_ok());
}

#[test]
fn no_secret_value_appears_in_the_debug_output_of_a_config() {
    let file = temp_file("debug-client-secret", b"upstream-client-secret-from-its-file\n");
    let private_pem = "-----BEGIN PRIVATE KEY-----\\nUFJJVkFURS1LRVktQk9EWS1NQVJLRVI=\\n-----END PRIVATE KEY-----";
    let previous_pem = "-----BEGIN PUBLIC KEY-----\\nUFJFVklPVVMtS0VZLUJPRFktTUFSS0VS\\n-----END PUBLIC KEY-----";
    let symmetric = [
        ("OAUTH_PROXY_JWT_SIGNING_KEY", "jwt-signing-key-0123456789abcdefghij"),
        ("OAUTH_PROXY_ENCRYPTION_KEY", "encryption-key-0123456789abcdefghijk"),
        (
            "OAUTH_PROXY_CONSENT_SIGNING_KEY",
            "consent-signing-key-0123456789abcdef",
        ),
        (
            "OAUTH_PROXY_INTROSPECTION_SECRET",
            "introspection-secret-0123456789abcde",
        ),
        ("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET", ""),
        ("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET_FILE", file.as_str()),
    ];
    let hs256 = [("OAUTH_PROXY_JWT_PREVIOUS_KEY", "previous-hs256-key-0123456789abcdef")];
    let eddsa = [
        ("OAUTH_PROXY_JWT_ALGORITHM", "EdDSA"),
        ("OAUTH_PROXY_JWT_PRIVATE_KEY", private_pem),
        ("OAUTH_PROXY_JWT_PREVIOUS_KEY", previous_pem),
    ];
    let secrets = [
        "jwt-signing-key",
        "encryption-key",
        "consent-signing-key",
        "introspection-secret",
        "upstream-client-secret",
        "previous-hs256-key",
        "UFJJVkFURS1LRVktQk9EWS1NQVJLRVI",
        "UFJFVklPVVMtS0VZLUJPRFktTUFSS0VS",
        "BEGIN",
    ];
    for (algorithm_settings, secrets_held) in [(&hs256[..], 6), (&eddsa[..], 8)] {
        let settings: Vec<_> = symmetric.iter().chain(algorithm_settings).copied().collect();
        let config = config_from(&settings).unwrap();
        let key = |setting: &KeySetting| match setting {
            KeySetting::Given(key) => key.expose_secret().to_string(),
            KeySetting::Generate => panic!("every key is given"),
        };
        let held = [
            key(&config.jwt.signing_key),
            key(&config.consent_signing_key),
            match &config.encryption {
                EncryptionSetting::Key(setting) => key(setting),
                EncryptionSetting::Disabled => panic!("encryption stays on"),
            },
            config.upstream.client_secret.expose_secret().to_string(),
            config
                .introspection_secret
                .as_ref()
                .unwrap()
                .expose_secret()
                .to_string(),
            config.jwt.previous_key.as_ref().unwrap().expose_secret().to_string(),
            config
                .jwt
                .private_key_pem
                .as_ref()
                .map(|pem| pem.expose_secret().to_string())
                .unwrap_or_default(),
        ]
        .concat();
        // Every secret was read into the config...
        assert_eq!(
            secrets.iter().filter(|secret| held.contains(*secret)).count(),
            secrets_held
        );
        // ...and none of it is printed, while the fields around them are.
        let printed = format!("{config:?}");
        assert!(printed.contains("https://mcp.example.com"), "{printed}");
        for secret in secrets {
            assert!(!printed.contains(secret), "`{secret}` in {printed}");
        }
    }
}
