//! The mcp-oauth-proxy service: configuration from the environment (and
//! `.env`), then the HTTP server until SIGINT/SIGTERM.

use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;

use mcp_oauth_proxy::cli::{self, Command};
use mcp_oauth_proxy::config::LogFormat;
use mcp_oauth_proxy::proxy::StartError;
use mcp_oauth_proxy::{startup, Config, OAuthProxy};

/// mimalloc: allocation-heavy request handling runs markedly faster than
/// with the system allocator (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        Err(problem) => {
            eprintln!("mcp-oauth-proxy: {problem}");
            return ExitCode::from(2);
        }
    };
    // A missing .env is fine (the environment alone may configure the
    // service); a broken one stops start-up.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("mcp-oauth-proxy: cannot read .env: {e}");
            return ExitCode::from(2);
        }
    }
    match command {
        Command::Serve => serve(),
        Command::Version => {
            println!("{}", cli::version());
            ExitCode::SUCCESS
        }
        Command::Help => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::AuditVerify(files) => cli::audit::run_verify(&files),
        // Parses the configuration as `serve` does; opens, binds and contacts nothing.
        Command::CheckConfig => ExitCode::from(cli::check_config::run()),
        Command::Admin(args) => ExitCode::from(cli::admin::run(&args)),
    }
}

#[actix_web::main]
async fn serve() -> ExitCode {
    // The configuration first: it says how to log (its errors are printed
    // as they are, and it logs nothing itself).
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mcp-oauth-proxy: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logger(config.operations.log_format);
    if config.disable_transparent_huge_pages {
        if let Err(e) = disable_transparent_huge_pages() {
            log::warn!("cannot opt out of transparent huge pages (OAUTH_PROXY_DISABLE_THP): {e}");
        }
    }
    // The listeners before anything else starts: a port in use stops
    // start-up before the store is opened or the upstream contacted, and
    // leaves no actor running to tear down.
    let bind = config.bind;
    let listener = match TcpListener::bind(bind) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("mcp-oauth-proxy: cannot listen on {bind} (OAUTH_PROXY_BIND): {e}");
            return ExitCode::from(1);
        }
    };
    let admin_listener = match config.operations.admin_bind {
        None => None,
        Some(admin_bind) => match TcpListener::bind(admin_bind) {
            Ok(listener) => Some((admin_bind, listener)),
            Err(e) => {
                eprintln!("mcp-oauth-proxy: cannot listen on {admin_bind} (OAUTH_PROXY_ADMIN_BIND): {e}");
                return ExitCode::from(1);
            }
        },
    };
    let proxy = match OAuthProxy::start(config).await {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("mcp-oauth-proxy: cannot start: {e}{}", what_to_do(&e));
            return ExitCode::from(1);
        }
    };
    // SIGHUP (logrotate's postrotate): the audit writer reopens its file.
    match actix_web::rt::signal::unix::signal(actix_web::rt::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            let audit = proxy.audit().clone();
            actix_web::rt::spawn(async move {
                while hangups.recv().await.is_some() {
                    audit.reopen();
                }
            });
        }
        Err(e) => log::warn!("cannot listen for SIGHUP (the audit log will not be reopened on it): {e}"),
    }
    log::info!(
        "mcp-oauth-proxy listening on http://{bind} (issuer {})",
        proxy.config().issuer
    );
    // Past this point the actors run: every way out shuts them down first
    // (dropping the runtime under their timers would panic).
    if let Some((admin_bind, admin_listener)) = admin_listener {
        match startup::run_admin(admin_listener, proxy.clone()) {
            Ok(admin_server) => {
                log::info!("admin listener on http://{admin_bind} (/metrics, /readyz, /admin)");
                actix_web::rt::spawn(admin_server);
            }
            Err(e) => {
                eprintln!("mcp-oauth-proxy: cannot start the admin listener: {e}");
                proxy.shutdown().await;
                return ExitCode::from(1);
            }
        }
    }
    let server = match startup::run(listener, proxy.clone()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("mcp-oauth-proxy: cannot start the HTTP server: {e}");
            proxy.shutdown().await;
            return ExitCode::from(1);
        }
    };
    // actix-web stops gracefully on SIGINT/SIGTERM; then the actors and their
    // expiry timers stop too.
    let result = server.await;
    proxy.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-oauth-proxy: server error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The log on stderr, filtered by `RUST_LOG` (default `info`): env_logger's
/// lines, or with `OAUTH_PROXY_LOG_FORMAT=json` one JSON object per line
/// (`time` in UTC with milliseconds, `level`, `target`, `message`).
fn init_logger(format: LogFormat) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        builder.format(|out, record| {
            let line = serde_json::json!({
                "time": out.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(out, "{line}")
        });
    }
    builder.init();
}

/// What the operator can do about a start-up failure (appended to its line).
fn what_to_do(error: &StartError) -> &'static str {
    match error {
        StartError::Discovery(_) => {
            "; check OAUTH_PROXY_UPSTREAM_ISSUER (or set OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT and \
             OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT), and set OAUTH_PROXY_EXTRA_CA_FILE if the provider's \
             certificate comes from a private CA"
        }
        StartError::Key(_) => {
            "; check OAUTH_PROXY_JWT_ALGORITHM and the key named (a PEM in the variable, or a file in its _FILE twin)"
        }
        // The storage's own message says what to check (its variable is named).
        StartError::Storage(_) => "",
        StartError::KeyFile(_) => "; check the data directory (OAUTH_PROXY_STORAGE) and its permissions",
        StartError::Audit(_) => "; check OAUTH_PROXY_AUDIT_LOG (the file's directory must exist and be writable)",
    }
}

/// Opts this process out of transparent huge pages (Linux
/// `PR_SET_THP_DISABLE`), as Redis does by default (`disable-thp yes`). Where
/// THP is set to `always`, the kernel's khugepaged thread collapses the
/// process's growing heap into huge pages and takes the proxy's core for
/// several milliseconds at a time, which shows in the proxy's tail latency
/// when it runs on one core (docs/performance.md). Here
/// and not in the library, which forbids `unsafe` and must not change the
/// process of a program that embeds it.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes
    // nothing but this process's THP flag (inherited by its children).
    let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Other systems have no such per-process setting.
#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() -> std::io::Result<()> {
    Ok(())
}
