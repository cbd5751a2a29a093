//! The `tandem` binary: parse settings, start logging, run the server.

use std::process::ExitCode;

use clap::Parser;
use tandem::app::App;
use tandem::config::Settings;

fn main() -> ExitCode {
    let settings = Settings::parse();
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
