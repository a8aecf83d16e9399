//! Who may finish sign-in (`OAUTH_PROXY_ALLOWED_USERS`): patterns over the
//! upstream's claims, checked at the callback before any code is issued.
//! Read once at start-up; pure, no I/O.
//!
//! An entry is `claim:pattern` (split at the first `:`); a user is allowed
//! when ANY entry matches. The pattern is a glob over the whole value (`*`
//! any run of characters, `?` one character). A claim that is a string
//! matches itself; a number matches its decimal text (GitHub's numeric
//! `id`); a list matches when any string or number element does; any other
//! value (boolean, object, null) never matches. `email` and `login` compare
//! without regard to case (an address's domain is case-insensitive and
//! providers treat the whole address so; GitHub logins are unique regardless
//! of case); every other claim compares exactly. An `email` entry counts only
//! when the upstream does not say `email_verified` is false.

use serde_json::{Map, Value};

use crate::gateway::policy::glob_matches;

/// Claims compared without regard to case.
const CASELESS_CLAIMS: [&str; 2] = ["email", "login"];

/// The claim that says whether `email` was verified.
pub const EMAIL_VERIFIED_CLAIM: &str = "email_verified";

/// Claims no entry may name: booleans never match a pattern (so such an
/// entry could never allow anyone), and `email_verified` is already applied
/// to every `email` entry.
const UNMATCHABLE_CLAIMS: [&str; 2] = [EMAIL_VERIFIED_CLAIM, "phone_number_verified"];

/// The longest claim name or pattern accepted.
const MAX_PART: usize = 256;

/// One entry: values of `claim` matching `pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRule {
    pub claim: String,
    pub pattern: String,
}

/// Every entry; empty: anyone the upstream signs in is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedUsers {
    pub rules: Vec<UserRule>,
}

impl AllowedUsers {
    /// `email:*@example.com sub:12345 login:octocat groups:mcp-users`:
    /// whitespace-separated `claim:pattern` entries. The error says which
    /// entry is wrong and why.
    pub fn parse(raw: &str) -> Result<AllowedUsers, String> {
        let mut rules = Vec::new();
        for entry in raw.split_whitespace() {
            let Some((claim, pattern)) = entry.split_once(':') else {
                return Err(format!("`{entry}` is not `claim:pattern` (e.g. `email:*@example.com`)"));
            };
            if claim.is_empty() {
                return Err(format!("`{entry}` names no claim before the `:`"));
            }
            if pattern.is_empty() {
                return Err(format!("`{entry}` has no pattern after the `:`"));
            }
            if claim.len() > MAX_PART || pattern.len() > MAX_PART {
                return Err(format!("`{entry}` is longer than {MAX_PART} characters on one side"));
            }
            if !claim
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(format!(
                    "`{claim}` (in `{entry}`) is not a claim name the proxy can read: use letters, digits, `_`, `-` and `.`"
                ));
            }
            if pattern.starts_with("//") {
                // `https://example.com/groups:admin`: a namespaced claim split
                // at the scheme's `:`.
                return Err(format!(
                    "`{entry}`: claim names that are URLs (namespaced claims) are not supported"
                ));
            }
            if UNMATCHABLE_CLAIMS.contains(&claim) {
                return Err(format!(
                    "`{entry}`: `{claim}` is a true/false claim, which no pattern matches (an `email` entry already requires `email_verified` not to be false)"
                ));
            }
            rules.push(UserRule {
                claim: claim.to_string(),
                pattern: pattern.to_string(),
            });
        }
        Ok(AllowedUsers { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every claim an entry names, and `email_verified` when an entry names
    /// `email`: what the callback must read from the upstream.
    pub fn claim_names(&self) -> impl Iterator<Item = &str> {
        let verified = self
            .rules
            .iter()
            .any(|rule| rule.claim == "email")
            .then_some(EMAIL_VERIFIED_CLAIM);
        self.rules.iter().map(|rule| rule.claim.as_str()).chain(verified)
    }

    /// Whether the user with these claims may finish sign-in: no entries,
    /// or any entry matching.
    pub fn allows(&self, claims: &Map<String, Value>) -> bool {
        self.rules.is_empty() || self.rules.iter().any(|rule| rule.matches(claims))
    }

    /// What a grant keeps of the user's claims so the policy can be checked
    /// again later (a JSON object): the claims an entry names, as the
    /// upstream stated them at sign-in.
    pub fn captured(&self, claims: &Map<String, Value>) -> String {
        let kept: Map<String, Value> = self
            .claim_names()
            .filter_map(|name| claims.get(name).map(|value| (name.to_string(), value.clone())))
            .collect();
        Value::Object(kept).to_string()
    }

    /// Whether a grant whose sign-in left `captured` (see [`Self::captured`])
    /// is still allowed under this policy: no entries, or any entry matching
    /// the claims kept. A grant that kept none (made before the policy
    /// existed) or that the policy now reads other claims of is not: its
    /// user signs in again, and is checked with fresh claims.
    pub fn still_allows(&self, captured: Option<&str>) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        captured
            .and_then(|text| serde_json::from_str::<Map<String, Value>>(text).ok())
            .is_some_and(|claims| self.allows(&claims))
    }
}

impl UserRule {
    fn matches(&self, claims: &Map<String, Value>) -> bool {
        if self.claim == "email" && email_unverified(claims) {
            return false;
        }
        let Some(value) = claims.get(&self.claim) else {
            return false;
        };
        let caseless = CASELESS_CLAIMS.contains(&self.claim.as_str());
        let pattern = if caseless {
            self.pattern.to_lowercase()
        } else {
            self.pattern.clone()
        };
        let matches = |value: &Value| match scalar_text(value) {
            Some(text) if caseless => glob_matches(&pattern, &text.to_lowercase()),
            Some(text) => glob_matches(&pattern, &text),
            None => false,
        };
        match value {
            Value::Array(items) => items.iter().any(matches),
            other => matches(other),
        }
    }
}

/// A string as itself, a number as its decimal text; nothing else.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether the upstream says the email is not verified: `false`, or the
/// string `"false"` some providers send.
fn email_unverified(claims: &Map<String, Value>) -> bool {
    match claims.get(EMAIL_VERIFIED_CLAIM) {
        Some(Value::Bool(verified)) => !verified,
        Some(Value::String(verified)) => verified.eq_ignore_ascii_case("false"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    fn allows(policy: &str, user: Value) -> bool {
        AllowedUsers::parse(policy).unwrap().allows(&claims(user))
    }

    #[test]
    fn an_empty_policy_allows_everyone() {
        let policy = AllowedUsers::parse("  ").unwrap();
        assert!(policy.is_empty());
        assert!(policy.allows(&Map::new()));
    }

    #[test]
    fn a_user_is_allowed_when_any_entry_matches() {
        let policy = "email:*@example.com sub:12345 login:octocat groups:mcp-users";
        assert!(allows(policy, json!({"sub": "12345"})));
        assert!(allows(policy, json!({"sub": "1", "login": "octocat"})));
        assert!(allows(policy, json!({"sub": "1", "email": "a@example.com"})));
        assert!(!allows(
            policy,
            json!({"sub": "1", "email": "a@example.org", "login": "other"})
        ));
        assert!(!allows(policy, json!({})));
    }

    #[test]
    fn patterns_are_globs_over_the_whole_value() {
        assert!(allows("sub:user-?", json!({"sub": "user-1"})));
        assert!(!allows("sub:user-?", json!({"sub": "user-12"})));
        assert!(!allows("email:*@example.com", json!({"email": "a@example.com.evil"})));
        assert!(!allows("email:*@example.com", json!({"email": "a@sub.example.com"})));
        assert!(allows("email:*@*example.com", json!({"email": "a@sub.example.com"})));
    }

    #[test]
    fn email_and_login_compare_without_regard_to_case_and_other_claims_exactly() {
        assert!(allows("email:*@Example.COM", json!({"email": "Ann@example.com"})));
        assert!(allows("login:octocat", json!({"login": "OctoCat"})));
        assert!(!allows("sub:abc", json!({"sub": "ABC"})));
        assert!(!allows("groups:admins", json!({"groups": ["Admins"]})));
    }

    #[test]
    fn a_list_claim_matches_when_any_element_does() {
        assert!(allows("groups:mcp-users", json!({"groups": ["staff", "mcp-users"]})));
        assert!(!allows("groups:mcp-users", json!({"groups": ["staff"]})));
        assert!(!allows("groups:mcp-users", json!({"groups": []})));
        // Nested values are not elements.
        assert!(!allows(
            "groups:mcp-users",
            json!({"groups": [["mcp-users"], {"n": "mcp-users"}]})
        ));
    }

    #[test]
    fn numbers_compare_by_their_decimal_text_and_other_types_never_match() {
        assert!(allows("id:583231", json!({"id": 583231})));
        assert!(allows("id:5832*", json!({"id": 583231})));
        assert!(allows("groups:42", json!({"groups": [7, 42]})));
        assert!(!allows("admin:true", json!({"admin": true})));
        assert!(!allows("org:*", json!({"org": {"name": "x"}})));
        assert!(!allows("org:*", json!({"org": null})));
    }

    #[test]
    fn an_email_entry_counts_only_when_email_verified_is_not_false() {
        let policy = "email:*@example.com";
        assert!(!allows(
            policy,
            json!({"email": "a@example.com", "email_verified": false})
        ));
        assert!(!allows(
            policy,
            json!({"email": "a@example.com", "email_verified": "false"})
        ));
        assert!(allows(
            policy,
            json!({"email": "a@example.com", "email_verified": true})
        ));
        assert!(allows(policy, json!({"email": "a@example.com"})));
        // Other entries are not affected.
        assert!(allows(
            "email:*@example.com sub:1",
            json!({"sub": "1", "email": "a@example.com", "email_verified": false})
        ));
    }

    #[test]
    fn the_claims_to_read_include_email_verified_when_an_entry_names_email() {
        let policy = AllowedUsers::parse("email:*@x groups:g").unwrap();
        assert_eq!(
            policy.claim_names().collect::<Vec<_>>(),
            ["email", "groups", EMAIL_VERIFIED_CLAIM]
        );
        let policy = AllowedUsers::parse("login:a").unwrap();
        assert_eq!(policy.claim_names().collect::<Vec<_>>(), ["login"]);
    }

    #[test]
    fn a_grant_keeps_only_the_claims_the_policy_names_and_is_checked_again_by_them() {
        let at_sign_in = AllowedUsers::parse("email:*@example.com groups:mcp-users").unwrap();
        let user = claims(json!({
            "sub": "ann", "email": "ann@example.com", "email_verified": true,
            "groups": ["staff"], "name": "Ann",
        }));
        let kept = at_sign_in.captured(&user);
        assert_eq!(
            serde_json::from_str::<Value>(&kept).unwrap(),
            json!({"email": "ann@example.com", "email_verified": true, "groups": ["staff"]})
        );
        assert!(at_sign_in.still_allows(Some(&kept)));
        // Narrowed: ann is off the list; widened: still on it.
        let narrower = AllowedUsers::parse("groups:mcp-users").unwrap();
        assert!(!narrower.still_allows(Some(&kept)));
        let wider = AllowedUsers::parse("groups:staff groups:mcp-users").unwrap();
        assert!(wider.still_allows(Some(&kept)));
        // A claim the grant did not keep decides nothing: sign in again.
        let other_claim = AllowedUsers::parse("sub:ann").unwrap();
        assert!(!other_claim.still_allows(Some(&kept)));
        // A grant made before the policy existed kept nothing.
        assert!(!narrower.still_allows(None));
        assert!(!narrower.still_allows(Some("{}")));
        assert!(!narrower.still_allows(Some("not json")));
        // No policy allows every grant, whatever it kept.
        assert!(AllowedUsers::default().still_allows(None));
        assert_eq!(AllowedUsers::default().captured(&user), "{}");
    }

    #[test]
    fn malformed_entries_are_refused_naming_the_entry() {
        for (raw, says) in [
            ("octocat", "`octocat` is not `claim:pattern`"),
            (":octocat", "names no claim"),
            ("login:", "has no pattern"),
            ("log in:x", "`log` is not `claim:pattern`"),
            ("lo$gin:x", "not a claim name the proxy can read"),
            ("https://example.com/groups:admin", "URLs"),
            ("email_verified:true", "true/false claim"),
            ("phone_number_verified:*", "true/false claim"),
        ] {
            let error = AllowedUsers::parse(raw).unwrap_err();
            assert!(error.contains(says), "{raw}: {error}");
        }
        let long = format!("sub:{}", "x".repeat(MAX_PART + 1));
        assert!(AllowedUsers::parse(&long).unwrap_err().contains("longer"));
    }

    #[test]
    fn a_pattern_may_hold_a_colon() {
        assert!(allows("sub:github:42", json!({"sub": "github:42"})));
    }
}
