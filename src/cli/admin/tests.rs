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
