//! Several backends (several contexts) created, used and dropped on several threads at once,
//! as the conformance suite's parallel tests do.
// A std test binary: core paths buy nothing here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_core::Backend;
use gradcast_core::backend::Reference;
use gradcast_core::codec::EncodeParams;
use gradcast_core::wire::max_message_len;
use gradcast_opencl::OpenCl;

#[test]
fn parallel_instances() {
    // Probe only: the first context must be created by the racing threads themselves.
    if let Err(e) = gradcast_opencl::probe_platforms() {
        eprintln!("SKIP: {e}");
        return;
    }
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for round in 0..3u64 {
                    let b = OpenCl::first_device().expect("backend");
                    let n = 5000 + 777 * t;
                    let x: Vec<f32> = (0..n)
                        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                        .collect();
                    let mut d = b.alloc(n).expect("alloc");
                    b.upload(&x, &mut d).expect("upload");
                    let mut params = EncodeParams::new(1.0);
                    params.round = round;
                    params.cap = Some(100);
                    let mut out = vec![0u8; max_message_len(n)];
                    let s = b.encode(&mut d, &params, &mut out).expect("encode");
                    let mut r = x.clone();
                    let mut want = vec![0u8; max_message_len(n)];
                    let w = Reference
                        .encode(&mut r, &params, &mut want)
                        .expect("reference");
                    assert_eq!(s, w);
                    assert_eq!(out[..s.bytes], want[..w.bytes]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

/// The backend and its buffers can be shared and sent between threads.
#[test]
fn backend_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<OpenCl>();
    check::<gradcast_opencl::ClBuffer>();
    check::<gradcast_opencl::OpenClError>();
}
