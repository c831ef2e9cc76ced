//! tmp
pub mod atomic;
pub mod collapse;
pub mod error;
pub mod grid;
pub mod overrides;
pub mod plan;
pub mod record;
pub mod stats;
pub mod store;
pub mod tsne;
pub use collapse::{CollapseRule, Spread};
pub use plan::RunCheck;
