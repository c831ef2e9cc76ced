//! The blocked pass over every (query, reference) score that all exact k-NN metrics share.
//!
//! Scores come from one GEMM per tile of `BLOCK` queries x `BLOCK` references
//! ([`dml_core::linalg::matmul_serial`]), then each query's [`Sink`] sees the tile's row (or
//! column) while it is still in cache. Memory is one tile per thread, never a query x
//! reference matrix. When the queries *are* the references (leave-one-out), the score matrix
//! is symmetric: only tiles on or above the diagonal are computed and each off-diagonal tile
//! feeds its rows to the row queries and its columns to the column queries, which halves the
//! multiply-adds. Diagonal tiles are split again so their duplicated half stays small. The
//! merges first test 16 keys at once against the sinks' bounds (AVX2 when the CPU has it) and
//! only look at single keys that can matter.
//!
//! **Threads.** Tiles are the unit of parallel work: each rayon task computes one tile on its
//! own thread and merges it into that thread's private [`Sink::blank`] copies of the sinks,
//! which are [`Sink::absorb`]ed into the caller's sinks at the end (so memory is one tile and
//! one copy of the sinks per thread; callers size their batches of queries for that). An earlier version
//! threaded each GEMM and each merge instead; its fork-join points and the small products of
//! the diagonal tiles left about a tenth of the threads' time idle at 10,000 x 512
//! (docs/benchmarks.md, "Evaluation engine"). Every sink keeps the same result whatever order
//! candidates arrive in (a total order on `(key, index)`, or counts), so the split between
//! threads does not change any number.

use std::sync::Mutex;

use dml_core::linalg::{Transpose, matmul_serial};
use rayon::prelude::*;

/// Rows and columns of a score tile. 1024 x 1024 f32 is 4 MiB: the GEMM packs its operands
/// for L1/L2 itself and the merges read the tile from L3. 512, 1024 and 2048 measured within
/// the (busy) development machine's noise of each other; 1024 keeps the tile and the diagonal
/// waste small (docs/benchmarks.md, "Evaluation engine").
pub(crate) const BLOCK: usize = 1024;

/// Width of the vectorised "can anything here matter?" check.
const LANES: usize = 16;

/// Receives one query's candidates `(key, reference index)`, in no particular order.
///
/// Keys are "lower is closer" scores; ties are the sink's business (every sink here breaks
/// them by the lower reference index, so the order of arrival never matters).
pub(crate) trait Sink: Send + Sized {
    /// No candidate with a key above this can change the sink (`+inf`: any can).
    fn bound(&self) -> f32;
    /// Takes a candidate whose key is `<= self.bound()`.
    fn offer(&mut self, key: f32, index: u32);
    /// A sink for the same query that has seen no candidate: a worker thread's copy.
    fn blank(&self) -> Self;
    /// Takes in what `other`, a [`Sink::blank`] copy of this sink, collected.
    fn absorb(&mut self, other: Self);
}

/// One side of the product: row-major rows and the term added to each scaled dot product.
///
/// The key of (query `q`, reference `r`) is `scale * q.r + offset[r]`: `-2 q.r + |r|^2` ranks
/// like the squared distance (the query's own `|q|^2` is the same for its whole row), and
/// `-q.r` ranks by inner product.
pub(crate) struct Side<'a> {
    /// Row-major values.
    pub data: &'a [f32],
    /// Row length.
    pub dim: usize,
    /// The per-row term of the key when this side's rows are the references (may be empty
    /// for a query side that never is).
    pub offset: Vec<f32>,
}

impl Side<'_> {
    fn rows(&self) -> usize {
        self.data.len() / self.dim
    }

    fn block(&self, start: usize, end: usize) -> &[f32] {
        &self.data[start * self.dim..end * self.dim]
    }
}

/// How the queries relate to the references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Query `i` is reference `i` (same side): compute the upper triangle of tiles only and
    /// exclude the diagonal.
    Symmetric,
    /// Independent sides. With `Some(shift)`, query `i` is reference `i + shift` and is
    /// excluded from its own list (leave-one-out over a subset of queries).
    Separate {
        /// Reference index of query 0, when the queries are a slice of the references.
        self_shift: Option<usize>,
    },
}

/// Feeds every (query, reference) key to the query's sink. `sinks[i]` belongs to query `i`.
///
/// With [`Layout::Symmetric`], `reference` is ignored: the queries are the references.
pub(crate) fn scan<S: Sink>(
    query: &Side<'_>,
    reference: &Side<'_>,
    scale: f32,
    layout: Layout,
    sinks: &mut [S],
) {
    debug_assert_eq!(sinks.len(), query.rows());
    let reference = if layout == Layout::Symmetric {
        query
    } else {
        reference
    };
    let tiles = tiles(layout, query.rows(), reference.rows());
    let pass = Pass {
        query,
        reference,
        scale,
        layout,
    };
    let threads = rayon::current_num_threads();
    if threads == 1 || tiles.len() == 1 {
        let mut buffers = Tile::default();
        for &tile in &tiles {
            pass.run(tile, &mut buffers, sinks);
        }
        return;
    }
    let workers: Vec<Mutex<Worker<S>>> = (0..threads)
        .map(|_| {
            Mutex::new(Worker {
                sinks: sinks.iter().map(Sink::blank).collect(),
                buffers: Tile::default(),
            })
        })
        .collect();
    tiles.par_iter().with_max_len(1).for_each(|&tile| {
        // Each rayon thread has its own worker; `run` never calls into rayon, so a thread
        // holding its lock cannot be handed another tile (which would wait on that lock).
        let me = rayon::current_thread_index().unwrap_or(0) % threads;
        let mut worker = workers[me].lock().unwrap_or_else(|e| e.into_inner());
        let Worker { sinks, buffers } = &mut *worker;
        pass.run(tile, buffers, sinks);
    });
    for worker in workers {
        let copies = worker.into_inner().unwrap_or_else(|e| e.into_inner()).sinks;
        sinks
            .par_iter_mut()
            .zip(copies)
            .with_min_len(256)
            .for_each(|(sink, copy)| sink.absorb(copy));
    }
}

/// A worker thread's private sinks and score buffers.
struct Worker<S> {
    sinks: Vec<S>,
    buffers: Tile,
}

/// The tile of query rows `q0..q0 + BLOCK` against reference rows `r0..r0 + BLOCK` (clipped to
/// the sizes): one unit of parallel work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TileAt {
    q0: usize,
    r0: usize,
}

/// Every tile of the pass, reference blocks outermost, so that consecutive tiles of one
/// thread share their (transposed) reference block. Symmetric: tiles on and above the diagonal.
fn tiles(layout: Layout, n_query: usize, n_ref: usize) -> Vec<TileAt> {
    let mut out = Vec::new();
    for r0 in (0..n_ref).step_by(BLOCK) {
        let last_q = if layout == Layout::Symmetric {
            r0 + 1
        } else {
            n_query
        };
        out.extend((0..last_q).step_by(BLOCK).map(|q0| TileAt { q0, r0 }));
    }
    out
}

/// What every tile of one scan shares.
struct Pass<'s, 'a> {
    query: &'s Side<'a>,
    reference: &'s Side<'a>,
    scale: f32,
    layout: Layout,
}

impl Pass<'_, '_> {
    /// Computes `tile` and merges it into `sinks` (one per query row), on this thread only.
    fn run<S: Sink>(&self, tile: TileAt, buffers: &mut Tile, sinks: &mut [S]) {
        let q1 = (tile.q0 + BLOCK).min(self.query.rows());
        let r1 = (tile.r0 + BLOCK).min(self.reference.rows());
        let (q0, r0) = (tile.q0, tile.r0);
        match self.layout {
            Layout::Symmetric if q0 == r0 => {
                let block = ((r1 - r0) / 4).max(DIAGONAL_LEAF);
                buffers.diagonal(self.query, self.scale, sinks, r0, r1, block);
            }
            Layout::Symmetric => {
                let c = buffers.product(self.query, q0..q1, self.query, r0..r1, self.scale);
                feed_both(self.query, sinks, c, q0..q1, r0..r1);
            }
            Layout::Separate { self_shift } => {
                let c = buffers.product(self.query, q0..q1, self.reference, r0..r1, self.scale);
                let excluded = self_shift.map(|s| q0 + s);
                merge_rows(
                    &mut sinks[q0..q1],
                    c,
                    &self.reference.offset[r0..r1],
                    r0,
                    excluded,
                );
            }
        }
    }
}

/// Feeds an off-diagonal tile `c` of the symmetric scan (rows `q`, columns `r`, `q` before
/// `r`) to the row queries and to the column queries.
fn feed_both<S: Sink>(
    side: &Side<'_>,
    sinks: &mut [S],
    c: &[f32],
    q: std::ops::Range<usize>,
    r: std::ops::Range<usize>,
) {
    let (head, tail) = sinks.split_at_mut(r.start);
    let both = Both {
        rows: &mut head[q.clone()],
        columns: &mut tail[..r.len()],
        row_offset: &side.offset[r.clone()],
        column_offset: &side.offset[q.clone()],
        q0: q.start,
        r0: r.start,
    };
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time by `has_avx2`).
        unsafe { merge_both_avx2(both, c) }
    } else {
        merge_both(both, c);
    }
}

/// The two sets of queries an off-diagonal tile of the symmetric scan feeds.
struct Both<'s, S> {
    /// Sinks of the tile's rows (queries `q0..`).
    rows: &'s mut [S],
    /// Sinks of the tile's columns (queries `r0..`).
    columns: &'s mut [S],
    /// Key offsets of the columns as references (seen by the row queries).
    row_offset: &'s [f32],
    /// Key offsets of the rows as references (seen by the column queries).
    column_offset: &'s [f32],
    q0: usize,
    r0: usize,
}

/// [`merge_both`] compiled for AVX2 (see [`merge_row_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn merge_both_avx2<S: Sink>(both: Both<'_, S>, c: &[f32]) {
    merge_both(both, c);
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn merge_both_avx2<S: Sink>(both: Both<'_, S>, c: &[f32]) {
    merge_both(both, c);
}

/// Row `i` of `c` holds query `q0 + i`'s keys against references `r0..`, and column `j` the
/// keys of query `r0 + j` against references `q0..`. One read of the tile serves both: each
/// 16 keys are tested against the row's bound and against their 16 columns' bounds (kept in
/// a small array), and single keys are looked at only when they can matter. Reading the
/// 4 MiB tile once instead of twice (rows, then columns) matters because the merges stream
/// it from L3.
#[inline(always)]
fn merge_both<S: Sink>(both: Both<'_, S>, c: &[f32]) {
    let Both {
        rows,
        columns,
        row_offset,
        column_offset,
        q0,
        r0,
    } = both;
    let width = columns.len();
    let mut column_bounds: Vec<f32> = columns.iter().map(Sink::bound).collect();
    for (i, (sink, &o)) in rows.iter_mut().zip(column_offset).enumerate() {
        let row = &c[i * width..(i + 1) * width];
        let index = (q0 + i) as u32;
        let mut bound = sink.bound();
        let (chunks, rest) = row.as_chunks::<LANES>();
        let (offset_chunks, offset_rest) = row_offset.as_chunks::<LANES>();
        let (bound_chunks, _) = column_bounds.as_chunks_mut::<LANES>();
        for (g, ((keys, offs), column_bound)) in chunks
            .iter()
            .zip(offset_chunks)
            .zip(bound_chunks)
            .enumerate()
        {
            let j0 = g * LANES;
            if any_within(keys, offs, bound) {
                for (lane, (&k, &ro)) in keys.iter().zip(offs).enumerate() {
                    if k + ro <= bound {
                        sink.offer(k + ro, (r0 + j0 + lane) as u32);
                        bound = sink.bound();
                    }
                }
            }
            if any_below(keys, o, column_bound) {
                for (lane, &k) in keys.iter().enumerate() {
                    if k + o <= column_bound[lane] {
                        let column = &mut columns[j0 + lane];
                        column.offer(k + o, index);
                        column_bound[lane] = column.bound();
                    }
                }
            }
        }
        let j0 = chunks.len() * LANES;
        for (lane, (&k, &ro)) in rest.iter().zip(offset_rest).enumerate() {
            let j = j0 + lane;
            if k + ro <= bound {
                sink.offer(k + ro, (r0 + j) as u32);
                bound = sink.bound();
            }
            if k + o <= column_bounds[j] {
                columns[j].offer(k + o, index);
                column_bounds[j] = columns[j].bound();
            }
        }
    }
}

/// Whether any of 16 keys plus the common `offset` is within its own lane's bound.
#[inline(always)]
fn any_below(keys: &[f32; LANES], offset: f32, bounds: &[f32; LANES]) -> bool {
    let mut any = false;
    for (&k, &b) in keys.iter().zip(bounds) {
        any |= k + offset <= b;
    }
    any
}

/// Diagonal tiles of the symmetric scan are split again down to this size, so the half of
/// each diagonal tile that duplicates the other half stays a negligible cost.
const DIAGONAL_LEAF: usize = 128;

/// A thread's score tile and transposed reference block, reused from tile to tile.
#[derive(Default)]
struct Tile {
    scores: Vec<f32>,
    /// The reference rows of the last product, transposed to `dim x rows`: with the reference
    /// operand laid out this way the GEMM packs it with vector copies; given row-major, its
    /// packing is a strided scalar gather that took a tenth of the scan.
    transposed: Vec<f32>,
    /// Which rows of which side `transposed` holds (the side by its data address).
    transposed_rows: Option<(usize, std::ops::Range<usize>)>,
}

impl Tile {
    /// `scale * a[rows] b[cols]^T`, row-major, in the reused buffer.
    fn product(
        &mut self,
        a: &Side<'_>,
        rows: std::ops::Range<usize>,
        b: &Side<'_>,
        cols: std::ops::Range<usize>,
        scale: f32,
    ) -> &[f32] {
        let (m, n, dim) = (rows.len(), cols.len(), a.dim);
        let key = (b.data.as_ptr() as usize, cols.clone());
        if self.transposed_rows.as_ref() != Some(&key) {
            transpose_rows(b.data, dim, cols, &mut self.transposed);
            self.transposed_rows = Some(key);
        }
        self.scores.resize(self.scores.len().max(m * n), 0.0);
        let c = &mut self.scores[..m * n];
        matmul_serial(
            a.block(rows.start, rows.end),
            Transpose::No,
            &self.transposed,
            Transpose::No,
            m,
            n,
            dim,
            c,
            0.0,
            scale,
        );
        c
    }

    /// Every pair of distinct rows in `start..end` of `side`, each computed once: tiles of
    /// `block` rows above the diagonal feed rows and columns, diagonal ones recurse.
    fn diagonal<S: Sink>(
        &mut self,
        side: &Side<'_>,
        scale: f32,
        sinks: &mut [S],
        start: usize,
        end: usize,
        block: usize,
    ) {
        if end - start <= DIAGONAL_LEAF {
            let c = self.product(side, start..end, side, start..end, scale);
            merge_rows(
                &mut sinks[start..end],
                c,
                &side.offset[start..end],
                start,
                Some(start),
            );
            return;
        }
        for r0 in (start..end).step_by(block) {
            let r1 = (r0 + block).min(end);
            for q0 in (start..r0).step_by(block) {
                let q1 = q0 + block;
                let c = self.product(side, q0..q1, side, r0..r1, scale);
                feed_both(side, sinks, c, q0..q1, r0..r1);
            }
            let sub = (block / 4).max(DIAGONAL_LEAF);
            self.diagonal(side, scale, sinks, r0, r1, sub);
        }
    }
}

/// Rows `rows` of a row-major `dim`-wide matrix, transposed into `out` (`dim x rows.len()`),
/// 16 rows at a time so each output run is contiguous and the 16 input rows stay in L1.
fn transpose_rows(data: &[f32], dim: usize, rows: std::ops::Range<usize>, out: &mut Vec<f32>) {
    const T: usize = 16;
    let width = rows.len();
    out.clear();
    out.resize(dim * width, 0.0);
    let block = &data[rows.start * dim..rows.end * dim];
    for (g, group) in block.chunks(T * dim).enumerate() {
        let group: Vec<&[f32]> = group.chunks_exact(dim).collect();
        for (l, dst) in out.chunks_exact_mut(width).enumerate() {
            for (d, row) in dst[g * T..g * T + group.len()].iter_mut().zip(&group) {
                *d = row[l];
            }
        }
    }
}

/// Row `i` of `c` holds query `i`'s keys (before `offset`) for references `r0..`.
/// `first_excluded`: the reference index of row 0's own item (row `i` excludes it `+ i`).
fn merge_rows<S: Sink>(
    sinks: &mut [S],
    c: &[f32],
    offset: &[f32],
    r0: usize,
    first_excluded: Option<usize>,
) {
    let cols = offset.len();
    let avx2 = has_avx2();
    for (i, sink) in sinks.iter_mut().enumerate() {
        let row = &c[i * cols..(i + 1) * cols];
        let excluded = first_excluded.map(|e| e + i);
        if avx2 {
            // SAFETY: the CPU supports AVX2 (checked at run time by `has_avx2`).
            unsafe { merge_row_avx2(sink, row, offset, r0, excluded) }
        } else {
            merge_row(sink, row, offset, r0, excluded);
        }
    }
}

/// Whether the merges can run their AVX2 builds.
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`merge_row`] compiled for AVX2: the compare-and-skip test then takes two 8-wide vector
/// compares per 16 keys instead of four SSE2 ones (the merges are about a tenth of a scan).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn merge_row_avx2<S: Sink>(
    sink: &mut S,
    row: &[f32],
    offset: &[f32],
    r0: usize,
    excluded: Option<usize>,
) {
    merge_row(sink, row, offset, r0, excluded);
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn merge_row_avx2<S: Sink>(
    sink: &mut S,
    row: &[f32],
    offset: &[f32],
    r0: usize,
    excluded: Option<usize>,
) {
    merge_row(sink, row, offset, r0, excluded);
}

/// Whether any of 16 keys (plus offsets) is within `bound`: branch-free, so it vectorises.
#[inline(always)]
fn any_within(keys: &[f32; LANES], offsets: &[f32; LANES], bound: f32) -> bool {
    let mut any = false;
    for (&k, &o) in keys.iter().zip(offsets) {
        any |= k + o <= bound;
    }
    any
}

#[inline(always)]
fn merge_row<S: Sink>(
    sink: &mut S,
    row: &[f32],
    offset: &[f32],
    r0: usize,
    excluded: Option<usize>,
) {
    let mut bound = sink.bound();
    let offer = |sink: &mut S, bound: &mut f32, from: usize, keys: &[f32], offs: &[f32]| {
        for (lane, (&k, &o)) in keys.iter().zip(offs).enumerate() {
            let key = k + o;
            let index = r0 + from + lane;
            if key <= *bound && Some(index) != excluded {
                sink.offer(key, index as u32);
                *bound = sink.bound();
            }
        }
    };
    let (chunks, rest) = row.as_chunks::<LANES>();
    let (offset_chunks, offset_rest) = offset.as_chunks::<LANES>();
    for (chunk, (keys, offs)) in chunks.iter().zip(offset_chunks).enumerate() {
        if any_within(keys, offs, bound) {
            offer(sink, &mut bound, chunk * LANES, keys, offs);
        }
    }
    offer(sink, &mut bound, chunks.len() * LANES, rest, offset_rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every candidate it is offered.
    struct Everything(Vec<(u32, f32)>);

    impl Sink for Everything {
        fn bound(&self) -> f32 {
            f32::INFINITY
        }
        fn offer(&mut self, key: f32, index: u32) {
            self.0.push((index, key));
        }
        fn blank(&self) -> Self {
            Everything(Vec::new())
        }
        fn absorb(&mut self, other: Self) {
            self.0.extend(other.0);
        }
    }

    fn side(data: &[f32], dim: usize) -> Side<'_> {
        Side {
            data,
            dim,
            offset: dml_core::linalg::row_sq_norms(data, dim),
        }
    }

    fn pseudo_random(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// Every pair exactly once, with `|r|^2 - 2 q.r`, across several tiles and both layouts.
    #[test]
    fn every_pair_is_seen_once_with_its_key() {
        let dim = 3;
        let n = BLOCK + 37;
        let x = pseudo_random(n * dim, 1);
        let s = side(&x, dim);
        let key = |q: usize, r: usize| {
            let dot: f32 = (0..dim).map(|d| x[q * dim + d] * x[r * dim + d]).sum();
            s.offset[r] - 2.0 * dot
        };
        for layout in [
            Layout::Symmetric,
            Layout::Separate {
                self_shift: Some(0),
            },
        ] {
            let mut sinks: Vec<Everything> = (0..n).map(|_| Everything(Vec::new())).collect();
            scan(&s, &s, -2.0, layout, &mut sinks);
            for (q, sink) in sinks.iter_mut().enumerate().step_by(97) {
                sink.0.sort_by_key(|&(i, _)| i);
                let seen: Vec<u32> = sink.0.iter().map(|&(i, _)| i).collect();
                let want: Vec<u32> = (0..n as u32).filter(|&r| r as usize != q).collect();
                assert_eq!(seen, want, "{layout:?} query {q}");
                for &(r, k) in &sink.0 {
                    assert!((k - key(q, r as usize)).abs() < 1e-4, "{layout:?} {q} {r}");
                }
            }
        }
    }

    #[test]
    fn separate_sides_see_the_whole_reference_set() {
        let (dim, nq, nr) = (2, 5, BLOCK + 3);
        let q = pseudo_random(nq * dim, 7);
        let r = pseudo_random(nr * dim, 3);
        let mut sinks: Vec<Everything> = (0..nq).map(|_| Everything(Vec::new())).collect();
        scan(
            &side(&q, dim),
            &side(&r, dim),
            -2.0,
            Layout::Separate { self_shift: None },
            &mut sinks,
        );
        assert!(sinks.iter().all(|s| s.0.len() == nr));
    }
}
