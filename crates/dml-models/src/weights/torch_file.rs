//! Test support: writes a PyTorch `state_dict` file without PyTorch.
//!
//! `torch.save` writes a ZIP archive holding `data.pkl` (a pickle, protocol 2, describing an
//! `OrderedDict` of tensors rebuilt by `torch._utils._rebuild_tensor_v2` from persistent
//! storage ids), one `data/<key>` entry per storage, and `version` / `byteorder` entries. This
//! writes the subset of that format pytorch-reader (burn-store's reader) parses, so the loading
//! tests need no Python.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use zip::write::SimpleFileOptions;

/// Values of one tensor, with their PyTorch storage type.
pub(crate) enum TorchValues {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl TorchValues {
    fn storage_class(&self) -> &'static str {
        match self {
            Self::F32(_) => "FloatStorage",
            Self::I64(_) => "LongStorage",
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::I64(v) => v.len(),
        }
    }

    fn le_bytes(&self) -> Vec<u8> {
        match self {
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// One `state_dict` entry: key, shape (row-major, contiguous) and values.
pub(crate) struct TorchEntry {
    pub(crate) key: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) values: TorchValues,
}

/// Pickle opcodes used below (Python's `pickletools` names).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const GLOBAL: u8 = b'c';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const REDUCE: u8 = b'R';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const BINPERSID: u8 = b'Q';
    pub const NEWFALSE: u8 = 0x89;
    pub const SETITEMS: u8 = b'u';
    pub const STOP: u8 = b'.';
}

struct Pickle(Vec<u8>);

impl Pickle {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(op::GLOBAL);
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    fn str(&mut self, s: &str) {
        self.0.push(op::BINUNICODE);
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, i: usize) {
        self.0.push(op::BININT);
        self.0
            .extend_from_slice(&(i32::try_from(i).unwrap()).to_le_bytes());
    }

    fn int_tuple(&mut self, values: &[usize]) {
        self.0.push(op::MARK);
        for &v in values {
            self.int(v);
        }
        self.0.push(op::TUPLE);
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.0.push(op::EMPTY_TUPLE);
        self.0.push(op::REDUCE);
    }
}

/// The pickle of an `OrderedDict` mapping each key to a tensor on storage `data/<index>`.
fn state_dict_pickle(entries: &[TorchEntry]) -> Vec<u8> {
    let mut p = Pickle(vec![op::PROTO, 2]);
    p.empty_ordered_dict();
    p.0.push(op::MARK);
    for (index, entry) in entries.iter().enumerate() {
        p.str(&entry.key);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.0.push(op::MARK);
        // Persistent id: ('storage', storage class, key, location, element count).
        p.0.push(op::MARK);
        p.str("storage");
        p.global("torch", entry.values.storage_class());
        p.str(&index.to_string());
        p.str("cpu");
        p.int(entry.values.len());
        p.0.push(op::TUPLE);
        p.0.push(op::BINPERSID);
        // storage_offset, size, stride, requires_grad, backward_hooks.
        p.int(0);
        p.int_tuple(&entry.shape);
        let strides: Vec<usize> = (0..entry.shape.len())
            .map(|d| entry.shape[d + 1..].iter().product())
            .collect();
        p.int_tuple(&strides);
        p.0.push(op::NEWFALSE);
        p.empty_ordered_dict();
        p.0.push(op::TUPLE);
        p.0.push(op::REDUCE);
    }
    p.0.push(op::SETITEMS);
    p.0.push(op::STOP);
    p.0
}

/// Writes `entries` as `torch.save(state_dict, path)` would.
pub(crate) fn write_state_dict(path: &Path, entries: &[TorchEntry]) {
    let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut add = |name: &str, bytes: &[u8]| {
        zip.start_file(format!("archive/{name}"), stored).unwrap();
        zip.write_all(bytes).unwrap();
    };
    add("data.pkl", &state_dict_pickle(entries));
    add("byteorder", b"little");
    for (index, entry) in entries.iter().enumerate() {
        add(&format!("data/{index}"), &entry.values.le_bytes());
    }
    add("version", b"3\n");
    zip.finish().unwrap();
}
