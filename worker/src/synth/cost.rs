//! What one call of a voice's synthesiser costs when it runs `b` steps
//! together: `α + β·b` (α the per-call cost, β each step's), learned from
//! the calls the threads make.
//!
//! A GPU's cost is mostly per call: a batch of 64 windows takes little
//! longer than one window. Admission that counts compute per second of
//! audio, as one CPU thread spends it, would refuse at a fraction of such
//! a device's capacity. The fit is a least-squares line through recent
//! calls (each weighing [`KEEP`] of the one after it), anchored by the
//! warm-up sweep's calls at batches of 1, 2, 4, … up to the full batch:
//! under steady
//! load every call may have the same size, which alone cannot tell α from
//! β.

/// Each call keeps this share of the weight of the calls before it (the
/// last ≈ 50 count).
const KEEP: f64 = 0.98;

/// The warm-up sweep counts, in all, as this many live calls.
const PRIOR_WEIGHT: f64 = 4.0;

/// Weighted sums of calls' sizes `b` and times `t`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sums {
    w: f64,
    b: f64,
    bb: f64,
    t: f64,
    bt: f64,
}

impl Sums {
    fn add(&mut self, weight: f64, b: f64, t: f64) {
        self.w += weight;
        self.b += weight * b;
        self.bb += weight * b * b;
        self.t += weight * t;
        self.bt += weight * b * t;
    }

    fn scaled(self, k: f64) -> Self {
        Self {
            w: self.w * k,
            b: self.b * k,
            bb: self.bb * k,
            t: self.t * k,
            bt: self.bt * k,
        }
    }

    fn plus(self, o: Self) -> Self {
        Self {
            w: self.w + o.w,
            b: self.b + o.b,
            bb: self.bb + o.bb,
            t: self.t + o.t,
            bt: self.bt + o.bt,
        }
    }
}

/// A call's cost, fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Seconds every call costs, however many steps it runs.
    pub per_call: f64,
    /// Seconds each step adds.
    pub per_step: f64,
}

impl Fit {
    /// Seconds a call of `batch` steps is expected to take.
    pub fn predict(&self, batch: usize) -> f64 {
        self.per_call + self.per_step * batch as f64
    }
}

/// The model of one voice's calls.
#[derive(Debug, Clone, Default)]
pub struct CallCost {
    live: Sums,
    prior: Sums,
}

impl CallCost {
    /// A model anchored by `sweep`: `(steps, seconds)` of the warm-up's
    /// calls.
    pub fn seeded(sweep: &[(usize, f64)]) -> Self {
        let mut prior = Sums::default();
        for &(b, t) in sweep {
            prior.add(1.0, b as f64, t);
        }
        if prior.w > 0.0 {
            prior = prior.scaled(PRIOR_WEIGHT / prior.w);
        }
        Self {
            live: Sums::default(),
            prior,
        }
    }

    /// A call of `batch` steps took `seconds`.
    pub fn observe(&mut self, batch: usize, seconds: f64) {
        if batch == 0 || !seconds.is_finite() {
            return;
        }
        self.live = self.live.scaled(KEEP);
        self.live.add(1.0, batch as f64, seconds);
    }

    /// The line through the calls seen (0 for both before any): both
    /// terms are kept non-negative.
    pub fn fit(&self) -> Fit {
        let s = self.live.plus(self.prior);
        if s.w <= 0.0 {
            return Fit {
                per_call: 0.0,
                per_step: 0.0,
            };
        }
        let spread = s.w * s.bb - s.b * s.b;
        let per_step = if spread > 1e-9 * s.w * s.w {
            (s.w * s.bt - s.b * s.t) / spread
        } else {
            // Calls of one size only: all of it is counted per call.
            0.0
        };
        if per_step <= 0.0 {
            return Fit {
                per_call: s.t / s.w,
                per_step: 0.0,
            };
        }
        let per_call = (s.t - per_step * s.b) / s.w;
        if per_call < 0.0 {
            // Through the origin: cost in proportion to the steps.
            return Fit {
                per_call: 0.0,
                per_step: s.bt / s.bb,
            };
        }
        Fit { per_call, per_step }
    }

    /// Whether it has seen any call, live or in the sweep.
    pub fn is_empty(&self) -> bool {
        self.live.w + self.prior.w <= 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, within: f64) -> bool {
        (got - want).abs() <= within * want.abs()
    }

    #[test]
    fn a_sweep_alone_gives_the_line_through_its_calls() {
        // 20 ms per call, 0.5 ms per step, measured at 1 and 64 steps.
        let model = CallCost::seeded(&[(1, 0.0205), (64, 0.052), (1, 0.0205), (64, 0.052)]);
        let fit = model.fit();
        assert!(close(fit.per_call, 0.020, 1e-9), "{fit:?}");
        assert!(close(fit.per_step, 0.0005, 1e-9), "{fit:?}");
        assert!(close(fit.predict(32), 0.036, 1e-9));
    }

    #[test]
    fn live_calls_of_one_size_move_the_line_but_keep_its_anchor() {
        let mut model = CallCost::seeded(&[(1, 0.0205), (64, 0.052)]);
        // The device got slower at full batches: 80 ms, not 52.
        for _ in 0..200 {
            model.observe(64, 0.080);
        }
        let fit = model.fit();
        assert!(close(fit.predict(64), 0.080, 0.02), "{fit:?}");
        assert!(fit.per_call > 0.0 && fit.per_step > 0.0, "{fit:?}");
    }

    #[test]
    fn recent_calls_outweigh_old_ones() {
        let mut model = CallCost::default();
        for b in 1..=40 {
            model.observe(b, 0.010 + 0.001 * b as f64);
        }
        for b in 1..=200 {
            model.observe(b % 40 + 1, 0.030 + 0.002 * (b % 40 + 1) as f64);
        }
        let fit = model.fit();
        assert!(close(fit.per_call, 0.030, 0.05), "{fit:?}");
        assert!(close(fit.per_step, 0.002, 0.05), "{fit:?}");
    }

    #[test]
    fn the_terms_never_go_negative() {
        // Time that falls with the batch (noise): all of it per call.
        let mut model = CallCost::default();
        model.observe(1, 0.010);
        model.observe(8, 0.008);
        assert_eq!(model.fit().per_step, 0.0);
        assert!(model.fit().per_call > 0.0);
        // Steep: through the origin rather than below it.
        let mut model = CallCost::default();
        model.observe(1, 0.001);
        model.observe(2, 0.010);
        let fit = model.fit();
        assert_eq!(fit.per_call, 0.0);
        assert!(fit.per_step > 0.0);
        assert!(CallCost::default().is_empty());
        assert_eq!(CallCost::default().fit().predict(8), 0.0);
    }
}
