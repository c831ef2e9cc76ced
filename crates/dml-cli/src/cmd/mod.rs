//! One module per subcommand.

pub mod bench;
pub mod bench_eval;
pub mod bench_losses;
pub mod embed;
pub mod eval;
pub mod experiment;
pub mod loss;
pub mod report;
pub mod run;
pub mod train;
