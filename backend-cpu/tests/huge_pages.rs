//! `CpuConfig::huge_pages`: large buffers are advised to use transparent huge pages, and the
//! advice changes nothing a program can see but the kernel's backing of the pages.
#![cfg(all(feature = "std", target_os = "linux"))]

use gradcast_core::Backend;
use gradcast_core::codec::EncodeParams;
use gradcast_core::wire::MessageView;
use gradcast_cpu::{Cpu, CpuConfig};

/// The kernel's THP mode (`always`, `madvise` or `never`), if it has THP.
fn thp_mode() -> Option<String> {
    let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let at = s.find('[')?;
    let end = s[at..].find(']')?;
    Some(s[at + 1..at + end].to_string())
}

/// The `THPeligible` flag of the mapping that holds `addr`, from `/proc/self/smaps`.
fn thp_eligible(addr: usize) -> Option<bool> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        let head = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = head.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            inside = a <= addr && addr < b;
            continue;
        }
        if inside && let Some(v) = line.strip_prefix("THPeligible:") {
            return Some(v.trim() == "1");
        }
    }
    None
}

/// An address inside `buf`'s 2 MiB-aligned part.
fn aligned_inside(buf: &[f32]) -> usize {
    (buf.as_ptr() as usize).next_multiple_of(2 << 20)
}

#[test]
fn large_buffers_are_advised_huge_pages() {
    let Some(mode) = thp_mode() else {
        println!("SKIP: this kernel has no transparent huge pages");
        return;
    };
    if mode == "never" {
        println!("SKIP: transparent huge pages are off (mode never)");
        return;
    }
    let n = 8 << 20; // 32 MiB: several aligned 2 MiB regions.
    let on = Cpu::new(CpuConfig::fast().with_huge_pages(true));
    let buf = on.alloc(n).unwrap();
    assert_eq!(buf.len(), n);
    assert!(
        buf.iter().all(|&v| v.to_bits() == 0),
        "alloc must give +0.0"
    );
    let Some(eligible) = thp_eligible(aligned_inside(&buf)) else {
        println!("SKIP: /proc/self/smaps has no THPeligible field");
        return;
    };
    assert!(
        eligible,
        "huge_pages: the buffer's mapping is not THP-eligible"
    );
    if mode == "madvise" {
        // Without the advice, in this mode, the kernel gives no huge pages.
        let off = Cpu::new(CpuConfig::fast().with_huge_pages(false));
        let plain = off.alloc(n).unwrap();
        assert_eq!(thp_eligible(aligned_inside(&plain)), Some(false));
    }
}

#[test]
fn huge_page_buffers_decode_like_plain_ones() {
    let n = 3 << 20;
    let mut x: Vec<f32> = (0..n)
        .map(|i| {
            if i % 997 == 0 {
                1.5 - (i % 2) as f32 * 3.0
            } else {
                0.25
            }
        })
        .collect();
    let mut out = vec![0u8; gradcast_core::wire::max_message_len(n)];
    let s = Cpu::portable()
        .encode(&mut x, &EncodeParams::new(1.0), &mut out)
        .unwrap();
    let msg = MessageView::parse(&out[..s.bytes]).unwrap();
    let mut results = Vec::new();
    for huge in [false, true] {
        let cpu = Cpu::new(CpuConfig::fast().with_huge_pages(huge));
        let mut t = cpu.alloc(n).unwrap();
        cpu.decode_add(&msg, &mut t).unwrap();
        cpu.decode_add(&msg, &mut t).unwrap();
        results.push(t.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0][997], (-2.0f32).to_bits()); // 997 is odd: -1.5.
    assert_eq!(results[0][0], 2.0f32.to_bits());
    assert_eq!(results[0][1], 0);
}
