//! The proactor's steps read as the sentences `echo-lab trace` has always printed.

use std::time::Duration;

use super::*;

/// Every step says what it did in the words `echo-lab trace` has always printed.
#[test]
fn each_step_reads_as_its_sentence() {
    let recv = Op::RecvMulti { fd: 7, group: 0, limit: 0 };
    let send = Op::Send { fd: 7, len: 7, dontwait: true };
    let cases: Vec<(Event, &str)> = vec![
        (Event::SqFull, "  the SQ is full: io_uring_enter to submit it"),
        (
            Event::SqeQueued { user_data: 1, op: recv },
            "  queued SQE RECV (multishot, buffers picked from the ring when data comes) on fd 7 (user_data 1); no syscall yet",
        ),
        (
            Event::SqeQueued { user_data: 2, op: send },
            "  queued SQE SEND 7 bytes on fd 7, without waiting (a ring buffer: a full window must not pin it) (user_data 2); no syscall yet",
        ),
        (Event::CloseQueued { fd: 7 }, "  queued SQE CLOSE fd 7, after every SQE already queued for it"),
        (
            Event::CancelQueued { user_data: 3 },
            "  queued SQE ASYNC_CANCEL for user_data 3 (its future was dropped)",
        ),
        (
            Event::Enter { submit: 1, wait: UringWait::Forever },
            "io_uring_enter: submit 1 SQE, nothing to run: sleep until a completion arrives",
        ),
        (Event::Enter { submit: 0, wait: UringWait::No }, "io_uring_enter: submit 0 SQEs, do not wait"),
        (
            Event::Enter { submit: 2, wait: UringWait::AtMost(Duration::from_millis(5)) },
            "io_uring_enter: submit 2 SQEs, sleep until a completion arrives or 5ms pass (the next timer)",
        ),
        (Event::CqRead, "read the CQ ring in shared memory: no syscall"),
        (Event::Cqes { count: 1 }, "  1 CQE in the completion ring"),
        (Event::Cqes { count: 2 }, "  2 CQEs in the completion ring"),
        (Event::NotifierCqe, "  CQE of the notifier's poll: another thread woke a task"),
        (
            Event::Cqe { user_data: 1, op: Some(recv), result: 7, ring_buffer: Some(0), more: true },
            "  CQE user_data 1 (multishot RECV): result 7, in ring buffer 0, more to come from the same SQE",
        ),
        (
            Event::Cqe { user_data: 4, op: None, result: -104, ring_buffer: None, more: false },
            "  CQE user_data 4 (?): result -104",
        ),
        (
            Event::HelperJob { accept: true, fd: 3, request: 0 },
            "  accept on fd 3: POSIX aio has none; handed to one of this runtime's helper threads (request 0)",
        ),
        (
            Event::AioSubmitted { write: false, fd: 8, len: 4096, request: 1 },
            "  aio_read(fd 8, 4096 bytes) handed to glibc (request 1): a glibc helper thread runs a blocking \
             read (after a pread that fails with ESPIPE on a socket) on it, and stays blocked there until data comes",
        ),
        (
            Event::AioSubmitted { write: true, fd: 9, len: 7, request: 2 },
            "  aio_write(fd 9, 7 bytes) handed to glibc (request 2): a glibc helper thread runs a blocking write on it",
        ),
        (
            Event::AioPoll { wait: AioWait::Rescan, signals: false },
            "poll(notifier, completion eventfd; timeout 1 s, to rescan for notifications glibc dropped): \
             sleep until glibc reports a request done",
        ),
        (
            Event::AioPoll { wait: AioWait::No, signals: false },
            "poll(notifier, completion eventfd; no wait, no syscall): collect what has finished",
        ),
        (
            Event::AioPoll { wait: AioWait::AtMost(Duration::from_millis(3)), signals: true },
            "poll(notifier, completion eventfd, signalfd; timeout 3ms): sleep until glibc reports a request done",
        ),
        (
            Event::AioSuspend { requests: 3, wait: AioWait::Forever },
            "aio_suspend(3 requests; no timeout): sleep until glibc finishes one of them (the wake read of the \
             notifier included), then aio_error on each",
        ),
        (
            Event::AioSuspend { requests: 0, wait: AioWait::No },
            "no wait, no syscall: aio_error on each request in glibc",
        ),
        (
            Event::AioDone { request: 1, result: 7, by: Reporter::Glibc { tid: 5611 } },
            "  request 1 done: result 7, reported by glibc's notification thread 5611, a thread created for this one completion",
        ),
        (
            Event::AioDone { request: 0, result: 8, by: Reporter::Helper },
            "  request 0 done: result 8, reported by a helper thread",
        ),
        (
            Event::AioDone { request: 4, result: 64, by: Reporter::Signal },
            "  request 4 done: result 64, reported by glibc's realtime signal, read from the signalfd",
        ),
        (
            Event::AioDone { request: 5, result: 64, by: Reporter::Suspend },
            "  request 5 done: result 64, reported by aio_error, after aio_suspend returned",
        ),
        (
            Event::Queued { index: 1, op: Op::RecvPick { fd: 7 }, queue: Direction::Read, ready: false },
            "  queued RECV fd 7 (no buffer yet: one is taken when data is there) (op 1) in the driver's read \
             queue of fd 7: performed when epoll says fd is ready; no syscall yet",
        ),
        (
            Event::Queued { index: 2, op: send, queue: Direction::Write, ready: true },
            "  queued SEND 7 bytes on fd 7 (op 2) in the driver's write queue of fd 7: fd is ready: performed at the next turn",
        ),
        (
            Event::Dequeued { index: 2 },
            "  cancel op 2: it was still in the driver's queue, never handed to the kernel; just removed",
        ),
        (Event::FdReady { fd: 7, ready: 1 }, "  fd 7: readable (readiness event)"),
        (
            Event::Connect { fd: 5, index: 0, result: Err(libc::EINPROGRESS) },
            "  connect(fd 5) for op 0 → EINPROGRESS: done when writable",
        ),
        (Event::Accept { fd: 3, index: 0, result: Ok(7) }, "  accept4(fd 3) for op 0 → 7"),
        (
            Event::Connected { fd: 5, index: 0, result: Err(libc::ECONNREFUSED) },
            "  getsockopt(SO_ERROR) on fd 5 for op 0 → error: Connection refused (os error 111)",
        ),
        (
            Event::Transfer { call: Call::Recv, fd: 7, len: 4096, index: 1, result: Err(libc::EAGAIN) },
            "  recv(fd 7, 4096 bytes) for op 1, by the driver → EAGAIN: not ready after all; the op stays \
             queued until the next readiness event",
        ),
        (
            Event::Transfer { call: Call::SendMsg, fd: 7, len: 1, index: 1, result: Ok(9) },
            "  sendmsg(fd 7, 1 bytes) for op 1, by the driver → 9",
        ),
        (Event::Picked { id: 3 }, "  the driver took a 4 KiB buffer for it only now, at readiness (id 3)"),
        (
            Event::Posted { index: 1, result: 7, picked: Some(3) },
            "  post completion of op 1: result 7, in picked buffer 3",
        ),
        (Event::Posted { index: 1, result: -125, picked: None }, "  post completion of op 1: result -125"),
        (Event::PostedEarly, "  completions posted: back to the tasks without an epoll_wait"),
        (
            Event::RingGrew { added: 64, size: 4096, now: 128 },
            "  the buffer ring runs low: 64 more buffers of 4096 bytes (now 128)",
        ),
        (
            Event::RingPiece { bid: 0, bytes: 7, offset: 7 },
            "  ring buffer 0 partly consumed: 7 bytes at offset 7; the kernel goes on filling it",
        ),
        (
            Event::RingBufferBack { bid: 4 },
            "  ring buffer 4 goes back to the ring (no syscall: the ring is shared memory)",
        ),
        (Event::RingShrank { now: 64 }, "  the buffer ring shrinks back to 64 buffers"),
        (Event::Wake, "    → wake the task waiting for it"),
        (Event::WakeStalled, "    → wake the task waiting for it: the send ahead is stalled"),
        (
            Event::Spilled { bytes: 7, bid: 2 },
            "    nobody reads the stream now: copy the 7 bytes out and give ring buffer 2 back",
        ),
        (
            Event::BudgetRoom { fd: 7 },
            "  the memory budget is taken: fd 7 waits for room before it receives again",
        ),
        (
            Event::DroppedBehind { fd: 7 },
            "  the stream is dropped with a SEND behind in flight: fd 7 is closed once it is over",
        ),
        (
            Event::DroppedPeerSent { fd: 7 },
            "  the peer of dropped fd 7 sent data: the connection is reset, as a closed socket's would be",
        ),
        (
            Event::BehindShort { sent: 0, asked: 100 },
            "    SEND took 0 of 100 bytes (the peer's window is full): the driver sends the rest itself",
        ),
        (
            Event::BehindOver { error: None, ring_buffer: Some(0), owner: Behind::Quiet, fd: 7 },
            "    SEND complete: the driver gives ring buffer 0 back; the task is not woken",
        ),
        (
            Event::BehindOver { error: None, ring_buffer: None, owner: Behind::Waited, fd: 7 },
            "    SEND complete: the driver drops the buffer; a call on the stream waits for it",
        ),
        (
            Event::BehindOver { error: None, ring_buffer: None, owner: Behind::Dropped, fd: 7 },
            "    SEND complete: the driver drops the buffer; the stream was dropped: fd 7 is closed now",
        ),
        (
            Event::BehindOver { error: Some(libc::EPIPE), ring_buffer: Some(1), owner: Behind::Quiet, fd: 7 },
            "    SEND failed (Broken pipe (os error 32)): the driver gives ring buffer 1 back; the stream's \
             next call returns the error",
        ),
        (
            Event::BehindOver { error: Some(0), ring_buffer: None, owner: Behind::Dropped, fd: 7 },
            "    SEND failed (write zero): the driver drops the buffer; the stream was dropped: fd 7 is closed now",
        ),
        (
            Event::BehindDetached { bytes: 90, bid: 1 },
            "  the peer's window is full: the driver copies the 90 unsent bytes out of ring buffer 1 and gives it back",
        ),
        (
            Event::MultishotWaits { fd: 7 },
            "  wait for the next CQE of the multishot RECV on fd 7: it stays armed in the kernel, no new SQE",
        ),
        (
            Event::AheadStalledCopy { bytes: 7 },
            "  the send ahead waits for the peer: copy the 7 bytes out of the ring buffer and give it back",
        ),
        (
            Event::WindowFullCopy { bytes: 5 },
            "  the peer's window is full: copy the 5 unsent bytes out of the ring buffer and give it back",
        ),
    ];
    for (event, sentence) in cases {
        assert_eq!(event.to_string(), sentence, "{event:?}");
    }
}
