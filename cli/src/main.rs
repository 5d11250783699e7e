//! The `gradcast` binary: see the crate [`gradcast_cli`] for the commands.

fn main() -> std::process::ExitCode {
    gradcast_cli::main_with_args(std::env::args_os())
}
