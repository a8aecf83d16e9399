//! Who may finish sign-in (`OAUTH_PROXY_ALLOWED_USERS`).

use super::env::Env;
use super::{bad, ConfigError};
use crate::oauth::user_policy::AllowedUsers;

/// `OAUTH_PROXY_ALLOWED_USERS`: unset, anyone the upstream signs in. The
/// policy is checked at the callback, where the proxy exchanges the upstream
/// code; with forwarded PKCE the code is exchanged only at `/token`, after
/// the client already holds a code, so the two cannot be combined.
pub(super) fn read_allowed_users(env: &Env, forward_pkce: bool) -> Result<AllowedUsers, ConfigError> {
    const VARIABLE: &str = "OAUTH_PROXY_ALLOWED_USERS";
    let allowed = AllowedUsers::parse(&env.get(VARIABLE).unwrap_or_default()).map_err(|why| bad(VARIABLE, why))?;
    if !allowed.is_empty() && forward_pkce {
        return Err(bad(
            VARIABLE,
            "cannot be used with OAUTH_PROXY_FORWARD_PKCE=true: the user is known only after the client's code is redeemed, too late to refuse the sign-in",
        ));
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)], forward_pkce: bool) -> Result<AllowedUsers, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = |name: &str| vars.get(name).cloned();
        read_allowed_users(&Env { lookup: &lookup }, forward_pkce)
    }

    #[test]
    fn unset_allows_everyone() {
        assert!(read(&[], false).unwrap().is_empty());
        assert!(read(&[("OAUTH_PROXY_ALLOWED_USERS", " ")], true).unwrap().is_empty());
    }

    #[test]
    fn entries_are_read_in_order() {
        let allowed = read(
            &[(
                "OAUTH_PROXY_ALLOWED_USERS",
                "email:*@example.com\n id:583231  groups:mcp-users",
            )],
            false,
        )
        .unwrap();
        let entries: Vec<(&str, &str)> = allowed
            .rules
            .iter()
            .map(|r| (r.claim.as_str(), r.pattern.as_str()))
            .collect();
        assert_eq!(
            entries,
            [("email", "*@example.com"), ("id", "583231"), ("groups", "mcp-users")]
        );
    }

    #[test]
    fn a_malformed_entry_stops_start_up_naming_the_variable_and_the_entry() {
        for raw in ["octocat", "login:", ":x", "a/b:x", "email_verified:true"] {
            let error = read(&[("OAUTH_PROXY_ALLOWED_USERS", raw)], false).unwrap_err();
            assert_eq!(error.variable, "OAUTH_PROXY_ALLOWED_USERS", "{raw}");
            assert!(error.to_string().starts_with("OAUTH_PROXY_ALLOWED_USERS: "), "{error}");
            assert!(!error.to_string().contains('\n'), "{error}");
        }
    }

    #[test]
    fn forwarded_pkce_cannot_be_combined_with_a_policy() {
        let error = read(&[("OAUTH_PROXY_ALLOWED_USERS", "login:octocat")], true).unwrap_err();
        assert_eq!(error.variable, "OAUTH_PROXY_ALLOWED_USERS");
        assert!(error.problem.contains("OAUTH_PROXY_FORWARD_PKCE"), "{error}");
    }
}
