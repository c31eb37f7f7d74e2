//! The simulation: seeded workloads on the simulated kernel (`proactor::sim`), every promise
//! of the proactor checked under seeded faults, and the planted bugs the seeds must catch.
//!
//! ```text
//! cargo test --release -p proactor --features sim --test simulation            # default seeds
//! SIM_SEEDS=3000 cargo test --release -p proactor --features sim --test simulation
//! SIM_SEED=1234 cargo test --release -p proactor --features sim --test simulation   # replay one
//! cargo test --release -p proactor --features sim-mutants --test simulation    # + planted bugs
//! ```
//!
//! Each seed draws a configuration of the kernel (`SimConfig::from_seed`: the mode, which
//! fault sites are on and how often they fire, queue sizes, windows) and a workload (this
//! file's `Plan`): clients on the same runtime that connect to a listener and send a stream
//! whose every byte says where it belongs, servers that echo it back in one of four ways
//! (`read_provided` + `write_all_behind`, `read` + `write_all`, ...), reads raced against
//! timers (their futures dropped at the await point), tasks aborted, streams dropped with
//! operations in flight, and sometimes the whole runtime dropped mid-run. Then, with the
//! faults off, fresh clients must all be served within a bound of virtual time, and at idle
//! nothing may be left (operations, fds, buffers, budget, timers). The kernel checks its own
//! invariants at every step (see `proactor::sim`); this file checks the bytes: each client
//! gets back exactly what it sent, in order, or its stream reports an error that the seed's
//! faults or chaos explain.
//!
//! A test harness of its own (`harness = false`): one process runs the seeds on every core and
//! prints one summary line, whatever the filter.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use proactor::net::{TcpListener, TcpStream};
use proactor::sim::{Mode, Rng, SimConfig, Site};
use proactor::time::{sleep, timeout};
use proactor::{Builder, JoinHandle, ProvidedBuf};

// ---------------------------------------------------------------------------------------------
// freed memory is poisoned, and kept a while

/// The allocator of this test: memory freed is filled with a poison byte and kept out of use
/// for a while (a quarantine, as AddressSanitizer does), so that a buffer freed while the
/// kernel still owns it breaks the canary the simulated kernel wrote into it, and stays mapped
/// for the kernel to find so.
struct Poison;

const POISON: u8 = 0xdb;
const QUARANTINE_MAX: usize = 4096;
const QUARANTINE_BYTES: usize = 256 << 10;

struct Quarantine {
    blocks: [(usize, usize, usize); QUARANTINE_MAX],
    head: usize,
    len: usize,
}

static QUARANTINE: Mutex<Quarantine> =
    Mutex::new(Quarantine { blocks: [(0, 0, 0); QUARANTINE_MAX], head: 0, len: 0 });

// SAFETY: every call is passed on to the system allocator with the layout it was made with;
// a quarantined block is freed later with its own layout, and is not used meanwhile.
unsafe impl GlobalAlloc for Poison {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() > QUARANTINE_BYTES {
            // SAFETY: the caller's guarantee, passed on.
            return unsafe { System.dealloc(ptr, layout) };
        }
        // SAFETY: the block is the caller's to free, `size` bytes.
        unsafe { std::ptr::write_bytes(ptr, POISON, layout.size()) };
        let evicted = {
            let mut q = QUARANTINE.lock().unwrap_or_else(|p| p.into_inner());
            let evicted = (q.len == QUARANTINE_MAX).then(|| {
                let old = q.blocks[q.head];
                q.head = (q.head + 1) % QUARANTINE_MAX;
                q.len -= 1;
                old
            });
            let at = (q.head + q.len) % QUARANTINE_MAX;
            q.blocks[at] = (ptr as usize, layout.size(), layout.align());
            q.len += 1;
            evicted
        };
        if let Some((ptr, size, align)) = evicted {
            // SAFETY: quarantined above with this very layout, and not used since.
            unsafe { System.dealloc(ptr as *mut u8, Layout::from_size_align_unchecked(size, align)) };
        }
    }
}

#[global_allocator]
static ALLOCATOR: Poison = Poison;

// ---------------------------------------------------------------------------------------------
// the workload

/// The byte at `pos` of client `id`'s stream: the first four say who it is (the server learns
/// it from them), the rest where they belong, so any loss, duplicate or reordering shows.
fn byte_at(id: u32, pos: usize) -> u8 {
    if pos < 4 {
        return id.to_le_bytes()[pos];
    }
    (pos as u32).wrapping_mul(2_654_435_761).wrapping_add(id.wrapping_mul(40_503)).rotate_right(13) as u8
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Write {
    /// `write_all` of each chunk.
    All,
    /// `write_all_behind` of each chunk, then `flush`.
    Behind,
    /// `write` until each chunk is out.
    Some,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Read {
    /// `read` into a buffer of this size.
    Into(usize),
    /// `read_provided`.
    Provided,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Handler {
    /// `read_provided` + `write_all_behind`: the echo loop.
    EchoBehind,
    /// `read` + `write_all`.
    ReadWriteAll,
    /// `read` + `write_all_behind`.
    ReadBehind,
    /// `read_provided` + `write_all`.
    ProvidedWriteAll,
    /// futures-io: `AsyncReadExt::read` (raced as the others) + `AsyncWriteExt::write_all`.
    FuturesIo,
    /// futures-io: the id by `read_exact` + `write_all`, then `split` and `futures::io::copy_buf`.
    FuturesIoCopy,
}

#[derive(Clone, Debug)]
struct Client {
    id: u32,
    chunks: Vec<usize>,
    write: Write,
    read: Read,
    /// Reads raced against a timer of this long (the read's future dropped when it loses).
    race: Option<Duration>,
    /// Drops the stream, with whatever is in flight, after this many bytes came back.
    drop_after: Option<usize>,
    /// Waits this long before connecting.
    start: Duration,
}

impl Client {
    fn total(&self) -> usize {
        4 + self.chunks.iter().sum::<usize>()
    }
}

#[derive(Clone, Debug)]
struct Plan {
    clients: Vec<Client>,
    /// Clients of the liveness phase (faults off).
    late_clients: Vec<Client>,
    handler: Vec<Handler>,
    /// Server reads raced against a timer of this long.
    server_race: Option<Duration>,
    /// (when, client id, abort the client rather than its server handler)
    aborts: Vec<(Duration, u32, bool)>,
    /// Drop the runtime this long into the run, with everything in flight.
    drop_runtime: Option<Duration>,
    /// Clients that connect while the listener goes away.
    stragglers: usize,
    task_budget: u32,
    event_interval: u32,
    ring: (u16, u32, usize),
    connection_budget: usize,
    memory_budget: usize,
}

impl Plan {
    fn draw(seed: u64) -> Plan {
        let mut rng = Rng::new(seed ^ 0x000c_11e7_0000_0001);
        let mut next_id = 1;
        let mut client = |rng: &mut Rng, chaos: bool| {
            let id = next_id;
            next_id += 1;
            let chunks = (0..rng.between(1, 8)).map(|_| rng.between(1, 6_000) as usize).collect();
            Client {
                id,
                chunks,
                write: [Write::All, Write::Behind, Write::Some][rng.below(3) as usize],
                read: if rng.chance(5_000) {
                    Read::Provided
                } else {
                    Read::Into(rng.between(1, 8_192) as usize)
                },
                race: rng.chance(4_000).then(|| Duration::from_micros(rng.between(5, 3_000))),
                drop_after: (chaos && rng.chance(1_500)).then(|| rng.below(4_000) as usize),
                start: Duration::from_micros(rng.below(2_000)),
            }
        };
        let clients: Vec<Client> = (0..rng.between(1, 6)).map(|_| client(&mut rng, true)).collect();
        let late_clients = (0..rng.between(1, 3)).map(|_| client(&mut rng, false)).collect();
        let handlers =
            [Handler::EchoBehind, Handler::ReadWriteAll, Handler::ReadBehind, Handler::ProvidedWriteAll];
        let handler: Vec<Handler> = (0..4).map(|_| handlers[rng.below(4) as usize]).collect();
        let aborts = if rng.chance(3_000) {
            (0..rng.between(1, 3))
                .map(|_| {
                    let at = Duration::from_micros(rng.below(10_000));
                    (at, clients[rng.below(clients.len() as u64) as usize].id, rng.chance(5_000))
                })
                .collect()
        } else {
            Vec::new()
        };
        let small_ring = rng.chance(5_000);
        // The futures-io handlers come from a stream of their own, so that a seed's other draws
        // are what they were before these handlers existed.
        let mut compat = Rng::new(seed ^ 0x000c_11e7_0000_0002);
        let handler = handler
            .into_iter()
            .map(|how| match compat.below(8) {
                0 => Handler::FuturesIo,
                1 => Handler::FuturesIoCopy,
                _ => how,
            })
            .collect();
        Plan {
            server_race: rng.chance(3_000).then(|| Duration::from_micros(rng.between(5, 3_000))),
            drop_runtime: rng.chance(1_500).then(|| Duration::from_micros(rng.below(8_000))),
            stragglers: if rng.chance(4_000) { rng.between(1, 2) as usize } else { 0 },
            task_budget: [1, 4, 128][rng.below(3) as usize],
            event_interval: [1, 3, 61][rng.below(3) as usize],
            ring: if small_ring {
                let size = rng.between(16, 512) as u32;
                (rng.between(1, 4) as u16, size, size as usize * 8)
            } else {
                (16, 2_048, 256 << 10)
            },
            connection_budget: rng.between(4_096, 65_536) as usize,
            memory_budget: rng.between(8_192, 1 << 20) as usize,
            clients,
            late_clients,
            handler,
            aborts,
        }
    }
}

/// What the run found wrong, in order.
#[derive(Default)]
struct Failures(RefCell<Vec<String>>);

impl Failures {
    fn push(&self, failure: String) {
        self.0.borrow_mut().push(failure);
    }
}

/// Why a stream may end in an error this seed: the faults that break connections, or chaos
/// done to this connection.
struct Excuses {
    /// The faults that break connections are on.
    breaking: bool,
    /// Requests may be refused at once (`EBUSY`, `ENOMEM`, `EAGAIN`).
    refused: bool,
    chaos: RefCell<Vec<u32>>,
}

impl Excuses {
    fn allow(&self, id: u32, e: &io::Error) -> bool {
        let broken = matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionRefused
        );
        let refused = matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOMEM | libc::EAGAIN));
        (broken && (self.breaking || self.refused || self.chaos.borrow().contains(&id)))
            || (refused && self.refused)
    }
}

/// Reads raced against a timer: retried until the read wins (the losers' futures dropped, and
/// with them their operations cancelled, in flight).
async fn read_into(stream: &TcpStream, size: usize, race: Option<Duration>) -> io::Result<Vec<u8>> {
    loop {
        let read = stream.read(Vec::with_capacity(size));
        let (result, buf) = match race {
            None => read.await,
            Some(limit) => {
                let mut read = std::pin::pin!(read.fuse());
                futures::select_biased! {
                    done = read => done,
                    () = sleep(limit).fuse() => continue,
                }
            }
        };
        match result {
            Ok(_) => return Ok(buf),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `read_provided` raced against a timer, retried until it wins; `None` at end of stream.
async fn provided(stream: &TcpStream, race: Option<Duration>) -> io::Result<Option<ProvidedBuf>> {
    loop {
        let read = match race {
            None => stream.read_provided().await,
            Some(limit) => match timeout(limit, stream.read_provided()).await {
                Ok(read) => read,
                Err(_) => continue,
            },
        };
        return match read {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other,
        };
    }
}

async fn read_provided(stream: &TcpStream, race: Option<Duration>) -> io::Result<Vec<u8>> {
    Ok(provided(stream, race).await?.map(|buf| buf.to_vec()).unwrap_or_default())
}

/// One client: connects, sends its stream and reads it back, checking every byte.
async fn client(addr: SocketAddr, spec: Client, failures: Rc<Failures>, excuses: Rc<Excuses>) -> bool {
    sleep(spec.start).await;
    let id = spec.id;
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) if excuses.allow(id, &e) => return false,
        Err(e) => {
            failures.push(format!("client {id}: connect failed: {e}"));
            return false;
        }
    };
    let total = spec.total();
    let bytes: Vec<u8> = (0..total).map(|pos| byte_at(id, pos)).collect();
    let writer = async {
        let mut at = 0;
        let mut chunks: Vec<usize> = vec![4];
        chunks.extend(&spec.chunks);
        for len in chunks {
            let chunk = bytes[at..at + len].to_vec();
            at += len;
            match spec.write {
                Write::All => stream.write_all(chunk).await.0?,
                Write::Behind => stream.write_all_behind(chunk).await?,
                Write::Some => {
                    let mut rest = chunk;
                    while !rest.is_empty() {
                        match stream.write(rest).await {
                            (Ok(n), buf) => rest = buf[n..].to_vec(),
                            (Err(e), buf) if e.kind() == io::ErrorKind::Interrupted => rest = buf,
                            (Err(e), _) => return Err(e),
                        }
                    }
                }
            }
        }
        stream.flush().await
    };
    let reader = async {
        let mut got = 0;
        while got < total {
            if spec.drop_after.is_some_and(|after| got >= after) {
                return Ok(got);
            }
            let buf = match spec.read {
                Read::Into(size) => read_into(&stream, size, spec.race).await?,
                Read::Provided => read_provided(&stream, spec.race).await?,
            };
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("end of stream after {got} bytes"),
                ));
            }
            if got + buf.len() > total {
                failures.push(format!("client {id}: {} bytes came back, {total} were sent", got + buf.len()));
                return Ok(got);
            }
            if let Some(wrong) = (0..buf.len()).find(|&i| buf[i] != bytes[got + i]) {
                failures.push(format!(
                    "client {id}: byte {} came back as {:#04x}, {:#04x} was sent there ({} bytes read at once)",
                    got + wrong,
                    buf[wrong],
                    bytes[got + wrong],
                    buf.len()
                ));
                return Ok(got);
            }
            got += buf.len();
        }
        Ok(got)
    };
    // Side by side; the stream goes once the reader stops (whatever the writer has in
    // flight), or once the writer fails (nothing more will come back).
    let writer = async {
        writer.await?;
        std::future::pending::<io::Result<()>>().await
    };
    futures::pin_mut!(writer, reader);
    let (wrote, read) = match futures::future::select(writer, reader).await {
        futures::future::Either::Right((read, _)) => (Ok(()), read),
        futures::future::Either::Left((wrote, _)) => (wrote, Ok(0)),
    };
    let done = matches!(read, Ok(got) if got == total);
    for e in [wrote.err(), read.err()].into_iter().flatten() {
        if !excuses.allow(id, &e) {
            failures.push(format!("client {id}: {e} ({:?})", e.kind()));
        }
    }
    done
}

/// The server's side of one connection, echoing in one of four ways.
async fn handle(
    stream: TcpStream,
    how: Handler,
    race: Option<Duration>,
    who: Rc<Cell<Option<u32>>>,
) -> io::Result<()> {
    let mut head = Vec::new();
    let mut learn = |bytes: &[u8]| {
        if head.len() < 4 {
            head.extend(bytes.iter().take(4 - head.len()));
            if head.len() == 4 {
                who.set(Some(u32::from_le_bytes(head[..4].try_into().expect("four bytes"))));
            }
        }
    };
    match how {
        Handler::FuturesIo => return futures_io_echo(stream, race, learn).await,
        Handler::FuturesIoCopy => return futures_io_copy(stream, learn).await,
        _ => {}
    }
    loop {
        // The bytes go back as they came: a buffer of the ring stays one until it is sent.
        let buf = match how {
            Handler::EchoBehind | Handler::ProvidedWriteAll => match provided(&stream, race).await? {
                Some(buf) => buf,
                None => break,
            },
            Handler::ReadWriteAll | Handler::ReadBehind | Handler::FuturesIo | Handler::FuturesIoCopy => {
                let buf = read_into(&stream, 4_096, race).await?;
                if buf.is_empty() {
                    break;
                }
                ProvidedBuf::from(buf)
            }
        };
        learn(&buf);
        match how {
            Handler::EchoBehind | Handler::ReadBehind => stream.write_all_behind(buf).await?,
            Handler::ReadWriteAll | Handler::ProvidedWriteAll => stream.write_all(buf).await.0?,
            Handler::FuturesIo | Handler::FuturesIoCopy => unreachable!("served above"),
        }
    }
    stream.flush().await
}

/// The echo through futures-io's traits: `poll_read` into a lent slice (a read that loses its
/// race is dropped pending; its bytes must come with the next), `poll_write` and `poll_flush`.
async fn futures_io_echo(
    mut stream: TcpStream,
    race: Option<Duration>,
    mut learn: impl FnMut(&[u8]),
) -> io::Result<()> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4_096];
    loop {
        let n = match race {
            None => AsyncReadExt::read(&mut stream, &mut buf).await,
            Some(limit) => match timeout(limit, AsyncReadExt::read(&mut stream, &mut buf)).await {
                Ok(read) => read,
                Err(_) => continue,
            },
        };
        let n = match n {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        learn(&buf[..n]);
        AsyncWriteExt::write_all(&mut stream, &buf[..n]).await?;
    }
    AsyncWriteExt::flush(&mut stream).await
}

/// The echo as a futures-io user writes it: `split`, then `futures::io::copy_buf` (through
/// `poll_fill_buf` and `consume`, the stream's own buffer lent out), after the client's id.
async fn futures_io_copy(mut stream: TcpStream, mut learn: impl FnMut(&[u8])) -> io::Result<()> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    learn(&head);
    AsyncWriteExt::write_all(&mut stream, &head).await?;
    let (reader, mut writer) = TcpStream::split(&mut stream);
    futures::io::copy_buf(reader, &mut writer).await?;
    writer.flush().await
}

type Handlers = Rc<RefCell<Vec<(Rc<Cell<Option<u32>>>, JoinHandle<()>)>>>;

async fn accept_loop(
    listener: Rc<TcpListener>,
    plan: Rc<Plan>,
    handlers: Handlers,
    failures: Rc<Failures>,
    excuses: Rc<Excuses>,
) {
    for n in 0.. {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if excuses.allow(0, &e) => continue,
            Err(e) => {
                failures.push(format!("accept failed: {e}"));
                return;
            }
        };
        let how = plan.handler[n % plan.handler.len()];
        let who = Rc::new(Cell::new(None));
        let (failures, excuses, me) = (failures.clone(), excuses.clone(), who.clone());
        let race = plan.server_race;
        let task = proactor::spawn(async move {
            if let Err(e) = handle(stream, how, race, me.clone()).await {
                let id = me.get().unwrap_or(0);
                if !excuses.allow(id, &e) {
                    failures.push(format!("server of client {id} ({how:?}): {e} ({:?})", e.kind()));
                }
            }
        });
        handlers.borrow_mut().push((who, task));
    }
}

/// Waits for every task of `tasks` within `bound` of virtual time.
async fn all_within<T: 'static>(bound: Duration, tasks: Vec<JoinHandle<T>>) -> Option<Vec<Option<T>>> {
    let all = futures::future::join_all(tasks.into_iter().map(|task| task.map(Result::ok)));
    timeout(bound, all).await.ok()
}

/// One seed's workload; what it found wrong goes to `failures`.
async fn workload(plan: Plan, sim: proactor::sim::Sim, failures: Rc<Failures>) {
    let config = sim.config();
    let excuses = Rc::new(Excuses {
        breaking: [Site::Reset, Site::Epipe].iter().any(|&site| config.faults.rate(site) > 0),
        refused: config.faults.rate(Site::StartFails) > 0,
        chaos: RefCell::new(Vec::new()),
    });
    let plan = Rc::new(plan);
    let listener = Rc::new(TcpListener::bind("127.0.0.1:0").expect("bind"));
    let addr = listener.local_addr().expect("the listener's address");
    let handlers: Handlers = Rc::default();
    let server = proactor::spawn(accept_loop(
        listener.clone(),
        plan.clone(),
        handlers.clone(),
        failures.clone(),
        excuses.clone(),
    ));

    // Phase 1: faults on, chaos.
    for client in &plan.clients {
        if client.drop_after.is_some() {
            excuses.chaos.borrow_mut().push(client.id);
        }
    }
    let clients: BTreeMap<u32, JoinHandle<bool>> = plan
        .clients
        .iter()
        .map(|spec| (spec.id, proactor::spawn(client(addr, spec.clone(), failures.clone(), excuses.clone()))))
        .collect();
    let clients = Rc::new(clients);
    let chaos = {
        let (plan, clients, handlers, excuses) =
            (plan.clone(), clients.clone(), handlers.clone(), excuses.clone());
        proactor::spawn(async move {
            let mut aborts = plan.aborts.clone();
            aborts.sort_by_key(|&(at, ..)| at);
            let mut now = Duration::ZERO;
            for (at, id, the_client) in aborts {
                sleep(at - now).await;
                now = at;
                excuses.chaos.borrow_mut().push(id);
                if the_client {
                    clients[&id].abort();
                } else if let Some((_, task)) =
                    handlers.borrow().iter().find(|(who, _)| who.get() == Some(id))
                {
                    task.abort();
                }
            }
        })
    };
    if let Some(after) = plan.drop_runtime {
        // The runtime goes with everything in flight; the kernel checks what it leaves.
        sleep(after).await;
        return;
    }
    let bound = Duration::from_secs(120);
    if timeout(bound, chaos).await.is_err() {
        failures.push("the chaos task did not finish".into());
    }
    let clients = Rc::try_unwrap(clients).expect("the chaos task is over");
    if all_within(bound, clients.into_values().collect()).await.is_none() {
        failures.push(format!("stuck: clients of the first phase not done after {bound:?} of virtual time"));
        failures.push(format!("the kernel: {:#?}", sim.dump()));
        return;
    }
    let first: Vec<JoinHandle<()>> = handlers.borrow_mut().drain(..).map(|(_, task)| task).collect();
    if all_within(bound, first).await.is_none() {
        failures.push(format!("stuck: servers of the first phase not done after {bound:?} of virtual time"));
        failures.push(format!("the kernel: {:#?}", sim.dump()));
        return;
    }

    // Phase 2: faults off, no chaos: every client must be served, within a bound.
    sim.set_faults(false);
    let bound = Duration::from_secs(60);
    let late: Vec<JoinHandle<bool>> = plan
        .late_clients
        .iter()
        .map(|spec| proactor::spawn(client(addr, spec.clone(), failures.clone(), excuses.clone())))
        .collect();
    match all_within(bound, late).await {
        None => {
            failures.push(format!(
                "liveness: clients not served within {bound:?} of virtual time with faults off"
            ));
            return;
        }
        Some(done) => {
            for (spec, done) in plan.late_clients.iter().zip(done) {
                if done != Some(true) {
                    failures.push(format!("liveness: client {} was not served with faults off", spec.id));
                }
            }
        }
    }
    let second: Vec<JoinHandle<()>> = handlers.borrow_mut().drain(..).map(|(_, task)| task).collect();
    if all_within(bound, second).await.is_none() {
        failures.push("liveness: servers not done with faults off".into());
        return;
    }

    // The listener goes, with stragglers connecting meanwhile.
    server.abort();
    let stragglers: Vec<JoinHandle<()>> = (0..plan.stragglers)
        .map(|_| {
            proactor::spawn(async move {
                if let Ok(stream) = TcpStream::connect(addr).await {
                    let _ = stream.read(Vec::with_capacity(16)).await;
                }
            })
        })
        .collect();
    sleep(Duration::from_micros(500)).await;
    drop(listener);
    if all_within(bound, stragglers).await.is_none() {
        failures.push("stragglers not done after the listener closed".into());
    }
    let leftover: Vec<JoinHandle<()>> = handlers.borrow_mut().drain(..).map(|(_, task)| task).collect();
    for task in &leftover {
        task.abort();
    }
    let _ = all_within(bound, leftover).await;

    // Idle: nothing may be left.
    let mut left = Vec::new();
    for _ in 0..200 {
        sleep(Duration::from_millis(1)).await;
        left = sim.leftovers();
        if left.is_empty() {
            break;
        }
    }
    for what in left {
        failures.push(format!("at idle: {what}"));
    }
}

// ---------------------------------------------------------------------------------------------
// regressions: what the seeds found, each as a test of its own

/// Runs `test` on a simulated runtime in `mode` with every fault off (a test turns on what it
/// needs) and a budget of `budget` operations per task poll; what it returns, and what the
/// kernel saw, are the failures.
fn on_sim<F: Future<Output = Result<(), String>>>(
    mode: Mode,
    budget: u32,
    test: impl FnOnce(proactor::sim::Sim) -> F,
) -> Vec<String> {
    let mut config = SimConfig::from_seed(0);
    config.mode = mode;
    config.faults = proactor::sim::Faults::none();
    let runtime = Builder::new().sim(config).task_budget(budget).build().expect("a simulated runtime builds");
    let sim = runtime.sim().expect("its kernel");
    let result = runtime.block_on(timeout(Duration::from_secs(60), test(sim.clone())));
    drop(runtime);
    let mut failures: Vec<String> = match result {
        Ok(Ok(())) => Vec::new(),
        Ok(Err(failure)) => vec![failure],
        Err(_) => vec!["did not finish within 60 s of virtual time".into()],
    };
    failures.extend(sim.violations());
    failures
}

/// A connected pair on the simulated kernel: the listener, the client's end, the server's.
async fn pair() -> (TcpListener, TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("its address");
    let (client, accepted) = futures::join!(TcpStream::connect(addr), listener.accept());
    (listener, client.expect("connect"), accepted.expect("accept").0)
}

/// A read whose start was refused (the backend said no at once), dropped before it returned
/// that error because its task's budget was spent, leaves nothing behind: a later read is
/// served. (It once stayed counted as in flight, and every later read on the stream waited for
/// it forever. Found by `SIM_SEED=513`.)
fn a_refused_read_dropped_before_its_error_blocks_no_later_read() -> Vec<String> {
    on_sim(Mode::Epoll, 1, |sim| async move {
        let (_listener, client, server) = pair().await;
        sim.set_rate(Site::StartFails, 10_000);
        let mut refused = Box::pin(server.read(vec![0u8; 16]));
        std::future::poll_fn(|cx| {
            let _ = executor::poll_budget(cx); // this poll's one operation
            let pending = refused.as_mut().poll(cx).is_pending();
            std::task::Poll::Ready(pending)
        })
        .await
        .then_some(())
        .ok_or("the refused read returned at once; the budget should have held it back")?;
        drop(refused);
        sim.set_rate(Site::StartFails, 0);
        client.write_all(b"hi".to_vec()).await.0.map_err(|e| format!("write: {e}"))?;
        match timeout(Duration::from_secs(1), server.read(vec![0u8; 16])).await {
            Ok((Ok(2), buf)) if buf == b"hi" => Ok(()),
            Ok((read, buf)) => Err(format!("the next read gave {read:?}, {buf:?}")),
            Err(_) => Err("the next read waited for the refused one forever".into()),
        }
    })
}

/// A read that waits while a send behind of its stream fails ends with that error: the peer may
/// be waiting for the lost bytes before it sends any, and then nothing would end the read. (It
/// once waited forever: on the aio mode an echo whose reply's send behind failed read on, and its
/// client waited for the reply. Found by `SIM_SEED=351`, also 367 and 1961 of 3000.)
fn a_read_ends_with_the_error_of_a_send_behind() -> Vec<String> {
    on_sim(Mode::Aio, 64, |sim| async move {
        let (_listener, client, server) = pair().await;
        // More than the peer's window: the send behind waits for room while the read waits.
        let reply = vec![7u8; 1 << 20];
        server.write_all_behind(reply).await.map_err(|e| format!("write_all_behind: {e}"))?;
        let fail_the_send = async {
            sleep(Duration::from_millis(10)).await; // the read waits now
                                                    // Room for the send, whose next request is refused (the socket stays open); the
                                                    // peer sends nothing.
            let refuse = async { sim.set_rate(Site::StartFails, 10_000) };
            let _ = futures::join!(client.read(vec![0u8; 64 << 10]), refuse);
        };
        let (read, ()) =
            futures::join!(timeout(Duration::from_secs(1), server.read(vec![0u8; 16])), fail_the_send);
        sim.set_rate(Site::StartFails, 0);
        match read {
            Ok((Err(_), _)) => Ok(()),
            Ok((read, _)) => Err(format!("the read gave {read:?}, not the send behind's error")),
            Err(_) => Err("the read waited on though the send behind had failed".into()),
        }
    })
}

/// A send queued when its stream is dropped never reaches the socket that gets the fd number
/// next: the fd is closed through the backend, after the send (the simulated kernel reports a
/// close behind its back with operations on the fd, and any request on a closed fd). The
/// deterministic half of `tests/fd_reuse.rs`, which needs the real kernel's SQ thread and
/// timing; this one catches the planted bug `close_with_op_in_flight` on every mode.
fn a_send_queued_at_a_drop_never_reaches_the_next_socket_with_its_fd() -> Vec<String> {
    let mut failures = Vec::new();
    for mode in [Mode::Uring, Mode::Epoll, Mode::Aio] {
        failures.extend(on_sim(mode, 64, |_sim| async move {
            let (listener, _, _) = pair().await;
            let addr = listener.local_addr().map_err(|e| format!("local_addr: {e}"))?;
            for round in 0..20 {
                let (_client, server) = connected(&listener, addr).await?;
                drop(server.write(&b"SECRET"[..]));
                drop(server);
                if round % 2 == 0 {
                    proactor::yield_now().await;
                }
                let (next, next_peer) = connected(&listener, addr).await?;
                for end in [&next, &next_peer] {
                    if let Ok((Ok(n), buf)) = timeout(Duration::from_millis(5), end.read(vec![0u8; 16])).await
                    {
                        if buf[..n] == *b"SECRET" {
                            return Err(format!("{mode:?}, round {round}: bytes went to another connection"));
                        }
                    }
                }
            }
            Ok(())
        }));
    }
    failures
}

/// A new connection to `listener`: the client's end and the server's.
async fn connected(listener: &TcpListener, addr: SocketAddr) -> Result<(TcpStream, TcpStream), String> {
    let (client, accepted) = futures::join!(TcpStream::connect(addr), listener.accept());
    let client = client.map_err(|e| format!("connect: {e}"))?;
    Ok((client, accepted.map_err(|e| format!("accept: {e}"))?.0))
}

/// Every regression test, by name: what each found wrong.
fn regressions() -> Vec<(&'static str, Vec<String>)> {
    vec![
        (
            "a_refused_read_dropped_before_its_error_blocks_no_later_read",
            a_refused_read_dropped_before_its_error_blocks_no_later_read(),
        ),
        ("a_read_ends_with_the_error_of_a_send_behind", a_read_ends_with_the_error_of_a_send_behind()),
        (
            "a_send_queued_at_a_drop_never_reaches_the_next_socket_with_its_fd",
            a_send_queued_at_a_drop_never_reaches_the_next_socket_with_its_fd(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// running seeds

/// What one seed came to.
struct Outcome {
    seed: u64,
    mode: Mode,
    failures: Vec<String>,
    fired: Vec<(Site, u64)>,
    hash: u64,
    recent: Vec<String>,
}

thread_local! {
    /// The message of the last panic on this thread (the hook prints nothing while a seed runs).
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn quiet_panics() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let message = info.to_string();
        let kept =
            PANIC.try_with(|p| p.try_borrow_mut().map(|mut p| *p = Some(message)).is_ok()).unwrap_or(false);
        if !kept || std::env::var_os("SIM_VERBOSE").is_some() {
            default(info);
        }
    }));
}

#[cfg(feature = "sim-mutants")]
type Mutant = Option<proactor::sim::Mutant>;
#[cfg(not(feature = "sim-mutants"))]
type Mutant = Option<()>;

fn run_seed(seed: u64, mutant: Mutant) -> Outcome {
    #[allow(unused_mut)]
    let mut config = SimConfig::from_seed(seed);
    if let Some(steps) = std::env::var("SIM_STEPS").ok().and_then(|s| s.parse().ok()) {
        config.steps_kept = steps;
    }
    #[cfg(feature = "sim-mutants")]
    {
        config.mutant = mutant;
    }
    #[cfg(not(feature = "sim-mutants"))]
    let _ = mutant;
    let mode = config.mode;
    let plan = Plan::draw(seed);
    let (count, size, limit) = plan.ring;
    let runtime = Builder::new()
        .sim(config)
        .task_budget(plan.task_budget)
        .event_interval(plan.event_interval)
        .provided_buffers(count, size)
        .ring_memory_limit(limit)
        .connection_budget(plan.connection_budget)
        .memory_budget(plan.memory_budget)
        .build()
        .expect("a simulated runtime builds");
    let sim = runtime.sim().expect("a simulated runtime has its kernel");
    let failures = Rc::new(Failures::default());
    PANIC.with(|p| p.borrow_mut().take());
    let ran = panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(workload(plan, sim.clone(), failures.clone()))
    }));
    let dropped = panic::catch_unwind(AssertUnwindSafe(move || drop(runtime)));
    let mut found = failures.0.take();
    if ran.is_err() || dropped.is_err() {
        let message = PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
        found.push(format!("panicked: {message}"));
    }
    found.extend(sim.violations());
    Outcome { seed, mode, failures: found, fired: sim.fired(), hash: sim.trace_hash(), recent: sim.recent() }
}

/// Runs `seeds` on every core; returns the outcomes in seed order.
fn run_seeds(seeds: &[u64], mutant: Mutant, stop_at_first: bool) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let stop = AtomicU64::new(u64::MAX);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let at = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(at) else { break };
                if seed > stop.load(Ordering::Relaxed) {
                    break;
                }
                let outcome = run_seed(seed, mutant);
                if stop_at_first && !outcome.failures.is_empty() {
                    stop.fetch_min(seed, Ordering::Relaxed);
                }
                outcomes.lock().unwrap_or_else(|p| p.into_inner()).push(outcome);
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    outcomes.sort_by_key(|o| o.seed);
    outcomes
}

fn report(outcome: &Outcome, recent: usize) {
    eprintln!("SIM_SEED={} ({:?}) failed:", outcome.seed, outcome.mode);
    if std::env::var_os("SIM_VERBOSE").is_some() {
        eprintln!("  {:?}", SimConfig::from_seed(outcome.seed));
        eprintln!("  {:?}", Plan::draw(outcome.seed));
    }
    for failure in outcome.failures.iter().take(8) {
        eprintln!("  {failure}");
    }
    if recent > 0 {
        eprintln!("  last steps:");
        for step in outcome.recent.iter().rev().take(recent).rev() {
            eprintln!("    {step}");
        }
    }
}

fn summary(outcomes: &[Outcome]) -> String {
    let failures = outcomes.iter().filter(|o| !o.failures.is_empty()).count();
    let mut fired: BTreeMap<Site, u64> = Site::ALL.iter().map(|&s| (s, 0)).collect();
    for outcome in outcomes {
        for &(site, n) in &outcome.fired {
            *fired.entry(site).or_default() += n;
        }
    }
    let sites: Vec<String> = fired.iter().map(|(site, n)| format!("{}={n}", site.name())).collect();
    format!("simulation: {} seeds, {failures} failures; faults fired: {}", outcomes.len(), sites.join(" "))
}

/// The planted bugs: each must be caught by some seed.
#[cfg(feature = "sim-mutants")]
fn mutants() -> bool {
    use proactor::sim::Mutant;
    let only = std::env::var("SIM_MUTANT").ok();
    let planted: Vec<Mutant> =
        Mutant::ALL.into_iter().filter(|m| only.as_deref().is_none_or(|name| name == m.name())).collect();
    let mut caught = 0;
    for &mutant in &planted {
        let started = Instant::now();
        let seeds: Vec<u64> = (0..400).collect();
        let outcomes = run_seeds(&seeds, Some(mutant), true);
        match outcomes.iter().find(|o| !o.failures.is_empty()) {
            Some(outcome) => {
                caught += 1;
                eprintln!(
                    "mutant {}: caught by SIM_SEED={} ({:?}, {:.1?}): {}",
                    mutant.name(),
                    outcome.seed,
                    outcome.mode,
                    started.elapsed(),
                    outcome.failures[0]
                );
            }
            None => eprintln!("mutant {}: NOT caught by {} seeds", mutant.name(), outcomes.len()),
        }
    }
    println!("mutants: {} planted, {caught} caught", planted.len());
    caught == planted.len()
}

fn main() {
    quiet_panics();
    let started = Instant::now();
    let mut ok = true;
    for (name, failures) in regressions() {
        for failure in &failures {
            eprintln!("regression {name}: {failure}");
        }
        ok &= failures.is_empty();
    }
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse::<u64>().ok()) {
        let outcome = run_seed(seed, None);
        let again = run_seed(seed, None);
        if !outcome.failures.is_empty() {
            report(&outcome, outcome.recent.len());
            ok = false;
        }
        println!("trace hash {:016x}", outcome.hash);
        if again.hash != outcome.hash {
            eprintln!("SIM_SEED={seed}: a replay gave trace hash {:016x}: not deterministic", again.hash);
            // Where the two runs part (of the steps kept: raise SIM_STEPS to see earlier ones).
            let at = outcome.recent.iter().zip(&again.recent).position(|(a, b)| a != b);
            if let Some(at) = at {
                for (a, b) in outcome.recent[at.saturating_sub(10)..]
                    .iter()
                    .zip(&again.recent[at.saturating_sub(10)..])
                    .take(20)
                {
                    eprintln!("  {a:60} | {b}");
                }
            }
            ok = false;
        }
        println!("{}", summary(std::slice::from_ref(&outcome)));
    } else {
        let n = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(1000);
        let seeds: Vec<u64> = (0..n).collect();
        let outcomes = run_seeds(&seeds, None, false);
        for outcome in outcomes.iter().filter(|o| !o.failures.is_empty()).take(10) {
            report(outcome, 20);
        }
        // A seed replays exactly: the same trace hash twice.
        let replay = seeds.get(seeds.len() / 2).copied().unwrap_or(0);
        let (first, second) = (run_seed(replay, None), run_seed(replay, None));
        if first.hash != second.hash {
            eprintln!(
                "SIM_SEED={replay}: replays gave trace hashes {:016x} and {:016x}",
                first.hash, second.hash
            );
            ok = false;
        }
        ok &= outcomes.iter().all(|o| o.failures.is_empty());
        println!("{}", summary(&outcomes));
    }
    #[cfg(feature = "sim-mutants")]
    if std::env::var_os("SIM_SEED").is_none() {
        ok &= mutants();
    }
    eprintln!("simulation took {:.1?}", started.elapsed());
    if !ok {
        std::process::exit(1);
    }
}
