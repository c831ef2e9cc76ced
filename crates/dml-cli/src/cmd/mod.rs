//! One module per subcommand.

// Defined before the modules, which see them by textual scope.
/// `print!` to stdout that returns the write error instead of panicking: `dml ... | head`
/// closes stdout early, and `main` treats that broken pipe as a quiet end.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `println!` that returns the write error instead of panicking (see [`out!`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `eprintln!` that never panics: a closed or full stderr (`2>&-`, `2>/dev/full`, a pager
/// that quit) loses the message, not the run, whose results go to its folder and stdout.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub mod bench;
pub mod bench_eval;
pub mod bench_gallery;
pub mod bench_losses;
pub mod bench_train;
pub mod embed;
pub mod eval;
pub mod experiment;
pub mod gallery;
pub mod loss;
pub mod report;
pub mod run;
pub mod search;
pub mod train;

/// A subcommand's arguments parsed from `argv` (without the command name), for unit tests.
#[cfg(test)]
pub fn parse_args<A: clap::Args>(argv: &[&str]) -> Result<A, clap::Error> {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }

    Cli::<A>::try_parse_from(std::iter::once("dml").chain(argv.iter().copied())).map(|c| c.args)
}

/// A batch size argument: 1 to [`MAX_BATCH`](dml_train::config::MAX_BATCH) images.
pub fn batch_size_arg() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=dml_train::config::MAX_BATCH as u64)
}

/// A thread count argument: 1 to [`MAX_THREADS`](dml_train::config::MAX_THREADS).
pub fn threads_arg() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=dml_train::config::MAX_THREADS as u64)
}
