//! The firmware proper (built only for `target_os = "none"`).

use core::arch::asm;
use core::ffi::CStr;
use core::fmt;

use cortex_m_rt::{ExceptionFrame, entry, exception};
use gradcast_core::Error;
use gradcast_embedded::kat::{self, KatFailure};
use gradcast_embedded::{
    DecodeLine, EncodeLine, MAX_PACKET, N, ROUNDS, RoundLine, Run, SEGMENTS, SliceError, Slices,
    crc32c, decode_reference,
};
use semihosting::experimental::env;
use semihosting::fs::File;
use semihosting::io::{self, Write as _};
use semihosting::{eprintln, println, process};

use crate::stack;

/// What can stop the firmware short of a panic.
enum Failure {
    Encoder(SliceError),
    Io(io::Error),
    Kat(KatFailure<'static>),
    BadArgument,
}

impl From<SliceError> for Failure {
    fn from(e: SliceError) -> Self {
        Failure::Encoder(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Encoder(e.into())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Encoder(e) => write!(f, "encoder: {e}"),
            Failure::Io(e) => write!(f, "semihosting I/O: {e}"),
            Failure::Kat(e) => e.fmt(f),
            Failure::BadArgument => f.write_str(
                "unknown argument (expected messages=PATH, panic, fault, overflow or hang)",
            ),
        }
    }
}

/// What the command line asks for.
struct Options {
    /// Where to write the packets (a host path, relative to QEMU's working directory).
    messages: Option<CPath>,
}

/// A host path from the command line, NUL-terminated for semihosting, without an allocator.
struct CPath {
    bytes: [u8; 256],
}

impl CPath {
    /// The path `s`, or `None` when it is too long or holds a NUL byte.
    fn new(s: &str) -> Option<Self> {
        if s.len() >= 256 || s.as_bytes().contains(&0) {
            return None;
        }
        let mut bytes = [0u8; 256];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(CPath { bytes })
    }

    /// The path as a C string.
    fn as_c_str(&self) -> &CStr {
        // Cannot fail: `new` leaves at least one NUL byte after the path.
        CStr::from_bytes_until_nul(&self.bytes).unwrap_or_default()
    }
}

/// Reads the semihosting command line: the program name, then `messages=PATH` or a
/// self-test (`panic`, `fault`, `overflow`, `hang`), which runs at once.
fn options() -> Result<Options, Failure> {
    let mut options = Options { messages: None };
    // No command line (a debugger without it): the default run.
    let Ok(args) = env::args::<512>() else {
        return Ok(options);
    };
    for arg in (&args).skip(1) {
        match arg.map_err(|_| Failure::BadArgument)? {
            "" => {}
            "panic" => self_test_panic(),
            "fault" => self_test_fault(),
            "hang" => self_test_hang(),
            "overflow" => {
                let depth = self_test_overflow(core::hint::black_box(0));
                println!("overflow returned {depth}");
            }
            a => match a.strip_prefix("messages=") {
                Some(p) => options.messages = Some(CPath::new(p).ok_or(Failure::BadArgument)?),
                None => return Err(Failure::BadArgument),
            },
        }
    }
    Ok(options)
}

#[inline(never)]
fn self_test_panic() -> ! {
    let rounds = core::hint::black_box(ROUNDS);
    panic!("self-test panic after {rounds} rounds (requested on the command line)");
}

fn self_test_fault() -> ! {
    // SAFETY: `udf` is the architecturally undefined instruction: it raises a UsageFault
    // (escalated to HardFault), whose handler reports it and ends the program. Nothing
    // returns here.
    unsafe { asm!("udf #0", options(noreturn)) }
}

/// Recurses with a 1 KiB frame until the stack runs out (the bound is never reached: the
/// stack holds 16 frames).
#[inline(never)]
fn self_test_overflow(depth: u32) -> u32 {
    if depth == core::hint::black_box(u32::MAX) {
        return 0;
    }
    let mut frame = [0u8; 1024];
    frame[depth as usize % 1024] = depth as u8;
    core::hint::black_box(&mut frame);
    self_test_overflow(depth + 1).wrapping_add(u32::from(frame[0]))
}

fn self_test_hang() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// The FPU's state: CPACR (coprocessor access), CONTROL.FPCA (set by the core once a
/// floating-point instruction has run in this context) and FPSCR (rounding, flush-to-zero).
struct Fpu {
    cpacr: u32,
    fpca: u32,
    fpscr: u32,
}

fn fpu() -> Fpu {
    const CPACR: *const u32 = 0xE000_ED88 as *const u32;
    // SAFETY: CPACR is an always-present, always-readable System Control Block register of the
    // Armv7-M architecture; reading it has no side effect.
    let cpacr = unsafe { CPACR.read_volatile() };
    let (control, fpscr): (u32, u32);
    // SAFETY: reading CONTROL and FPSCR into general registers has no side effect; `vmrs`
    // needs the FPU enabled, which cortex-m-rt's reset handler did (an `eabihf` target), and
    // which the run's own floating-point code already relied on.
    unsafe {
        asm!("mrs {}, CONTROL", out(reg) control, options(nomem, nostack, preserves_flags));
        asm!("vmrs {}, fpscr", out(reg) fpscr, options(nomem, nostack, preserves_flags));
    }
    Fpu {
        cpacr,
        fpca: (control >> 2) & 1,
        fpscr,
    }
}

fn run(
    residual: &'static mut [f32; N],
    target: &'static mut [f32; N],
    packet: &'static mut [u8; MAX_PACKET],
) -> Result<(), Failure> {
    let options = options()?;
    println!(
        "gradcast-embedded firmware n={N} rounds={ROUNDS} segments={} max_packet={MAX_PACKET}",
        SEGMENTS.len()
    );
    let mut file = match &options.messages {
        Some(path) => Some(File::create(path.as_c_str())?),
        None => None,
    };

    // Encode: R rounds from the static residual, each packet out to the host.
    let backend = Slices::new();
    let mut run = Run::new()?;
    let mut residual: &mut [f32] = residual;
    let mut depth = stack::Depth::new();
    for _ in 0..ROUNDS {
        run.add_update(residual);
        depth.start();
        let stats = run.encode(&backend, &mut residual, packet)?;
        depth.stop();
        if let Some(f) = &mut file {
            f.write_all(&packet[..stats.message_bytes])?;
        }
        println!("{}", RoundLine(&stats));
    }
    let fpu = fpu();
    println!(
        "fpu cpacr={:08x} fpca={} fpscr={:08x}",
        fpu.cpacr, fpu.fpca, fpu.fpscr
    );
    println!(
        "{}",
        EncodeLine {
            encoder: run.encoder(),
            residual_crc32c: crc32c(residual),
        }
    );

    // Decode: the reference messages embedded at build time, into a zeroed vector.
    let mut decoded: &mut [f32] = target;
    let messages = decode_reference(&backend, &mut decoded)?;
    println!(
        "{}",
        DecodeLine {
            messages,
            crc32c: crc32c(decoded),
        }
    );

    // The format's known answers, encoded and decoded here.
    let (a, b) = decoded.split_at_mut(N / 2);
    let vectors =
        kat::Vectors::new(kat::BLOB).ok_or(Failure::Kat(KatFailure::Malformed { index: 0 }))?;
    let checked = kat::check(vectors, a, b, packet).map_err(Failure::Kat)?;
    println!("kat vectors={checked} ok");

    depth.sample();
    println!(
        "stack encode={} peak={} size={}",
        depth.encode_bytes(),
        depth.peak_bytes(),
        stack::size()
    );
    println!("done");
    Ok(())
}

#[entry]
fn main() -> ! {
    // Static buffers (cortex-m-rt hands them to `main` as `&'static mut`): no allocator.
    static mut RESIDUAL: [f32; N] = [0.0; N];
    static mut TARGET: [f32; N] = [0.0; N];
    static mut PACKET: [u8; MAX_PACKET] = [0; MAX_PACKET];
    match run(RESIDUAL, TARGET, PACKET) {
        Ok(()) => process::exit(0),
        Err(e) => {
            eprintln!("error: {e}");
            process::exit(1)
        }
    }
}

/// A fault (an undefined instruction, a bus error, ...): report where and why, exit 134.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    const CFSR: *const u32 = 0xE000_ED28 as *const u32;
    const HFSR: *const u32 = 0xE000_ED2C as *const u32;
    // SAFETY: CFSR and HFSR are always-present, readable System Control Block registers;
    // reading them has no side effect.
    let (cfsr, hfsr) = unsafe { (CFSR.read_volatile(), HFSR.read_volatile()) };
    eprintln!(
        "HardFault: pc={:08x} lr={:08x} xpsr={:08x} cfsr={cfsr:08x} hfsr={hfsr:08x}",
        frame.pc(),
        frame.lr(),
        frame.xpsr()
    );
    process::abort()
}

/// Any other exception or interrupt (none is enabled): report it, exit 134.
#[exception]
unsafe fn DefaultHandler(irqn: i16) -> ! {
    eprintln!("unexpected exception or interrupt {irqn}");
    process::abort()
}
