//! The sequence diagrams of `echo-lab trace --svg`: the steps of a real trace, read back from
//! the runtimes' own words, drawn as arrows between lanes (the client, the kernel, glibc's
//! threads for aio, the runtime's loop, the task), one design per column.
//!
//! Each step becomes one row: a syscall is an arrow into the kernel (with its result on a
//! dashed arrow back, when the step gives one), an SQE an arrow from the task into the ring the
//! loop submits, a CQE or an epoll event an arrow from the kernel to the loop, a wake an arrow
//! from the loop to the task, and so on. A step this reader does not know is kept as a note on
//! the loop's lane, in the runtime's words: nothing of the run is left out, and nothing is
//! drawn that the run did not do. Each arrow's `<title>` (a tooltip in a browser) holds the
//! step as the runtime worded it.
//!
//! - [`row`]: what a diagram is made of: lanes, arrows and their kinds, notes;
//! - [`read`]: the steps of each phase read into rows, design by design;
//! - [`draw`]: the rows drawn as SVG, one column per design, and the legend.

pub mod draw;
pub mod read;
pub mod row;
