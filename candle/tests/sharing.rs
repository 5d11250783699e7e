//! `Sharing` with P workers in one process: bit-identical replicas, the layout's order,
//! checkpoints that continue bit-identically, the dense baseline against one big batch, and
//! every error case.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, SGD, VarMap};
use common::*;
use gradcast_candle::models::Mlp;
use gradcast_candle::{
    Config, Cpu, Error, Exchange, GradcastConfig, InProcess, Init, Layout, Payload, Segments,
    Sharing, Threshold,
};

fn replicas(p: usize, seed: impl Fn(usize) -> u64) -> (Vec<VarMap>, Vec<Mlp>) {
    (0..p).map(|w| replica(seed(w))).unzip()
}

fn adamw(vms: &[VarMap]) -> Vec<AdamW> {
    vms.iter()
        .map(|vm| {
            AdamW::new(
                vm.all_vars(),
                ParamsAdamW {
                    lr: 1e-2,
                    ..ParamsAdamW::default()
                },
            )
            .unwrap()
        })
        .collect()
}

fn sgd(vms: &[VarMap], lr: f64) -> Vec<SGD> {
    vms.iter()
        .map(|vm| SGD::new(vm.all_vars(), lr).unwrap())
        .collect()
}

fn checksums(s: &Sharing<Cpu, InProcess>, p: usize) -> Vec<u64> {
    (0..p).map(|r| s.checksum(r).unwrap()).collect()
}

/// P = 4 replicas built from different seeds (rank 0's values are broadcast), 200 AdamW
/// steps of gradcast: every replica ends bit-identical, and the model learned.
#[test]
fn replicas_stay_bit_identical_through_200_adamw_steps() {
    let data = task();
    for payload in [Payload::Gradients, Payload::Updates] {
        let (vms, models) = replicas(4, |w| 10 + w as u64);
        let config = Config {
            payload,
            ..Config::default()
        };
        let mut s = Sharing::with_replicas(&vms, config, Cpu::default(), InProcess).unwrap();
        let start = checksums(&s, 4);
        assert!(start.iter().all(|&c| c == start[0]), "broadcast");
        let mut opts = adamw(&vms);
        let loss = |m: &Mlp| {
            let all: Vec<usize> = (0..data.len()).collect();
            let (x, y) = data.batch(&all, &Device::Cpu).unwrap();
            candle_nn::loss::cross_entropy(
                &gradcast_candle::models::Classifier::logits(m, &x).unwrap(),
                &y,
            )
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
        };
        let before = loss(&models[0]);
        for k in 0..200 {
            step(&mut s, &models, &mut opts, &data, k, 64);
        }
        let end = checksums(&s, 4);
        assert!(end.iter().all(|&c| c == end[0]), "{payload:?}: {end:x?}");
        assert_ne!(end[0], start[0]);
        let after = loss(&models[3]);
        assert!(
            after < 0.85 * before,
            "{payload:?}: loss {before} -> {after}"
        );
        let st = s.stats();
        assert_eq!(st.step, 199);
        assert_eq!(st.workers.len(), 4);
        assert!(st.bytes > 0 && st.bytes < 4 * 4 * 676, "{}", st.bytes);
    }
}

/// A `VarMap` filled in another insertion order has the same layout, and trains the same.
#[test]
fn insertion_order_does_not_matter() {
    let data = task();
    let (a, ma) = replica(5);
    // The same variables, created in reverse name order, then given a's values.
    let b = VarMap::new();
    let mut vars: Vec<(String, Var)> = a.data().lock().unwrap().clone().into_iter().collect();
    vars.sort_by(|x, y| y.0.cmp(&x.0));
    for (name, v) in &vars {
        let _ = b
            .get(
                v.dims(),
                name,
                candle_nn::Init::Const(0.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        b.data().lock().unwrap()[name].set(v.as_tensor()).unwrap();
    }
    assert_eq!(Layout::of(&a).unwrap(), Layout::of(&b).unwrap());
    assert_eq!(
        Layout::of(&a).unwrap().describe(),
        Layout::of(&b).unwrap().describe()
    );
    let mb = {
        let vb = candle_nn::VarBuilder::from_varmap(&b, DType::F32, &Device::Cpu);
        Mlp::new(vb, INPUT, &[32], CLASSES).unwrap()
    };
    let vms = vec![a, b];
    let config = Config {
        init: Init::Verify,
        ..Config::default()
    };
    let mut s = Sharing::with_replicas(&vms, config, Cpu::default(), InProcess).unwrap();
    let mut opts = sgd(&vms, 0.1);
    for k in 0..20 {
        step(&mut s, &[ma.clone(), mb.clone()], &mut opts, &data, k, 32);
    }
    let c = checksums(&s, 2);
    assert_eq!(c[0], c[1]);
}

fn gradcast_config() -> Config {
    Config::with_exchange(Exchange::Gradcast(GradcastConfig::with_threshold(
        Threshold::Adaptive,
    )))
}

/// Saved at step 100 (with the model's safetensors file), restored into fresh replicas,
/// optimizers and sharing, 100 more steps: the same bits as 200 straight steps.
#[test]
fn save_restore_continues_bit_identically() {
    let data = task();
    let dir = std::env::temp_dir().join(format!("gradcast-candle-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for segments in [Segments::PerVariable, Segments::Whole] {
        let config = Config::with_exchange(Exchange::Gradcast(GradcastConfig {
            segments,
            ..GradcastConfig::with_threshold(Threshold::Adaptive)
        }));
        let (vms, models) = replicas(2, |_| 3);
        let mut s = Sharing::with_replicas(&vms, config, Cpu::default(), InProcess).unwrap();
        let mut opts = sgd(&vms, 0.1);
        for k in 0..200 {
            step(&mut s, &models, &mut opts, &data, k, 32);
        }
        let straight = values(&vms[0]);

        let (vms, models) = replicas(2, |_| 3);
        let mut s = Sharing::with_replicas(&vms, config, Cpu::default(), InProcess).unwrap();
        let mut opts = sgd(&vms, 0.1);
        for k in 0..100 {
            step(&mut s, &models, &mut opts, &data, k, 32);
        }
        let (model_file, ckpt) = (dir.join("model.safetensors"), dir.join("sharing.gcsh"));
        vms[0].save(&model_file).unwrap();
        s.save(&ckpt).unwrap();
        drop((s, opts, models, vms));

        // Fresh everything, another seed: the files carry the state.
        let (mut vms, models) = replicas(2, |w| 77 + w as u64);
        for vm in &mut vms {
            vm.load(&model_file).unwrap();
        }
        let mut s = Sharing::with_replicas(&vms, config, Cpu::default(), InProcess).unwrap();
        s.restore(&ckpt).unwrap();
        assert_eq!(s.steps(), 100);
        let mut opts = sgd(&vms, 0.1);
        for k in 100..200 {
            step(&mut s, &models, &mut opts, &data, k, 32);
        }
        let resumed = values(&vms[0]);
        for ((n, a), (_, b)) in straight.iter().zip(&resumed) {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{segments:?}: variable {n} differs after the restore");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Checkpoints that do not fit are errors that say why, and change nothing.
#[test]
fn bad_checkpoints_are_rejected() {
    let (vms, _) = replicas(2, |_| 3);
    let s = Sharing::with_replicas(&vms, gradcast_config(), Cpu::default(), InProcess).unwrap();
    let good = s.save_bytes().unwrap();
    let check = |s: &mut Sharing<Cpu, InProcess>, bytes: &[u8], want: &str| {
        let e = s.restore_bytes(bytes).unwrap_err().to_string();
        assert!(e.contains(want), "expected {want:?} in {e}");
    };
    let (vms2, _) = replicas(2, |_| 3);
    let mut t =
        Sharing::with_replicas(&vms2, gradcast_config(), Cpu::default(), InProcess).unwrap();
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    check(&mut t, &flipped, "checksum mismatch");
    check(&mut t, &good[..good.len() - 3], "the header says");
    check(&mut t, &good[..10], "shorter than");
    check(
        &mut t,
        b"not a checkpoint at all, definitely not one, no........",
        "bad magic",
    );
    // Another model: a wider hidden layer.
    let other = VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&other, DType::F32, &Device::Cpu);
    let _ = Mlp::new(vb, INPUT, &[33], CLASSES).unwrap();
    let mut u = Sharing::with_replicas(
        &[other.clone(), other],
        gradcast_config(),
        Cpu::default(),
        InProcess,
    )
    .unwrap();
    check(
        &mut u,
        &good,
        "`fc1.bias` is [32] F32 in the checkpoint's model and [33] F32",
    );
    // Another exchange, another worker count.
    let mut d = Sharing::with_replicas(
        &vms2,
        Config::with_exchange(Exchange::DenseF32),
        Cpu::default(),
        InProcess,
    )
    .unwrap();
    check(&mut d, &good, "saved by a gradcast exchange");
    let mut one = Sharing::new(&vms2[0], gradcast_config(), Cpu::default(), InProcess).unwrap();
    check(&mut one, &good, "saved for workers 0..2 of 2");
    // The good one still restores.
    t.restore_bytes(&good).unwrap();
}

/// With the dense fp32 exchange, P workers on shards of a batch of B follow one worker on
/// the whole batch (the mean of the shards' mean gradients is the batch's mean gradient).
#[test]
fn dense_fp32_matches_one_big_batch() {
    let data = task();
    let (p, b) = (4, 64);
    let (vms, models) = replicas(p, |_| 8);
    let config = Config::with_exchange(Exchange::DenseF32);
    let mut s = Sharing::with_replicas(&vms, config, Cpu::default(), InProcess).unwrap();
    let mut opts = sgd(&vms, 0.1);
    let (one_vm, one_model) = replica(8);
    let mut one = Sharing::new(&one_vm, config, Cpu::default(), InProcess).unwrap();
    let mut one_opt = sgd(std::slice::from_ref(&one_vm), 0.1);
    for k in 0..50 {
        step(&mut s, &models, &mut opts, &data, k, b);
        step(
            &mut one,
            std::slice::from_ref(&one_model),
            &mut one_opt,
            &data,
            k,
            b,
        );
    }
    let (a, z) = (values(&vms[0]), values(&one_vm));
    let (mut diff, mut norm) = (0f64, 0f64);
    for ((_, x), (_, y)) in a.iter().zip(&z) {
        for (u, v) in x.iter().zip(y) {
            diff += ((u - v) as f64).powi(2);
            norm += (*v as f64).powi(2);
        }
    }
    let rel = (diff / norm).sqrt();
    assert!(rel < 1e-5, "relative difference {rel}");
    assert_ne!(a, values(&replica(8).0), "trained");
    assert_eq!(
        s.stats().bytes,
        (4 * 4 * Layout::of(&vms[0]).unwrap().n()) as u64
    );
}

/// Dense fp16: replicas identical, 2 bytes per element per worker, close to fp32.
#[test]
fn dense_fp16_rounds_and_stays_identical() {
    let data = task();
    let (vms, models) = replicas(2, |_| 8);
    let mut s = Sharing::with_replicas(
        &vms,
        Config::with_exchange(Exchange::DenseF16),
        Cpu::default(),
        InProcess,
    )
    .unwrap();
    let mut opts = sgd(&vms, 0.1);
    for k in 0..20 {
        step(&mut s, &models, &mut opts, &data, k, 32);
    }
    let c = checksums(&s, 2);
    assert_eq!(c[0], c[1]);
    let n = s.layout().n() as u64;
    assert_eq!(s.stats().bytes, 2 * 2 * n);
    assert!(s.stats().workers.iter().all(|w| w.tau_min.is_nan()));
}

fn setup() -> (Sharing<Cpu, InProcess>, Vec<VarMap>, Vec<Mlp>, Vec<SGD>) {
    let (vms, models) = replicas(2, |_| 4);
    let s = Sharing::with_replicas(&vms, gradcast_config(), Cpu::default(), InProcess).unwrap();
    let opts = sgd(&vms, 0.1);
    (s, vms, models, opts)
}

/// Every replica's variables by name, with their values.
type Values = Vec<Vec<(String, Vec<f32>)>>;

/// Residual of every worker and parameters of every replica, to check that a failed step
/// changed nothing.
fn state(s: &mut Sharing<Cpu, InProcess>, vms: &[VarMap]) -> (Vec<Vec<f32>>, Values) {
    let acc = s.accumulator().unwrap();
    let res = (0..2).map(|w| acc.residual(w).clone()).collect();
    (res, vms.iter().map(values).collect())
}

fn two_grads(models: &[Mlp], k: u64) -> Vec<candle_core::backprop::GradStore> {
    let data = task();
    (0..2)
        .map(|w| grads(&models[w], &data, k, 32, 2, w))
        .collect()
}

#[test]
fn a_variable_added_removed_or_reshaped_is_an_error_naming_it() {
    let (mut s, vms, models, mut opts) = setup();
    s.step(&mut opts, &two_grads(&models, 0)).unwrap();
    let before = state(&mut s, &vms);

    let extra = vms[1]
        .get(
            3,
            "extra",
            candle_nn::Init::Const(1.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
    let e = s.step(&mut opts, &two_grads(&models, 1)).unwrap_err();
    assert!(
        matches!(&e, Error::VariableAdded { name, worker: 1 } if name == "extra"),
        "{e}"
    );
    vms[1].data().lock().unwrap().remove("extra");
    drop(extra);

    let gone = vms[0].data().lock().unwrap().remove("fc2.bias").unwrap();
    let e = s.step(&mut opts, &two_grads(&models, 1)).unwrap_err();
    assert!(
        matches!(&e, Error::VariableRemoved { name, worker: 0 } if name == "fc2.bias"),
        "{e}"
    );
    vms[0]
        .data()
        .lock()
        .unwrap()
        .insert("fc2.bias".into(), gone.clone());

    let wide = Var::from_tensor(&zeros(&[5])).unwrap();
    vms[0]
        .data()
        .lock()
        .unwrap()
        .insert("fc2.bias".into(), wide);
    let e = s.step(&mut opts, &two_grads(&models, 1)).unwrap_err();
    assert!(
        matches!(&e, Error::VariableChanged { name, .. } if name == "fc2.bias"),
        "{e}"
    );
    assert!(e.to_string().contains("[4] F32 to [5] F32"), "{e}");
    vms[0]
        .data()
        .lock()
        .unwrap()
        .insert("fc2.bias".into(), gone);

    assert_eq!(state(&mut s, &vms), before, "a failed step changes nothing");
    s.step(&mut opts, &two_grads(&models, 1)).unwrap();
}

#[test]
fn non_finite_gradients_are_errors_and_change_nothing() {
    let (mut s, vms, models, mut opts) = setup();
    s.step(&mut opts, &two_grads(&models, 0)).unwrap();
    let before = state(&mut s, &vms);
    for bad in [f32::NAN, f32::INFINITY] {
        let mut g = two_grads(&models, 1);
        let var = vms[1].data().lock().unwrap()["fc1.bias"].clone();
        let mut v = vec![0.0f32; 32];
        v[7] = bad;
        g[1].insert(
            var.as_tensor(),
            Tensor::new(v.as_slice(), &Device::Cpu).unwrap(),
        );
        let e = s.step(&mut opts, &g).unwrap_err();
        assert!(
            matches!(&e, Error::NonFinite { name, worker: 1, index: 7, .. } if name == "fc1.bias"),
            "{e}"
        );
        assert_eq!(state(&mut s, &vms), before, "a failed step changes nothing");
    }
    // A gradient of the wrong shape.
    let mut g = two_grads(&models, 1);
    let var = vms[0].data().lock().unwrap()["fc1.bias"].clone();
    g[0].insert(var.as_tensor(), zeros(&[31]));
    let e = s.step(&mut opts, &g).unwrap_err();
    assert!(
        matches!(&e, Error::GradientShape { name, .. } if name == "fc1.bias"),
        "{e}"
    );
    // The wrong number of gradient stores or optimizers.
    let e = s.step(&mut opts, &two_grads(&models, 1)[..1]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Count {
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = s.step(&mut opts[..1], &two_grads(&models, 1)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Count {
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(state(&mut s, &vms), before);
}

/// An unused parameter (no gradient) contributes zeros and is counted; replicas stay equal.
#[test]
fn a_missing_gradient_contributes_zeros_and_is_counted() {
    let (mut s, vms, models, mut opts) = setup();
    let mut g = two_grads(&models, 0);
    let var = vms[1].data().lock().unwrap()["fc2.bias"].clone();
    assert!(g[1].remove(var.as_tensor()).is_some());
    let st = s.step(&mut opts, &g).unwrap();
    assert_eq!(st.workers[0].missing_gradients, 0);
    assert_eq!(st.workers[1].missing_gradients, 1);
    let c = checksums(&s, 2);
    assert_eq!(c[0], c[1]);
}

/// Replicas of different models, and replicas that start apart under `Init::Verify`.
#[test]
fn different_models_or_parameters_are_errors_naming_the_variable() {
    let (a, _) = replica(1);
    let b = VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&b, DType::F32, &Device::Cpu);
    let _ = Mlp::new(vb, INPUT, &[64], CLASSES).unwrap();
    let e = Sharing::with_replicas(
        &[a.clone(), b],
        Config::default(),
        Cpu::default(),
        InProcess,
    )
    .unwrap_err();
    assert!(matches!(e, Error::ModelsDiffer { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("`fc1.bias` is [32] F32 in worker 0's model and [64] F32 in worker 1's"),
        "{e}"
    );
    let (c, _) = replica(2);
    let verify = Config {
        init: Init::Verify,
        ..Config::default()
    };
    let e = Sharing::with_replicas(&[a, c], verify, Cpu::default(), InProcess).unwrap_err();
    assert!(
        matches!(&e, Error::ParametersDiffer { name, worker: 1 } if name == "fc1.weight"),
        "{e}"
    );
    // Updates need one replica per worker; budgets need room for every segment.
    let (d, _) = replica(1);
    let bad = Config {
        payload: Payload::Updates,
        workers: 2,
        ..Config::default()
    };
    assert!(matches!(
        Sharing::new(&d, bad, Cpu::default(), InProcess),
        Err(Error::Config(_))
    ));
    let tiny = Config::with_exchange(Exchange::Gradcast(GradcastConfig::with_threshold(
        Threshold::Budget(100),
    )));
    let e = Sharing::new(&d, tiny, Cpu::default(), InProcess).unwrap_err();
    assert!(
        e.to_string().contains("4 segments need at least 208 bytes"),
        "{e}"
    );
}

/// The one-worker wrapper: any candle optimizer, stats of the last step.
#[test]
fn wrapped_optimizer_trains_and_reports() {
    let data = task();
    let (vm, model) = replica(6);
    let sharing = Sharing::new(&vm, gradcast_config(), Cpu::default(), InProcess).unwrap();
    let mut opt = sharing.wrap(AdamW::new_lr(vm.all_vars(), 1e-2).unwrap());
    for k in 0..50 {
        let g = grads(&model, &data, k, 32, 1, 0);
        opt.step(&g).unwrap();
    }
    let st = opt.stats();
    assert_eq!(st.step, 49);
    assert_eq!(st.workers.len(), 1);
    assert!(st.workers[0].bytes > 0 && st.workers[0].tau_min > 0.0);
    assert!(st.workers[0].density > 0.0 && st.workers[0].density <= 1.0);
    assert_eq!(opt.learning_rate(), 1e-2);
    opt.set_learning_rate(5e-3);
    assert_eq!(opt.inner().learning_rate(), 5e-3);
}
