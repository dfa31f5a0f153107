use super::*;
use crate::storage::MemStorage;
use proptest::prelude::*;
use std::collections::VecDeque;

fn opts(cap: u64) -> RingOptions {
    RingOptions::default().initial_capacity(cap)
}

fn mem_ring(cap: u64) -> RingFile<MemStorage> {
    RingFile::create_in(MemStorage::new(), &opts(cap)).unwrap()
}

/// Reopens from what `kill -9` would leave: the live image.
fn reopen(ring: RingFile<MemStorage>, cap: u64) -> RingFile<MemStorage> {
    let image = ring.into_storage().live().to_vec();
    RingFile::open_in(MemStorage::from_bytes(image), &opts(cap)).unwrap()
}

fn item(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 31 + k) as u8).collect()
}

fn drain(ring: &mut RingFile<MemStorage>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(v) = ring.pop().unwrap() {
        out.push(v);
    }
    out
}

#[test]
fn push_pop_in_order_and_reopen() {
    let mut r = mem_ring(4096);
    for i in 0..10 {
        r.push(&item(i, 10)).unwrap();
    }
    assert_eq!(r.len(), 10);
    assert_eq!(r.pop().unwrap().unwrap(), item(0, 10));
    let mut r = reopen(r, 4096);
    assert_eq!(r.len(), 9);
    let got = drain(&mut r);
    assert_eq!(got, (1..10).map(|i| item(i, 10)).collect::<Vec<_>>());
    assert!(r.is_empty());
    assert_eq!(r.bytes_used(), 0);
}

#[test]
fn zero_length_items_are_items() {
    let mut r = mem_ring(4096);
    r.push(b"").unwrap();
    r.push(b"").unwrap();
    let mut r = reopen(r, 4096);
    assert_eq!(r.len(), 2);
    assert_eq!(r.pop().unwrap(), Some(vec![]));
    assert_eq!(r.pop().unwrap(), Some(vec![]));
    assert_eq!(r.pop().unwrap(), None);
}

#[test]
fn exactly_full_ring_then_wrap() {
    // 4096-byte ring, records of 24 + 1000 = 1024 bytes: four fill it exactly.
    let mut r = mem_ring(4096);
    for i in 0..4 {
        r.push(&item(i, 1000)).unwrap();
    }
    assert_eq!(r.bytes_used(), 4096);
    assert_eq!(
        r.capacity(),
        4096,
        "an exactly fitting fourth record must not grow"
    );
    // head == tail offsets while full
    assert_eq!(r.head.off, r.tail.off);
    assert_eq!(r.pop().unwrap().unwrap(), item(0, 1000));
    r.push(&item(4, 1000)).unwrap(); // record needing exactly the free bytes
    assert_eq!(r.capacity(), 4096);
    let mut r = reopen(r, 4096);
    assert_eq!(
        drain(&mut r),
        (1..5).map(|i| item(i, 1000)).collect::<Vec<_>>()
    );
    // head == tail when empty
    assert_eq!(r.head.off, r.tail.off);
}

#[test]
fn record_ending_exactly_at_ring_end() {
    let mut r = mem_ring(4096);
    r.push(&item(0, 2048 - 24)).unwrap();
    r.push(&item(1, 2048 - 24)).unwrap(); // ends exactly at 4096
    assert_eq!(r.tail.off, 0);
    r.pop().unwrap();
    r.push(&item(2, 100)).unwrap(); // goes to the front
    let mut r = reopen(r, 4096);
    assert_eq!(drain(&mut r), vec![item(1, 2048 - 24), item(2, 100)]);
}

#[test]
fn wrap_leaves_a_skip_record_and_survives_reopen() {
    let mut r = mem_ring(4096);
    for i in 0..3 {
        r.push(&item(i, 1000)).unwrap(); // 0..3072
    }
    r.pop().unwrap();
    r.pop().unwrap();
    // 1500 does not fit in the 1024 left at the end: skip record, then front.
    r.push(&item(3, 1500)).unwrap();
    assert_eq!(r.capacity(), 4096);
    let mut r = reopen(r, 4096);
    assert_eq!(drain(&mut r), vec![item(2, 1000), item(3, 1500)]);
}

#[test]
fn record_needing_more_than_one_doubling() {
    let mut r = mem_ring(4096);
    r.push(&item(0, 10)).unwrap();
    r.push(&item(1, 20_000)).unwrap();
    assert!(r.capacity() >= 20_024 + 24);
    assert_eq!(
        r.capacity(),
        65536,
        "x4 steps below 16 MiB: 4 KiB, 16 KiB, 64 KiB"
    );
    let mut r = reopen(r, 4096);
    assert_eq!(drain(&mut r), vec![item(0, 10), item(1, 20_000)]);
}

fn wrapped_ring(head_near_end: bool) -> (RingFile<MemStorage>, Vec<Vec<u8>>) {
    let mut r = mem_ring(4096);
    let mut model = VecDeque::new();
    let n = if head_near_end { 3 } else { 1 };
    for i in 0..4 {
        let v = item(i, 1000);
        r.push(&v).unwrap();
        model.push_back(v);
    }
    for _ in 0..n {
        assert_eq!(r.pop().unwrap().unwrap(), model.pop_front().unwrap());
    }
    for i in 4..4 + n {
        let v = item(i, 1000);
        r.push(&v).unwrap();
        model.push_back(v);
    }
    assert_eq!(r.capacity(), 4096);
    assert!(r.tail.off <= r.head.off, "the ring is wrapped");
    (r, model.into())
}

#[test]
fn growth_while_wrapped_head_near_end_and_near_front() {
    for near_end in [true, false] {
        let (mut r, mut model) = wrapped_ring(near_end);
        let big = item(99, 3000);
        r.push(&big).unwrap();
        model.push(big);
        assert!(r.capacity() > 4096);
        let mut r2 = reopen(r, 4096);
        assert_eq!(drain(&mut r2), model, "near_end={near_end}");
    }
}

#[test]
fn growth_with_a_skip_record_present_and_two_growths_in_a_row() {
    let mut r = mem_ring(4096);
    let mut model = VecDeque::new();
    for i in 0..3 {
        let v = item(i, 1000);
        r.push(&v).unwrap();
        model.push_back(v);
    }
    model.pop_front();
    model.pop_front();
    r.pop().unwrap();
    r.pop().unwrap();
    let v = item(3, 1500);
    r.push(&v).unwrap(); // skip record at 3072, record at the front
    model.push_back(v);
    for i in 4..20 {
        let v = item(i, 1000);
        r.push(&v).unwrap();
        model.push_back(v);
    }
    assert!(r.grow_count() >= 2, "grew {} times", r.grow_count());
    let mut r = reopen(r, 4096);
    assert_eq!(drain(&mut r), Vec::from(model));
}

#[test]
fn reopen_with_a_different_initial_size_keeps_the_file_size() {
    let mut r = mem_ring(4096);
    r.push(b"abc").unwrap();
    let image = r.into_storage().live().to_vec();
    let mut r = RingFile::open_in(MemStorage::from_bytes(image), &opts(1 << 20)).unwrap();
    assert_eq!(r.capacity(), 4096);
    assert_eq!(r.pop().unwrap().unwrap(), b"abc");
}

#[test]
fn byte_limit_reports_full_and_too_large() {
    let o = opts(4096).max_capacity(Some(8192));
    let mut r = RingFile::create_in(MemStorage::new(), &o).unwrap();
    let err = r.push(&vec![0; 9000]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { size: 9000, .. }), "{err}");
    assert!(err.to_string().contains("9000"));
    for i in 0..8 {
        r.push(&item(i, 1000)).unwrap();
    }
    assert!(matches!(r.push(&item(9, 1000)), Err(Error::Full)));
    assert_eq!(r.pop().unwrap().unwrap(), item(0, 1000));
    r.push(&item(9, 1000)).unwrap();
}

#[test]
fn guarded_take_release_and_commit() {
    let mut r = mem_ring(4096);
    for i in 0..4 {
        r.push(&item(i, 8)).unwrap();
    }
    let a = r.take().unwrap().unwrap();
    let b = r.take().unwrap().unwrap();
    assert_eq!(r.taken_payload(&a).unwrap(), &item(0, 8)[..]);
    assert_eq!(r.len(), 2);
    r.release(a.seq).unwrap();
    assert_eq!(r.len(), 3);
    // The released item comes first again.
    assert_eq!(r.pop().unwrap().unwrap(), item(0, 8));
    // An uncommitted take survives a crash, first in line.
    let mut r = reopen(r, 4096);
    assert_eq!(drain(&mut r), vec![item(1, 8), item(2, 8), item(3, 8)]);
    let _ = b;
}

#[test]
fn taken_item_comes_back_after_crash_and_commit_removes_it() {
    let mut r = mem_ring(4096);
    r.push(b"x").unwrap();
    r.push(b"y").unwrap();
    let t = r.take().unwrap().unwrap();
    let mut r2 = reopen(r, 4096);
    assert_eq!(r2.len(), 2);
    let t2 = r2.take().unwrap().unwrap();
    assert_eq!(t2.seq, t.seq);
    r2.commit_taken(t2.seq).unwrap();
    let mut r3 = reopen(r2, 4096);
    assert_eq!(drain(&mut r3), vec![b"y".to_vec()]);
}

#[test]
fn sequence_numbers_never_repeat_across_unclean_reopen() {
    let mut r = mem_ring(4096);
    let s0 = r.push(b"a").unwrap();
    let s1 = r.push(b"b").unwrap();
    assert_eq!(s1, s0 + 1);
    let mut r = reopen(r, 4096);
    let s2 = r.push(b"c").unwrap();
    assert!(s2 > s1);
    let mut r = reopen(r, 4096);
    assert_eq!(
        drain(&mut r),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    // A clean close continues the numbering without a jump.
    let s3 = r.push(b"d").unwrap();
    let storage = r.close().unwrap();
    let mut r = RingFile::open_in(storage, &opts(4096)).unwrap();
    assert_eq!(r.push(b"e").unwrap(), s3 + 1);
}

#[test]
fn sync_makes_records_durable() {
    let mut r = mem_ring(4096);
    r.push(b"durable").unwrap();
    r.sync().unwrap();
    r.push(b"not yet").unwrap();
    let durable = r.storage().durable().to_vec();
    let mut r2 = RingFile::open_in(MemStorage::from_bytes(durable), &opts(4096)).unwrap();
    assert_eq!(drain(&mut r2), vec![b"durable".to_vec()]);
}

#[test]
fn failed_flush_is_sticky() {
    let mut r = mem_ring(4096);
    r.push(b"a").unwrap();
    r.storage_mut().fail_flush_at(0);
    assert!(r.sync().is_err());
    assert!(r.is_poisoned());
    assert!(matches!(r.sync(), Err(Error::Poisoned { .. })));
    // Non-durable work goes on: the queue stays usable for pops.
    assert_eq!(r.pop().unwrap().unwrap(), b"a");
}

#[test]
fn records_walks_without_consuming() {
    let mut r = mem_ring(4096);
    for i in 0..5 {
        r.push(&item(i, 3)).unwrap();
    }
    r.pop().unwrap();
    let seen: Vec<_> = r.records().map(|rec| rec.payload.to_vec()).collect();
    assert_eq!(seen, (1..5).map(|i| item(i, 3)).collect::<Vec<_>>());
    assert_eq!(r.len(), 4);
}

#[test]
fn placement_rules() {
    // Linear, fits.
    assert_eq!(place(4096, 0, 0, 0, 100), Placement::At(0));
    // Would leave 8 bytes (< header) before the end: wrap instead.
    assert_eq!(place(4096, 2000, 3000, 1000, 1088), Placement::WrapAt(1096));
    // Exactly to the end.
    assert_eq!(place(4096, 2000, 3000, 1000, 1096), Placement::At(3000));
    // Wrapped, exactly the free bytes.
    assert_eq!(place(4096, 2000, 1000, 3096, 1000), Placement::At(1000));
    assert_eq!(place(4096, 2000, 1000, 3096, 1008), Placement::NoRoom);
    // Full.
    assert_eq!(place(4096, 1024, 1024, 4096, 8), Placement::NoRoom);
}

#[derive(Clone, Debug)]
enum Op {
    Push(usize),
    Pop,
    Take,
    ReleaseOldest,
    CommitOldest,
    BeginRemoval,
    FinishRemoval,
    AbortRemoval,
    Sync,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..600).prop_map(Op::Push),
        1 => (600usize..9000).prop_map(Op::Push),
        4 => Just(Op::Pop),
        1 => Just(Op::Take),
        1 => Just(Op::ReleaseOldest),
        1 => Just(Op::CommitOldest),
        1 => Just(Op::BeginRemoval),
        1 => Just(Op::FinishRemoval),
        1 => Just(Op::AbortRemoval),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]
    #[test]
    fn ring_matches_a_vecdeque_model(ops in proptest::collection::vec(op(), 1..120), limit in prop::option::of(8192u64..40_000)) {
        let o = opts(4096).max_capacity(limit);
        let mut r = RingFile::create_in(MemStorage::new(), &o).unwrap();
        // Model: queued items (seq, bytes) in delivery order, plus taken ones.
        let mut queued: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut taken: Vec<(u64, Vec<u8>)> = Vec::new();
        // Items whose durable removal began: after a crash they may or may not come back.
        let mut removing: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut counter = 0usize;
        for op in ops {
            match op {
                Op::Push(len) => {
                    counter += 1;
                    let v = item(counter, len);
                    match r.push(&v) {
                        Ok(seq) => queued.push_back((seq, v)),
                        Err(Error::Full) => prop_assert!(limit.is_some()),
                        Err(Error::TooLarge { .. }) => prop_assert!(limit.is_some()),
                        Err(e) => prop_assert!(false, "push failed: {e}"),
                    }
                }
                Op::Pop => {
                    let got = r.pop().unwrap();
                    prop_assert_eq!(got, queued.pop_front().map(|(_, v)| v));
                }
                Op::Take => {
                    let got = r.take().unwrap();
                    let want = queued.pop_front();
                    prop_assert_eq!(got.map(|t| t.seq), want.as_ref().map(|w| w.0));
                    if let (Some(t), Some(w)) = (got, want) {
                        prop_assert_eq!(r.taken_payload(&t).unwrap(), &w.1[..]);
                        taken.push(w);
                    }
                }
                Op::ReleaseOldest => {
                    if !taken.is_empty() {
                        let w = taken.remove(0);
                        r.release(w.0).unwrap();
                        // Returned items come back before fresh ones, lowest sequence first.
                        let pos = queued.iter().position(|q| q.0 > w.0).unwrap_or(queued.len());
                        queued.insert(pos, w);
                    }
                }
                Op::CommitOldest => {
                    if !taken.is_empty() {
                        let w = taken.remove(0);
                        r.commit_taken(w.0).unwrap();
                    }
                }
                Op::BeginRemoval => {
                    if !taken.is_empty() {
                        let w = taken.remove(0);
                        r.begin_removal(w.0).unwrap();
                        removing.push(w);
                    }
                }
                Op::FinishRemoval => {
                    if !removing.is_empty() {
                        let w = removing.remove(0);
                        r.finish_removal(w.0).unwrap();
                    }
                }
                Op::AbortRemoval => {
                    if !removing.is_empty() {
                        let w = removing.remove(0);
                        r.abort_removal(w.0).unwrap();
                        let pos = queued.iter().position(|q| q.0 > w.0).unwrap_or(queued.len());
                        queued.insert(pos, w);
                    }
                }
                Op::Sync => r.sync().unwrap(),
                Op::Reopen => {
                    let image = r.into_storage().live().to_vec();
                    r = RingFile::open_in(MemStorage::from_bytes(image), &o).unwrap();
                    prop_assert!(!r.recovery_report().anything_happened());
                    // Taken items come back, in order, first in line; items being removed may.
                    let mut certain: Vec<_> = taken.drain(..).chain(queued.drain(..)).collect();
                    certain.sort_by_key(|x| x.0);
                    let back: Vec<(u64, Vec<u8>)> =
                        r.records().map(|rec| (rec.seq, rec.payload.to_vec())).collect();
                    let maybe: Vec<_> = std::mem::take(&mut removing);
                    let mut expected_back: Vec<_> = certain
                        .iter()
                        .cloned()
                        .chain(maybe.iter().filter(|m| back.contains(m)).cloned())
                        .collect();
                    expected_back.sort_by_key(|x| x.0);
                    prop_assert_eq!(&back, &expected_back);
                    queued = back.into();
                }
            }
            prop_assert_eq!(r.len(), queued.len() as u64);
        }
        let image = r.into_storage().live().to_vec();
        let mut r = RingFile::open_in(MemStorage::from_bytes(image), &o).unwrap();
        let mut all: Vec<_> = taken.into_iter().chain(queued).collect();
        all.sort_by_key(|x| x.0);
        let back: Vec<(u64, Vec<u8>)> = r.records().map(|rec| (rec.seq, rec.payload.to_vec())).collect();
        let without_maybe: Vec<_> = back.iter().filter(|b| !removing.contains(b)).cloned().collect();
        prop_assert_eq!(without_maybe, all.clone());
        let got = drain(&mut r);
        prop_assert_eq!(got, back.into_iter().map(|x| x.1).collect::<Vec<_>>());
    }
}

fn push_marked(r: &mut RingFile<MemStorage>, upstream: u64) {
    r.push(&upstream.to_le_bytes()).unwrap();
    r.set_source_seq(upstream);
}

#[test]
fn source_mark_counts_records_recovered_past_the_commit() {
    let mut r = mem_ring(4096);
    assert_eq!(r.source_mark(), None);
    for up in 10..15 {
        push_marked(&mut r, up);
    }
    r.sync().unwrap();
    for up in 15..18 {
        push_marked(&mut r, up);
    }
    // kill -9: the three unsynced records survive in the page cache, the slot says 14.
    let mut r = reopen(r, 4096);
    assert_eq!(
        r.source_mark(),
        Some(SourceMark {
            seq: 14,
            unmarked: 3
        })
    );
    // After the reopen the first push writes a sequence jump; records after it still count.
    push_marked(&mut r, 18);
    r.sync().unwrap();
    push_marked(&mut r, 19);
    push_marked(&mut r, 20);
    let durable = r.storage().durable().to_vec();
    let r = reopen(r, 4096);
    assert_eq!(
        r.source_mark(),
        Some(SourceMark {
            seq: 18,
            unmarked: 2
        })
    );
    // A power cut keeps only the durable image: nothing past the commit.
    let r = RingFile::open_in(MemStorage::from_bytes(durable), &opts(4096)).unwrap();
    assert_eq!(r.source_mark().map(|m| m.unmarked), Some(0));
}

#[test]
fn source_mark_survives_wraps_and_a_clean_close() {
    let mut r = mem_ring(4096);
    for up in 1..=200u64 {
        push_marked(&mut r, up);
        r.pop().unwrap();
        if up % 50 == 0 {
            r.sync().unwrap();
        }
    }
    for up in 201..=204u64 {
        push_marked(&mut r, up);
    }
    let mut r = reopen(r, 4096);
    assert_eq!(
        r.source_mark(),
        Some(SourceMark {
            seq: 200,
            unmarked: 4
        })
    );
    r.set_source_seq(204);
    assert!(r.needs_commit(), "a new mark alone is something to commit");
    let storage = r.close().unwrap();
    let r = RingFile::open_in(storage, &opts(4096)).unwrap();
    assert_eq!(
        r.source_mark(),
        Some(SourceMark {
            seq: 204,
            unmarked: 0
        })
    );
}

#[test]
fn a_damaged_record_before_a_sequence_jump_counts_as_one() {
    let mut r = mem_ring(4096);
    r.push(b"first").unwrap();
    let b = r.push(b"second").unwrap();
    // kill -9, then reopen: the next push writes a jump past the reserved numbers.
    let mut r = reopen(r, 4096);
    let c = r.push(b"third").unwrap();
    assert!(c > b + 1000, "a jump was written");
    r.sync().unwrap();
    let mut image = r.into_storage().live().to_vec();
    // Damage the payload of "second": the walk resyncs onto the jump record.
    let at = image
        .windows(6)
        .position(|w| w == b"second")
        .expect("payload in the image");
    image[at] ^= 0xff;
    let mut r = RingFile::open_in(MemStorage::from_bytes(image), &opts(4096)).unwrap();
    assert_eq!(r.recovery_report().records_dropped, 1);
    assert_eq!(drain(&mut r), vec![b"first".to_vec(), b"third".to_vec()]);
}
