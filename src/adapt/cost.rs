//! The verification-cost model: seconds to verify a tree of `rows` rows (root included), a line fitted
//! by discounted least squares to what the engine reports.

/// `t(rows) = intercept + slope * rows`, fitted to discounted observations. Rows and seconds of every
/// iteration count, whatever arm produced them, so an arm never tried is judged by its size.
#[derive(Clone, Debug, PartialEq)]
pub struct CostModel {
    discount: f64,
    w: f64,
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
    min_rows: f64,
    max_rows: f64,
}

impl CostModel {
    /// A model whose observations lose weight by `discount` (in (0, 1]) per new observation.
    pub fn new(discount: f64) -> Self {
        CostModel {
            discount,
            w: 0.0,
            x: 0.0,
            y: 0.0,
            xx: 0.0,
            xy: 0.0,
            min_rows: f64::INFINITY,
            max_rows: 0.0,
        }
    }

    /// Adds one verification of `rows` rows that took `seconds`.
    pub fn observe(&mut self, rows: f64, seconds: f64) {
        let g = self.discount;
        self.w = g * self.w + 1.0;
        self.x = g * self.x + rows;
        self.y = g * self.y + seconds;
        self.xx = g * self.xx + rows * rows;
        self.xy = g * self.xy + rows * seconds;
        self.min_rows = self.min_rows.min(rows);
        self.max_rows = self.max_rows.max(rows);
    }

    /// Whether anything was observed.
    pub fn is_empty(&self) -> bool {
        self.w == 0.0
    }

    /// (intercept, slope) of the fitted line; the slope is 0 until two different sizes were seen
    /// (the optimistic guess: larger trees cost nothing more until shown otherwise) and never negative.
    pub fn line(&self) -> (f64, f64) {
        if self.w == 0.0 {
            return (0.0, 0.0);
        }
        let (mx, my) = (self.x / self.w, self.y / self.w);
        let var = self.xx / self.w - mx * mx;
        let slope = if var > 1e-9 && self.max_rows > self.min_rows {
            ((self.xy / self.w - mx * my) / var).max(0.0)
        } else {
            0.0
        };
        (my - slope * mx, slope)
    }

    /// Predicted seconds for `rows` rows (never below 0), or `None` before the first observation.
    pub fn predict(&self, rows: f64) -> Option<f64> {
        if self.w == 0.0 {
            return None;
        }
        let (a, b) = self.line();
        Some((a + b * rows).max(0.0))
    }
}
