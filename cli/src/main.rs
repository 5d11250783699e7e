//! The `gradcast` binary: see the crate [`gradcast_cli`] for the commands.
#![allow(clippy::std_instead_of_core)]

fn main() -> std::process::ExitCode {
    // candle-core 0.11 asks for its thread count on every matrix product, and without
    // RAYON_NUM_THREADS it counts the physical cores by reading /proc/cpuinfo each time: a
    // third of the default job's time. Fix the count once, to candle's own choice.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        // SAFETY: the first statement of main: no other thread exists yet that could read
        // the environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    gradcast_cli::main_with_args(std::env::args_os())
}
