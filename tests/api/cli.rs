//! The command line, run as a process: `admin ...` against a stand-in of
//! the admin API (the JSON of the shared contract, served on 127.0.0.1) for
//! paging, tables and every failure, and against a running proxy (the last
//! test); `check-config`, `--version`, `--help` and usage errors.
//!
//! The stand-in checks the bearer token, pages its answers three items at a
//! time whatever `limit` asks (a server may answer smaller pages, so the CLI
//! must follow `next_cursor`) and records every request it got.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::helpers::free_port;
use crate::service::service;

const TOKEN: &str = "admin-token-for-the-cli-tests-0123456789";
/// 2024-03-05T06:07:08Z
const REGISTERED: i64 = 1_709_618_828;
const PAGE: usize = 3;

/// What a run of the binary printed and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs the binary with `args` and only the variables given (an empty working
/// directory of its own, so no `.env` is read), off the test's runtime.
async fn run_cli(args: &[&str], variables: &[(&str, String)]) -> Run {
    let mut command = service();
    command.args(args);
    for (name, value) in variables {
        command.env(name, value);
    }
    let output = actix_web::rt::task::spawn_blocking(move || {
        let mut command = command;
        command.output().unwrap()
    })
    .await
    .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[derive(Default)]
struct State {
    /// `None`: the API is off (no token configured).
    token: Option<String>,
    clients: Mutex<Vec<Value>>,
    grants: Mutex<Vec<Value>>,
    /// `METHOD path?query` of every request.
    requests: Mutex<Vec<String>>,
}

/// The stand-in admin API.
struct StandIn {
    url: String,
    state: Arc<State>,
    handle: ServerHandle,
}

fn client(i: usize) -> Value {
    json!({
        "client_id": format!("client-{i:02}"),
        "client_name": if i == 2 { Value::Null } else { json!(format!("App number {i}")) },
        "redirect_uris": [format!("http://127.0.0.1:{}/callback", 4000 + i)],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "client_secret_basic",
        "registered_at": REGISTERED + i as i64,
        "last_used_at": if i.is_multiple_of(2) { Value::Null } else { json!(REGISTERED + 86_400) },
    })
}

fn grant(id: &str, client_id: &str, subject: &str) -> Value {
    json!({
        "grant_id": id,
        "client_id": client_id,
        "subject": subject,
        "scopes": ["openid", "profile"],
        "resource": "http://127.0.0.1:1/mcp",
        "created_at": REGISTERED,
        "last_refreshed_at": Value::Null,
        "expires_at": REGISTERED + 7_776_000,
    })
}

fn error(status: u16, error: &str, description: &str) -> HttpResponse {
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if status == 401 {
        response.insert_header(("WWW-Authenticate", "Bearer realm=\"mcp-oauth-proxy admin\""));
    }
    response.json(json!({"error": error, "error_description": description}))
}

/// Records the request; `Some(refusal)` unless the right token came.
fn guard(req: &HttpRequest, state: &State) -> Option<HttpResponse> {
    let query = req.query_string();
    let line = if query.is_empty() {
        format!("{} {}", req.method(), req.path())
    } else {
        format!("{} {}?{query}", req.method(), req.path())
    };
    state.requests.lock().unwrap().push(line);
    let Some(token) = &state.token else {
        return Some(error(
            403,
            "access_denied",
            "the admin API is off: set OAUTH_PROXY_ADMIN_TOKEN",
        ));
    };
    let given = req.headers().get("authorization").and_then(|v| v.to_str().ok());
    if given != Some(format!("Bearer {token}").as_str()) {
        return Some(error(401, "invalid_token", "a valid admin token is required"));
    }
    None
}

/// One page of `items` after `cursor` (the offset, as a string).
fn page(items: Vec<Value>, query: &web::Query<std::collections::HashMap<String, String>>) -> HttpResponse {
    let limit: usize = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 50,
        Some(Ok(limit)) if (1..=500).contains(&limit) => limit,
        Some(_) => return error(400, "invalid_request", "limit must be 1 to 500"),
    };
    let start: usize = query.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let end = (start + limit.min(PAGE)).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    HttpResponse::Ok().json(json!({"items": items[start.min(end)..end], "next_cursor": next}))
}

async fn clients(
    req: HttpRequest,
    state: web::Data<State>,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    if let Some(refused) = guard(&req, &state) {
        return refused;
    }
    let needle = query.get("q").map(|q| q.to_lowercase());
    let items = state
        .clients
        .lock()
        .unwrap()
        .iter()
        .filter(|c| match &needle {
            None => true,
            Some(n) => c["client_name"]
                .as_str()
                .is_some_and(|name| name.to_lowercase().contains(n)),
        })
        .cloned()
        .collect();
    page(items, &query)
}

async fn one_client(req: HttpRequest, state: web::Data<State>, id: web::Path<String>) -> HttpResponse {
    if let Some(refused) = guard(&req, &state) {
        return refused;
    }
    let mut clients = state.clients.lock().unwrap();
    let Some(at) = clients.iter().position(|c| c["client_id"] == *id) else {
        return error(404, "not_found", "no such client");
    };
    if req.method() == actix_web::http::Method::DELETE {
        clients.remove(at);
        let mut grants = state.grants.lock().unwrap();
        let before = grants.len();
        grants.retain(|g| g["client_id"] != *id);
        return HttpResponse::Ok()
            .json(json!({"client_id": *id, "deleted": true, "grants_revoked": before - grants.len()}));
    }
    HttpResponse::Ok().json(clients[at].clone())
}

async fn grants(
    req: HttpRequest,
    state: web::Data<State>,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    if let Some(refused) = guard(&req, &state) {
        return refused;
    }
    let items = state
        .grants
        .lock()
        .unwrap()
        .iter()
        .filter(|g| query.get("sub").is_none_or(|s| g["subject"] == *s))
        .filter(|g| query.get("client_id").is_none_or(|c| g["client_id"] == *c))
        .cloned()
        .collect();
    page(items, &query)
}

async fn one_grant(req: HttpRequest, state: web::Data<State>, id: web::Path<String>) -> HttpResponse {
    if let Some(refused) = guard(&req, &state) {
        return refused;
    }
    let mut grants = state.grants.lock().unwrap();
    let Some(at) = grants.iter().position(|g| g["grant_id"] == *id) else {
        return error(404, "not_found", "no such grant");
    };
    if req.method() == actix_web::http::Method::DELETE {
        grants.remove(at);
        return HttpResponse::Ok().json(json!({"grant_id": *id, "revoked": true}));
    }
    HttpResponse::Ok().json(grants[at].clone())
}

async fn revoke_subject(req: HttpRequest, state: web::Data<State>, sub: web::Path<String>) -> HttpResponse {
    if let Some(refused) = guard(&req, &state) {
        return refused;
    }
    let mut grants = state.grants.lock().unwrap();
    let before = grants.len();
    grants.retain(|g| g["subject"] != *sub);
    HttpResponse::Ok().json(json!({"subject": *sub, "grants_revoked": before - grants.len(), "upstream_revoked": 0}))
}

impl StandIn {
    /// Seven clients and four grants (two of them alice@example.com's).
    async fn start(token: Option<&str>) -> StandIn {
        let mut registered: Vec<Value> = (1..=7).map(client).collect();
        // A name registered by anyone: a terminal escape must not reach the operator's terminal.
        registered[6]["client_name"] = json!("Evil\u{1b}[2J\u{1b}[31m red");
        let state = Arc::new(State {
            token: token.map(String::from),
            clients: Mutex::new(registered),
            grants: Mutex::new(vec![
                grant("grant-a1", "client-01", "alice@example.com"),
                grant("grant-a2", "client-03", "alice@example.com"),
                grant("grant-b1", "client-01", "bob"),
                grant("grant-b2", "client-05", "bob"),
            ]),
            requests: Mutex::default(),
        });
        let data = web::Data::from(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/admin/clients", web::get().to(clients))
                .route("/admin/clients/{id}", web::get().to(one_client))
                .route("/admin/clients/{id}", web::delete().to(one_client))
                .route("/admin/grants", web::get().to(grants))
                .route("/admin/grants/{id}", web::get().to(one_grant))
                .route("/admin/grants/{id}", web::delete().to(one_grant))
                .route("/admin/subjects/{sub}/revoke", web::post().to(revoke_subject))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        StandIn { url, state, handle }
    }

    /// The variables that point the CLI here with the right token.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OAUTH_PROXY_ADMIN_URL", self.url.clone()),
            ("OAUTH_PROXY_ADMIN_TOKEN", TOKEN.to_string()),
        ]
    }

    fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// The column each header of `header_line` starts at (by characters).
fn column_starts(header_line: &str, headers: &[&str]) -> Vec<usize> {
    headers
        .iter()
        .map(|h| {
            header_line
                .find(h)
                .unwrap_or_else(|| panic!("no {h} in {header_line:?}"))
        })
        .collect()
}

#[actix_web::test]
async fn admin_clients_list_prints_every_page_as_an_aligned_table_with_utc_dates() {
    let api = StandIn::start(Some(TOKEN)).await;
    let run = run_cli(&["admin", "clients", "list"], &api.env()).await;
    assert_eq!(run.code, Some(0), "{}", run.all());
    let lines: Vec<&str> = run.stdout.lines().collect();
    let headers = ["CLIENT ID", "NAME", "REDIRECT URIS", "REGISTERED", "LAST USED"];
    let starts = column_starts(lines[0], &headers);
    // Every client, from every page (3 a page: 3 requests for 7 clients).
    for i in 1..=7 {
        let id = format!("client-{i:02}");
        let row = lines
            .iter()
            .find(|l| l.starts_with(&id))
            .unwrap_or_else(|| panic!("no row for {id}:\n{}", run.stdout));
        // Aligned: the redirect URI starts under its header in every row.
        assert_eq!(row.find("http://127.0.0.1:"), Some(starts[2]), "{}", run.stdout);
    }
    assert!(run.stdout.contains("App number 3"), "{}", run.stdout);
    assert!(
        run.stdout.contains("2024-03-05T06:07:11Z"),
        "registered_at as a UTC date: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("2024-03-06T06:07:08Z"),
        "last_used_at as a UTC date: {}",
        run.stdout
    );
    assert!(
        !run.stdout.contains('\u{1b}'),
        "a terminal escape from a client name reached the output"
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(
        requests[1].contains("cursor=3") && requests[2].contains("cursor=6"),
        "{requests:?}"
    );
    api.stop().await;
}

#[actix_web::test]
async fn admin_clients_list_json_prints_the_api_items_of_every_page() {
    let api = StandIn::start(Some(TOKEN)).await;
    let run = run_cli(&["admin", "clients", "list", "--json"], &api.env()).await;
    assert_eq!(run.code, Some(0), "{}", run.all());
    let answer: Value = serde_json::from_str(&run.stdout).expect("--json prints JSON");
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    assert_eq!(items[0], client(1), "the API's objects as they came");
    assert_eq!(answer["next_cursor"], Value::Null);
    api.stop().await;
}

#[actix_web::test]
async fn admin_clients_list_stops_at_the_limit_asked_for() {
    let api = StandIn::start(Some(TOKEN)).await;
    let run = run_cli(&["admin", "clients", "list", "--limit", "4", "--json"], &api.env()).await;
    assert_eq!(run.code, Some(0), "{}", run.all());
    let answer: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(answer["items"].as_array().unwrap().len(), 4);
    assert_eq!(answer["next_cursor"], "4", "where the next page would start");
    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests[0].contains("limit=4") && requests[1].contains("limit=1"),
        "{requests:?}"
    );
    api.stop().await;
}

#[actix_web::test]
async fn admin_clients_list_searches_by_name() {
    let api = StandIn::start(Some(TOKEN)).await;
    let run = run_cli(&["admin", "clients", "list", "--name", "number 4"], &api.env()).await;
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(run.stdout.contains("client-04"), "{}", run.stdout);
    assert!(!run.stdout.contains("client-05"), "{}", run.stdout);
    assert!(api.requests()[0].contains("q=number+4") || api.requests()[0].contains("q=number%204"));
    api.stop().await;
}

#[actix_web::test]
async fn admin_grants_list_passes_the_subject_and_client_filters() {
    let api = StandIn::start(Some(TOKEN)).await;
    let run = run_cli(
        &[
            "admin",
            "grants",
            "list",
            "--sub",
            "alice@example.com",
            "--client",
            "client-03",
        ],
        &api.env(),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.all());
    let header = run.stdout.lines().next().unwrap();
    column_starts(
        header,
        &[
            "GRANT ID",
            "CLIENT ID",
            "SUBJECT",
            "SCOPES",
            "CREATED",
            "LAST REFRESHED",
            "EXPIRES",
        ],
    );
    assert!(run.stdout.contains("grant-a2"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("grant-a1") && !run.stdout.contains("grant-b"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("openid profile"), "{}", run.stdout);
    assert!(
        run.stdout.contains("2024-06-03T06:07:08Z"),
        "expires_at as a UTC date: {}",
        run.stdout
    );
    let request = &api.requests()[0];
    assert!(
        request.contains("sub=alice%40example.com") && request.contains("client_id=client-03"),
        "{request}"
    );
    api.stop().await;
}

#[actix_web::test]
async fn admin_grants_revoke_by_subject_uses_the_kill_switch_and_says_how_many() {
    let api = StandIn::start(Some(TOKEN)).await;
    let run = run_cli(&["admin", "grants", "revoke", "--sub", "alice@example.com"], &api.env()).await;
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(
        run.stdout.contains("2 grants") && run.stdout.contains("alice@example.com"),
        "{}",
        run.stdout
    );
    assert_eq!(api.requests(), ["POST /admin/subjects/alice@example.com/revoke"]);
    assert_eq!(api.state.grants.lock().unwrap().len(), 2, "bob's grants are left");

    let json = run_cli(&["admin", "grants", "revoke", "--sub", "bob", "--json"], &api.env()).await;
    assert_eq!(json.code, Some(0), "{}", json.all());
    let answer: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        answer,
        json!({"subject": "bob", "grants_revoked": 2, "upstream_revoked": 0})
    );
    api.stop().await;
}

#[actix_web::test]
async fn admin_ids_with_slashes_and_spaces_stay_one_path_segment() {
    let api = StandIn::start(Some(TOKEN)).await;
    let run = run_cli(&["admin", "grants", "revoke", "--sub", "a/b c?"], &api.env()).await;
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(api.requests(), ["POST /admin/subjects/a%2Fb%20c%3F/revoke"]);
    api.stop().await;
}

#[actix_web::test]
async fn admin_show_revoke_and_delete_act_on_one_record_and_an_unknown_id_exits_1() {
    let api = StandIn::start(Some(TOKEN)).await;
    let show = run_cli(&["admin", "clients", "show", "client-03"], &api.env()).await;
    assert_eq!(show.code, Some(0), "{}", show.all());
    assert!(
        show.stdout.contains("App number 3") && show.stdout.contains("client_secret_basic"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("2024-03-05T06:07:11Z"), "{}", show.stdout);

    let grant = run_cli(&["admin", "grants", "show", "grant-b2"], &api.env()).await;
    assert_eq!(grant.code, Some(0), "{}", grant.all());
    assert!(
        grant.stdout.contains("client-05") && grant.stdout.contains("bob"),
        "{}",
        grant.stdout
    );

    let revoke = run_cli(&["admin", "grants", "revoke", "grant-b2"], &api.env()).await;
    assert_eq!(revoke.code, Some(0), "{}", revoke.all());
    assert!(revoke.stdout.contains("grant-b2"), "{}", revoke.stdout);

    let delete = run_cli(&["admin", "clients", "delete", "client-01"], &api.env()).await;
    assert_eq!(delete.code, Some(0), "{}", delete.all());
    assert!(
        delete.stdout.contains("client-01") && delete.stdout.contains("2 grants revoked"),
        "{}",
        delete.stdout
    );

    let missing = run_cli(&["admin", "clients", "show", "client-01"], &api.env()).await;
    assert_eq!(missing.code, Some(1), "{}", missing.all());
    assert!(
        missing.stderr.contains("not found") && missing.stderr.contains("client-01"),
        "{}",
        missing.stderr
    );
    assert_eq!(missing.stderr.trim().lines().count(), 1, "one line: {}", missing.stderr);
    api.stop().await;
}

#[actix_web::test]
async fn a_wrong_admin_token_exits_1_with_a_clear_line_and_the_token_is_never_printed() {
    let api = StandIn::start(Some(TOKEN)).await;
    let wrong = "wrong-token-that-must-not-be-echoed-42";
    let run = run_cli(
        &["admin", "grants", "list"],
        &[
            ("OAUTH_PROXY_ADMIN_URL", api.url.clone()),
            ("OAUTH_PROXY_ADMIN_TOKEN", wrong.to_string()),
        ],
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stderr.contains("401") && run.stderr.contains("OAUTH_PROXY_ADMIN_TOKEN"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "one line: {}", run.stderr);
    assert!(!run.all().contains(wrong), "the token was printed: {}", run.all());

    // The right token read from OAUTH_PROXY_ADMIN_TOKEN_FILE (a trailing newline dropped).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let from_file = run_cli(
        &["admin", "grants", "list"],
        &[
            ("OAUTH_PROXY_ADMIN_URL", api.url.clone()),
            ("OAUTH_PROXY_ADMIN_TOKEN_FILE", file.display().to_string()),
        ],
    )
    .await;
    assert_eq!(from_file.code, Some(0), "{}", from_file.all());
    assert!(from_file.stdout.contains("grant-b2"), "{}", from_file.stdout);
    assert!(!from_file.all().contains(TOKEN));
    api.stop().await;
}

#[actix_web::test]
async fn an_admin_api_without_a_token_configured_exits_1_saying_it_is_off() {
    let api = StandIn::start(None).await;
    let run = run_cli(&["admin", "clients", "list"], &api.env()).await;
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stderr.contains("403") && run.stderr.contains("off"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains(TOKEN));
    api.stop().await;
}

#[actix_web::test]
async fn an_unreachable_admin_api_exits_1_naming_the_url_and_the_variable() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let run = run_cli(
        &["admin", "clients", "list"],
        &[
            ("OAUTH_PROXY_ADMIN_URL", url.clone()),
            ("OAUTH_PROXY_ADMIN_TOKEN", TOKEN.to_string()),
        ],
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stderr.contains(&url) && run.stderr.contains("OAUTH_PROXY_ADMIN_URL"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "one line: {}", run.stderr);
    assert!(!run.all().contains(TOKEN));

    // Without OAUTH_PROXY_ADMIN_URL the CLI goes to OAUTH_PROXY_ADMIN_BIND, and says so.
    let port = free_port();
    let run = run_cli(
        &["admin", "clients", "list"],
        &[
            ("OAUTH_PROXY_ADMIN_BIND", format!("127.0.0.1:{port}")),
            ("OAUTH_PROXY_ADMIN_TOKEN", TOKEN.to_string()),
        ],
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stderr.contains(&format!("http://127.0.0.1:{port}")) && run.stderr.contains("OAUTH_PROXY_ADMIN_BIND"),
        "{}",
        run.stderr
    );
}

#[actix_web::test]
async fn the_admin_url_defaults_to_the_admin_bind() {
    let api = StandIn::start(Some(TOKEN)).await;
    let bind = api.url.trim_start_matches("http://").to_string();
    let run = run_cli(
        &["admin", "grants", "list", "--sub", "bob"],
        &[
            ("OAUTH_PROXY_ADMIN_BIND", bind),
            ("OAUTH_PROXY_ADMIN_TOKEN", TOKEN.to_string()),
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(run.stdout.contains("grant-b1"), "{}", run.stdout);
    api.stop().await;
}

#[actix_web::test]
async fn admin_commands_without_a_token_or_a_url_exit_2_naming_the_variable() {
    let api = StandIn::start(Some(TOKEN)).await;
    let run = run_cli(
        &["admin", "clients", "list"],
        &[("OAUTH_PROXY_ADMIN_URL", api.url.clone())],
    )
    .await;
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(run.stderr.contains("OAUTH_PROXY_ADMIN_TOKEN"), "{}", run.stderr);

    let run = run_cli(
        &["admin", "clients", "list"],
        &[("OAUTH_PROXY_ADMIN_TOKEN", TOKEN.to_string())],
    )
    .await;
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(
        run.stderr.contains("OAUTH_PROXY_ADMIN_URL") && run.stderr.contains("OAUTH_PROXY_ADMIN_BIND"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains(TOKEN));
    assert!(api.requests().is_empty(), "nothing was sent: {:?}", api.requests());
    api.stop().await;
}

#[actix_web::test]
async fn unknown_commands_subcommands_and_flags_exit_2_with_a_hint() {
    let api = StandIn::start(Some(TOKEN)).await;
    for args in [
        &["frobnicate"][..],
        &["--frobnicate"],
        &["admin"],
        &["admin", "users", "list"],
        &["admin", "clients", "explode"],
        &["admin", "clients", "show"],
        &["admin", "clients", "list", "--colour"],
        &["admin", "clients", "list", "--limit", "many"],
        &["admin", "grants", "list", "--sub"],
        &["admin", "grants", "revoke"],
        &["admin", "grants", "revoke", "grant-a1", "--sub", "alice@example.com"],
        &["admin", "clients", "list", "extra"],
    ] {
        let run = run_cli(args, &api.env()).await;
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.all());
        assert!(run.stderr.contains("--help"), "{args:?} gives no hint: {}", run.stderr);
    }
    assert!(api.requests().is_empty(), "nothing was sent: {:?}", api.requests());
    api.stop().await;
}

#[actix_web::test]
async fn version_and_help_describe_the_commands() {
    let version = run_cli(&["--version"], &[]).await;
    assert_eq!(version.code, Some(0));
    assert_eq!(
        version.stdout.trim(),
        format!("mcp-oauth-proxy {}", env!("CARGO_PKG_VERSION"))
    );

    let help = run_cli(&["--help"], &[]).await;
    assert_eq!(help.code, Some(0));
    for text in [
        "check-config",
        "audit verify FILE",
        "admin clients list",
        "admin grants revoke ID|--sub S",
        "--json",
        "--limit N",
        "OAUTH_PROXY_ADMIN_URL",
        "exit codes",
    ] {
        assert!(help.stdout.contains(text), "--help lacks {text:?}:\n{}", help.stdout);
    }
    let admin_help = run_cli(&["admin", "--help"], &[]).await;
    assert_eq!(admin_help.code, Some(0), "{}", admin_help.all());
    assert!(
        admin_help.stdout.contains("admin grants list [--sub S] [--client C]"),
        "{}",
        admin_help.stdout
    );
}

/// A valid configuration with each kind of secret: given, from a file, generated.
fn valid_configuration(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let secret_file = dir.join("upstream-secret");
    std::fs::write(&secret_file, "upstream-secret-from-a-file-7f3a\n").unwrap();
    vec![
        ("OAUTH_PROXY_BASE_URL", "https://proxy.example".into()),
        // Discovery at a port nobody listens on: check-config must not go there.
        (
            "OAUTH_PROXY_UPSTREAM_ISSUER",
            format!("http://127.0.0.1:{}", free_port()),
        ),
        ("OAUTH_PROXY_UPSTREAM_CLIENT_ID", "proxy-client".into()),
        (
            "OAUTH_PROXY_UPSTREAM_CLIENT_SECRET_FILE",
            secret_file.display().to_string(),
        ),
        (
            "OAUTH_PROXY_JWT_SIGNING_KEY",
            "jwt-signing-key-value-0123456789abcdef".into(),
        ),
        ("OAUTH_PROXY_ADMIN_TOKEN", TOKEN.into()),
        ("OAUTH_PROXY_ADMIN_BIND", "127.0.0.1:9091".into()),
        ("OAUTH_PROXY_STORAGE", dir.join("data").display().to_string()),
        (
            "OAUTH_PROXY_MCP_UPSTREAM_URL",
            "http://mcp-user:mcp-password-5150@127.0.0.1:1/mcp".into(),
        ),
    ]
}

#[actix_web::test]
async fn check_config_prints_the_effective_settings_with_every_secret_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let mut variables = valid_configuration(dir.path());
    // A port already taken: check-config must not try to bind it.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    variables.push(("OAUTH_PROXY_BIND", taken.local_addr().unwrap().to_string()));
    let run = run_cli(&["check-config"], &variables).await;
    assert_eq!(run.code, Some(0), "{}", run.all());
    let out = &run.stdout;
    for line in [
        "OAUTH_PROXY_BASE_URL = https://proxy.example",
        "OAUTH_PROXY_UPSTREAM_CLIENT_ID = proxy-client",
        "OAUTH_PROXY_JWT_SIGNING_KEY = (set)",
        "OAUTH_PROXY_ADMIN_TOKEN = (set)",
        "OAUTH_PROXY_ENCRYPTION_KEY = (generated)",
        "OAUTH_PROXY_ACCESS_TOKEN_TTL = 3600",
        "OAUTH_PROXY_ADMIN_BIND = 127.0.0.1:9091",
        "[operations]",
        "[upstream]",
    ] {
        assert!(out.lines().any(|l| l == line), "no line {line:?} in:\n{out}");
    }
    let from_file = format!(
        "OAUTH_PROXY_UPSTREAM_CLIENT_SECRET = (from file {})",
        dir.path().join("upstream-secret").display()
    );
    assert!(out.lines().any(|l| l == from_file), "no line {from_file:?} in:\n{out}");
    assert!(
        out.contains(&format!(
            "OAUTH_PROXY_AUDIT_LOG = {}",
            dir.path().join("data/audit.jsonl").display()
        )),
        "{out}"
    );
    for secret in [
        "upstream-secret-from-a-file-7f3a",
        "jwt-signing-key-value-0123456789abcdef",
        TOKEN,
        "mcp-password-5150",
    ] {
        assert!(
            !run.all().contains(secret),
            "the secret {secret:?} was printed:\n{}",
            run.all()
        );
    }
    assert!(!dir.path().join("data").exists(), "check-config opened the store");
    drop(taken);
}

#[actix_web::test]
async fn check_config_prints_the_allowed_users_and_refuses_an_entry_over_a_claim_that_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut variables = valid_configuration(dir.path());
    variables.push(("OAUTH_PROXY_ALLOWED_USERS", "email:*@example.com  id:583231".into()));
    let run = run_cli(&["check-config"], &variables).await;
    assert_eq!(run.code, Some(0), "{}", run.all());
    let line = "OAUTH_PROXY_ALLOWED_USERS = email:*@example.com id:583231";
    assert!(
        run.stdout.lines().any(|l| l == line),
        "no line {line:?} in:\n{}",
        run.stdout
    );

    for entry in [
        "octocat",
        "login:",
        "https://example.com/groups:admin",
        "email_verified:true",
    ] {
        let mut variables = valid_configuration(dir.path());
        variables.push(("OAUTH_PROXY_ALLOWED_USERS", entry.into()));
        let run = run_cli(&["check-config"], &variables).await;
        assert_eq!(run.code, Some(2), "{entry}: {}", run.all());
        assert!(
            run.stderr.contains("configuration error: OAUTH_PROXY_ALLOWED_USERS: "),
            "{entry}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.trim().lines().count(), 1, "one line: {}", run.stderr);
    }
}

#[actix_web::test]
async fn check_config_exits_2_with_one_line_naming_a_bad_variable() {
    let dir = tempfile::tempdir().unwrap();
    let mut variables = valid_configuration(dir.path());
    variables.push(("OAUTH_PROXY_ADMIN_BIND", "not-an-address".into()));
    let run = run_cli(&["check-config"], &variables).await;
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(run.stderr.contains("OAUTH_PROXY_ADMIN_BIND"), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "one line: {}", run.stderr);
    assert!(!run.all().contains(TOKEN));

    let run = run_cli(&["check-config"], &[("OAUTH_PROXY_UPSTREAM_CLIENT_ID", "x".into())]).await;
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(
        run.stderr.contains("OAUTH_PROXY_BASE_URL: is required"),
        "{}",
        run.stderr
    );
}

// ---- Against the real service ----

/// The admin commands against a running proxy's admin listener: list and
/// show what a sign-in made, revoke a user's grants (the token then fails
/// at the gateway), delete a client; the token never printed.
#[actix_web::test]
async fn the_admin_commands_drive_a_running_proxy() {
    use crate::backend_double::BackendDouble;
    use crate::helpers::TestApp;
    use crate::mock_upstream::MockUpstreamConfig;

    let backend = BackendDouble::start().await;
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_ADMIN_TOKEN", TOKEN),
            ("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.as_str()),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(app.mcp_post(Some(&access), ping.clone()).await.status, 200);
    let env = [
        ("OAUTH_PROXY_ADMIN_URL", app.admin.address.clone()),
        ("OAUTH_PROXY_ADMIN_TOKEN", TOKEN.to_string()),
    ];

    let listed = run_cli(&["admin", "clients", "list"], &env).await;
    assert_eq!(listed.code, Some(0), "{}", listed.all());
    assert!(listed.stdout.contains(&client.client_id), "{}", listed.stdout);
    let grants = run_cli(&["admin", "grants", "list", "--sub", "user-123", "--json"], &env).await;
    assert_eq!(grants.code, Some(0), "{}", grants.all());
    let grants: Value = serde_json::from_str(&grants.stdout).unwrap();
    let items = grants["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{grants}");
    assert_eq!(items[0]["client_id"], client.client_id.as_str());
    let grant_id = items[0]["grant_id"].as_str().unwrap().to_string();
    let shown = run_cli(&["admin", "grants", "show", &grant_id], &env).await;
    assert_eq!(shown.code, Some(0), "{}", shown.all());
    assert!(shown.stdout.contains("user-123"), "{}", shown.stdout);

    let revoked = run_cli(&["admin", "grants", "revoke", "--sub", "user-123"], &env).await;
    assert_eq!(revoked.code, Some(0), "{}", revoked.all());
    assert!(revoked.stdout.contains("revoked 1 grant"), "{}", revoked.stdout);
    assert_eq!(app.mcp_post(Some(&access), ping).await.status, 401);
    let again = run_cli(&["admin", "grants", "show", &grant_id], &env).await;
    assert_eq!(again.code, Some(1), "{}", again.all());

    let deleted = run_cli(&["admin", "clients", "delete", &client.client_id], &env).await;
    assert_eq!(deleted.code, Some(0), "{}", deleted.all());
    let gone = run_cli(&["admin", "clients", "show", &client.client_id], &env).await;
    assert_eq!(gone.code, Some(1), "{}", gone.all());

    let wrong = run_cli(
        &["admin", "clients", "list"],
        &[
            ("OAUTH_PROXY_ADMIN_URL", app.admin.address.clone()),
            ("OAUTH_PROXY_ADMIN_TOKEN", "not-the-admin-token-0123456789".to_string()),
        ],
    )
    .await;
    assert_eq!(wrong.code, Some(1), "{}", wrong.all());
    for run in [&listed, &shown, &revoked, &deleted, &wrong] {
        assert!(!run.all().contains(TOKEN) && !run.all().contains("not-the-admin-token"));
        assert!(!run.all().contains(&access));
    }
    app.stop().await;
}
