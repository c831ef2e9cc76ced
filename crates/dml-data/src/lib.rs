//! dml-data (being written).
