//! gradcast-candle under MPI (feature `mpi`): run by `cargo test`, this binary starts itself
//! under `mpirun -np 2` and checks, on every rank:
//!
//! * gradcast with 2 workers per rank ends every replica of every rank with the same
//!   parameter checksum as 4 workers in one process (the same 30 SGD steps), and so does
//!   dense fp16 (gathered and summed in global worker order);
//! * dense fp32 (an `MPI_Allreduce`) leaves every rank with the same parameters;
//! * the training driver with two runs gives the same gradcast checksum as in one process;
//! * a rank that built another model makes set-up fail on every rank, naming the variable.
//!
//! MPI is initialized once per process, so the checks run from this main, not libtest's
//! harness. Without the `mpi` feature, or without `mpirun` on the PATH, it prints a SKIP
//! line.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

#[cfg(not(feature = "mpi"))]
fn main() {
    println!(
        "SKIP: gradcast-candle was built without the `mpi` feature (cargo test -p \
         gradcast-candle --features mpi; needs Open MPI and libclang)"
    );
}

#[cfg(feature = "mpi")]
mod common;

#[cfg(feature = "mpi")]
mod with_mpi {

    use super::common::*;
    use candle_nn::{Optimizer, SGD, VarMap};
    use gradcast_candle::driver::{Compute, Job, Quiet, Replicas, TrainConfig};
    use gradcast_candle::models::{Mlp, ModelSpec};
    use gradcast_candle::mpi::{Mpi, initialize};
    use gradcast_candle::network::Network;
    use gradcast_candle::optim::OptimizerSpec;
    use gradcast_candle::{Config, Cpu, Error, Exchange, InProcess, Sharing};
    use gradcast_mpi::mpi::topology::SimpleCommunicator;
    use gradcast_mpi::mpi::traits::*;
    use std::process::{Command, ExitCode};

    const STEPS: u64 = 30;
    const BATCH: usize = 32;

    /// `local` workers on this process over `network`: 30 SGD steps; every replica's checksum.
    fn train<N: Network>(exchange: Exchange, local: usize, network: N) -> Vec<u64> {
        let data = task();
        let (vms, models): (Vec<VarMap>, Vec<Mlp>) = (0..local).map(|_| replica(21)).unzip();
        let config = Config::with_exchange(exchange);
        let mut s = Sharing::with_replicas(&vms, config, Cpu::default(), network).unwrap();
        let mut opts: Vec<SGD> = vms
            .iter()
            .map(|vm| SGD::new(vm.all_vars(), 0.1).unwrap())
            .collect();
        for k in 0..STEPS {
            step(&mut s, &models, &mut opts, &data, k, BATCH);
        }
        s.all_checksums().unwrap()
    }

    fn same_as_one_process(world: &SimpleCommunicator) {
        for exchange in [Exchange::default(), Exchange::DenseF16] {
            let want = train(exchange, 4, InProcess);
            assert!(want.iter().all(|&c| c == want[0]));
            let got = train(exchange, 2, Mpi::new(world).unwrap());
            assert_eq!(got.len(), 4, "2 ranks x 2 replicas");
            for (i, c) in got.iter().enumerate() {
                assert_eq!(
                    *c,
                    want[0],
                    "{}: replica {i} differs from 4 in-process workers",
                    exchange.name()
                );
            }
        }
    }

    fn dense_fp32_ranks_agree(world: &SimpleCommunicator) {
        let got = train(Exchange::DenseF32, 2, Mpi::new(world).unwrap());
        assert!(got.iter().all(|&c| c == got[0]), "{got:x?}");
    }

    fn driver_same_as_one_process(world: &SimpleCommunicator) {
        let all = task();
        let train_set = all.select(&(0..256).collect::<Vec<_>>());
        let test_set = all.select(&(256..320).collect::<Vec<_>>());
        let config = |workers| TrainConfig {
            model: ModelSpec::Mlp { hidden: vec![16] },
            workers,
            batch: 32,
            epochs: 1,
            seed: 3,
            optimizer: OptimizerSpec::Sgd { lr: 0.2 },
            compute: Compute::Sequential,
            replicas: Replicas::PerWorker,
            eval_every: 0,
        };
        let mut one = Job::new(config(4), &train_set, &test_set).unwrap();
        one.add_run(
            "dense",
            Config::with_exchange(Exchange::DenseF32),
            Cpu::default(),
            InProcess,
        )
        .unwrap();
        one.add_run("gradcast", Config::default(), Cpu::default(), InProcess)
            .unwrap();
        one.run(&mut Quiet).unwrap();
        let want = one.summaries().unwrap();
        let mut two = Job::new(config(2), &train_set, &test_set).unwrap();
        two.add_run(
            "dense",
            Config::with_exchange(Exchange::DenseF32),
            Cpu::default(),
            Mpi::new(world).unwrap(),
        )
        .unwrap();
        two.add_run(
            "gradcast",
            Config::default(),
            Cpu::default(),
            Mpi::new(world).unwrap(),
        )
        .unwrap();
        two.run(&mut Quiet).unwrap();
        let got = two.summaries().unwrap();
        assert_eq!(got[1].checksum, want[1].checksum, "gradcast");
        assert!(got[0].replicas_identical && got[1].replicas_identical);
        assert_eq!(got[1].bytes, want[1].bytes, "the same messages");
        assert_eq!(got[0].bytes, want[0].bytes);
        assert_eq!(
            got[1].epochs[0].test_accuracy,
            want[1].epochs[0].test_accuracy
        );
    }

    fn other_model_on_one_rank(world: &SimpleCommunicator) {
        let hidden = if world.rank() == 1 { 33 } else { 32 };
        let vm = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(
            &vm,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        );
        let _ = Mlp::new(vb, INPUT, &[hidden], CLASSES).unwrap();
        let e = Sharing::new(
            &vm,
            Config::default(),
            Cpu::default(),
            Mpi::new(world).unwrap(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::ModelsDiffer { .. }), "{e}");
        let m = e.to_string();
        assert!(
            m.contains("`fc1.bias` is [32] F32 in rank 0's model and [33] F32 in rank 1's"),
            "{m}"
        );
    }

    type Check = fn(&SimpleCommunicator);

    const CHECKS: &[(&str, Check)] = &[
        (
            "2 ranks x 2 workers == 4 workers in one process",
            same_as_one_process,
        ),
        (
            "dense fp32: every rank ends with the same parameters",
            dense_fp32_ranks_agree,
        ),
        (
            "the driver under MPI == in one process",
            driver_same_as_one_process,
        ),
        (
            "another model on one rank is an error on every rank",
            other_model_on_one_rank,
        ),
    ];

    pub fn main() -> ExitCode {
        if std::env::args().any(|a| a == "--list") {
            return ExitCode::SUCCESS;
        }
        let under_mpirun = std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some()
            || std::env::var_os("PMI_SIZE").is_some();
        if !under_mpirun {
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("error: cannot find this test binary: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let out = Command::new("mpirun")
                .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
                .arg(&exe)
                .output();
            return match out {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("SKIP: mpirun is not on the PATH");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: mpirun: {e}");
                    ExitCode::FAILURE
                }
                Ok(o) => {
                    print!("{}", String::from_utf8_lossy(&o.stdout));
                    eprint!("{}", String::from_utf8_lossy(&o.stderr));
                    if o.status.success() {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("error: the 2-rank run failed: {}", o.status);
                        ExitCode::FAILURE
                    }
                }
            };
        }
        let universe = match initialize() {
            Ok(u) => u,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let world = universe.world();
        let rank = world.rank();
        for (name, check) in CHECKS {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&world)));
            if r.is_err() {
                eprintln!("rank {rank}: FAILED {name}");
                world.abort(1);
            }
            world.barrier();
            if rank == 0 {
                println!("  ok {name}");
            }
        }
        if rank == 0 {
            println!(
                "mpi: {} checks passed on {} ranks",
                CHECKS.len(),
                world.size()
            );
        }
        ExitCode::SUCCESS
    }
}

#[cfg(feature = "mpi")]
fn main() -> std::process::ExitCode {
    with_mpi::main()
}
