//! Errors of the inference runtime.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
///
/// Loading errors name the file and say what is wrong with it, because the
/// person reading them is usually an operator with a bad path or a bad download.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid model file (bad magic, truncated, corrupt).
    #[error("{path}: not a valid {format} model file: {reason}")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// `GGUF` or `safetensors`.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The model's architecture is not one this runtime implements.
    #[error("{path}: unsupported architecture {arch:?} (supported: llama)")]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture the file declares.
        arch: String,
    },
    /// A weight uses a storage type this runtime cannot compute with.
    #[error("{path}: tensor {tensor} uses unsupported type {dtype}")]
    UnsupportedQuantization {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The storage type.
        dtype: String,
    },
    /// A required metadata key or config field is missing or has the wrong type.
    #[error("{path}: missing or invalid {key}: {reason}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The key or field.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A required tensor is missing or has the wrong shape.
    #[error("{path}: tensor {tensor}: {reason}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer could not be built or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A request does not fit the model (too long, empty, bad token id).
    #[error("{0}")]
    InvalidRequest(String),
    /// A constraint was refused (unsupported schema) or not met in time.
    #[error(transparent)]
    Constrain(#[from] crate::constrain::ConstrainError),
    /// A numeric failure inside candle while running the model.
    #[error("model execution failed: {0}")]
    Compute(#[from] candle_core::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = InferenceError> = std::result::Result<T, E>;
