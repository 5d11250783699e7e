//! The model: a one-hidden-layer MLP classifier whose parameters live in one flat f32 vector
//! (the vector gradcast shares), with gradients from candle's autodiff.
//!
//! Layout of the flat vector: `W1` (`input x hidden`, row-major), `b1` (`hidden`), `W2`
//! (`hidden x classes`), `b2` (`classes`).

use crate::data::Dataset;
use crate::error::CliError;
use crate::rng::SplitMix64;
use candle_core::{D, Device, Tensor, Var};
use core::ops::Range;

/// Shape of the MLP `input -> hidden (ReLU) -> classes (softmax)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mlp {
    /// Input features.
    pub input: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Output classes.
    pub classes: usize,
}

/// The ranges of the four parameter blocks in the flat vector.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Blocks {
    w1: Range<usize>,
    b1: Range<usize>,
    w2: Range<usize>,
    b2: Range<usize>,
}

impl Mlp {
    /// Number of parameters N, `(input + 1) * hidden + (hidden + 1) * classes`, or `None` when
    /// it overflows `usize`. Shapes from the command line go through
    /// [`crate::train::TrainConfig::model`], which also bounds it.
    pub fn checked_num_params(&self) -> Option<usize> {
        let w1 = self.input.checked_mul(self.hidden)?;
        let w2 = self.hidden.checked_mul(self.classes)?;
        w1.checked_add(self.hidden)?
            .checked_add(w2)?
            .checked_add(self.classes)
    }

    /// The blocks' ranges. The shape must have a representable parameter count
    /// ([`Mlp::checked_num_params`]); otherwise this panics on overflow in debug builds.
    fn blocks(&self) -> Blocks {
        let w1 = 0..self.input * self.hidden;
        let b1 = w1.end..w1.end + self.hidden;
        let w2 = b1.end..b1.end + self.hidden * self.classes;
        let b2 = w2.end..w2.end + self.classes;
        Blocks { w1, b1, w2, b2 }
    }

    /// Number of parameters N, the length of the vector gradcast shares.
    pub fn num_params(&self) -> usize {
        self.blocks().b2.end
    }

    /// Glorot-uniform weights and zero biases, from `seed`.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let b = self.blocks();
        let mut p = vec![0.0f32; self.num_params()];
        let mut rng = SplitMix64::new(seed);
        let a1 = (6.0 / (self.input + self.hidden) as f32).sqrt();
        for v in &mut p[b.w1] {
            *v = (2.0 * rng.next_f32() - 1.0) * a1;
        }
        let a2 = (6.0 / (self.hidden + self.classes) as f32).sqrt();
        for v in &mut p[b.w2] {
            *v = (2.0 * rng.next_f32() - 1.0) * a2;
        }
        p
    }

    fn check(&self, params: &[f32], x: &[f32], rows: usize) -> Result<(), CliError> {
        if params.len() != self.num_params() {
            return Err(CliError::Model(format!(
                "{} parameters given, the model has {}",
                params.len(),
                self.num_params()
            )));
        }
        if x.len() != rows * self.input {
            return Err(CliError::Model(format!(
                "{} feature values for {rows} samples of {} features",
                x.len(),
                self.input
            )));
        }
        Ok(())
    }

    /// Logits of `rows` samples.
    fn logits(
        &self,
        w1: &Tensor,
        b1: &Tensor,
        w2: &Tensor,
        b2: &Tensor,
        x: &Tensor,
    ) -> candle_core::Result<Tensor> {
        x.matmul(w1)?
            .broadcast_add(b1)?
            .relu()?
            .matmul(w2)?
            .broadcast_add(b2)
    }

    /// Mean cross-entropy loss of the samples `(x, labels)` and its gradient with respect to
    /// the flat parameter vector (same layout), computed by candle's reverse-mode autodiff.
    ///
    /// # Errors
    /// [`CliError::Model`] on shape mismatches or candle failures.
    pub fn loss_and_grad(
        &self,
        params: &[f32],
        x: &[f32],
        labels: &[u8],
    ) -> Result<(f32, Vec<f32>), CliError> {
        let rows = labels.len();
        self.check(params, x, rows)?;
        if rows == 0 {
            return Ok((0.0, vec![0.0; params.len()]));
        }
        let dev = Device::Cpu;
        let b = self.blocks();
        let w1 = Var::from_slice(&params[b.w1.clone()], (self.input, self.hidden), &dev)?;
        let b1 = Var::from_slice(&params[b.b1.clone()], self.hidden, &dev)?;
        let w2 = Var::from_slice(&params[b.w2.clone()], (self.hidden, self.classes), &dev)?;
        let b2 = Var::from_slice(&params[b.b2.clone()], self.classes, &dev)?;
        let xt = Tensor::from_slice(x, (rows, self.input), &dev)?;
        let logits = self.logits(&w1, &b1, &w2, &b2, &xt)?;
        // log-softmax; the max shift is a constant for the gradient, so it is detached.
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let shifted = logits.broadcast_sub(&max)?;
        let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let log_probs = shifted.broadcast_sub(&lse)?;
        let mut onehot = vec![0.0f32; rows * self.classes];
        for (r, &l) in labels.iter().enumerate() {
            let l = l as usize;
            if l >= self.classes {
                return Err(CliError::Model(format!(
                    "label {l} of sample {r} is not below {} classes",
                    self.classes
                )));
            }
            onehot[r * self.classes + l] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (rows, self.classes), &dev)?;
        let loss = ((log_probs * onehot)?.sum_all()? * (-1.0 / rows as f64))?;
        let grads = loss.backward()?;
        let mut flat = vec![0.0f32; params.len()];
        for (var, range) in [(&w1, b.w1), (&b1, b.b1), (&w2, b.w2), (&b2, b.b2)] {
            let g = grads
                .get(var.as_tensor())
                .ok_or_else(|| CliError::Model("autodiff returned no gradient".into()))?;
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            flat[range].copy_from_slice(&g);
        }
        Ok((loss.to_scalar::<f32>()?, flat))
    }

    /// Fraction of `data` classified correctly (argmax of the logits).
    ///
    /// # Errors
    /// [`CliError::Model`] on shape mismatches or candle failures.
    pub fn accuracy(&self, params: &[f32], data: &Dataset) -> Result<f64, CliError> {
        let rows = data.len();
        self.check(params, &data.features, rows)?;
        if rows == 0 {
            return Ok(0.0);
        }
        let dev = Device::Cpu;
        let b = self.blocks();
        let t =
            |r: Range<usize>, shape: (usize, usize)| Tensor::from_slice(&params[r], shape, &dev);
        let w1 = t(b.w1, (self.input, self.hidden))?;
        let b1 = Tensor::from_slice(&params[b.b1], self.hidden, &dev)?;
        let w2 = t(b.w2, (self.hidden, self.classes))?;
        let b2 = Tensor::from_slice(&params[b.b2], self.classes, &dev)?;
        let xt = Tensor::from_slice(&data.features, (rows, self.input), &dev)?;
        let pred = self
            .logits(&w1, &b1, &w2, &b2, &xt)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?;
        let correct = pred
            .iter()
            .zip(&data.labels)
            .filter(|&(&p, &l)| p == l as u32)
            .count();
        Ok(correct as f64 / rows as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The autodiff gradient matches central finite differences of the loss.
    #[test]
    fn gradient_matches_finite_differences() {
        let m = Mlp {
            input: 5,
            hidden: 4,
            classes: 3,
        };
        let mut p = m.init(3);
        let mut rng = SplitMix64::new(9);
        for v in p.iter_mut() {
            *v += 0.1 * (rng.next_f32() - 0.5);
        }
        let x: Vec<f32> = (0..15).map(|_| rng.next_f32()).collect();
        let y = [0u8, 2, 1];
        let (loss, g) = m.loss_and_grad(&p, &x, &y).unwrap();
        assert!(loss.is_finite() && loss > 0.0);
        let h = 1e-2f32;
        for i in 0..p.len() {
            let mut plus = p.clone();
            plus[i] += h;
            let mut minus = p.clone();
            minus[i] -= h;
            let lp = m.loss_and_grad(&plus, &x, &y).unwrap().0;
            let lm = m.loss_and_grad(&minus, &x, &y).unwrap().0;
            let fd = (lp - lm) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 2e-3,
                "param {i}: autodiff {} vs fd {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn shape_errors_are_reported() {
        let m = Mlp {
            input: 2,
            hidden: 2,
            classes: 2,
        };
        let p = m.init(0);
        assert!(m.loss_and_grad(&p[1..], &[0.0; 2], &[0]).is_err());
        assert!(m.loss_and_grad(&p, &[0.0; 3], &[0]).is_err());
        assert!(m.loss_and_grad(&p, &[0.0; 2], &[5]).is_err());
    }
}
