//! The live progress line of a load run on a terminal.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The live progress line of `echo-lab bench` (when stderr is a terminal): a bar over the
/// warm-up and the window, with msgs/s so far, errors and mismatches, updated about once a
/// second and cleared at the end.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// When the bar started (the load's start).
    t0: Instant,
    next: Instant,
}

impl Progress {
    /// A progress bar over `total` (warm-up and window), shown only if `on`.
    pub fn new(on: bool, total: Duration) -> Progress {
        let bar = on.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total.as_millis() as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("  [{bar:30}] {msg}").expect("a valid template");
            bar.set_style(style.progress_chars("=> "));
            bar.set_message("warming up");
            bar
        });
        let now = Instant::now();
        Progress { bar, t0: now, next: now + Duration::from_secs(1) }
    }

    /// How long the load loop may sleep before the next update is due.
    pub fn cap(&self, wait: Duration) -> Duration {
        if self.bar.is_some() {
            wait.min(self.next.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)))
        } else {
            wait
        }
    }

    /// Updates the line if an update is due: `w_start` is when the measured window opened
    /// (None during the warm-up), `msgs` the round trips counted since.
    pub fn tick(&mut self, now: Instant, w_start: Option<Instant>, msgs: u64, errors: u64, mismatches: u64) {
        let Some(bar) = &self.bar else { return };
        if now < self.next {
            return;
        }
        self.next = now + Duration::from_secs(1);
        let what = match w_start {
            // The first fraction of a second of the window gives no meaningful rate yet.
            Some(t) if now.saturating_duration_since(t) >= Duration::from_millis(250) => {
                let rate = msgs as f64 / now.saturating_duration_since(t).as_secs_f64();
                format!("{rate:.0} msgs/s so far")
            }
            Some(_) => "measuring".to_string(),
            None => "warming up".to_string(),
        };
        bar.set_position(now.saturating_duration_since(self.t0).as_millis() as u64);
        bar.set_message(format!("{what}   errors {errors}   mismatches {mismatches}"));
    }

    /// Erases the line (if one was drawn).
    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}
