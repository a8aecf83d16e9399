//! The command line: `mcp-oauth-proxy` alone runs the service; the
//! subcommands check the configuration, verify audit files and drive the
//! admin API.
//!
//! Exit codes: 0 success; 1 a failure (the service unreachable, a broken
//! audit chain, a refused request); 2 a usage or configuration error.

pub mod audit;

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
  check-config                  validate the configuration, print the effective settings
  audit verify FILE...          check the audit trail's hash chain
  admin clients list|show ID|delete ID
  admin grants list [--sub S] [--client C]
  admin grants revoke ID|--sub S
                                drive the admin API (OAUTH_PROXY_ADMIN_URL,
                                OAUTH_PROXY_ADMIN_TOKEN); add --json for JSON
  --version                     print the version
  --help                        print this text

exit codes: 0 success, 1 failure, 2 usage or configuration error
";

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    match args.first().map(String::as_str) {
        None => Ok(Command::Serve),
        Some("--version" | "-V" | "version") => Ok(Command::Version),
        Some("--help" | "-h" | "help") => Ok(Command::Help),
        Some("check-config") => Ok(Command::CheckConfig),
        Some("audit") => match args.get(1).map(String::as_str) {
            Some("verify") if args.len() > 2 => Ok(Command::AuditVerify(args[2..].to_vec())),
            _ => Err("usage: mcp-oauth-proxy audit verify FILE...".into()),
        },
        Some("admin") => Ok(Command::Admin(args[1..].to_vec())),
        Some(other) => Err(format!("unknown command `{other}` (see --help)")),
    }
}

/// `--version`: the crate's version.
pub fn version() -> String {
    format!("mcp-oauth-proxy {}", env!("CARGO_PKG_VERSION"))
}
