//! The runtimes' counters against the syscalls actually made (regressions found in review).

use std::time::Duration;

/// aio: each loop `poll` is one syscall, counted once (it was once counted as `sys_poll` and
/// again as "other").
#[test]
fn aio_poll_is_counted_once() {
    let rt = echo::server::aio_runtime().unwrap();
    rt.block_on(async { proactor::time::sleep(Duration::from_millis(5)).await });
    let before = proactor::stats();
    rt.block_on(async {
        for _ in 0..5 {
            proactor::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let s = proactor::stats().since(&before);
    assert!(s.sys_poll >= 5, "{s:?}");
    // Only polls happened in this window (sleeping on a timer makes no other syscall).
    assert_eq!(s.syscalls(), s.sys_poll, "polls counted twice (as sys_poll and sys_other): {s:?}");
}

/// reactor: closing a registered socket is `epoll_ctl(DEL)` and `close(2)`: both are counted
/// (the close happens in `OwnedFd`'s drop, outside `sys`, and was once missed).
#[test]
fn reactor_counts_the_close_of_a_socket() {
    let rt = reactor::Runtime::new().unwrap();
    let s = rt.block_on(async {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listener = reactor::net::TcpListener::from_std(std).unwrap();
        let before = reactor::stats();
        drop(listener);
        reactor::stats().since(&before)
    });
    assert_eq!(s.sys_epoll_ctl, 1, "{s:?}");
    assert_eq!(s.syscalls(), 2, "epoll_ctl(DEL) and close(2), but only {} counted: {s:?}", s.syscalls());
}
