//! Unit tests of the admin command line: parsing, dates, tables.

use super::output::*;
use super::*;

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

#[test]
fn utc_dates_match_known_instants() {
    assert_eq!(utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(utc(1_709_618_828), "2024-03-05T06:07:08Z");
    assert_eq!(utc(4_102_444_799), "2099-12-31T23:59:59Z");
    assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
}

#[test]
fn the_admin_command_line_parses_each_form() {
    let parsed = |line: &str| parse(&args(line)).unwrap().unwrap();
    assert_eq!(
        parsed("grants list --sub alice --client=c1 --json --limit 10"),
        AdminCommand {
            action: Action::GrantsList {
                sub: Some("alice".into()),
                client: Some("c1".into())
            },
            json: true,
            limit: Some(10)
        }
    );
    assert_eq!(
        parsed("grants revoke --sub bob").action,
        Action::SubjectRevoke("bob".into())
    );
    assert_eq!(parsed("grants revoke g1").action, Action::GrantsRevoke("g1".into()));
    // Ids are base64url: one may start with `-`.
    assert_eq!(
        parsed("grants revoke -vbK3oAHmTh6a").action,
        Action::GrantsRevoke("-vbK3oAHmTh6a".into())
    );
    assert_eq!(parsed("clients show -x1").action, Action::ClientsShow("-x1".into()));
    assert_eq!(parsed("clients delete c1").action, Action::ClientsDelete("c1".into()));
    assert_eq!(parse(&args("clients list --help")).unwrap(), None);
}

#[test]
fn the_admin_command_line_refuses_what_does_not_fit() {
    for line in [
        "",
        "clients",
        "clients show",
        "clients list --sub alice",
        "grants revoke g1 --sub bob",
        "grants show g1 --limit 3",
        "grants list --limit 0",
        "grants list --sub",
        "grants list --sub a --sub b",
        "grants list --bogus",
        "users list",
    ] {
        let error = parse(&args(line)).expect_err(line);
        assert!(error.contains("--help"), "{line}: {error}");
    }
}

#[test]
fn terminal_control_characters_are_neutralised() {
    assert_eq!(clean("a\u{1b}[31mb\u{202E}c\n"), "a?[31mb?c?");
}

#[test]
fn urls_keep_each_id_one_segment_under_a_base_path() {
    let target = Target::from_lookup(&|name| match name {
        "OAUTH_PROXY_ADMIN_URL" => Some("https://ops.example/proxy/".into()),
        "OAUTH_PROXY_ADMIN_TOKEN" => Some("t".repeat(20)),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        target.url(&["subjects", "a/b?c", "revoke"], &[]).as_str(),
        "https://ops.example/proxy/admin/subjects/a%2Fb%3Fc/revoke"
    );
    let bind = Target::from_lookup(&|name| match name {
        "OAUTH_PROXY_ADMIN_BIND" => Some("0.0.0.0:9090".into()),
        "OAUTH_PROXY_ADMIN_TOKEN" => Some("t".repeat(20)),
        _ => None,
    })
    .unwrap();
    assert_eq!(bind.base.as_str(), "http://127.0.0.1:9090/");
    assert_eq!(bind.from, "OAUTH_PROXY_ADMIN_BIND");
}

#[test]
fn tables_align_every_column_but_the_last() {
    let text = table(
        &["A", "BB"],
        &[vec!["long value".into(), "x".into()], vec!["s".into(), "y".into()]],
    );
    assert_eq!(text, "A           BB\nlong value  x\ns           y\n");
}

#[test]
fn the_clients_table_has_a_kind_column_and_a_document_clients_url() {
    let items = vec![
        json!({"client_id": "f3a9c2", "kind": "registered", "client_name": "Cursor",
               "redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none",
               "registered_at": 1_709_618_828, "last_used_at": null}),
        json!({"client_id": "https://claude.ai/oauth/claude-code-client-metadata", "kind": "document",
               "client_name": "Claude Code", "redirect_uris": ["http://localhost/callback"],
               "token_endpoint_auth_method": "none", "registered_at": 1_709_618_828,
               "last_used_at": null, "host": "claude.ai", "last_seen_at": 1_709_618_828}),
    ];
    let text = clients_table(&items, false);
    let lines: Vec<&str> = text.lines().collect();
    let kind_at = lines[0].find("KIND").expect("a KIND column");
    assert_eq!(
        lines[1][kind_at..].split_whitespace().next(),
        Some("registered"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("https://claude.ai/oauth/claude-code-client-metadata"),
        "{text}"
    );
    assert_eq!(
        lines[2][kind_at..].split_whitespace().next(),
        Some("document"),
        "{text}"
    );

    let shown = record(&items[1], CLIENT_FIELDS);
    assert!(
        shown.lines().any(|l| l.starts_with("kind") && l.ends_with("document")),
        "{shown}"
    );
    assert!(
        shown.lines().any(|l| l.starts_with("host") && l.ends_with("claude.ai")),
        "{shown}"
    );
}

#[test]
fn deleting_a_document_client_prints_the_note_that_it_can_sign_in_again() {
    let answer = json!({"client_id": "https://claude.ai/x", "deleted": true, "grants_revoked": 2,
                        "note": "a document client is not a registration: it can sign in again"});
    let text = deleted_client("https://claude.ai/x", &answer);
    assert!(
        text.starts_with("deleted client https://claude.ai/x (2 grants revoked)\n"),
        "{text}"
    );
    assert!(
        text.contains("note: a document client is not a registration: it can sign in again"),
        "{text}"
    );
    let registered = deleted_client(
        "f3a9c2",
        &json!({"client_id": "f3a9c2", "deleted": true, "grants_revoked": 0}),
    );
    assert_eq!(registered, "deleted client f3a9c2 (0 grants revoked)\n");
}
