//! The training driver's optimizers: candle-nn's SGD and AdamW behind one type.

use candle_core::Var;
use candle_core::backprop::GradStore;
use candle_nn::{AdamW, Optimizer, ParamsAdamW, SGD};
use std::fmt;

/// AdamW's hyper-parameters (candle-nn's `ParamsAdamW`, comparable and printable).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AdamWParams {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    /// candle-nn's defaults: lr 1e-3, betas 0.9 / 0.999, eps 1e-8, weight decay 0.01.
    fn default() -> Self {
        let p = ParamsAdamW::default();
        AdamWParams {
            lr: p.lr,
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
        }
    }
}

/// Which optimizer each replica runs.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum OptimizerSpec {
    /// Plain SGD, `params -= lr * gradient` (candle-nn's `SGD`).
    Sgd {
        /// Learning rate.
        lr: f64,
    },
    /// AdamW (candle-nn's `AdamW`).
    AdamW(AdamWParams),
}

impl OptimizerSpec {
    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerSpec::Sgd { lr } => *lr,
            OptimizerSpec::AdamW(p) => p.lr,
        }
    }

    /// `"sgd"` or `"adamw"`.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerSpec::Sgd { .. } => "sgd",
            OptimizerSpec::AdamW(_) => "adamw",
        }
    }
}

impl fmt::Display for OptimizerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptimizerSpec::Sgd { lr } => write!(f, "SGD lr {lr}"),
            OptimizerSpec::AdamW(p) => write!(
                f,
                "AdamW lr {} betas {}/{} eps {} weight decay {}",
                p.lr, p.beta1, p.beta2, p.eps, p.weight_decay
            ),
        }
    }
}

/// candle-nn's SGD or AdamW, chosen at run time.
#[derive(Debug)]
pub enum AnyOptimizer {
    /// SGD.
    Sgd(SGD),
    /// AdamW.
    AdamW(AdamW),
}

impl Optimizer for AnyOptimizer {
    type Config = OptimizerSpec;

    fn new(vars: Vec<Var>, config: OptimizerSpec) -> candle_core::Result<Self> {
        Ok(match config {
            OptimizerSpec::Sgd { lr } => AnyOptimizer::Sgd(SGD::new(vars, lr)?),
            OptimizerSpec::AdamW(p) => AnyOptimizer::AdamW(AdamW::new(
                vars,
                ParamsAdamW {
                    lr: p.lr,
                    beta1: p.beta1,
                    beta2: p.beta2,
                    eps: p.eps,
                    weight_decay: p.weight_decay,
                },
            )?),
        })
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        match self {
            AnyOptimizer::Sgd(o) => o.step(grads),
            AnyOptimizer::AdamW(o) => o.step(grads),
        }
    }

    fn learning_rate(&self) -> f64 {
        match self {
            AnyOptimizer::Sgd(o) => o.learning_rate(),
            AnyOptimizer::AdamW(o) => o.learning_rate(),
        }
    }

    fn set_learning_rate(&mut self, lr: f64) {
        match self {
            AnyOptimizer::Sgd(o) => o.set_learning_rate(lr),
            AnyOptimizer::AdamW(o) => o.set_learning_rate(lr),
        }
    }
}
