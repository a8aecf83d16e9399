//! The command line: `mcp-oauth-proxy` alone runs the service; the
//! subcommands check the configuration, verify audit files and drive the
//! admin API.
//!
//! Exit codes: 0 success; 1 a failure (the service unreachable, a broken
//! audit chain, a refused request); 2 a usage or configuration error.

pub mod admin;
pub mod audit;
pub mod check_config;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// No arguments: run the service.
    Serve,
    Version,
    Help,
    CheckConfig,
    /// `audit verify FILE...`
    AuditVerify(Vec<String>),
    /// `admin ...` with the arguments after `admin`.
    Admin(Vec<String>),
}

/// The usage text of `--help`.
pub const USAGE: &str = "\
usage: mcp-oauth-proxy [COMMAND]

With no command, runs the service (configured by the environment and .env).

commands:
  check-config                  validate the configuration as the service would and print the
                                effective settings (secrets hidden); opens no store, binds no
                                port, contacts no upstream
  audit verify FILE...          check the audit trail's hash chain
  admin clients list [--name TEXT] [--redirect-host HOST] [--limit N]
  admin clients show ID | admin clients delete ID
  admin grants list [--sub S] [--client C] [--limit N]
  admin grants show ID
  admin grants revoke ID|--sub S
                                drive the admin API at OAUTH_PROXY_ADMIN_URL (default
                                http://<OAUTH_PROXY_ADMIN_BIND>) with OAUTH_PROXY_ADMIN_TOKEN
                                (or OAUTH_PROXY_ADMIN_TOKEN_FILE); tables, or --json for
                                scripts; lists fetch every page unless --limit N
                                (more: mcp-oauth-proxy admin --help)
  --version                     print the version
  --help                        print this text

exit codes: 0 success; 1 failure (service unreachable, token refused, not found, broken
audit chain); 2 usage or configuration error (bad arguments, invalid settings, no admin
URL or token)
";

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    match args.first().map(String::as_str) {
        None => Ok(Command::Serve),
        Some("--version" | "-V" | "version") => Ok(Command::Version),
        Some("--help" | "-h" | "help") => Ok(Command::Help),
        Some("check-config") if args.len() == 1 => Ok(Command::CheckConfig),
        Some("check-config") => Err("usage: mcp-oauth-proxy check-config (no arguments; see --help)".into()),
        Some("audit") => match args.get(1).map(String::as_str) {
            Some("verify") if args.len() > 2 => Ok(Command::AuditVerify(args[2..].to_vec())),
            _ => Err("usage: mcp-oauth-proxy audit verify FILE... (see --help)".into()),
        },
        Some("admin") => Ok(Command::Admin(args[1..].to_vec())),
        Some(other) if other.starts_with('-') => Err(format!("unknown option `{other}` (see --help)")),
        Some(other) => Err(format!("unknown command `{other}` (see --help)")),
    }
}

/// `--version`: the crate's version.
pub fn version() -> String {
    format!("mcp-oauth-proxy {}", env!("CARGO_PKG_VERSION"))
}
