//! Omniglot: handwritten characters grouped by alphabet.

use std::collections::BTreeSet;
use std::path::Path;

use crate::dataset::{ImageEntry, ImageList};
use crate::store::{ImageStore, is_image_path};
use crate::{Error, Limits};

/// What an Omniglot sample's class is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OmniglotLabel {
    /// Each character of each alphabet is a class (20 drawings each). Default: the standard
    /// few-shot protocol (Lake et al., 2015).
    #[default]
    Character,
    /// Each alphabet is a class: a class made of many modes (its characters).
    Alphabet,
}

/// Reader for Omniglot trees `<Alphabet>/<character>/<drawing>.png`, from a folder or from the
/// distributed zip archives (`images_background_small1.zip`, whose single top folder is skipped).
///
/// The alphabet is always kept as the super-class ([`crate::Dataset::super_label`]), for
/// within-alphabet episodes (20-way one-shot among one alphabet's characters). Character
/// classes are named `<Alphabet>/<character>`, since character folder names repeat across
/// alphabets.
pub struct OmniglotDataset;

impl OmniglotDataset {
    /// Lists the drawings under `root`, labelled by `label`, keeping only the alphabets named in
    /// `alphabets` when it is given (an unknown name is an error listing the known ones), with
    /// the default [`Limits`].
    pub fn open(
        root: impl AsRef<Path>,
        label: OmniglotLabel,
        alphabets: Option<&[String]>,
    ) -> Result<ImageList, Error> {
        Self::open_with(root, label, alphabets, Limits::default())
    }

    /// [`OmniglotDataset::open`] with reads and decoding bounded by `limits`.
    pub fn open_with(
        root: impl AsRef<Path>,
        label: OmniglotLabel,
        alphabets: Option<&[String]>,
        limits: Limits,
    ) -> Result<ImageList, Error> {
        let root = root.as_ref();
        let store = ImageStore::open_with(root, limits)?;
        let mut entries = Vec::new();
        for file in store.files()? {
            if !is_image_path(&file) {
                continue;
            }
            let parts: Vec<&str> = file.rsplitn(4, '/').collect();
            let [_, character, alphabet, ..] = parts.as_slice() else {
                return Err(Error::Layout {
                    path: store.display_path(&file),
                    reason: "expected <alphabet>/<character>/<drawing>.png".into(),
                });
            };
            let class = match label {
                OmniglotLabel::Character => format!("{alphabet}/{character}"),
                OmniglotLabel::Alphabet => (*alphabet).to_owned(),
            };
            entries.push(ImageEntry {
                class,
                super_class: Some((*alphabet).to_owned()),
                path: file.clone(),
                origin: None,
            });
        }
        if let Some(wanted) = alphabets {
            let available: BTreeSet<&str> = entries
                .iter()
                .filter_map(|e| e.super_class.as_deref())
                .collect();
            if let Some(unknown) = wanted.iter().find(|w| !available.contains(w.as_str())) {
                return Err(Error::UnknownName {
                    kind: "alphabet",
                    name: unknown.clone(),
                    available: available.into_iter().map(str::to_owned).collect(),
                });
            }
            entries.retain(|e| e.super_class.as_ref().is_some_and(|a| wanted.contains(a)));
        }
        ImageList::new(store, entries, &format!("Omniglot {}", root.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dataset;
    use crate::test_support::TempTree;

    fn fabricate(tree: &TempTree) {
        for alphabet in ["Greek", "Latin"] {
            for character in ["character01", "character02"] {
                for drawer in 0..3 {
                    tree.write_png(
                        &format!("omni/{alphabet}/{character}/01{drawer}_x.png"),
                        drawer,
                    );
                }
            }
        }
    }

    #[test]
    fn character_or_alphabet_labels_with_alphabet_super_classes() {
        let tree = TempTree::new();
        fabricate(&tree);
        let chars =
            OmniglotDataset::open(tree.path("omni"), OmniglotLabel::Character, None).unwrap();
        assert_eq!(chars.len(), 12);
        assert_eq!(chars.class_names().len(), 4);
        assert_eq!(chars.class_names()[2], "Latin/character01");
        assert_eq!(chars.super_class_names(), ["Greek", "Latin"]);
        let alpha =
            OmniglotDataset::open(tree.path("omni"), OmniglotLabel::Alphabet, None).unwrap();
        assert_eq!(alpha.class_names(), ["Greek", "Latin"]);
        let supers: Vec<usize> = (0..alpha.len())
            .map(|i| alpha.super_label(i).unwrap())
            .collect();
        assert_eq!(alpha.labels(), supers);
        let latin = OmniglotDataset::open(
            tree.path("omni"),
            OmniglotLabel::Character,
            Some(&["Latin".to_owned()]),
        )
        .unwrap();
        assert_eq!(latin.len(), 6);
        let err = OmniglotDataset::open(
            tree.path("omni"),
            OmniglotLabel::Character,
            Some(&["Klingon".to_owned()]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("Klingon") && err.contains("Greek, Latin"),
            "{err}"
        );
    }

    /// The real background_small1 archive: 5 alphabets, 136 characters of 20 drawings each,
    /// 105x105 pixels.
    #[test]
    fn reads_the_real_small1_zip() {
        let zip = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/datasets/omniglot/images_background_small1.zip");
        let list = OmniglotDataset::open(&zip, OmniglotLabel::Character, None).unwrap();
        assert_eq!(
            list.super_class_names(),
            ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
        );
        assert_eq!(list.class_names().len(), 136);
        assert_eq!(list.len(), 136 * 20);
        let mut per_class = vec![0; 136];
        for l in list.labels() {
            per_class[l] += 1;
        }
        assert!(per_class.iter().all(|&n| n == 20));
        let img = list.load(list.len() - 1).unwrap();
        assert_eq!((img.width(), img.height()), (105, 105));
        assert!(list.describe(0).contains("images_background_small1.zip"));
    }
}
