//! `Settings`: every setting is a CLI flag and a `TANDEM_*` environment
//! variable (SPEC §1), parsed once by clap and validated here. Only `app.rs`
//! reads `Settings`; it hands sub-structs to the parts that need them.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const MIB: usize = 1024 * 1024;

/// Tandem: a self-hosted real-time collaboration server for Yjs documents.
#[derive(Parser, Debug, Clone)]
#[command(name = "tandem", version, about, long_about = None)]
pub struct Settings {
    /// What to do; `serve` when none is given. Every setting may come
    /// before or after it: `tandem backup out.db --database-url …`.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on (host:port). Port 0 picks a free port.
    #[arg(
        global = true,
        long,
        env = "TANDEM_BIND",
        default_value = "127.0.0.1:8080"
    )]
    pub bind: String,

    /// Database: `sqlite://PATH` (created with its folder when absent) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` (the database is created when
    /// absent and the user may; migrations run at start). A password in it
    /// is never printed.
    #[arg(
        global = true,
        long,
        env = "TANDEM_DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://./tandem-data/tandem.db"
    )]
    pub database_url: String,

    /// How long an edit received over a WebSocket may wait to be put on the
    /// disk (fsync). It is in the database file at once, so a crash or
    /// `kill -9` of the server never loses it; this bounds what a power cut
    /// or an OS crash can take. `0s`: every commit waits for the disk.
    /// Updates through the HTTP API are on the disk before their 2xx.
    #[arg(global = true, long, env = "TANDEM_SYNC_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub sync_interval: Duration,

    /// Bytes of accepted updates waiting to be written to the database
    /// above which new writes are refused (WebSocket updates closed with
    /// 1013, API writes answered 503) and `/readyz` answers 503, rather
    /// than queued without bound while storage is slow or failing.
    #[arg(global = true, long, env = "TANDEM_PERSIST_BACKLOG_BYTES", default_value_t = 64 * MIB)]
    pub persist_backlog_bytes: usize,

    /// Log format: `pretty` (human) or `json` (one JSON object per line).
    /// Levels and filters come from `RUST_LOG` (default `info`).
    #[arg(global = true, long, env = "TANDEM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// HTTP worker threads: requests and WebSocket handshakes (default: the
    /// number of CPU cores).
    #[arg(global = true, long, env = "TANDEM_WORKERS")]
    pub workers: Option<usize>,

    /// Threads that run the WebSocket connections and the rooms (reading
    /// frames, applying updates, writing them to every peer), the persister
    /// and webhooks (default: one less than the CPU cores, at least 1).
    #[arg(global = true, long, env = "TANDEM_ROOM_THREADS")]
    pub room_threads: Option<usize>,

    /// Relay an update to a room's peers with one io_uring system call for
    /// all of them (Linux); `false` writes to each socket with its own
    /// `send`. Where io_uring is unavailable the server falls back by itself.
    #[arg(global = true, long, env = "TANDEM_IO_URING", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub io_uring: bool,

    /// Redis, for several nodes serving the same documents: `redis://HOST:PORT`.
    /// Needs a PostgreSQL database shared by the nodes. Redis carries
    /// updates and presence between nodes and stores nothing; while it is
    /// unreachable, nodes catch up through the database.
    #[arg(global = true, long, env = "TANDEM_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prepended to every Redis channel and key, for clusters sharing one
    /// Redis beside others' data (clusters on different databases never
    /// see each other's traffic anyway).
    #[arg(global = true, long, env = "TANDEM_REDIS_PREFIX", default_value = "")]
    pub redis_prefix: String,

    /// Serve the browser editor's files from this folder (a build of `web/`)
    /// instead of the copy embedded in the binary: for working on the editor.
    #[arg(global = true, long, env = "TANDEM_WEB_DIR")]
    pub web_dir: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub auth: AuthSettings,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub rooms: RoomSettings,

    #[command(flatten)]
    pub webhooks: WebhookSettings,

    #[command(flatten)]
    pub history: HistorySettings,
}

/// The subcommands. Every one reads the same settings as the server.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Mint a client token with the configured HS256 secret and print it.
    Token(TokenArgs),
    /// Copy the SQLite database to PATH, consistently, while the server
    /// runs (`VACUUM INTO`). Refuses to overwrite PATH.
    Backup {
        /// The new file.
        path: std::path::PathBuf,
    },
    /// Write every document to DIR: `<name>.bin` (its whole state as a
    /// Yjs v1 update) and `<name>.json` (its JSON rendering), names
    /// percent-encoded, listed with their files in `tandem-export.json`.
    Export {
        /// A folder that is absent or empty.
        dir: std::path::PathBuf,
    },
    /// Create the documents of an `export` folder. Refuses (writing
    /// nothing) when one of them exists, unless `--overwrite`.
    Import {
        dir: std::path::PathBuf,
        /// Replace existing documents of the same names (their content is
        /// replaced, not merged). Only for documents nobody has open.
        #[arg(long)]
        overwrite: bool,
    },
    /// Validate the settings, reach the database, print the effective
    /// settings (secrets redacted); exit non-zero on a problem.
    Check,
    /// Run the database migrations and exit.
    Migrate,
}

/// `tandem token`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct TokenArgs {
    /// A document name, or a prefix followed by `*` (`*` alone: every document).
    #[arg(long)]
    pub doc: String,
    /// The user id (`sub` claim).
    #[arg(long, visible_alias = "user")]
    pub sub: Option<String>,
    /// A display name (`name` claim).
    #[arg(long)]
    pub name: Option<String>,
    /// Read-only: the client syncs but cannot write.
    #[arg(long)]
    pub read_only: bool,
    /// Lifetime, such as `1h` or `30d` (at most 30 days).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A secret from the command line or environment; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(Secret(s.to_string()))
        }
    }
}

/// Access control (SPEC §3).
#[derive(Args, Debug, Clone)]
pub struct AuthSettings {
    /// Admin API key: every `/api/*` call needs `Authorization: Bearer <key>`,
    /// and WebSocket clients need a token. Without it the server runs in dev
    /// mode: everything is open.
    #[arg(global = true, long, env = "TANDEM_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// HS256 secret that signs and verifies client tokens, at least 32
    /// bytes (default: derived from the API key, never the key itself; in
    /// dev mode without either, a random secret per process).
    #[arg(
        global = true,
        long,
        env = "TANDEM_TOKEN_SECRET",
        hide_env_values = true
    )]
    pub token_secret: Option<Secret>,

    /// Public key that verifies client tokens signed elsewhere: a PEM text,
    /// or the path of a PEM file. ES256 (P-256), RS256 or EdDSA (Ed25519),
    /// told by the key. HS256 tokens are accepted beside it only when
    /// `TANDEM_TOKEN_SECRET` is set too.
    #[arg(global = true, long, env = "TANDEM_TOKEN_PUBLIC_KEY")]
    pub token_public_key: Option<String>,

    /// When set, client tokens must carry this `iss` claim.
    #[arg(global = true, long, env = "TANDEM_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,

    /// When set, client tokens must carry this `aud` claim.
    #[arg(global = true, long, env = "TANDEM_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,

    /// Browser origins, besides the server's own, whose pages may open
    /// WebSockets (comma-separated, such as `https://app.example.com`; `*`
    /// allows any). Applies in dev mode, and with an API key when set.
    #[arg(global = true, long, env = "TANDEM_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,

    /// Allow dev mode (no API key) on a non-loopback address.
    #[arg(global = true, long, env = "TANDEM_INSECURE_NO_AUTH", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_no_auth: bool,
}

/// Limits of SPEC §6.
#[derive(Args, Debug, Clone)]
pub struct Limits {
    /// Largest WebSocket message a client may send, in bytes; over it the
    /// connection is closed with 4413.
    #[arg(global = true, long, env = "TANDEM_MAX_MESSAGE_BYTES", default_value_t = 16 * MIB)]
    pub max_message_bytes: usize,

    /// Largest encoded document, in bytes; an update that would make it larger
    /// is not applied and its connection is closed with 4413.
    #[arg(global = true, long, env = "TANDEM_MAX_DOCUMENT_BYTES", default_value_t = 64 * MIB)]
    pub max_document_bytes: usize,

    /// Connections per document; one more is closed with 1013.
    #[arg(
        global = true,
        long,
        env = "TANDEM_MAX_CONNECTIONS_PER_DOC",
        default_value_t = 5_000
    )]
    pub max_connections_per_doc: usize,

    /// Connections in total; one more is closed with 1013.
    #[arg(
        global = true,
        long,
        env = "TANDEM_MAX_CONNECTIONS",
        default_value_t = 20_000
    )]
    pub max_connections: usize,

    /// Sustained messages per second per connection (bursts of up to twice
    /// this, and never less than 1,000, are allowed); a connection that keeps
    /// sending faster is closed with 1013. 0 turns the limit off.
    #[arg(
        global = true,
        long,
        env = "TANDEM_MAX_MESSAGES_PER_SECOND",
        default_value_t = 1_000
    )]
    pub max_messages_per_second: u32,

    /// A client's unsent backlog, in bytes; over it the client is closed with
    /// 1013 (it resyncs on reconnect) and the room carries on. A single frame
    /// larger than this is still sent when the backlog is empty.
    #[arg(global = true, long, env = "TANDEM_SEND_QUEUE_BYTES", default_value_t = 32 * MIB)]
    pub send_queue_bytes: usize,
}

/// Room lifecycle and keepalive.
#[derive(Args, Debug, Clone)]
pub struct RoomSettings {
    /// A connection the server sent nothing for this long gets a keepalive
    /// message; one not heard from for this long is pinged (with its next
    /// keepalive, or on its own after twice this).
    #[arg(global = true, long, env = "TANDEM_PING_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// A connection that leaves a ping unanswered for this long is closed
    /// (anything it sends answers; only connections idle for a ping interval
    /// are pinged).
    #[arg(global = true, long, env = "TANDEM_PING_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ping_timeout: Duration,

    /// A document with no connection for this long is unloaded from memory.
    #[arg(global = true, long = "room-idle-timeout", env = "TANDEM_ROOM_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// On SIGTERM/SIGINT, how long to wait for connections to finish their
    /// close handshake and for queued writes, before exiting anyway.
    #[arg(global = true, long, env = "TANDEM_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// A document's stored update log is folded into a snapshot once it holds
    /// this many updates.
    #[arg(
        global = true,
        long,
        env = "TANDEM_COMPACT_AFTER_UPDATES",
        default_value_t = 500
    )]
    pub compact_after_updates: u32,

    /// A document's stored update log is also folded once it holds this
    /// many bytes (a writer that inserts and deletes large content keeps the
    /// document small while its log grows).
    #[arg(global = true, long, env = "TANDEM_COMPACT_AFTER_BYTES", default_value_t = 8 * MIB as u64)]
    pub compact_after_bytes: u64,
}

/// Document history (SPEC §9).
#[derive(Args, Debug, Clone)]
pub struct HistorySettings {
    /// Keep every document's history: automatic versions, and the deleted
    /// content versions need kept through compaction. Off: no automatic
    /// versions, and compaction forgets what versions made before held.
    #[arg(global = true, long = "history", env = "TANDEM_HISTORY", default_value = "true",
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub enabled: bool,

    /// While a document changes, an automatic version at most this often:
    /// made this long after the first change it holds.
    #[arg(global = true, long = "history-interval", env = "TANDEM_HISTORY_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Automatic versions older than this are removed (thinned to one an
    /// hour after a day, one a day after a week); named versions stay
    /// until deleted.
    #[arg(global = true, long = "history-retention", env = "TANDEM_HISTORY_RETENTION", default_value = "30days", value_parser = humantime::parse_duration)]
    pub retention: Duration,
}

impl HistorySettings {
    /// The interval when history is on.
    pub fn interval(&self) -> Option<Duration> {
        self.enabled.then_some(self.interval)
    }
}

#[derive(Args, Debug, Clone)]
pub struct WebhookSettings {
    /// Waits between a failed webhook attempt and the next, comma-separated;
    /// each gets ±20 % jitter. After the last, the message has failed.
    #[arg(global = true, long = "webhook-retry-schedule", env = "TANDEM_WEBHOOK_RETRY_SCHEDULE",
          default_value = "5s,5m,30m,2h,5h,10h,10h", value_parser = parse_schedule)]
    pub retry_schedule: RetrySchedule,

    /// How long a webhook endpoint has to answer before the attempt fails.
    #[arg(global = true, long = "webhook-timeout", env = "TANDEM_WEBHOOK_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// `document.updated` is sent this long after a document's last change...
    #[arg(global = true, long = "webhook-debounce", env = "TANDEM_WEBHOOK_DEBOUNCE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub debounce: Duration,

    /// ...and at most this long after its first unreported change.
    #[arg(global = true, long = "webhook-max-wait", env = "TANDEM_WEBHOOK_MAX_WAIT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub max_wait: Duration,

    /// Allow webhooks to loopback, private, link-local and other internal
    /// addresses (self-hosted intranets, tests). Off: such deliveries fail.
    #[arg(global = true, long = "webhook-allow-private", env = "TANDEM_WEBHOOK_ALLOW_PRIVATE", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private: bool,

    /// `include_content` content larger than this (bytes of its JSON) is
    /// left out of `document.updated`, which says `"content_omitted": true`.
    #[arg(global = true, long = "webhook-max-content-bytes", env = "TANDEM_WEBHOOK_MAX_CONTENT_BYTES", default_value_t = 256 * 1024)]
    pub max_content_bytes: usize,

    /// Delivered, failed, held and collapsed messages, with their attempts,
    /// are deleted this long after they were created.
    #[arg(global = true, long = "webhook-log-retention", env = "TANDEM_WEBHOOK_LOG_RETENTION", default_value = "30days", value_parser = humantime::parse_duration)]
    pub log_retention: Duration,

    /// Deliveries in flight to one endpoint at once.
    #[arg(
        global = true,
        long = "webhook-concurrency",
        env = "TANDEM_WEBHOOK_CONCURRENCY",
        default_value_t = 8
    )]
    pub concurrency: u32,
}

/// The waits between attempts of a webhook message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

fn parse_schedule(s: &str) -> Result<RetrySchedule, String> {
    let waits = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| humantime::parse_duration(p).map_err(|e| format!("`{p}`: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RetrySchedule(waits))
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Checks what clap cannot, with messages that say what to fix.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |m: &str| Err(SettingsError::Invalid(m.to_string()));
        let l = &self.limits;
        if l.max_message_bytes < 1024 {
            return invalid("TANDEM_MAX_MESSAGE_BYTES must be at least 1024");
        }
        if l.max_document_bytes < 1024 {
            return invalid("TANDEM_MAX_DOCUMENT_BYTES must be at least 1024");
        }
        if l.max_connections == 0 || l.max_connections_per_doc == 0 {
            return invalid(
                "TANDEM_MAX_CONNECTIONS and TANDEM_MAX_CONNECTIONS_PER_DOC must be at least 1",
            );
        }
        if l.send_queue_bytes < 64 * 1024 {
            return invalid("TANDEM_SEND_QUEUE_BYTES must be at least 65536");
        }
        if self.workers == Some(0) || self.room_threads == Some(0) {
            return invalid("TANDEM_WORKERS and TANDEM_ROOM_THREADS must be at least 1");
        }
        if let Err(e) = crate::auth::AllowedOrigins::parse(self.auth.allowed_origins.as_deref()) {
            return Err(SettingsError::Invalid(format!(
                "TANDEM_ALLOWED_ORIGINS: {e}"
            )));
        }
        let r = &self.rooms;
        if r.ping_interval.is_zero() || r.ping_timeout <= r.ping_interval {
            return invalid(
                "TANDEM_PING_TIMEOUT must be longer than TANDEM_PING_INTERVAL, and both above zero",
            );
        }
        if r.compact_after_updates < 2 {
            return invalid("TANDEM_COMPACT_AFTER_UPDATES must be at least 2");
        }
        if r.compact_after_bytes < 64 * 1024 {
            return invalid("TANDEM_COMPACT_AFTER_BYTES must be at least 65536");
        }
        if self.persist_backlog_bytes < 64 * 1024 {
            return invalid("TANDEM_PERSIST_BACKLOG_BYTES must be at least 65536");
        }
        let w = &self.webhooks;
        if w.timeout.is_zero() || w.concurrency == 0 {
            return invalid(
                "TANDEM_WEBHOOK_TIMEOUT and TANDEM_WEBHOOK_CONCURRENCY must be above zero",
            );
        }
        if w.max_wait < w.debounce {
            return invalid("TANDEM_WEBHOOK_MAX_WAIT must be at least TANDEM_WEBHOOK_DEBOUNCE");
        }
        if self.history.interval.is_zero() || self.history.retention.is_zero() {
            return invalid(
                "TANDEM_HISTORY_INTERVAL and TANDEM_HISTORY_RETENTION must be above zero",
            );
        }
        if self.auth.api_key.is_none() && !self.auth.insecure_no_auth && !is_loopback(&self.bind) {
            return invalid("refusing to serve without TANDEM_API_KEY on a non-loopback address; set TANDEM_API_KEY, or pass --insecure-no-auth to run open anyway");
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres:")
            || self.database_url.starts_with("postgresql:"))
        {
            return invalid("TANDEM_DATABASE_URL must start with sqlite:// or postgres://");
        }
        Ok(())
    }
}

/// Whether `bind` (host:port) names a loopback address.
fn is_loopback(bind: &str) -> bool {
    let host = bind.rsplit_once(':').map_or(bind, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_meet_the_spec_minimums() {
        let s = Settings::try_parse_from(["tandem"]).expect("defaults parse");
        s.validate().expect("defaults are valid");
        assert!(s.limits.max_message_bytes >= MIB && s.limits.max_message_bytes < 64 * MIB);
        assert!(s.limits.max_document_bytes >= 16 * MIB);
        assert_eq!(s.bind, "127.0.0.1:8080");
        assert_eq!(s.persist_backlog_bytes, 64 * MIB);
        assert_eq!(s.rooms.compact_after_bytes, 8 * MIB as u64);
    }

    #[test]
    fn flags_override_defaults() {
        let s = Settings::try_parse_from([
            "tandem",
            "--bind",
            "127.0.0.1:0",
            "--ping-interval",
            "1s",
            "--ping-timeout",
            "3s",
        ])
        .expect("parses");
        assert_eq!(s.bind, "127.0.0.1:0");
        assert_eq!(s.rooms.ping_interval, Duration::from_secs(1));
    }

    #[test]
    fn webhook_schedule_parses() {
        let s = Settings::try_parse_from(["tandem", "--webhook-retry-schedule", "1s, 500ms,2m"])
            .expect("parses");
        assert_eq!(
            s.webhooks.retry_schedule.0,
            vec![
                Duration::from_secs(1),
                Duration::from_millis(500),
                Duration::from_secs(120)
            ]
        );
        let d = Settings::try_parse_from(["tandem"]).expect("parses");
        assert_eq!(d.webhooks.retry_schedule.0.len(), 7);
        assert!(!d.webhooks.allow_private);
        assert!(Settings::try_parse_from(["tandem", "--webhook-retry-schedule", "5x"]).is_err());
    }

    #[test]
    fn dev_mode_refuses_public_addresses_unless_told() {
        let open = Settings::try_parse_from(["tandem", "--bind", "0.0.0.0:8080"]).expect("parses");
        let err = open.validate().expect_err("refused").to_string();
        assert!(err.contains("TANDEM_API_KEY"), "{err}");
        for ok in [
            vec!["tandem", "--bind", "0.0.0.0:8080", "--insecure-no-auth"],
            vec!["tandem", "--bind", "0.0.0.0:8080", "--api-key", "k"],
            vec!["tandem", "--bind", "[::1]:8080"],
            vec!["tandem", "--bind", "localhost:8080"],
        ] {
            let s = Settings::try_parse_from(ok.clone()).expect("parses");
            assert!(s.validate().is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let s = Settings::try_parse_from(["tandem", "--api-key", "hunter2-key"]).expect("parses");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn bad_values_say_what_to_fix() {
        let s =
            Settings::try_parse_from(["tandem", "--database-url", "mysql://x"]).expect("parses");
        let err = s.validate().expect_err("mysql is refused").to_string();
        assert!(err.contains("TANDEM_DATABASE_URL"), "{err}");
        for flag in ["--workers", "--room-threads"] {
            let s = Settings::try_parse_from(["tandem", flag, "0"]).expect("parses");
            let err = s.validate().expect_err("no threads is refused").to_string();
            assert!(err.contains("TANDEM_ROOM_THREADS"), "{err}");
        }
        let s = Settings::try_parse_from(["tandem", "--sync-interval", "250ms"]).expect("parses");
        assert_eq!(s.sync_interval, Duration::from_millis(250));
    }
}
