//! The training driver's optimizers: candle-nn's SGD and AdamW behind one type.
//!
//! AdamW is [`AdamW`] here, candle-nn's algorithm with the same tensor operations in the same
//! order (so the same bits), whose moments and step count are readable and settable: candle-nn
//! keeps them private, and a checkpoint of a training run must hold them
//! ([`crate::driver`]'s job checkpoints).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW, SGD};
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

/// One variable's AdamW state.
#[derive(Debug)]
struct AdamWVar {
    var: Var,
    m: Var,
    v: Var,
}

/// candle-nn's AdamW (`candle_nn::AdamW`, the same arithmetic in the same order, so the same
/// bits), with its state readable and settable for checkpoints.
#[derive(Debug)]
pub struct AdamW {
    vars: Vec<AdamWVar>,
    step_t: usize,
    params: ParamsAdamW,
}

impl AdamW {
    /// Steps taken.
    pub fn step_count(&self) -> usize {
        self.step_t
    }

    /// Sets the steps taken (restoring a checkpoint).
    pub fn set_step_count(&mut self, steps: usize) {
        self.step_t = steps;
    }

    /// The moments of the variable whose tensor is `var` (by identity): first, second.
    pub fn moments(&self, var: &Tensor) -> Option<(&Var, &Var)> {
        self.vars
            .iter()
            .find(|x| x.var.as_tensor().id() == var.id())
            .map(|x| (&x.m, &x.v))
    }
}

impl Optimizer for AdamW {
    type Config = ParamsAdamW;

    fn new(vars: Vec<Var>, params: ParamsAdamW) -> candle_core::Result<Self> {
        let vars = vars
            .into_iter()
            .filter(|var| var.dtype().is_float())
            .map(|var| {
                let m = Var::zeros(var.shape(), var.dtype(), var.device())?;
                let v = Var::zeros(var.shape(), var.dtype(), var.device())?;
                Ok(AdamWVar { var, m, v })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW {
            vars,
            step_t: 0,
            params,
        })
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        // candle-nn 0.11's AdamW::step, operation for operation.
        self.step_t += 1;
        let p = &self.params;
        let (lr, beta1, beta2) = (p.lr, p.beta1, p.beta2);
        let lr_lambda = lr * p.weight_decay;
        let scale_m = 1f64 / (1f64 - beta1.powi(self.step_t as i32));
        let scale_v = 1f64 / (1f64 - beta2.powi(self.step_t as i32));
        for x in &self.vars {
            let theta = &x.var;
            if let Some(g) = grads.get(theta) {
                let next_m = ((x.m.as_tensor() * beta1)? + (g * (1.0 - beta1))?)?;
                let next_v = ((x.v.as_tensor() * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
                let m_hat = (&next_m * scale_m)?;
                let v_hat = (&next_v * scale_v)?;
                let next_theta = (theta.as_tensor() * (1f64 - lr_lambda))?;
                let adjusted = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
                let next_theta = (next_theta - (adjusted * lr)?)?;
                x.m.set(&next_m)?;
                x.v.set(&next_v)?;
                theta.set(&next_theta)?;
            }
        }
        Ok(())
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
