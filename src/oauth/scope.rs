//! Scopes (RFC 6749 §3.3): space-delimited, case-sensitive, order-free.

use std::collections::BTreeSet;

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
}
