//! dml-models (being written).
