//! Shared helpers of the sharing tests: a small synthetic classification task, replicas of
//! an MLP built from one seed, and one training step of P workers.
#![allow(dead_code, clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use gradcast_candle::data::Dataset;
use gradcast_candle::driver::shard;
use gradcast_candle::models::{Classifier, Mlp, init_seeded};
use gradcast_candle::network::Network;
use gradcast_candle::rng::SplitMix64;
use gradcast_candle::{Cpu, Sharing};

pub const INPUT: usize = 16;
pub const CLASSES: usize = 4;

/// 512 samples of 16 features; the label is the quarter of the features with the largest sum.
pub fn task() -> Dataset {
    let mut rng = SplitMix64::new(99);
    let n = 512;
    let mut features = Vec::with_capacity(n * INPUT);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let row: Vec<f32> = (0..INPUT).map(|_| rng.next_f32()).collect();
        let sums: Vec<f32> = row
            .chunks(INPUT / CLASSES)
            .map(|c| c.iter().sum())
            .collect();
        let label = (0..CLASSES)
            .max_by(|&a, &b| sums[a].total_cmp(&sums[b]))
            .unwrap_or(0);
        features.extend_from_slice(&row);
        labels.push(label as u8);
    }
    Dataset {
        features,
        labels,
        dim: INPUT,
        classes: CLASSES,
    }
}

/// A replica: an MLP 16-32-4 on a fresh `VarMap`, initialised from `seed`.
pub fn replica(seed: u64) -> (VarMap, Mlp) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let model = Mlp::new(vb, INPUT, &[32], CLASSES).unwrap();
    init_seeded(&vm, seed).unwrap();
    (vm, model)
}

/// Worker `w`'s (of `total`) gradients for step `step` on `model`: the mean cross-entropy
/// of its shard of the step's batch of `batch` samples.
pub fn grads(
    model: &Mlp,
    data: &Dataset,
    step: u64,
    batch: usize,
    total: usize,
    w: usize,
) -> GradStore {
    let start = (step as usize * batch) % data.len();
    let idx: Vec<usize> = (start..start + batch).map(|i| i % data.len()).collect();
    let mine = shard(&idx, total, w);
    let (x, y) = data.batch(mine, &Device::Cpu).unwrap();
    let loss = candle_nn::loss::cross_entropy(&model.logits(&x).unwrap(), &y).unwrap();
    loss.backward().unwrap()
}

/// One step of every local worker of `sharing` (one replica each).
pub fn step<O: Optimizer, N: Network>(
    sharing: &mut Sharing<Cpu, N>,
    models: &[Mlp],
    opts: &mut [O],
    data: &Dataset,
    step: u64,
    batch: usize,
) {
    let total = sharing.total_workers();
    let first = sharing.first_worker();
    let g: Vec<GradStore> = models
        .iter()
        .enumerate()
        .map(|(j, m)| grads(m, data, step, batch, total, first + j))
        .collect();
    sharing.step(opts, &g).unwrap();
}

/// Every variable's values, by name.
pub fn values(vm: &VarMap) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A tensor of zeros, for tests that build `GradStore`s by hand.
pub fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}
