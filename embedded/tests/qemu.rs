//! The firmware under QEMU, checked against the host.
//!
//! Builds the firmware (`--release --target thumbv7em-none-eabihf`, into this build's target
//! directory), runs it on QEMU's `mps2-an386` (a Cortex-M4 with FPU) with semihosting, and
//! compares with the same scenario run here on the core's reference backend: every message
//! byte for byte (and each one parsed and decoded by the core), every round's statistics bit
//! for bit, the final residual's checksum, the checksum of the reference messages decoded on
//! the target, and the known-answer vectors checked there. Other tests make the firmware
//! panic, fault, overflow its stack and hang, and check that each ends the run with a report
//! and a failure, within a time bound.
//!
//! Without `qemu-system-arm` or the `thumbv7em-none-eabihf` target these tests print
//! `SKIP: <reason>` and pass, unless `GRADCAST_REQUIRE_QEMU=1` (CI sets it): then they fail.
// A std test binary: core paths buy nothing here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use std::{fs, thread};

use gradcast_core::backend::Reference;
use gradcast_core::packet::Messages;
use gradcast_core::wire::MessageView;
use gradcast_embedded::{
    DecodeLine, EncodeLine, MAX_PACKET, N, REFERENCE, ROUNDS, RoundLine, Run, SEGMENTS, SENDER,
    crc32c, decode_reference,
};

const TARGET: &str = "thumbv7em-none-eabihf";
const QEMU: &str = "qemu-system-arm";
/// The emulated machine; the runner in `.cargo/config.toml` uses the same options.
const MACHINE: &[&str] = &[
    "-machine",
    "mps2-an386",
    "-cpu",
    "cortex-m4",
    "-nographic",
    "-monitor",
    "none",
    "-serial",
    "none",
];
/// A run takes about a second; anything past this is a hang.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Whether a missing QEMU or target fails the test instead of skipping it.
fn required() -> bool {
    std::env::var("GRADCAST_REQUIRE_QEMU").is_ok_and(|v| v == "1")
}

/// The firmware's path, built once per test process; `None` (after a `SKIP:` line) without
/// QEMU or the Rust target. A failed build is a test failure, never a skip.
fn firmware() -> Option<&'static Path> {
    static FIRMWARE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = FIRMWARE.get_or_init(|| {
        let qemu = Command::new(QEMU).arg("--version").output();
        if !qemu.is_ok_and(|o| o.status.success()) {
            return Err(format!(
                "{QEMU} not found (Debian: apt-get install qemu-system-arm)"
            ));
        }
        let libdir = Command::new("rustc")
            .args(["--print", "target-libdir", "--target", TARGET])
            .output()
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        let has_core = libdir.is_ok_and(|d| {
            fs::read_dir(d).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
            })
        });
        if !has_core {
            return Err(format!(
                "Rust target {TARGET} not installed (rustup target add {TARGET})"
            ));
        }
        // This test binary's target directory (the parent of CARGO_TARGET_TMPDIR), so the
        // firmware build shares what CI's no_std step already built.
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("CARGO_TARGET_TMPDIR has a parent")
            .to_path_buf();
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "gradcast-embedded", "--bin", "firmware"])
            .args(["--release", "--target", TARGET])
            .env("CARGO_TARGET_DIR", &target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo to build the firmware");
        assert!(status.success(), "building the firmware failed: {status}");
        Ok(target_dir.join(TARGET).join("release").join("firmware"))
    });
    match built {
        Ok(path) => Some(path),
        Err(reason) if required() => panic!("GRADCAST_REQUIRE_QEMU=1 but {reason}"),
        Err(reason) => {
            println!("SKIP: {reason}");
            None
        }
    }
}

/// How a QEMU run ended.
#[derive(Debug)]
struct Outcome {
    /// The exit code; `None` when killed (timeout) or ended by a signal.
    code: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

/// Runs the firmware with semihosting command-line `args`, in `dir`, killing it after
/// `timeout`.
fn qemu(firmware: &Path, args: &[&str], dir: &Path, timeout: Duration) -> Outcome {
    fs::create_dir_all(dir).expect("create the run directory");
    let mut semihosting = String::from("enable=on,target=native,arg=firmware");
    for a in args {
        assert!(!a.contains(',') && !a.contains(' '), "argument {a:?}");
        semihosting.push_str(",arg=");
        semihosting.push_str(a);
    }
    let mut child = Command::new(QEMU)
        .args(MACHINE)
        .args(["-semihosting-config", &semihosting, "-kernel"])
        .arg(firmware)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-arm");
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break (status, false);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            break (child.wait().expect("reap qemu"), true);
        }
        thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        timed_out,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn run_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("qemu")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// The host's run of the scenario: the packets, one report line per round, the encode line.
struct Host {
    packets: Vec<Vec<u8>>,
    round_lines: Vec<String>,
    encode_line: String,
    decode_line: String,
}

fn host() -> Host {
    let mut run = Run::new().expect("the scenario's encoder");
    let mut residual = vec![0.0f32; N];
    let mut out = [0u8; MAX_PACKET];
    let (mut packets, mut round_lines) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        run.add_update(&mut residual);
        let stats = run
            .encode(&Reference, &mut residual, &mut out)
            .expect("encode");
        packets.push(out[..stats.message_bytes].to_vec());
        round_lines.push(RoundLine(&stats).to_string());
    }
    let encode_line = EncodeLine {
        encoder: run.encoder(),
        residual_crc32c: crc32c(&residual),
    }
    .to_string();
    let mut decoded = vec![0.0f32; N];
    let messages = decode_reference(&Reference, &mut decoded).expect("decode the reference");
    let decode_line = DecodeLine {
        messages,
        crc32c: crc32c(&decoded),
    }
    .to_string();
    Host {
        packets,
        round_lines,
        encode_line,
        decode_line,
    }
}

/// Compares the firmware's message file and report with the host's run; `Err` says where
/// they first differ.
fn compare(host: &Host, messages: &[u8], stdout: &str) -> Result<(), String> {
    // Byte for byte, packet by packet.
    let mut rest = messages;
    for (round, packet) in host.packets.iter().enumerate() {
        let got = rest.get(..packet.len()).unwrap_or(rest);
        if got != &packet[..] {
            let at = got.iter().zip(packet).position(|(a, b)| a != b);
            return Err(format!(
                "round {round}: the firmware's packet differs from the host's (first at byte \
                 {at:?}; lengths {} and {})",
                got.len(),
                packet.len()
            ));
        }
        rest = &rest[packet.len()..];
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes after the last round's packet",
            rest.len()
        ));
    }
    // Every message parses (checksum, layout) and decodes on the host.
    let mut received = vec![0.0f32; N];
    let mut count = 0u64;
    for m in Messages::new(messages) {
        let m: MessageView<'_> = m.map_err(|e| format!("message {count}: {e}"))?;
        let h = m.header();
        let (segment, len) = SEGMENTS[(count % 2) as usize];
        if h.sender != SENDER || h.round != count / 2 || h.segment != segment || h.n as usize != len
        {
            return Err(format!("message {count}: unexpected header {h:?}"));
        }
        gradcast_core::codec::decode_add(&m, &mut received)
            .map_err(|e| format!("message {count}: {e}"))?;
        count += 1;
    }
    if count != 2 * ROUNDS {
        return Err(format!("{count} messages, expected {}", 2 * ROUNDS));
    }
    // The report, line by line.
    let lines: Vec<&str> = stdout.lines().collect();
    let rounds: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("round "))
        .collect();
    if rounds.len() != host.round_lines.len() {
        return Err(format!("{} round lines, expected {}", rounds.len(), ROUNDS));
    }
    for (got, want) in rounds.iter().zip(&host.round_lines) {
        if got != want {
            return Err(format!(
                "round statistics differ:\n  target {got}\n  host   {want}"
            ));
        }
    }
    for want in [&host.encode_line, &host.decode_line] {
        let key = want.split(' ').next().unwrap_or_default();
        let got = lines.iter().find(|l| l.split(' ').next() == Some(key));
        if got != Some(&want.as_str()) {
            return Err(format!(
                "{key} line differs:\n  target {got:?}\n  host   {want}"
            ));
        }
    }
    let kat = format!("kat vectors={} ok", gradcast_core::kat::vectors().len());
    if !lines.contains(&kat.as_str()) {
        return Err(format!("no line {kat:?}"));
    }
    Ok(())
}

/// `key=value` fields of the report line starting with `name`.
fn fields<'a>(stdout: &'a str, name: &str) -> Vec<(&'a str, &'a str)> {
    let line = stdout
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} line in\n{stdout}"));
    line.split(' ')
        .skip(1)
        .filter_map(|f| f.split_once('='))
        .collect()
}

fn field(fields: &[(&str, &str)], key: &str) -> u64 {
    let (_, v) = fields
        .iter()
        .find(|(k, _)| *k == key)
        .unwrap_or_else(|| panic!("no field {key} in {fields:?}"));
    u64::from_str_radix(
        v,
        if key == "cpacr" || key == "fpscr" {
            16
        } else {
            10
        },
    )
    .unwrap_or_else(|_| panic!("field {key}={v}"))
}

#[test]
fn firmware_matches_the_host_byte_for_byte() {
    let Some(fw) = firmware() else { return };
    let dir = run_dir("main");
    let started = Instant::now();
    let o = qemu(fw, &["messages=messages.bin"], &dir, TIMEOUT);
    let took = started.elapsed();
    assert_eq!(o.code, Some(0), "the firmware failed: {o:#?}");
    assert!(o.stdout.ends_with("done\n"), "{}", o.stdout);
    let messages = fs::read(dir.join("messages.bin")).expect("the firmware's message file");

    let host = host();
    if let Err(e) = compare(&host, &messages, &o.stdout) {
        panic!("the firmware and the host differ: {e}");
    }

    // The comparison is not a formality: one flipped bit of one message, or one changed
    // statistic, is caught.
    let mut flipped = messages.clone();
    flipped[messages.len() / 2] ^= 0x10;
    assert!(compare(&host, &flipped, &o.stdout).is_err());
    let changed = o.stdout.replacen("round index=7 ", "round index=8 ", 1);
    assert!(compare(&host, &messages, &changed).is_err());
    let changed = o
        .stdout
        .replacen("residual_crc32c=", "residual_crc32c=1", 1);
    assert!(compare(&host, &messages, &changed).is_err());

    // The FPU did the float work: coprocessors 10 and 11 enabled, an FP context active, IEEE
    // behaviour (round to nearest, no flush-to-zero, no default NaN).
    let fpu = fields(&o.stdout, "fpu");
    assert_eq!((field(&fpu, "cpacr") >> 20) & 0xF, 0xF, "{fpu:?}");
    assert_eq!(field(&fpu, "fpca"), 1, "{fpu:?}");
    let fpscr = field(&fpu, "fpscr");
    assert_eq!(fpscr & (0b1111 << 22), 0, "RMode, FZ, DN, AHP: {fpscr:08x}");

    // The stack: the encode of N = 4096 and the whole run stay well inside it.
    let stack = fields(&o.stdout, "stack");
    let (encode, peak, size) = (
        field(&stack, "encode"),
        field(&stack, "peak"),
        field(&stack, "size"),
    );
    assert!(encode > 0 && peak >= encode && peak < size, "{stack:?}");
    println!(
        "firmware: {} messages, {} bytes, identical to the host; stack: encode {encode} B, \
         peak {peak} B of {size} B; QEMU run {:.2} s",
        2 * ROUNDS,
        messages.len(),
        took.as_secs_f64()
    );
    // The decode line names all reference messages.
    let decode = fields(&o.stdout, "decode");
    assert_eq!(field(&decode, "bytes"), REFERENCE.len() as u64);
}

#[test]
fn a_panic_is_reported_with_its_location_and_fails_the_run() {
    let Some(fw) = firmware() else { return };
    let o = qemu(fw, &["panic"], &run_dir("panic"), TIMEOUT);
    assert_eq!(o.code, Some(101), "{o:#?}");
    assert!(
        o.stderr
            .contains("panicked at embedded/src/bin/firmware/target.rs:")
            && o.stderr
                .contains(&format!("self-test panic after {ROUNDS} rounds")),
        "{o:#?}"
    );
}

#[test]
fn a_fault_is_reported_and_fails_the_run() {
    let Some(fw) = firmware() else { return };
    let o = qemu(fw, &["fault"], &run_dir("fault"), TIMEOUT);
    assert_eq!(o.code, Some(134), "{o:#?}");
    // CFSR.UNDEFINSTR: the undefined instruction the self-test executes.
    assert!(
        o.stderr.contains("HardFault: pc=") && o.stderr.contains("cfsr=00010000"),
        "{o:#?}"
    );
}

#[test]
fn a_stack_overflow_stops_the_machine() {
    let Some(fw) = firmware() else { return };
    let o = qemu(fw, &["overflow"], &run_dir("overflow"), TIMEOUT);
    // The stack lies at the bottom of RAM: the overflow runs into unmapped memory, the fault
    // cannot be stacked, the core locks up, and QEMU stops with an error. Nothing is
    // silently overwritten, and the run does not go on.
    assert!(!o.timed_out && o.code != Some(0), "{o:#?}");
    assert!(o.stderr.contains("Lockup"), "{o:#?}");
    assert!(!o.stdout.contains("overflow returned"), "{o:#?}");
}

#[test]
fn a_hang_is_bounded_by_the_timeout() {
    let Some(fw) = firmware() else { return };
    let started = Instant::now();
    let o = qemu(fw, &["hang"], &run_dir("hang"), Duration::from_secs(3));
    assert!(o.timed_out && o.code.is_none(), "{o:#?}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn an_unknown_argument_is_an_error() {
    let Some(fw) = firmware() else { return };
    let o = qemu(fw, &["bogus"], &run_dir("bogus"), TIMEOUT);
    assert_eq!(o.code, Some(1), "{o:#?}");
    assert!(o.stderr.contains("unknown argument"), "{o:#?}");
}
