//! Reading GGUF files: header, metadata and tensors, with errors that name the file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{InferenceError, Result};

/// An opened GGUF file: its parsed header and a reader for tensor data.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Opens and parses the header; fails with a message naming the file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| InferenceError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 4];
        let invalid = |reason: String| InferenceError::InvalidFile {
            path: path.to_owned(),
            format: "GGUF",
            reason,
        };
        if reader.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            return Err(invalid(
                "the file does not start with the GGUF magic".into(),
            ));
        }
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|source| InferenceError::Io {
                path: path.to_owned(),
                source,
            })?;
        let content = Content::read(&mut reader).map_err(|e| {
            let msg = e.to_string();
            // candle rejects storage types it has no kernels for while
            // parsing the header (IQ quantisations, for instance).
            match msg.split("unknown dtype for tensor ").nth(1) {
                Some(id) => InferenceError::UnsupportedQuantization {
                    path: path.to_owned(),
                    tensor: "(one of the tensors)".into(),
                    dtype: format!("ggml type {}", id.trim()),
                },
                None => invalid(format!("header: {msg}")),
            }
        })?;
        let gguf = Self {
            path: path.to_owned(),
            content,
            reader,
        };
        gguf.check_tensor_extents()?;
        Ok(gguf)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metadata entries.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// A metadata value, or an error naming the missing key.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.metadata_error(key, "not present"))
    }

    /// A string metadata value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)?
            .to_string()
            .map(String::as_str)
            .map_err(|e| self.metadata_error(key, e))
    }

    /// An integer metadata value of any width.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        let n = match v {
            Value::U8(x) => Some(u64::from(*x)),
            Value::U16(x) => Some(u64::from(*x)),
            Value::U32(x) => Some(u64::from(*x)),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.metadata_error(key, "not a non-negative integer"))
    }

    /// A floating-point metadata value.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        match self.get(key)? {
            Value::F32(x) => Ok(f64::from(*x)),
            Value::F64(x) => Ok(*x),
            _ => Err(self.metadata_error(key, "not a float")),
        }
    }

    /// An array metadata value.
    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        self.get(key)?
            .to_vec()
            .map(Vec::as_slice)
            .map_err(|e| self.metadata_error(key, e))
    }

    /// A metadata error naming this file and the key.
    pub fn metadata_error(&self, key: &str, reason: impl ToString) -> InferenceError {
        InferenceError::Metadata {
            path: self.path.clone(),
            key: key.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// The storage type and shape (outermost first) of a tensor, if present.
    pub fn tensor_info(&self, name: &str) -> Option<(GgmlDType, &[usize])> {
        self.content
            .tensor_infos
            .get(name)
            .map(|t| (t.ggml_dtype, t.shape.dims()))
    }

    /// A tensor's header entry, or an error naming the file and the tensor.
    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.content
            .tensor_infos
            .get(name)
            .ok_or_else(|| InferenceError::Tensor {
                path: self.path.clone(),
                tensor: name.to_owned(),
                reason: "missing from the file".into(),
            })
    }

    /// Reads a tensor's stored bytes in pieces of at most `chunk` bytes (a
    /// multiple of its block size), handing each to `sink`. Why not
    /// [`Self::tensor`]: the weights our kernels use are copied into their
    /// own blocks anyway, and a whole-tensor copy first is freed memory the
    /// allocator keeps resident (the bundled model's RSS was 1.9× its file).
    pub fn read_tensor_chunks(
        &mut self,
        name: &str,
        chunk: usize,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<()> {
        let info = self.info(name)?;
        let mut left = stored_bytes(info);
        let start = self.content.tensor_data_offset + info.offset;
        let io = |source| InferenceError::Io {
            path: self.path.clone(),
            source,
        };
        self.reader.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut buf = vec![0u8; chunk.min(left)];
        while left > 0 {
            let piece = &mut buf[..chunk.min(left)];
            self.reader.read_exact(piece).map_err(io)?;
            sink(piece);
            left -= piece.len();
        }
        Ok(())
    }

    /// Reads a tensor into memory.
    pub fn tensor(&mut self, name: &str) -> Result<QTensor> {
        self.info(name)?;
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| InferenceError::Tensor {
                path: self.path.clone(),
                tensor: name.to_owned(),
                reason: e.to_string(),
            })
    }

    /// A truncated download is the most common corruption: find it up front
    /// instead of failing half-way through loading the layers.
    fn check_tensor_extents(&self) -> Result<()> {
        let size = std::fs::metadata(&self.path)
            .map_err(|source| InferenceError::Io {
                path: self.path.clone(),
                source,
            })?
            .len();
        for (name, info) in &self.content.tensor_infos {
            let bytes = stored_bytes(info);
            let end = self
                .content
                .tensor_data_offset
                .saturating_add(info.offset)
                .saturating_add(bytes as u64);
            if end > size {
                return Err(InferenceError::InvalidFile {
                    path: self.path.clone(),
                    format: "GGUF",
                    reason: format!(
                        "truncated: tensor {name} ends at byte {end} but the file has {size} bytes"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Bytes a tensor takes in the file.
fn stored_bytes(info: &TensorInfo) -> usize {
    info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()
}
