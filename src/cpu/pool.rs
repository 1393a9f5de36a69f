//! A tiny fork-join pool for the forward pass: the caller plus `n - 1` helper threads that spin briefly
//! on an epoch counter, so a parallel matmul costs a few hundred nanoseconds to start instead of a
//! thread spawn. One job runs at a time: callers on several threads take turns.
//!
//! [`Pool::pinned`] pins helper `t` to CPU `t` on Linux: unpinned, a helper woken from sleep can land
//! on the caller's CPU while the caller spins, and the two then share one core for milliseconds
//! (measured: 250 us instead of 35 us for a small matmul).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::vec::Vec;

/// A job: called once per thread with the thread's index `0..n`.
type Job = dyn Fn(usize) + Sync;

struct Shared {
    /// Incremented to publish a job; helpers run each epoch once.
    epoch: AtomicUsize,
    /// Helpers that finished the current epoch.
    done: AtomicUsize,
    /// The current job as a raw fat pointer (valid while `run` waits for `done`).
    job: Mutex<Option<JobPtr>>,
    /// Wakes sleeping helpers.
    wake: Condvar,
    sleep_lock: Mutex<()>,
    stop: AtomicUsize,
    /// Set when a job panicked on a helper; `run` re-raises it on the caller.
    panicked: AtomicUsize,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointer is only dereferenced while `Pool::run` keeps the job alive and blocks.
unsafe impl Send for JobPtr {}

/// Fork-join pool with a fixed number of threads (the caller counts as thread 0).
pub struct Pool {
    n: usize,
    /// Held for the whole of a `run`: callers on several threads take turns (the helpers serve one job
    /// at a time), so a shared `&Pool` cannot be misused from safe code.
    running: Mutex<()>,
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
}

/// The pools [`Pool::shared`] handed out, by thread count. Entries go when their pool drops, and the
/// list's memory with the last one: a host that unloads everything leaves nothing allocated.
static LIVE: Mutex<Vec<(usize, std::sync::Weak<Pool>)>> = Mutex::new(Vec::new());

/// How long a helper spins for the next job before sleeping: long enough to cover the gap between
/// the matmuls of one forward pass.
const SPIN: Duration = Duration::from_millis(2);

impl Pool {
    /// A pool of `n >= 1` threads, not pinned.
    pub fn new(n: usize) -> Self {
        Self::build(n, false)
    }

    /// A pool of `n >= 1` threads where helper thread `t` (1..n) is pinned to the `t`-th usable CPU
    /// (Linux). The caller stays free, so the scheduler moves it off a helper's CPU; pinning it too made
    /// multi-threaded callers (a test harness) share one core. For applications that own the machine.
    pub fn pinned(n: usize) -> Self {
        Self::build(n, true)
    }

    /// The process's live pool of `n` threads, or a new unpinned one: components that run one after
    /// another (the target's forward, the drafter's, an online adapter) share one set of helper threads.
    /// With a pool each, every pool's helpers spin for [`SPIN`] after each job, so on a machine with
    /// as many cores as threads a spinning helper of one pool takes a core from the pool that is
    /// running. Callers on several threads take turns, as with any pool.
    pub fn shared(n: usize) -> Arc<Pool> {
        Self::shared_with(n, false)
    }

    /// [`Pool::shared`], creating a pinned pool ([`Pool::pinned`]) if none of `n` threads is alive.
    /// A live unpinned pool of `n` threads is returned as it is.
    pub fn shared_pinned(n: usize) -> Arc<Pool> {
        Self::shared_with(n, true)
    }

    fn shared_with(n: usize, pin: bool) -> Arc<Pool> {
        let n = n.max(1);
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        // Only the match is upgraded, so no pool can be dropped (and lock LIVE) while it is held.
        if let Some(pool) = live
            .iter()
            .find(|(threads, w)| *threads == n && w.strong_count() > 0)
            .and_then(|(_, w)| w.upgrade())
        {
            return pool;
        }
        let pool = Arc::new(Self::build(n, pin));
        live.retain(|(_, w)| w.strong_count() > 0);
        live.push((n, Arc::downgrade(&pool)));
        pool
    }

    fn build(n: usize, pin: bool) -> Self {
        let n = n.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            job: Mutex::new(None),
            wake: Condvar::new(),
            sleep_lock: Mutex::new(()),
            stop: AtomicUsize::new(0),
            panicked: AtomicUsize::new(0),
        });
        let helpers = (1..n)
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    if pin {
                        pin_to_cpu(index);
                    }
                    helper_loop(&shared, index)
                })
            })
            .collect();
        Pool {
            n,
            running: Mutex::new(()),
            shared,
            helpers,
        }
    }

    /// Threads in the pool, the caller included.
    pub fn threads(&self) -> usize {
        self.n
    }

    /// Runs `f(i)` for every thread index `i` in `0..threads()`, in parallel, and returns when all
    /// are done. A panic in a helper is caught there and re-raised here, on the caller.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.n == 1 {
            f(0);
            return;
        }
        let _turn = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the job outlives its use: helpers only call it before incrementing `done`, and this
        // function does not return until `done` reaches n - 1.
        let ptr: *const Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &Job>(f) };
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobPtr(ptr));
        self.shared.done.store(0, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _g = self
                .shared
                .sleep_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        // The caller's share may panic: catch it so the helpers are waited for before the job (borrowed
        // by them) goes out of scope, then re-raise.
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
        // Spin briefly (the helpers usually finish within microseconds), then yield so a busy machine
        // is not made worse by a thread burning the core another one needs.
        let mut spins = 0u32;
        while self.shared.done.load(Ordering::Acquire) < self.n - 1 {
            spins = spins.saturating_add(1);
            if spins < 4096 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if let Err(payload) = mine {
            std::panic::resume_unwind(payload);
        }
        if self.shared.panicked.swap(0, Ordering::SeqCst) != 0 {
            panic!("a pool thread panicked while running a job");
        }
    }
}

fn helper_loop(shared: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if shared.stop.load(Ordering::Relaxed) != 0 {
                return;
            }
            if shared.epoch.load(Ordering::Acquire) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                let g = shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
                if shared.epoch.load(Ordering::Acquire) == seen
                    && shared.stop.load(Ordering::Relaxed) == 0
                {
                    let _g = shared
                        .wake
                        .wait_timeout(g, Duration::from_millis(50))
                        .unwrap_or_else(|e| e.into_inner());
                }
            } else if spins > 4096 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        seen = shared.epoch.load(Ordering::Acquire);
        let job = *shared.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: `run` keeps the job alive until every helper has incremented `done`.
            let job = || unsafe { (*ptr)(index) };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                shared.panicked.store(1, Ordering::SeqCst);
            }
        }
        shared.done.fetch_add(1, Ordering::Release);
    }
}

/// Pins the calling thread to CPU `cpu` if this process may run there (Linux); otherwise does nothing.
fn pin_to_cpu(cpu: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: a zeroed cpu_set_t is valid; the calls only read it, and failure is harmless.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return;
        }
        // The cpu-th CPU this process may use, so pinning respects taskset/cgroup limits.
        let usable: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .collect();
        if usable.len() < 2 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(usable[cpu % usable.len()], &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpu;
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(1, Ordering::SeqCst);
        {
            let _g = self
                .shared
                .sleep_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
        // This pool's strong count is already 0: drop its registry entry (which keeps the Arc's
        // allocation alive) and, with the last entry, the list's buffer.
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|(_, w)| w.strong_count() > 0);
        if live.is_empty() {
            *live = Vec::new();
        }
    }
}

impl Pool {
    /// Runs `f(chunk)` for every chunk in `0..chunks`, handed out dynamically through a shared counter:
    /// a thread that starts late (descheduled, or sharing a core) simply takes fewer chunks.
    pub fn for_each_chunk(&self, chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        let next = std::sync::atomic::AtomicUsize::new(0);
        self.run(&|_| {
            loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= chunks {
                    break;
                }
                f(c);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_pools_are_one_per_thread_count_while_alive() {
        let a = Pool::shared(3);
        let b = Pool::shared_pinned(3);
        assert!(Arc::ptr_eq(&a, &b), "a live pool of 3 threads is reused");
        let c = Pool::shared(2);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!((a.threads(), c.threads()), (3, 2));
        let hits = AtomicUsize::new(0);
        a.run(&|_| {
            hits.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(
            weak.upgrade().is_none(),
            "the registry holds no strong reference"
        );
    }

    #[test]
    fn every_thread_runs_each_job_once() {
        let pool = Pool::new(3);
        for round in 0..200 {
            let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
            pool.run(&|t| {
                hits[t].fetch_add(round + 1, Ordering::Relaxed);
            });
            for h in &hits {
                assert_eq!(h.load(Ordering::Relaxed), round + 1);
            }
        }
    }

    /// A shared pool used from several threads at once: every job still runs exactly once per pool
    /// thread and finishes before its `run` returns.
    #[test]
    fn concurrent_callers_take_turns() {
        let pool = Pool::new(3);
        std::thread::scope(|scope| {
            for caller in 0..4usize {
                let pool = &pool;
                scope.spawn(move || {
                    for round in 0..100usize {
                        let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
                        pool.run(&|t| {
                            hits[t].fetch_add(caller * 1000 + round, Ordering::Relaxed);
                        });
                        for h in &hits {
                            assert_eq!(h.load(Ordering::Relaxed), caller * 1000 + round);
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn every_chunk_runs_exactly_once() {
        let pool = Pool::new(2);
        for chunks in [0usize, 1, 7, 64, 1537] {
            let hits: Vec<AtomicUsize> = (0..chunks).map(|_| AtomicUsize::new(0)).collect();
            pool.for_each_chunk(chunks, &|c| {
                hits[c].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "{chunks} chunks"
            );
        }
    }
}
