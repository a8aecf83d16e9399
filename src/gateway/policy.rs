//! The gateway's access policy per tool, prompt and resource
//! (`OAUTH_PROXY_MCP_TOOL_SCOPES`): which scopes a token needs to call a
//! name. Read once at start-up; pure, no I/O.

use crate::oauth::scope::Scopes;

/// One rule: names matching `pattern` (a glob: `*` any run of characters,
/// `?` one character) need every scope of `scopes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolScopeRule {
    pub pattern: String,
    pub scopes: Vec<String>,
}

/// Every rule; a name needs the scopes of every rule it matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolScopes {
    pub rules: Vec<ToolScopeRule>,
}

impl ToolScopes {
    /// `delete_*=repo:admin write_*=repo:write`: whitespace-separated
    /// `pattern=scope[,scope...]` entries. The error says which entry is wrong.
    pub fn parse(raw: &str) -> Result<ToolScopes, String> {
        let mut rules = Vec::new();
        for entry in raw.split_whitespace() {
            let (pattern, scopes) = entry
                .split_once('=')
                .ok_or_else(|| format!("`{entry}` is not `name-pattern=scope[,scope...]`"))?;
            let scopes: Vec<String> = scopes.split(',').filter(|s| !s.is_empty()).map(String::from).collect();
            if pattern.is_empty() || scopes.is_empty() {
                return Err(format!("`{entry}` is not `name-pattern=scope[,scope...]`"));
            }
            rules.push(ToolScopeRule {
                pattern: pattern.to_string(),
                scopes,
            });
        }
        Ok(ToolScopes { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every scope a call to `name` needs (empty: none).
    pub fn required(&self, name: &str) -> Scopes {
        let mut needed = Scopes::default();
        for rule in self.rules.iter().filter(|r| glob_matches(&r.pattern, name)) {
            for scope in &rule.scopes {
                needed.insert(scope);
            }
        }
        needed
    }

    /// Whether a token with `granted` may call `name`.
    pub fn may_call(&self, granted: &Scopes, name: &str) -> bool {
        self.required(name).is_subset_of(granted)
    }

    /// Every scope some rule names (each must be advertised).
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().flat_map(|r| r.scopes.iter().map(String::as_str))
    }
}

/// A glob over the whole name: `*` matches any run of characters (none
/// included), `?` exactly one; everything else itself.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with one backtrack point (the last `*`): linear
    // in practice, no recursion an attacker's name could deepen.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((star_pi, star_ni)) => {
                    pi = star_pi + 1;
                    ni = star_ni + 1;
                    star = Some((star_pi, star_ni + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_matches("delete_*", "delete_repo"));
        assert!(glob_matches("delete_*", "delete_"));
        assert!(!glob_matches("delete_*", "undelete_repo"));
        assert!(glob_matches("*_admin", "repo_admin"));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("a?c", "ac"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("file:///*/secret*", "file:///home/secret.txt"));
        assert!(!glob_matches("search", "search_all"));
    }

    #[test]
    fn a_name_needs_the_scopes_of_every_rule_it_matches() {
        let rules = ToolScopes::parse("delete_*=repo:admin *_repo=repo:write,repo:read").unwrap();
        let needed = rules.required("delete_repo");
        assert_eq!(needed.to_oauth_string(), "repo:admin repo:read repo:write");
        assert!(rules.required("search").is_empty());
        let granted = Scopes::parse("repo:write repo:read");
        assert!(rules.may_call(&granted, "create_repo"));
        assert!(!rules.may_call(&granted, "delete_repo"));
    }

    #[test]
    fn malformed_entries_are_refused_naming_them() {
        assert!(ToolScopes::parse("delete_*").unwrap_err().contains("delete_*"));
        assert!(ToolScopes::parse("=repo").is_err());
        assert!(ToolScopes::parse("x=").is_err());
    }
}
