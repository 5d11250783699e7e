//! A standard candle training loop (an MLP on the UCI handwritten digits, AdamW,
//! cross-entropy), made data-parallel by gradcast. The lines gradcast adds are marked
//! `// gradcast`; remove them and this is plain candle.
//!
//! ```text
//! cargo run --release -p gradcast-candle --example digits
//! # several processes, one worker each (Open MPI and libclang needed to build):
//! cargo build --release -p gradcast-candle --features mpi --example digits
//! mpirun -np 4 target/release/examples/digits
//! ```
//!
//! Every process loads the same data and takes its share of every batch; the exchanged
//! gradients keep every replica identical, so every process ends with the same model.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use gradcast_candle::Network; // gradcast
use gradcast_candle::{Config, Cpu, Exchange, GradcastConfig, Sharing, Threshold}; // gradcast

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Mlp {
            fc1: candle_nn::linear(64, 128, vb.pp("fc1"))?,
            fc2: candle_nn::linear(128, 10, vb.pp("fc2"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
}

/// The digits (1797 images of 8x8 pixels) as `(features, labels)` tensors, pixels in [0, 1].
fn digits(dev: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let ds = smartcore::dataset::digits::load_dataset();
    let x: Vec<f32> = ds.data.iter().map(|v| v / 16.0).collect();
    let y: Vec<u32> = ds.target.iter().map(|&t| t as u32).collect();
    Ok((
        Tensor::from_vec(x, (ds.num_samples, 64), dev)?,
        Tensor::from_vec(y, ds.num_samples, dev)?,
    ))
}

fn accuracy(model: &Mlp, x: &Tensor, y: &Tensor) -> candle_core::Result<f32> {
    let pred = model.forward(x)?.argmax(D::Minus1)?;
    let right = pred
        .eq(y)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(right / y.dim(0)? as f32)
}

fn train<N: Network>(network: N) -> gradcast_candle::Result<()> {
    let dev = Device::Cpu;
    let (x, y) = digits(&dev)?;
    // Every fifth image is held out for the test (360 images), the other 1437 train.
    let n = x.dim(0)? as u32;
    let test_idx = Tensor::new((0..n).step_by(5).collect::<Vec<u32>>(), &dev)?;
    let train_idx = Tensor::new((0..n).filter(|i| i % 5 != 0).collect::<Vec<u32>>(), &dev)?;
    let (train_x, test_x) = (
        x.index_select(&train_idx, 0)?,
        x.index_select(&test_idx, 0)?,
    );
    let (train_y, test_y) = (
        y.index_select(&train_idx, 0)?,
        y.index_select(&test_idx, 0)?,
    );
    let train_len = train_x.dim(0)?;

    let varmap = VarMap::new();
    let model = Mlp::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let (rank, ranks) = (network.rank(), network.ranks()); // gradcast
    let config = Config::with_exchange(Exchange::Gradcast(GradcastConfig::with_threshold(
        Threshold::Fixed(0.1),
    ))); // gradcast
    let sharing = Sharing::new(&varmap, config, Cpu::default(), network)?; // gradcast: rank 0's parameters everywhere
    let adamw = candle_nn::AdamW::new_lr(varmap.all_vars(), 3e-3)?;
    let mut opt = sharing.wrap(adamw); // gradcast

    let batch = 64;
    let (mut sent, mut dense) = (0u64, 0u64);
    for epoch in 1..=20 {
        // Whole batches only: 22 of 64 images per epoch.
        for start in (0..=train_len - batch).step_by(batch) {
            // This process's share of the global batch.
            let share = batch / ranks; // gradcast
            let (xb, yb) = (
                train_x.narrow(0, start + rank * share, share)?, // gradcast: `+ rank * share`
                train_y.narrow(0, start + rank * share, share)?,
            );
            let loss = candle_nn::loss::cross_entropy(&model.forward(&xb)?, &yb)?;
            opt.backward_step(&loss)?;
            sent += opt.stats().bytes; // gradcast
            dense += 4 * opt.sharing().layout().n() as u64; // gradcast
        }
        if rank == 0 {
            println!(
                "epoch {epoch:>2}: test accuracy {:.2}%, {} bytes sent by this worker ({:.0}x fewer than dense fp32)",
                100.0 * accuracy(&model, &test_x, &test_y)?,
                sent,
                dense as f64 / sent.max(1) as f64
            );
        }
    }
    let acc = accuracy(&model, &test_x, &test_y)?;
    if acc < 0.9 {
        return Err(gradcast_candle::Error::Train(format!(
            "test accuracy {acc} below 90%"
        )));
    }
    println!(
        "rank {rank}/{ranks}: parameter checksum {:016x}", // gradcast
        opt.sharing().checksum(0)?
    );
    Ok(())
}

fn main() -> gradcast_candle::Result<()> {
    #[cfg(feature = "mpi")]
    {
        let universe = gradcast_candle::mpi::initialize()?; // gradcast
        train(gradcast_candle::mpi::Mpi::new(&universe.world())?) // gradcast
    }
    #[cfg(not(feature = "mpi"))]
    train(gradcast_candle::InProcess) // gradcast
}
