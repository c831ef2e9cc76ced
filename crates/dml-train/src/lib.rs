//! dml-train (being written).
