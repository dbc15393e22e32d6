//! `double-natpmp`: the command line is the library's (`double_natpmp::cli::main`).

use std::process::ExitCode;

fn main() -> ExitCode {
    double_natpmp::cli::main()
}
