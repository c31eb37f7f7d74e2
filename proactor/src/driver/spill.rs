//! Multishot completions, and receives that nobody reads.
//!
//! A multishot receive keeps taking ring buffers whether or not its task reads: the kernel
//! fills a buffer as data arrives. A stream's receive (`Op::stream_receive`) is armed with an
//! allowance (see `budget`): its bytes count against its connection's budget until the task
//! takes them, and past the allowance the receive ends, so that TCP's flow control makes the
//! peer wait. Within the allowance, a stream whose task is busy elsewhere (say, blocked in a
//! send to a peer that does not read) would still pin ring buffers that every other
//! connection shares: when the ring is at its limit and nearly dry, a completion that arrives
//! while nobody waits has its bytes copied into the driver's `spills` and its ring buffer
//! given back at once. The bytes are still held for the connection, now in memory of its own.

use std::task::Waker;

use super::slot::{Lifecycle, Queue};
use super::{AfterTurn, Driver};
use crate::backend::{BufId, Completion};
use crate::bufring::BufRing;
use crate::stats;

/// Copies the bytes of every queued completion that holds a ring buffer into `spilled` (in
/// queue order, so they leave in order) and gives the buffers back (through `after`).
fn spill_queue(ring: &BufRing, queue: &mut Queue, spilled: &mut Vec<u8>, after: &mut AfterTurn) {
    for completion in queue.iter_mut() {
        let (Some(BufId::Ring(bid)), true) = (completion.buffer, completion.result > 0) else { continue };
        // SAFETY: the completion handed this piece of buffer `bid` to the runtime; it goes back
        // to the ring only after this copy (through `after.discarded`).
        spilled.extend_from_slice(unsafe { ring.bytes(bid, completion.offset, completion.result as usize) });
        stats::bump(|c| &c.recv_spilled);
        after.discarded.push((*completion, false));
        completion.buffer = None;
        completion.spilled = true;
    }
}

impl Driver {
    /// One completion of the multishot operation in slot `index`: queued for its future (the
    /// bytes maybe spilled first), its task woken, and the operation stopped past its bounds.
    pub(super) fn multishot_completed(
        &self,
        index: usize,
        slot: &mut Lifecycle,
        mut completion: Completion,
        wakers: &mut Vec<Waker>,
        after: &mut AfterTurn,
    ) {
        let Lifecycle::Multishot { queue, waker, remaining, max_queued, ended, stopping, stream } = slot
        else {
            unreachable!("a multishot completion comes to a Multishot slot")
        };
        if completion.result == -libc::ENOBUFS && *stream {
            after.sweep = true;
        }
        if *stream && completion.result > 0 {
            // Held for the connection until the task takes it (`Op::poll_next`).
            let n = completion.result as u32;
            let before = *remaining;
            *remaining = before.saturating_sub(n);
            self.budget.receive(u64::from(n), u64::from(before - *remaining));
            if before > 0 && *remaining == 0 {
                stats::bump(|c| &c.recv_limited);
                if completion.more && !*stopping {
                    // The allowance is used up and the backend did not end the receive itself:
                    // stop it (what is already under way still arrives, and counts).
                    *stopping = true;
                    after.to_cancel.push(index);
                }
            }
        }
        if let (true, None, Some(BufId::Ring(bid)), Some(ring)) =
            (*stream, &waker, completion.buffer, &self.buf_ring)
        {
            // Only when the ring is at its limit and nearly empty: copying costs, and until
            // then the queue bound (`limit_queue`) keeps what a stream holds small. Bytes leave
            // through `spills` in the order they were copied in, so a completion is copied
            // only if none before it still holds a ring buffer (the sweep copies those, in
            // queue order, when the ring runs dry).
            let behind_ring = queue.iter().any(|queued| matches!(queued.buffer, Some(BufId::Ring(_))));
            if completion.result > 0 && ring.scarce() && !behind_ring {
                // Nobody is reading this stream (its task is busy, or blocked in a send to a
                // peer that does not read): do not let it pin a ring buffer.
                let mut spills = self.spills.borrow_mut();
                let spilled = spills.entry(index).or_default();
                // SAFETY: the completion handed buffer `bid` to the runtime with `result` bytes,
                // and it goes back to the ring only below, after the copy.
                spilled.extend_from_slice(unsafe {
                    ring.bytes(bid, completion.offset, completion.result as usize)
                });
                drop(spills);
                stats::bump(|c| &c.recv_spilled);
                stats::trace_step!(crate::trace::Event::Spilled { bytes: completion.result, bid });
                after.discarded.push((completion, false));
                completion.buffer = None;
                completion.spilled = true;
            }
        }
        queue.push(completion);
        *ended = !completion.more;
        if *ended && *stream {
            // What is left of its allowance goes back to the budget.
            self.budget.unreserve(u64::from(std::mem::take(remaining)));
        }
        let nobody_waits = waker.is_none();
        if !nobody_waits {
            stats::trace_step!(crate::trace::Event::Wake);
        }
        wakers.extend(waker.take());
        if !*ended && !*stopping && *max_queued > 0 && queue.len() >= usize::from(*max_queued) {
            *stopping = true;
            after.to_cancel.push(index);
        }
        if let (true, true, Some(ring)) = (*stream, nobody_waits, &self.buf_ring) {
            if queue.len() > usize::from(*max_queued) && ring.scarce() {
                // Past the bound, before the cancel is in (the kernel receives in bursts, up to
                // 32 buffers for a socket with data), with the ring at its limit and nearly dry:
                // a task that is not reading must not hold them. Copy the queue out, in order.
                spill_queue(ring, queue, self.spills.borrow_mut().entry(index).or_default(), after);
            }
        }
    }

    /// The ring ran dry: every receive whose completions wait for a task that is not reading
    /// (blocked elsewhere, say in a send to a peer that does not read) has their bytes copied
    /// out and their ring buffers given back, so that such streams cannot starve the others.
    pub(super) fn sweep_unread(&self, after: &mut AfterTurn) {
        let Some(ring) = &self.buf_ring else { return };
        let mut ops = self.ops.borrow_mut();
        let mut spills = self.spills.borrow_mut();
        for (index, slot) in ops.iter_mut() {
            let Lifecycle::Multishot { queue, waker: None, stream: true, .. } = slot else { continue };
            spill_queue(ring, queue, spills.entry(index).or_default(), after);
        }
    }
}
