//! Model-based test of `Queue<T>` (issue 17): random operation sequences against a plain
//! reference model, with every async operation polled a random number of times and then
//! finished, left pending beside other operations, or dropped at whatever await point it is.
//!
//! The model is a set of possible states, not one: an operation whose effect may happen at
//! an unseen moment (a put dropped while its write runs on a blocking thread, a put whose
//! permit a get hands over while it waits) branches the set, and every observation (`qsize`,
//! what a get returns, whether `put_nowait` is accepted, whether `join` is done) keeps only
//! the states that agree. An empty set is a failure: no legal history explains what the
//! queue did. Items carry unique ids, so a lost, duplicated or reordered item shows.
//!
//! Contract assumed beyond asyncio's: an item taken by a guard keeps its room (against
//! `maxsize`) until the guard is committed; a released guard's item comes back first in line
//! (items come back in put order); an item counts as an unfinished task from the moment it is
//! in the ring, and is gettable (`get_nowait` agrees with `qsize`) from then on, even while
//! its put has not returned; a put whose write happened counts even if its future was
//! dropped; an item that does not decode is removed by the get that meets it (counted as a
//! finished task or not: both are accepted).
//!
//! Budget: `RINGQ_QMODEL_CASES` cases (default [`DEFAULT_CASES`]) from seed
//! `RINGQ_QMODEL_SEED` (default fixed). A failure prints the case's seed, its configuration,
//! a shrunk operation sequence and the observed log; replay it with
//! `RINGQ_QMODEL_SEED=<seed> RINGQ_QMODEL_CASES=1`. `RINGQ_QMODEL_KEEP_GOING=1` runs every
//! case and lists the failing ones (add `RINGQ_QMODEL_VERBOSE=1` for their logs); run with
//! `--nocapture` to see the time taken and what the cases exercised.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ringq::{Bincode, Codec, Durability, Error, Guard, GuardBatch, Queue};
use tokio::runtime::Runtime;

mod model;
use model::{
    close, gen_ops, id_of, make_item, take_bad, take_front, Cfg, Env, Kind, Op, Rng, St, BAD, L, S,
};

type Item = Vec<u8>;
type Q = Queue<Item>;

/// Cases run by default: about 10 s in debug on a loaded 2-core machine.
const DEFAULT_CASES: u64 = 300;
/// The longest an operation the model says must finish may take.
const MUST_FINISH: Duration = Duration::from_secs(3);

// ------------------------------------------------------------------------- the harness

enum Out {
    Put(ringq::Result<()>),
    Get(ringq::Result<Item>),
    Guard(ringq::Result<Guard<Item>>),
    Batch(ringq::Result<GuardBatch<Item>>),
    Commit(ringq::Result<()>),
    Join,
}

type LiveFut = Pin<Box<dyn Future<Output = Out>>>;

#[derive(Clone, Copy, Debug)]
enum LiveKind {
    Put(u64),
    Get,
    Guarded,
    Batch(usize),
    Commit,
    Join,
}

enum Held {
    One(Guard<Item>),
    Many(GuardBatch<Item>),
}

struct Case<'a> {
    rt: &'a Runtime,
    env: Env,
    path: std::path::PathBuf,
    q: Option<Q>,
    states: Vec<S>,
    live: Option<(LiveKind, LiveFut, Vec<u64>)>,
    live_polled: bool,
    held: Vec<(Held, Vec<u64>)>,
    next_id: u64,
    log: Vec<String>,
}

type Res = Result<(), String>;

/// What the cases exercised, printed at the end: evidence that the paths are taken.
static SEEN: std::sync::Mutex<std::collections::BTreeMap<&str, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn seen(what: &'static str) {
    *SEEN.lock().unwrap().entry(what).or_default() += 1;
}

fn poll_once(rt: &Runtime, fut: &mut LiveFut) -> Poll<Out> {
    let _enter = rt.enter();
    fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

/// Lets the runtime and the threads it started make progress.
fn settle(rt: &Runtime) {
    rt.block_on(async {
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    });
}

impl<'a> Case<'a> {
    fn q(&self) -> &Q {
        self.q.as_ref().expect("the queue is open")
    }

    /// The live put, once polled: only then can it wait for room, hold it or write.
    fn live_put(&self) -> Option<u64> {
        match self.live {
            Some((LiveKind::Put(id), ..)) if self.live_polled => Some(id),
            _ => None,
        }
    }

    /// Applies `f` to every state (after the unseen effects): the states that allow the
    /// observation survive. None left: the queue did something no legal history explains.
    fn apply(&mut self, what: &str, f: impl Fn(&Env, &S) -> Vec<S>) -> Res {
        let closed = close(std::mem::take(&mut self.states), &self.env, self.live_put());
        let mut next: Vec<S> = closed.iter().flat_map(|s| f(&self.env, s)).collect();
        next = next
            .into_iter()
            .map(S::normalize)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        self.log
            .push(format!("    {what} -> {} state(s)", next.len()));
        if next.is_empty() {
            let mut shown: Vec<String> = closed.iter().take(4).map(|s| format!("{s:?}")).collect();
            shown.sort();
            return Err(format!(
                "{what}: no model state allows it; states were:\n      {}",
                shown.join("\n      ")
            ));
        }
        self.states = next;
        Ok(())
    }

    /// After every step: `qsize()` is the model's, and a fresh `join()` polled once is done
    /// exactly when no task is unfinished.
    fn observe(&mut self) -> Res {
        settle(self.rt);
        let n = self.q().qsize();
        self.apply(&format!("qsize() = {n}"), |_, s| {
            if s.queued() == n {
                vec![s.clone()]
            } else {
                vec![]
            }
        })?;
        let q = self.q().clone();
        let mut join: LiveFut = Box::pin(async move {
            q.join().await;
            Out::Join
        });
        let done = poll_once(self.rt, &mut join).is_ready();
        self.apply(&format!("join() ready: {done}"), |_, s| {
            if (s.tasks == 0) == done {
                vec![s.clone()]
            } else {
                vec![]
            }
        })
    }

    fn check_item(&self, item: &Item) -> Result<u64, String> {
        let id = id_of(item);
        match self.env.lens.get(&id) {
            Some(&len) if make_item(id, len) == *item => Ok(id),
            _ => Err(format!(
                "item {id} came back with wrong bytes ({} bytes)",
                item.len()
            )),
        }
    }

    fn new_item(&mut self, len: usize) -> (u64, Item) {
        self.next_id += 1;
        let id = self.next_id;
        let item = make_item(id, len);
        let enc = <Bincode as Codec<Item>>::encoded_len(&item).expect("bytes encode");
        let record = ringq::format::record_size(enc).expect("a small record");
        self.env.lens.insert(id, len);
        self.env.records.insert(id, record);
        self.env.max_record = self.env.max_record.max(record);
        (id, item)
    }

    fn run(&mut self, op: Op) -> Res {
        self.log.push(format!("{op:?}"));
        match op {
            Op::PutNowait(len) => {
                let (id, item) = self.new_item(len);
                let r = self.q().put_nowait(item);
                self.log.push(format!("    put_nowait({id}) = {r:?}"));
                match r {
                    Ok(()) => self.apply("accepted", |env, s| {
                        if env.room(s) && !env.bytes_refuse(s, id) {
                            let mut t = s.clone();
                            t.push(id);
                            vec![t]
                        } else {
                            vec![]
                        }
                    })?,
                    Err(Error::Full) => {
                        seen(if self.env.cfg.max_bytes.is_some() {
                            "put_nowait Full (byte limit set)"
                        } else {
                            "put_nowait Full"
                        });
                        self.apply("Full", |env, s| {
                            let full = !env.room(s) || !env.bytes_fit(s, id);
                            if full {
                                vec![s.clone()]
                            } else {
                                vec![]
                            }
                        })?
                    }
                    Err(e) => return Err(format!("put_nowait failed: {e}")),
                }
            }
            Op::GetNowait => {
                let r = self.q().get_nowait();
                let waiting_getter = matches!(
                    self.live,
                    Some((LiveKind::Get | LiveKind::Guarded | LiveKind::Batch(_), ..))
                );
                match r {
                    Ok(item) => {
                        let id = self.check_item(&item)?;
                        self.log.push(format!("    get_nowait = {id}"));
                        self.apply("got the front", |_, s| take_front(s, &[id], St::Gone))?;
                    }
                    Err(Error::Empty) => {
                        seen("get_nowait Empty");
                        self.log.push("    get_nowait = Empty".into());
                        // A waiting getter has first claim on one item.
                        self.apply("Empty", |_, s| {
                            let claim = usize::from(waiting_getter && s.live == L::Idle);
                            if s.queued() <= claim {
                                vec![s.clone()]
                            } else {
                                vec![]
                            }
                        })?;
                    }
                    Err(Error::Decode { .. }) => {
                        self.log.push("    get_nowait = Decode".into());
                        self.apply("undecodable front", |_, s| take_bad(s, 1))?;
                    }
                    Err(e) => return Err(format!("get_nowait failed: {e}")),
                }
            }
            Op::TaskDone => {
                let r = self.q().task_done();
                self.log.push(format!("    task_done = {r:?}"));
                let ok = r.is_ok();
                if let Err(e) = &r {
                    if !matches!(e, Error::TaskDoneUnderflow) {
                        return Err(format!("task_done failed: {e}"));
                    }
                }
                self.apply("task_done", |_, s| match (ok, s.tasks) {
                    (true, n) if n > 0 => vec![S {
                        tasks: n - 1,
                        ..s.clone()
                    }],
                    (false, 0) => vec![s.clone()],
                    _ => vec![],
                })?;
            }
            Op::Start(kind, k) => {
                if self.live.is_some() {
                    self.drop_live()?;
                }
                self.start(kind)?;
                self.poll_live(k)?;
            }
            Op::Poll(k) => {
                self.poll_live(k)?;
                // A getter the model says has an item, or a join with no task left, must
                // not stay pending.
                if matches!(
                    self.live,
                    Some((
                        LiveKind::Get | LiveKind::Guarded | LiveKind::Batch(_) | LiveKind::Join,
                        ..
                    ))
                ) && self.must_finish()
                {
                    self.drive_live()?;
                }
            }
            Op::Drop => self.drop_live()?,
            Op::Finish => {
                if self.live.is_some() {
                    if self.must_finish() {
                        self.drive_live()?;
                    } else {
                        self.poll_live(1)?;
                        self.drop_live()?;
                    }
                }
            }
            Op::Release(i) => {
                if !self.held.is_empty() {
                    let (h, ids) = self.held.remove(i % self.held.len());
                    drop(h);
                    self.log.push(format!("    released {ids:?}"));
                    self.apply("released", |_, s| {
                        let mut t = s.clone();
                        ids.iter().for_each(|&id| t.set(id, St::Queued));
                        vec![t]
                    })?;
                }
            }
            Op::Reopen(m) => {
                let count = self.states[0].used();
                let maxsize = match (self.env.cfg.maxsize, m) {
                    (0, _) => 0,
                    (_, 0) => count.saturating_sub(1).max(1), // fewer room than items
                    (c, _) => [1, 2, c][m % 3],
                };
                self.reopen(maxsize)?;
            }
        }
        self.observe()
    }

    fn start(&mut self, kind: Kind) -> Res {
        let q = self.q().clone();
        let (lk, fut, ids): (LiveKind, LiveFut, Vec<u64>) = match kind {
            Kind::Put(len) => {
                let (id, item) = self.new_item(len);
                self.states.iter_mut().for_each(|s| s.live = L::PutWaiting);
                (
                    LiveKind::Put(id),
                    Box::pin(async move { Out::Put(q.put(item).await) }),
                    vec![],
                )
            }
            Kind::Get => (
                LiveKind::Get,
                Box::pin(async move { Out::Get(q.get().await) }),
                vec![],
            ),
            Kind::Guarded => (
                LiveKind::Guarded,
                Box::pin(async move { Out::Guard(q.get_guarded().await) }),
                vec![],
            ),
            Kind::Batch(n) => (
                LiveKind::Batch(n),
                Box::pin(async move { Out::Batch(q.get_guarded_batch(n).await) }),
                vec![],
            ),
            Kind::Commit(_) if self.held.is_empty() => {
                return self.start(Kind::Guarded);
            }
            Kind::Commit(i) => {
                let (h, ids) = self.held.remove(i % self.held.len());
                let fut: LiveFut = match h {
                    Held::One(g) => {
                        Box::pin(async move { Out::Commit(g.commit().await.map(|_| ())) })
                    }
                    Held::Many(b) => {
                        Box::pin(async move { Out::Commit(b.commit().await.map(|_| ())) })
                    }
                };
                (LiveKind::Commit, fut, ids)
            }
            Kind::Join => (
                LiveKind::Join,
                Box::pin(async move {
                    q.join().await;
                    Out::Join
                }),
                vec![],
            ),
        };
        self.log.push(format!("    started {lk:?} {ids:?}"));
        self.live = Some((lk, fut, ids));
        self.live_polled = false;
        Ok(())
    }

    fn poll_live(&mut self, k: u32) -> Res {
        for _ in 0..k {
            let Some((kind, fut, _)) = self.live.as_mut() else {
                return Ok(());
            };
            let kind = *kind;
            self.live_polled = true;
            match poll_once(self.rt, fut) {
                Poll::Ready(out) => {
                    seen("completed within its polls");
                    return self.finished(out);
                }
                Poll::Pending => {
                    seen("pending after a poll");
                    self.log.push(format!("    {kind:?} pending"));
                    if matches!(kind, LiveKind::Get) && self.env.cfg.durability == Durability::Sync
                    {
                        // It may have taken the front item and now waits for its commit.
                        self.apply("sync get pending", |_, s| {
                            let mut v = vec![s.clone()];
                            if let (L::Idle, Some(id)) = (s.live, s.front()) {
                                let mut t = s.clone();
                                t.set(id, St::Taken);
                                t.live = L::GetHolding(id);
                                v.push(t);
                            }
                            v
                        })?;
                    }
                    self.observe()?;
                }
            }
        }
        Ok(())
    }

    /// True when, in every possible state, the live operation can complete.
    fn must_finish(&mut self) -> bool {
        let Some((kind, ..)) = &self.live else {
            return false;
        };
        let kind = *kind;
        let closed = close(self.states.clone(), &self.env, self.live_put());
        closed.iter().all(|s| match kind {
            LiveKind::Put(id) => match s.live {
                L::PutPushed => true,
                L::PutReserved => self.env.bytes_fit(s, id),
                L::PutWaiting => self.env.room(s) && self.env.bytes_fit(s, id),
                _ => false,
            },
            LiveKind::Get => matches!(s.live, L::GetHolding(_)) || s.queued() > 0,
            LiveKind::Guarded | LiveKind::Batch(_) => s.queued() > 0,
            LiveKind::Commit => true,
            LiveKind::Join => s.tasks == 0,
        })
    }

    fn drive_live(&mut self) -> Res {
        seen("driven to its end (model: must finish)");
        self.live_polled = true;
        let Some((kind, mut fut, ids)) = self.live.take() else {
            return Ok(());
        };
        let out = self
            .rt
            .block_on(async { tokio::time::timeout(MUST_FINISH, &mut fut).await });
        match out {
            Ok(out) => {
                self.live = Some((kind, fut, ids));
                self.finished(out)
            }
            Err(_) => Err(format!(
                "{kind:?} stayed pending for {MUST_FINISH:?} although the model says it can finish"
            )),
        }
    }

    fn finished(&mut self, out: Out) -> Res {
        // Effects that happened unseen belong to the live operation: close while it is live.
        self.states = close(std::mem::take(&mut self.states), &self.env, self.live_put());
        let (kind, _fut, ids) = self.live.take().expect("a live operation finished");
        let idle = |s: &S| S {
            live: L::Idle,
            ..s.clone()
        };
        match out {
            Out::Put(Ok(())) => {
                self.log.push(format!("    {kind:?} done"));
                self.apply("put done", |_, s| {
                    if s.live == L::PutPushed {
                        vec![idle(s)]
                    } else {
                        vec![]
                    }
                })?;
            }
            Out::Get(Ok(item)) => {
                let id = self.check_item(&item)?;
                self.log.push(format!("    get = {id}"));
                self.apply("get", |_, s| match s.live {
                    L::GetHolding(h) if h == id => {
                        let mut t = idle(s);
                        t.set(id, St::Gone);
                        vec![t]
                    }
                    L::GetHolding(_) => vec![],
                    _ => take_front(&idle(s), &[id], St::Gone),
                })?;
            }
            Out::Guard(Ok(g)) => {
                let id = self.check_item(g.item())?;
                self.log.push(format!("    get_guarded = {id}"));
                self.apply("guard", |_, s| take_front(&idle(s), &[id], St::Taken))?;
                self.held.push((Held::One(g), vec![id]));
            }
            Out::Batch(Ok(b)) => {
                let mut got = Vec::new();
                for (_, item) in b.items() {
                    got.push(self.check_item(item)?);
                }
                self.log.push(format!("    batch = {got:?}"));
                let LiveKind::Batch(n) = kind else {
                    unreachable!()
                };
                if got.is_empty() || got.len() > n {
                    return Err(format!(
                        "a batch of at most {n} came with {} items",
                        got.len()
                    ));
                }
                self.apply("batch", |_, s| take_front(&idle(s), &got, St::Taken))?;
                self.held.push((Held::Many(b), got));
            }
            Out::Commit(Ok(())) => {
                self.log.push(format!("    committed {ids:?}"));
                self.apply("commit", |_, s| {
                    let mut t = idle(s);
                    ids.iter().for_each(|&id| t.set(id, St::Gone));
                    vec![t]
                })?;
            }
            Out::Join => {
                self.log.push("    join done".into());
                self.apply("join done", |_, s| {
                    if s.tasks == 0 {
                        vec![idle(s)]
                    } else {
                        vec![]
                    }
                })?;
            }
            Out::Get(Err(Error::Decode { .. })) | Out::Guard(Err(Error::Decode { .. })) => {
                seen("an undecodable item met by a get");
                self.log.push(format!("    {kind:?} = Decode"));
                self.apply("undecodable", |_, s| match s.live {
                    L::GetHolding(_) => vec![],
                    _ => take_bad(&idle(s), 1),
                })?;
            }
            Out::Batch(Err(Error::Decode { .. })) => {
                let LiveKind::Batch(n) = kind else {
                    unreachable!()
                };
                self.log.push(format!("    {kind:?} = Decode"));
                self.apply("undecodable in a batch", |_, s| take_bad(&idle(s), n))?;
            }
            Out::Put(Err(e)) | Out::Get(Err(e)) | Out::Commit(Err(e)) => {
                return Err(format!("{kind:?} failed: {e}"))
            }
            Out::Guard(Err(e)) | Out::Batch(Err(e)) => return Err(format!("{kind:?} failed: {e}")),
        }
        Ok(())
    }

    fn drop_live(&mut self) -> Res {
        let Some((kind, fut, ids)) = self.live.take() else {
            return Ok(());
        };
        drop(fut);
        self.log.push(format!("    dropped {kind:?}"));
        seen(match kind {
            LiveKind::Put(_) => "dropped: put",
            LiveKind::Get => "dropped: get",
            LiveKind::Guarded | LiveKind::Batch(_) => "dropped: get_guarded(_batch)",
            LiveKind::Commit => "dropped: guard commit",
            LiveKind::Join => "dropped: join",
        });
        match kind {
            LiveKind::Put(id) => {
                // Live states must be read before the put stops being live: close first.
                let polled = self.live_polled.then_some(id);
                self.states = close(std::mem::take(&mut self.states), &self.env, polled);
                if self.states.iter().any(|s| s.live == L::PutReserved) {
                    seen("dropped a put whose write may still come");
                }
                self.apply("put dropped", |_, s| {
                    let mut t = S {
                        live: L::Idle,
                        ..s.clone()
                    };
                    if s.live == L::PutReserved {
                        t.orphans.push(id); // its write may still come, on its thread
                        t.orphans.sort_unstable();
                    }
                    vec![t]
                })?;
            }
            _ => self.apply("dropped", |_, s| {
                let mut t = S {
                    live: L::Idle,
                    ..s.clone()
                };
                if let L::GetHolding(h) = s.live {
                    t.set(h, St::Queued); // given back, first in line
                }
                ids.iter().for_each(|&id| t.set(id, St::Queued));
                vec![t]
            })?,
        }
        self.observe()
    }

    /// Drops every handle and opens the file again (taken items come back; the counts are
    /// the items found).
    fn reopen(&mut self, maxsize: usize) -> Res {
        self.drop_live()?;
        let released: Vec<u64> = self.held.drain(..).flat_map(|(_, ids)| ids).collect();
        self.apply("guards dropped", |_, s| {
            let mut t = s.clone();
            released.iter().for_each(|&id| t.set(id, St::Queued));
            vec![t]
        })?;
        self.q = None;
        let cfg = self.env.cfg.clone();
        let start = Instant::now();
        let q = loop {
            // A dropped put's thread holds the queue until its write is done.
            let mut b = Q::builder(&self.path)
                .maxsize(maxsize)
                .durability(cfg.durability)
                .initial_capacity(cfg.initial);
            if let Some(m) = cfg.max_bytes {
                b = b.max_bytes(m);
            }
            match self.rt.block_on(b.open()) {
                Ok(q) => break q,
                Err(Error::Locked { .. }) if start.elapsed() < MUST_FINISH => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => return Err(format!("reopen failed: {e}")),
            }
        };
        if maxsize > 0 && self.states.iter().any(|s| s.used() > maxsize) {
            seen("reopened with more items than maxsize");
        }
        self.q = Some(q);
        self.env.cfg.maxsize = maxsize;
        self.log
            .push(format!("    reopened with maxsize {maxsize}"));
        // Orphans are settled one way or the other now.
        let mut states = close(std::mem::take(&mut self.states), &self.env, None);
        states.retain(|s| s.orphans.is_empty());
        self.states = states
            .into_iter()
            .map(|s| {
                let items: Vec<(u64, St)> = s
                    .items
                    .iter()
                    .filter(|i| i.1 != St::Gone)
                    .map(|i| (i.0, St::Queued))
                    .collect();
                S {
                    tasks: items.len() as u64,
                    items,
                    live: L::Idle,
                    orphans: vec![],
                }
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        self.observe()
    }

    /// The end of a case: every acknowledged item is on the file, once, in order.
    fn drain(&mut self) -> Res {
        self.log.push("drain".into());
        self.reopen(0)?;
        loop {
            match self.q().get_nowait() {
                Ok(item) => {
                    let id = self.check_item(&item)?;
                    self.log.push(format!("    get_nowait = {id}"));
                    self.apply("drained the front", |_, s| take_front(s, &[id], St::Gone))?;
                }
                Err(Error::Empty) => break,
                Err(Error::Decode { .. }) => {
                    self.log.push("    get_nowait = Decode".into());
                    self.apply("undecodable front", |_, s| take_bad(s, 1))?;
                }
                Err(e) => return Err(format!("get_nowait failed: {e}")),
            }
        }
        self.apply("drained", |_, s| {
            if s.queued() == 0 {
                vec![s.clone()]
            } else {
                vec![]
            }
        })?;
        let tasks = self.states[0].tasks;
        for _ in 0..tasks {
            self.run(Op::TaskDone)?;
        }
        self.observe()?;
        self.run(Op::TaskDone) // one too many: an underflow error
    }
}

struct Failure {
    step: usize,
    msg: String,
    log: Vec<String>,
}

fn run_case(rt: &Runtime, cfg: &Cfg, ops: &[Op]) -> Result<(), Failure> {
    // Mostly on tmpfs (fast); now and then on disk, where slow flushes widen the windows
    // in which a Sync operation waits for its commit.
    let dir = match cfg.on_disk {
        false => tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()),
        true => tempfile::tempdir(),
    }
    .expect("a temporary directory");
    let path = dir.path().join("model.ringq");
    if cfg.bad > 0 {
        // Items of another type at the front: each meets its reader as Error::Decode.
        let other = async {
            let q: Queue<u64> = Queue::builder(&path)
                .initial_capacity(cfg.initial)
                .open()
                .await?;
            (0..cfg.bad).try_for_each(|_| q.put_nowait(u64::MAX))
        };
        rt.block_on(other).map_err(|e| Failure {
            step: 0,
            msg: format!("writing the undecodable items: {e}"),
            log: vec![],
        })?;
    }
    let mut b = Q::builder(&path)
        .maxsize(cfg.maxsize)
        .durability(cfg.durability)
        .initial_capacity(cfg.initial);
    if let Some(m) = cfg.max_bytes {
        b = b.max_bytes(m);
    }
    let q = rt.block_on(b.open()).map_err(|e| Failure {
        step: 0,
        msg: format!("open: {e}"),
        log: vec![],
    })?;
    let bad_record = ringq::format::record_size(9).expect("a small record"); // varint u64::MAX
    let mut case = Case {
        rt,
        env: Env {
            cfg: cfg.clone(),
            lens: HashMap::new(),
            records: (0..cfg.bad as u64).map(|k| (BAD + k, bad_record)).collect(),
            max_record: bad_record,
        },
        path,
        q: Some(q),
        states: vec![S {
            items: (0..cfg.bad as u64).map(|k| (BAD + k, St::Queued)).collect(),
            tasks: cfg.bad as u64,
            live: L::Idle,
            orphans: vec![],
        }],
        live: None,
        live_polled: false,
        held: vec![],
        next_id: 0,
        log: vec![],
    };
    for (step, &op) in ops.iter().enumerate() {
        if let Err(msg) = case.run(op) {
            return Err(Failure {
                step,
                msg,
                log: std::mem::take(&mut case.log),
            });
        }
    }
    case.drain().map_err(|msg| Failure {
        step: ops.len(),
        msg,
        log: std::mem::take(&mut case.log),
    })
}

/// Removes chunks of operations while the case still fails, within a time budget.
fn shrink(rt: &Runtime, cfg: &Cfg, mut ops: Vec<Op>, mut fail: Failure) -> (Vec<Op>, Failure) {
    let start = Instant::now();
    let mut chunk = ops.len() / 2;
    while chunk > 0 && start.elapsed() < Duration::from_secs(20) {
        let mut i = 0;
        while i + chunk <= ops.len() && start.elapsed() < Duration::from_secs(20) {
            let mut shorter = ops.clone();
            shorter.drain(i..i + chunk);
            match run_case(rt, cfg, &shorter) {
                Err(f) => {
                    ops = shorter;
                    fail = f;
                }
                Ok(()) => i += 1,
            }
        }
        chunk /= 2;
    }
    (ops, fail)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[test]
fn queue_matches_its_model_on_random_operation_sequences() {
    let cases = env_u64("RINGQ_QMODEL_CASES").unwrap_or(DEFAULT_CASES);
    let base = env_u64("RINGQ_QMODEL_SEED").unwrap_or(0x17_5eed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keep_going = std::env::var_os("RINGQ_QMODEL_KEEP_GOING").is_some();
    let mut failed = 0;
    let mut times = [(0u32, Duration::ZERO); 2];
    let start = Instant::now();
    for seed in base..base + cases {
        let mut rng = Rng(seed);
        let cfg = Cfg::random(&mut rng);
        let ops = gen_ops(&mut rng, &cfg);
        let case_start = Instant::now();
        let result = run_case(&rt, &cfg, &ops);
        let t = &mut times[usize::from(cfg.durability == Durability::Sync)];
        t.0 += 1;
        t.1 += case_start.elapsed();
        if let Err(fail) = result {
            if keep_going {
                // Survey mode: one line per failing case, no shrinking.
                eprintln!(
                    "seed {seed} {cfg:?}: step {}: {}",
                    fail.step,
                    fail.msg.lines().next().unwrap_or("")
                );
                if std::env::var_os("RINGQ_QMODEL_VERBOSE").is_some() {
                    eprintln!("{}\n{}", fail.msg, fail.log.join("\n"));
                }
                failed += 1;
                continue;
            }
            let first = fail.msg.clone();
            let (ops, fail) = shrink(&rt, &cfg, ops, fail);
            panic!(
                "Queue broke its model in case seed {seed} ({} case(s) run, {:?}); replay with \
                 RINGQ_QMODEL_SEED={seed} RINGQ_QMODEL_CASES=1\nconfig: {cfg:?}\nfirst failure: \
                 {first}\nshrunk to {} operations, failing at step {}: {}\noperations: {ops:?}\nlog:\n{}",
                seed - base + 1,
                start.elapsed(),
                ops.len(),
                fail.step,
                fail.msg,
                fail.log.join("\n")
            );
        }
    }
    eprintln!(
        "queue model: {cases} cases in {:?} (Buffered: {} in {:?}, Sync: {} in {:?})",
        start.elapsed(),
        times[0].0,
        times[0].1,
        times[1].0,
        times[1].1
    );
    for (what, n) in SEEN.lock().unwrap().iter() {
        eprintln!("  {n:6}  {what}");
    }
    assert_eq!(failed, 0, "{failed} of {cases} cases failed");
}
