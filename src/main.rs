//! The `pixelcnn` binary: sets up the process, parses the command line with [`pixelcnn::cli::Cli`] and runs it.

use clap::Parser;
use pixelcnn::cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Behave like a Unix tool when the reader goes away (`pixelcnn summary | head`): exit quietly instead of
    // panicking on a broken pipe.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Before any thread or driver call: a private XDG_RUNTIME_DIR where none is set (see runtime_dir::ensure_runtime_dir).
    pixelcnn::runtime_dir::ensure_runtime_dir();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match pixelcnn::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
