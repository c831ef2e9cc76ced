//! Checkpoints: one file holding everything needed to resume a run or to embed with its model.
//!
//! The file is a zip archive (stored, not compressed; the `zip` crate checks every entry's
//! CRC on read) with these entries:
//!
//! | entry | content |
//! |---|---|
//! | `FORMAT` | `dml-checkpoint 1` |
//! | `config.json` | the run's resolved [`RunConfig`] |
//! | `trainer.json` | the [`TrainerState`] (position, best metric, early-stopping counter, evaluations) |
//! | `model.bpk` | the model's parameters, burn's module record (burnpack) |
//! | `loss.bpk` | the loss's parameters (empty record for a loss without any) |
//! | `optimizer.bpk` | burn's optimizer record (moments, per parameter id) |
//! | `schedule.bpk` | burn's learning-rate scheduler record (its step counters) |
//!
//! One file (rather than a folder of them) so that replacing a checkpoint is a single atomic
//! rename: a run killed while saving keeps the previous checkpoint whole.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use burn::lr_scheduler::LrSchedulerRecord;
use burn::module::Module;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use crate::atomic;
use crate::config::RunConfig;
use crate::error::Error;
use crate::state::TrainerState;

const FORMAT: &str = "dml-checkpoint 1";

/// The contents of a checkpoint file.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The configuration of the run that wrote it.
    pub config: RunConfig,
    /// The trainer's state when it was written.
    pub state: TrainerState,
    model: Vec<u8>,
    loss: Vec<u8>,
    optimizer: Vec<u8>,
    schedule: Vec<u8>,
    path: PathBuf,
}

impl Checkpoint {
    /// Reads a checkpoint file.
    pub fn read(path: &Path) -> Result<Checkpoint, Error> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let format_error = |reason: String| Error::CheckpointFormat {
            path: path.to_owned(),
            reason,
        };
        let mut archive = zip::ZipArchive::new(file).map_err(|e| format_error(e.to_string()))?;
        let mut entry = |name: &str| -> Result<Vec<u8>, Error> {
            let mut file = archive
                .by_name(name)
                .map_err(|e| format_error(format!("entry {name}: {e}")))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| format_error(format!("entry {name}: {e}")))?;
            Ok(bytes)
        };
        let format = entry("FORMAT")?;
        if format != FORMAT.as_bytes() {
            return Err(format_error(format!(
                "format {:?}, expected {FORMAT:?}",
                String::from_utf8_lossy(&format)
            )));
        }
        let config_json = entry("config.json")?;
        let config = RunConfig::from_json(
            &String::from_utf8_lossy(&config_json),
            &format!("{}: config.json", path.display()),
        )?;
        let state: TrainerState = serde_json::from_slice(&entry("trainer.json")?)
            .map_err(|e| format_error(format!("trainer.json: {e}")))?;
        Ok(Checkpoint {
            config,
            state,
            model: entry("model.bpk")?,
            loss: entry("loss.bpk")?,
            optimizer: entry("optimizer.bpk")?,
            schedule: entry("schedule.bpk")?,
            path: path.to_owned(),
        })
    }

    /// Loads the checkpoint's model parameters into `model` (built from the same
    /// configuration).
    pub fn load_model<M: Module>(&self, model: M) -> Result<M, Error> {
        self.apply(model, &self.model, "model")
    }

    /// Loads the checkpoint's loss parameters into `loss`.
    pub fn load_loss<L: Module>(&self, loss: L) -> Result<L, Error> {
        self.apply(loss, &self.loss, "loss")
    }

    pub(crate) fn load_optimizer(
        &self,
        optimizer: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, Error> {
        optimizer
            .from_bytes(Bytes::from_bytes_vec(self.optimizer.clone()))
            .map_err(|source| self.record_error("optimizer", source))
    }

    pub(crate) fn schedule_record(&self) -> Result<LrSchedulerRecord, Error> {
        LrSchedulerRecord::from_bytes(Bytes::from_bytes_vec(self.schedule.clone()))
            .map_err(|source| self.record_error("schedule", source))
    }

    fn apply<M: Module>(&self, module: M, bytes: &[u8], what: &'static str) -> Result<M, Error> {
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
            .map_err(|source| self.record_error(what, source))?;
        module
            .try_load_record(record)
            .map_err(|source| self.record_error(what, source))
    }

    fn record_error(&self, what: &'static str, source: burn::store::RecordError) -> Error {
        Error::Record {
            path: self.path.clone(),
            what,
            source,
        }
    }
}

/// Everything a checkpoint file is made from, encoded and ready to be written.
pub(crate) struct EncodedCheckpoint {
    bytes: Vec<u8>,
}

impl EncodedCheckpoint {
    /// Encodes the run's current state. `model` and `loss` are cloned handles (cheap: burn
    /// tensors share their storage).
    pub(crate) fn encode<M: Module, L: Module>(
        config: &RunConfig,
        state: &TrainerState,
        model: M,
        loss: L,
        optimizer: &ModuleOptimizer,
        schedule: LrSchedulerRecord,
    ) -> Result<EncodedCheckpoint, Error> {
        let record_error = |what: &'static str| {
            move |source| Error::Record {
                path: PathBuf::from("(checkpoint being written)"),
                what,
                source,
            }
        };
        let model = model
            .into_record()
            .into_bytes()
            .map_err(record_error("model"))?;
        let loss = loss
            .into_record()
            .into_bytes()
            .map_err(record_error("loss"))?;
        let optimizer_record: OptimizerRecord = optimizer.to_record();
        let optimizer = optimizer_record
            .into_bytes()
            .map_err(record_error("optimizer"))?;
        let schedule = schedule.into_bytes().map_err(record_error("schedule"))?;
        let state_json =
            serde_json::to_vec_pretty(state).expect("a TrainerState always serialises");
        let config_json = config.to_json();
        let entries: [(&str, &[u8]); 7] = [
            ("FORMAT", FORMAT.as_bytes()),
            ("config.json", config_json.as_bytes()),
            ("trainer.json", &state_json),
            ("model.bpk", &model),
            ("loss.bpk", &loss),
            ("optimizer.bpk", &optimizer),
            ("schedule.bpk", &schedule),
        ];
        let bytes = zip_entries(&entries).map_err(|e| Error::CheckpointFormat {
            path: PathBuf::from("(checkpoint being written)"),
            reason: e.to_string(),
        })?;
        Ok(EncodedCheckpoint { bytes })
    }

    /// Writes the checkpoint to `path`, atomically.
    pub(crate) fn write(&self, path: &Path) -> Result<(), Error> {
        atomic::write_file(path, &self.bytes)
    }
}

fn zip_entries(entries: &[(&str, &[u8])]) -> zip::result::ZipResult<Vec<u8>> {
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        zip.start_file(*name, options)?;
        zip.write_all(bytes)?;
    }
    Ok(zip.finish()?.into_inner())
}
