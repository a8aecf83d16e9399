//! Scopes (RFC 6749 §3.3): space-delimited, case-sensitive, order-free.

use std::collections::BTreeSet;

/// The scope asking for a refresh token (OpenID Connect Core §11, as MCP
/// adopts it in SEP-2207). It is the authorization server's own: offered in
/// its `scopes_supported`, never in the resource's metadata or challenges,
/// never forwarded upstream.
pub const OFFLINE_ACCESS: &str = "offline_access";

/// The configured scopes without [`OFFLINE_ACCESS`]: what the MCP resource
/// offers and asks for (an upstream that needs `offline_access` for its own
/// refresh token may have it in the list).
pub fn resource_scopes(configured: &[String]) -> Vec<String> {
    configured.iter().filter(|s| *s != OFFLINE_ACCESS).cloned().collect()
}

/// The authorization server's `scopes_supported`: the resource's scopes and
/// [`OFFLINE_ACCESS`], once, last.
pub fn authorization_server_scopes(configured: &[String]) -> Vec<String> {
    let mut scopes = resource_scopes(configured);
    scopes.push(OFFLINE_ACCESS.to_string());
    scopes
}

/// A set of scope tokens, kept sorted so equal sets print the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    /// Splits on any whitespace; empty tokens (a leading space) are not scopes.
    pub fn parse(raw: &str) -> Self {
        Scopes(raw.split_whitespace().map(String::from).collect())
    }

    pub fn from_list(list: &[String]) -> Self {
        Scopes(list.iter().filter(|s| !s.is_empty()).cloned().collect())
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    /// Takes `scope` out; whether it was there.
    pub fn remove(&mut self, scope: &str) -> bool {
        self.0.remove(scope)
    }

    pub fn insert(&mut self, scope: &str) {
        self.0.insert(scope.to_string());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_subset_of(&self, other: &Scopes) -> bool {
        self.0.is_subset(&other.0)
    }

    /// Tokens of `self` that `allowed` does not contain.
    pub fn not_in<'a>(&'a self, allowed: &'a Scopes) -> impl Iterator<Item = &'a str> + 'a {
        self.0.difference(&allowed.0).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The space-delimited form.
    pub fn to_oauth_string(&self) -> String {
        self.0.iter().cloned().collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_on_any_whitespace() {
        let scopes = Scopes::parse(" read\twrite  read ");
        assert_eq!(scopes.to_oauth_string(), "read write");
        assert!(Scopes::parse("read").is_subset_of(&scopes));
        assert!(!Scopes::parse("admin").is_subset_of(&scopes));
        assert!(Scopes::parse("   ").is_empty());
    }

    #[test]
    fn requested_scopes_are_allowed_only_when_every_token_is_allowed() {
        // (case, requested, allowed) → (allowed, the tokens not allowed)
        let rows: [(&str, &str, &str, bool, &[&str]); 9] = [
            ("the same scopes", "read write", "read write", true, &[]),
            ("in another order", "write read", "read write", true, &[]),
            ("fewer scopes (a narrowed refresh)", "read", "read write", true, &[]),
            ("no scope at all", "", "read write", true, &[]),
            ("one more scope", "read admin", "read write", false, &["admin"]),
            ("a scope of another case", "Read", "read write", false, &["Read"]),
            ("a prefix of an allowed scope", "rea", "read write", false, &["rea"]),
            (
                "two allowed tokens glued together",
                "readwrite",
                "read write",
                false,
                &["readwrite"],
            ),
            ("anything, when nothing is allowed", "read", "", false, &["read"]),
        ];
        for (case, requested, allowed, subset, unknown) in rows {
            let (requested, allowed) = (Scopes::parse(requested), Scopes::parse(allowed));
            assert_eq!(requested.is_subset_of(&allowed), subset, "{case}");
            assert_eq!(requested.not_in(&allowed).collect::<Vec<_>>(), unknown, "{case}");
        }
    }

    #[test]
    fn a_scope_list_from_configuration_drops_empty_entries() {
        let list = ["read".to_string(), String::new(), "write".to_string()];
        assert_eq!(Scopes::from_list(&list), Scopes::parse("write read"));
    }

    #[test]
    fn offline_access_is_the_authorization_servers_scope_not_the_resources() {
        let configured = ["openid".to_string(), OFFLINE_ACCESS.to_string(), "email".to_string()];
        assert_eq!(resource_scopes(&configured), ["openid", "email"]);
        assert_eq!(
            authorization_server_scopes(&configured),
            ["openid", "email", OFFLINE_ACCESS]
        );
        assert_eq!(authorization_server_scopes(&[]), [OFFLINE_ACCESS]);
        assert!(resource_scopes(&[OFFLINE_ACCESS.to_string()]).is_empty());
    }
}
