//! The trainer's four parts made from dml's crates: data from dml-data
//! ([`data::RunData`]), the network from dml-models ([`model::build_model`]), the loss from
//! dml-losses ([`loss::build_loss`]) and the metrics from dml-eval
//! ([`evaluator::RetrievalEvaluator`]).

pub mod data;
pub mod evaluator;
pub mod loss;
pub mod model;
