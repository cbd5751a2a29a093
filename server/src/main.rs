//! The `tandem` binary: parse settings; with no subcommand (or `serve`),
//! start logging and run the server; otherwise run the subcommand (see
//! `cli`).

use std::process::ExitCode;

use clap::Parser;
use tandem::app::App;
use tandem::config::{Command, Settings};

fn main() -> ExitCode {
    let settings = Settings::parse();
    match settings.command.clone() {
        None | Some(Command::Serve) => serve(settings),
        Some(command) => tandem::cli::run(command, settings),
    }
}

fn serve(settings: Settings) -> ExitCode {
    tandem::telemetry::init(settings.log_format);
    let result = actix_web::rt::System::new().block_on(async move {
        let app = App::build(settings).await?;
        app.run_until_stopped().await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tandem: {e}");
            ExitCode::FAILURE
        }
    }
}
