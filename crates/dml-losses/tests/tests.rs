//! Integration tests of dml-losses, in one binary (burn is slow to link).

mod adapter;
mod common;
mod gradient_check;
mod pml_equivalence;
mod properties;
mod proxy_losses;
