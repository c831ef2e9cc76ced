//! What the proxy losses (ProxyAnchor, ProxyNCA, ArcFace) share: checking the proxies and the
//! labels, and PML's miner weights.

use dml_core::Real;

use super::{KernelInput, Selection};
use crate::error::{Error, Result};
use crate::matrix::MatrixRef;

/// The proxies of a batch and the per-row weights a miner implies.
pub(crate) struct ProxyBatch<'a, T> {
    /// `num_classes x d`, row `c` is class `c`'s proxy.
    pub proxies: MatrixRef<'a, T>,
    /// PML's `convert_to_weights`: how often each row appears in the mined tuples, divided by
    /// the largest count; `None` without tuples (all ones).
    pub weights: Option<Vec<T>>,
}

impl<T: Real> ProxyBatch<'_, T> {
    /// Row `i`'s miner weight.
    #[inline]
    pub fn weight(&self, i: usize) -> T {
        self.weights.as_ref().map_or(T::one(), |w| w[i])
    }
}

/// Checks the proxies' shape and that every label is a class index, and computes the miner
/// weights of the selection.
pub(crate) fn proxy_batch<'a, T: Real>(
    input: &KernelInput<'a, T>,
    owner: &'static str,
    num_classes: usize,
) -> Result<ProxyBatch<'a, T>> {
    let (n, d) = (input.embeddings.rows(), input.embeddings.cols());
    let shape_error = |found: String| Error::ParameterShape {
        loss: owner,
        expected: format!("{num_classes} x {d} (proxies: num_classes x embedding width)"),
        found,
    };
    let proxies = input.params.ok_or_else(|| shape_error("none".into()))?;
    if (proxies.rows(), proxies.cols()) != (num_classes, d) {
        return Err(shape_error(format!(
            "{} x {}",
            proxies.rows(),
            proxies.cols()
        )));
    }
    if let Some((row, &label)) = input
        .labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::try_from(l).map_or(true, |c| c >= num_classes))
    {
        return Err(Error::LabelOutOfRange {
            label,
            row,
            num_classes,
        });
    }
    let weights = match input.selection {
        Selection::All => None,
        Selection::Tuples(t) => Some(t.row_weights(n)),
        Selection::Fused(m) => {
            return Err(Error::Case(format!(
                "{owner} cannot fuse {}; mine its tuples first",
                m.name()
            )));
        }
    };
    Ok(ProxyBatch { proxies, weights })
}
