//! What the commands print: aligned tables with UTC dates, records, and
//! names cleaned of control characters.

use serde_json::Value;

pub(super) fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Text from the API made safe for a terminal: client names and redirect
/// URIs are chosen by whoever registers, so control characters (escape
/// sequences) and bidirectional overrides are shown as `?`.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

pub(super) fn number(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        _ => "?".into(),
    }
}

/// A field as table text: strings cleaned, lists joined by `sep`, null `-`,
/// `*_at` numbers as UTC dates.
pub(super) fn cell(item: &Value, key: &str, sep: &str) -> String {
    match &item[key] {
        Value::Null => "-".into(),
        Value::String(s) => clean(s),
        Value::Number(n) if key.ends_with("_at") => n.as_i64().map_or_else(|| n.to_string(), utc),
        Value::Array(list) => {
            let parts: Vec<String> = list
                .iter()
                .map(|v| v.as_str().map_or_else(|| clean(&v.to_string()), clean))
                .collect();
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(sep)
            }
        }
        other => clean(&other.to_string()),
    }
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub(super) fn footer(count: usize, noun: &str, more: bool) -> String {
    let more = if more { " (more: raise --limit)" } else { "" };
    format!("{count} {noun}{more}\n")
}

pub(super) fn clients_table(items: &[Value], more: bool) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|c| {
            vec![
                cell(c, "client_id", " "),
                cell(c, "kind", " "),
                cell(c, "client_name", " "),
                cell(c, "redirect_uris", " "),
                cell(c, "token_endpoint_auth_method", " "),
                cell(c, "registered_at", " "),
                cell(c, "last_used_at", " "),
            ]
        })
        .collect();
    let headers = [
        "CLIENT ID",
        "KIND",
        "NAME",
        "REDIRECT URIS",
        "AUTH",
        "REGISTERED",
        "LAST USED",
    ];
    format!("{}{}", table(&headers, &rows), footer(items.len(), "clients", more))
}

pub(super) fn grants_table(items: &[Value], more: bool) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|g| {
            vec![
                cell(g, "grant_id", " "),
                cell(g, "client_id", " "),
                cell(g, "subject", " "),
                cell(g, "scopes", " "),
                cell(g, "created_at", " "),
                cell(g, "last_refreshed_at", " "),
                cell(g, "expires_at", " "),
            ]
        })
        .collect();
    let headers = [
        "GRANT ID",
        "CLIENT ID",
        "SUBJECT",
        "SCOPES",
        "CREATED",
        "LAST REFRESHED",
        "EXPIRES",
    ];
    format!("{}{}", table(&headers, &rows), footer(items.len(), "grants", more))
}

pub(super) const CLIENT_FIELDS: &[&str] = &[
    "client_id",
    "kind",
    "client_name",
    "redirect_uris",
    "grant_types",
    "token_endpoint_auth_method",
    "registered_at",
    "last_used_at",
    "host",
    "last_seen_at",
];

pub(super) const GRANT_FIELDS: &[&str] = &[
    "grant_id",
    "client_id",
    "subject",
    "scopes",
    "resource",
    "created_at",
    "last_refreshed_at",
    "expires_at",
];

/// One record as `field  value` lines: the known fields in order, then any
/// other field the API added.
pub(super) fn record(item: &Value, fields: &[&str]) -> String {
    let mut keys: Vec<&str> = fields.to_vec();
    if let Some(object) = item.as_object() {
        keys.extend(object.keys().map(String::as_str).filter(|k| !fields.contains(k)));
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| vec![(*k).to_string(), cell(item, k, " ")])
        .collect();
    let text = table(&["FIELD", "VALUE"], &rows);
    // No header for a single record.
    text.split_once('\n').map(|(_, rest)| rest.to_string()).unwrap_or(text)
}

/// Unix seconds as an ISO 8601 UTC date (`2024-03-05T06:07:08Z`).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to civil date (H. Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What `clients delete` prints: what was done, and for a document client
/// the API's note that it can sign in again.
pub(super) fn deleted_client(id: &str, answer: &Value) -> String {
    let mut text = format!(
        "deleted client {} ({} grants revoked)\n",
        clean(id),
        number(&answer["grants_revoked"])
    );
    if let Some(note) = answer["note"].as_str() {
        text.push_str(&format!("note: {}\n", clean(note)));
    }
    text
}
