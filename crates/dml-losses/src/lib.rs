//! dml-losses (being written).
