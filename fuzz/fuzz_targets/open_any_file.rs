//! Arbitrary bytes as an existing file: opening never panics and never reads out of bounds
//! (the image is an exact-length heap buffer, so AddressSanitizer sees its end), and when it
//! opens, the queue works: what it holds can be walked, and a push comes back after the
//! items already there.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringq::{MemStorage, RingFile, RingOptions};

fuzz_target!(|data: &[u8]| {
    let image = data.to_vec(); // exact length
    let opts = RingOptions::default()
        .initial_capacity(4096)
        .max_capacity(Some(1 << 24));
    let Ok(mut ring) = RingFile::open_in(MemStorage::from_bytes(image), &opts) else {
        return;
    };
    let before: Vec<(u64, Vec<u8>)> = ring
        .records()
        .map(|r| (r.seq, r.payload.to_vec()))
        .collect();
    assert!(
        before.windows(2).all(|w| w[0].0 < w[1].0),
        "records out of order"
    );
    let Ok(seq) = ring.push(b"fuzz") else {
        return; // a clean error (full, too large) is fine
    };
    assert!(
        before.last().is_none_or(|(s, _)| *s < seq),
        "new seq not above the recovered ones"
    );
    let mut popped = Vec::new();
    while let Ok(Some(p)) = ring.pop() {
        popped.push(p);
        if popped.len() > before.len() + 1 {
            break;
        }
    }
    assert_eq!(
        popped.last().map(Vec::as_slice),
        Some(&b"fuzz"[..]),
        "the pushed item did not come back last"
    );
});
