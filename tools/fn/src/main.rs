//! `fn`: index, search, show, check and scaffold the function registry.
//!
//! Each subcommand is a module of [`cli`]: its arguments are one struct whose
//! `run` does the command.

use std::process::ExitCode;

use clap::Parser;

/// `fn index` allocates and frees millions of small values on every core.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `println!` that ends the process quietly when stdout is closed
/// (`fn show x | head`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::stdout_failed(&e);
        }
    };
}

/// `print!` with the same handling as [`say!`].
macro_rules! say_raw {
    ($($arg:tt)*) => {
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            $crate::stdout_failed(&e);
        }
    };
}

mod cli;

/// A closed pipe means the reader has what it wanted: exit 0. Any other
/// write error is reported, exit 2.
fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("fn: cannot write to stdout: {e}");
    std::process::exit(2);
}

/// The function registry: every reusable function is a crate with a `<name>.md` entry.
#[derive(Debug, Parser)]
#[command(name = "fn", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: cli::Command,
}

/// A failure: the message, and the exit code (1 problems found, 2 cannot run).
struct Failure(String, u8);

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(s, 2)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            if !msg.is_empty() {
                eprintln!("fn: {msg}");
            }
            ExitCode::from(code)
        }
    }
}
