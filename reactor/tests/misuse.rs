//! A misuse of the runtime's API panics at the caller's line (`#[track_caller]`), not inside
//! the executor: the panic message then points at the code to fix.

use std::panic::{self, Location};
use std::sync::Mutex;
use std::thread::{self, ThreadId};

/// Where the last panic of each thread happened (`file:line`), while a test watches.
static SEEN: Mutex<Vec<(ThreadId, String)>> = Mutex::new(Vec::new());
/// The panic hook is the process's: one test at a time swaps it.
static HOOK: Mutex<()> = Mutex::new(());

/// Runs `f`, which must panic, and returns where the panic says it happened.
fn panic_location(f: impl FnOnce()) -> String {
    let _one_at_a_time = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    SEEN.lock().unwrap().clear();
    panic::set_hook(Box::new(|info| {
        let at = info.location().map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
        SEEN.lock().unwrap().push((thread::current().id(), at));
    }));
    let result = panic::catch_unwind(panic::AssertUnwindSafe(f));
    let _ = panic::take_hook();
    assert!(result.is_err(), "expected a panic");
    let me = thread::current().id();
    let seen = SEEN.lock().unwrap();
    seen.iter().find(|(thread, _)| *thread == me).map(|(_, at)| at.clone()).expect("the hook saw the panic")
}

/// `file:line` of the caller.
#[track_caller]
fn here() -> String {
    let l = Location::caller();
    format!("{}:{}", l.file(), l.line())
}

#[test]
fn spawn_outside_a_runtime_panics_at_the_callers_line() {
    let (at, expected) = (panic_location(|| drop(reactor::spawn(async {}))), here());
    assert_eq!(at, expected);
}

#[test]
fn block_on_inside_a_runtime_panics_at_the_callers_line() {
    let rt = reactor::Runtime::new().unwrap();
    rt.block_on(async {
        let (at, expected) = (panic_location(|| reactor::block_on(async {})), here());
        assert_eq!(at, expected, "reactor::block_on");

        let inner = reactor::Runtime::new().unwrap();
        let (at, expected) = (panic_location(move || inner.block_on(async {})), here());
        assert_eq!(at, expected, "Runtime::block_on");
    });
}

#[test]
fn into_panic_of_a_cancelled_task_panics_at_the_callers_line() {
    let rt = reactor::Runtime::new().unwrap();
    let handle = rt.spawn(std::future::pending::<()>());
    handle.abort();
    let error = rt.block_on(handle).unwrap_err();
    assert!(error.is_cancelled());
    let (at, expected) = (panic_location(move || drop(error.into_panic())), here());
    assert_eq!(at, expected);
}
