//! The project's thread pool: a team of helper threads that poll for work for a
//! while after each parallel section before they sleep.
//!
//! Kernels call [`for_each_task`] with a task count that depends on the problem size
//! only, never on the thread count, so the partition of work (and therefore every
//! floating-point result) is the same for 1 or 64 threads. Work is handed out
//! dynamically (tasks are claimed one at a time by whichever thread is free), so a
//! busy core slows a run down gracefully instead of stalling a static split at a
//! barrier.
//!
//! The thread that starts a section runs its tasks itself, and the helpers join in.
//! Helpers keep polling for [`SPIN_BEFORE_SLEEP`] after the last section opened or
//! the last task they ran: on a VM, a
//! sleeping thread takes 30-100 us to wake (its virtual CPU has to be scheduled
//! again), as long as a whole small GEMM, while a polling one joins within a
//! microsecond. A section never waits for a sleeping helper to wake; it only
//! signals it. While the owner of a section waits for the helpers still running
//! its last tasks, it joins sections opened after its own (such as those these
//! very tasks started), so nested parallelism keeps every thread busy.
//!
//! One stall remains when another process competes for the cores: a helper that the
//! operating system deschedules while it holds a task makes the caller wait for it
//! at the end of the section, for up to a scheduler time slice (milliseconds), far
//! longer than the section. [`for_each_task`] watches for such stalls and, after
//! one, runs the sections of a back-off on the calling thread alone (a probe in
//! parallel follows): [`MIN_BACKOFF`] after an isolated stall (on a VM the host
//! deschedules a virtual CPU now and then, about once a second on the project's
//! 2-core VM), doubling up to [`MAX_BACKOFF`] while stalls keep following the
//! back-offs (another process holds a core). Which thread runs a task never
//! changes its result.
//!
//! Before it comes to a stall, the pool leaves alone the cores that other processes
//! keep busy: every [`LOAD_CHECK`] it reads how many threads the machine has
//! runnable (Linux's `/proc/loadavg`, as GNU OpenMP's dynamic teams do), takes away
//! its own awake threads, and lets only as many helpers join sections as there are
//! CPUs left beside the caller (none on a 2-core machine with one busy process:
//! sections then run as on one thread). A helper sharing a core with a busy process
//! gets a fraction of it, and its polling and its tasks' stalls cost the caller
//! more than it adds. Helpers come back on the first look that finds the cores
//! free, and go only after two crowded looks in a row (a thread that is runnable
//! for a moment is no busy process).

use std::any::Any;
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::error::{KernelError, Result};

/// Environment variable read once for the default thread count.
pub const NUM_THREADS_ENV: &str = "PYFUNCNET_NUM_THREADS";

/// How long an idle helper polls for new sections before it sleeps: longer than the
/// gap between two training steps (the Python side of `fit`, ~50-150 us), so a
/// helper stays awake through a training loop.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_millis(2);
/// A pause between two polls longer than this means the polling thread was
/// descheduled.
const PREEMPTED: Duration = Duration::from_micros(500);
/// A polling thread offers its core to other runnable threads this often.
const YIELD_EVERY: Duration = Duration::from_micros(50);
/// Sections open at once (nested sections each take one); a section that finds
/// none free runs on its own thread.
const SLOTS: usize = 32;

static TEAM: OnceLock<RwLock<Arc<Team>>> = OnceLock::new();

/// The default thread count: `PYFUNCNET_NUM_THREADS` if set to a positive integer,
/// otherwise the cores available to this process.
pub fn default_num_threads() -> usize {
    std::env::var(NUM_THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn team_cell() -> &'static RwLock<Arc<Team>> {
    TEAM.get_or_init(|| RwLock::new(Team::start(default_num_threads())))
}

fn current_team() -> Arc<Team> {
    // A poisoned lock only means another thread panicked while swapping teams;
    // the Arc inside is still a valid team.
    team_cell()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Replaces the pool with one of `threads` threads (the caller and `threads - 1`
/// helpers). The old helpers finish what they are running and exit.
///
/// # Errors
/// `InvalidArgument` when `threads` is zero.
pub fn set_num_threads(threads: usize) -> Result<()> {
    if threads == 0 {
        return Err(KernelError::InvalidArgument {
            what: "set_num_threads".into(),
            message: "the thread count must be at least 1, got 0".into(),
        });
    }
    let team = Team::start(threads);
    let old = std::mem::replace(
        &mut *team_cell().write().unwrap_or_else(|e| e.into_inner()),
        team,
    );
    old.stop();
    Ok(())
}

/// The number of threads of the pool: the caller and the helpers. A section may run
/// on fewer ([`threads_in_use`]).
pub fn num_threads() -> usize {
    current_team().helpers + 1
}

/// A parallel section as its helpers see it: the work to run (which claims items
/// until none are left) and how many more helpers may join.
struct Section {
    /// Lifetime erased: the owner keeps the section and everything `work` borrows
    /// alive until every helper has left it ([`Team::close`]).
    work: *const (dyn Fn() + Sync),
    seats: AtomicUsize,
    /// The first panic of a task run by a helper, re-raised by the owner.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// Slot states.
const FREE: u8 = 0;
/// Taken by an owner, which is filling it in.
const FILLING: u8 = 1;
/// Helpers may join.
const OPEN: u8 = 2;
/// The owner is waiting for the helpers inside to leave.
const CLOSED: u8 = 3;

// Aligned so that sections in neighbouring slots do not share cache lines.
#[repr(align(128))]
struct Slot {
    state: AtomicU8,
    section: AtomicPtr<Section>,
    /// Helpers inside the section.
    active: AtomicUsize,
    /// Whether joining may still pay: cleared once a claim found no item left or
    /// the last seat is taken. A hint read before joining, so that idle helpers
    /// do not enter (and so hold up the close of) sections they cannot help.
    joinable: AtomicBool,
    /// The section's number in the order sections opened: a waiting owner joins
    /// only sections newer than its own.
    opened: AtomicU64,
}

/// The helper threads and the sections they serve.
struct Team {
    helpers: usize,
    /// The process that started the helpers. A child forked from it has none of
    /// them (only the forking thread survives a fork), and any lock a helper held
    /// stays locked there, so the child runs every section on its calling thread.
    pid: u32,
    slots: [Slot; SLOTS],
    /// Bumped whenever a section opens; idle helpers poll it.
    epoch: AtomicU64,
    /// Sections opened so far: stamps their slots (`Slot::opened`).
    opened: AtomicU64,
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    stopped: AtomicBool,
}

impl Team {
    /// Starts `threads - 1` helper threads.
    fn start(threads: usize) -> Arc<Team> {
        let team = Arc::new(Team {
            helpers: threads - 1,
            pid: std::process::id(),
            slots: std::array::from_fn(|_| Slot {
                state: AtomicU8::new(FREE),
                section: AtomicPtr::new(ptr::null_mut()),
                active: AtomicUsize::new(0),
                joinable: AtomicBool::new(false),
                opened: AtomicU64::new(0),
            }),
            epoch: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            stopped: AtomicBool::new(false),
        });
        for i in 0..team.helpers {
            let team = Arc::clone(&team);
            std::thread::Builder::new()
                .name(format!("pyfuncnet-{i}"))
                .spawn(move || {
                    crate::fpenv::flush_subnormals_on_this_thread();
                    team.serve();
                })
                .expect("the operating system refused to start pyfuncnet worker threads");
        }
        team
    }

    /// Asks the helpers to exit once idle.
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _guard = self.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// A helper's life: run sections while there are any, poll for a while, sleep.
    ///
    /// A helper that finds it was descheduled while polling sleeps at once: the
    /// cores are oversubscribed (another process wants them), and polling would
    /// only take time from it and from the thread that runs the step.
    fn serve(&self) {
        // The last time a section opened or this helper ran one: it polls for
        // `SPIN_BEFORE_SLEEP` after that, also while every section it sees is too
        // short for it to join (those keep coming).
        let mut last_busy = Instant::now();
        let mut last_poll = last_busy;
        let mut seen = self.epoch.load(Ordering::SeqCst);
        let mut poll = Poll::new();
        while !self.stopped.load(Ordering::Relaxed) {
            let epoch = self.epoch.load(Ordering::SeqCst);
            if epoch != seen || poll.due_for_scan() {
                if epoch != seen {
                    last_busy = Instant::now();
                    last_poll = last_busy;
                }
                seen = epoch;
                // Between pieces of work this helper holds no scratch buffer.
                crate::scratch::keep_up_with_other_threads();
                if self.help_once(None, 0) {
                    last_busy = Instant::now();
                    last_poll = last_busy;
                    continue;
                }
            }
            let now = Instant::now();
            let preempted = now.duration_since(last_poll) > PREEMPTED;
            last_poll = now;
            if !preempted && now.duration_since(last_busy) < SPIN_BEFORE_SLEEP {
                poll.pause();
                continue;
            }
            // Sleep until a section opens. Announcing the sleep before checking the
            // epoch again pairs with `open` bumping the epoch before checking for
            // sleepers: one of the two sees the other.
            let guard = self.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            if self.epoch.load(Ordering::SeqCst) == seen && !self.stopped.load(Ordering::SeqCst) {
                drop(self.wake.wait(guard).unwrap_or_else(|e| e.into_inner()));
            } else {
                drop(guard);
            }
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            last_busy = Instant::now();
            last_poll = last_busy;
        }
    }

    /// Joins one open section with work left, opened after epoch `newer_than`
    /// (other than slot `skip`), and runs its work; returns whether it did.
    fn help_once(&self, skip: Option<usize>, newer_than: u64) -> bool {
        for (i, slot) in self.slots.iter().enumerate().rev() {
            if Some(i) != skip
                && slot.joinable.load(Ordering::Relaxed)
                && slot.opened.load(Ordering::Relaxed) > newer_than
                && slot.state.load(Ordering::Acquire) == OPEN
                && self.join(slot)
            {
                return true;
            }
        }
        false
    }

    /// Runs the work of the section in `slot` as a helper, if it is still open and
    /// has a seat and work left.
    fn join(&self, slot: &Slot) -> bool {
        // Entering before checking the state pairs with `close` setting the state
        // before reading `active`: either the owner waits for this helper, or this
        // helper sees the section closed.
        slot.active.fetch_add(1, Ordering::SeqCst);
        let leave = || slot.active.fetch_sub(1, Ordering::Release);
        if slot.state.load(Ordering::SeqCst) != OPEN {
            leave();
            return false;
        }
        // SAFETY: the slot is open and this helper is counted in `active`, so the
        // owner keeps the section (and what its work borrows) alive until it leaves.
        let section = unsafe { &*slot.section.load(Ordering::Acquire) };
        let seat = slot
            .joinable
            .load(Ordering::Relaxed)
            .then(|| {
                section
                    .seats
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .ok()
            })
            .flatten();
        if seat == Some(1) {
            slot.joinable.store(false, Ordering::Relaxed);
        }
        let seated = seat.is_some();
        if seated {
            // SAFETY: as above; the work is `Sync`, so running it on this thread
            // while the owner runs it too is allowed.
            let work = unsafe { &*section.work };
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                let mut first = section.panic.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert(panic);
            }
            slot.joinable.store(false, Ordering::Relaxed);
        }
        leave();
        seated
    }

    /// Publishes `section` in a free slot and signals sleeping helpers; `None` when
    /// every slot is taken, or in a forked child.
    fn open(&self, section: &Section) -> Option<usize> {
        if std::process::id() != self.pid {
            return None;
        }
        let i = self.slots.iter().position(|slot| {
            slot.state.load(Ordering::Relaxed) == FREE
                && slot
                    .state
                    .compare_exchange(FREE, FILLING, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        })?;
        let slot = &self.slots[i];
        slot.section
            .store(section as *const Section as *mut Section, Ordering::Release);
        let stamp = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
        slot.opened.store(stamp, Ordering::Relaxed);
        slot.joinable.store(true, Ordering::Relaxed);
        slot.state.store(OPEN, Ordering::SeqCst);
        // Bumped only once the section is open: a helper that sees the new epoch
        // finds the section joinable (it rescans only now and then otherwise).
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        Some(i)
    }

    /// Closes slot `i` to new helpers and waits for those inside to leave, running
    /// the work of newer sections meanwhile (not older ones: an unrelated caller's
    /// long section, or the section this very thread is running a task of, would
    /// keep it away from its own); then frees the slot.
    fn close(&self, i: usize) {
        let slot = &self.slots[i];
        slot.joinable.store(false, Ordering::Relaxed);
        slot.state.store(CLOSED, Ordering::SeqCst);
        let mine = slot.opened.load(Ordering::Relaxed);
        let mut poll = Poll::new();
        while slot.active.load(Ordering::SeqCst) != 0 {
            if !self.help_once(Some(i), mine) {
                poll.pause();
            }
        }
        slot.section.store(ptr::null_mut(), Ordering::Relaxed);
        slot.state.store(FREE, Ordering::Release);
    }
}

/// Polling with a pause per round and, now and then, the core offered to other
/// runnable threads (another process on a busy machine).
struct Poll {
    last_yield: Instant,
    rounds: u32,
}

impl Poll {
    fn new() -> Self {
        Poll {
            last_yield: Instant::now(),
            rounds: 0,
        }
    }

    fn pause(&mut self) {
        for _ in 0..32 {
            std::hint::spin_loop();
        }
        self.rounds = self.rounds.wrapping_add(1);
        if self.rounds.is_multiple_of(64) && self.last_yield.elapsed() >= YIELD_EVERY {
            std::thread::yield_now();
            self.last_yield = Instant::now();
        }
    }

    /// Whether to look at the slots again although no section opened: a section
    /// may still have work after a helper's claim returned.
    fn due_for_scan(&self) -> bool {
        self.rounds.is_multiple_of(16)
    }
}

/// Closes the owner's section when dropped, also while a task of the owner
/// unwinds: the helpers must leave before the borrowed work goes away.
struct Close<'t> {
    team: &'t Team,
    slot: usize,
}

impl Drop for Close<'_> {
    fn drop(&mut self) {
        self.team.close(self.slot);
    }
}

thread_local! {
    /// Set while [`serially`] runs on this thread.
    static SERIAL_SCOPE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every parallel helper of this module running its work in order on
/// this thread: for a whole step too small to gain from other threads. The
/// partitions are the same, so the results are too.
pub fn serially<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            SERIAL_SCOPE.with(|s| s.set(self.0));
        }
    }
    let _reset = Reset(SERIAL_SCOPE.with(|s| s.replace(true)));
    f()
}

/// Whether the helpers below should run their tasks in order on this thread: with a
/// single thread, inside [`serially`], while backing off after a stall, or while
/// other processes keep the other cores busy (see the module docs). Tasks are
/// independent and the partition is the caller's, so the results are the same
/// either way.
fn serial() -> bool {
    threads_in_use() == 1
}

/// How often the pool looks at how many threads other processes keep runnable.
const LOAD_CHECK: Duration = Duration::from_millis(10);

/// Environment variable that turns the look at the machine's load off when set to 0
/// (read once; [`watch_machine_load`] changes it later).
pub const WATCH_LOAD_ENV: &str = "PYFUNCNET_WATCH_LOAD";

/// Whether the pool gives up helpers to other processes' runnable threads.
fn watching_load() -> &'static AtomicBool {
    static WATCHING: OnceLock<AtomicBool> = OnceLock::new();
    WATCHING.get_or_init(|| {
        AtomicBool::new(std::env::var(WATCH_LOAD_ENV).map_or(true, |v| v.trim() != "0"))
    })
}

/// Turns the look at the machine's load on (the default) or off: off, every helper
/// joins sections whatever other processes run (tests that compare thread counts
/// need them to).
pub fn watch_machine_load(watch: bool) {
    watching_load().store(watch, Ordering::Relaxed);
    if !watch {
        HELPERS_ALLOWED.store(usize::MAX, Ordering::Relaxed);
        WAS_CROWDED.store(false, Ordering::Relaxed);
    }
}

/// When the pool last looked ([`now_ns`] time, 0: never), and how many helpers it then allowed
/// (see [`helpers_allowed`]).
static LOAD_CHECKED_NS: AtomicU64 = AtomicU64::new(0);
static HELPERS_ALLOWED: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Whether the previous look found the machine crowded.
static WAS_CROWDED: AtomicBool = AtomicBool::new(false);

/// How many of `team`'s helpers may join a section: all of them, unless other
/// processes keep so many threads runnable that the helpers would take cores from
/// them and from the caller (see the module docs). Looked up every [`LOAD_CHECK`];
/// [`allowed_now`] reads the last answer.
fn helpers_allowed(team: &Team) -> usize {
    if team.helpers == 0 {
        return 0;
    }
    if !watching_load().load(Ordering::Relaxed) {
        return team.helpers;
    }
    let now = now_ns();
    let last = LOAD_CHECKED_NS.load(Ordering::Relaxed);
    if (last == 0 || now.saturating_sub(last) >= nanos(LOAD_CHECK))
        && LOAD_CHECKED_NS
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        // The caller and the helpers that are not asleep count as this pool's.
        let ours = 1 + team.helpers - team.sleepers.load(Ordering::SeqCst).min(team.helpers);
        let spare = load::spare_threads(ours).map_or(team.helpers, |s| s.min(team.helpers));
        // Fewer helpers only after two crowded looks in a row: a thread that is
        // runnable for a moment (a daemon waking up) is not another process at work.
        let crowded = spare < team.helpers;
        let was_crowded = WAS_CROWDED.swap(crowded, Ordering::Relaxed);
        if !crowded || was_crowded {
            HELPERS_ALLOWED.store(spare, Ordering::Relaxed);
        }
    }
    allowed_now(team)
}

/// [`helpers_allowed`]'s last answer, without looking at the clock.
fn allowed_now(team: &Team) -> usize {
    if !watching_load().load(Ordering::Relaxed) {
        return team.helpers;
    }
    HELPERS_ALLOWED.load(Ordering::Relaxed).min(team.helpers)
}

/// The machine's load as Linux reports it.
pub mod load {
    use std::sync::OnceLock;

    /// Threads this pool may run besides the caller without more runnable threads
    /// than online CPUs, given that `ours` of the runnable threads are this pool's;
    /// `None` where the load cannot be read, or where this process may use fewer
    /// CPUs than the machine has (pinned, or under a CPU quota): the load counts the
    /// threads of every CPU, not only of ours.
    pub(super) fn spare_threads(ours: usize) -> Option<usize> {
        static OURS_ALL: OnceLock<bool> = OnceLock::new();
        let cpus = online_cpus();
        let ours_all = *OURS_ALL
            .get_or_init(|| std::thread::available_parallelism().map_or(0, |n| n.get()) >= cpus);
        if !ours_all {
            return None;
        }
        Some(spare(runnable_threads()?, ours, cpus))
    }

    /// `cpus` less the runnable threads that are not ours, less the caller's own.
    pub(super) fn spare(runnable: usize, ours: usize, cpus: usize) -> usize {
        let others = runnable.saturating_sub(ours);
        cpus.saturating_sub(others + 1)
    }

    /// Threads runnable right now on the whole machine (the reader included): the
    /// numerator of the fourth field of `/proc/loadavg` ("1.00 0.50 0.25 3/250 42").
    #[cfg(target_os = "linux")]
    fn runnable_threads() -> Option<usize> {
        use std::fs::File;
        use std::os::unix::fs::FileExt;
        // Opened once; each look is one `pread` into a stack buffer (no allocation
        // inside a training step).
        static LOADAVG: OnceLock<Option<File>> = OnceLock::new();
        let file = LOADAVG
            .get_or_init(|| File::open("/proc/loadavg").ok())
            .as_ref()?;
        let mut buf = [0u8; 128];
        let n = file.read_at(&mut buf, 0).ok()?;
        parse_runnable(std::str::from_utf8(&buf[..n]).ok()?)
    }

    #[cfg(not(target_os = "linux"))]
    fn runnable_threads() -> Option<usize> {
        None
    }

    pub(super) fn parse_runnable(loadavg: &str) -> Option<usize> {
        let field = loadavg.split_ascii_whitespace().nth(3)?;
        field.split_once('/')?.0.parse().ok()
    }

    /// CPUs online on the machine (not only those this process may use: the load
    /// counts the threads of all of them).
    pub fn online_cpus() -> usize {
        static CPUS: OnceLock<usize> = OnceLock::new();
        *CPUS.get_or_init(|| {
            std::fs::read_to_string("/sys/devices/system/cpu/online")
                .ok()
                .and_then(|list| count_cpus(&list))
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        })
    }

    /// The number of CPUs in a kernel CPU list such as "0-3,8,10-11".
    pub(super) fn count_cpus(list: &str) -> Option<usize> {
        let mut count = 0;
        for range in list.trim().split(',') {
            count += match range.split_once('-') {
                Some((lo, hi)) => {
                    hi.parse::<usize>()
                        .ok()?
                        .checked_sub(lo.parse::<usize>().ok()?)?
                        + 1
                }
                None => {
                    range.parse::<usize>().ok()?;
                    1
                }
            };
        }
        (count > 0).then_some(count)
    }
}

/// How long sections run on the calling thread alone after an isolated stall.
pub const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// The longest back-off, reached while stalls keep following the back-offs.
pub const MAX_BACKOFF: Duration = Duration::from_millis(160);
/// A wait for helpers longer than this (and than [`STALL_TASKS`] average tasks)
/// counts as a stall: uneven task ends stay well below it, a descheduled helper
/// well above.
const MIN_STALL: Duration = Duration::from_micros(200);
const STALL_TASKS: u32 = 4;

/// Nanoseconds since the first call, as a lock-free timestamp.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// End of the current back-off, in [`now_ns`] time (0: none).
static SERIAL_UNTIL_NS: AtomicU64 = AtomicU64::new(0);
/// When the last stall was noted ([`now_ns`] time, 0: never) and the length of the
/// back-off it started (ns).
static LAST_STALL_NS: AtomicU64 = AtomicU64::new(0);
static LAST_BACKOFF_NS: AtomicU64 = AtomicU64::new(0);

/// The back-off (ns) after a stall at `now`, given the previous stall's time
/// (0: none) and its back-off: doubled, up to [`MAX_BACKOFF`], when the stall
/// comes within a few back-offs of the previous one, else [`MIN_BACKOFF`].
fn next_backoff(now: u64, last_stall: u64, last_backoff: u64) -> u64 {
    let (min, max) = (nanos(MIN_BACKOFF), nanos(MAX_BACKOFF));
    if last_stall != 0 && now.saturating_sub(last_stall) < 4 * last_backoff.max(min) {
        (2 * last_backoff).clamp(min, max)
    } else {
        min
    }
}

fn backing_off() -> bool {
    let until = SERIAL_UNTIL_NS.load(Ordering::Relaxed);
    until != 0 && now_ns() < until
}

/// Records how a parallel section ended on the calling thread: it ran `ran` tasks in
/// `busy`, then waited `wait` for the helpers. Starts a back-off after a stall.
/// Returns whether it did.
///
/// Only a thread that ran two tasks or more knows how long a task takes; with one
/// (the two halves of a join, side-by-side nodes of a step) the helpers' tasks may
/// simply be longer, so such a wait is not judged.
fn note_section_end(ran: u32, busy: Duration, wait: Duration) -> bool {
    if ran < 2 {
        return false;
    }
    let typical_task = busy / ran;
    let stalled = wait > MIN_STALL.max(typical_task * STALL_TASKS);
    if stalled {
        let now = now_ns();
        let last = LAST_STALL_NS.swap(now, Ordering::Relaxed);
        let backoff = next_backoff(now, last, LAST_BACKOFF_NS.load(Ordering::Relaxed));
        LAST_BACKOFF_NS.store(backoff, Ordering::Relaxed);
        SERIAL_UNTIL_NS.store((now + backoff).max(1), Ordering::Relaxed);
    }
    stalled
}

/// Runs `task(i)` for every `i` in `0..tasks`, in parallel when `tasks > 1` and the
/// pool has more than one thread.
///
/// Tasks are independent; callers size them to tens of microseconds of work or more.
pub fn for_each_task(tasks: usize, task: impl Fn(usize) + Sync + Send) {
    match tasks {
        0 => {}
        1 => task(0),
        _ if serial() => (0..tasks).for_each(task),
        _ => {
            let next = AtomicUsize::new(0);
            let claim_all = || {
                let mut ran = 0u32;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= tasks {
                        return ran;
                    }
                    task(i);
                    ran += 1;
                }
            };
            run_section(tasks - 1, &claim_all);
        }
    }
}

/// Runs `claim_all` (which claims and runs work items until none are left and
/// returns how many it ran) on the calling thread and on up to `max_helpers`
/// helpers, then checks the end of the section for a stall. A panic of a task
/// run by a helper is raised here once every helper has left.
fn run_section(max_helpers: usize, claim_all: &(impl Fn() -> u32 + Sync)) {
    let team = current_team();
    let start = Instant::now();
    // When the last helper ran out of items (ns after `start`). The wait is
    // measured to it rather than to the end of `close`: while it waits, the
    // calling thread may run other sections' work, which is no stall.
    let helpers_done = AtomicU64::new(0);
    let help = || {
        claim_all();
        helpers_done.fetch_max(nanos(start.elapsed()), Ordering::Relaxed);
    };
    let help: &(dyn Fn() + Sync) = &help;
    // SAFETY: only the lifetime is erased. `Close` below waits, before this frame
    // ends (also when it unwinds), until no helper is inside the section, and
    // helpers reach `work` only from inside it (`Team::join`).
    let work = unsafe {
        std::mem::transmute::<&(dyn Fn() + Sync + '_), *const (dyn Fn() + Sync + 'static)>(help)
    };
    let section = Section {
        work,
        // (`serial`, which every caller asked first, has just looked at the load.)
        seats: AtomicUsize::new(max_helpers.min(allowed_now(&team))),
        panic: Mutex::new(None),
    };
    let Some(slot) = team.open(&section) else {
        claim_all();
        return;
    };
    let close = Close { team: &team, slot };
    // The caller's own tasks run with subnormals flushed, as the helpers' do, so
    // which thread runs a task never changes its result.
    let ran = crate::fpenv::with_subnormals_flushed(claim_all);
    let busy = start.elapsed();
    drop(close);
    if let Some(panic) = section
        .panic
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
    {
        std::panic::resume_unwind(panic);
    }
    let wait = helpers_done
        .load(Ordering::Relaxed)
        .saturating_sub(nanos(busy));
    note_section_end(ran, busy, Duration::from_nanos(wait));
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Grows the calling thread's scratch buffers to the longest any thread's have
/// grown (helpers do so as they look for work): whichever thread a steady state
/// hands which piece of work, none allocates. Call it where the thread holds no
/// scratch buffer, such as before each training step.
pub fn keep_scratch_up() {
    crate::scratch::keep_up_with_other_threads();
}

/// Whether work handed to [`for_each_task`] and the other helpers may now run on
/// several threads (more than one thread, no back-off after a stall, and cores to
/// spare from other processes).
pub fn runs_in_parallel() -> bool {
    !serial()
}

/// How many threads a section started now would run on: the caller and the helpers
/// allowed to join, 1 while sections run serially. For partitions that may follow
/// the thread count without changing any result.
pub fn threads_in_use() -> usize {
    if SERIAL_SCOPE.with(|s| s.get()) || backing_off() {
        return 1;
    }
    1 + helpers_allowed(&current_team())
}

/// Splits `data` into consecutive chunks of `chunk` elements (the last may be shorter)
/// and runs `task(chunk_index, chunk)` on each, in parallel.
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    task: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let chunk = chunk.max(1);
    if data.len() <= chunk {
        if !data.is_empty() {
            task(0, data);
        }
        return;
    }
    if serial() {
        data.chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| task(i, c));
        return;
    }
    let n_chunks = data.len().div_ceil(chunk);
    // Chunks are claimed one at a time, as tasks are in `for_each_task`.
    let chunks = Mutex::new(data.chunks_mut(chunk).enumerate());
    let claim_all = || {
        let mut ran = 0u32;
        loop {
            // A poisoned lock only means a task panicked; the iterator is intact.
            let next = chunks.lock().unwrap_or_else(|e| e.into_inner()).next();
            let Some((i, c)) = next else {
                return ran;
            };
            task(i, c);
            ran += 1;
        }
    };
    run_section(n_chunks - 1, &claim_all);
}

/// [`for_each_chunk_mut`] for fallible tasks on float data; returns an error a
/// task returned. The parallel sections inside a task (its GEMMs) run on its
/// thread when there are several tasks (they are the parallelism), and may split
/// themselves when there is one.
pub fn try_for_each_chunk_mut(
    data: &mut [f32],
    chunk: usize,
    task: impl Fn(usize, &mut [f32]) -> Result<()> + Sync + Send,
) -> Result<()> {
    let several = data.len() > chunk;
    let failure = std::sync::Mutex::new(None);
    for_each_chunk_mut(data, chunk, |t, part| {
        let result = if several {
            serially(|| task(t, part))
        } else {
            task(t, part)
        };
        if let Err(e) = result {
            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
    });
    failure
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .map_or(Ok(()), Err)
}

/// Runs `a` and `b`, potentially in parallel (each on the calling thread or on a
/// helper that joins), and returns both results.
pub fn join<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if serial() {
        return (a(), b());
    }
    let (a, b) = (Mutex::new(Some(a)), Mutex::new(Some(b)));
    let (ra, rb) = (Mutex::new(None), Mutex::new(None));
    // Each index is claimed exactly once, so each closure is taken once.
    for_each_task(2, |i| {
        if i == 0 {
            let f = a.lock().unwrap_or_else(|e| e.into_inner()).take();
            *ra.lock().unwrap_or_else(|e| e.into_inner()) = f.map(|f| f());
        } else {
            let f = b.lock().unwrap_or_else(|e| e.into_inner()).take();
            *rb.lock().unwrap_or_else(|e| e.into_inner()) = f.map(|f| f());
        }
    });
    match (into_value(ra), into_value(rb)) {
        (Some(x), Some(y)) => (x, y),
        _ => unreachable!("for_each_task runs both halves of a join"),
    }
}

fn into_value<T>(m: Mutex<Option<T>>) -> Option<T> {
    m.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serially_runs_every_task_on_the_calling_thread_then_resets() {
        let me = std::thread::current().id();
        let seen = Mutex::new(Vec::new());
        serially(|| {
            for_each_task(64, |i| {
                seen.lock().unwrap().push((i, std::thread::current().id()))
            });
            assert!(!runs_in_parallel());
        });
        let mut seen = seen.into_inner().unwrap();
        seen.sort_by_key(|&(i, _)| i);
        assert_eq!(
            seen.iter().map(|&(i, _)| i).collect::<Vec<_>>(),
            (0..64).collect::<Vec<_>>()
        );
        assert!(seen.iter().all(|&(_, t)| t == me));
        assert_eq!(
            runs_in_parallel(),
            threads_in_use() > 1,
            "the scope ends with the call"
        );
    }

    #[test]
    fn for_each_task_runs_every_index_once() {
        let hits: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
        for_each_task(hits.len(), |i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn for_each_chunk_mut_covers_the_slice_in_fixed_chunks() {
        let mut data = vec![0usize; 103];
        for_each_chunk_mut(&mut data, 10, |ci, c| {
            for x in c.iter_mut() {
                *x = ci;
            }
        });
        for (i, x) in data.iter().enumerate() {
            assert_eq!(*x, i / 10);
        }
    }

    #[test]
    fn a_long_wait_for_helpers_starts_a_back_off() {
        // (The back-off is process-wide and other tests run alongside, so this
        // test checks only what its own calls decide.)
        // Ordinary ends of sections: short waits, or waits of a few tasks' length.
        let short = note_section_end(10, Duration::from_micros(500), Duration::from_micros(100));
        let uneven = note_section_end(2, Duration::from_millis(4), Duration::from_millis(3));
        // One short task here, a long one on the helper: no stall.
        let single = note_section_end(1, Duration::from_micros(50), Duration::from_millis(3));
        assert!(!short && !uneven && !single);
        // A worker descheduled for a time slice while it held a task.
        assert!(note_section_end(
            8,
            Duration::from_micros(400),
            Duration::from_millis(3)
        ));
        assert!(backing_off() && !runs_in_parallel());
        // Meanwhile sections run on the calling thread, every task exactly once.
        let me = std::thread::current().id();
        let hits: Vec<AtomicUsize> = (0..16).map(|_| AtomicUsize::new(0)).collect();
        for_each_task(hits.len(), |i| {
            assert_eq!(std::thread::current().id(), me);
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        let mut data = [0u32; 64];
        for_each_chunk_mut(&mut data, 8, |i, c| {
            assert_eq!(std::thread::current().id(), me);
            c.fill(i as u32);
        });
        assert!(data.iter().enumerate().all(|(i, &x)| x as usize == i / 8));
        // End the back-off, so that the other tests of this binary run in parallel.
        SERIAL_UNTIL_NS.store(0, Ordering::Relaxed);
    }

    #[test]
    fn back_offs_double_while_stalls_recur_and_reset_after_a_quiet_spell() {
        let ms = |x: u64| x * 1_000_000;
        let min = nanos(MIN_BACKOFF);
        // A first stall, and one long after the last.
        assert_eq!(next_backoff(ms(1_000), 0, 0), min);
        assert_eq!(next_backoff(ms(9_000), ms(1_000), min), min);
        // Stalls right after each back-off: 5, 10, 20, ... up to the cap.
        let mut backoff = min;
        let mut at = ms(1_000);
        for _ in 0..10 {
            let next = next_backoff(at + backoff + ms(1), at, backoff);
            assert_eq!(next, (2 * backoff).min(nanos(MAX_BACKOFF)));
            at += backoff + ms(1);
            backoff = next;
        }
        assert_eq!(backoff, nanos(MAX_BACKOFF));
        // A quiet spell of several back-offs resets it.
        assert_eq!(next_backoff(at + 5 * backoff, at, backoff), min);
    }

    #[test]
    fn nested_sections_run_every_task_once() {
        let hits: Vec<AtomicUsize> = (0..6 * 9).map(|_| AtomicUsize::new(0)).collect();
        for_each_task(6, |i| {
            for_each_task(9, |j| {
                hits[i * 9 + j].fetch_add(1, Ordering::Relaxed);
            })
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn join_returns_both_results_in_order() {
        fn sum(lo: u64, hi: u64) -> u64 {
            if hi - lo <= 8 {
                return (lo..hi).sum();
            }
            let mid = (lo + hi) / 2;
            let (a, b) = join(|| sum(lo, mid), || sum(mid, hi));
            a + b
        }
        assert_eq!(sum(0, 1000), 999 * 1000 / 2);
        assert_eq!(join(|| "left", || 7), ("left", 7));
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_goes_on() {
        for bad in [0, 31, 63] {
            let result = std::panic::catch_unwind(|| {
                for_each_task(64, |i| {
                    if i == bad {
                        panic!("task {i} failed");
                    }
                })
            });
            let message = result.expect_err("the panic propagates");
            assert_eq!(
                message.downcast_ref::<String>().unwrap(),
                &format!("task {bad} failed")
            );
            let hits: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
            for_each_task(64, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn concurrent_callers_share_the_helpers() {
        std::thread::scope(|scope| {
            for caller in 0..4 {
                scope.spawn(move || {
                    for round in 0..50 {
                        let hits: Vec<AtomicUsize> = (0..17).map(|_| AtomicUsize::new(0)).collect();
                        for_each_task(hits.len(), |i| {
                            hits[i].fetch_add(caller + round, Ordering::Relaxed);
                        });
                        assert!(hits
                            .iter()
                            .all(|h| h.load(Ordering::Relaxed) == caller + round));
                    }
                });
            }
        });
    }

    #[test]
    fn the_load_leaves_helpers_the_cores_other_processes_do_not_keep_busy() {
        assert_eq!(load::parse_runnable("0.57 0.91 1.26 3/82 28670\n"), Some(3));
        assert_eq!(load::parse_runnable("0.57 0.91 1.26 82 28670"), None);
        assert_eq!(load::parse_runnable(""), None);
        assert_eq!(load::count_cpus("0-15\n"), Some(16));
        assert_eq!(load::count_cpus("0,2-3,8"), Some(4));
        assert_eq!(load::count_cpus("3-1"), None);
        assert_eq!(load::count_cpus(""), None);
        // Two CPUs: this pool's caller and helper alone; one other process busy;
        // the same while this pool's helper sleeps (serial sections).
        assert_eq!(load::spare(2, 2, 2), 1);
        assert_eq!(load::spare(3, 2, 2), 0);
        assert_eq!(load::spare(2, 1, 2), 0);
        // Sixteen CPUs, four threads of other processes runnable.
        assert_eq!(load::spare(4 + 3, 3, 16), 11);
        // More runnable threads than CPUs, or a count below ours (read at another
        // moment than the pool's): never below zero, never above the CPUs.
        assert_eq!(load::spare(40, 2, 16), 0);
        assert_eq!(load::spare(1, 3, 16), 15);
    }

    #[test]
    fn zero_threads_is_refused() {
        assert!(set_num_threads(0).is_err());
    }
}
