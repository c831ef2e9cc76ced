//! Property tests of the case-file parser: whatever the bytes, [`run_case_file`] returns a
//! document or an error, never panics and never allocates from a size the file only declares.

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::{Value, json};

use super::*;
use crate::cases::{SUPPORTED_DISTANCES, SUPPORTED_LOSSES, SUPPORTED_MINERS, SUPPORTED_REDUCERS};

/// Few cases with a fixed seed: the whole module runs in seconds, the same way every time.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(11),
        ..ProptestConfig::default()
    }
}

/// Keys of constructor parameters (the file- and case-level keys are the parser's own
/// lists), so that generated objects reach deep code.
const PARAM_KEYS: &[&str] = &[
    "dtype",
    "cases",
    "margin",
    "pos_margin",
    "neg_margin",
    "distance",
    "reducer",
    "swap",
    "smooth_loss",
    "alpha",
    "beta",
    "base",
    "lambda",
    "normalize_embeddings",
    "temperature",
    "num_classes",
    "embedding_size",
    "softmax_scale",
    "scale",
    "m",
    "gamma",
    "nu",
    "learn_beta",
    "triplets_per_anchor",
    "embedding_regularizer",
    "embedding_reg_weight",
    "weight_regularizer",
    "weight_reg_weight",
    "collect_stats",
    "type_of_triplets",
    "epsilon",
    "cutoff",
    "nonzero_loss_cutoff",
    "seed",
    "low",
    "high",
    "p",
    "power",
];

/// Every key the parser or a constructor reads.
fn keys() -> Vec<&'static str> {
    CASE_KEYS.iter().chain(PARAM_KEYS).copied().collect()
}

/// Strings the parser gives meaning to: keys, class names, dtypes and enum values.
fn word() -> impl Strategy<Value = String> {
    let known: Vec<&'static str> = keys()
        .iter()
        .chain(SUPPORTED_LOSSES)
        .chain(SUPPORTED_MINERS)
        .chain(SUPPORTED_DISTANCES)
        .chain(SUPPORTED_REDUCERS)
        .chain(&[
            "LpRegularizer",
            "float32",
            "float64",
            "all",
            "hard",
            "semihard",
            "easy",
        ])
        .copied()
        .collect();
    prop_oneof![
        4 => proptest::sample::select(known).prop_map(str::to_owned),
        1 => "[a-z_]{0,8}",
    ]
}

/// Numbers, with the edges a size or a parameter can hit.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (-4i64..40).prop_map(Value::from),
        2 => (-3.0f64..3.0).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => proptest::sample::select(vec![0.0, 1e-300, 1e39, -1e39, 1e308, f64::MAX])
            .prop_map(Value::from),
    ]
}

/// Any JSON value, its object keys and strings mostly ones the parser knows.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((word(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An `n x d` matrix of small dyadic numbers, which JSON carries exactly.
fn dyadic_matrix(n: usize, d: usize) -> impl Strategy<Value = Vec<Vec<f64>>> {
    proptest::collection::vec(
        proptest::collection::vec((-16i32..16).prop_map(|k| f64::from(k) / 8.0), d),
        n,
    )
}

/// One change that may make a near-valid case invalid.
#[derive(Debug, Clone)]
enum Flaw {
    /// The value at (row, column) of the embeddings replaced.
    Cell(usize, usize, Value),
    /// A row one value longer.
    LongRow(usize),
    /// A row fewer or more than there are labels.
    Rows(bool),
    /// The label of a row replaced.
    Label(usize, Value),
    /// A label fewer or more than there are rows.
    Labels(bool),
}

impl Flaw {
    /// Makes the change to a case's embeddings `x` and `labels` (where they have the row).
    fn apply(self, x: &mut Vec<Vec<Value>>, labels: &mut Vec<Value>) {
        let rows = x.len().max(1);
        let len = labels.len().max(1);
        match self {
            Flaw::Cell(r, c, v) => {
                if let Some(row) = x.get_mut(r % rows) {
                    let cols = row.len().max(1);
                    if let Some(cell) = row.get_mut(c % cols) {
                        *cell = v;
                    }
                }
            }
            Flaw::LongRow(r) => {
                if let Some(row) = x.get_mut(r % rows) {
                    row.push(json!(0.5));
                }
            }
            Flaw::Rows(true) => {
                if let Some(first) = x.first().cloned() {
                    x.push(first);
                }
            }
            Flaw::Rows(false) => {
                x.pop();
            }
            Flaw::Label(r, v) => {
                if let Some(l) = labels.get_mut(r % len) {
                    *l = v;
                }
            }
            Flaw::Labels(true) => labels.push(json!(0)),
            Flaw::Labels(false) => {
                labels.pop();
            }
        }
    }
}

fn flaw() -> impl Strategy<Value = Flaw> {
    prop_oneof![
        (0usize..8, 0usize..4, json_value()).prop_map(|(r, c, v)| Flaw::Cell(r, c, v)),
        (0usize..8, number()).prop_map(|(r, v)| Flaw::Cell(r, 0, v)),
        (0usize..8).prop_map(Flaw::LongRow),
        any::<bool>().prop_map(Flaw::Rows),
        (0usize..8, number()).prop_map(|(r, v)| Flaw::Label(r, v)),
        any::<bool>().prop_map(Flaw::Labels),
    ]
}

/// Constructor arguments: mostly none or one known key with a number, sometimes anything.
fn params() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => Just(json!({})),
        2 => (proptest::sample::select(keys()), number()).prop_map(|(k, v)| json!({ k: v })),
        1 => Just(Value::Null),
        1 => proptest::collection::vec((proptest::sample::select(keys()), json_value()), 0..3)
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        1 => json_value(),
    ]
}

/// The losses that need proxies (or a learned parameter of that shape).
const PROXY_LOSSES: &[&str] = &["ProxyAnchorLoss", "ProxyNCALoss", "ArcFaceLoss"];

/// A case that is valid but for at most a few [`Flaw`]s and odd constructor arguments: a
/// known loss, perhaps a miner, proxies for the proxy losses, perhaps tuples. Labels are in
/// `0..3`, and proxies have 3 rows, so that most cases get to the kernels.
fn near_case() -> impl Strategy<Value = Value> {
    (2usize..8, 1usize..4).prop_flat_map(|(n, d)| {
        let index = prop_oneof![6 => (0u64..8).prop_map(Value::from), 1 => number()];
        let tuple = proptest::collection::vec(
            proptest::collection::vec(index, 0..6).prop_map(Value::Array),
            2..6,
        );
        (
            proptest::sample::select(SUPPORTED_LOSSES),
            params(),
            proptest::option::weighted(0.4, proptest::sample::select(SUPPORTED_MINERS)),
            params(),
            dyadic_matrix(n, d),
            proptest::collection::vec(0i64..3, n),
            dyadic_matrix(3, d),
            proptest::option::weighted(0.15, tuple),
            prop_oneof![3 => Just(Vec::new()), 1 => proptest::collection::vec(flaw(), 1..3)],
            any::<bool>(),
        )
            .prop_map(
                |(
                    loss,
                    params,
                    miner,
                    miner_params,
                    x,
                    labels,
                    proxies,
                    tuple,
                    flaws,
                    unreduced,
                )| {
                    let mut x: Vec<Vec<Value>> = x
                        .into_iter()
                        .map(|r| r.into_iter().map(Value::from).collect())
                        .collect();
                    let mut labels: Vec<Value> = labels.into_iter().map(Value::from).collect();
                    for f in flaws {
                        f.apply(&mut x, &mut labels);
                    }
                    let mut case = json!({
                        "name": "generated",
                        "loss": loss,
                        "params": params,
                        "embeddings": x,
                        "labels": labels,
                        "unreduced": unreduced,
                    });
                    let obj = case.as_object_mut().expect("built as an object");
                    if let Some(m) = miner {
                        obj.insert("miner".into(), json!(m));
                        obj.insert("miner_params".into(), miner_params);
                    }
                    if PROXY_LOSSES.contains(&loss) {
                        obj.insert("proxies".into(), json!(proxies));
                    }
                    if let Some(t) = tuple {
                        obj.insert("indices_tuple".into(), Value::Array(t));
                    }
                    case
                },
            )
    })
}

/// One case, run alone: the result of the case, or the file-level error.
fn run_one(case: Value, dtype: Option<Dtype>) -> Result<Value> {
    let doc = json!({ "cases": [case] });
    let results = run_case_file(&doc.to_string(), dtype)?;
    Ok(results["results"][0].clone())
}

/// What a result without an `error` must look like: a gradient row per embedding row.
fn check_computed(result: &Value, n: usize, d: usize) -> std::result::Result<(), TestCaseError> {
    let grad = result["grad"]
        .as_array()
        .expect("a computed case has a grad");
    prop_assert_eq!(grad.len(), n);
    for row in grad {
        let row = row.as_array().expect("grad rows are arrays");
        prop_assert_eq!(row.len(), d);
        prop_assert!(
            row.iter()
                .all(|v| v.is_number() || v.is_null() || v.is_string())
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = run_case_file(&String::from_utf8_lossy(&bytes), None);
    }

    #[test]
    fn arbitrary_json_never_panics(doc in json_value(), f64s in any::<bool>()) {
        let dtype = f64s.then_some(Dtype::F64);
        let _ = run_case_file(&doc.to_string(), dtype);
        // The same value as a case, and as the batch of the file, to get past the top level.
        let _ = run_case_file(&json!({ "cases": [doc.clone()] }).to_string(), dtype);
        let wrapped = json!({ "embeddings": doc.clone(), "labels": doc, "cases": [
            { "name": "c", "loss": "ContrastiveLoss" },
        ]});
        let _ = run_case_file(&wrapped.to_string(), dtype);
    }
}

proptest! {
    #![proptest_config(config(384))]

    /// Near-valid cases reach every constructor and kernel: they error or compute, and what
    /// they compute has the batch's shape.
    #[test]
    fn near_valid_cases_error_or_compute_the_batch_shape(case in near_case(), f64s in any::<bool>()) {
        let rows = case["embeddings"].as_array().map_or(0, Vec::len);
        let width = case["embeddings"][0].as_array().map_or(0, Vec::len);
        let labels = case["labels"].as_array().map_or(0, Vec::len);
        let result = run_one(case, f64s.then_some(Dtype::F64)).expect("the file is well-formed");
        match result.get("error").and_then(Value::as_str) {
            Some(message) => prop_assert!(message.starts_with("case `generated`"), "{}", message),
            None => {
                // Sizes that disagree never compute.
                prop_assert_eq!(labels, rows);
                check_computed(&result, rows, width)?;
            }
        }
    }

    /// A valid case computes, and its numbers survive a round trip through the file: the
    /// parser reads back exactly the matrix and labels that were written, whatever the
    /// formatting.
    #[test]
    fn valid_cases_round_trip(
        (values, labels) in (2usize..7, 1usize..4).prop_flat_map(|(n, d)| {
            (dyadic_matrix(n, d), proptest::collection::vec(0i64..3, n))
        }),
        loss in proptest::sample::select(&["ContrastiveLoss", "TripletMarginLoss",
            "MultiSimilarityLoss", "NTXentLoss", "CircleLoss", "SupConLoss",
            "LiftedStructureLoss", "MarginLoss"][..]),
    ) {
        let (n, d) = (values.len(), values[0].len());
        let case = json!({ "name": "v", "loss": loss, "embeddings": values, "labels": labels });
        let compact: Value = serde_json::from_str(&case.to_string()).unwrap();
        let pretty: Value = serde_json::from_str(&serde_json::to_string_pretty(&case).unwrap()).unwrap();
        prop_assert_eq!(&compact, &case);
        prop_assert_eq!(&pretty, &case);
        let (parsed, rows, cols) = matrix::<f64>("embeddings", &compact["embeddings"]).unwrap();
        prop_assert_eq!((rows, cols), (n, d));
        prop_assert_eq!(parsed, values.concat());
        prop_assert_eq!(super::labels(&compact["labels"]).unwrap(), labels);
        let result = run_one(case.clone(), Some(Dtype::F64)).unwrap();
        prop_assert!(result.get("error").is_none(), "{}", result);
        check_computed(&result, n, d)?;
        let again = run_case_file(
            &serde_json::to_string_pretty(&json!({ "cases": [case] })).unwrap(),
            Some(Dtype::F64),
        ).unwrap();
        prop_assert_eq!(&again["results"][0], &result);
    }

    /// Labels and rows that disagree in count, or rows of different widths, are errors.
    #[test]
    fn sizes_that_disagree_are_errors(
        n in 2usize..7,
        d in 1usize..4,
        labels_off in prop_oneof![Just(-1i64), Just(1), Just(5)],
        short_row in proptest::option::of(0usize..7),
    ) {
        let mut values = vec![vec![0.25; d]; n];
        if let Some(r) = short_row {
            values[r % n].push(0.5);
        }
        let count = usize::try_from(n as i64 + labels_off).unwrap();
        let labels: Vec<i64> = (0..count as i64).map(|i| i % 2).collect();
        let case = json!({ "name": "c", "loss": "ContrastiveLoss",
                           "embeddings": values, "labels": labels });
        let result = run_one(case, None).unwrap();
        let error = result["error"].as_str().unwrap_or_default();
        prop_assert!(error.contains("values, row 0 has") || error.contains("labels"), "{}", result);
    }

    /// Numbers that are not finite in the compute type are rejected, naming the input: a
    /// JSON number beyond f32 (in f32), and the spellings JSON has no number for.
    #[test]
    fn non_finite_numbers_are_rejected(
        n in 2usize..6,
        d in 1usize..4,
        at in (0usize..6, 0usize..4),
        bad in prop_oneof![
            Just(json!(1e39)), Just(json!(-1e39)), Just(json!(f64::MAX)),
            Just(json!("inf")), Just(json!("-inf")), Just(json!("nan")), Just(Value::Null),
        ],
        in_proxies in any::<bool>(),
    ) {
        let mut values = vec![vec![json!(0.5); d]; n];
        let mut proxies = vec![vec![json!(0.25); d]; 2];
        let target = if in_proxies { &mut proxies } else { &mut values };
        let rows = target.len();
        target[at.0 % rows][at.1 % d] = bad.clone();
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        let case = json!({ "name": "c", "loss": "ProxyAnchorLoss", "embeddings": values,
                           "labels": labels, "proxies": proxies });
        let result = run_one(case, Some(Dtype::F32)).unwrap();
        let error = result["error"].as_str().unwrap_or_default();
        let says = if bad.is_number() { "is not finite as f32" } else { "is not a number" };
        prop_assert!(error.contains(says), "{}: {}", bad, result);
        let what = if in_proxies { "proxies" } else { "embeddings" };
        prop_assert!(error.contains(what), "{}: {}", bad, result);
    }
}

#[test]
fn json_without_a_finite_number_is_not_valid_json() {
    for text in ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"] {
        let doc = format!(r#"{{"cases": [], "embeddings": [[{text}]]}}"#);
        let err = run_case_file(&doc, None).unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{text}: {err}");
    }
}

/// The largest single allocation made on this thread (the test binary's allocator records
/// it), so a test can tell a reservation from a declared size apart from the data's own.
mod largest_allocation {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    std::thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    struct Tracking;

    fn note(size: usize) {
        // `try_with`: no record (rather than a panic) while the thread is being torn down.
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }

    // SAFETY: every call is passed to `System` unchanged; only the size is recorded.
    unsafe impl GlobalAlloc for Tracking {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: the caller's guarantees about `layout` are passed on.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            // SAFETY: `ptr` and `layout` came from this allocator, which is `System`'s.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as for `realloc`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static TRACKING: Tracking = Tracking;

    /// The largest allocation `f` makes on this thread, with its result.
    pub(super) fn during<R>(f: impl FnOnce() -> R) -> (usize, R) {
        let before = LARGEST.with(|l| l.replace(0));
        let out = f();
        let largest = LARGEST.with(|l| l.replace(before.max(l.get())));
        (largest, out)
    }
}

/// Regression: `matrix` reserved `rows x width of row 0` values before it checked the other
/// rows, so one long row followed by many empty ones reserved far more than the file holds
/// (with 2^17 rows, a file under a megabyte, 128 GiB in f64).
#[test]
fn many_empty_rows_after_a_long_one_are_an_error_not_an_allocation() {
    const N: usize = 1 << 12;
    let mut rows = vec![Value::Array(Vec::new()); N];
    rows[0] = json!(vec![0u8; N]);
    let rows = Value::Array(rows);
    let (largest, parsed) = largest_allocation::during(|| matrix::<f64>("embeddings", &rows));
    let error = parsed.unwrap_err().to_string();
    assert!(
        error.contains("row 1 has 0 values, row 0 has 4096"),
        "{error}"
    );
    // The old reservation was N * N * 8 bytes = 128 MiB; the rows themselves need 32 KiB.
    assert!(largest < 1 << 20, "{largest} bytes allocated at once");
}

#[test]
fn declared_sizes_without_data_are_errors() {
    // Proxy and per-class-beta losses sized by a declared `num_classes` alone.
    let batch = json!({ "embeddings": [[0.5, 0.25], [0.25, 0.5]], "labels": [0, 1] });
    for (loss, params) in [
        ("ProxyAnchorLoss", json!({ "num_classes": u64::MAX })),
        (
            "ProxyNCALoss",
            json!({ "num_classes": 1u64 << 40, "embedding_size": 1u64 << 40 }),
        ),
        ("ArcFaceLoss", json!({ "num_classes": u64::MAX })),
        (
            "MarginLoss",
            json!({ "learn_beta": true, "num_classes": u64::MAX }),
        ),
    ] {
        let mut case = batch.clone();
        case["name"] = json!("c");
        case["loss"] = json!(loss);
        case["params"] = params;
        let result = run_one(case, None).unwrap();
        assert!(result["error"].is_string(), "{loss}: {result}");
    }
    // Proxies whose shape disagrees with the declared one.
    let mut case = batch;
    case["name"] = json!("c");
    case["loss"] = json!("ProxyAnchorLoss");
    case["params"] = json!({ "num_classes": 3 });
    case["proxies"] = json!([[0.5, 0.5], [0.25, 0.5]]);
    let result = run_one(case, None).unwrap();
    assert!(
        result["error"].as_str().unwrap().contains("disagree"),
        "{result}"
    );
}

#[test]
fn a_dtype_or_unreduced_of_the_wrong_type_is_an_error_not_a_default() {
    let case = |extra: (&str, Value), top_dtype: Option<Value>| {
        let mut case = json!({
            "name": "one",
            "loss": "ContrastiveLoss",
            "embeddings": [[0.0, 1.0], [1.0, 0.0]],
            "labels": [0, 1],
        });
        case[extra.0] = extra.1;
        let mut top = json!({"cases": [case]});
        if let Some(dtype) = top_dtype {
            top["dtype"] = dtype;
        }
        run_case_file(&top.to_string(), None)
    };
    let ok = case(("unreduced", json!(false)), Some(json!("float64"))).unwrap();
    assert_eq!(ok["meta"]["dtype"], Dtype::F64.pml_name());
    assert!(ok["results"][0].get("error").is_none(), "{ok}");
    for dtype in [json!(64), json!(true), json!("f64")] {
        let err = case(("unreduced", json!(false)), Some(dtype.clone())).unwrap_err();
        assert!(err.to_string().contains("dtype"), "{dtype}: {err}");
    }
    let out = case(("unreduced", json!("yes")), None).unwrap();
    let err = out["results"][0]["error"].as_str().unwrap_or_default();
    assert!(err.contains("unreduced"), "{out}");
}
