//! Proves that the ring's non-durable push/pop path allocates nothing once the ring is warm:
//! a counting global allocator counts every allocation made by the test's own thread.
//!
//! Its own test binary because a `#[global_allocator]` applies to the whole binary.
#![allow(unsafe_code)] // the counting allocator: `GlobalAlloc` is an unsafe trait.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringq::{RingFile, RingOptions};

struct Counting;

thread_local! {
    /// Allocations (alloc, alloc_zeroed, realloc) made by this thread. `const` init: reading
    /// it never allocates.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: during thread teardown the slot may be gone; such allocations are not ours.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; counting touches only a
// thread-local `Cell` and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = allocations();
    f();
    allocations() - before
}

/// Pushes and pops mixed sizes through `ring` so it wraps many times, `rounds` times.
fn churn(ring: &mut RingFile, buf: &mut Vec<u8>, payloads: &[Vec<u8>], rounds: usize) {
    for round in 0..rounds {
        let batch = 1 + round % 37;
        for i in 0..batch {
            ring.push(&payloads[(round + i) % payloads.len()])
                .expect("push");
        }
        for i in 0..batch {
            if (round + i) % 2 == 0 {
                ring.pop_into(buf).expect("pop").expect("an item");
            } else {
                let n = ring
                    .pop_with(|_, p| p.len())
                    .expect("pop")
                    .expect("an item");
                assert!(n <= 4096);
            }
        }
    }
}

#[test]
fn warm_ring_push_and_pop_allocate_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = RingOptions::default().initial_capacity(1 << 20);
    let mut ring = RingFile::open(dir.path().join("q.ring"), &opts).expect("open");
    let payloads: Vec<Vec<u8>> = [0usize, 1, 7, 64, 100, 1024, 4000, 4096]
        .iter()
        .map(|&n| vec![0xa5; n])
        .collect();
    let mut buf = Vec::with_capacity(4096);

    // Warm up: the ring reaches its working size and its bookkeeping its capacity.
    churn(&mut ring, &mut buf, &payloads, 2_000);
    let cap = ring.capacity();

    let n = allocations_in(|| churn(&mut ring, &mut buf, &payloads, 20_000));
    assert_eq!(n, 0, "push/pop on a warm ring allocated {n} times");
    assert_eq!(
        ring.capacity(),
        cap,
        "the ring grew during the measured part"
    );
    assert!(ring.is_empty());

    // A counter that works: the same thread does see an allocation.
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(vec![1u8; 10]))),
        1
    );
}

#[test]
fn push_then_pop_of_a_full_batch_allocates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = RingOptions::default().initial_capacity(4 << 20);
    let mut ring = RingFile::open(dir.path().join("q.ring"), &opts).expect("open");
    let payload = [0x5au8; 64];
    let mut buf = Vec::with_capacity(64);
    let fill = |ring: &mut RingFile, buf: &mut Vec<u8>| {
        for _ in 0..10_000 {
            ring.push(&payload).expect("push");
        }
        while ring.pop_into(buf).expect("pop").is_some() {}
    };
    fill(&mut ring, &mut buf);
    fill(&mut ring, &mut buf);
    let n = allocations_in(|| {
        for _ in 0..10 {
            fill(&mut ring, &mut buf);
        }
    });
    assert_eq!(
        n, 0,
        "10 x (10 000 pushes then 10 000 pops) allocated {n} times"
    );
}

#[test]
fn pushes_after_a_durable_commit_allocate_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = RingOptions::default().initial_capacity(1 << 20);
    let mut ring = RingFile::open(dir.path().join("q.ring"), &opts).expect("open");
    let payload = [0x5au8; 64];
    let mut buf = Vec::with_capacity(64);
    for _ in 0..1_000 {
        ring.push(&payload).expect("push");
        ring.pop_into(&mut buf).expect("pop");
    }
    ring.sync().expect("sync"); // a commit: the commit itself may allocate
    let n = allocations_in(|| {
        for _ in 0..1_000 {
            ring.push(&payload).expect("push");
            ring.pop_into(&mut buf).expect("pop");
        }
    });
    assert_eq!(n, 0, "the push/pop path after a sync allocated {n} times");
}
