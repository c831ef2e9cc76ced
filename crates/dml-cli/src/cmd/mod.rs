//! One module per subcommand.

pub mod bench;
pub mod bench_eval;
pub mod eval;
pub mod loss;
pub mod report;
