//! The training driver's classifiers, built from `candle_nn` modules: an MLP of any depth
//! and a small convnet for square images, plus a seeded initialisation that gives the same
//! parameters in every process.

use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};

/// A classifier: features `(batch, input)` to logits `(batch, classes)`.
pub trait Classifier: Send + Sync {
    /// The logits of a batch.
    ///
    /// # Errors
    /// candle errors (shapes).
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor>;
}

/// An MLP `input -> hidden... -> classes`, ReLU between layers; layers `fc1`, `fc2`, ...
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// Builds the layers' variables through `vb`.
    ///
    /// # Errors
    /// candle errors.
    pub fn new(vb: VarBuilder<'_>, input: usize, hidden: &[usize], classes: usize) -> Result<Self> {
        let mut dims = vec![input];
        dims.extend_from_slice(hidden);
        dims.push(classes);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("fc{}", i + 1))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Mlp { layers })
    }
}

impl Classifier for Mlp {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

/// A small convnet for `side x side` grey images (`side` divisible by 4; 28 for MNIST):
/// `conv1` 3x3, 16 channels, ReLU, 2x2 max-pool; `conv2` 3x3, 32 channels, ReLU, 2x2
/// max-pool; `fc1` to 64 units, ReLU; `fc2` to the classes.
#[derive(Clone, Debug)]
pub struct Cnn {
    side: usize,
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

impl Cnn {
    /// Channels of the first convolution.
    pub const C1: usize = 16;
    /// Channels of the second convolution.
    pub const C2: usize = 32;
    /// Units of the hidden dense layer.
    pub const HIDDEN: usize = 64;

    /// Builds the layers' variables through `vb`.
    ///
    /// # Errors
    /// [`Error::Config`] unless `side` is a positive multiple of 4; candle errors.
    pub fn new(vb: VarBuilder<'_>, side: usize, classes: usize) -> Result<Self> {
        if side == 0 || !side.is_multiple_of(4) {
            return Err(Error::Config(format!(
                "the convnet needs square images whose side is a multiple of 4 (got {side})"
            )));
        }
        let cfg = Conv2dConfig {
            padding: 1,
            ..Conv2dConfig::default()
        };
        let flat = Self::C2 * (side / 4) * (side / 4);
        Ok(Cnn {
            side,
            conv1: candle_nn::conv2d(1, Self::C1, 3, cfg, vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(Self::C1, Self::C2, 3, cfg, vb.pp("conv2"))?,
            fc1: candle_nn::linear(flat, Self::HIDDEN, vb.pp("fc1"))?,
            fc2: candle_nn::linear(Self::HIDDEN, classes, vb.pp("fc2"))?,
        })
    }
}

impl Classifier for Cnn {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let b = x.dim(0)?;
        let h = x.reshape((b, 1, self.side, self.side))?;
        let h = self.conv1.forward(&h)?.relu()?.max_pool2d(2)?;
        let h = self.conv2.forward(&h)?.relu()?.max_pool2d(2)?;
        let h = h.flatten_from(1)?;
        self.fc2.forward(&self.fc1.forward(&h)?.relu()?)
    }
}

/// Which classifier the driver trains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSpec {
    /// [`Mlp`] with these hidden layer widths (`[128]`: the CLI's default job;
    /// `[1024, 1024]`: an MNIST-sized model of 1.9 M parameters).
    Mlp {
        /// Hidden layer widths, input side first.
        hidden: Vec<usize>,
    },
    /// [`Cnn`] for square images.
    Cnn,
}

fn square_side(input: usize) -> Option<usize> {
    let s = (input as f64).sqrt().round() as usize;
    (s * s == input && s > 0 && s.is_multiple_of(4)).then_some(s)
}

impl ModelSpec {
    /// Checks that the model fits inputs of `input` features.
    ///
    /// # Errors
    /// [`Error::Config`]: an MLP with a zero-width layer, a convnet on inputs that are not
    /// square images with a side divisible by 4.
    pub fn check(&self, input: usize, classes: usize) -> Result<()> {
        if input == 0 || classes == 0 {
            return Err(Error::Config(
                "the data have no features or no classes".into(),
            ));
        }
        match self {
            ModelSpec::Mlp { hidden } => {
                if hidden.contains(&0) {
                    return Err(Error::Config(
                        "every hidden layer needs at least one unit".into(),
                    ));
                }
            }
            ModelSpec::Cnn => {
                if square_side(input).is_none() {
                    return Err(Error::Config(format!(
                        "the convnet needs square images with a side divisible by 4 (28x28 for \
                         MNIST); these data have {input} features per sample"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The parameter count for `input` features and `classes` classes, or `None` when it
    /// overflows `u64` or the model does not fit the input ([`ModelSpec::check`]).
    pub fn param_count(&self, input: usize, classes: usize) -> Option<u64> {
        let linear = |i: u64, o: u64| i.checked_mul(o)?.checked_add(o);
        match self {
            ModelSpec::Mlp { hidden } => {
                let mut dims = vec![input as u64];
                dims.extend(hidden.iter().map(|&h| h as u64));
                dims.push(classes as u64);
                dims.windows(2)
                    .try_fold(0u64, |acc, w| acc.checked_add(linear(w[0], w[1])?))
            }
            ModelSpec::Cnn => {
                let side = square_side(input)? as u64;
                let (c1, c2, h) = (Cnn::C1 as u64, Cnn::C2 as u64, Cnn::HIDDEN as u64);
                let flat = c2 * (side / 4) * (side / 4);
                [
                    linear(9, c1)?,
                    linear(9 * c1, c2)?,
                    linear(flat, h)?,
                    linear(h, classes as u64)?,
                ]
                .iter()
                .try_fold(0u64, |acc, &x| acc.checked_add(x))
            }
        }
    }

    /// A short description: `MLP 64-128-10`, `CNN 28x28 (16-32 conv, 64 dense) -> 10`.
    pub fn describe(&self, input: usize, classes: usize) -> String {
        match self {
            ModelSpec::Mlp { hidden } => {
                let mut s = format!("MLP {input}");
                for h in hidden {
                    s.push_str(&format!("-{h}"));
                }
                format!("{s}-{classes}")
            }
            ModelSpec::Cnn => {
                let side = square_side(input).unwrap_or(0);
                format!(
                    "CNN {side}x{side} ({}-{} conv, {} dense) -> {classes}",
                    Cnn::C1,
                    Cnn::C2,
                    Cnn::HIDDEN
                )
            }
        }
    }

    /// Builds the classifier's variables through `vb`.
    ///
    /// # Errors
    /// As [`ModelSpec::check`]; candle errors.
    pub fn build(
        &self,
        vb: VarBuilder<'_>,
        input: usize,
        classes: usize,
    ) -> Result<Box<dyn Classifier>> {
        self.check(input, classes)?;
        Ok(match self {
            ModelSpec::Mlp { hidden } => Box::new(Mlp::new(vb, input, hidden, classes)?),
            ModelSpec::Cnn => Box::new(Cnn::new(vb, square_side(input).unwrap_or(0), classes)?),
        })
    }
}

fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Sets every float variable of `varmap` from `seed`, the same way in every process:
/// weights (rank >= 2) Glorot-uniform, `U(-a, a)` with `a = sqrt(6 / (fan_in + fan_out))`
/// (for a convolution, `fan_in = in * k * k` and `fan_out = out * k * k`); biases (rank 1)
/// zero. Each variable's values come from its own stream, seeded by `seed` and its name, so
/// they do not depend on which other variables exist or on their order.
///
/// # Errors
/// candle errors.
pub fn init_seeded(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Config("the VarMap's lock is poisoned".into()))?;
    for (name, var) in data.iter() {
        if !var.dtype().is_float() {
            continue;
        }
        let dims = var.dims();
        let n = var.elem_count();
        let values: Vec<f32> = if dims.len() >= 2 {
            let field: usize = dims[2..].iter().product();
            let fan_in = dims[1] * field;
            let fan_out = dims[0] * field;
            let a = (6.0 / (fan_in + fan_out).max(1) as f32).sqrt();
            let mut rng = SplitMix64::new(seed ^ name_hash(name));
            (0..n).map(|_| (2.0 * rng.next_f32() - 1.0) * a).collect()
        } else {
            vec![0.0; n]
        };
        let t = Tensor::from_vec(values, dims, &Device::Cpu)?
            .to_dtype(var.dtype())?
            .to_device(var.device())?;
        var.set(&t)?;
    }
    Ok(())
}

/// A fresh `VarMap` with `spec`'s classifier built on the CPU in f32 and initialised from
/// `seed` ([`init_seeded`]).
///
/// # Errors
/// As [`ModelSpec::build`].
pub fn build_seeded(
    spec: &ModelSpec,
    input: usize,
    classes: usize,
    seed: u64,
) -> Result<(VarMap, Box<dyn Classifier>)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = spec.build(vb, input, classes)?;
    init_seeded(&varmap, seed)?;
    Ok((varmap, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_built_models() {
        for (spec, input) in [
            (ModelSpec::Mlp { hidden: vec![128] }, 64),
            (
                ModelSpec::Mlp {
                    hidden: vec![32, 16],
                },
                784,
            ),
            (ModelSpec::Cnn, 784),
            (ModelSpec::Cnn, 64),
        ] {
            let (vm, model) = build_seeded(&spec, input, 10, 1).unwrap();
            let n: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
            assert_eq!(spec.param_count(input, 10), Some(n as u64), "{spec:?}");
            let x = Tensor::zeros((3, input), DType::F32, &Device::Cpu).unwrap();
            assert_eq!(model.logits(&x).unwrap().dims(), &[3, 10]);
        }
        assert_eq!(
            ModelSpec::Mlp { hidden: vec![128] }.param_count(64, 10),
            Some(9610)
        );
        assert_eq!(
            ModelSpec::Mlp {
                hidden: vec![1024, 1024]
            }
            .param_count(784, 10),
            Some(1_863_690)
        );
        assert_eq!(
            ModelSpec::Mlp {
                hidden: vec![usize::MAX]
            }
            .param_count(usize::MAX, 10),
            None
        );
        assert!(ModelSpec::Cnn.check(63, 10).is_err());
        assert!(ModelSpec::Cnn.param_count(63, 10).is_none());
    }

    #[test]
    fn seeded_init_is_deterministic_and_glorot() {
        let spec = ModelSpec::Mlp { hidden: vec![16] };
        let (a, _) = build_seeded(&spec, 8, 4, 7).unwrap();
        let (b, _) = build_seeded(&spec, 8, 4, 7).unwrap();
        let (c, _) = build_seeded(&spec, 8, 4, 8).unwrap();
        let get = |vm: &VarMap, n: &str| {
            vm.data().lock().unwrap()[n]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(get(&a, "fc1.weight"), get(&b, "fc1.weight"));
        assert_ne!(get(&a, "fc1.weight"), get(&c, "fc1.weight"));
        assert!(get(&a, "fc1.bias").iter().all(|&x| x == 0.0));
        let bound = (6.0f32 / 24.0).sqrt();
        assert!(get(&a, "fc1.weight").iter().all(|x| x.abs() <= bound));
    }
}
