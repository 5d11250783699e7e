//! An in-memory classification data set, the training driver's input.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};

/// A classification data set: `features` holds `len() * dim` values, row-major; labels are
/// in `0..classes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Row-major features, `dim` per sample.
    pub features: Vec<f32>,
    /// Class labels in `0..classes`.
    pub labels: Vec<u8>,
    /// Features per sample.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the data set has no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The features of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(indices.len() * self.dim);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            features.extend_from_slice(self.row(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            features,
            labels,
            dim: self.dim,
            classes: self.classes,
        }
    }

    /// Checks the invariants: `features.len() == len() * dim`, every label below
    /// `classes`.
    ///
    /// # Errors
    /// [`Error::Train`] saying which one fails.
    pub fn validate(&self) -> Result<()> {
        if Some(self.features.len()) != self.labels.len().checked_mul(self.dim) {
            return Err(Error::Train(format!(
                "{} feature values for {} samples of {} features",
                self.features.len(),
                self.labels.len(),
                self.dim
            )));
        }
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= self.classes)
        {
            return Err(Error::Train(format!(
                "sample {i} has label {l}, not below the {} classes",
                self.classes
            )));
        }
        Ok(())
    }

    /// The samples at `indices` as tensors: features `(k, dim)` f32 and labels `(k,)` u32.
    ///
    /// # Errors
    /// candle errors.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let mut x = Vec::with_capacity(indices.len() * self.dim);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            x.extend_from_slice(self.row(i));
            y.push(self.labels[i] as u32);
        }
        Ok((
            Tensor::from_vec(x, (indices.len(), self.dim), device)?,
            Tensor::from_vec(y, indices.len(), device)?,
        ))
    }
}
