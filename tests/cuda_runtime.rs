//! The CUDA runtime: no device is a status, never a panic; on a GPU, buffers, launches, streams, timers
//! and graph capture work.
#![cfg(feature = "cuda")]

mod cuda_common;

use specblock::Status;
use specblock::cuda::{DeviceBuffer, Gpu, Graph, Module, Stream, Timer, arg};

#[test]
fn open_without_a_device_is_a_status() {
    match Gpu::open(0) {
        Ok(gpu) => {
            assert!(!gpu.name().is_empty());
            assert!(gpu.compute_capability().0 >= 8);
            assert!(gpu.multiprocessors() > 0);
        }
        Err(e) => assert_eq!(e.status(), Status::NoDevice, "{e}"),
    }
    // An ordinal past the last device is also NoDevice.
    let e = Gpu::open(1 << 20).unwrap_err();
    assert_eq!(e.status(), Status::NoDevice, "{e}");
}

fn random_f32(n: usize, seed: u64) -> Vec<f32> {
    let rng = specblock::rng::CounterRng::new(seed);
    (0..n as u64)
        .map(|i| rng.uniform(i) as f32 * 4.0 - 2.0)
        .collect()
}

#[test]
fn buffers_round_trip_and_kernels_run() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let stream = Stream::new(&gpu).unwrap();
    for (n, seed) in [(1usize, 1u64), (1000, 2), (1 << 20, 3), (12345, 4)] {
        let x = random_f32(n, seed);
        let dx = DeviceBuffer::from_slice(&gpu, &x).unwrap();
        assert_eq!(dx.to_vec().unwrap(), x);
        let mut dy = DeviceBuffer::<f32>::new(&gpu, n).unwrap();
        dy.fill_bytes(0xFF).unwrap(); // NaN poison
        let f = gpu.function(Module::Util, c"sb_axpb_f32").unwrap();
        let (px, py, len, a, b) = (dx.ptr(), dy.ptr(), n as u64, 1.5f32, -0.25f32);
        // SAFETY: both buffers hold n floats; argument types match the kernel.
        unsafe {
            gpu.launch(
                f,
                (64, 1, 1),
                (128, 1, 1),
                0,
                &stream,
                &mut [arg(&px), arg(&py), arg(&len), arg(&a), arg(&b)],
            )
            .unwrap();
        }
        stream.synchronize().unwrap();
        let y = dy.to_vec().unwrap();
        for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
            // nvcc contracts x * a + b into one fused multiply-add (one rounding).
            assert_eq!(yi, xi.mul_add(a, b), "element {i} of {n}");
        }
    }
}

#[test]
fn graphs_replay_and_timers_measure() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let stream = Stream::new(&gpu).unwrap();
    let mut buf = DeviceBuffer::<u32>::new(&gpu, 4097).unwrap();
    buf.fill_bytes(0).unwrap();
    let graph = Graph::capture(&stream, |s| buf.fill_u32(&gpu, s, 0xA5A5_0001)).unwrap();
    let timer = Timer::new(&gpu).unwrap();
    timer.start(&stream).unwrap();
    for _ in 0..10 {
        graph.launch(&stream).unwrap();
    }
    let ms = timer.stop_ms(&stream).unwrap();
    assert!(ms >= 0.0 && ms.is_finite());
    assert!(buf.to_vec().unwrap().iter().all(|&v| v == 0xA5A5_0001));
    let (free, total) = gpu.memory().unwrap();
    assert!(free <= total && total > 0);
}

#[test]
fn oversized_transfers_are_errors() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let mut b = DeviceBuffer::<i32>::new(&gpu, 4).unwrap();
    assert_eq!(
        b.upload(&[1, 2, 3, 4, 5]).unwrap_err().status(),
        Status::BufferTooSmall
    );
    let mut out = [0i32; 5];
    assert_eq!(
        b.download(&mut out).unwrap_err().status(),
        Status::BufferTooSmall
    );
    assert!(gpu.function(Module::Util, c"no_such_kernel").is_err());
}
