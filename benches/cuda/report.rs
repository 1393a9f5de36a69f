//! Rows of the GPU benchmark report: printed as a table and written as JSON.

/// One measured case.
pub struct Row {
    /// Benchmark family ("finalize+layouts+greedy", "sampling acceptance", "drafter block").
    pub group: &'static str,
    /// The case within the family (sizes, batch).
    pub case: String,
    /// Median time in microseconds.
    pub median_us: f64,
    /// The baseline measured in the same run: (name, median µs).
    pub baseline: Option<(&'static str, f64)>,
    /// Goal or remark.
    pub note: String,
}

/// All rows of one run.
#[derive(Default)]
pub struct Report {
    /// Rows in the order they were measured.
    pub rows: Vec<Row>,
}

impl Report {
    /// Adds a row and prints it at once (the GPU run's output is read live).
    pub fn row(&mut self, row: Row) {
        println!(
            "{:<28} {:<40} {:>10.2} us  {}  {}",
            row.group,
            row.case,
            row.median_us,
            row.baseline
                .map(|(n, t)| format!("[{n}: {t:.2} us, ratio {:.2}]", row.median_us / t))
                .unwrap_or_default(),
            row.note
        );
        self.rows.push(row);
    }
}

/// The median of `xs` (sorted in place).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}
