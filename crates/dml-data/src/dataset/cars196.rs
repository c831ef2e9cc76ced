//! Stanford Cars (Cars196) from the devkit's `cars_annos.mat`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use crate::dataset::{DatasetSplits, ImageEntry, ImageList, TestSplit};
use crate::limits::mib;
use crate::mat5::{self, MatValue};
use crate::store::ImageStore;
use crate::{Error, Limits};

/// Reader for Cars196 (Krause et al., 2013) with the deep metric learning split.
///
/// Expects `cars_annos.mat` under `root` (a folder or zip) next to the images it names
/// (`car_ims/000001.jpg`). The file's `annotations` struct array gives each image's
/// `relative_im_path` and `class`; the optional `class_names` cell array names the classes
/// (otherwise a class is named by its id). Classes 1-98 are the training split and 99-196 the
/// test split (Song et al., 2016); the file's own `test` flag (a per-image split) is not used.
pub struct Cars196Dataset;

/// Last class id of the training split.
const LAST_TRAIN_CLASS: f64 = 98.0;
const ANNOTATIONS_FILE: &str = "cars_annos.mat";

impl Cars196Dataset {
    /// Parses `cars_annos.mat` and checks that every image exists, with the default
    /// [`Limits`].
    pub fn open(root: impl AsRef<Path>) -> Result<DatasetSplits, Error> {
        Self::open_with(root, Limits::default())
    }

    /// [`Cars196Dataset::open`] with reads, decoding and the inflated size of compressed
    /// variables bounded by `limits`.
    pub fn open_with(root: impl AsRef<Path>, limits: Limits) -> Result<DatasetSplits, Error> {
        let store = ImageStore::open_with(root, limits)?;
        let mat_path = store.display_path(ANNOTATIONS_FILE);
        let content_error = |reason: String| Error::MatContent {
            path: mat_path.clone(),
            reason,
        };
        let bytes = store.read(ANNOTATIONS_FILE)?;
        let vars = mat5::read_variables(&bytes, limits.max_file_bytes()).map_err(|e| {
            if e.too_large {
                limits.file_too_large(
                    &mat_path,
                    format!(
                        "inflates to more than {} (its compressed variables, up to the one at byte {})",
                        mib(limits.max_file_bytes()),
                        e.offset
                    ),
                )
            } else {
                Error::MatFormat {
                    path: mat_path.clone(),
                    offset: e.offset,
                    reason: e.reason,
                }
            }
        })?;
        let find = |name: &str| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v);

        let class_names = match find("class_names") {
            None => None,
            Some(MatValue::Cell { items, .. }) => {
                let mut names = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        MatValue::Char(s) => names.push(s.trim().to_owned()),
                        other => {
                            return Err(content_error(format!(
                                "class_names{{{}}} is a {}, expected text",
                                i + 1,
                                other.kind()
                            )));
                        }
                    }
                }
                let mut unique = HashSet::new();
                if let Some(dup) = names.iter().find(|n| !unique.insert(n.as_str())) {
                    return Err(content_error(format!(
                        "class name {dup:?} appears twice in class_names"
                    )));
                }
                Some(names)
            }
            Some(other) => {
                return Err(content_error(format!(
                    "class_names is a {}, expected a cell array",
                    other.kind()
                )));
            }
        };

        let Some(MatValue::Struct { fields, items, .. }) = find("annotations") else {
            return Err(content_error("no struct array named `annotations`".into()));
        };
        let field = |name: &str| {
            fields
                .iter()
                .position(|f| f == name)
                .ok_or_else(|| content_error(format!("annotations has no field `{name}`")))
        };
        let (path_field, class_field) = (field("relative_im_path")?, field("class")?);

        let (mut train, mut test) = (Vec::new(), Vec::new());
        for (i, item) in items.iter().enumerate() {
            let at = format!("annotations({})", i + 1);
            let MatValue::Char(path) = &item[path_field] else {
                return Err(content_error(format!("{at}.relative_im_path is not text")));
            };
            let class = item[class_field]
                .as_scalar()
                .filter(|c| *c >= 1.0 && c.fract() == 0.0)
                .ok_or_else(|| content_error(format!("{at}.class is not a positive integer")))?;
            let name = match &class_names {
                Some(names) => names.get(class as usize - 1).cloned().ok_or_else(|| {
                    content_error(format!("{at}.class {class} has no entry in class_names"))
                })?,
                None => format!("{class}"),
            };
            let entry = ImageEntry {
                path: path.trim().to_owned(),
                class: name,
                super_class: None,
                origin: Some(format!("{ANNOTATIONS_FILE} {at}")),
            };
            if class <= LAST_TRAIN_CLASS {
                train.push(entry);
            } else {
                test.push(entry);
            }
        }
        Ok(DatasetSplits {
            train: Arc::new(ImageList::new(
                store.clone(),
                train,
                "Cars196 train split (classes 1-98)",
            )?),
            test: TestSplit::Pooled(Arc::new(ImageList::new(
                store,
                test,
                "Cars196 test split (classes 99-196)",
            )?)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Split;
    use crate::test_support::{MatWrite, TempTree, mat_file};

    /// One annotation as the devkit writes it (bounding box fields included).
    fn annotation(path: &str, class: u8, test: u8) -> Vec<MatWrite> {
        vec![
            MatWrite::Char(path.into()),
            MatWrite::U8(10),
            MatWrite::U8(20),
            MatWrite::U8(200),
            MatWrite::U8(100),
            MatWrite::U8(class),
            MatWrite::U8(test),
        ]
    }

    const FIELDS: [&str; 7] = [
        "relative_im_path",
        "bbox_x1",
        "bbox_y1",
        "bbox_x2",
        "bbox_y2",
        "class",
        "test",
    ];

    fn fabricate(tree: &TempTree, compressed: bool, with_names: bool) {
        let annos = [
            ("car_ims/000001.jpg", 1, 0),
            ("car_ims/000002.jpg", 98, 1),
            ("car_ims/000003.jpg", 99, 0),
            ("car_ims/000004.jpg", 196, 1),
            ("car_ims/000005.jpg", 1, 1),
        ];
        for (i, (p, _, _)) in annos.iter().enumerate() {
            tree.write_png(p, i as u8 + 1);
        }
        let items = annos
            .iter()
            .map(|(p, c, t)| annotation(p, *c, *t))
            .collect();
        let mut vars = vec![(
            "annotations",
            MatWrite::Struct(FIELDS.to_vec(), items),
            compressed,
        )];
        if with_names {
            let names = (1..=196)
                .map(|c| MatWrite::Char(format!("Make {c:03} Sedan 2012")))
                .collect();
            vars.push(("class_names", MatWrite::Cell(names), compressed));
        }
        tree.write("cars_annos.mat", &mat_file(&vars));
    }

    #[test]
    fn reads_devkit_annotations_with_the_98_98_class_split() {
        for (compressed, with_names) in [(false, true), (true, true), (true, false)] {
            let tree = TempTree::new();
            fabricate(&tree, compressed, with_names);
            let splits = Cars196Dataset::open(tree.root()).unwrap();
            let train = splits.get(Split::Train).unwrap();
            let test = splits.get(Split::Test).unwrap();
            assert_eq!((train.len(), test.len()), (3, 2));
            assert_eq!(train.labels(), [0, 1, 0]);
            if with_names {
                assert_eq!(
                    test.class_names(),
                    ["Make 099 Sedan 2012", "Make 196 Sedan 2012"]
                );
            } else {
                assert_eq!(test.class_names(), ["99", "196"]);
            }
            assert_eq!(test.load(1).unwrap().to_luma8().get_pixel(0, 0).0, [4]);
        }
    }

    #[test]
    fn compressed_annotations_inflate_no_further_than_the_file_limit() {
        let tree = TempTree::new();
        fabricate(&tree, true, true);
        let big = MatWrite::Doubles(vec![0.0; 200_000]);
        let mut bytes = std::fs::read(tree.path("cars_annos.mat")).unwrap();
        bytes.extend_from_slice(&mat_file(&[("padding", big, true)])[128..]);
        tree.write("cars_annos.mat", &bytes);
        let limits = Limits {
            max_file_mib: 1,
            ..Limits::default()
        };
        let err = Cars196Dataset::open_with(tree.root(), limits).unwrap_err();
        assert!(
            matches!(err, Error::FileTooLarge { limit_mib: 1, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("cars_annos.mat inflates to more than 1 MiB (its compressed variables, up to the one at byte ")
                && msg.ends_with("), above data.limits.max_file_mib = 1"),
            "{msg}"
        );
        assert!(Cars196Dataset::open(tree.root()).is_ok());
    }

    #[test]
    fn bad_annotations_are_errors_naming_the_file() {
        let tree = TempTree::new();
        tree.write(
            "cars_annos.mat",
            &mat_file(&[(
                "annotations",
                MatWrite::Struct(
                    vec!["relative_im_path"],
                    vec![vec![MatWrite::Char("a.jpg".into())]],
                ),
                false,
            )]),
        );
        let err = Cars196Dataset::open(tree.root()).unwrap_err().to_string();
        assert!(
            err.contains("cars_annos.mat") && err.contains("`class`"),
            "{err}"
        );

        tree.write(
            "cars_annos.mat",
            &mat_file(&[(
                "annotations",
                MatWrite::Struct(FIELDS.to_vec(), vec![annotation("car_ims/none.jpg", 3, 0)]),
                true,
            )]),
        );
        let err = Cars196Dataset::open(tree.root()).unwrap_err().to_string();
        assert!(
            err.contains("car_ims/none.jpg") && err.contains("annotations(1)"),
            "{err}"
        );

        tree.write("cars_annos.mat", b"MATLAB 5.0 MAT-file, truncated");
        let err = Cars196Dataset::open(tree.root()).unwrap_err().to_string();
        assert!(
            err.contains("cars_annos.mat") && err.contains("byte"),
            "{err}"
        );
    }
}
