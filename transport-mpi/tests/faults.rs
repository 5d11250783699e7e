//! Fault injection under `mpirun -np 4`: the core's round protocol ([`workers::run`], two
//! worker threads per rank) over [`MpiTransport`] for many rounds, with one fault injected
//! per run, and a harness that checks every rank's outcome and timing and that no process
//! is left behind.
//!
//! | fault | injected | what every rank must show |
//! |---|---|---|
//! | `peer-error` | rank 3's worker 1 returns an error in round 20; the rank returns the error from `workers::run` and goes on living | ranks 0-2: `PeerFailed` naming rank 3 (and its cause) within 5 s of the failure; then all four reset, run 5 more rounds and agree bit for bit |
//! | `stop` | the harness sends SIGSTOP to rank 3 once it has done 30 rounds | ranks 0-2: a timeout naming rank 3 within the timeout plus 10 s; the job ends (`MPI_Abort`) within the timeout plus 10 s; no process left |
//! | `straggler` | rank 1's worker 0 sleeps the timeout plus 1.5 s in round 20 | every rank: a typed timeout (ranks 0, 2, 3: naming rank 1; rank 1: naming its late worker) |
//!
//! `cargo test -p gradcast-mpi --test faults` runs the harness: it starts this binary under
//! `mpirun --allow-run-as-root --oversubscribe -np 4` once per fault (the name of a fault as
//! an argument runs that one only; `GRADCAST_MPI_RANKS=0` skips them all), with a 3 s
//! transport timeout (`GRADCAST_FAULT_TIMEOUT_MS`). Each rank prints machine-readable lines
//! (`READY`, `PROGRESS`, `FAULT`, `OUTCOME`, `RECOVERED`, `END`) with wall-clock times in
//! nanoseconds since the Unix epoch (all ranks share the machine's clock). Every process the
//! harness starts (mpirun and the ranks, which Open MPI puts in process groups of their own)
//! is killed when a check fails or the harness panics.
//!
//! After its outcome, a rank tells every other rank whether its transport gave up (a
//! timeout), and waits (at most 3 s) to hear the same from them, so that no rank's exit
//! kills one that has not reported yet. Then, if any rank it heard from (itself included)
//! gave up, the lowest such rank ends the job with `MPI_Abort`, because `MPI_Finalize`
//! waits for every rank, a stopped one included; the others wait to be ended (and abort
//! themselves after 10 s if nobody did). One aborting rank, not several: with Open MPI
//! 4.1.4, several ranks calling `MPI_Abort` at once while another finalized made `mpirun`
//! crash (SIGSEGV) in 2 of 8 runs and hang in 1. If no rank gave up, every rank finalizes.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_core::backend::Reference;
use gradcast_core::barrier::{Park, PoisonCause};
use gradcast_core::packet::{FixedEncoder, PartyEncoder};
use gradcast_core::round::workers::{self, Contribution, RunError, WorkerError};
use gradcast_core::round::{Accumulator, ResetOptions, RoundError, Step};
use gradcast_core::{Error, ProtocolError};
use gradcast_mpi::mpi::environment::Threading;
use gradcast_mpi::mpi::ffi;
use gradcast_mpi::mpi::raw::AsRaw;
use gradcast_mpi::mpi::topology::{Communicator, SimpleCommunicator};
use gradcast_mpi::{Collectives, MpiError, MpiTransport, PeerCause, checksum};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::ops::ControlFlow;
use std::os::raw::{c_int, c_void};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RANKS: usize = 4;
const PARTIES: usize = 2;
const N: usize = 256;
const TAU: f32 = 0.02;
/// The round in which `peer-error` and `straggler` strike.
const FAULT_ROUND: u64 = 20;
/// `peer-error`'s failing rank; `stop`'s stopped rank.
const FAILING_RANK: usize = 3;
/// `straggler`'s slow rank.
const SLOW_RANK: usize = 1;
/// `stop` stops its rank once it has reported this many rounds.
const STOP_AFTER: u64 = 30;
/// How long a rank waits for the others to report before it ends.
const SETTLE: Duration = Duration::from_secs(3);
/// The transport timeout the harness sets.
const TIMEOUT_MS: u64 = 3000;

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Prints one line at once (mpirun forwards each rank's stdout to the harness).
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line} t={}", unix_ns());
    let _ = out.flush();
}

// ----------------------------------------------------------------------------------------
// The rank.
// ----------------------------------------------------------------------------------------

/// Sender `sender`'s update of `round`: deterministic, the same in every process.
fn update_of(sender: usize, round: u64, out: &mut [f32]) {
    let mut z = (sender as u64) << 32 ^ round ^ 0x9E37_79B9_7F4A_7C15;
    for x in out.iter_mut() {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut v = z;
        v = (v ^ (v >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        v = (v ^ (v >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        v ^= v >> 31;
        *x = ((v >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * 0.05;
    }
}

type Acc = Accumulator<Reference, FixedEncoder, MpiTransport, Park>;
type Failure = RunError<String, Error, MpiError>;

/// One line describing a rank's outcome, for the harness.
fn describe(rank: usize, e: &Failure) -> String {
    let RunError::Failed {
        round, failures, ..
    } = e
    else {
        return format!("OUTCOME rank={rank} kind=setup msg={e}");
    };
    let first = &failures[0];
    let what = match &first.error {
        WorkerError::Work(_) => "kind=work-failed".to_string(),
        WorkerError::Round(RoundError::Transport(MpiError::PeerFailed {
            rank: peer,
            cause,
            ..
        })) => {
            let timeout = matches!(
                cause,
                PeerCause::Poisoned {
                    cause: PoisonCause::TimedOut { .. },
                    ..
                }
            );
            format!("kind=peer-failed names={peer} timeout={timeout}")
        }
        WorkerError::Round(RoundError::Transport(MpiError::Timeout { missing, .. })) => {
            let names: Vec<String> = missing.iter().map(usize::to_string).collect();
            format!("kind=timeout names={} timeout=true", names.join(","))
        }
        WorkerError::Round(RoundError::Round(Error::Protocol(ProtocolError::Poisoned {
            cause: PoisonCause::TimedOut { missing, .. },
            ..
        }))) => {
            let names: Vec<String> = missing.iter().map(|i| i.to_string()).collect();
            format!("kind=local-timeout names={} timeout=true", names.join(","))
        }
        _ => "kind=other".to_string(),
    };
    format!(
        "OUTCOME rank={rank} round={round} {what} msg={:?}",
        first.error.to_string()
    )
}

/// Sends `status` (1: finalize, 2: the transport gave up) to every other rank on `comm`
/// and waits (at most `SETTLE`) for theirs: no rank ends the job before the others have
/// reported. Point-to-point and non-blocking, so a stopped rank only costs the wait. Returns
/// every rank's status, 0 for those not heard from. The buffers are leaked: a message may
/// still be in flight.
fn settle(comm: &SimpleCommunicator, status: u64) -> Vec<u64> {
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    let token: &'static u64 = Box::leak(Box::new(status));
    let got: &'static mut [u64] = Vec::leak(vec![0u64; size]);
    // SAFETY: reads a constant rsmpi's C shim initializes before MPI is used.
    let null = unsafe { ffi::RSMPI_REQUEST_NULL };
    let mut reqs = vec![null; 2 * (size - 1)];
    // SAFETY: as above.
    let dt = unsafe { ffi::RSMPI_UINT64_T };
    let mut k = 0;
    for q in (0..size).filter(|&q| q != rank) {
        // SAFETY: live communicator; the buffers are leaked, so valid for the rest of the
        // process whatever becomes of the requests; one u64 per message; valid out pointers.
        unsafe {
            ffi::MPI_Irecv(
                &mut got[q] as *mut u64 as *mut c_void,
                1,
                dt,
                q as c_int,
                7,
                comm.as_raw(),
                &mut reqs[k],
            );
            ffi::MPI_Isend(
                token as *const u64 as *const c_void,
                1,
                dt,
                q as c_int,
                7,
                comm.as_raw(),
                &mut reqs[k + 1],
            );
        }
        k += 2;
    }
    let until = Instant::now() + SETTLE;
    while Instant::now() < until {
        let mut done: c_int = 0;
        // SAFETY: the requests started above (or null), a valid out pointer, no statuses.
        unsafe {
            ffi::MPI_Testall(
                reqs.len() as c_int,
                reqs.as_mut_ptr(),
                &mut done,
                ffi::RSMPI_STATUSES_IGNORE,
            );
        }
        if done != 0 {
            break;
        }
        std::thread::yield_now();
    }
    let mut all = got.to_vec();
    all[rank] = status;
    all
}

/// Runs `rounds` rounds, the fault injected as `fault` says.
fn run_rounds(
    acc: &mut Acc,
    replicas: &mut [Vec<f32>],
    rank: usize,
    rounds: u64,
    fault: &str,
) -> Result<workers::RunSummary, Failure> {
    let straggle = Duration::from_millis(TIMEOUT_MS) + Duration::from_millis(1500);
    workers::run(
        acc,
        replicas,
        rounds,
        |w| {
            let sender = rank * PARTIES + w.party;
            if w.round == FAULT_ROUND {
                if fault == "peer-error" && rank == FAILING_RANK && w.party == 1 {
                    say(format!("FAULT rank={rank} party=1 round={}", w.round));
                    return Err("injected failure".to_string());
                }
                if fault == "straggler" && rank == SLOW_RANK && w.party == 0 {
                    say(format!("FAULT rank={rank} party=0 round={}", w.round));
                    std::thread::sleep(straggle);
                }
            }
            update_of(sender, w.round, w.update);
            Ok(Contribution::Update)
        },
        |r| {
            if fault == "stop" && rank == FAILING_RANK && r.round % 10 == 0 {
                say(format!("PROGRESS rank={rank} round={}", r.round));
            }
            ControlFlow::Continue(())
        },
    )
}

fn rank_main(fault: &str) -> ExitCode {
    let timeout = Duration::from_millis(
        std::env::var("GRADCAST_FAULT_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(TIMEOUT_MS),
    );
    let Some((universe, _)) = gradcast_mpi::mpi::initialize_with_threading(Threading::Serialized)
    else {
        eprintln!("MPI was already initialized");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    let rank = world.rank() as usize;
    // The settle step's own communicator, made while every rank is alive.
    let side = world.duplicate();
    let enc = FixedEncoder::new(TAU);
    let max_packet = PartyEncoder::<Reference>::max_packet_len(&enc, N);
    let transport =
        MpiTransport::with_timeout(&world, PARTIES, max_packet, timeout).expect("transport");
    let config = gradcast_core::round::RoundConfig {
        step: Step::Mean,
        ..transport.round_config(N)
    };
    let mut acc: Acc =
        Accumulator::new(Reference, config, vec![enc; PARTIES], transport).expect("accumulator");
    let mut replicas = vec![vec![0.0f32; N]; PARTIES];
    say(format!("READY rank={rank} pid={}", std::process::id()));

    let rounds = if fault == "stop" {
        1_000_000
    } else {
        FAULT_ROUND + 10
    };
    let outcome = run_rounds(&mut acc, &mut replicas, rank, rounds, fault);
    let Err(failure) = outcome else {
        say(format!("OUTCOME rank={rank} kind=none"));
        return ExitCode::FAILURE;
    };
    say(describe(rank, &failure));

    let mut code = 2;
    if fault == "peer-error" && acc.transport().gave_up_in().is_none() {
        // Nothing was applied by anyone in the failed round: reset (crediting the published
        // packets back to their residuals) and go on; every replica must still agree.
        let report = acc.reset(ResetOptions::default()).expect("reset");
        let more = run_rounds(&mut acc, &mut replicas, rank, 5, "none");
        let coll = Collectives::with_timeout(&world, timeout).expect("collectives");
        match more {
            Ok(s) => {
                let sums = coll.all_gather_u64(checksum(&replicas[0])).expect("gather");
                let same = sums.iter().all(|&s| s == sums[0])
                    && replicas.iter().all(|r| r == &replicas[0]);
                say(format!(
                    "RECOVERED rank={rank} rounds={} partially_applied={} refunded={} \
                     identical={same} checksum={:016x}",
                    s.rounds, report.partially_applied, report.refunded_packets, sums[0]
                ));
                if same {
                    code = 0;
                }
            }
            Err(e) => say(format!(
                "RECOVERED rank={rank} failed msg={:?}",
                e.to_string()
            )),
        }
    }
    let gave_up = acc.transport().gave_up_in().is_some();
    let statuses = settle(&side, if gave_up { 2 } else { 1 });
    let heard = statuses.iter().filter(|&&s| s != 0).count();
    if let Some(aborter) = statuses.iter().position(|&s| s == 2) {
        // Some rank may be unreachable: MPI_Finalize would wait for it. One rank ends the job.
        if aborter == rank {
            say(format!("END rank={rank} abort heard={heard}"));
            world.abort(3);
        }
        say(format!(
            "END rank={rank} wait heard={heard} aborter={aborter}"
        ));
        std::thread::sleep(Duration::from_secs(10));
        say(format!(
            "END rank={rank} abort heard={heard} (nobody ended the job)"
        ));
        world.abort(4);
    }
    say(format!("END rank={rank} finalize heard={heard}"));
    drop(acc);
    drop(side);
    drop(universe);
    ExitCode::from(code)
}

// ----------------------------------------------------------------------------------------
// The harness.
// ----------------------------------------------------------------------------------------

/// One line a rank printed, parsed: its tag, its `key=value` fields, and when it was
/// printed (the `t=` field, ns since the epoch).
#[derive(Clone, Debug)]
struct Line {
    tag: String,
    fields: BTreeMap<String, String>,
    t: u128,
    text: String,
}

impl Line {
    fn parse(text: &str) -> Option<Line> {
        let mut words = text.split_whitespace();
        let tag = words.next()?.to_string();
        if !["READY", "PROGRESS", "FAULT", "OUTCOME", "RECOVERED", "END"].contains(&tag.as_str()) {
            return None;
        }
        // `msg="..."` may hold spaces: everything after `msg=` up to the final ` t=`.
        let mut fields = BTreeMap::new();
        let (head, msg) = match text.find(" msg=") {
            Some(i) => (&text[..i], Some(&text[i + 5..])),
            None => (text, None),
        };
        for w in head.split_whitespace().skip(1) {
            if let Some((k, v)) = w.split_once('=') {
                fields.insert(k.to_string(), v.to_string());
            }
        }
        if let Some(m) = msg {
            let (m, t) = m.rsplit_once(" t=")?;
            fields.insert("msg".into(), m.to_string());
            fields.insert("t".into(), t.to_string());
        }
        let t = fields.get("t")?.parse().ok()?;
        Some(Line {
            tag,
            fields,
            t,
            text: text.to_string(),
        })
    }

    fn get(&self, k: &str) -> &str {
        self.fields.get(k).map_or("", String::as_str)
    }

    fn rank(&self) -> usize {
        self.get("rank").parse().unwrap_or(usize::MAX)
    }
}

/// A started job: mpirun and the ranks' pids as they report them. Dropping it kills every
/// process of the job that is still there.
struct Job {
    mpirun: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    seen: Vec<Line>,
    pids: Vec<i32>,
    /// Whether mpirun has been waited for (its pid may then belong to someone else).
    reaped: bool,
}

fn alive(pid: i32) -> bool {
    // A zombie has exited: it only waits for its parent to reap it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The pids whose parent is `parent`.
fn children(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                && let Some((_, rest)) = stat.rsplit_once(") ")
                && rest.split_whitespace().nth(1) == Some(&parent.to_string())
            {
                out.push(pid);
            }
        }
    }
    out
}

impl Job {
    fn start(fault: &str) -> Job {
        let exe = std::env::current_exe().expect("current exe");
        let mut cmd = Command::new("mpirun");
        cmd.args(["--allow-run-as-root", "--oversubscribe", "-np"])
            .arg(RANKS.to_string())
            .args(["-x", "GRADCAST_FAULT", "-x", "GRADCAST_FAULT_TIMEOUT_MS"])
            .arg(&exe)
            .env("GRADCAST_FAULT", fault)
            .env("GRADCAST_FAULT_TIMEOUT_MS", TIMEOUT_MS.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut mpirun = cmd.spawn().expect("start mpirun");
        let (tx, lines) = mpsc::channel();
        let out = mpirun.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = mpirun.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Job {
            mpirun,
            lines,
            stderr,
            seen: Vec::new(),
            pids: Vec::new(),
            reaped: false,
        }
    }

    /// The next rank line, within `limit`; `None` when the job's output ended or the time
    /// is up.
    fn next(&mut self, limit: Instant) -> Option<Line> {
        loop {
            let left = limit.saturating_duration_since(Instant::now());
            let text = self.lines.recv_timeout(left).ok()?;
            println!("      | {text}");
            if let Some(line) = Line::parse(&text) {
                if line.tag == "READY"
                    && let Ok(pid) = line.get("pid").parse()
                {
                    self.pids.push(pid);
                }
                self.seen.push(line.clone());
                return Some(line);
            }
        }
    }

    /// Reads lines until `want` matches one (returned) or `limit` passes.
    fn wait_for(&mut self, limit: Instant, want: impl Fn(&Line) -> bool) -> Option<Line> {
        while let Some(line) = self.next(limit) {
            if want(&line) {
                return Some(line);
            }
        }
        None
    }

    /// Waits until mpirun exits (reading every line meanwhile), within `limit`.
    fn wait_exit(&mut self, limit: Instant) -> Option<(std::process::ExitStatus, Instant)> {
        loop {
            if let Ok(Some(status)) = self.mpirun.try_wait() {
                self.reaped = true;
                let at = Instant::now();
                // Drain what is left of the output.
                while self
                    .next(Instant::now() + Duration::from_millis(200))
                    .is_some()
                {}
                return Some((status, at));
            }
            if Instant::now() >= limit {
                return None;
            }
            let _ = self.next(Instant::now() + Duration::from_millis(20));
        }
    }

    fn lines(&self, tag: &str) -> Vec<&Line> {
        self.seen.iter().filter(|l| l.tag == tag).collect()
    }

    /// Every rank's line with `tag`, by rank.
    fn per_rank(&self, tag: &str) -> BTreeMap<usize, &Line> {
        self.lines(tag).into_iter().map(|l| (l.rank(), l)).collect()
    }

    /// The processes of the job still running (ranks and mpirun).
    fn survivors(&self) -> Vec<i32> {
        let mut all = self.pids.clone();
        if !self.reaped {
            all.push(self.mpirun.id() as i32);
        }
        all.retain(|&p| alive(p));
        all
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let leader = self.mpirun.id() as i32;
        let mut victims = self.pids.clone();
        if !self.reaped {
            victims.extend(children(leader));
        }
        for pid in victims {
            if alive(pid) {
                // SAFETY: a plain system call on a pid this job started (a rank, or a child
                // of mpirun while mpirun still runs).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !self.reaped {
            // SAFETY: as above: mpirun's process group (it was started as its leader, and
            // has not been waited for, so the id is still its).
            unsafe { libc::kill(-leader, libc::SIGKILL) };
            let _ = self.mpirun.wait();
        }
    }
}

/// A failed check: the job's stderr, then the message.
fn fail<T>(job: &Job, what: String) -> Result<T, String> {
    let err = job.stderr.lock().unwrap().clone();
    Err(format!("{what}\n--- mpirun stderr ---\n{err}"))
}

fn secs(ns: u128) -> f64 {
    ns as f64 / 1e9
}

fn timeout() -> Duration {
    Duration::from_millis(TIMEOUT_MS)
}

/// Every rank printed READY within `limit`.
fn all_ready(job: &mut Job, limit: Instant) -> Result<(), String> {
    while job.per_rank("READY").len() < RANKS {
        if job.next(limit).is_none() {
            return fail(job, "not every rank started".into());
        }
    }
    Ok(())
}

/// The job ended (within `limit`) and left no process behind; returns how long after
/// `since` it ended, and its status.
fn ended(
    job: &mut Job,
    since: Instant,
    limit: Instant,
) -> Result<(Duration, std::process::ExitStatus), String> {
    let Some((status, at)) = job.wait_exit(limit) else {
        return fail(job, "mpirun did not end in time".into());
    };
    // Give the kernel a moment to reap the ranks mpirun killed.
    let settle = Instant::now() + Duration::from_secs(2);
    while !job.survivors().is_empty() && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = job.survivors();
    if !left.is_empty() {
        return fail(job, format!("processes left running: {left:?}"));
    }
    Ok((at.duration_since(since), status))
}

/// (a): rank 3's worker fails in round 20; every rank gets a typed error naming rank 3
/// within 5 s; then every rank recovers.
fn peer_error() -> Result<(), String> {
    let started = Instant::now();
    let mut job = Job::start("peer-error");
    let limit = started + Duration::from_secs(60);
    all_ready(&mut job, limit)?;
    while job.per_rank("RECOVERED").len() < RANKS || job.per_rank("OUTCOME").len() < RANKS {
        if job.next(limit).is_none() {
            return fail(
                &job,
                "not every rank reported its outcome and recovery".into(),
            );
        }
    }
    let (took, status) = ended(&mut job, started, limit)?;
    let Some(fault) = job.lines("FAULT").first().map(|l| (*l).clone()) else {
        return fail(&job, "no FAULT line".into());
    };
    let outcomes = job.per_rank("OUTCOME");
    let mut worst = 0;
    for (&r, l) in &outcomes {
        let late = l.t.saturating_sub(fault.t);
        worst = worst.max(late);
        let ok = if r == FAILING_RANK {
            l.get("kind") == "work-failed"
        } else {
            l.get("kind") == "peer-failed" && l.get("names") == FAILING_RANK.to_string()
        };
        if !ok || l.get("round") != FAULT_ROUND.to_string() {
            return fail(&job, format!("rank {r}: unexpected outcome: {}", l.text));
        }
        if late > 5_000_000_000 {
            return fail(
                &job,
                format!("rank {r} learned of the failure after {:.3} s", secs(late)),
            );
        }
    }
    let recovered = job.per_rank("RECOVERED");
    let sums: Vec<&str> = recovered.values().map(|l| l.get("checksum")).collect();
    if recovered.values().any(|l| l.get("identical") != "true")
        || sums.iter().any(|s| *s != sums[0])
    {
        return fail(
            &job,
            format!("the replicas differ after recovery: {sums:?}"),
        );
    }
    if recovered
        .values()
        .any(|l| l.get("partially_applied") != "false")
    {
        return fail(&job, "a replica applied the failed round".into());
    }
    if !status.success() {
        return fail(&job, format!("mpirun ended with {status}"));
    }
    println!(
        "  peer-error: rank {FAILING_RANK}'s worker failed in round {FAULT_ROUND}; every other \
         rank returned PeerFailed naming it within {:.3} s; all recovered (checksum {}); job \
         took {:.1} s",
        secs(worst),
        sums[0],
        took.as_secs_f64()
    );
    Ok(())
}

/// (b): rank 3 is stopped with SIGSTOP mid-run; the others return a timeout naming it
/// within the timeout plus 10 s, the job ends within the timeout plus 10 s, and no process
/// is left.
fn stop() -> Result<(), String> {
    let started = Instant::now();
    let mut job = Job::start("stop");
    let limit = started + Duration::from_secs(60);
    all_ready(&mut job, limit)?;
    let target = job.per_rank("READY")[&FAILING_RANK]
        .get("pid")
        .parse::<i32>()
        .unwrap_or(0);
    let progressed = job.wait_for(limit, |l| {
        l.tag == "PROGRESS"
            && l.rank() == FAILING_RANK
            && l.get("round").parse::<u64>().is_ok_and(|r| r >= STOP_AFTER)
    });
    if progressed.is_none() {
        return fail(
            &job,
            format!("rank {FAILING_RANK} did not reach round {STOP_AFTER}"),
        );
    }
    let stopped_ns = unix_ns();
    let stopped = Instant::now();
    // SAFETY: a plain system call on a rank this job started.
    if unsafe { libc::kill(target, libc::SIGSTOP) } != 0 {
        return fail(&job, format!("cannot stop pid {target}"));
    }
    let bound = timeout() + Duration::from_secs(10);
    let (took, status) = ended(&mut job, stopped, stopped + bound + Duration::from_secs(5))?;
    let outcomes = job.per_rank("OUTCOME");
    let mut worst = 0;
    for r in (0..RANKS).filter(|&r| r != FAILING_RANK) {
        let Some(l) = outcomes.get(&r) else {
            return fail(&job, format!("rank {r} reported no outcome"));
        };
        let names: Vec<&str> = l.get("names").split(',').collect();
        if l.get("kind") != "timeout" || !names.contains(&FAILING_RANK.to_string().as_str()) {
            return fail(&job, format!("rank {r}: unexpected outcome: {}", l.text));
        }
        let late = l.t.saturating_sub(stopped_ns);
        worst = worst.max(late);
        if late > bound.as_nanos() {
            return fail(&job, format!("rank {r} reported after {:.3} s", secs(late)));
        }
    }
    if took > bound {
        return fail(&job, format!("the job ended {took:?} after the stop"));
    }
    if status.success() {
        return fail(&job, "mpirun reported success".into());
    }
    let aborted = job
        .lines("END")
        .iter()
        .filter(|l| l.text.contains(" abort "))
        .count();
    println!(
        "  stop: rank {FAILING_RANK} stopped after round {STOP_AFTER}; ranks 0-2 returned a \
         timeout naming it {:.3} s after the stop (timeout {:?}); {aborted} rank(s) called \
         MPI_Abort; the job ended {:.1} s after the stop ({status}); no process left",
        secs(worst),
        timeout(),
        took.as_secs_f64()
    );
    Ok(())
}

/// (c): rank 1's worker is slower than the timeout; every rank returns a typed timeout.
fn straggler() -> Result<(), String> {
    let started = Instant::now();
    let mut job = Job::start("straggler");
    let limit = started + Duration::from_secs(60);
    all_ready(&mut job, limit)?;
    while job.per_rank("OUTCOME").len() < RANKS {
        if job.next(limit).is_none() {
            return fail(&job, "not every rank reported its outcome".into());
        }
    }
    let (took, status) = ended(&mut job, started, limit)?;
    let Some(fault) = job.lines("FAULT").first().map(|l| (*l).clone()) else {
        return fail(&job, "no FAULT line".into());
    };
    let bound = (timeout() + Duration::from_secs(10)).as_nanos();
    let mut kinds = Vec::new();
    for (&r, l) in &job.per_rank("OUTCOME") {
        let names: Vec<&str> = l.get("names").split(',').collect();
        let ok = l.get("timeout") == "true"
            && if r == SLOW_RANK {
                l.get("kind") == "local-timeout" && names == ["0"]
            } else {
                names.contains(&SLOW_RANK.to_string().as_str())
            };
        if !ok || l.get("round") != FAULT_ROUND.to_string() {
            return fail(&job, format!("rank {r}: unexpected outcome: {}", l.text));
        }
        let late = l.t.saturating_sub(fault.t);
        // The slow rank reports once its late worker is back (timeout + 1.5 s).
        let allowed = if r == SLOW_RANK {
            bound + 1_500_000_000
        } else {
            bound
        };
        if late > allowed {
            return fail(&job, format!("rank {r} reported after {:.3} s", secs(late)));
        }
        kinds.push(format!(
            "rank {r}: {} after {:.3} s",
            l.get("kind"),
            secs(late)
        ));
    }
    println!(
        "  straggler: rank {SLOW_RANK}'s worker late by the timeout + 1.5 s in round \
         {FAULT_ROUND}: {}; job took {:.1} s ({status})",
        kinds.join(", "),
        took.as_secs_f64()
    );
    Ok(())
}

type Scenario = (&'static str, fn() -> Result<(), String>);

const SCENARIOS: &[Scenario] = &[
    ("peer-error", peer_error),
    ("stop", stop),
    ("straggler", straggler),
];

fn main() -> ExitCode {
    if let Ok(fault) = std::env::var("GRADCAST_FAULT")
        && std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some()
    {
        return rank_main(&fault);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    if std::env::var("GRADCAST_MPI_RANKS").is_ok_and(|v| v == "0") {
        println!("SKIP: MPI fault tests (GRADCAST_MPI_RANKS=0)");
        return ExitCode::SUCCESS;
    }
    if Command::new("mpirun").arg("--version").output().is_err() {
        println!("SKIP: MPI fault tests (mpirun is not on the PATH)");
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|(name, _)| {
            args.iter().all(|a| a.starts_with('-')) || args.contains(&name.to_string())
        })
        .collect();
    let mut failed = 0;
    for (name, check) in chosen {
        println!("faults: {name} (mpirun -np {RANKS}, transport timeout {TIMEOUT_MS} ms)");
        let t0 = Instant::now();
        match std::panic::catch_unwind(check) {
            Ok(Ok(())) => println!("  ok {name} ({:.1} s)", t0.elapsed().as_secs_f64()),
            Ok(Err(e)) => {
                eprintln!("  FAILED {name}: {e}");
                failed += 1;
            }
            Err(_) => {
                eprintln!("  FAILED {name}: the check panicked");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
