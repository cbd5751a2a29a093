//! The subcommands besides `serve`: `token`, `backup`, `export`,
//! `import`, `check` and `migrate`. Each reads the same `Settings` as the
//! server, writes its result to standard output and its progress and
//! errors to standard error, and ends with a non-zero status on a problem.
//! They log nothing: standard output stays the result alone.

mod transfer;

use std::process::ExitCode;

use crate::auth::{Auth, Perm, MAX_TTL};
use crate::config::{Command, Settings, TokenArgs};
use crate::store;

/// Why a subcommand failed; printed as `tandem: <message>`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Settings(#[from] crate::config::SettingsError),
    #[error(transparent)]
    Key(#[from] crate::auth::KeyError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    pub(crate) fn file(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
        move |source| CliError::File {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Runs `command` to its end.
pub fn run(command: Command, settings: Settings) -> ExitCode {
    let result = match command {
        Command::Serve => Err(CliError::Usage("`serve` is run by main".into())),
        Command::Token(args) => token(&settings, &args),
        Command::Backup { path } => block_on(backup(&settings, path)),
        Command::Export { dir } => block_on(transfer::export(&settings, dir)),
        Command::Import { dir, overwrite } => block_on(transfer::import(&settings, dir, overwrite)),
        Command::Check => block_on(check(&settings)),
        Command::Migrate => block_on(migrate(&settings)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem: {e}");
            ExitCode::FAILURE
        }
    }
}

fn block_on(work: impl std::future::Future<Output = Result<(), CliError>>) -> Result<(), CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the runtime: {e}")))?
        .block_on(work)
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres:") || url.starts_with("postgresql:")
}

/// `tandem token`: signs with the secret the server verifies with, so the
/// API key (or `TANDEM_TOKEN_SECRET`) must be the server's.
fn token(settings: &Settings, args: &TokenArgs) -> Result<(), CliError> {
    let auth = &settings.auth;
    if auth.token_secret.is_none() && auth.api_key.is_none() {
        return Err(CliError::Usage(
            "no TANDEM_TOKEN_SECRET or TANDEM_API_KEY is set: a server without them (dev mode) \
             signs with a random secret of its own, so no token minted here would be accepted"
                .into(),
        ));
    }
    if args.ttl.is_zero() || args.ttl > MAX_TTL {
        return Err(CliError::Usage(format!(
            "--ttl must be between 1s and {}",
            humantime::format_duration(MAX_TTL)
        )));
    }
    let perm = if args.read_only {
        Perm::Read
    } else {
        Perm::Write
    };
    let (token, _) = Auth::new(auth)?.mint(
        &args.doc,
        perm,
        args.ttl,
        args.sub.clone(),
        args.name.clone(),
    )?;
    println!("{token}");
    Ok(())
}

/// `tandem backup PATH`.
async fn backup(settings: &Settings, path: std::path::PathBuf) -> Result<(), CliError> {
    if is_postgres(&settings.database_url) {
        return Err(CliError::Usage(
            "tandem backup copies SQLite databases; back up PostgreSQL with pg_dump, \
             e.g. pg_dump --format=custom --file=tandem.dump \"$TANDEM_DATABASE_URL\""
                .into(),
        ));
    }
    if path.exists() {
        return Err(CliError::Usage(format!(
            "{} exists already; give a new file",
            path.display()
        )));
    }
    eprintln!("backing up to {} ...", path.display());
    store::backup(&settings.database_url, &path).await?;
    let bytes = std::fs::metadata(&path)
        .map_err(CliError::file(&path))?
        .len();
    eprintln!("backed up to {} ({bytes} bytes)", path.display());
    Ok(())
}

/// `tandem check`.
async fn check(settings: &Settings) -> Result<(), CliError> {
    println!("{}", redacted(settings));
    settings.validate()?;
    let auth = Auth::new(&settings.auth)?;
    let algorithms: Vec<String> = auth.algorithms().iter().map(|a| format!("{a:?}")).collect();
    println!("client tokens: {}", algorithms.join(", "));
    let store = store::open_for_tool(&settings.database_url).await?;
    let pinged = store.ping().await;
    store.close().await;
    pinged?;
    println!("database: reachable");
    println!("ok");
    Ok(())
}

/// The effective settings as text, with the API key, the token secret
/// and a database password replaced by `<redacted>`.
fn redacted(settings: &Settings) -> String {
    let mut shown = settings.clone();
    shown.command = None;
    if let Ok(mut url) = url::Url::parse(&shown.database_url) {
        if url.password().is_some() && url.set_password(Some("redacted")).is_ok() {
            shown.database_url = url.to_string();
        }
    }
    // `Secret`'s `Debug` already hides the key and the secret.
    format!("{shown:#?}")
}

/// `tandem migrate`.
async fn migrate(settings: &Settings) -> Result<(), CliError> {
    let store = store::open(&settings.database_url).await?;
    store.close().await;
    eprintln!("migrations applied");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn check_output_hides_secrets() {
        let s = Settings::try_parse_from([
            "tandem",
            "--api-key",
            "hunter2-key",
            "--token-secret",
            "hunter2-secret-hunter2-secret-hunter2",
            "--database-url",
            "postgres://tandem:hunter2-pass@db/tandem",
            "check",
        ])
        .expect("parses");
        let text = redacted(&s);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("db/tandem"), "{text}");
    }

    #[test]
    fn no_subcommand_is_serve_and_subcommands_parse() {
        let s = Settings::try_parse_from(["tandem"]).expect("parses");
        assert_eq!(s.command, None);
        let s = Settings::try_parse_from(["tandem", "token", "--doc", "a", "--read-only"])
            .expect("parses");
        assert!(matches!(s.command, Some(Command::Token(t)) if t.read_only && t.doc == "a"));
        let s = Settings::try_parse_from(["tandem", "import", "d", "--overwrite"]).expect("parses");
        assert!(matches!(
            s.command,
            Some(Command::Import {
                overwrite: true,
                ..
            })
        ));
    }
}
