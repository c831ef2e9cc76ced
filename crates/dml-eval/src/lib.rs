//! dml-eval (being written).
